"""The calibration report: a pydantic model whose JSON form is the contract CI gates read, and its text table.

Contract (names never change): ``n_items``, ``n_scored``, ``n_unscored``, ``n_missing_label``,
``label_type``, ``metrics`` (statistic -> ``{"value", "ci_low", "ci_high"}``), ``human_ceiling`` (same
shape, or null), ``warnings``. Everything else is extra and may grow.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from calibration.fit import IsotonicFit, Reliability, ThresholdFit
from calibration.ppi import PPISection
from judge.textfmt import fmt as _fmt  # numbers as short as they can be read: 4, 2.765
from judge.textfmt import fmt_ci, ppi_summary

MAX_POINTS = 1500
"""Judge-vs-human pairs kept in a report for its scatter plot (an even subsample beyond it)."""


class Stat(BaseModel):
    """One statistic with its bootstrap 95 % interval (percentile or BCa: the report's ``ci_method``; None where
    undefined)."""

    value: float | None
    ci_low: float | None
    ci_high: float | None
    undefined: str | None = Field(None, description="Why value and interval are null, when the statistic is undefined.")


class Confusion(BaseModel):
    """Counts with rows = human consensus, columns = judge."""

    labels: list[str]
    matrix: list[list[int]]


class ClassStats(BaseModel):
    """Precision, recall and F1 of the judge for one class, taking the humans as truth."""

    precision: float
    recall: float
    f1: float
    support: int


class Disagreement(BaseModel):
    """An item where judge and humans disagree, with what is needed to review it."""

    id: str
    judge: Any
    human: Any
    annotator_labels: dict[str, Any] = Field(description="Each annotator's label for this item.")
    gap: float = Field(description="How far apart judge and humans are (absolute difference; 2 = A vs B).")
    texts: dict[str, str] = Field(default_factory=dict, description="Text columns of the results file, truncated.")


class LevelStats(BaseModel):
    """Judge–human correlations at the summary or system level (``calibration.levels``), with percentile
    intervals from resampling that level's units."""

    level: str
    unit: str = Field(description="The column whose values are the units: documents or systems.")
    n_units: int = Field(description="Units the correlation averages over (summary) or correlates (system).")
    n_skipped: int = Field(0, description="Summary level: documents skipped because a side was constant.")
    metrics: dict[str, Stat]


class CalibrationReport(BaseModel):
    """Agreement between a judge and human labels, with CIs, the human ceiling and coverage."""

    n_items: int = Field(description="Distinct items in the judge results.")
    n_scored: int = Field(description="Judge items with a usable score.")
    n_unscored: int = Field(description="Judge items with status 'unscored' or no score; listed in unscored_ids.")
    n_missing_label: int = Field(description="Judge items without any human label; listed in missing_label_ids.")
    label_type: str
    metrics: dict[str, Stat] = Field(description="Judge vs human consensus, on the n_compared items.")
    human_ceiling: dict[str, Stat] | None = Field(
        description="Each annotator vs the others' consensus (leave-one-out), pairs pooled over annotators."
    )
    warnings: list[str]
    n_compared: int = Field(0, description="Items with both a judge score and a human consensus.")
    n_annotators: int = 0
    n_boot: int = 0
    seed: int = 0
    ci_width: dict[str, float | None] = Field(default_factory=dict)
    unscored_ids: list[str] = Field(default_factory=list)
    missing_label_ids: list[str] = Field(default_factory=list)
    unmatched_label_ids: list[str] = Field(default_factory=list, description="Labelled ids absent from the results.")
    consensus_tie_ids: list[str] = Field(default_factory=list, description="Items whose human majority was tied.")
    ceiling_method: str | None = None
    ci_method: str | None = Field(None, description="How the 95% CIs were drawn: 'percentile' or 'bca' (None: no CIs).")
    group: str | None = Field(
        None, description="The column whose groups the bootstrap resampled whole (cluster bootstrap); None = items."
    )
    n_groups: int | None = Field(None, description="How many groups the compared items fall in (with group).")
    ceiling_pairs: int = 0
    confusion: Confusion | None = None
    per_class: dict[str, ClassStats] | None = None
    tie_rate: dict[str, float] | None = None
    threshold: ThresholdFit | None = None
    isotonic: IsotonicFit | None = None
    reliability: Reliability | None = Field(
        None, description="Reliability curve of a continuous judge score (binary labels only; None otherwise)."
    )
    points: list[tuple[float, float]] | None = Field(
        None,
        description="Per compared item (judge score, human consensus) as the isotonic fit saw them, an even "
        f"subsample of at most {MAX_POINTS} in judge order: the report's scatter (ordinal and binary labels).",
    )
    disagreements: list[Disagreement] = Field(default_factory=list)
    ppi: PPISection | None = Field(
        None,
        description="Prediction-powered estimate of the human-scale mean from every judge score and the labels "
        "(with the labelled-only and judge-only ones); None without unlabelled judge items.",
    )
    levels: list[LevelStats] = Field(
        default_factory=list, description="Summary- and system-level correlations (--level), beside the item level."
    )
    groups: dict[str, CalibrationReport] | None = Field(None, description="The same report per --by group.")

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict (NaN never appears: undefined numbers are None)."""
        return self.model_dump(mode="json")


def _num(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _stat(stat: Stat | None) -> str:
    if stat is not None and stat.undefined:
        return f"undefined: {stat.undefined}"
    if stat is None or stat.value is None:
        return "—"
    return f"{stat.value:.3f} [{_num(stat.ci_low)}, {_num(stat.ci_high)}]"


def render_text(report: CalibrationReport, *, title: str = "judge vs human", max_text: int = 90) -> str:
    """A readable table of the report, for terminals and logs."""
    lines: list[str] = []
    how = f"{report.n_boot} bootstrap resamples"
    if report.ci_method:
        how += f", {'BCa' if report.ci_method == 'bca' else 'percentile'} intervals"
    if report.group:
        how += f", resampling {report.n_groups} groups of {report.group}"
    lines.append(f"Calibration: {title}   (label type: {report.label_type}, {how})")
    lines.append(
        f"  items {report.n_items} | scored {report.n_scored} | unscored {report.n_unscored} | "
        f"missing label {report.n_missing_label} | compared {report.n_compared} | annotators {report.n_annotators}"
    )
    lines.append("")
    ceiling = report.human_ceiling
    header = f"  {'statistic':<24}{'judge vs human (95% CI)':<30}"
    if ceiling is not None:
        header += "human vs human (ceiling)"
    lines.append(header)
    for name, stat in report.metrics.items():
        row = f"  {name:<24}{_stat(stat):<30}"
        if ceiling is not None:
            row += _stat(ceiling.get(name))
        lines.append(row.rstrip())
    if report.tie_rate:
        lines.append(
            f"  tie rate: judge {report.tie_rate['judge']:.3f}, human consensus {report.tie_rate['human']:.3f}"
        )
    if report.confusion is not None and len(report.confusion.labels) <= 12:
        lines.append("")
        lines.append("  confusion (rows = human, columns = judge)")
        width = max(6, *(len(x) + 1 for x in report.confusion.labels))
        lines.append("  " + " " * width + "".join(f"{x:>{width}}" for x in report.confusion.labels))
        for label, counts in zip(report.confusion.labels, report.confusion.matrix, strict=True):
            lines.append("  " + f"{label:>{width}}" + "".join(f"{c:>{width}}" for c in counts))
    if report.threshold is not None:
        t = report.threshold
        lines.append("")
        lines.append(
            f"  threshold (max {t.criterion}): score >= {t.threshold:g}; {t.n_splits}-fold CV F1 {t.cv_f1:.3f}, "
            f"κ {_num(t.cv_kappa)}"
        )
    if report.isotonic is not None:
        iso = report.isotonic
        lines.append(
            f"  isotonic map: {iso.n_splits}-fold CV MAE {iso.cv_mae_raw:.3f} raw -> {iso.cv_mae_mapped:.3f} mapped"
        )
    if report.reliability is not None:
        rel = report.reliability
        brier = f", Brier {rel.brier:.3f}" if rel.brier is not None else ""
        lines.append(f"  reliability ({rel.n_bins} equal-width bins of the judge score): ECE {rel.ece:.3f}{brier}")
    if report.ppi is not None:
        lines.append("")
        lines.extend(render_ppi(report.ppi))
    for lv in report.levels:
        lines.append("")
        skipped = f", {lv.n_skipped} skipped (constant scores)" if lv.level == "summary" else ""
        lines.append(f"  {lv.level} level ({lv.n_units} {lv.unit}{skipped}; 95% CIs resampling {lv.unit})")
        for name, stat in lv.metrics.items():
            lines.append(f"    {name:<22}{_stat(stat)}")
    if report.disagreements:
        lines.append("")
        lines.append(f"  largest disagreements ({len(report.disagreements)}):")
        for d in report.disagreements:
            who = _labels(d.annotator_labels)
            lines.append(f"    {d.id}: judge {_fmt(d.judge)} vs human {_fmt(d.human)}  (annotators: {who})")
            for key, text in list(d.texts.items())[:3]:
                flat = " ".join(text.split())
                lines.append(f"      {key}: {flat[:max_text]}{'…' if len(flat) > max_text else ''}")
    if report.warnings:
        lines.append("")
        lines.append("  warnings:")
        lines.extend(f"    - {w}" for w in report.warnings)
    if report.groups:
        for name, group in report.groups.items():
            lines.append("")
            lines.append(render_text(group, title=f"group {name}", max_text=max_text))
    return "\n".join(lines)


def render_ppi(ppi: PPISection, indent: str = "  ") -> list[str]:
    """The prediction-powered estimate beside the labelled-only and judge-only ones, as text lines."""
    how, rows, worth = ppi_summary(ppi.model_dump())
    lines = [f"{indent}{ppi.estimand} (95% CI; {how}):"]
    for name, e in rows:
        lines.append(f"{indent}  {name:<38}{fmt_ci(e['value'], e['ci_low'], e['ci_high'])}")
    lines.append(f"{indent}  {worth}")
    return lines


def _labels(labels: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in labels.items())
