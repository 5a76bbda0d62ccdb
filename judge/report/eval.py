"""One report section per kind of result, built from the result's JSON/dict form (its contract).

A section is plain data (:class:`Section`) that the one HTML template renders: provenance pairs,
tables, inline-SVG plots, warnings and review tables. Statistics come from the result as it was
written; the only numbers computed here are counts, histogram bins, Wilson intervals of shares and the
length-bias Spearman ρ with its interval (which no result type holds).
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
from judge.stats import spearman_ci, wilson
from judge.textfmt import fmt, fmt_ci, fmt_p, labelled_estimates, ppi_summary

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
    headline: Table | None = None
    """The answer first (eval: per system, metrics better / worse, gates, the worst regression)."""
    verdict: str = ""
    """One line above the headline table (eval: every gate passed or not)."""
    verdict_cls: str = ""
    """``pass`` or ``fail`` (the verdict's colour), or empty."""
    fold_provenance: bool = False
    """Show the provenance as a folded table below the results instead of on top."""


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


def _length_bias(section: Section, groups: dict[tuple[str, str], list[tuple[float, float]]], what: str) -> None:
    """Score against output length per (row, column) group, e.g. metric × system, with Spearman's ρ: a grid
    with one row per rubric or metric and one column per system (a single unnamed column: just ρ)."""
    cells: dict[str, dict[str, str]] = defaultdict(dict)
    columns: list[str] = []
    by_plot: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for (row, col), pts in groups.items():
        if not pts:
            continue
        rho, lo, hi = spearman_ci([p[0] for p in pts], [p[1] for p in pts])
        cells[row][col] = f"{fmt_ci(rho, lo, hi, 3)} (n={len(pts)})"
        if col not in columns:
            columns.append(col)
        by_plot[row].extend(pts)
    if not cells:
        return
    section.length_bias = Table(
        f"Length bias: Spearman ρ of {what} vs output length in characters [95% CI, Fisher z] (n items); ρ > 0: "
        "longer outputs score higher, |ρ| under 0.1 is negligible",
        ["", *(c or "ρ (n)" for c in columns)],
        [[row, *(per.get(c, "-") for c in columns)] for row, per in cells.items()],
    )
    for name, pts in by_plot.items():
        section.length_plots.append(
            (
                f"{name}: score vs output length, one dot per item"
                + (" and system" if len(columns) > 1 else "")
                + "; a rising cloud means longer outputs score higher (ρ in the table above)",
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


def rubric_scale(rows: Sequence[dict[str, Any]]) -> tuple[tuple[float, float] | None, str]:
    """The score axis of one rubric's verdicts and where it comes from: 0–1 for pairwise (P(A better)) and
    opinions rubrics (the flagged share); else the built-in rubric of that name whose content hash the verdicts
    carry; else the score labels of logprob mode (``score_probs``); else None (unknown: the data's range)."""
    if any(r.get("label") is not None for r in rows):
        return (0.0, 1.0), "P(first answer better)"
    if any(r.get("details") for r in rows):
        return (0.0, 1.0), "share of opinions flagged"
    first = rows[0] if rows else {}
    name, digest = str(first.get("rubric")), str(first.get("rubric_hash"))
    if name.replace("_", "").replace("-", "").isalnum():
        from judge.rubric import load_rubric

        try:
            rubric = load_rubric(name)
        except Exception:  # noqa: BLE001 -- not a built-in rubric: look elsewhere
            rubric = None
        if rubric is not None and rubric.content_hash == digest and rubric.spec.scale is not None:
            return (float(rubric.spec.scale.min), float(rubric.spec.scale.max)), "the rubric's scale"
    keys = [_num(k) for r in rows for k in r.get("score_probs") or {}]
    numeric = [k for k in keys if k is not None]
    if keys and len(numeric) == len(keys):
        return (min(numeric), max(numeric)), "the rubric's scale (from the judge's score labels)"
    return None, ""


def _position_table(s: Section, rows: list[dict[str, Any]], texts: dict[str, dict[str, Any]]) -> None:
    """Pairwise verdicts: position consistency and P(first wins) of ``--both-orders`` runs, and P(longer
    answer wins) when the items' texts are given; the same statistics and warnings as MT-Bench's."""
    from judge.mtbench.results import bias_warnings
    from judge.orders import position_stats
    from judge.runner import length_bias

    ordered = [tuple(o) for r in rows for o in r.get("orders") or []]
    pairwise = any(r.get("label") is not None for r in rows)
    if not ordered and not pairwise:
        return
    table = []
    stats: dict[str, Any] = {}
    if ordered:
        pos = position_stats(ordered)
        stats.update(pos._asdict())
        lo, hi = wilson(pos.consistency, pos.scored_pairs)
        table.append(
            [
                "position consistency",
                fmt_ci(pos.consistency, lo, hi, 3),
                f"{pos.scored_pairs} pairs judged in both orders (as given and swapped)",
            ]
        )
        lo, hi = wilson(pos.p_first_wins, pos.decisive_verdicts)
        table.append(
            [
                "P(first position wins)",
                fmt_ci(pos.p_first_wins, lo, hi, 3),
                f"{pos.decisive_verdicts} decisive verdicts, every order",
            ]
        )
    if texts:
        lengths = {
            k: (len(v["output"]) if isinstance(v.get("output"), str) else None,
                len(v["output_b"]) if isinstance(v.get("output_b"), str) else None)
            for k, v in texts.items()
        }  # fmt: skip
        lb = length_bias(rows, lengths)
        stats.update(p_longer_wins=lb.p_longer_wins, length_decisive_verdicts=lb.decisive)
        value = fmt_ci(lb.p_longer_wins, lb.p_longer_low, lb.p_longer_high, 3)
        table.append(["P(longer answer wins)", value, f"{lb.decisive} decisive picks"])
    if table:
        s.tables.append(
            Table(
                "Judge position and length statistics (Wilson 95% CIs); 0.5 = no bias",
                ["statistic", "value", "over"],
                table,
            )
        )
        s.warnings.extend(bias_warnings(stats))


def verdicts_section(rows: list[dict[str, Any]], source: str, items: str | Path | None = None) -> Section:
    """``judge score`` verdicts (one dict per Verdict), joined by id with the items' texts when given."""
    texts = _load_items(items)
    rubrics = sorted({(r.get("rubric"), r.get("rubric_hash")) for r in rows}, key=str)
    ok: list[dict[str, Any]] = []
    unscored: list[dict[str, Any]] = []
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
        scale, where = rubric_scale([r for r in rows if str(r.get("rubric")) == rubric])
        axis = f"x-axis: {where} {fmt(scale[0])}–{fmt(scale[1])}" if scale else "x-axis: the scores' range"
        s.plots.append(
            (
                f"{rubric}: share of scored items per score, one colour per judge; {axis}",
                svg.histogram(per_judge, f"{rubric} score distribution", domain=scale),
            )
        )
    s.tables.append(Table("Scores", ["rubric", "judge", "scored", "mean"], stat_rows))
    _position_table(s, rows, texts)

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
        groups: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
        for r in ok:
            out = texts.get(str(r.get("id")), {}).get("output")
            if isinstance(out, str):
                groups[(str(r.get("rubric")), "")].append((float(len(out)), float(r["score"])))
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


def not_applicable_error(error: Any) -> bool:
    """Whether a per-item error says the metric does not apply (no reference to compare with), rather than
    that scoring failed: ``"not applicable: ..."`` (model metrics) or ``"no reference"`` (reference metrics)."""
    if not isinstance(error, str):
        return False
    e = error.strip().lower()
    return e.startswith("not applicable") or "no reference" in e


def _settings(value: Any, limit: int = 400) -> str:
    """A metric's settings as ``key: value`` pairs (nested keys dotted) for the provenance table: no JSON."""
    flat: list[str] = []

    def walk(prefix: str, v: Any) -> None:
        if isinstance(v, dict) and v:
            for k, x in v.items():
                walk(f"{prefix}.{k}" if prefix else str(k), x)
        else:
            shown = ", ".join(fmt(x) for x in v) if isinstance(v, list | tuple) else fmt(v)
            flat.append(f"{prefix}: {shown}" if prefix else shown)

    walk("", value)
    return clip("; ".join(flat), limit)


def _significance(d: dict[str, Any], better: int) -> int:
    """+1 when a delta's CI lies wholly on the better side of 0 (``better``: +1 higher is better, -1 lower),
    -1 when wholly on the worse side, 0 when it holds 0 or is undefined."""
    lo, hi = _num(d.get("ci_low")), _num(d.get("ci_high"))
    if lo is None or hi is None:
        return 0
    if lo > 0:
        return better
    if hi < 0:
        return -better
    return 0


def _eval_headline(results: dict[str, Any], names: list[str]) -> tuple[Table | None, str, str]:
    """The answer a reader wants first, per system: how many metrics are significantly better or worse than the
    baseline (the delta's 95% CI excludes 0, read in each metric's direction), its gates, and its worst
    significant regression (the largest drop as a share of the metric's range when known)."""
    systems: dict[str, Any] = results.get("systems", {})
    deltas: dict[str, dict[str, Any]] = results.get("deltas", {})
    figures: dict[str, Any] = results.get("provenance", {}).get("figures", {})
    baseline = results.get("baseline")
    gates: list[dict[str, Any]] = results.get("gates") or []
    order = [x for x in systems if x != baseline] + [baseline] + [
        str(g.get("system")) for g in gates if g.get("system") not in systems
    ]
    rows = []
    for name in dict.fromkeys(order):
        better: list[str] = []
        worse: list[str] = []
        worst: tuple[float, str, dict[str, Any]] | None = None
        own: dict[str, Any] = (deltas.get(name) if name is not None else None) or {}  # this system's deltas
        for m in names if own else []:
            d = own.get(m) or {}
            fig = figures.get(m, {})
            sign = 1 if fig.get("direction", "higher") == "higher" else -1
            sig = _significance(d, sign)
            (better if sig > 0 else worse if sig < 0 else []).append(m)
            if sig < 0:
                lo_hi = fig.get("range") or [None, None]
                span = (lo_hi[1] - lo_hi[0]) if None not in lo_hi and lo_hi[1] != lo_hi[0] else 1.0
                drop = sign * float(d["value"]) / span if _num(d.get("value")) is not None else 0.0
                if worst is None or drop < worst[0]:
                    worst = (drop, m, d)
        mine = [g for g in gates if str(g.get("system")) == str(name)]
        failed = [g for g in mine if not g.get("passed")]
        if not mine:
            gate_cell = "no gates"
        elif failed:
            gate_cell = f"FAIL ({len(failed)} of {len(mine)}: " + ", ".join(
                f"{g.get('metric')} {g.get('rule')}" for g in failed
            ) + ")"
        else:
            gate_cell = f"PASS ({len(mine)} of {len(mine)})"
        if name == baseline:
            if not mine:
                continue
            counts, worst_cell = ["baseline", "baseline"], "-"
        else:
            n = sum(1 for m in names if own.get(m) is not None)
            counts = [
                f"{len(xs)} of {n}" + (f": {', '.join(xs[:4])}{' …' if len(xs) > 4 else ''}" if xs else "")
                for xs in (better, worse)
            ]
            if worst is None:
                worst_cell = "none"
            else:
                d = worst[2]
                worst_cell = f"{worst[1]}: Δ {fmt_ci(d.get('value'), d.get('ci_low'), d.get('ci_high'), 3)}"
        rows.append([str(name), *counts, gate_cell, worst_cell])
    if not rows:
        return None, "", ""
    table = Table(
        f"At a glance: each system vs the baseline ({baseline}); significant = the paired delta's 95% CI excludes 0",
        ["system", "improved", "regressed", "gates", "worst regression [95% CI]"],
        rows,
    )
    failed_all = [g for g in gates if not g.get("passed")]
    if not gates:
        return table, "No gates set: nothing decides pass or fail.", ""
    if failed_all:
        return table, f"FAIL: {len(failed_all)} of {len(gates)} gates fail.", "fail"
    return table, f"PASS: all {len(gates)} gates pass.", "pass"


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
        *[(f"metric {name}", _settings(v)) for name, v in prov.get("metrics", {}).items() if v],
        ("versions", ", ".join(f"{k} {v}" for k, v in prov.get("versions", {}).items())),
    ]
    s.fold_provenance = True
    s.warnings = [str(w) for w in results.get("warnings") or []]
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
    ppi_rows = []
    for name, ppi in labelled_estimates(systems, deltas):
        how, est, worth = ppi_summary(ppi)
        ppi_rows.append([name, *(fmt_ci(e["value"], e["ci_low"], e["ci_high"], 3) for _, e in est), f"{how}; {worth}"])
    if ppi_rows:
        s.tables.append(
            Table(
                "Human-scale estimates from the labels (95% CIs)",
                ["value", "prediction-powered (PPI++)", "labelled only", "judge only", "how"],
                ppi_rows,
            )
        )
    if forest_rows:
        s.plots.append(
            (
                f"Deltas vs {baseline} with 95% CIs, drawn so that right is better for every metric: a dot is green "
                "(better) or red (worse) only when its CI excludes 0, grey otherwise",
                svg.forest(forest_rows, "forest plot of deltas"),
            )
        )
    s.gates = [
        {**g, "value_shown": fmt(g.get("value"), 4), "threshold_shown": fmt(g.get("threshold"), 4)}
        for g in results.get("gates", [])
    ]
    s.headline, s.verdict, s.verdict_cls = _eval_headline(results, names)
    per_metric: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    unscored: Counter[tuple[Any, Any]] = Counter()
    not_applicable: Counter[tuple[Any, Any]] = Counter()
    for r in scores:
        v = _num(r.get("score"))
        if v is None:
            key = (r.get("system"), r.get("metric"))
            (not_applicable if not_applicable_error(r.get("error")) else unscored)[key] += 1
        else:
            per_metric[str(r["metric"])][str(r["system"])].append(v)
    for m, per_system in per_metric.items():
        domain = svg.robust_range([v for vs in per_system.values() for v in vs])
        how = "share of items per bin of the per-item score, one colour per system (bars side by side)"
        if domain is not None:
            how += (
                f"; clipped to the 1st–99th percentile ({fmt(domain[0], 3)}–{fmt(domain[1], 3)}) so that a few "
                "outliers do not flatten it: values beyond are counted in the end bins"
            )
        s.plots.append((f"{m}: {how}", svg.histogram(per_system, f"{m} distribution", domain=domain)))
    if not_applicable:
        s.notes.append(
            "not applicable (no reference): "
            + ", ".join(f"{k[0]}/{k[1]}: {v}" for k, v in sorted(not_applicable.items(), key=str))
        )
    if unscored:
        s.notes.append("unscored: " + ", ".join(f"{k[0]}/{k[1]}: {v}" for k, v in sorted(unscored.items(), key=str)))
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
        groups: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
        for r in scores:
            v, n = _num(r.get("score")), lengths.get(str(r.get("system")), {}).get(str(r.get("id")))
            if v is not None and n is not None:
                groups[(str(r["metric"]), str(r["system"]))].append((float(n), v))
        _length_bias(s, groups, "each metric")
    else:
        s.notes.append("length bias: the systems' output files named in the provenance are not on this disk")
    sweep_plots(s, results)
    return s


# ------------------------------------------------------------------------------------------ calibration


def _stat(d: dict[str, Any] | None) -> str:
    if d and d.get("undefined"):
        return f"undefined: {d['undefined']}"
    if not d or d.get("value") is None:
        return "-"
    return fmt_ci(d["value"], d.get("ci_low"), d.get("ci_high"), 3)


def _jitter(values: list[float], k: int, phase: float) -> float:
    """A deterministic offset for the k-th point (the same report draws the same picture): within ±0.35 of
    the smallest gap between distinct values, and of one unit, when they are all whole numbers (labels of only
    1 and 5 still read as 1 and 5), else 0 (nothing to separate)."""
    distinct = sorted(set(values))
    if len(distinct) < 2 or not all(float(v).is_integer() for v in distinct):
        return 0.0
    gap = min(1.0, *(b - a for a, b in zip(distinct, distinct[1:], strict=False)))
    return 0.7 * gap * (math.modf(k * 0.618034 + phase)[0] - 0.5)


def _judge_human_scatter(s: Section, report: dict[str, Any]) -> None:
    """Judge score vs human consensus, one dot per item, with the isotonic fit; whole-number sides jittered.
    Reports written before ``points`` existed fall back to the confusion matrix's numeric cells."""
    points = [(float(x), float(y)) for x, y in report.get("points") or []]
    conf = report.get("confusion")
    if not points and conf:
        nums = [_num(x) for x in conf["labels"]]
        if all(v is not None for v in nums) and len(nums) > 2:
            points = [
                (float(nums[j]), float(nums[i]))  # type: ignore[arg-type]
                for i, row in enumerate(conf["matrix"])
                for j, c in enumerate(row)
                for _ in range(c)
            ]
    if not points:
        return
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    shown = _subsample([(x + _jitter(xs, k, 0.0), y + _jitter(ys, k, 0.3)) for k, (x, y) in enumerate(points)])
    jittered = [side for side, vals in (("judge", xs), ("human", ys)) if _jitter(vals, 1, 0.0)]
    iso = report.get("isotonic")
    line = list(zip(iso["x"], iso["y"], strict=True)) if iso else None
    caption = "Judge score (x) vs human consensus (y), one dot per item"
    if jittered:
        caption += f" ({' and '.join(jittered)} values jittered so that equal pairs do not hide each other)"
    if line:
        caption += "; orange: the isotonic fit, the monotone map from the judge's scale to the humans'"
    caption += "; a tight rising cloud is a judge that orders items as the humans do"
    s.plots.append((caption, svg.scatter(shown, "judge vs human scatter", xlabel="judge", ylabel="human", line=line)))


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
    ppi = report.get("ppi")
    if ppi:
        how, rows, worth = ppi_summary(ppi)
        s.tables.append(
            Table(
                f"Human-scale estimate: {ppi['estimand']} ({how})",
                ["estimate", "value", "95% CI", "CI width"],
                [
                    [
                        name,
                        fmt(e["value"], 3),
                        f"[{fmt(e['ci_low'], 3)}, {fmt(e['ci_high'], 3)}]",
                        fmt(e["ci_high"] - e["ci_low"], 3),
                    ]
                    for name, e in rows
                ],
            )
        )
        s.notes.append(worth)
    for lv in report.get("levels") or []:
        skipped = f", {lv['n_skipped']} skipped (constant scores)" if lv["level"] == "summary" else ""
        s.tables.append(
            Table(
                f"{lv['level'].capitalize()}-level correlation ({lv['n_units']} {lv['unit']}{skipped}; 95% CIs "
                f"resampling {lv['unit']})",
                ["statistic", "judge vs human"],
                [[name, _stat(st)] for name, st in lv["metrics"].items()],
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
    _judge_human_scatter(s, report)
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
    review_rows: list[dict[str, Any]] = []
    for d in report.get("disagreements") or []:
        annot = ", ".join(f"{k}={fmt(v)}" for k, v in (d.get("annotator_labels") or {}).items())
        review_rows.append(
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
    if review_rows:
        s.reviews.append(
            Review(
                f"Largest judge–human disagreements ({len(review_rows)})",
                ["id", "judge", "human", "gap", "annotators"],
                review_rows,
            )
        )
    return s


# --------------------------------------------------------------------------------------------- MT-Bench


def _distribution(probs: dict[str, Any]) -> str:
    """Label or score probabilities, most likely first: ``3: 41%, 4: 30%, …``."""
    ranked = sorted(((k, _num(v) or 0.0) for k, v in probs.items()), key=lambda kv: -kv[1])
    return ", ".join(f"{k}: {v:.0%}" for k, v in ranked)


def _judgment_texts(r: dict[str, Any], fields: Sequence[str]) -> list[tuple[str, str]]:
    """An MT-Bench record's texts for its review row. In logprob mode the judge's completion is its first
    token only (say "1"), while the score is the probability-weighted mean (say 3.9): show the score with the
    distribution it came from, and the raw token labelled as such, never the bare token as "the judgment"."""
    probs = {"judgment": r.get("score_probs"), "g1_judgment": r.get("g1_probs"), "g2_judgment": r.get("g2_probs")}
    out = []
    for k in fields:
        p = probs.get(k)
        if r.get("score_mode") == "logprob" and isinstance(p, dict) and p:
            what = f"score {fmt(_num(r.get('score')), 2)}, the probability-weighted mean of" if k == "judgment" else ""
            text = (
                f"logprob mode: {what or 'label'} distribution over the judge's next token: {_distribution(p)}"
                + (f" (raw first token: {clip(r[k], 40)!r})" if r.get(k) else "")
            )
            out.append((k, text))
        elif r.get(k):
            out.append((k, clip(r[k])))
    return out


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
        colors = {str(m): svg.color(i) for i, m in enumerate(single)}  # one colour per model in every plot
        s.plots.append(
            (
                "Mean score (1–10) per category, one polygon per model: further out is better; a dent is a weak "
                "category",
                svg.radar(
                    cats,
                    {m: [v["categories"].get(c) for c in cats] for m, v in single.items()},
                    "MT-Bench radar",
                    colors=colors,
                ),
            )
        )
        scored = [r for r in singles if r.get("status", "ok") == "ok" and _num(r.get("score")) not in (None, -1.0)]
        per_model: dict[str, list[float]] = {str(m): [] for m in single}
        for r in scored:
            per_model.setdefault(str(r["model"]), []).append(float(r["score"]))
        s.plots.append(
            (
                "Share of judgments per score on MT-Bench's 1–10 scale, one colour per model (as in the radar)",
                svg.histogram(
                    {m: v for m, v in per_model.items() if v},
                    "MT-Bench score distribution",
                    domain=(1, 10),
                    colors=colors,
                ),
            )
        )
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
                        "texts": _judgment_texts(r, ("user_prompt", "judgment", "error")),
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
                            "texts": _judgment_texts(r, ("g1_judgment", "g2_judgment", "error")),
                        }
                        for r in flips
                    ],
                )
            )
    return s


def sweep_plots(section: Section, results: dict[str, Any]) -> None:
    """Checkpoint sweeps: each metric against the training step with its CI band, the baseline as a dashed
    line, the best checkpoint ringed; training against validation loss; overfitting and forgetting flags."""
    systems: dict[str, dict[str, Any]] = results.get("systems", {})
    figures: dict[str, Any] = results.get("provenance", {}).get("figures", {})
    baseline = results.get("baseline")
    for name, sw in (results.get("sweeps") or {}).items():
        steps = [st if st is not None else k for k, st in enumerate(sw.get("steps", []))]
        members = sw.get("systems", [])
        rows = []
        for metric, best in (sw.get("best") or {}).items():
            pts = [
                (float(st), *(systems[m][metric].get(k) for k in ("value", "ci_low", "ci_high")))
                for st, m in zip(steps, members, strict=False)
            ]
            ref = (systems.get(baseline, {}) if baseline is not None else {}).get(metric, {})
            reference = None
            if ref.get("value") is not None:
                reference = (f"{baseline} (baseline)", ref["value"], ref.get("ci_low"), ref.get("ci_high"))
            mark = None
            if best in members:
                k = members.index(best)
                if pts[k][1] is not None:
                    mark = (pts[k][0], pts[k][1])
            higher = figures.get(metric, {}).get("direction", "higher") == "higher"
            direction = "higher is better" if higher else "lower is better"
            section.plots.append(
                (
                    f"{name}: {metric} by training step with 95% CI bands ({direction}); dashed: {baseline}; "
                    f"ringed: the best checkpoint ({best})",
                    svg.curves(
                        {name: pts}, f"{metric} by step", xlabel="step", ylabel=metric, reference=reference, mark=mark
                    ),
                )
            )
            rows.append([metric, str(best), *[fmt(systems[m][metric].get("value"), 4) for m in members]])
        section.tables.append(
            Table(f"Sweep {name}: value per checkpoint (best per metric)", ["metric", "best", *members], rows)
        )
        val, train = sw.get("val_loss"), sw.get("train_loss")
        if val and train:
            section.plots.append(
                (
                    f"{name}: training loss (on the suite's train split) and validation loss by step; a widening gap "
                    "is overfitting",
                    svg.curves(
                        {"validation": [(float(st), v, None, None) for st, v in zip(steps, val, strict=False)],
                         "training": [(float(st), v, None, None) for st, v in zip(steps, train, strict=False)]},
                        f"{name} training vs validation loss",
                        xlabel="step",
                        ylabel="loss (nats/token)",
                    ),
                )
            )
        if sw.get("overfitting_from"):
            section.warnings.append(
                f"{name}: validation loss rises from {sw['overfitting_from']} while training loss still falls "
                "(overfitting)"
            )
        for f in sw.get("forgetting") or []:
            section.warnings.append(
                f"{name}: {f['metric']} fell past its gate at {f['system']} (delta {fmt(f.get('delta'), 3)}): "
                "forgetting"
            )
