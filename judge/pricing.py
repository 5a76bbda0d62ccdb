"""Token prices, for the cost column. Local and fake judges cost nothing; unknown models cost null."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from judge.errors import ConfigError
from judge.providers.registry import provider_info

BUILTIN = Path(__file__).parent / "prices.json"


class Price(BaseModel):
    """One model's price, in USD per million tokens."""

    # strict: "0.5" or true is a mistake in the table, not a number to guess at
    model_config = ConfigDict(strict=True)

    input: float = Field(ge=0, description="USD per 1M prompt tokens")
    output: float = Field(ge=0, description="USD per 1M completion tokens")
    batch_input: float | None = Field(None, ge=0, description="USD per 1M prompt tokens through the Batch API")
    batch_output: float | None = Field(None, ge=0, description="USD per 1M completion tokens through the Batch API")


def load_prices(extra: str | None = None) -> dict[str, dict[str, float]]:
    """The built-in table, updated by ``$JUDGE_PRICES`` and then ``extra`` (JSON file paths).

    Raises :class:`ConfigError` naming the file and the model key of a malformed entry.
    """
    return _load(extra, os.environ.get("JUDGE_PRICES") or None)


@lru_cache(maxsize=8)
def _load(extra: str | None, env: str | None) -> dict[str, dict[str, float]]:
    table: dict[str, dict[str, float]] = {}
    for src in (str(BUILTIN), env, extra):
        if src:
            table.update(_read_table(src))
    return table


def _read_table(src: str) -> dict[str, dict[str, float]]:
    try:
        raw: Any = json.loads(Path(src).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"price table {src}: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(
            f'price table {src}: expected a JSON object {{"MODEL": {{"input": USD/1M, "output": USD/1M}}}}, '
            f"got a {type(raw).__name__}"
        )
    table: dict[str, dict[str, float]] = {}
    for model, entry in raw.items():
        if model.startswith("_"):  # "_comment" and friends
            continue
        try:
            table[model] = Price.model_validate(entry).model_dump()
        except ValidationError as exc:
            problems = "; ".join(_problem(e) for e in exc.errors())
            raise ConfigError(
                f'price table {src}: model \'{model}\': {problems}; expected {{"input": USD/1M, "output": USD/1M}}'
            ) from None
    return table


def _problem(error: Any) -> str:
    if not error["loc"]:
        return f"must be an object, got {type(error['input']).__name__}"
    where = ".".join(map(str, error["loc"]))
    if error["type"] == "missing":
        return f"'{where}' is missing"
    return f"'{where}': {error['msg']} (got {error['input']!r})"


def cost_usd(
    judge_model: str, prompt_tokens: int, completion_tokens: int, prices: str | None = None, *, batch: bool = False
) -> float | None:
    """Cost of one item's calls, or None when the model's price is unknown.

    ``batch``: the calls went through the provider's Batch API, at its batch price where the table has one
    (otherwise the synchronous price, an upper bound)."""
    provider, _, model = judge_model.partition("/")
    if provider_info(provider).free:
        return 0.0
    table = load_prices(prices)
    entry = table.get(model) or table.get(judge_model)
    if entry is None:
        return None
    if batch and entry.get("batch_input") is not None and entry.get("batch_output") is not None:
        return (prompt_tokens * entry["batch_input"] + completion_tokens * entry["batch_output"]) / 1e6
    return (prompt_tokens * entry["input"] + completion_tokens * entry["output"]) / 1e6
