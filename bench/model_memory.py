"""Peak memory of ``judge eval`` on model systems as the items grow, and as a sweep gains checkpoints.

Two claims of the checkpoints-to-verdict work, measured on random Llama models (hidden size 1024,
~27 M parameters, ~110 MB of float32 weights each, so a model held twice shows):

1. memory flat in the number of items: the same suite (generation, ``loss``, ``token_f1``) on N and 4N
   items; the marginal peak RSS per 1,000 items;
2. one model in memory at a time during a sweep: a sweep of 1 checkpoint vs 4 (plus the base model);
   holding them all would add ~3 x 110 MB.

Each run is ``python -m judge eval`` in its own process with a fresh cache; the parent reads that
child's own rusage (``os.wait4``): peak RSS (``ru_maxrss``) and CPU.

    python bench/model_memory.py [--items 100] [--hidden 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def run_eval(workdir: Path, suite: dict, cache: Path) -> tuple[float, float, float]:
    """(peak RSS MB, CPU s, wall s) of one ``judge eval`` process on ``suite``."""
    (workdir / "suite.yaml").write_text(yaml.safe_dump(suite))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "JUDGE_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "judge", "eval", "suite.yaml", "--out", "out", "--no-progress"]
    t0 = time.perf_counter()
    with open(workdir / "stderr.txt", "w") as se:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=se)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"judge eval failed:\n{(workdir / 'stderr.txt').read_text()[-2000:]}")
    return usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime, wall


def items(n: int) -> list[dict]:
    words = ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "and", "runs", "far", "away"]
    return [
        {
            "id": f"i{i}",
            "input": " ".join(words[(i + k) % len(words)] for k in range(12)) + f" {i}?",
            "reference": " ".join(words[(2 * i + k) % len(words)] for k in range(16)),
        }
        for i in range(n)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--hidden", type=int, default=1024)
    args = parser.parse_args()
    from judge.testing.tiny import tiny_causal_lm

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = tiny_causal_lm(root / "base", seed=0, hidden_size=args.hidden)
        for step in (10, 20, 30, 40):
            d = tiny_causal_lm(root / "run" / f"checkpoint-{step}", seed=step, hidden_size=args.hidden)
            (d / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        weights = sum(f.stat().st_size for f in base.glob("*.safetensors")) / 1e6
        print(f"models: random Llama, hidden {args.hidden}, {weights:.0f} MB of weights each")
        generate = {"max_new_tokens": 8}
        metrics = ["loss", "token_f1"]

        print("[1] memory vs items (base + one checkpoint; generation, loss, token_f1)")
        sizes = (args.items, 4 * args.items)
        peaks = []
        for n in sizes:
            work = root / f"items-{n}"
            work.mkdir()
            (work / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items(n)))
            suite = {
                "data": "items.jsonl",
                "systems": {"base": {"model": f"local/{base}"}, "tuned": {"model": f"local/{root}/run/checkpoint-10"}},
                "generate": generate,
                "metrics": metrics,
                "bootstrap": 200,
                "permutations": 200,
            }
            rss, cpu, wall = run_eval(work, suite, root / f"cache-{n}")
            peaks.append(rss)
            print(f"  {n:>6} items: peak RSS {rss:7.1f} MB  CPU {cpu:6.1f} s  wall {wall:6.1f} s")
        per_k = (peaks[1] - peaks[0]) / (sizes[1] - sizes[0]) * 1000
        ratio = peaks[1] / peaks[0]
        print(f"  marginal peak RSS: {per_k:.2f} MB per 1,000 items ({ratio:.3f}x for {sizes[1] // sizes[0]}x items)")

        print("[2] memory vs checkpoints in a sweep (base + sweep; loss only)")
        (root / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items(args.items)))
        sweep_peaks = []
        for pattern, count in (("run/checkpoint-10", 1), ("run/checkpoint-*", 4)):
            suite = {
                "data": "items.jsonl",
                "systems": {"base": {"model": f"local/{base}"}, "tuned": {"sweep": pattern}},
                "metrics": ["loss"],
                "bootstrap": 200,
                "permutations": 200,
            }
            work = root / f"sweep-{count}"
            work.mkdir()
            (work / "items.jsonl").write_text((root / "items.jsonl").read_text())
            (work / "run").symlink_to(root / "run")
            rss, cpu, wall = run_eval(work, suite, root / f"cache-sweep-{count}")
            sweep_peaks.append(rss)
            print(f"  {count} checkpoint(s): peak RSS {rss:7.1f} MB  CPU {cpu:6.1f} s  wall {wall:6.1f} s")
        print(
            f"  3 more checkpoints added {sweep_peaks[1] - sweep_peaks[0]:+.1f} MB of peak RSS "
            f"(all held at once would add ~{3 * weights:.0f} MB)"
        )


if __name__ == "__main__":
    main()
