"""Do metric deltas agree with people? System-level agreement on SummEval (100 articles x 16 systems).

A regression gate compares two systems by the sign of a metric delta. This asks how often that sign
matches the sign of the expert delta. Every metric of the registry (``judge.metrics.get_metric``)
scores all summaries; each system gets one value per metric (corpus BLEU / chrF from summed n-gram
statistics, the mean otherwise; lower-is-better metrics negated) and one mean expert rating per
dimension, over the same articles. Then, for each metric x expert dimension:

- pairwise sign agreement: over the 120 pairs of systems, the share where sign(metric delta) ==
  sign(expert delta). Pairs with an exact expert tie are left out (and counted); a metric tie on a
  pair the experts separate counts as a disagreement;
- system-level Kendall tau-b (``scipy.stats.kendalltau``) of metric values vs expert means;

each with a 95% percentile interval from a bootstrap over ARTICLES (``judge.stats.resample_indices``,
``judge.stats.percentile_ci``): resample articles with replacement, recompute every system's value
and expert mean, recompute the statistic.

``log p(summary | article)`` and PMI (``judge.baselines.pmi``) condition a 135M LM on the whole
article, about 10x the cost of the other metrics on CPU, so they run on a fixed random subset of
articles (``--pmi-articles``, nested in ``--articles``), and their rows use only those articles.

Per-item scores are cached in ``--cache`` so a rerun only redoes the statistics.

    .venv/bin/python bench/delta_validity.py --boot 1000 --pmi-articles 30
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from itertools import combinations
from pathlib import Path

import numpy as np
from scipy import stats

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared/data beside the repo
DIMS = ("coherence", "consistency", "fluency", "relevance")
ALL_METRICS = ("bleu", "chrf", "rouge", "bertscore", "perplexity", "pmi")
# per figure: display name, and whether it is a corpus figure (BLEU/chrF) or a mean of item scores
LABELS = {
    "bleu": "BLEU (corpus)",
    "chrf": "chrF (corpus)",
    "rouge1": "ROUGE-1 F1",
    "rouge2": "ROUGE-2 F1",
    "rougeL": "ROUGE-L F1",
    "bertscore": "BERTScore F1 (MiniLM)",
    "perplexity": "perplexity (negated)",
    "logp_given_source": "log p(summary \\| article) / token",
    "pmi": "PMI(summary; article) / token",
}


def load(data: Path) -> tuple[list[str], list[str], dict[tuple[str, str], dict]]:
    rows = [json.loads(line) for line in (data / "summeval" / "summeval_flat.jsonl").open()]
    docs = sorted({r["doc_id"] for r in rows})
    systems = sorted({r["system_id"] for r in rows}, key=lambda s: (len(s), s))
    table = {(r["doc_id"], r["system_id"]): r for r in rows}
    missing = [(d, s) for d in docs for s in systems if (d, s) not in table]
    if missing:
        raise SystemExit(f"summeval_flat.jsonl is not a full article x system grid ({len(missing)} cells missing)")
    return docs, systems, table


# ----------------------------------------------------------------------------------------------
# scoring (cached): per metric, {figure: (n_docs, n_sys) item scores} and {figure: (n_docs, n_sys, k) stats}


def score_registry(
    name: str, docs: list[str], systems: list[str], table: dict, cache: Path
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict]:
    """One call of the registry metric on every (article, system) summary; cached as .npz."""
    path = cache / f"{name}.{len(docs)}.npz"
    meta_path = cache / f"{name}.{len(docs)}.json"
    if path.exists() and meta_path.exists():
        z = np.load(path)
        meta = json.loads(meta_path.read_text())
        scores = {k[2:]: z[k] for k in z.files if k.startswith("s_")}
        corpus = {k[2:]: z[k] for k in z.files if k.startswith("c_")}
        return scores, corpus, meta
    from judge.metrics import EvalInput, get_metric

    spec = get_metric(name)
    cells = [(d, s) for d in docs for s in systems]
    data = EvalInput(
        ids=[f"{d}/{s}" for d, s in cells],
        outputs=[table[c]["summary"] for c in cells],
        inputs=[table[c]["source"] for c in cells],
        references=[[table[c]["reference"]] for c in cells],
        contexts=[None] * len(cells),
    )
    t0 = time.perf_counter()
    res = spec.fn(data, {})
    seconds = time.perf_counter() - t0
    shape = (len(docs), len(systems))
    scores = {f: np.asarray(v, dtype=float).reshape(shape) for f, v in res.scores.items()}
    corpus = {f: np.asarray(c.stats, dtype=float).reshape(*shape, -1) for f, c in res.corpus.items()}
    meta = {"seconds": seconds, "items": len(cells), "unscored": int(sum(e is not None for e in res.errors))}
    np.savez(path, **{f"s_{k}": v for k, v in scores.items()}, **{f"c_{k}": v for k, v in corpus.items()})
    meta_path.write_text(json.dumps(meta))
    print(f"  {name}: {len(cells)} summaries in {seconds:.0f} s", file=sys.stderr, flush=True)
    return scores, corpus, meta


def score_pmi(docs: list[str], systems: list[str], table: dict, cache: Path, budget_s: float) -> tuple[list[str], dict]:
    """``judge.baselines.pmi`` article by article (16 summaries per call), appended to a JSONL cache.

    Stops starting new articles once ``budget_s`` seconds of scoring have passed; returns the
    articles scored (in ``docs`` order) and the per-(article, system) records.
    """
    from judge.baselines import pmi

    path = cache / "pmi.jsonl"
    done: dict[str, dict] = {}
    if path.exists():
        for line in path.open():
            rec = json.loads(line)
            done[rec["doc_id"]] = rec
    spent = sum(done[d]["seconds"] for d in docs if d in done)
    t_start = time.perf_counter()
    for d in docs:
        if d in done:
            continue
        if time.perf_counter() - t_start >= budget_s:
            print(f"  pmi: time budget reached; {sum(d in done for d in docs)} articles scored", file=sys.stderr)
            break
        t0 = time.perf_counter()
        items = [
            {"id": f"{d}/{s}", "input": table[(d, s)]["source"], "output": table[(d, s)]["summary"]} for s in systems
        ]
        res = pmi(items, source_field="input")
        rec = {
            "doc_id": d,
            "seconds": time.perf_counter() - t0,
            "truncated": res.summary.get("truncated_sources", 0),
            "records": {s: r for s, r in zip(systems, res.records, strict=True)},
        }
        done[d] = rec
        spent += rec["seconds"]
        with path.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
        n_done = sum(x in done for x in docs)
        print(f"  pmi: article {n_done}/{len(docs)} in {rec['seconds']:.0f} s", file=sys.stderr, flush=True)
    scored = [d for d in docs if d in done]
    out = {
        "docs": scored,
        "seconds": sum(done[d]["seconds"] for d in scored),
        "truncated": sum(done[d]["truncated"] for d in scored),
        "records": {d: done[d]["records"] for d in scored},
    }
    return scored, out


# ----------------------------------------------------------------------------------------------
# statistics


class Signal:
    """A metric figure's per-system value over any weighting of its articles (counts from a resample)."""

    def __init__(
        self,
        docs: list[str],
        items: np.ndarray | None = None,
        stats_: np.ndarray | None = None,
        corpus_score=None,
        sign: float = 1.0,
    ) -> None:  # type: ignore[no-untyped-def]
        self.docs = docs
        self.items = items  # (n_docs, n_sys), NaN = unscored
        self.stats = stats_  # (n_docs, n_sys, k) for corpus figures
        self.corpus_score = corpus_score
        self.sign = sign

    def values(self, counts: np.ndarray) -> np.ndarray:
        """(B, n_sys) system values for (B, n_docs) article counts."""
        if self.stats is not None:
            summed = np.einsum("bd,dsk->bsk", counts, self.stats)
            out = np.array(
                [[self.corpus_score(summed[b, s]) for s in range(summed.shape[1])] for b in range(summed.shape[0])]
            )
        else:
            ok = ~np.isnan(self.items)
            num = counts @ np.where(ok, self.items, 0.0)
            den = counts @ ok.astype(float)
            with np.errstate(invalid="ignore", divide="ignore"):
                out = num / den
        return self.sign * out


PAIRS = np.array(list(combinations(range(16), 2)))


def agreement(m: np.ndarray, h: np.ndarray) -> tuple[float, int]:
    """Share of system pairs where sign(metric delta) == sign(expert delta), expert ties left out."""
    dm = np.sign(m[PAIRS[:, 0]] - m[PAIRS[:, 1]])
    dh = np.sign(h[PAIRS[:, 0]] - h[PAIRS[:, 1]])
    keep = dh != 0
    if not keep.any():
        return float("nan"), int((~keep).sum())
    return float(np.mean(dm[keep] == dh[keep])), int((~keep).sum())


def tau(m: np.ndarray, h: np.ndarray) -> float:
    ok = np.isfinite(m) & np.isfinite(h)
    return float(stats.kendalltau(m[ok], h[ok]).statistic)


def compare(sig: Signal, human: Signal, n_boot: int, seed: int) -> dict:
    from judge.stats import percentile_ci, resample_counts, resample_indices

    n = len(sig.docs)
    ones = np.ones((1, n))
    m0, h0 = sig.values(ones)[0], human.values(ones)[0]
    agr, ties = agreement(m0, h0)
    t0 = tau(m0, h0)
    counts = resample_counts(resample_indices(n, n_boot, seed), n)
    mb, hb = sig.values(counts), human.values(counts)
    agr_b = np.array([agreement(mb[b], hb[b])[0] for b in range(n_boot)])
    tau_b = np.array([tau(mb[b], hb[b]) for b in range(n_boot)])
    return {
        "n_docs": n,
        "agreement": agr,
        "agreement_ci": percentile_ci(agr_b),
        "expert_ties": ties,
        "tau": t0,
        "tau_ci": percentile_ci(tau_b),
    }


def fmt(point: float, ci: tuple[float | None, float | None], pct: bool) -> str:
    lo, hi = ci
    if pct:
        return f"{point:.0%} [{lo:.0%}, {hi:.0%}]" if lo is not None else f"{point:.0%}"
    return f"{point:+.2f} [{lo:+.2f}, {hi:+.2f}]" if lo is not None else f"{point:+.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA, help="the shared data folder (default: ../shared/data)")
    ap.add_argument("--articles", type=int, default=100, help="fixed random subset of N articles (seed 0)")
    ap.add_argument(
        "--pmi-articles",
        type=int,
        default=30,
        help="articles for log p(summary | article) and PMI: the first N of the same random order",
    )
    ap.add_argument(
        "--pmi-budget",
        type=float,
        default=float("inf"),
        help="seconds of new PMI scoring allowed; stops starting articles after it",
    )
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--metrics", default=",".join(ALL_METRICS), help=f"comma list of {', '.join(ALL_METRICS)}")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/judge-delta-validity"))
    ap.add_argument("--no-expert-pairs", action="store_true", help="skip the expert-vs-expert reference rows")
    args = ap.parse_args()

    flat = args.data / "summeval" / "summeval_flat.jsonl"
    if not flat.exists():
        print(f"SummEval data not found at {flat}; nothing to do (pass --data).", file=sys.stderr)
        return
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    unknown = sorted(set(metrics) - set(ALL_METRICS))
    if unknown:
        ap.error(f"unknown metrics {unknown}; known: {', '.join(ALL_METRICS)}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    all_docs, systems, table = load(args.data)
    order = [all_docs[i] for i in np.random.default_rng(args.seed).permutation(len(all_docs))]
    docs = order[: args.articles]
    pmi_docs_wanted = docs[: min(args.pmi_articles, len(docs))]
    cache = args.cache / f"seed{args.seed}"
    cache.mkdir(parents=True, exist_ok=True)
    print(f"{len(docs)} articles x {len(systems)} systems", file=sys.stderr, flush=True)

    def human(dim: str, ds: list[str]) -> Signal:
        return Signal(ds, items=np.array([[table[(d, s)][dim] for s in systems] for d in ds], dtype=float))

    signals: dict[str, Signal] = {}
    runtimes: dict[str, str] = {}
    for name in metrics:
        if name == "pmi":
            scored, out = score_pmi(pmi_docs_wanted, systems, table, cache, args.pmi_budget)
            if not scored:
                continue
            for fig in ("logp_given_source", "pmi"):
                vals = np.array(
                    [
                        [np.nan if out["records"][d][s][fig] is None else out["records"][d][s][fig] for s in systems]
                        for d in scored
                    ],
                    dtype=float,
                )
                signals[fig] = Signal(scored, items=vals)
            runtimes["pmi"] = (
                f"{out['seconds']:.0f} s for {len(scored)} articles x 16 = {16 * len(scored)} summaries"
                f" ({out['truncated']} sources truncated)"
            )
            continue
        from judge.metrics import get_metric

        spec = get_metric(name)
        scores, corpus, meta = score_registry(name, docs, systems, table, cache)
        runtimes[name] = f"{meta['seconds']:.0f} s for {meta['items']} summaries ({meta['unscored']} unscored)"
        for fig in spec.figures:
            sign = -1.0 if fig.direction == "lower" else 1.0
            if fig.name in corpus:
                from judge.metrics.reference import SacreCorpusScore, make_bleu

                if name == "bleu":
                    scorer = SacreCorpusScore(make_bleu({}))
                else:
                    from sacrebleu.metrics import CHRF

                    scorer = SacreCorpusScore(CHRF())
                signals[fig.name] = Signal(docs, stats_=corpus[fig.name], corpus_score=scorer, sign=sign)
            else:
                signals[fig.name] = Signal(docs, items=scores[fig.name], sign=sign)

    t0 = time.perf_counter()
    lines = [
        "| metric | articles | dimension | sign agreement [95% CI] | expert ties | Kendall τ [95% CI] |",
        "|---|---|---|---|---|---|",
    ]
    for fig, sig in signals.items():
        for dim in DIMS:
            r = compare(sig, human(dim, sig.docs), args.boot, args.seed)
            lines.append(
                f"| {LABELS.get(fig, fig)} | {r['n_docs']} | {dim} | {fmt(r['agreement'], r['agreement_ci'], True)}"
                f" | {r['expert_ties']} | {fmt(r['tau'], r['tau_ci'], False)} |"
            )
    if not args.no_expert_pairs:
        for a, b in combinations(DIMS, 2):
            r = compare(human(a, docs), human(b, docs), args.boot, args.seed)
            lines.append(
                f"| *expert {a}* | {r['n_docs']} | {b} | {fmt(r['agreement'], r['agreement_ci'], True)}"
                f" | {r['expert_ties']} | {fmt(r['tau'], r['tau_ci'], False)} |"
            )
    print("\n".join(lines))
    print(
        f"\nbootstrap: {args.boot} resamples of articles, seed {args.seed}; statistics {time.perf_counter() - t0:.0f} s"
    )
    for name, text in runtimes.items():
        print(f"- {name}: {text}")


if __name__ == "__main__":
    main()
