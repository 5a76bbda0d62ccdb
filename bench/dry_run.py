"""How close is ``judge score --dry-run`` to what a run is billed? Estimated vs billed tokens and cost.

For each dataset the dry-run estimate (:func:`judge.runner.estimate_run`: prompt tokens as characters / 4,
completion tokens assumed at 100 per request) is compared, in the same process, with

* what the loopback server bills for the real run (its usage field: whitespace-separated words of the
  prompt and of the completion), and
* the prompt tokens counted by a real tokenizer, SmolLM2's (what a llama.cpp or vLLM server serving it
  would bill; the ``local/smollm2`` judge's dry run counts with it), when the model is installed.

    python bench/dry_run.py [--n 200]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from judge.dataset import coerce_items
from judge.runner import build_grader, estimate_run, run_items, run_sync
from judge.testing.server import LoopbackServer

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
PRICES = {"bench-judge": {"input": 0.15, "output": 0.60}}  # gpt-4o-mini's list price, USD per 1M tokens


def datasets(n: int) -> dict[str, tuple[str, list[dict[str, Any]]]]:
    """name -> (rubric, items)."""
    out: dict[str, tuple[str, list[dict[str, Any]]]] = {}
    qa = [json.loads(line) for line in (ROOT / "examples" / "qa.jsonl").open()]
    out[f"examples/qa ({len(qa)})"] = ("factuality", qa)
    summeval = DATA / "summeval" / "summeval_flat.jsonl"
    if summeval.exists():
        rows = [json.loads(line) for _, line in zip(range(n), summeval.open(), strict=False)]
        items = [{"id": f"{r['doc_id']}/{r['system_id']}", "input": r["source"], "output": r["summary"]} for r in rows]
        out[f"SummEval ({len(items)})"] = ("faithfulness", [{**i, "context": i["input"]} for i in items])
    halueval = DATA / "halueval_general" / "general_data.json"
    if halueval.exists():
        rows = [json.loads(line) for _, line in zip(range(n), halueval.open(), strict=False)]
        items = [{"id": r["ID"], "input": r["user_query"], "output": r["chatgpt_response"]} for r in rows]
        out[f"HaluEval general ({len(items)})"] = ("helpfulness", items)
    return out


def smollm2_prompt_tokens(rubric: str, items: list[dict[str, Any]]) -> int | None:
    try:
        grader = build_grader(rubric, "local/smollm2", cache=False, score_mode="text")
        return estimate_run(grader, coerce_items(items)).prompt_tokens
    except Exception:  # noqa: BLE001 - the model is optional here
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200, help="items per dataset (at most)")
    args = ap.parse_args()
    prices = Path(tempfile.mkdtemp()) / "prices.json"
    prices.write_text(json.dumps(PRICES))
    print(
        f"{'dataset':24} {'rubric':13} {'req':>4} {'est prompt':>10} {'billed':>8} {'ratio':>6} "
        f"{'smollm2':>8} {'ratio':>6} {'est compl':>9} {'billed':>7} {'est $':>8} {'billed $':>8}"
    )
    for name, (rubric, items) in datasets(args.n).items():
        with LoopbackServer(max_seconds=600) as srv:
            grader = build_grader(
                rubric, "openai/bench-judge", base_url=srv.base_url, api_key="x", cache=False, prices=str(prices)
            )
            est = estimate_run(grader, coerce_items(items))
            assert not srv.requests, "a dry run sends nothing"

            async def go(g=grader, its=items):  # type: ignore[no-untyped-def]
                try:
                    return await run_items(g, coerce_items(its), concurrency=16)
                finally:
                    await g.provider.aclose()

            results = run_sync(go())
        billed_p = sum(v.prompt_tokens for v in results)
        billed_c = sum(v.completion_tokens for v in results)
        billed_cost = sum(v.cost_usd or 0.0 for v in results)
        smol = smollm2_prompt_tokens(rubric, items)
        smol_s = "-" if smol is None else str(smol)
        smol_r = "-" if smol is None else f"{est.prompt_tokens / smol:.2f}"
        print(
            f"{name:24} {rubric:13} {est.requests:>4} {est.prompt_tokens:>10} {billed_p:>8} "
            f"{est.prompt_tokens / billed_p:>6.2f} {smol_s:>8} {smol_r:>6} {est.completion_tokens:>9} {billed_c:>7} "
            f"{est.cost_usd:>8.5f} {billed_cost:>8.5f}"
        )


if __name__ == "__main__":
    main()
