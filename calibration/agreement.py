"""Agreement statistics between a judge and human labels, computed two ways.

* :func:`point_estimates` computes every statistic once on the joined arrays with the libraries people
  trust (scikit-learn, scipy, the ``krippendorff`` package): these are the reported values.
* :func:`table_estimates` computes the same statistics from contingency tables, vectorised over a batch
  of tables (one per bootstrap resample). Every statistic here -- κ, α, Spearman, Kendall τ-b, ROC AUC
  included -- is a function of the (human value × judge value) count table, so a resample never needs
  its items re-sorted: only re-counted. The tests check that the two agree on the full sample.

Which statistics apply depends on the label type (:func:`build_design`); ones that do not apply are
omitted from the report.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import krippendorff
import numpy as np
from scipy import stats
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    f1_score,
    mean_absolute_error,
    roc_auc_score,
)

from calibration.labels import PAIRWISE_CLASSES

METRIC_ORDER: tuple[str, ...] = (
    "accuracy",
    "agreement_with_ties",
    "agreement_without_ties",
    "within_1",
    "mae",
    "cohen_kappa",
    "kappa_linear",
    "kappa_quadratic",
    "krippendorff_alpha",
    "spearman",
    "kendall_tau",
    "pearson",
    "macro_f1",
    "balanced_accuracy",
    "roc_auc",
)
# above this many distinct values on a side, ordinal scores are treated as continuous
MAX_CATEGORIES = 30
_CLASS_METRICS = ("cohen_kappa", "krippendorff_alpha", "macro_f1", "balanced_accuracy")


@dataclass(frozen=True)
class Design:
    """What is being compared and how: the value grids of each side and the statistics that apply.

    ``human_grid``/``judge_grid`` are the sorted distinct values (codes for pairwise/nominal). When
    ``common`` is true both grids are the same, so category-based statistics (κ, ordinal α, F1) apply.
    For binary labels with a continuous judge score, ``auc_grid`` holds the score values for ROC AUC and
    the main table compares the labels with the thresholded score.
    """

    label_type: str
    metrics: tuple[str, ...]
    human_grid: np.ndarray
    judge_grid: np.ndarray
    common: bool
    alpha_level: str
    class_names: list[str] = field(default_factory=list)
    auc_grid: np.ndarray | None = None


def build_design(
    label_type: str, human: np.ndarray, judge: np.ndarray, judge_continuous: np.ndarray | None = None
) -> Design:
    """Choose grids and statistics for ``label_type`` given the (encoded) values of both sides."""
    union = np.unique(np.concatenate([human, judge]))
    if label_type == "pairwise":
        grid = np.arange(3, dtype=float)
        metrics = ("agreement_with_ties", "agreement_without_ties", *_CLASS_METRICS)
        return Design(label_type, metrics, grid, grid, True, "nominal", list(PAIRWISE_CLASSES))
    if label_type in ("nominal", "binary"):
        grid = union if label_type == "nominal" else np.array([0.0, 1.0])
        metrics: tuple[str, ...] = ("accuracy", *_CLASS_METRICS)
        auc_grid = None
        if label_type == "binary" and judge_continuous is not None:
            auc_grid = np.unique(judge_continuous)
            metrics = (*metrics, "roc_auc")
        names = [_fmt(v) for v in grid]
        return Design(label_type, metrics, grid, grid, True, "nominal", names, auc_grid)
    # ordinal: a discrete table only when both sides sit on (half-)points of a scale; probability-weighted
    # judge scores (logprob mode, e.g. 3.72) are continuous however few items there are
    on_points = bool(np.all(judge * 2 == np.round(judge * 2)))
    if len(union) <= MAX_CATEGORIES and on_points:
        metrics = ("accuracy", "within_1", "mae", "cohen_kappa", "kappa_linear", "kappa_quadratic")
        metrics += ("krippendorff_alpha", "spearman", "kendall_tau", "pearson")
        return Design(label_type, metrics, union, union, True, "ordinal", [_fmt(v) for v in union])
    metrics = ("within_1", "mae", "krippendorff_alpha", "spearman", "kendall_tau", "pearson")
    return Design(label_type, metrics, np.unique(human), np.unique(judge), False, "interval")


def _fmt(value: float) -> str:
    return f"{value:g}"


def encode_cells(design: Design, human: np.ndarray, judge: np.ndarray) -> np.ndarray:
    """Cell index (row = human value, column = judge value) of each pair in the design's table."""
    hy = np.searchsorted(design.human_grid, human)
    hp = np.searchsorted(design.judge_grid, judge)
    return hy * len(design.judge_grid) + hp


def encode_auc_cells(design: Design, human: np.ndarray, judge_continuous: np.ndarray) -> np.ndarray:
    """Cell index in the (label × continuous score) table used for ROC AUC."""
    assert design.auc_grid is not None  # internal invariant, not an input check
    return human.astype(int) * len(design.auc_grid) + np.searchsorted(design.auc_grid, judge_continuous)


# --------------------------------------------------------------------------------------------- point


def point_estimates(
    design: Design, human: np.ndarray, judge: np.ndarray, judge_continuous: np.ndarray | None = None
) -> dict[str, float]:
    """Every statistic of the design on the full sample, from scikit-learn, scipy and ``krippendorff``.

    Undefined statistics (a constant side, a single class) are NaN rather than an exception.
    """
    out: dict[str, float] = {}
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        # constant inputs and single classes make some statistics undefined; they come back as NaN
        warnings.simplefilter("ignore")
        hi = np.searchsorted(design.human_grid, human) if design.common else None
        ji = np.searchsorted(design.judge_grid, judge) if design.common else None
        labels = list(range(len(design.human_grid)))
        for name in design.metrics:
            out[name] = float(_point(name, design, human, judge, hi, ji, labels, judge_continuous))
    return out


def _point(
    name: str,
    design: Design,
    human: np.ndarray,
    judge: np.ndarray,
    hi: np.ndarray | None,
    ji: np.ndarray | None,
    labels: list[int],
    judge_continuous: np.ndarray | None,
) -> float:
    if name in ("accuracy", "agreement_with_ties"):
        # grid indices, not values: scikit-learn refuses half-point medians as "continuous"
        return float(accuracy_score(hi, ji)) if hi is not None else float(np.mean(human == judge))
    if name == "agreement_without_ties":
        keep = (human != 2) & (judge != 2)
        return float(accuracy_score(human[keep], judge[keep])) if keep.any() else float("nan")
    if name == "within_1":
        return float(np.mean(np.abs(human - judge) <= 1 + 1e-9))
    if name == "mae":
        return float(mean_absolute_error(human, judge))
    if name in ("cohen_kappa", "kappa_linear", "kappa_quadratic"):
        weights = {"cohen_kappa": None, "kappa_linear": "linear", "kappa_quadratic": "quadratic"}[name]
        return float(cohen_kappa_score(hi, ji, labels=labels, weights=weights))
    if name == "krippendorff_alpha":
        data = np.vstack([human, judge]).astype(float)
        domain = design.human_grid if design.common else None
        if len(np.unique(data)) < 2:
            return float("nan")
        return float(
            krippendorff.alpha(reliability_data=data, level_of_measurement=design.alpha_level, value_domain=domain)
        )
    if name == "spearman":
        return float(stats.spearmanr(human, judge).statistic)
    if name == "kendall_tau":
        return float(stats.kendalltau(human, judge).statistic)
    if name == "pearson":
        if np.ptp(human) == 0 or np.ptp(judge) == 0:
            return float("nan")
        return float(stats.pearsonr(human, judge).statistic)
    if name == "macro_f1":
        return float(f1_score(hi, ji, average="macro", zero_division=0))
    if name == "balanced_accuracy":
        return float(balanced_accuracy_score(hi, ji))
    if name == "roc_auc":
        if judge_continuous is None or len(np.unique(human)) < 2:
            return float("nan")
        return float(roc_auc_score(human, judge_continuous))
    raise KeyError(name)


# --------------------------------------------------------------------------------------------- tables


def table_estimates(design: Design, table: np.ndarray, auc_table: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The design's statistics for a batch of count tables ``(b, n_human_values, n_judge_values)``.

    Each row of the batch is one bootstrap resample; the results are arrays of length ``b`` (NaN where a
    statistic is undefined for that resample).
    """
    t = table.astype(float)
    vy = design.human_grid.astype(float)
    vp = design.judge_grid.astype(float)
    with np.errstate(all="ignore"):
        n = t.sum(axis=(1, 2))
        rows = t.sum(axis=2)
        cols = t.sum(axis=1)
        out: dict[str, np.ndarray] = {}
        for name in design.metrics:
            if name in ("accuracy", "agreement_with_ties"):
                same = vy[:, None] == vp[None, :]
                out[name] = (t * same).sum(axis=(1, 2)) / n
            elif name == "agreement_without_ties":
                sub = t[:, :2, :2]
                out[name] = (sub[:, 0, 0] + sub[:, 1, 1]) / sub.sum(axis=(1, 2))
            elif name == "within_1":
                close = np.abs(vy[:, None] - vp[None, :]) <= 1 + 1e-9
                out[name] = (t * close).sum(axis=(1, 2)) / n
            elif name == "mae":
                out[name] = (t * np.abs(vy[:, None] - vp[None, :])).sum(axis=(1, 2)) / n
            elif name in ("cohen_kappa", "kappa_linear", "kappa_quadratic"):
                out[name] = _kappa(t, rows, cols, n, name)
            elif name == "krippendorff_alpha":
                out[name] = _alpha(design, t, rows, cols, n, vy, vp)
            elif name == "pearson":
                out[name] = _weighted_corr(t, rows, cols, n, vy, vp)
            elif name == "spearman":
                out[name] = _weighted_corr(t, rows, cols, n, _midranks(rows), _midranks(cols))
            elif name == "kendall_tau":
                out[name] = _kendall_tau_b(t, rows, cols, n)
            elif name == "macro_f1":
                diag = np.diagonal(t, axis1=1, axis2=2)
                present = (rows + cols) > 0
                f1 = np.where(present, 2 * diag / (rows + cols), 0.0)
                out[name] = f1.sum(axis=1) / present.sum(axis=1)
            elif name == "balanced_accuracy":
                diag = np.diagonal(t, axis1=1, axis2=2)
                present = rows > 0
                recall = np.where(present, diag / rows, 0.0)
                out[name] = recall.sum(axis=1) / present.sum(axis=1)
            elif name == "roc_auc":
                out[name] = _auc(auc_table.astype(float)) if auc_table is not None else np.full(len(t), np.nan)
    return out


def _kappa(t: np.ndarray, rows: np.ndarray, cols: np.ndarray, n: np.ndarray, name: str) -> np.ndarray:
    k = t.shape[1]
    i = np.arange(k)
    if name == "cohen_kappa":
        w = (i[:, None] != i[None, :]).astype(float)
    elif name == "kappa_linear":
        w = np.abs(i[:, None] - i[None, :]).astype(float)
    else:
        w = ((i[:, None] - i[None, :]) ** 2).astype(float)
    expected = rows[:, :, None] * cols[:, None, :] / n[:, None, None]
    return 1 - (t * w).sum(axis=(1, 2)) / (expected * w).sum(axis=(1, 2))


def _alpha(
    design: Design, t: np.ndarray, rows: np.ndarray, cols: np.ndarray, n: np.ndarray, vy: np.ndarray, vp: np.ndarray
) -> np.ndarray:
    # Two coders, every unit rated by both: each unit adds its two ordered value pairs to the
    # coincidence matrix o, and there are 2N pairable values in all.
    total = 2 * n
    if design.alpha_level == "interval":
        d_obs = 2 * (t * (vy[:, None] - vp[None, :]) ** 2).sum(axis=(1, 2))
        mean = ((rows * vy).sum(axis=1) + (cols * vp).sum(axis=1)) / total
        ss = (rows * (vy[None, :] - mean[:, None]) ** 2).sum(axis=1) + (cols * (vp[None, :] - mean[:, None]) ** 2).sum(
            axis=1
        )
        d_exp = 2 * total * ss
        return 1 - (total - 1) * d_obs / d_exp
    o = t + np.transpose(t, (0, 2, 1))
    nc = o.sum(axis=2)
    k = o.shape[1]
    if design.alpha_level == "nominal":
        delta = np.broadcast_to((np.arange(k)[:, None] != np.arange(k)[None, :]).astype(float), o.shape)
    else:  # ordinal: squared count of values between c and k, halving the two ends
        cum = np.cumsum(nc, axis=1)
        prev = cum - nc
        span = np.maximum(cum[:, :, None], cum[:, None, :]) - np.minimum(prev[:, :, None], prev[:, None, :])
        delta = (span - (nc[:, :, None] + nc[:, None, :]) / 2) ** 2
    d_obs = (o * delta).sum(axis=(1, 2))
    d_exp = (nc[:, :, None] * nc[:, None, :] * delta).sum(axis=(1, 2))
    return 1 - (total - 1) * d_obs / d_exp


def _midranks(counts: np.ndarray) -> np.ndarray:
    """Average rank of each grid value given its count in each resample (ties share their mean rank)."""
    return np.cumsum(counts, axis=1) - counts + (counts + 1) / 2


def _weighted_corr(
    t: np.ndarray, rows: np.ndarray, cols: np.ndarray, n: np.ndarray, x: np.ndarray, y: np.ndarray
) -> np.ndarray:
    x = np.broadcast_to(x, rows.shape)
    y = np.broadcast_to(y, cols.shape)
    mx = (rows * x).sum(axis=1) / n
    my = (cols * y).sum(axis=1) / n
    sxy = np.einsum("bij,bi,bj->b", t, x, y) / n - mx * my
    sxx = (rows * x * x).sum(axis=1) / n - mx**2
    syy = (cols * y * y).sum(axis=1) / n - my**2
    denom = np.sqrt(sxx * syy)
    # a constant side (variance at rounding level) has no correlation
    tiny = 1e-12 * (np.abs(mx) + np.abs(my) + 1) ** 2
    return np.where((sxx > tiny) & (syy > tiny), sxy / denom, np.nan)


def _kendall_tau_b(t: np.ndarray, rows: np.ndarray, cols: np.ndarray, n: np.ndarray) -> np.ndarray:
    # later[b, i, j] = count of pairs with human value > i and judge value > j, and so on
    rev = t[:, ::-1, ::-1].cumsum(axis=1).cumsum(axis=2)[:, ::-1, ::-1]
    above_above = np.zeros_like(t)
    above_above[:, :-1, :-1] = rev[:, 1:, 1:]
    down_fwd = t[:, ::-1, :].cumsum(axis=1)[:, ::-1, :].cumsum(axis=2)
    above_below = np.zeros_like(t)
    above_below[:, :-1, 1:] = down_fwd[:, 1:, :-1]
    concordant = (t * above_above).sum(axis=(1, 2))
    discordant = (t * above_below).sum(axis=(1, 2))
    n0 = n * (n - 1) / 2
    n1 = (rows * (rows - 1) / 2).sum(axis=1)
    n2 = (cols * (cols - 1) / 2).sum(axis=1)
    return (concordant - discordant) / np.sqrt((n0 - n1) * (n0 - n2))


def _auc(t: np.ndarray) -> np.ndarray:
    neg, pos = t[:, 0, :], t[:, 1, :]
    neg_below = np.cumsum(neg, axis=1) - neg
    wins = (pos * (neg_below + neg / 2)).sum(axis=1)
    return wins / (pos.sum(axis=1) * neg.sum(axis=1))


def confusion(design: Design, human: np.ndarray, judge: np.ndarray) -> np.ndarray:
    """Counts with rows = human value, columns = judge value, on the design's grids."""
    cells = encode_cells(design, human, judge)
    size = len(design.human_grid) * len(design.judge_grid)
    return np.bincount(cells, minlength=size).reshape(len(design.human_grid), len(design.judge_grid))
