"""How long does ``judge report`` take on a 10,000-item result, and how big is the file?

Run: .venv/bin/python bench/report_speed.py [--items 10000]

Builds, in one run: (1) a ``judge eval`` output of ``--items`` items x 2 systems with token_f1 and
exact_match (computed by ``judge.evaluate``, 200 resamples: the eval is not what is timed here), and
(2) a ``judge score`` verdict file of ``--items`` verdicts with the items file beside it (texts joined,
length bias computed); then times ``judge.report`` on each, and on both together, and prints the HTML
size. The review tables hold the queue, not every item, so the size must stay far under 5 MB.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import judge
from judge.verdict import Verdict

WORDS = [
    "the",
    "a",
    "model",
    "answer",
    "is",
    "right",
    "wrong",
    "because",
    "number",
    "city",
    "river",
    "capital",
    "small",
    "large",
    "first",
    "last",
]


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=10_000)
    args = ap.parse_args()
    rng = random.Random(0)
    tmp = Path(tempfile.mkdtemp(prefix="report-bench-"))
    n = args.items
    items = [{"id": f"i{i}", "input": sentence(rng, 20), "reference": sentence(rng, 30)} for i in range(n)]
    write_jsonl(tmp / "items.jsonl", items)
    for name in ("base", "tuned"):
        write_jsonl(
            tmp / f"{name}.jsonl", [{"id": f"i{i}", "output": sentence(rng, rng.randint(5, 200))} for i in range(n)]
        )
    suite = {
        "name": "report-bench",
        "data": "items.jsonl",
        "systems": {"base": "base.jsonl", "tuned": "tuned.jsonl"},
        "baseline": "base",
        "metrics": ["token_f1", "exact_match"],
        "bootstrap": 200,
        "permutations": 200,
        "review": 15,
        "gates": [{"metric": "token_f1", "delta_min": 0}],
    }
    t = time.perf_counter()
    judge.evaluate(suite, base_dir=tmp, out=tmp / "eval")
    print(f"setup: judge.evaluate on {n} items x 2 systems took {time.perf_counter() - t:.1f} s (not the measure)")

    verdict_items = [
        {"id": f"v{i}", "input": sentence(rng, 20), "output": sentence(rng, rng.randint(5, 300))} for i in range(n)
    ]
    write_jsonl(tmp / "qa.jsonl", verdict_items)
    verdicts = [
        Verdict(
            id=f"v{i}",
            rubric="factuality",
            rubric_hash="0123456789ab",
            judge_model="fake/echo-score",
            score_mode="text",
            score=float(rng.randint(1, 5)) if i % 50 else None,
            status="ok" if i % 50 else "unscored",
            reasoning=sentence(rng, 40),
            raw=sentence(rng, 60),
            error=None if i % 50 else "could not read a score",
        ).model_dump(mode="json")
        for i in range(n)
    ]
    write_jsonl(tmp / "qa.verdicts.jsonl", verdicts)

    cases = {
        "eval folder": ((tmp / "eval",), {}),
        "score verdicts + items": ((tmp / "qa.verdicts.jsonl",), {"items": tmp / "qa.jsonl"}),
        "both in one report": ((tmp / "eval", tmp / "qa.verdicts.jsonl"), {"items": tmp / "qa.jsonl"}),
    }
    print(f"{'report of ' + str(n) + ' items':<28}{'build (s, best of 3)':>22}{'HTML size (MB)':>16}")
    for label, (inputs, kw) in cases.items():
        times = []
        for _ in range(3):
            t = time.perf_counter()
            html = judge.report(*inputs, out=tmp / "report.html", **kw)
            times.append(time.perf_counter() - t)
        size = (tmp / "report.html").stat().st_size / 1e6
        print(f"{label:<28}{min(times):>22.2f}{size:>16.2f}")
        assert size < 5, f"{label}: {size:.1f} MB is over the 5 MB budget"
    print(f"(files under {tmp}; {len(html)} characters in the last report)")


if __name__ == "__main__":
    main()
