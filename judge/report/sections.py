"""One report section per kind of result, built from the result's JSON/dict form (its contract).

A section is plain data (:class:`Section`) that the one HTML template renders: provenance pairs,
tables, inline-SVG plots, warnings and review tables. Statistics come from the result as it was
written; the only numbers computed here are counts, histogram bins and the length-bias Spearman ρ
(which no result type holds).
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from judge.report import svg
from judge.textfmt import fmt, fmt_ci, fmt_p

MAX_TEXT = 4000
"""Characters of one text shown in a review row (the rest is cut, with a note): keeps 10k-item reports small."""
QUEUE = 20
"""Rows per review table."""
MAX_POINTS = 1500
"""Points per scatter plot (an even subsample beyond it)."""
TEXT_FIELDS = ("input", "reference", "context", "output", "baseline_output", "reasoning", "raw", "error")


@dataclass
class Table:
    """A small statistics table: headers and rows of display strings."""

    title: str
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Review:
    """A review table: sortable and filterable in the page; each row carries its texts in <details>."""

    title: str
    columns: list[str]
    rows: list[dict[str, Any]]  # {"id", "cells": [(display, sort key)], "texts": [(label, text)], "cls"}
    note: str = ""


@dataclass
class Section:
    """Everything one input contributes to the report."""

    kind: str
    title: str
    source: str
    provenance: list[tuple[str, str]] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    plots: list[tuple[str, str]] = field(default_factory=list)  # (caption, svg markup)
    warnings: list[str] = field(default_factory=list)
    gates: list[dict[str, Any]] = field(default_factory=list)
    reviews: list[Review] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    length_bias: Table | None = None
    length_plots: list[tuple[str, str]] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- helpers


def clip(text: Any, limit: int = MAX_TEXT) -> str:
    """A text for a review row, cut at ``limit`` characters with a note of how much was left out."""
    if text is None:
        return ""
    s = text if isinstance(text, str) else json.dumps(text, ensure_ascii=False)
    return s if len(s) <= limit else s[:limit] + f"\n… [{len(s) - limit} more characters not shown]"


def _num(x: Any) -> float | None:
    if x is None or isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _cell(value: Any, digits: int = 3) -> tuple[str, str]:
    """(display, sort key) of one review cell; numbers sort numerically in the page."""
    v = _num(value)
    return (fmt(v, digits), repr(v)) if v is not None else (fmt(value), "")


def _texts(rec: dict[str, Any], fields: Sequence[str] = TEXT_FIELDS) -> list[tuple[str, str]]:
    return [(f, clip(rec[f])) for f in fields if rec.get(f) not in (None, "", [])]


def _subsample(points: list[tuple[float, float]], limit: int = MAX_POINTS) -> list[tuple[float, float]]:
    if len(points) <= limit:
        return points
    step = len(points) / limit
    return [points[int(i * step)] for i in range(limit)]


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's ρ (average ranks for ties); None with fewer than 3 pairs or a constant side."""
    if len(x) < 3:
        return None
    import numpy as np
    from scipy.stats import rankdata

    rx, ry = rankdata(x), rankdata(y)
    if np.std(rx) == 0 or np.std(ry) == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def _length_bias(section: Section, groups: dict[str, list[tuple[float, float]]], what: str) -> None:
    """Score against output length per group (rubric or metric × system), with Spearman's ρ."""
    rows = []
    by_plot: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for name, pts in groups.items():
        if not pts:
            continue
        rho = spearman([p[0] for p in pts], [p[1] for p in pts])
        rows.append([name, str(len(pts)), fmt(rho, 3)])
        by_plot[name.split(" / ")[0]].extend(pts)
    if not rows:
        return
    section.length_bias = Table(
        f"Length bias: Spearman ρ of {what} vs output length (characters)", ["", "n", "ρ"], rows
    )
    for name, pts in by_plot.items():
        section.length_plots.append(
            (
                f"{name}: score vs output length",
                svg.scatter(
                    _subsample(pts), f"{name} score vs output length", xlabel="output characters", ylabel="score"
                ),
            )
        )


def _load_items(items: str | Path | None) -> dict[str, dict[str, Any]]:
    if items is None:
        return {}
    from judge.dataset import load_items

    return {it.id: it.values() for it in load_items(items)}


# --------------------------------------------------------------------------------------------- verdicts


def verdicts_section(rows: list[dict[str, Any]], source: str, items: str | Path | None = None) -> Section:
    """``judge score`` verdicts (one dict per Verdict), joined by id with the items' texts when given."""
    texts = _load_items(items)
    rubrics = sorted({(r.get("rubric"), r.get("rubric_hash")) for r in rows}, key=str)
    ok, unscored = [], []
    for r in rows:
        (ok if r.get("status") == "ok" and _num(r.get("score")) is not None else unscored).append(r)
    reasons = Counter((r.get("error") or "unscored").split(":")[0][:60] for r in unscored)
    costs = [r.get("cost_usd") for r in rows]
    s = Section("verdicts", f"judge score: {', '.join(str(r[0]) for r in rubrics)}", source)
    s.provenance = [
        ("rubrics", ", ".join(f"{r} ({str(h)[:12]})" for r, h in rubrics)),
        ("judge model", ", ".join(sorted({str(r.get("judge_model")) for r in rows}))),
        ("score mode", ", ".join(sorted({str(r.get("score_mode")) for r in rows}))),
        ("temperature / seed", ", ".join(sorted({f"{r.get('temperature')} / {r.get('seed')}" for r in rows}))),
        (
            "items",
            f"{len(rows)}: {len(ok)} scored, {len(unscored)} unscored"
            + (f" ({', '.join(f'{k}: {v}' for k, v in reasons.most_common(5))})" if reasons else ""),
        ),
        ("from cache", str(sum(bool(r.get("cached")) for r in rows))),
        (
            "tokens",
            f"{sum(r.get('prompt_tokens') or 0 for r in rows)} prompt + "
            f"{sum(r.get('completion_tokens') or 0 for r in rows)} completion",
        ),
        ("cost", "unknown" if any(c is None for c in costs) else f"${sum(c for c in costs if c is not None):.4f}"),
    ]
    per_rubric: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in ok:
        per_rubric[str(r.get("rubric"))][str(r.get("judge_model"))].append(float(r["score"]))
    stat_rows = []
    for rubric, per_judge in per_rubric.items():
        for judge_model, vals in per_judge.items():
            stat_rows.append([rubric, judge_model, str(len(vals)), fmt(sum(vals) / len(vals), 3)])
        s.plots.append((f"{rubric}: score distribution", svg.histogram(per_judge, f"{rubric} score distribution")))
    s.tables.append(Table("Scores", ["rubric", "judge", "scored", "mean"], stat_rows))

    def review_row(r: dict[str, Any]) -> dict[str, Any]:
        rec = {**texts.get(str(r.get("id")), {}), **r}
        return {
            "id": str(r.get("id")),
            "cells": [
                (str(r.get("id")), str(r.get("id"))),
                (str(r.get("rubric")), ""),
                _cell(r.get("score")),
                (str(r.get("status")), ""),
            ],
            "texts": _texts(rec),
        }

    lowest = sorted(ok, key=lambda r: float(r["score"]))[:QUEUE]
    s.reviews.append(
        Review(
            f"Lowest-scoring items ({len(lowest)} of {len(ok)})",
            ["id", "rubric", "score", "status"],
            [review_row(r) for r in lowest],
            "" if texts else "pass --items DATA to show each item's input and output here",
        )
    )
    if unscored:
        s.reviews.append(
            Review(
                f"Unscored items ({min(len(unscored), QUEUE)} of {len(unscored)})",
                ["id", "rubric", "score", "status"],
                [review_row(r) for r in unscored[:QUEUE]],
            )
        )
    if texts:
        groups: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for r in ok:
            out = texts.get(str(r.get("id")), {}).get("output")
            if isinstance(out, str):
                groups[str(r.get("rubric"))].append((float(len(out)), float(r["score"])))
        _length_bias(s, groups, "score")
    return s


# ------------------------------------------------------------------------------------------------- eval


def _output_lengths(results: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Each system's output length per item id, read from the files named in the provenance (when still there)."""
    from judge.io import read_rows

    files = results.get("provenance", {}).get("data_files", {})
    systems = results.get("suite", {}).get("systems", {})
    out: dict[str, dict[str, int]] = {}
    for name, spec in systems.items():
        spec = spec if isinstance(spec, dict) else {"file": spec}
        entry = files.get(f"system:{name}") or (files.get("data") if not spec.get("file") else None)
        if not entry or not Path(entry["path"]).exists():
            continue
        column, id_col = spec.get("column") or "output", spec.get("id_column") or "id"
        lengths = {}
        for row in read_rows(entry["path"]):
            text = row.data.get(column)
            if isinstance(text, str):
                lengths[str(row.data.get(id_col))] = len(text)
        out[name] = lengths
    return out


def eval_section(
    results: dict[str, Any], scores: list[dict[str, Any]], review: list[dict[str, Any]], source: str
) -> Section:
    """A ``judge eval`` run: results.json, scores.jsonl and review.jsonl."""
    suite, prov = results.get("suite", {}), results.get("provenance", {})
    baseline = results.get("baseline")
    systems: dict[str, dict[str, Any]] = results.get("systems", {})
    deltas: dict[str, dict[str, Any]] = results.get("deltas", {})
    figures: dict[str, Any] = prov.get("figures", {})
    s = Section("eval", f"judge eval: {suite.get('name') or source}", source)
    boot = prov.get("bootstrap", {})
    s.provenance = [
        ("suite", str(suite.get("name"))),
        ("created", str(prov.get("created"))),
        ("systems", ", ".join(systems) + f" (baseline: {baseline})"),
        ("items", str(prov.get("n_items"))),
        (
            "bootstrap",
            f"{boot.get('resamples')} resamples, {boot.get('permutations')} permutations, "
            f"seed {boot.get('seed')}, {boot.get('ci')} {boot.get('level')}",
        ),
        *[
            (f"file {role}", f"{v.get('path')} (sha256 {str(v.get('sha256'))[:12]})")
            for role, v in prov.get("data_files", {}).items()
        ],
        *[
            (f"metric {name}", json.dumps(v, ensure_ascii=False, default=str)[:300])
            for name, v in prov.get("metrics", {}).items()
            if v
        ],
        ("versions", ", ".join(f"{k} {v}" for k, v in prov.get("versions", {}).items())),
    ]
    names = list(next(iter(systems.values()), {}))
    others = [x for x in systems if x != baseline]
    headers = ["metric", "better", *systems, *(f"Δ {o} [95% CI]" for o in others), *(f"p ({o})" for o in others)]
    rows, forest_rows = [], []
    for m in names:
        fig = figures.get(m, {})
        lo_hi = fig.get("range") or [None, None]
        digits = 2 if lo_hi[1] is None or lo_hi[1] > 10 else 3
        row = [m, "↑" if fig.get("direction", "higher") == "higher" else "↓"]
        row += [
            fmt_ci(systems[x][m].get("value"), systems[x][m].get("ci_low"), systems[x][m].get("ci_high"), digits)
            for x in systems
        ]
        row += [
            fmt_ci(deltas[o][m].get("value"), deltas[o][m].get("ci_low"), deltas[o][m].get("ci_high"), digits)
            for o in others
        ]
        row += [fmt_p(deltas[o][m].get("p_value")) for o in others]
        rows.append(row)
        span = (lo_hi[1] - lo_hi[0]) if None not in lo_hi else None
        for o in others:
            d = deltas[o][m]
            forest_rows.append(
                {
                    "name": f"{m} ({o})" if len(others) > 1 else m,
                    "value": d.get("value"),
                    "lo": d.get("ci_low"),
                    "hi": d.get("ci_high"),
                    "span": span,
                    "better": 1 if fig.get("direction", "higher") == "higher" else -1,
                }
            )
    s.tables.append(Table("Metrics: value [95% CI] per system; Δ = system minus baseline (paired)", headers, rows))
    if forest_rows:
        s.plots.append(
            (
                f"Deltas vs {baseline} with 95% CIs (green: better, red: worse, CI excludes 0)",
                svg.forest(forest_rows, "forest plot of deltas"),
            )
        )
    s.gates = [
        {**g, "value_shown": fmt(g.get("value"), 4), "threshold_shown": fmt(g.get("threshold"), 4)}
        for g in results.get("gates", [])
    ]
    per_metric: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    unscored = Counter()
    for r in scores:
        v = _num(r.get("score"))
        if v is None:
            unscored[(r.get("system"), r.get("metric"))] += 1
        else:
            per_metric[str(r["metric"])][str(r["system"])].append(v)
    for m, per_system in per_metric.items():
        s.plots.append((f"{m}: per-item distribution", svg.histogram(per_system, f"{m} distribution")))
    if unscored:
        s.notes.append("unscored: " + ", ".join(f"{k[0]}/{k[1]}: {v}" for k, v in unscored.items()))
    for kind, title in (("lowest", "Lowest-scoring items"), ("largest_difference", "Largest differences vs baseline")):
        recs = [r for r in review if r.get("kind") == kind]
        if not recs:
            continue
        cols = ["id", "system", "metric", "score"] + (["Δ", "better"] if kind == "largest_difference" else [])
        out = []
        for r in recs:
            cells = [
                (str(r.get("id")), str(r.get("id"))),
                (str(r.get("system")), ""),
                (str(r.get("metric")), ""),
                _cell(r.get("score")),
            ]
            if kind == "largest_difference":
                cells += [_cell(r.get("delta")), ("yes" if r.get("better") else "no", "")]
            out.append(
                {
                    "id": str(r.get("id")),
                    "cells": cells,
                    "texts": _texts(r),
                    "cls": "" if kind == "lowest" or r.get("better") else "worse",
                }
            )
        s.reviews.append(Review(f"{title} ({len(out)})", cols, out))
    lengths = _output_lengths(results)
    if lengths:
        groups: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for r in scores:
            v, n = _num(r.get("score")), lengths.get(str(r.get("system")), {}).get(str(r.get("id")))
            if v is not None and n is not None:
                groups[f"{r['metric']} / {r['system']}"].append((float(n), v))
        _length_bias(s, groups, "each metric")
    else:
        s.notes.append("length bias: the systems' output files named in the provenance are not on this disk")
    return s


# ------------------------------------------------------------------------------------------ calibration


def _stat(d: dict[str, Any] | None) -> str:
    if d and d.get("undefined"):
        return f"undefined: {d['undefined']}"
    if not d or d.get("value") is None:
        return "-"
    return fmt_ci(d["value"], d.get("ci_low"), d.get("ci_high"), 3)


def calibration_section(report: dict[str, Any], source: str, title: str = "judge vs human") -> Section:
    """A ``judge calibrate --json`` report (CalibrationReport.to_dict())."""
    s = Section("calibration", f"judge calibrate: {title}", source)
    s.provenance = [
        ("label type", str(report.get("label_type"))),
        (
            "items",
            f"{report.get('n_items')}: {report.get('n_scored')} scored, {report.get('n_unscored')} unscored, "
            f"{report.get('n_missing_label')} without a human label; {report.get('n_compared')} compared",
        ),
        ("annotators", str(report.get("n_annotators"))),
        (
            "bootstrap",
            f"{report.get('n_boot')} resamples ({report.get('ci_method') or 'percentile'} CIs), "
            f"seed {report.get('seed')}" + (f", clustered by {report['group']}" if report.get("group") else ""),
        ),
        ("human ceiling", f"{report.get('ceiling_method') or '-'} ({report.get('ceiling_pairs')} pairs)"),
    ]
    ceiling = report.get("human_ceiling") or {}
    s.tables.append(
        Table(
            "Agreement: judge vs human consensus, with the human–human ceiling (95% CIs)",
            ["statistic", "judge vs human", "human vs human (ceiling)", "CI width"],
            [
                [name, _stat(st), _stat(ceiling.get(name)), fmt((report.get("ci_width") or {}).get(name), 3)]
                for name, st in (report.get("metrics") or {}).items()
            ],
        )
    )
    if report.get("per_class"):
        s.tables.append(
            Table(
                "Per class (humans as truth)",
                ["class", "precision", "recall", "F1", "support"],
                [
                    [c, fmt(v["precision"], 3), fmt(v["recall"], 3), fmt(v["f1"], 3), str(v["support"])]
                    for c, v in report["per_class"].items()
                ],
            )
        )
    conf = report.get("confusion")
    if conf:
        s.plots.append(
            (
                "Confusion matrix (rows: human consensus, columns: judge)",
                svg.heatmap(conf["labels"], conf["matrix"], "confusion matrix"),
            )
        )
        nums = [_num(x) for x in conf["labels"]]
        if all(v is not None for v in nums) and len(nums) > 2:
            pts = []
            for i, row in enumerate(conf["matrix"]):
                for j, c in enumerate(row):
                    for k in range(c):  # a deterministic jitter: the same report draws the same picture
                        a, b = math.modf(k * 0.618034)[0] - 0.5, math.modf(k * 0.414214 + 0.3)[0] - 0.5
                        pts.append((nums[j] + 0.5 * a, nums[i] + 0.5 * b))  # type: ignore[operator]
            iso = report.get("isotonic")
            line = list(zip(iso["x"], iso["y"], strict=True)) if iso else None
            s.plots.append(
                (
                    "Judge vs human (jittered), with the isotonic fit" if line else "Judge vs human (jittered)",
                    svg.scatter(_subsample(pts), "judge vs human scatter", xlabel="judge", ylabel="human", line=line),
                )
            )
    if report.get("threshold"):
        t = report["threshold"]
        s.notes.append(
            f"threshold (max {t['criterion']}): score >= {fmt(t['threshold'])}; {t['n_splits']}-fold CV "
            f"F1 {fmt(t['cv_f1'])}, κ {fmt(t['cv_kappa'])}"
        )
    if report.get("isotonic"):
        i = report["isotonic"]
        s.notes.append(
            f"isotonic map: {i['n_splits']}-fold CV MAE {fmt(i['cv_mae_raw'])} raw -> {fmt(i['cv_mae_mapped'])} mapped"
        )
    rel = report.get("reliability")
    if rel and rel.get("bins"):
        what = {"none": "judge score", "scale": "judge score, rescaled from the rubric's scale"}.get(
            rel.get("rescale"), "judge score, rescaled from its observed min–max"
        )
        scores = f"{fmt(rel.get('lo'))}–{fmt(rel.get('hi'))}"
        caption = (
            f"Reliability curve: {rel.get('n_bins')} equal-width bins of the judge score ({scores}); per bin the "
            "mean score (0–1) vs the share of positive human labels with its Wilson 95% interval; point size "
            f"and label: items in the bin; dashed: perfect calibration. ECE {fmt(rel.get('ece'), 3)}"
            + (f", Brier {fmt(rel['brier'], 3)}" if rel.get("brier") is not None else "")
        )
        s.plots.append((caption, svg.reliability(rel["bins"], "reliability curve", xlabel=f"mean {what} (0–1)")))
    elif report.get("label_type") == "binary":
        s.notes.append("reliability curve: not drawn (needs a continuous judge score, not 0/1 verdicts)")
    if report.get("tie_rate"):
        tr = report["tie_rate"]
        s.notes.append(f"tie rate: judge {fmt(tr.get('judge'))}, human consensus {fmt(tr.get('human'))}")
    s.warnings = list(report.get("warnings") or [])
    groups = report.get("groups") or {}
    if groups:
        stats = list(report.get("metrics") or {})
        s.tables.append(
            Table(
                "Per group",
                ["group", "compared", *stats],
                [
                    [g, str(r.get("n_compared")), *(_stat(r["metrics"].get(k)) for k in stats)]
                    for g, r in groups.items()
                ],
            )
        )
    rows = []
    for d in report.get("disagreements") or []:
        annot = ", ".join(f"{k}={fmt(v)}" for k, v in (d.get("annotator_labels") or {}).items())
        rows.append(
            {
                "id": str(d["id"]),
                "cells": [
                    (str(d["id"]), str(d["id"])),
                    _cell(d.get("judge")),
                    _cell(d.get("human")),
                    _cell(d.get("gap")),
                    (annot, annot),
                ],
                "texts": [(k, clip(v)) for k, v in (d.get("texts") or {}).items() if v],
            }
        )
    if rows:
        s.reviews.append(
            Review(
                f"Largest judge–human disagreements ({len(rows)})", ["id", "judge", "human", "gap", "annotators"], rows
            )
        )
    return s


# --------------------------------------------------------------------------------------------- MT-Bench


def mtbench_section(singles: list[dict[str, Any]], pairs: list[dict[str, Any]], source: str) -> Section:
    """MT-Bench judgment files (ours or FastChat's): the tables of ``judge mtbench show`` and the radar."""
    from judge.mtbench.results import pairwise_summary, single_summary

    rows = singles + pairs
    judges = sorted(
        {" / ".join(map(str, r["judge"])) if isinstance(r.get("judge"), list) else str(r.get("judge")) for r in rows}
    )
    s = Section("mtbench", f"MT-Bench judgments: {Path(source).name}", source)
    s.provenance = [
        ("judge", ", ".join(judges)),
        (
            "prompt hashes",
            ", ".join(sorted({str(r.get("rubric_hash"))[:12] for r in rows if r.get("rubric_hash")})) or "-",
        ),
        (
            "judgments",
            f"{len(singles)} single, {len(pairs)} pairwise; "
            f"{sum(r.get('status', 'ok') != 'ok' for r in rows)} unscored",
        ),
        (
            "tokens",
            f"{sum(r.get('prompt_tokens') or 0 for r in rows)} prompt + "
            f"{sum(r.get('completion_tokens') or 0 for r in rows)} completion",
        ),
    ]
    if singles:
        single = single_summary(singles)
        turns = sorted({k for m in single.values() for k in m["turns"]})
        s.tables.append(
            Table(
                "Single-answer grading: mean score (1-10)",
                ["model", *(f"turn {k}" for k in turns), "overall", "n", "unscored"],
                [
                    [
                        m,
                        *(fmt(v["turns"].get(k), 2) for k in turns),
                        fmt(v["overall"], 2),
                        str(v["n"]),
                        str(v["unscored"]),
                    ]
                    for m, v in single.items()
                ],
            )
        )
        cats = sorted({c for m in single.values() for c in m["categories"]})
        s.tables.append(
            Table(
                "Mean score per category",
                ["model", *cats],
                [[m, *(fmt(v["categories"].get(c), 2) for c in cats)] for m, v in single.items()],
            )
        )
        s.plots.append(
            (
                "Mean score per category (radar)",
                svg.radar(
                    cats, {m: [v["categories"].get(c) for c in cats] for m, v in single.items()}, "MT-Bench radar"
                ),
            )
        )
        scored = [r for r in singles if r.get("status", "ok") == "ok" and _num(r.get("score")) not in (None, -1.0)]
        per_model: dict[str, list[float]] = defaultdict(list)
        for r in scored:
            per_model[str(r["model"])].append(float(r["score"]))
        s.plots.append(("Score distribution per model", svg.histogram(per_model, "MT-Bench score distribution")))
        lowest = sorted(scored, key=lambda r: float(r["score"]))[:QUEUE]
        s.reviews.append(
            Review(
                f"Lowest-scoring judgments ({len(lowest)})",
                ["id", "model", "turn", "category", "score"],
                [
                    {
                        "id": f"{r['question_id']}:{r['model']}:t{r.get('turn', 1)}",
                        "cells": [
                            (f"{r['question_id']}:{r['model']}:t{r.get('turn', 1)}", ""),
                            (str(r["model"]), ""),
                            _cell(r.get("turn")),
                            (str(r.get("category")), ""),
                            _cell(r.get("score")),
                        ],
                        "texts": [(k, clip(r[k])) for k in ("user_prompt", "judgment", "error") if r.get(k)],
                    }
                    for r in lowest
                ],
            )
        )
    if pairs:
        pw = pairwise_summary(pairs)
        s.tables.append(
            Table(
                "Pairwise: wins, losses, ties (win rate counts ties half)",
                ["model", "win", "loss", "tie", "unscored", "win rate"],
                [
                    [m, str(t["win"]), str(t["loss"]), str(t["tie"]), str(t["unscored"]), fmt(t["win_rate"], 3)]
                    for m, t in pw["models"].items()
                ],
            )
        )
        st = pw["stats"]
        s.tables.append(
            Table(
                "Judge position and length statistics",
                ["statistic", "value", "over"],
                [
                    [
                        "position consistency",
                        fmt(st["consistency"], 3),
                        f"{st['scored_pairs']} pairs judged in both orders",
                    ],
                    [
                        "P(first position wins)",
                        fmt(st["p_first_wins"], 3),
                        f"{st['decisive_verdicts']} decisive verdicts",
                    ],
                    [
                        "P(longer answer wins)",
                        fmt(st["p_longer_wins"], 3),
                        f"{st['length_decisive_verdicts']} verdicts",
                    ],
                ],
            )
        )
        s.warnings = list(pw["warnings"])
        flips = [r for r in pairs if r.get("consistent") is False or r.get("status", "ok") != "ok"][:QUEUE]
        if flips:
            s.reviews.append(
                Review(
                    f"Pairs whose verdict flips with the order, or unscored ({len(flips)})",
                    ["id", "model 1", "model 2", "g1", "g2"],
                    [
                        {
                            "id": f"{r['question_id']}:{r['model_1']}:{r['model_2']}:t{r.get('turn', 1)}",
                            "cells": [
                                (f"{r['question_id']}:{r['model_1']}:{r['model_2']}", ""),
                                (str(r["model_1"]), ""),
                                (str(r["model_2"]), ""),
                                (str(r.get("g1_winner")), ""),
                                (str(r.get("g2_winner")), ""),
                            ],
                            "texts": [(k, clip(r[k])) for k in ("g1_judgment", "g2_judgment", "error") if r.get(k)],
                        }
                        for r in flips
                    ],
                )
            )
    return s
