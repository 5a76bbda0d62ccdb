"""What every report kind builds (:class:`Section`, its tables and review rows) and the helpers they share.

A section is plain data that the one HTML template renders: provenance pairs, tables, inline-SVG plots,
warnings and review tables. Statistics come from the result as it was written; the only numbers computed
in the report are counts, histogram bins, Wilson intervals of shares and the length-bias Spearman ρ with its
interval (which no result type holds). Each kind of result is one module beside this one (verdicts, eval,
calibration, mtbench), registered in :mod:`judge.report.kinds`.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from judge.report import svg
from judge.stats import spearman_ci
from judge.textfmt import fmt, fmt_ci

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


def clip(text: Any, limit: int = MAX_TEXT) -> str:
    """A text for a review row, cut at ``limit`` characters with a note of how much was left out."""
    if text is None:
        return ""
    s = text if isinstance(text, str) else json.dumps(text, ensure_ascii=False)
    return s if len(s) <= limit else s[:limit] + f"\n… [{len(s) - limit} more characters not shown]"


def num(x: Any) -> float | None:
    """A finite number, or None (missing, a bool, not a number, NaN or infinite)."""
    if x is None or isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def cell(value: Any, digits: int = 3) -> tuple[str, str]:
    """(display, sort key) of one review cell; numbers sort numerically in the page."""
    v = num(value)
    return (fmt(v, digits), repr(v)) if v is not None else (fmt(value), "")


def review_texts(rec: dict[str, Any], fields: Sequence[str] = TEXT_FIELDS) -> list[tuple[str, str]]:
    """A record's non-empty texts for its review row, each clipped."""
    return [(f, clip(rec[f])) for f in fields if rec.get(f) not in (None, "", [])]


def subsample(points: list[tuple[float, float]], limit: int = MAX_POINTS) -> list[tuple[float, float]]:
    """At most ``limit`` points, evenly spaced through the list."""
    if len(points) <= limit:
        return points
    step = len(points) / limit
    return [points[int(i * step)] for i in range(limit)]


def add_length_bias(section: Section, groups: dict[tuple[str, str], list[tuple[float, float]]], what: str) -> None:
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
                    subsample(pts), f"{name} score vs output length", xlabel="output characters", ylabel="score"
                ),
            )
        )


def item_texts(items: str | Path | None) -> dict[str, dict[str, Any]]:
    """The texts of each item of a data file (``--items``) by id; empty without one."""
    if items is None:
        return {}
    from judge.dataset import load_items

    return {it.id: it.values() for it in load_items(items)}


Items = str | Path | None
"""The data file given to ``judge score`` (``--items``), whose texts are shown beside its verdicts."""


@dataclass(frozen=True)
class ReportKind:
    """One kind of result the report reads: how it is told apart from the others and how its section is built.
    Each kind's module (beside this one) declares one, and :data:`judge.report.kinds.KINDS` lists them."""

    name: str
    detect: Callable[[Any], bool]
    """Whether the parsed contents of a result file (a JSON object, or a list of records) are of this kind."""
    load: Callable[[Any, str, Items], Section]
    """The section of contents that ``detect`` accepted, read from ``source`` (a file's path, or a name for
    records given in Python)."""
    from_object: Callable[[Any], Section | None] | None = None
    """The section of a result given in Python (a result object or its dict); None when it is not this kind's."""
    text: Callable[[str | Path], str] | None = None
    """The plain-text report of a result file of this kind, where the report package holds one."""
