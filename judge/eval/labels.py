"""Human labels in a ``judge eval`` suite: the judge's rubric scores corrected into human-scale estimates.

    labels: {file: labels.csv, metric: helpfulness}      # id, system, label [, annotator]; map: isotonic
    gates:
      - {metric: helpfulness, estimate: ppi, delta_ci_low_min: 0}

People labelled some items' outputs of some systems on the rubric's scale. For the labelled metric, every
system gets the prediction-powered estimate of its *human* mean (:func:`judge.ppi.ppi_mean`: the judge's
scores on every item, corrected by the labelled items), and every system its paired delta against the
baseline (:func:`judge.ppi.ppi_delta`, on the items labelled for both), each beside the labelled-only and
judge-only values. With the suite's ``group`` the variances are cluster-robust. Several annotators of one
(item, system) are averaged. The labels file is read and checked before any model is called.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from judge.errors import DataError
from judge.io import read_rows
from judge.ppi import MIN_LABELS, PPIResult, ppi_delta, ppi_mean

if TYPE_CHECKING:
    from judge.eval.suite import Suite


@dataclass
class EvalLabels:
    """Each system's mean human label per item id, from the suite's labels file."""

    metric: str
    path: str
    by_system: dict[str, dict[str, float]]
    mapping: str = "identity"


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out) else None


def load_eval_labels(suite: Suite, base_dir: Path, ids: list[str], figures: set[str]) -> EvalLabels | None:
    """Read and check the suite's labels (metric, ids, systems, numbers, scale, enough per system); None without
    any. ``figures``: the names the suite's metrics report."""
    from judge.errors import ConfigError
    from judge.eval.suite import locate

    spec = suite.labels
    if spec is None:
        return None
    if spec.metric not in figures:
        raise ConfigError(
            f"{locate(suite, 'labels', 'metric')}: key 'labels.metric': '{spec.metric}' is not computed by this suite "
            f"(its metrics report {', '.join(sorted(figures))})"
        )
    path = (base_dir / spec.file) if not Path(spec.file).is_absolute() else Path(spec.file)
    src = str(path)
    rows = read_rows(path)
    known = set(ids)
    sums: dict[str, dict[str, list[float]]] = {s: {} for s in suite.systems}
    unknown_ids: list[str] = []
    for row in rows:
        data = row.data
        for col in (spec.id_column, spec.system_column, spec.label_column):
            if col not in data:
                raise DataError(f"no '{col}' column in the labels file", path=src, line=row.line, field=col)
        item, system, raw = (
            str(data[spec.id_column]).strip(),
            str(data[spec.system_column]).strip(),
            data[spec.label_column],
        )
        if system not in sums:
            raise DataError(
                f"system '{system}' is not one of the suite's ({', '.join(suite.systems)})",
                path=src,
                line=row.line,
                field=spec.system_column,
            )
        value = _number(raw)
        if value is None:
            raise DataError(
                f"label {raw!r} for item '{item}' is not a number", path=src, line=row.line, field=spec.label_column
            )
        if spec.scale is not None and not spec.scale[0] <= value <= spec.scale[1]:
            raise DataError(
                f"label {raw!r} for item '{item}' is outside the scale {spec.scale[0]:g}..{spec.scale[1]:g}",
                path=src,
                line=row.line,
                field=spec.label_column,
            )
        if item not in known:
            unknown_ids.append(item)
            continue
        sums[system].setdefault(item, []).append(value)
    if unknown_ids:
        shown = ", ".join(sorted(set(unknown_ids))[:20]) + (", …" if len(set(unknown_ids)) > 20 else "")
        raise DataError(
            f"{len(set(unknown_ids))} labelled id(s) are not items of the suite's data: {shown}",
            path=src,
            field=spec.id_column,
        )
    by_system = {s: {i: float(np.mean(v)) for i, v in per.items()} for s, per in sums.items()}
    for system, per in by_system.items():
        if len(per) < MIN_LABELS:
            raise DataError(
                f"system '{system}' has {len(per)} labelled item(s); the prediction-powered estimate needs at least "
                f"{MIN_LABELS} (label the same items for every system, so the deltas can use them too)",
                path=src,
            )
    return EvalLabels(spec.metric, src, by_system, spec.map)


def _summary(result: PPIResult) -> dict[str, Any]:
    """The PPI result as results.json stores it: value and CI of the PPI estimate on top (what gates read)."""
    return {
        "value": result.ppi.value,
        "ci_low": result.ppi.ci_low,
        "ci_high": result.ppi.ci_high,
        **result.model_dump(),
    }


def apply_labels(
    labels: EvalLabels,
    ids: list[str],
    per_item: dict[str, dict[str, np.ndarray]],
    systems: dict[str, dict[str, dict[str, Any]]],
    deltas: dict[str, dict[str, dict[str, Any]]],
    baseline: str,
    groups: np.ndarray | None,
) -> None:
    """Add ``ppi`` (the human-scale estimates) to the labelled metric's system values and deltas, in place."""
    metric = labels.metric
    g = None if groups is None else np.asarray(groups).astype(str)

    def split(mask_lab: np.ndarray, ok: np.ndarray) -> dict[str, Any]:
        lab, unl = ok & mask_lab, ok & ~mask_lab
        if g is None:
            return {"lab": lab, "unl": unl}
        return {"lab": lab, "unl": unl, "groups": g[lab], "groups_unlabelled": g[unl]}

    index = {i: k for k, i in enumerate(ids)}
    human = {}
    for system, per in labels.by_system.items():
        y = np.full(len(ids), np.nan)
        for item, value in per.items():
            y[index[item]] = value
        human[system] = y
    for system in systems:
        f = per_item[system][metric]
        parts = split(np.isfinite(human[system]), np.isfinite(f))
        lab, unl = parts.pop("lab"), parts.pop("unl")
        result = ppi_mean(human[system][lab], f[lab], f[unl], mapping=labels.mapping, **parts)
        systems[system][metric]["ppi"] = _summary(result)
    for system in deltas:
        fa, fb = per_item[system][metric], per_item[baseline][metric]
        ya, yb = human[system], human[baseline]
        parts = split(np.isfinite(ya) & np.isfinite(yb), np.isfinite(fa) & np.isfinite(fb))
        lab, unl = parts.pop("lab"), parts.pop("unl")
        result = ppi_delta(ya[lab], yb[lab], fa[lab], fb[lab], fa[unl], fb[unl], mapping=labels.mapping, **parts)
        deltas[system][metric]["ppi"] = _summary(result)


def render_labels(
    systems: dict[str, dict[str, dict[str, Any]]], deltas: dict[str, dict[str, dict[str, Any]]]
) -> list[str]:
    """Text lines: each labelled metric's human-scale estimates per system and per delta."""
    from judge.textfmt import fmt_ci, labelled_estimates, ppi_summary

    lines: list[str] = []
    for name, ppi in labelled_estimates(systems, deltas):
        how, rows, worth = ppi_summary(ppi)
        lines.append(f"{name}, human scale (95% CI; {how}):")
        lines += [f"  {label:<38}{fmt_ci(e['value'], e['ci_low'], e['ci_high'])}" for label, e in rows]
        lines.append(f"  {worth}")
    return ["", *lines] if lines else []
