"""How well do the offline baselines track human judgements? SummEval and QAGS, with bootstrap CIs.

Scores every summary with perplexity, PMI (and its conditional log-likelihood, BARTScore-style) under
SmolLM2-135M and with MiniLM embedding similarity, then prints Spearman and Kendall tau-b against
the human scores with 95% percentile-bootstrap intervals (items resampled), as a markdown table.

Per-item scores are cached in ``--cache`` (JSONL per dataset/baseline), so a rerun only redoes the
statistics. Correlations are pooled over all scored items; ``--levels`` adds a second SummEval table at the
levels papers report (``calibration.levels``): summary level (per-article correlations averaged over
articles, constant articles skipped) and system level (the systems' means correlated), CIs resampling
articles / systems.

    python bench/validity.py --summeval-docs 25          # 25 articles x 16 systems = 400 summaries
    python bench/validity.py --only perplexity,similarity --levels
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared/data beside the repo


def load_summeval(n_docs: int) -> list[dict]:
    rows = [json.loads(line) for line in (DATA / "summeval/summeval_flat.jsonl").open()]
    docs = sorted({r["doc_id"] for r in rows})[:n_docs]  # sorted ids: a fixed, content-blind subset
    keep = set(docs)
    return [
        {
            "id": f"{r['doc_id']}/{r['system_id']}",
            "input": r["source"],
            "output": r["summary"],
            "reference": r["reference"],
            **{k: r[k] for k in ("consistency", "relevance", "fluency", "coherence")},
        }
        for r in rows
        if r["doc_id"] in keep
    ]


def load_qags(name: str) -> list[dict]:
    recs = json.loads((DATA / f"qags/unieval_format/qags_{name}.json").read_text())
    return [
        {"id": f"qags-{name}-{i}", "input": r["source"], "output": r["system_output"], **r["scores"]}
        for i, r in enumerate(recs)
    ]


def scored(cache: Path, key: str, compute) -> list[dict]:  # type: ignore[no-untyped-def]
    path = cache / f"{key}.jsonl"
    if path.exists():
        return [json.loads(line) for line in path.open()]
    t0 = time.perf_counter()
    result = compute()
    print(f"  {key}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in result.records))
    return result.records


def corr_with_ci(x: np.ndarray, y: np.ndarray, n_boot: int, seed: int) -> dict[str, tuple[float, float, float]]:
    """Spearman and Kendall tau-b with 95% CIs: through ``calibration.calibrate`` when it works, else scipy."""
    try:
        return _calibrate_corr(x, y, n_boot, seed)
    except Exception as exc:  # the calibration package is young; fall back rather than lose the run
        print(f"  calibration.calibrate failed ({type(exc).__name__}: {exc}); using scipy", file=sys.stderr)
        METHOD.add("scipy + numpy percentile bootstrap")
        return _scipy_corr(x, y, n_boot, seed)


METHOD: set[str] = set()


def _calibrate_corr(x: np.ndarray, y: np.ndarray, n_boot: int, seed: int) -> dict[str, tuple[float, float, float]]:
    import logging
    import warnings

    import pandas as pd

    from calibration import calibrate

    ok = ~(np.isnan(x) | np.isnan(y))
    ids = [f"i{k}" for k in range(int(ok.sum()))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            rep = calibrate(
                pd.Series(x[ok], index=ids), pd.Series(y[ok], index=ids), label_type="ordinal", n_boot=n_boot, seed=seed
            )
        finally:
            logging.disable(logging.NOTSET)
    out = {}
    for name, key in (("spearman", "spearman"), ("kendall", "kendall_tau")):
        st = rep.metrics[key]
        out[name] = (float(st.value), float(st.ci_low), float(st.ci_high))
    METHOD.add("calibration.calibrate (percentile bootstrap over items)")
    return out


def _scipy_corr(x: np.ndarray, y: np.ndarray, n_boot: int, seed: int) -> dict[str, tuple[float, float, float]]:
    ok = ~(np.isnan(x) | np.isnan(y))
    x, y = x[ok], y[ok]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    out = {}
    for name, fn in (("spearman", stats.spearmanr), ("kendall", stats.kendalltau)):
        point = float(fn(x, y).statistic)
        reps = np.array([fn(x[i], y[i]).statistic for i in idx], dtype=float)
        reps = reps[~np.isnan(reps)]
        lo, hi = np.percentile(reps, [2.5, 97.5])
        out[name] = (point, float(lo), float(hi))
    return out


def _level_rows(
    items: list[dict], x: np.ndarray, human: np.ndarray, dim: str, sname: str, item_cell: dict, boot: int
) -> list[str]:
    """One signal against one SummEval dimension at the item (pooled), summary and system levels."""
    from calibration.levels import summary_level, system_level

    ok = ~np.isnan(x)
    docs = np.array([it["id"].split("/")[0] for it in items])[ok]
    systems = np.array([it["id"].split("/")[1] for it in items])[ok]
    n = int(ok.sum())
    rows = [
        f"| {n} | {dim} | {sname} | item (pooled) | {n} summaries | {item_cell['spearman']} | {item_cell['kendall']} |"
    ]
    for lv in (
        summary_level(x[ok], human[ok], docs, n_boot=boot, unit="articles"),
        system_level(x[ok], human[ok], systems, n_boot=boot, unit="systems"),
    ):
        units = f"{lv.n_units} {lv.unit}" + (f" ({lv.n_skipped} skipped)" if lv.n_skipped else "")
        cells = [
            f"{m.value:+.3f} [{m.ci_low:+.3f}, {m.ci_high:+.3f}]" if m.value is not None else "—"
            for m in (lv.metrics["spearman"], lv.metrics["kendall"])
        ]
        rows.append(f"| {n} | {dim} | {sname} | {lv.level} | {units} | {cells[0]} | {cells[1]} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--summeval-docs", type=int, default=25, help="articles of SummEval (x16 summaries each)")
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--cache", default="/tmp/judge-validity")
    ap.add_argument("--pmi-items", type=int, default=160, help="PMI (slow: source + output) on the first N items")
    ap.add_argument(
        "--entailment-items", type=int, default=96, help="zero-shot entailment (smollm2 yes/no) on the first N items"
    )
    ap.add_argument(
        "--only", default="perplexity,pmi,similarity,entailment", help="comma-separated signal families to compute"
    )
    ap.add_argument("--levels", action="store_true", help="also SummEval at the item, summary and system levels")
    args = ap.parse_args()
    only = set(args.only.split(","))
    level_lines = [
        "| n | human | baseline | level | units | Spearman [95% CI] | Kendall tau-b [95% CI] |",
        "|---|---|---|---|---|---|---|",
    ]

    from judge.baselines import entailment, perplexity, pmi, similarity

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    datasets = {
        f"summeval{args.summeval_docs * 16}": (
            load_summeval(args.summeval_docs),
            ["consistency", "relevance", "fluency", "coherence"],
        ),
        "qags_cnndm": (load_qags("cnndm"), ["consistency"]),
        "qags_xsum": (load_qags("xsum"), ["consistency"]),
    }
    lines = [
        "| data | n | human | baseline | Spearman [95% CI] | Kendall tau-b [95% CI] |",
        "|---|---|---|---|---|---|",
    ]
    for dname, (items, dims) in datasets.items():
        print(f"{dname}: {len(items)} items", file=sys.stderr, flush=True)
        signals: dict[str, list[float | None]] = {}
        if "perplexity" in only:
            recs = scored(cache, f"{dname}.perplexity", lambda items=items: perplexity(items))
            signals["perplexity (lower=better)"] = [r["perplexity"] for r in recs]
        if args.pmi_items and "pmi" in only:
            sub = items[: args.pmi_items]
            recs = scored(cache, f"{dname}.pmi{len(sub)}", lambda sub=sub: pmi(sub, source_field="input"))
            pad = [None] * (len(items) - len(sub))  # unscored items drop out of the PMI rows
            signals["pmi(output; source)"] = [r["pmi"] for r in recs] + pad
            signals["log p(output | source) / token"] = [r["logp_given_source"] for r in recs] + pad
        if args.entailment_items and "entailment" in only:
            sub = items[: args.entailment_items]
            recs = scored(cache, f"{dname}.entail_zs{len(sub)}", lambda sub=sub: entailment(sub, premise_field="input"))
            pad = [None] * (len(items) - len(sub))
            signals["entailment, zero-shot smollm2 (mean P(yes))"] = [r["entailment"] for r in recs] + pad
            signals["entailment, zero-shot smollm2 (min P(yes))"] = [r["entailment_min"] for r in recs] + pad
        if "similarity" in only:
            recs = scored(cache, f"{dname}.sim_input", lambda items=items: similarity(items, against_field="input"))
            signals["similarity(output, source)"] = [r["similarity"] for r in recs]
        if "reference" in items[0] and "similarity" in only:
            recs = scored(cache, f"{dname}.sim_ref", lambda items=items: similarity(items, against_field="reference"))
            signals["similarity(output, reference)"] = [r["similarity"] for r in recs]
        for dim in dims:
            human = np.array([it[dim] for it in items], dtype=float)
            for sname, values in signals.items():
                x = np.array([np.nan if v is None else v for v in values], dtype=float)
                c = corr_with_ci(x, human, args.boot, seed=0)
                cell = {k: f"{p:+.3f} [{lo:+.3f}, {hi:+.3f}]" for k, (p, lo, hi) in c.items()}
                n = int((~np.isnan(x)).sum())
                lines.append(f"| {dname} | {n} | {dim} | {sname} | {cell['spearman']} | {cell['kendall']} |")
                if args.levels and dname.startswith("summeval"):
                    level_lines += _level_rows(items, x, human, dim, sname, cell, args.boot)
    print("\n".join(lines))
    if args.levels:
        print("\n" + "\n".join(level_lines))
    print(f"\nstatistics: {', '.join(sorted(METHOD))}; {args.boot} resamples")


if __name__ == "__main__":
    main()
