"""The local judge on the demo data: batching of logprob calls, and three score modes.

Part 1 -- batching: the demo items judged in logprob mode with the provider's batch size 1, 2, 4, 8,
16 (concurrent calls scored as one left-padded batch on the rubric prefix's KV cache); items/s and
the largest difference from batch 1 (the same values up to float rounding).

Part 2 -- score modes: text (free generation of a JSON verdict), logprob (the score distribution
read at once) and reason (a bounded greedy reasoning, then the score read after a forced "Score:");
items/s and Spearman's rho with the demo's labels (examples/qa_labels.csv) via calibration, with
its bootstrap CI. One process, one loaded model, no cache; the CPU may be shared, so compare ratios.

    python bench/local_modes.py [--model smollm2 --rubric factuality --items 22 --reasoning-tokens 48]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--rubric", default="factuality")
    ap.add_argument("--items", type=int, default=22)
    ap.add_argument("--batch-sizes", default="1,2,4,8,16")
    ap.add_argument("--reasoning-tokens", type=int, default=48)
    ap.add_argument("--max-tokens", type=int, default=256, help="text mode's bound on the generated verdict")
    ap.add_argument("--skip-batching", action="store_true")
    ap.add_argument("--skip-modes", action="store_true")
    args = ap.parse_args()

    import torch

    from judge import load_rubric
    from judge.dataset import Item
    from judge.grader import Grader
    from judge.providers.local import LocalProvider
    from judge.runner import run_sync

    rows = [json.loads(line) for line in (ROOT / "examples" / "qa.jsonl").open()][: args.items]
    items = [Item(id=r["id"], input=r["input"], output=r["output"], reference=r.get("reference")) for r in rows]
    rubric = load_rubric(args.rubric)
    print(f"{len(items)} demo items, rubric {rubric.id}, model {args.model}, torch threads {torch.get_num_threads()}")

    async def judge_all(grader: Grader) -> list:
        import asyncio

        return list(await asyncio.gather(*(grader.grade(it) for it in items)))

    def timed(grader: Grader) -> tuple[float, list]:
        t0 = time.perf_counter()
        verdicts = run_sync(judge_all(grader))
        return time.perf_counter() - t0, verdicts

    LocalProvider(args.model)._load()  # load once; every provider below shares the loaded model
    if not args.skip_batching:
        base: list | None = None
        for b in [int(x) for x in args.batch_sizes.split(",")]:
            provider = LocalProvider(args.model, batch_size=b)
            grader = Grader(rubric, provider, score_mode="logprob")
            timed(Grader(rubric, provider, score_mode="logprob"))  # warm: the rubric prefix is kept
            t, verdicts = timed(grader)
            base = base or verdicts
            diff = max(
                abs(a.score_probs[k] - v.score_probs[k])
                for a, v in zip(base, verdicts, strict=True)
                for k in a.score_probs
            )
            print(f"logprob batch {b:>2}: {t:6.2f} s, {len(items) / t:5.2f} items/s; max |diff| vs batch 1 {diff:.1e}")

    if args.skip_modes:
        return
    from calibration import calibrate, load_human_labels

    labels, _ = load_human_labels(str(ROOT / "examples" / "qa_labels.csv"), label_type="ordinal", scale=(1, 5))
    provider = LocalProvider(args.model)
    for mode in ("logprob", "reason", "text"):
        grader = Grader(
            rubric, provider, score_mode=mode, max_tokens=args.max_tokens, reasoning_tokens=args.reasoning_tokens
        )
        t, verdicts = timed(grader)
        import pandas as pd

        ok = [v for v in verdicts if v.ok]
        scores = pd.Series({v.id: v.score for v in ok})
        rho = "n/a"
        if len(ok) >= 3:
            report = calibrate(scores, labels, n_boot=1000, seed=0, label_type="ordinal", scale=(1, 5), min_items=3)
            m = report.metrics["spearman"]
            rho = f"{m.value:.2f} [{m.ci_low:.2f}, {m.ci_high:.2f}]"
        gen = sum(v.completion_tokens for v in verdicts) / len(verdicts)
        print(
            f"mode {mode:<7}: {t:6.2f} s, {len(items) / t:5.2f} items/s, {len(ok)}/{len(items)} scored, "
            f"{gen:.0f} generated tokens/item; Spearman {rho}"
        )


if __name__ == "__main__":
    main()
