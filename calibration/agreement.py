"""Agreement statistics between a judge and human labels, computed two ways.

Every statistic is one :class:`Statistic` row of :data:`STATISTICS`: its name, display label, the label
types it applies to, whether it needs both sides on one value grid, its direction and range, and the two
ways of computing it:

* ``point`` computes it once on the joined arrays with the libraries people trust (scikit-learn, scipy,
  the ``krippendorff`` package): these are the reported values (:func:`point_estimates`).
* ``table`` computes it from contingency tables, vectorised over a batch of tables (one per bootstrap
  resample; :func:`table_estimates`). Every statistic here -- κ, α, Spearman, Kendall τ-b, ROC AUC
  included -- is a function of the (human value × judge value) count table, so a resample never needs
  its items re-sorted: only re-counted. The tests check that the two agree on the full sample.

Which statistics apply depends on the label type and the grids (:func:`build_design`); ones that do not
apply are omitted from the report. The report lists them in table order (:data:`METRIC_ORDER`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

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
from judge.stats import balanced_accuracy, macro_f1

# above this many distinct values on a side, ordinal scores are treated as continuous
MAX_CATEGORIES = 30


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
    alpha_level: Literal["nominal", "ordinal", "interval", "ratio"]
    class_names: list[str] = field(default_factory=list)
    auc_grid: np.ndarray | None = None


@dataclass(frozen=True)
class Sample:
    """The joined arrays a point estimate sees: both sides' values and, on a common grid, their indices."""

    design: Design
    human: np.ndarray
    judge: np.ndarray
    judge_continuous: np.ndarray | None
    hi: np.ndarray | None  # grid index of each human value (common grid only)
    ji: np.ndarray | None  # grid index of each judge value (common grid only)

    @property
    def labels(self) -> list[int]:
        return list(range(len(self.design.human_grid)))


@dataclass(frozen=True)
class Tables:
    """A batch of count tables ``t`` (b, n_human_values, n_judge_values) and their margins, as floats."""

    design: Design
    t: np.ndarray
    rows: np.ndarray  # (b, n_human_values)
    cols: np.ndarray  # (b, n_judge_values)
    n: np.ndarray  # (b,)
    vy: np.ndarray  # the human grid's values
    vp: np.ndarray  # the judge grid's values
    auc: np.ndarray | None  # (b, 2, n_scores) label × continuous score counts, for ROC AUC


@dataclass(frozen=True)
class Statistic:
    """One agreement statistic: what it is, where it applies, and its two computations.

    ``point`` is the reported value from a trusted library on the joined arrays; ``table`` is the same
    value, vectorised, for a batch of count tables (one per bootstrap resample). It applies to a design
    when the label type is one of ``label_types``, both sides share one grid if ``needs_common_grid``,
    and a continuous judge score is there if ``needs_score``.
    """

    name: str  # the report's key (part of the JSON contract: never renamed)
    label: str  # display name
    label_types: frozenset[str]
    point: Callable[[Sample], float]
    table: Callable[[Tables], np.ndarray]
    needs_common_grid: bool = True  # compares categories: both sides must be on the same value grid
    needs_score: bool = False  # needs the judge's continuous score (ROC AUC)
    higher_is_better: bool = True
    range: tuple[float, float] = (-1.0, 1.0)  # the values it can take (κ, α: 0 = chance, below = worse)

    def applies(self, label_type: str, common: bool, has_score: bool = False) -> bool:
        return (
            label_type in self.label_types
            and (common or not self.needs_common_grid)
            and (has_score or not self.needs_score)
        )


# ------------------------------------------------------------------------------------ the statistics
# each statistic's point (library) and table (vectorised) computation, side by side


def _p_accuracy(s: Sample) -> float:
    # grid indices, not values: scikit-learn refuses half-point medians as "continuous"
    return float(accuracy_score(s.hi, s.ji)) if s.hi is not None else float(np.mean(s.human == s.judge))


def _t_accuracy(tb: Tables) -> np.ndarray:
    same = tb.vy[:, None] == tb.vp[None, :]
    return (tb.t * same).sum(axis=(1, 2)) / tb.n


def _p_agreement_without_ties(s: Sample) -> float:
    keep = (s.human != 2) & (s.judge != 2)
    return float(accuracy_score(s.human[keep], s.judge[keep])) if keep.any() else float("nan")


def _t_agreement_without_ties(tb: Tables) -> np.ndarray:
    sub = tb.t[:, :2, :2]
    return (sub[:, 0, 0] + sub[:, 1, 1]) / sub.sum(axis=(1, 2))


def _p_within_1(s: Sample) -> float:
    return float(np.mean(np.abs(s.human - s.judge) <= 1 + 1e-9))


def _t_within_1(tb: Tables) -> np.ndarray:
    close = np.abs(tb.vy[:, None] - tb.vp[None, :]) <= 1 + 1e-9
    return (tb.t * close).sum(axis=(1, 2)) / tb.n


def _p_mae(s: Sample) -> float:
    return float(mean_absolute_error(s.human, s.judge))


def _t_mae(tb: Tables) -> np.ndarray:
    return (tb.t * np.abs(tb.vy[:, None] - tb.vp[None, :])).sum(axis=(1, 2)) / tb.n


def _p_kappa(s: Sample, weights: str | None) -> float:
    return float(cohen_kappa_score(s.hi, s.ji, labels=s.labels, weights=weights))


def _t_kappa(tb: Tables, weights: str | None) -> np.ndarray:
    k = tb.t.shape[1]
    i = np.arange(k)
    if weights is None:
        w = (i[:, None] != i[None, :]).astype(float)
    elif weights == "linear":
        w = np.abs(i[:, None] - i[None, :]).astype(float)
    else:
        w = ((i[:, None] - i[None, :]) ** 2).astype(float)
    expected = tb.rows[:, :, None] * tb.cols[:, None, :] / tb.n[:, None, None]
    return 1 - (tb.t * w).sum(axis=(1, 2)) / (expected * w).sum(axis=(1, 2))


#: distinct values above which interval α is computed in closed form: ``krippendorff`` builds a values x values
#: matrix (3,005 distinct continuous judge scores asked it for 202 GiB)
ALPHA_DIRECT_ABOVE = 200


def interval_alpha(a: np.ndarray, b: np.ndarray) -> float:
    """Krippendorff's interval α of two coders who both rated every unit, in closed form: with N units and
    all 2N values pairable, D_o = mean (a - b)^2 and D_e = 2 sum (v - mean v)^2 / (2N - 1)."""
    values = np.concatenate([a, b])
    observed = float(np.mean((a - b) ** 2))
    expected = 2 * float(np.sum((values - values.mean()) ** 2)) / (len(values) - 1)
    return 1 - observed / expected


def _p_alpha(s: Sample) -> float:
    data = np.vstack([s.human, s.judge]).astype(float)
    domain = s.design.human_grid if s.design.common else None
    distinct = len(np.unique(data))
    if distinct < 2:
        return float("nan")
    if s.design.alpha_level == "interval" and distinct > ALPHA_DIRECT_ABOVE:
        return interval_alpha(data[0], data[1])
    return float(
        krippendorff.alpha(reliability_data=data, level_of_measurement=s.design.alpha_level, value_domain=domain)
    )


def _t_alpha(tb: Tables) -> np.ndarray:
    # Two coders, every unit rated by both: each unit adds its two ordered value pairs to the
    # coincidence matrix o, and there are 2N pairable values in all.
    t, rows, cols, n, vy, vp = tb.t, tb.rows, tb.cols, tb.n, tb.vy, tb.vp
    total = 2 * n
    if tb.design.alpha_level == "interval":
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
    if tb.design.alpha_level == "nominal":
        delta = np.broadcast_to((np.arange(k)[:, None] != np.arange(k)[None, :]).astype(float), o.shape)
    else:  # ordinal: squared count of values between c and k, halving the two ends
        cum = np.cumsum(nc, axis=1)
        prev = cum - nc
        span = np.maximum(cum[:, :, None], cum[:, None, :]) - np.minimum(prev[:, :, None], prev[:, None, :])
        delta = (span - (nc[:, :, None] + nc[:, None, :]) / 2) ** 2
    d_obs = (o * delta).sum(axis=(1, 2))
    d_exp = (nc[:, :, None] * nc[:, None, :] * delta).sum(axis=(1, 2))
    return 1 - (total - 1) * d_obs / d_exp


def _p_spearman(s: Sample) -> float:
    return float(stats.spearmanr(s.human, s.judge).statistic)


def _t_spearman(tb: Tables) -> np.ndarray:
    return _weighted_corr(tb.t, tb.rows, tb.cols, tb.n, _midranks(tb.rows), _midranks(tb.cols))


def _p_kendall_tau(s: Sample) -> float:
    return float(stats.kendalltau(s.human, s.judge).statistic)


def _t_kendall_tau(tb: Tables) -> np.ndarray:
    return _kendall_tau_b(tb.t, tb.rows, tb.cols, tb.n)


def _p_pearson(s: Sample) -> float:
    if np.ptp(s.human) == 0 or np.ptp(s.judge) == 0:
        return float("nan")
    return float(stats.pearsonr(s.human, s.judge).statistic)


def _t_pearson(tb: Tables) -> np.ndarray:
    return _weighted_corr(tb.t, tb.rows, tb.cols, tb.n, tb.vy, tb.vp)


def _p_macro_f1(s: Sample) -> float:
    return float(f1_score(s.hi, s.ji, average="macro", zero_division=0))


def _t_macro_f1(tb: Tables) -> np.ndarray:
    return macro_f1(tb.t)


def _p_balanced_accuracy(s: Sample) -> float:
    return float(balanced_accuracy_score(s.hi, s.ji))


def _t_balanced_accuracy(tb: Tables) -> np.ndarray:
    return balanced_accuracy(tb.t)


def _p_roc_auc(s: Sample) -> float:
    if s.judge_continuous is None or len(np.unique(s.human)) < 2:
        return float("nan")
    return float(roc_auc_score(s.human, s.judge_continuous))


def _t_roc_auc(tb: Tables) -> np.ndarray:
    return _auc(tb.auc.astype(float)) if tb.auc is not None else np.full(len(tb.t), np.nan)


def _kappa(weights: str | None) -> tuple[Callable[[Sample], float], Callable[[Tables], np.ndarray]]:
    return partial(_p_kappa, weights=weights), partial(_t_kappa, weights=weights)


_ALL = frozenset({"ordinal", "binary", "nominal", "pairwise"})
_CAT = frozenset({"binary", "nominal", "pairwise"})
_ORD = frozenset({"ordinal"})
_PAIR = frozenset({"pairwise"})
_UNIT = (0.0, 1.0)

# the one table of statistics; its order is the order of the report
STATISTICS: tuple[Statistic, ...] = (
    Statistic(
        "accuracy", "accuracy", frozenset({"ordinal", "binary", "nominal"}), _p_accuracy, _t_accuracy, range=_UNIT
    ),
    Statistic("agreement_with_ties", "agreement (ties count)", _PAIR, _p_accuracy, _t_accuracy, range=_UNIT),
    Statistic(
        "agreement_without_ties",
        "agreement (ties left out)",
        _PAIR,
        _p_agreement_without_ties,
        _t_agreement_without_ties,
        range=_UNIT,
    ),
    Statistic("within_1", "within 1 point", _ORD, _p_within_1, _t_within_1, needs_common_grid=False, range=_UNIT),
    Statistic(
        "mae",
        "mean absolute error",
        _ORD,
        _p_mae,
        _t_mae,
        needs_common_grid=False,
        higher_is_better=False,
        range=(0.0, math.inf),
    ),
    Statistic("cohen_kappa", "Cohen's κ", _ALL, *_kappa(None)),
    Statistic("kappa_linear", "linear-weighted κ", _ORD, *_kappa("linear")),
    Statistic("kappa_quadratic", "quadratic-weighted κ", _ORD, *_kappa("quadratic")),
    Statistic("krippendorff_alpha", "Krippendorff's α", _ALL, _p_alpha, _t_alpha, needs_common_grid=False),
    Statistic("spearman", "Spearman ρ", _ORD, _p_spearman, _t_spearman, needs_common_grid=False),
    Statistic("kendall_tau", "Kendall τ-b", _ORD, _p_kendall_tau, _t_kendall_tau, needs_common_grid=False),
    Statistic("pearson", "Pearson r", _ORD, _p_pearson, _t_pearson, needs_common_grid=False),
    Statistic("macro_f1", "macro F1", _CAT, _p_macro_f1, _t_macro_f1, range=_UNIT),
    Statistic("balanced_accuracy", "balanced accuracy", _CAT, _p_balanced_accuracy, _t_balanced_accuracy, range=_UNIT),
    Statistic(
        "roc_auc",
        "ROC AUC",
        frozenset({"binary"}),
        _p_roc_auc,
        _t_roc_auc,
        needs_common_grid=False,
        needs_score=True,
        range=_UNIT,
    ),
)
STATISTIC: dict[str, Statistic] = {s.name: s for s in STATISTICS}
METRIC_ORDER: tuple[str, ...] = tuple(STATISTIC)


def metrics_for(label_type: str, common: bool, has_score: bool = False) -> tuple[str, ...]:
    """The statistics that apply to ``label_type`` (on a common grid or not, with a continuous score or not)."""
    return tuple(s.name for s in STATISTICS if s.applies(label_type, common, has_score))


def build_design(
    label_type: str, human: np.ndarray, judge: np.ndarray, judge_continuous: np.ndarray | None = None
) -> Design:
    """Choose grids and statistics for ``label_type`` given the (encoded) values of both sides."""
    union = np.unique(np.concatenate([human, judge]))
    if label_type == "pairwise":
        grid = np.arange(3, dtype=float)
        metrics = metrics_for(label_type, True)
        return Design(label_type, metrics, grid, grid, True, "nominal", list(PAIRWISE_CLASSES))
    if label_type in ("nominal", "binary"):
        grid = union if label_type == "nominal" else np.array([0.0, 1.0])
        auc_grid = np.unique(judge_continuous) if label_type == "binary" and judge_continuous is not None else None
        metrics = metrics_for(label_type, True, has_score=auc_grid is not None)
        names = [_fmt(v) for v in grid]
        return Design(label_type, metrics, grid, grid, True, "nominal", names, auc_grid)
    # ordinal: a discrete table only when both sides sit on (half-)points of a scale; probability-weighted
    # judge scores (logprob mode, e.g. 3.72) are continuous however few items there are
    on_points = bool(np.all(judge * 2 == np.round(judge * 2)))
    if len(union) <= MAX_CATEGORIES and on_points:
        metrics = metrics_for(label_type, True)
        return Design(label_type, metrics, union, union, True, "ordinal", [_fmt(v) for v in union])
    metrics = metrics_for(label_type, False)
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


# ----------------------------------------------------------------------------------------- estimates


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
        sample = Sample(design, human, judge, judge_continuous, hi, ji)
        for name in design.metrics:
            out[name] = float(STATISTIC[name].point(sample))
    return out


def table_estimates(design: Design, table: np.ndarray, auc_table: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The design's statistics for a batch of count tables ``(b, n_human_values, n_judge_values)``.

    Each row of the batch is one bootstrap resample; the results are arrays of length ``b`` (NaN where a
    statistic is undefined for that resample).
    """
    t = table.astype(float)
    with np.errstate(all="ignore"):
        tables = Tables(
            design=design,
            t=t,
            rows=t.sum(axis=2),
            cols=t.sum(axis=1),
            n=t.sum(axis=(1, 2)),
            vy=design.human_grid.astype(float),
            vp=design.judge_grid.astype(float),
            auc=auc_table,
        )
        return {name: STATISTIC[name].table(tables) for name in design.metrics}


# ------------------------------------------------------------------------------ vectorised helpers


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
