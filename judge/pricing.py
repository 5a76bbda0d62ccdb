"""Token prices, for the cost column. Local and fake judges cost nothing; unknown models cost null."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

from judge.errors import ConfigError

FREE_PROVIDERS = ("local", "hf", "fake")


@lru_cache(maxsize=8)
def load_prices(extra: str | None = None) -> dict[str, dict[str, float]]:
    """The built-in table, updated by ``extra`` (a JSON file path) and ``$JUDGE_PRICES``."""
    table = json.loads((Path(__file__).parent / "prices.json").read_text(encoding="utf-8"))
    for src in (os.environ.get("JUDGE_PRICES"), extra):
        if not src:
            continue
        try:
            table.update(json.loads(Path(src).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"price table {src}: {exc}") from None
    return {k: v for k, v in table.items() if not k.startswith("_")}


def cost_usd(judge_model: str, prompt_tokens: int, completion_tokens: int, prices: str | None = None) -> float | None:
    """Cost of one item's calls, or None when the model's price is unknown."""
    provider, _, model = judge_model.partition("/")
    if provider in FREE_PROVIDERS:
        return 0.0
    table = load_prices(prices)
    entry = table.get(model) or table.get(judge_model)
    if entry is None:
        return None
    return (prompt_tokens * entry["input"] + completion_tokens * entry["output"]) / 1e6
