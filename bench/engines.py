"""The Ray engine's cost per item against the in-process engine, measured in one run.

Perplexity of N texts (SummEval system summaries when ../shared/data has them, else synthetic
sentences) on the tiny random Llama and on SmolLM2-135M, each through the local engine and through
Ray Data on a local Ray instance (``--cpus`` CPUs, one 1-CPU actor per CPU). Ray's time includes
starting its actors, each loading the model; the Ray instance's own start is reported apart. Also
the driver's peak RSS growth while streaming a larger tiny-model run (memory stays flat if results
are not held back). Prints seconds, per-item overhead and the ray/local ratios.

Then ``judge score`` with a local judge (factuality, logprob mode, no cache) through the local engine
(:func:`judge.runner.run_items`) and through Ray (:func:`judge.engines.score.run_items_on`), on
``--score-n`` items: seconds, ms/item, ratio and the largest score difference.

    python bench/engines.py [--n 200 --cpus 2 --stream-n 5000 --skip-smollm2 --score-n 100 --score-only]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "summeval" / "summeval_flat.jsonl"


def texts(n: int) -> list[dict[str, str]]:
    out: list[str] = []
    if DATA.is_file():
        for line in DATA.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            text = rec.get("output") or rec.get("summary") or rec.get("decoded")
            if isinstance(text, str) and text.strip() and text not in out:
                out.append(text)
            if len(out) >= n:
                break
    words = "the cat sat on the mat and a big red dog ran in the park".split()  # noqa: SIM905
    while len(out) < n:
        k = len(out)
        out.append(" ".join(words[k % 5 :] + words[: k % 7]))
    return [{"id": f"t{k}", "output": t} for k, t in enumerate(out)]


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(engine: object, model: str, items: list[dict[str, str]]) -> tuple[float, list[float | None]]:
    from judge.baselines._run import run_baseline

    t0 = time.perf_counter()
    res = run_baseline("perplexity", items, engine=engine, model=model)  # type: ignore[arg-type]
    return time.perf_counter() - t0, res.scores()


def score_timed(engine: str, judge: str, items: list[dict[str, str]]) -> tuple[float, list[float | None]]:
    """``judge score`` of ``items`` with ``judge`` on ``engine`` (no cache): seconds and scores."""
    import asyncio

    from judge.dataset import coerce_items
    from judge.engines import get_engine
    from judge.engines.score import GraderRecipe, run_items_on
    from judge.runner import build_grader, run_items

    grader = build_grader("factuality", judge, cache=False)
    todo = coerce_items([{"id": it["id"], "input": "Summarise the article.", "output": it["output"]} for it in items])
    t0 = time.perf_counter()
    if engine == "local":
        res = asyncio.run(run_items(grader, todo))
    else:
        res = asyncio.run(run_items_on(get_engine(engine), grader, todo, GraderRecipe.of(grader, judge)))
    seconds = time.perf_counter() - t0
    reasons = res.summary().unscored_reasons
    if reasons:
        print(f"  {engine}: unscored {reasons}")
    return seconds, [v.score for v in res]


def score_bench(label: str, judge: str, n: int) -> None:
    items = texts(n)
    score_timed("local", judge, items[:2])  # load the model in the driver first: model load is not engine cost
    local_s, local_scores = score_timed("local", judge, items)
    ray_s, ray_scores = score_timed("ray", judge, items)
    diff = max(
        (abs(a - b) for a, b in zip(local_scores, ray_scores, strict=True) if a is not None and b is not None),
        default=0.0,
    )
    print(
        f"score {label:8s} n={n}: local {local_s:6.2f} s ({1000 * local_s / n:6.1f} ms/item)  "
        f"ray {ray_s:6.2f} s ({1000 * ray_s / n:6.1f} ms/item)  ray/local {ray_s / local_s:5.2f}x  "
        f"overhead {1000 * (ray_s - local_s) / n:+6.1f} ms/item  max abs score diff {diff:.1e}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--stream-n", type=int, default=5000, help="items for the streaming RSS check (tiny model)")
    ap.add_argument("--skip-smollm2", action="store_true")
    ap.add_argument("--score-n", type=int, default=100, help="items for the judge score comparison (0: skip it)")
    ap.add_argument("--score-only", action="store_true", help="only the judge score comparison")
    args = ap.parse_args()

    import ray

    from judge.engines import LocalEngine, get_engine
    from judge.testing.tiny import causal_lm

    tiny = str(causal_lm(Path(tempfile.mkdtemp()) / "lm"))
    items = texts(args.n)
    t0 = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, configure_logging=False, log_to_driver=False)
    print(f"ray.init (local instance, {args.cpus} CPUs): {time.perf_counter() - t0:.1f} s")

    models = [("tiny", tiny)] + ([] if args.skip_smollm2 else [("smollm2", "smollm2")])
    if args.score_n:
        from judge.testing.tiny import tiny_causal_lm

        judges = [("tiny", str(tiny_causal_lm(Path(tempfile.mkdtemp()) / "judge")))] + models[1:]
        for label, model in judges:
            score_bench(label, "local/" + model, args.score_n)
    if args.score_only:
        ray.shutdown()
        return
    for label, model in models:
        timed(LocalEngine(), model, items[:4])  # load the model in the driver first: model load is not engine cost
        local_s, local_scores = timed(LocalEngine(), model, items)
        ray_s, ray_scores = timed(get_engine("ray"), model, items)
        diff = max(
            (abs(a - b) / a for a, b in zip(local_scores, ray_scores, strict=True) if a is not None and b is not None),
            default=0.0,
        )
        print(
            f"{label:8s} n={args.n}: local {local_s:6.2f} s ({1000 * local_s / args.n:6.1f} ms/item)  "
            f"ray {ray_s:6.2f} s ({1000 * ray_s / args.n:6.1f} ms/item)  ray/local {ray_s / local_s:5.2f}x  "
            f"overhead {1000 * (ray_s - local_s) / args.n:+6.1f} ms/item  max rel diff {diff:.1e}"
        )

    # streaming: the driver's peak RSS before and after a large run, and per item
    big = texts(args.stream_n)
    for n in (args.stream_n // 5, args.stream_n):
        before = rss_mib()
        t0 = time.perf_counter()
        timed(get_engine("ray"), tiny, big[:n])
        print(
            f"ray stream n={n}: {time.perf_counter() - t0:6.1f} s, driver peak RSS {before:.0f} -> {rss_mib():.0f} MiB "
            f"(+{1024 * (rss_mib() - before) / n:.2f} KiB/item)"
        )
    ray.shutdown()


if __name__ == "__main__":
    main()
