"""Report kind ``calibration``: a ``judge calibrate --json`` report (``CalibrationReport.to_dict()``): agreement
with the human ceiling, the prediction-powered estimate, the confusion matrix, the judge-vs-human scatter,
the reliability curve and the largest disagreements."""

from __future__ import annotations

import math
from typing import Any

from judge.report import svg
from judge.report.section import Items, ReportKind, Review, Section, Table, cell, clip, num, subsample
from judge.textfmt import fmt, fmt_ci, ppi_summary


def detect(data: Any) -> bool:
    """A calibration report: a JSON object with ``label_type`` and ``metrics``."""
    return isinstance(data, dict) and "label_type" in data and "metrics" in data


def load(report: dict[str, Any], source: str, items: Items = None) -> Section:
    """The section of a calibration report read from ``source``; ``items`` is not used."""
    return html(report, source)


def from_object(source: Any) -> Section | None:
    """A ``calibration.report.CalibrationReport`` (told by its fields: calibration is above judge) or its dict."""
    if hasattr(source, "label_type") and hasattr(source, "to_dict"):
        return html(source.to_dict(), "calibration.calibrate()")
    if isinstance(source, dict) and "label_type" in source:
        return html(source, "dict")
    return None


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
        nums = [num(x) for x in conf["labels"]]
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
    shown = subsample([(x + _jitter(xs, k, 0.0), y + _jitter(ys, k, 0.3)) for k, (x, y) in enumerate(points)])
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


def _provenance(report: dict[str, Any]) -> list[tuple[str, str]]:
    """Label type, counts, annotators, bootstrap settings and the human ceiling's method."""
    return [
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


def _agreement(s: Section, report: dict[str, Any]) -> None:
    """The agreement statistics beside the human ceiling, the prediction-powered estimate, the per-level
    correlations and the per-class table."""
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


def _fit_notes(s: Section, report: dict[str, Any]) -> None:
    """The fitted threshold and isotonic map, each with its cross-validated quality."""
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


def _reliability(s: Section, report: dict[str, Any]) -> None:
    """The reliability curve (binned judge score against the share of positive labels), or why it is missing."""
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


def _group_table(report: dict[str, Any]) -> Table | None:
    """Every statistic per group (the report's ``groups``); None without groups."""
    groups = report.get("groups") or {}
    if not groups:
        return None
    stats = list(report.get("metrics") or {})
    return Table(
        "Per group",
        ["group", "compared", *stats],
        [[g, str(r.get("n_compared")), *(_stat(r["metrics"].get(k)) for k in stats)] for g, r in groups.items()],
    )


def _disagreements(report: dict[str, Any]) -> Review | None:
    """The items where judge and humans differ most, with the annotators' labels and the item's texts."""
    review_rows: list[dict[str, Any]] = []
    for d in report.get("disagreements") or []:
        annot = ", ".join(f"{k}={fmt(v)}" for k, v in (d.get("annotator_labels") or {}).items())
        review_rows.append(
            {
                "id": str(d["id"]),
                "cells": [
                    (str(d["id"]), str(d["id"])),
                    cell(d.get("judge")),
                    cell(d.get("human")),
                    cell(d.get("gap")),
                    (annot, annot),
                ],
                "texts": [(k, clip(v)) for k, v in (d.get("texts") or {}).items() if v],
            }
        )
    if not review_rows:
        return None
    return Review(
        f"Largest judge–human disagreements ({len(review_rows)})",
        ["id", "judge", "human", "gap", "annotators"],
        review_rows,
    )


def html(report: dict[str, Any], source: str, title: str = "judge vs human") -> Section:
    """A ``judge calibrate --json`` report (CalibrationReport.to_dict())."""
    s = Section("calibration", f"judge calibrate: {title}", source)
    s.provenance = _provenance(report)
    _agreement(s, report)
    conf = report.get("confusion")
    if conf:
        s.plots.append(
            (
                "Confusion matrix (rows: human consensus, columns: judge)",
                svg.heatmap(conf["labels"], conf["matrix"], "confusion matrix"),
            )
        )
    _judge_human_scatter(s, report)
    _fit_notes(s, report)
    _reliability(s, report)
    if report.get("tie_rate"):
        tr = report["tie_rate"]
        s.notes.append(f"tie rate: judge {fmt(tr.get('judge'))}, human consensus {fmt(tr.get('human'))}")
    s.warnings = list(report.get("warnings") or [])
    groups = _group_table(report)
    if groups is not None:
        s.tables.append(groups)
    disagreements = _disagreements(report)
    if disagreements is not None:
        s.reviews.append(disagreements)
    return s


KIND = ReportKind("calibration", detect, load, from_object)
