"""The local judge's pairwise verdicts from label probabilities on LLMBar Natural (expert gold).

Each of the 100 pairs is judged in both orders with ``--score-mode logprob`` (no free generation);
the position-debiased probability that output_1 is better is the mean of P(A) + P(tie)/2 with
output_1 shown first and P(B) + P(tie)/2 with it shown second. Prints accuracy against the experts'
label with a 95 % percentile-bootstrap CI, the first-order-only accuracy, how often "A" wins, the
unscored count and seconds per judged prompt.

    python bench/llmbar_local.py [--model smollm2 --n 100]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "llmbar" / "LLMBar" / "Natural" / "dataset.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--boot", type=int, default=1000)
    args = ap.parse_args()

    from judge import score

    rows = json.loads(Path(args.data).read_text())[: args.n]
    fwd = [
        {"id": f"{i}", "input": r["input"], "output": r["output_1"], "output_b": r["output_2"]}
        for i, r in enumerate(rows)
    ]
    rev = [
        {"id": f"{i}r", "input": r["input"], "output": r["output_2"], "output_b": r["output_1"]}
        for i, r in enumerate(rows)
    ]
    t0 = time.perf_counter()
    verdicts = score(fwd + rev, "pairwise", f"local/{args.model}", score_mode="logprob", cache=False)
    seconds = time.perf_counter() - t0
    v1, v2 = verdicts[: len(rows)], verdicts[len(rows) :]
    gold = np.array([1.0 if r["label"] == 1 else 0.0 for r in rows])
    ok = np.array([a.ok and b.ok for a, b in zip(v1, v2, strict=True)])
    s1 = np.array([a.score if a.ok else np.nan for a in v1])
    s2 = np.array([1.0 - b.score if b.ok else np.nan for b in v2])
    both = (s1 + s2) / 2
    correct = ((both > 0.5) == (gold == 1.0))[ok].astype(float)
    first = ((s1 > 0.5) == (gold == 1.0))[~np.isnan(s1)].astype(float)
    rng = np.random.default_rng(0)
    boots = [rng.choice(correct, len(correct)).mean() for _ in range(args.boot)]
    lo, hi = np.percentile(boots, [2.5, 97.5])
    a_wins = np.mean([v.label == "A" for v in verdicts if v.ok])
    print(
        f"LLMBar Natural, {len(rows)} pairs, local/{args.model} logprob pairwise, both orders: "
        f"accuracy {correct.mean():.3f} [{lo:.3f}, {hi:.3f}] (n={len(correct)}); first order only "
        f"{first.mean():.3f}; label A chosen {a_wins:.0%} of prompts; unscored {sum(not v.ok for v in verdicts)}; "
        f"{seconds / len(verdicts):.2f} s per prompt ({seconds:.0f} s)"
    )


if __name__ == "__main__":
    main()
