"""Do the 95% CIs hold their coverage? Repeated samples from real labelled populations.

Each population is a real labelled set taken as the truth: its statistics on all items are the
population values. A draw takes ``n`` items from it with replacement (so the population is exactly the
distribution being sampled, with no finite-population correction), computes every statistic's 95% CI
the way ``calibrate`` does (``calibration.bootstrap.bootstrap`` + ``judge.stats.percentile_ci`` /
``judge.stats.bca_ci`` with ``calibration.bootstrap.jackknife``; the design is built from the draw, as
``calibrate`` builds it from its input), and records whether the CI contains the population value. The
coverage is the share of draws that did, printed with its own 95% Wilson interval. A CI that is undefined
(a draw with a single class) counts as a miss.

Populations (from ../shared/data beside the repo; a missing set is skipped):

- llmfao: GPT-4's verdict vs the crowd's majority (pairwise; a tied majority counts as "tie");
- summeval: the experts' mean relevance (as the "judge") vs mean coherence (as the "human"), both rounded
  to the 1-5 scale, so that the ten ordinal statistics apply;
- pandalm: annotator 1 (as the "judge") vs annotator 2 (pairwise);
- summeval-grouped: the same SummEval pairs, but a draw takes ``k`` *articles* (all 16 summaries of each):
  the item-level interval (summaries resampled as if independent) next to the cluster interval
  (articles resampled, ``units=`` the article);
- eval-delta: ``judge.eval.stats.paired_delta`` of two SummEval systems' expert scores, articles drawn;
  the population delta is the mean over all 100 articles.
- ppi: prediction-powered estimates of the *human* mean (``judge.ppi``) where the judge is biased.
  A draw is a pool as large as the population, drawn with replacement (the superpopulation), of which
  ``n`` random items are labelled; the truth is the population's human mean. Populations: LLMFAO (GPT-4's
  verdicts vs the crowd majority, as model_x's win rate with a tie as 1/2); SummEval (ROUGE-L of the summary
  against the reference, a local baseline on another scale, as the judge of the experts' relevance, mapped
  through the cross-fitted isotonic fit; and the same with whole articles drawn and the cluster-robust
  variance); and a paired delta of two SummEval systems (articles drawn, both judged on every article, both
  labelled on ``n`` of them). Beside PPI: the labelled-only and judge-only intervals, and the widths.

    .venv/bin/python bench/coverage.py                        # defaults: 400 draws, 2000 resamples, ~5 min
    .venv/bin/python bench/coverage.py --draws 1000 --only llmfao --sizes 40 50
    .venv/bin/python bench/coverage.py --only ppi                             # 1000 draws per n, ~1 min

The defaults take about 5 minutes on one core of a 2-core machine; ``--draws 1000`` (Wilson half-width
about ±0.014 at 95% coverage) about 12.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from calibration.agreement import build_design, encode_cells, table_estimates
from calibration.bootstrap import bootstrap, jackknife
from judge.eval.stats import Resampling, paired_delta
from judge.stats import bca_ci, percentile_ci

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared/data beside the repo
SIZES = (30, 50, 100, 150, 200)
ARTICLES = (10, 20, 40)  # articles per draw in the grouped check (x 16 summaries)
METHODS = ("percentile", "bca")
PAIRWISE = {"A": 0.0, "B": 1.0, "tie": 2.0}


# ------------------------------------------------------------------------------------------ populations


def _majority(values: list[str]) -> str:
    counts = Counter(values).most_common()
    return "tie" if len(counts) > 1 and counts[0][1] == counts[1][1] else counts[0][0]


def llmfao() -> tuple[str, np.ndarray, np.ndarray]:
    from calibration.datasets import load_llmfao

    items, labels = load_llmfao(DATA / "llmfao")
    gold = labels.groupby("id")["label"].agg(lambda s: _majority(list(s)))
    keep = items[items["id"].isin(gold.index) & items["score"].notna()]
    y = gold.loc[keep["id"]].map(PAIRWISE).to_numpy(float)
    return "pairwise", y, keep["score"].map(PAIRWISE).to_numpy(float)


def _summeval_rows() -> list[dict]:
    return [json.loads(line) for line in (DATA / "summeval" / "summeval_flat.jsonl").open()]


def _round(x: np.ndarray) -> np.ndarray:
    return np.floor(x + 0.5)  # half up: 3.5 -> 4 (mean ratings are thirds, so no exact halves occur)


def summeval() -> tuple[str, np.ndarray, np.ndarray]:
    rows = _summeval_rows()
    human = _round(np.array([r["coherence"] for r in rows], float))
    judge = _round(np.array([r["relevance"] for r in rows], float))
    return "ordinal", human, judge


def pandalm() -> tuple[str, np.ndarray, np.ndarray]:
    records = json.loads((DATA / "pandalm_testset" / "testset-v1.json").read_text())
    code = {1: 0.0, 2: 1.0, 0: 2.0}  # 1 = response1 better (A), 2 = response2 (B), 0 = tie
    return (
        "pairwise",
        np.array([code[r["annotator2"]] for r in records]),
        np.array([code[r["annotator1"]] for r in records]),
    )


POPULATIONS = {
    "llmfao": ("llmfao", llmfao),
    "summeval": ("summeval", summeval),
    "pandalm": ("pandalm_testset", pandalm),
}


# ------------------------------------------------------------------------------------------ coverage


def wilson(hits: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion."""
    if n == 0:
        return float("nan"), float("nan")
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(centre - half), float(centre + half)


def population_values(kind: str, y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    design = build_design(kind, y, p)
    cells = encode_cells(design, y, p)
    size = len(design.human_grid) * len(design.judge_grid)
    table = np.bincount(cells, minlength=size).reshape(1, len(design.human_grid), len(design.judge_grid))
    return {k: float(v[0]) for k, v in table_estimates(design, table).items()}


def draw_intervals(
    kind: str, y: np.ndarray, p: np.ndarray, n_boot: int, seed: int, units: np.ndarray | None = None
) -> dict[str, dict[str, tuple[float | None, float | None]]]:
    """Every statistic's percentile and BCa interval on one draw, as ``calibrate`` computes them."""
    design = build_design(kind, y, p)
    cells = encode_cells(design, y, p)
    size = len(design.human_grid) * len(design.judge_grid)
    table = np.bincount(cells, minlength=size).reshape(1, len(design.human_grid), len(design.judge_grid))
    est = table_estimates(design, table)
    n_units = None if units is None else int(units.max()) + 1
    reps = bootstrap(design, cells, units=units, n_units=n_units, n_boot=n_boot, seed=seed)
    jack = jackknife(design, cells, units=units, n_units=n_units)
    out: dict[str, dict[str, tuple[float | None, float | None]]] = {}
    for name in design.metrics:
        out[name] = {
            "percentile": percentile_ci(reps[name]),
            "bca": bca_ci(reps[name], float(est[name][0]), jack[name][0], weights=jack[name][1]),
        }
    return out


class Tally:
    """Hits and draws per (row, column, method)."""

    def __init__(self) -> None:
        self.hits: Counter[tuple[str, str, str]] = Counter()
        self.draws: Counter[tuple[str, str, str]] = Counter()

    def add(self, row: str, col: str, method: str, ci: tuple[float | None, float | None], truth: float) -> None:
        if not np.isfinite(truth):
            return
        lo, hi = ci
        self.draws[(row, col, method)] += 1
        self.hits[(row, col, method)] += int(lo is not None and hi is not None and lo - 1e-12 <= truth <= hi + 1e-12)

    def cell(self, row: str, col: str, method: str) -> str:
        n = self.draws[(row, col, method)]
        if n == 0:
            return "—"
        k = self.hits[(row, col, method)]
        lo, hi = wilson(k, n)
        return f"{k / n:.3f} ({lo:.3f}–{hi:.3f})"

    def table(self, rows: list[str], cols: list[str], col_title: str) -> str:
        head = f"| statistic | CI | {' | '.join(f'{col_title}={c}' for c in cols)} |"
        lines = [head, "|" + "---|" * (len(cols) + 2)]
        for row in rows:
            for m in METHODS:
                lines.append(f"| {row} | {m} | " + " | ".join(self.cell(row, c, m) for c in cols) + " |")
        return "\n".join(lines)

    def worst(self, rows: list[str], cols: list[str], method: str) -> tuple[float, float]:
        shares = [
            self.hits[(r, c, method)] / self.draws[(r, c, method)]
            for r in rows
            for c in cols
            if self.draws[(r, c, method)]
        ]
        return (min(shares), max(shares)) if shares else (float("nan"), float("nan"))


def run_population(name: str, loader, sizes: list[int], draws: int, n_boot: int, seed: int) -> None:  # type: ignore[no-untyped-def]
    kind, y, p = loader()
    truth = population_values(kind, y, p)
    rng = np.random.default_rng(seed)
    tally = Tally()
    t0 = time.perf_counter()
    for n in sizes:
        for d in range(draws):
            idx = rng.integers(0, len(y), n)
            for stat, cis in draw_intervals(kind, y[idx], p[idx], n_boot, seed + d).items():
                for m in METHODS:
                    tally.add(stat, str(n), m, cis[m], truth.get(stat, float("nan")))
    rows = [s for s in truth if any(tally.draws[(s, str(n), "bca")] for n in sizes)]
    cols = [str(n) for n in sizes]
    print(
        f"\n### {name}: {kind}, population {len(y)} items, {draws} draws per n, {n_boot} resamples "
        f"({time.perf_counter() - t0:.0f} s)\n"
    )
    print("population values: " + ", ".join(f"{k} {v:.3f}" for k, v in truth.items()) + "\n")
    print(tally.table(rows, cols, "n"))
    big = [c for c in cols if int(c) >= 40]
    for m in METHODS:
        lo, hi = tally.worst(rows, big, m)
        print(f"\n{m}: coverage over statistics at n >= 40 from {lo:.3f} to {hi:.3f}", end="")
    print()


def run_grouped(articles: list[int], draws: int, n_boot: int, seed: int) -> None:
    rows = _summeval_rows()
    docs = sorted({r["doc_id"] for r in rows})
    doc_of = np.array([docs.index(r["doc_id"]) for r in rows])
    human = _round(np.array([r["coherence"] for r in rows], float))
    judge = _round(np.array([r["relevance"] for r in rows], float))
    truth = population_values("ordinal", human, judge)
    members = [np.flatnonzero(doc_of == k) for k in range(len(docs))]
    rng = np.random.default_rng(seed)
    tally = Tally()
    t0 = time.perf_counter()
    for k in articles:
        for d in range(draws):
            picked = rng.integers(0, len(docs), k)
            idx = np.concatenate([members[a] for a in picked])
            units = np.repeat(np.arange(k), [len(members[a]) for a in picked])  # a twice-drawn article: 2 groups
            y, p = human[idx], judge[idx]
            flat = draw_intervals("ordinal", y, p, n_boot, seed + d)
            cluster = draw_intervals("ordinal", y, p, n_boot, seed + d, units=units)
            for stat in flat:
                for m in METHODS:
                    tally.add(stat, f"{k} items", m, flat[stat][m], truth[stat])
                    tally.add(stat, f"{k} articles", m, cluster[stat][m], truth[stat])
    cols = [f"{k} {how}" for k in articles for how in ("items", "articles")]
    names = [s for s in truth if tally.draws[(s, cols[0], "bca")]]
    print(
        f"\n### summeval grouped by article: {draws} draws of k articles (16 summaries each), {n_boot} resamples "
        f"({time.perf_counter() - t0:.0f} s)\n"
    )
    print(
        "columns: k = articles per draw; 'items' resamples summaries as if independent, 'articles' resamples "
        "articles (cluster bootstrap)\n"
    )
    print(Tally.table(tally, names, cols, "k"))
    for how in ("items", "articles"):
        for m in METHODS:
            lo, hi = tally.worst(names, [c for c in cols if c.endswith(how)], m)
            print(f"\nresampling {how}, {m}: coverage from {lo:.3f} to {hi:.3f}", end="")
    print()


def run_eval_delta(sizes: list[int], draws: int, n_boot: int, seed: int) -> None:
    rows = _summeval_rows()
    docs = sorted({r["doc_id"] for r in rows})
    systems = sorted({r["system_id"] for r in rows}, key=lambda s: (len(s), s))
    score = {(r["doc_id"], r["system_id"], dim): r[dim] for r in rows for dim in ("coherence", "relevance")}
    pairs = [(systems[5], systems[6]), (systems[0], systems[-1])]
    cases = {}
    for a, b in pairs:
        for dim in ("coherence", "relevance"):
            sa = np.array([score[(d, a, dim)] for d in docs])
            sb = np.array([score[(d, b, dim)] for d in docs])
            cases[f"{dim} {a} - {b}"] = (sa, sb, float((sa - sb).mean()))
    rng = np.random.default_rng(seed)
    tally = Tally()
    t0 = time.perf_counter()
    for n in sizes:
        for d in range(draws):
            idx = rng.integers(0, len(docs), n)
            for case, (sa, sb, truth) in cases.items():
                for m in METHODS:
                    rs = Resampling(n_boot=n_boot, n_perm=100, seed=seed + d, ci=m)
                    out = paired_delta(sa[idx], sb[idx], None, True, rs)
                    tally.add(case, str(n), m, (out["ci_low"], out["ci_high"]), truth)  # type: ignore[arg-type]
    cols = [str(n) for n in sizes]
    print(
        f"\n### judge eval paired delta, SummEval expert scores of two systems, articles drawn: {draws} draws per n "
        f"({time.perf_counter() - t0:.0f} s)\n"
    )
    print("population deltas: " + ", ".join(f"{k} {v[2]:+.3f}" for k, v in cases.items()) + "\n")
    print(tally.table(list(cases), cols, "n"))


# ------------------------------------------------------------------------------------------ PPI

PPI_SIZES = (50, 100, 200)
PPI_DELTA_SIZES = (25, 50)  # labelled articles of 100 in the paired-delta check
_WIN = {0.0: 1.0, 1.0: 0.0, 2.0: 0.5}  # A, B, tie -> model_x's win


def _rouge_l(outputs: list[str], references: list[str]) -> np.ndarray:
    from judge.metrics.base import EvalInput
    from judge.metrics.reference import rouge

    n = len(outputs)
    refs = [[r] for r in references]
    data = EvalInput(
        ids=[str(i) for i in range(n)], outputs=outputs, inputs=[""] * n, references=refs, contexts=[None] * n
    )
    return rouge(data, {}).scores["rougeL"]


class PPITally:
    """Coverage of the PPI, labelled-only and judge-only intervals, and their widths, per (case, n)."""

    KINDS = ("ppi", "labelled_only", "judge_only")

    def __init__(self) -> None:
        self.hits: Counter[tuple[str, str, str]] = Counter()
        self.draws: Counter[tuple[str, str]] = Counter()
        self.width: dict[tuple[str, str, str], list[float]] = {}
        self.effective: dict[tuple[str, str], list[float]] = {}

    def add(self, case: str, n: str, result, truth: float) -> None:  # type: ignore[no-untyped-def]
        self.draws[(case, n)] += 1
        for kind in self.KINDS:
            e = getattr(result, kind)
            self.hits[(case, n, kind)] += int(e.ci_low <= truth <= e.ci_high)
            self.width.setdefault((case, n, kind), []).append(e.ci_high - e.ci_low)
        self.effective.setdefault((case, n), []).append(result.effective_labels)

    def table(self, cases: list[str], sizes: list[str]) -> str:
        head = (
            "| case | labelled n | PPI coverage | labelled-only coverage | judge-only coverage | PPI width "
            "| labelled-only width | effective labels |"
        )
        lines = [head, "|" + "---|" * 8]
        for case in cases:
            for n in sizes:
                d = self.draws[(case, n)]
                if not d:
                    continue
                cov = []
                for kind in self.KINDS:
                    k = self.hits[(case, n, kind)]
                    lo, hi = wilson(k, d)
                    cov.append(f"{k / d:.3f} ({lo:.3f}–{hi:.3f})")
                w_ppi = np.mean(self.width[(case, n, "ppi")])
                w_lab = np.mean(self.width[(case, n, "labelled_only")])
                eff = np.median(self.effective[(case, n)])
                lines.append(f"| {case} | {n} | {' | '.join(cov)} | {w_ppi:.3f} | {w_lab:.3f} | {eff:.0f} |")
        return "\n".join(lines)


def run_ppi(sizes: list[int], delta_sizes: list[int], draws: int, seed: int) -> None:
    from judge.ppi import ppi_delta, ppi_mean

    tally = PPITally()
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    cases: list[str] = []
    if (DATA / "llmfao").exists():
        _, y, p = llmfao()
        y, f = np.vectorize(_WIN.get)(y), np.vectorize(_WIN.get)(p)
        case = f"LLMFAO GPT-4 vs crowd (N={len(y)})"
        cases.append(case)
        for n in sizes:
            for _ in range(draws):
                idx = rng.integers(0, len(y), len(y))
                lab, unl = idx[:n], idx[n:]
                tally.add(case, str(n), ppi_mean(y[lab], f[lab], f[unl]), float(y.mean()))
    if (DATA / "summeval").exists():
        rows = _summeval_rows()
        human = np.array([r["relevance"] for r in rows], float)
        judge = _rouge_l([r["summary"] for r in rows], [r["reference"] for r in rows])
        docs = sorted({r["doc_id"] for r in rows})
        doc_of = np.array([docs.index(r["doc_id"]) for r in rows])
        members = [np.flatnonzero(doc_of == k) for k in range(len(docs))]
        flat = f"SummEval ROUGE-L vs experts' relevance, isotonic (N={len(human)})"
        grouped = "SummEval, articles drawn: cluster-robust"
        naive = "SummEval, articles drawn: item-level variance"
        cases += [flat, grouped, naive]
        for n in sizes:
            for d in range(draws):
                idx = rng.integers(0, len(human), len(human))
                lab, unl = idx[:n], idx[n:]
                r = ppi_mean(human[lab], judge[lab], judge[unl], mapping="isotonic", seed=d)
                tally.add(flat, str(n), r, float(human.mean()))
                picked = rng.integers(0, len(docs), len(docs))
                idx = np.concatenate([members[a] for a in picked])
                grp = np.repeat(np.arange(len(docs)), [len(members[a]) for a in picked])
                order = rng.permutation(len(idx))
                lab, unl = order[:n], order[n:]
                y, f = human[idx], judge[idx]
                r = ppi_mean(
                    y[lab], f[lab], f[unl], mapping="isotonic", seed=d, groups=grp[lab], groups_unlabelled=grp[unl]
                )
                tally.add(grouped, str(n), r, float(human.mean()))
                r = ppi_mean(y[lab], f[lab], f[unl], mapping="isotonic", seed=d)
                tally.add(naive, str(n), r, float(human.mean()))
        # paired delta: two systems on the same articles, judged on all, labelled on n articles
        systems = sorted({r["system_id"] for r in rows}, key=lambda s: (len(s), s))
        at = {(r["doc_id"], r["system_id"]): i for i, r in enumerate(rows)}
        a, b = systems[5], systems[6]
        ia = np.array([at[(dd, a)] for dd in docs])
        ib = np.array([at[(dd, b)] for dd in docs])
        delta = f"SummEval delta {a} - {b} (100 articles), ROUGE-L as judge"
        cases.append(delta)
        truth = float((human[ia] - human[ib]).mean())
        for n in delta_sizes:
            for _ in range(draws):
                idx = rng.integers(0, len(docs), len(docs))
                lab, unl = idx[:n], idx[n:]
                r = ppi_delta(
                    human[ia][lab], human[ib][lab], judge[ia][lab], judge[ib][lab], judge[ia][unl], judge[ib][unl]
                )
                tally.add(delta, str(n), r, truth)
    print(
        f"\n### prediction-powered estimates of the human mean: {draws} draws per n "
        f"({time.perf_counter() - t0:.0f} s)\n"
    )
    print(tally.table(cases, [str(n) for n in sorted({*sizes, *delta_sizes})]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=400, help="samples drawn per size (default 400)")
    parser.add_argument("--boot", type=int, default=2000, help="bootstrap resamples per CI (default 2000)")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--articles", type=int, nargs="+", default=list(ARTICLES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--only", nargs="+", default=None, help="llmfao summeval pandalm grouped eval ppi (default: all)"
    )
    parser.add_argument("--ppi-draws", type=int, default=1000, help="draws per n in the PPI check (default 1000)")
    parser.add_argument("--ppi-sizes", type=int, nargs="+", default=list(PPI_SIZES))
    args = parser.parse_args()
    only = set(args.only or ["llmfao", "summeval", "pandalm", "grouped", "eval", "ppi"])
    if not DATA.exists():
        print(f"{DATA} not found: nothing to measure", file=sys.stderr)
        return
    print(f"# CI coverage: {args.draws} draws per size, {args.boot} resamples, nominal 95%")
    for name, (folder, loader) in POPULATIONS.items():
        if name in only:
            if not (DATA / folder).exists():
                print(f"\n(skipped {name}: {DATA / folder} not found)")
                continue
            run_population(name, loader, args.sizes, args.draws, args.boot, args.seed)
    if (DATA / "summeval").exists():
        if "grouped" in only:
            run_grouped(args.articles, args.draws, args.boot, args.seed)
        if "eval" in only:
            run_eval_delta(args.sizes, args.draws, args.boot, args.seed)
    if "ppi" in only:
        run_ppi(args.ppi_sizes, list(PPI_DELTA_SIZES), args.ppi_draws, args.seed)


if __name__ == "__main__":
    main()
