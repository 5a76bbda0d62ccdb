"""How fast is ``judge eval``? Reference metrics, the paired bootstrap, BERTScore -- each next to its floor.

Run: .venv/bin/python bench/eval_speed.py [--items 10000] [--boot-items 1000] [--bert-pairs 1000]

1. The reference metrics (exact_match, token_f1, bleu, chrf, rouge, self_bleu) on ``--items`` items x 2
   systems, and in the same run sacrebleu's own ``corpus_bleu`` / ``corpus_chrf`` plus
   ``sentence_bleu`` / ``sentence_chrf`` on the same texts (the floor for our BLEU and chrF, which
   compute the same corpus statistics and sentence scores); then ``judge.evaluate`` of a suite with
   those metrics on the same items written to JSONL, split into loading, metrics, statistics
   (bootstrap CIs and paired deltas with p-values) and writing.
2. ``paired_delta`` of corpus BLEU on ``--boot-items`` items (2000 bootstrap resamples + 2000
   randomization rounds) next to sacrebleu's ``PairedTest(test_type="bs", n_samples=2000)``.
3. BERTScore (MiniLM, last layer, CPU) pairs/s at batch sizes 16, 64, 128.

Texts are SummEval summaries (two systems' summaries of the same article) and the article's
reference, from ``../shared/data`` beside the repo, drawn with replacement to the wanted count;
synthetic sentences when that folder is absent. The machine is noisy: compare the ratios printed,
which are measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

logging.getLogger("sacrebleu").setLevel(logging.ERROR)  # its "tokenized period" warning, once per call

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared/data beside the repo
REF_METRICS = ("exact_match", "token_f1", "bleu", "chrf", "rouge", "self_bleu")


def load_items(n: int, seed: int = 0) -> tuple[list[dict[str, str]], str]:
    """``n`` items of {id, input, reference, a, b}: two SummEval systems' summaries of one article."""
    rng = random.Random(seed)
    path = DATA / "summeval/summeval_flat.jsonl"
    if path.is_file():
        by_doc: dict[str, list[dict[str, Any]]] = {}
        for line in path.open(encoding="utf-8"):
            r = json.loads(line)
            by_doc.setdefault(r["doc_id"], []).append(r)
        docs = sorted(by_doc)
        items = []
        for k in range(n):
            rows = by_doc[rng.choice(docs)]
            a, b = rng.sample(rows, 2)
            items.append(
                {"id": f"i{k}", "input": a["source"], "reference": a["reference"], "a": a["summary"], "b": b["summary"]}
            )
        return items, f"SummEval ({len(docs)} articles x 16 systems, drawn with replacement)"
    words = ["the", "a", "of", "to", "and", "in", "model", "system", "output", "reference", "score", "metric", "judge"]

    def sentence() -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(20, 60))) + " ."

    items = [
        {"id": f"i{k}", "input": sentence(), "reference": sentence(), "a": sentence(), "b": sentence()}
        for k in range(n)
    ]
    return items, "synthetic sentences (../shared/data not found)"


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def bench_reference(items: list[dict[str, str]]) -> None:
    import sacrebleu

    from judge.metrics import get_metric
    from judge.metrics.base import EvalInput

    n = len(items)
    ids, refs = [it["id"] for it in items], [[it["reference"]] for it in items]
    views = {s: EvalInput(ids, [it[s] for it in items], [""] * n, refs, [None] * n) for s in ("a", "b")}
    print(f"[1] reference metrics: {n} items x 2 systems")
    print(f"  {'metric':<12} {'s (2 systems)':>14} {'items/s':>10}")
    ours: dict[str, float] = {}
    for name in REF_METRICS:
        spec = get_metric(name)
        ours[name] = sum(timed(lambda s=s, fn=spec.fn: fn(views[s], {}))[0] for s in views)  # type: ignore[misc]
        print(f"  {name:<12} {ours[name]:14.2f} {2 * n / ours[name]:10,.0f}")
    total = sum(ours.values())
    print(f"  {'all six':<12} {total:14.2f} {2 * n / total:10,.0f}")

    ref_stream = [it["reference"] for it in items]
    floor: dict[str, float] = {}
    for label, fn in (
        ("corpus_bleu", lambda h: sacrebleu.corpus_bleu(h, [ref_stream])),
        ("sentence_bleu", lambda h: [sacrebleu.sentence_bleu(x, [r]) for x, r in zip(h, ref_stream, strict=True)]),
        ("corpus_chrf", lambda h: sacrebleu.corpus_chrf(h, [ref_stream])),
        ("sentence_chrf", lambda h: [sacrebleu.sentence_chrf(x, [r]) for x, r in zip(h, ref_stream, strict=True)]),
    ):
        floor[label] = sum(timed(lambda s=s, fn=fn: fn([it[s] for it in items]))[0] for s in ("a", "b"))  # type: ignore[misc]
    print("  sacrebleu on the same texts (2 systems):")
    for label, secs in floor.items():
        print(f"    {label:<14} {secs:8.2f} s")
    bleu_floor = floor["corpus_bleu"] + floor["sentence_bleu"]
    chrf_floor = floor["corpus_chrf"] + floor["sentence_chrf"]
    print(f"  ours bleu / (corpus_bleu + sentence_bleu)      : {ours['bleu'] / bleu_floor:.2f}")
    print(f"  ours chrf / (corpus_chrf + sentence_chrf)      : {ours['chrf'] / chrf_floor:.2f}")
    brief = floor["corpus_bleu"] + floor["corpus_chrf"] + floor["sentence_bleu"]
    print(
        f"  ours bleu+chrf / (corpus_bleu + corpus_chrf + sentence_bleu): {(ours['bleu'] + ours['chrf']) / brief:.2f}"
    )
    print(f"  all six metrics / that sacrebleu time          : {total / brief:.2f}")


def bench_evaluate(items: list[dict[str, str]]) -> None:
    import judge
    from judge.eval import run as run_mod
    from judge.eval import stats as stats_mod

    spent = {"metrics": 0.0, "statistics": 0.0, "writing": 0.0}

    def wrap(owner: Any, attr: str, bucket: str) -> Callable[[], None]:
        original = getattr(owner, attr)

        def timed_call(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent[bucket] += time.perf_counter() - start

        setattr(owner, attr, timed_call)
        return lambda: setattr(owner, attr, original)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with (folder / "items.jsonl").open("w", encoding="utf-8") as fh:
            for it in items:
                fh.write(json.dumps({k: it[k] for k in ("id", "input", "reference")}) + "\n")
        for s in ("a", "b"):
            with (folder / f"{s}.jsonl").open("w", encoding="utf-8") as fh:
                for it in items:
                    fh.write(json.dumps({"id": it["id"], "output": it[s]}) + "\n")
        suite = {
            "data": "items.jsonl",
            "systems": {"a": "a.jsonl", "b": "b.jsonl"},
            "baseline": "a",
            "metrics": list(REF_METRICS),
        }
        restore = [
            wrap(run_mod, "_compute", "metrics"),
            wrap(stats_mod, "system_value", "statistics"),
            wrap(stats_mod, "paired_delta", "statistics"),
            wrap(run_mod.EvalResult, "write", "writing"),
        ]
        try:
            wall, result = timed(lambda: judge.evaluate(suite, base_dir=folder, out=folder / "out"))
        finally:
            for undo in restore:
                undo()
    rest = wall - sum(spent.values())
    n_fig = len(result.figures)
    print(f"  judge.evaluate, {len(items)} items x 2 systems, {n_fig} figures, 2000 resamples + 2000 rounds each:")
    print(
        f"    total {wall:7.2f} s  = metrics {spent['metrics']:.2f} + statistics {spent['statistics']:.2f}"
        f" + writing {spent['writing']:.2f} + loading, scores and review {rest:.2f}"
    )


def bench_bootstrap(items: list[dict[str, str]], n_boot: int = 2000) -> None:
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    from judge.eval.stats import Resampling, paired_delta
    from judge.metrics import get_metric
    from judge.metrics.base import EvalInput

    n = len(items)
    ids, refs = [it["id"] for it in items], [[it["reference"]] for it in items]
    spec = get_metric("bleu")
    t_extract, res = timed(
        lambda: {
            s: spec.fn(EvalInput(ids, [it[s] for it in items], [""] * n, refs, [None] * n), {}) for s in ("b", "a")
        }
    )
    sys_, base = res["b"], res["a"]
    pair = (sys_.corpus["bleu"], base.corpus["bleu"])
    vec = "vectorised" if pair[0].vectorised else "one call per resample"
    print(f"[2] paired bootstrap of corpus BLEU: {n} items, {n_boot} resamples (corpus score: {vec})")

    def ours(n_perm: int) -> dict[str, Any]:
        return paired_delta(
            sys_.scores["bleu"], base.scores["bleu"], pair, True, Resampling(n_boot=n_boot, n_perm=n_perm)
        )

    t_both, d = timed(lambda: ours(2000))
    t_boot, _ = timed(lambda: ours(100))  # the minimum the suite allows; mostly the bootstrap
    refs_stream = [[it["reference"] for it in items]]
    test = PairedTest(
        [("a", [it["a"] for it in items]), ("b", [it["b"] for it in items])],
        {"BLEU": BLEU()},
        refs_stream,
        test_type="bs",
        n_samples=n_boot,
    )
    t_sacre, (_, scores) = timed(test)
    sb = scores["BLEU"][1]
    print(f"  ours paired_delta, 2000 resamples + 2000 AR rounds : {t_both:7.3f} s")
    print(f"  ours paired_delta, 2000 resamples + 100 AR rounds  : {t_boot:7.3f} s")
    print(f"  ours n-gram statistics of both systems (bleu metric): {t_extract:7.3f} s")
    print(f"  sacrebleu PairedTest bs, {n_boot} (incl. its statistics): {t_sacre:7.3f} s")
    print(f"  ratio ours (statistics + paired_delta 2000+2000) / sacrebleu: {(t_extract + t_both) / t_sacre:.2f}")
    print(
        f"  delta {d['value']:.4f} [{d['ci_low']:.4f}, {d['ci_high']:.4f}] p={d['p_value']:.4f};"
        f" sacrebleu: b={sb.score:.4f} p={sb.p_value:.4f} (its CI is per system, not of the delta)"
    )


def bench_bertscore(items: list[dict[str, str]], n_pairs: int) -> None:
    import torch

    from judge.metrics import get_metric
    from judge.metrics.base import EvalInput

    spec = get_metric("bertscore")
    sub = items[:n_pairs]
    data = EvalInput(
        [it["id"] for it in sub],
        [it["a"] for it in sub],
        [""] * len(sub),
        [[it["reference"]] for it in sub],
        [None] * len(sub),
    )
    load, _ = timed(
        lambda: spec.fn(EvalInput(data.ids[:4], data.outputs[:4], [""] * 4, data.references[:4], [None] * 4), {})
    )
    print(
        f"[3] BERTScore, MiniLM (last layer), CPU, {torch.get_num_threads()} torch threads, {len(sub)} pairs"
        f" (model load + first call {load:.1f} s)"
    )
    # inside judge eval vs bert-score's own BERTScorer on the same pairs: CPU seconds (all threads), best of 2
    # alternated runs, after both loaded their model; equal F1 expected
    from bert_score import BERTScorer

    from judge.local.models import resolve_model
    from judge.metrics.modelbased import DEFAULT_BERTSCORE_MODEL, _num_hidden_layers

    path = resolve_model(DEFAULT_BERTSCORE_MODEL)
    scorer = BERTScorer(model_type=path, num_layers=_num_hidden_layers(path), nthreads=0)
    cands, refs = [it["a"].strip() for it in sub], [[it["reference"].strip()] for it in sub]
    scorer.score(cands[:4], refs[:4])
    ours_cpu, direct_cpu = [], []
    for _ in range(2):
        c0 = time.process_time()
        res = spec.fn(data, {"batch_size": 16})
        ours_cpu.append(time.process_time() - c0)
        c0 = time.process_time()
        _, _, f_direct = scorer.score(cands, refs, batch_size=16)
        direct_cpu.append(time.process_time() - c0)
    diff = float(np.nanmax(np.abs(res.scores["bertscore"] - f_direct.numpy())))
    print(
        f"  judge eval's bertscore {min(ours_cpu):.1f} CPU s, BERTScorer.score {min(direct_cpu):.1f} CPU s on the same"
        f" {len(sub)} pairs (batch 16): ratio {min(ours_cpu) / min(direct_cpu):.2f}; max |F1 difference| {diff:.2e}"
    )
    base = None
    for bs in (16, 64, 128):
        secs, res = timed(lambda bs=bs: spec.fn(data, {"batch_size": bs}))
        base = base or secs
        print(
            f"  batch {bs:>4}: {secs:7.2f} s  {len(sub) / secs:7.1f} pairs/s  (time / batch-16 time {secs / base:.2f})"
            f"  mean F1 {np.nanmean(res.scores['bertscore']):.4f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=10000)
    parser.add_argument("--boot-items", type=int, default=1000)
    parser.add_argument("--bert-pairs", type=int, default=1000)
    parser.add_argument(
        "--skip", default="", help="comma list of parts to skip: reference,evaluate,bootstrap,bertscore"
    )
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    items, source = load_items(args.items)
    print(f"texts: {source}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    if "reference" not in skip:
        bench_reference(items)
    if "evaluate" not in skip:
        bench_evaluate(items)
    if "bootstrap" not in skip:
        bench_bootstrap(items[: args.boot_items])
    if "bertscore" not in skip:
        bench_bertscore(items, args.bert_pairs)


if __name__ == "__main__":
    main()
