"""MT-Bench pairwise with the local judge in logprob mode (issue 11): speed, unscored, agreement with experts.

Two runs of ``judge mtbench judge --judge local/smollm2`` through the CLI, cold (no cache), with the
default score mode of a local judge (logprob: each order's verdict is the next-token distribution
over A / B / tie; the two orders' probabilities are averaged in the pair's orientation):

1. **Speed**: llama-13b vs vicuna-13b-v1.3, the first 20 questions of ``question.jsonl``, both turns:
   40 pairs, 80 judged prompts (the selection of issue 11's 26-minute text-mode run is not recorded
   anywhere in the repo; this is the plain ``--first-n 20`` selection). Prints wall time (model load
   included) and unscored count. ``--text-pairs K`` also judges the first K of those pairs in text
   mode in the same process conditions, for a same-machine ratio.
2. **Agreement with experts**: LLMBar's MT-Bench subset (200 turn-1 pairs with the experts'
   majority label, no ties), converted with ``judge mtbench llmbar`` and judged with ``--pairs``; then
   ``calibration.calibrate`` (pairwise; the bootstrap resamples whole questions). Also the accuracy of
   the first order alone, to show what averaging the orders buys. FastChat's GPT-4 pairwise judgments
   are not in ``../shared/data/mt_bench`` (see its SOURCE.md), so there is no GPT-4 comparison here.

    python bench/mtbench_local.py [--llmbar-n 200] [--text-pairs 0] [--out-dir /tmp/mtbench_local]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MT = DATA / "mt_bench"
LLMBAR = DATA / "llmbar" / "Processed" / "MT-Bench" / "dataset.json"
JUDGE = [sys.executable, "-m", "judge"]


def run_judge(args: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one CLI run; prints its first line and the CPU seconds it used (user + system),
    which a machine shared with other jobs inflates less than the wall time."""
    t0, c0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([*JUDGE, *args], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)
    if proc.returncode not in (0, 3):  # 3: some judgments unscored (counted below)
        raise SystemExit(f"judge {' '.join(args[:3])} failed ({proc.returncode}):\n{proc.stderr}")
    print(proc.stdout.strip().splitlines()[0])
    print(
        f"  wall {seconds:.1f} s, CPU {cpu:.1f} s, load average at the end {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} cores"
    )
    return seconds


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--first-n", type=int, default=20, help="questions of the speed run (both turns each)")
    ap.add_argument("--llmbar-n", type=int, default=200, help="LLMBar MT-Bench pairs to judge (0: skip)")
    ap.add_argument("--text-pairs", type=int, default=0, help="also judge this many pairs in text mode")
    ap.add_argument("--boot", type=int, default=2000)
    ap.add_argument("--out-dir", default="/tmp/mtbench_local")
    ap.add_argument("--local-dtype", default="float32", choices=["float32", "bfloat16"], help="the judge's precision")
    ap.add_argument("--skip-speed", action="store_true", help="only the LLMBar agreement run")
    ap.add_argument(
        "--compare-with", default=None, help="an earlier speed run's records (another dtype, say): verdicts agreeing"
    )
    args = ap.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    common = [
        "mtbench",
        "judge",
        "--questions",
        str(MT / "question.jsonl"),
        "--reference",
        str(MT / "reference_answer" / "gpt-4.jsonl"),
        "--judge",
        f"local/{args.model}",
        "--mode",
        "pairwise-all",
        "--no-cache",
        "--concurrency",
        "1",
        "--local-dtype",
        args.local_dtype,
    ]

    if not args.skip_speed:
        speed_run(args, common, out, env)
    if not args.llmbar_n:
        return
    # 2. agreement with LLMBar's expert labels on MT-Bench turn-1 pairs
    conv = out / "llmbar_mt"
    subprocess.run(
        [*JUDGE, "mtbench", "llmbar", str(LLMBAR), "--questions", str(MT / "question.jsonl"), "--answers",
         str(MT / "model_answer"), "--out-dir", str(conv)],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    labels = conv / "labels.jsonl"
    subset = out / "llmbar_labels.jsonl"
    subset.write_text("".join(labels.read_text().splitlines(keepends=True)[: args.llmbar_n]))
    judged = out / f"llmbar_judged-{args.local_dtype}.jsonl"
    judged.unlink(missing_ok=True)
    common_l = [*common]
    common_l[common_l.index("--questions") + 1] = str(conv / "question.jsonl")
    l_sec = run_judge([*common_l, "--answers", str(conv / "model_answer"), "--pairs", str(subset), "--out",
                       str(judged)], env)  # fmt: skip
    report_agreement(judged, subset, l_sec, args.boot)


def speed_run(args: argparse.Namespace, common: list[str], out: Path, env: dict[str, str]) -> None:
    """1. speed: 40 pairs, logprob (the local judge's default score mode)."""
    speed = out / f"speed-{args.local_dtype}.jsonl"
    speed.unlink(missing_ok=True)
    pair_args = ["--answers", str(MT / "model_answer"), "--models", "llama-13b,vicuna-13b-v1.3"]
    seconds = run_judge([*common, *pair_args, "--first-n", str(args.first_n), "--out", str(speed)], env)
    recs = records(speed)
    unscored = sum(r["status"] != "ok" for r in recs)
    tokens = sum(r["prompt_tokens"] for r in recs)
    print(
        f"speed: {len(recs)} pairs ({2 * len(recs)} prompts, {tokens} prompt tokens), logprob, cold: "
        f"{seconds:.1f} s wall ({seconds / (2 * len(recs)):.2f} s per prompt, model load included); "
        f"unscored {unscored}; vs 26 min in text mode (issue 11): {26 * 60 / seconds:.1f}x ({args.local_dtype})"
    )
    if args.compare_with:
        compare(recs, records(Path(args.compare_with)))
    if args.text_pairs:
        first = recs[: args.text_pairs]
        pairs_file = out / "text_pairs.jsonl"
        pairs_file.write_text(
            "".join(json.dumps({k: r[k] for k in ("question_id", "model_1", "model_2", "turn")}) + "\n" for r in first)
        )
        text = out / "text.jsonl"
        text.unlink(missing_ok=True)
        t_sec = run_judge(
            [*common, *pair_args, "--pairs", str(pairs_file), "--score-mode", "text", "--out", str(text)], env
        )
        t_recs = records(text)
        # the first pairs are not average ones: scale the logprob time to their own prompt tokens
        own = sum(r["prompt_tokens"] for r in first) / tokens * seconds
        print(
            f"text mode, same machine: {len(t_recs)} pairs in {t_sec:.1f} s ({t_sec / len(t_recs):.1f} s per pair, "
            f"{sum(r['status'] != 'ok' for r in t_recs)} unscored) vs logprob {seconds / len(recs):.1f} s per pair "
            f"on average, ~{own / len(first):.1f} s per pair for these (by their prompt tokens): "
            f"ratio ~{t_sec / own:.1f}x"
        )


def compare(recs: list[dict], other: list[dict]) -> None:
    """Same pairs judged by another run: how many pair verdicts agree, and the largest probability gap."""
    key = lambda r: (r["question_id"], r["model_1"], r["model_2"], r["turn"])  # noqa: E731
    theirs = {key(r): r for r in other}
    both = [(r, theirs[key(r)]) for r in recs if key(r) in theirs and r["status"] == theirs[key(r)]["status"] == "ok"]
    same = sum(a["winner"] == b["winner"] for a, b in both)
    gap = max(abs(a["probs"][k] - b["probs"][k]) for a, b in both for k in a["probs"])
    print(f"  vs the other run: pair verdict the same in {same} of {len(both)}; largest probability gap {gap:.4f}")


def report_agreement(judged: Path, labels: Path, seconds: float, boot: int) -> None:
    import numpy as np

    from calibration import calibrate, load_human_labels, load_judge_scores

    recs = records(judged)
    gold = {(r["question_id"], r["model_1"], r["model_2"], r["turn"]): r["winner"] for r in records(labels)}
    unscored = sum(r["status"] != "ok" for r in recs)
    human, kind = load_human_labels(labels, label_type="pairwise")
    report = calibrate(load_judge_scores(judged), human, label_type=kind, n_boot=boot, seed=0)
    shown = {k: report.metrics[k] for k in ("agreement_with_ties", "agreement_without_ties", "cohen_kappa")
             if k in report.metrics}  # fmt: skip
    print(
        f"LLMBar MT-Bench: {len(recs)} pairs (turn 1), {unscored} unscored, {seconds:.0f} s "
        f"({seconds / (2 * len(recs)):.2f} s per prompt); CIs: {report.ci_method} bootstrap over {report.n_groups} "
        f"questions ({report.group})"
    )
    for name, s in shown.items():
        print(f"  {name}: {s.value:.3f} [{s.ci_low:.3f}, {s.ci_high:.3f}] (judge calibrate, n={report.n_compared})")
    # the same accuracy with one order only (argmax of the first order's probabilities)
    ok = [r for r in recs if r["status"] == "ok"]
    key = [(r["question_id"], r["model_1"], r["model_2"], r["turn"]) for r in ok]
    both = np.array([r["winner"] == gold[k] for r, k in zip(ok, key, strict=True)], dtype=float)
    first = np.array([r["g1_winner"] == gold[k] for r, k in zip(ok, key, strict=True)], dtype=float)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(ok), size=(boot, len(ok)))
    for name, x in (("both orders, probabilities averaged", both), ("first order only", first)):
        lo, hi = np.percentile(x[idx].mean(axis=1), [2.5, 97.5])
        print(f"  accuracy, {name}: {x.mean():.3f} [{lo:.3f}, {hi:.3f}] (item bootstrap)")
    a_first = np.mean([max(r["g1_probs"], key=r["g1_probs"].get) == "A" for r in ok])
    print(f"  consistency of the two orders' own labels: {np.mean([bool(r['consistent']) for r in ok]):.3f}; "
          f"'A' most likely in the first order for {a_first:.0%} of pairs; "
          f"gold model_1 share {np.mean([gold[k] == 'model_1' for k in key]):.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
