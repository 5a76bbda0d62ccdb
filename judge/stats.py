"""Resampling primitives shared by calibration and ``judge eval``: one bootstrap, written once.

A resample is a row of item indices drawn with replacement. Callers turn a batch of rows into
statistics their own way (calibration re-counts contingency tables; ``judge eval`` averages
per-item scores or re-sums corpus statistics), but every interval in the project is drawn from
:func:`resample_indices` (items) or :func:`resample_weights` (items, or whole groups: the cluster
bootstrap) and summarised by :func:`percentile_ci` or :func:`bca_ci` (:func:`resolve_ci_method` picks).
Two closed-form intervals serve the quick summaries that have no resampling behind them: :func:`wilson`
for a share and :func:`spearman_ci` (Fisher z) for a rank correlation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def resample_indices(n_items: int, n_boot: int, seed: int) -> np.ndarray:
    """The (n_boot, n_items) matrix of item indices drawn with replacement, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_items, size=(n_boot, n_items), dtype=np.int64)


def resample_counts(idx: np.ndarray, n_items: int) -> np.ndarray:
    """How often each item appears in each resample: a (n_boot, n_items) float matrix.

    ``counts @ values / n`` is the resampled mean of ``values``; ``counts @ stats`` re-sums per-item
    sufficient statistics (corpus BLEU's n-gram counts) without touching the items again.
    """
    b, n = idx.shape
    offset = (np.arange(b, dtype=np.int64) * n_items)[:, None] + idx
    return np.bincount(offset.ravel(), minlength=b * n_items).reshape(b, n_items).astype(float)


def percentile_ci(replicates: np.ndarray, level: float = 0.95) -> tuple[float | None, float | None]:
    """The percentile interval of the finite replicates (None, None when there are none)."""
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return None, None
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(finite, [tail, 100 - tail])
    return float(lo), float(hi)


# ------------------------------------------------------------------------------------------------ groups


def group_codes(groups: np.ndarray | list[object]) -> tuple[np.ndarray, int]:
    """Each item's group as a code 0..g-1 (in order of first appearance) and the number of groups g."""
    _, first, codes = np.unique(np.asarray(groups, dtype=object).astype(str), return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))  # renumber so that codes follow first appearance
    return order[codes.ravel()].astype(np.int64), len(first)


def resample_weights(n_items: int, n_boot: int, seed: int, groups: np.ndarray | None = None) -> np.ndarray:
    """How often each item appears in each resample, (n_boot, n_items): items drawn with replacement, or,
    with ``groups`` (each item's group code, see :func:`group_codes`), whole groups drawn with replacement
    and every item of a drawn group taken with it (the cluster bootstrap)."""
    if groups is None:
        return resample_counts(resample_indices(n_items, n_boot, seed), n_items)
    n_groups = int(groups.max()) + 1
    return resample_counts(resample_indices(n_groups, n_boot, seed), n_groups)[:, groups]


def leave_one_out_sums(stats: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """Per-item sufficient statistics ``stats`` (n_items, k) summed over everything but one unit: row u
    is the total without unit u (an item, or with ``groups`` a whole group). The jackknife of any
    statistic that is a function of these sums."""
    total = stats.sum(axis=0, keepdims=True)
    if groups is None:
        return total - stats
    per_group = np.zeros((int(groups.max()) + 1, stats.shape[1]))
    np.add.at(per_group, groups, stats)
    return total - per_group


# ------------------------------------------------------------------------------------------------ intervals

CI_METHODS = ("auto", "percentile", "bca")
# below this many resampling units (items, or groups), "auto" uses BCa; see VALIDITY.md for the coverage
BCA_BELOW = 100


def resolve_ci_method(method: str, n_units: int) -> str:
    """The interval method actually used: ``percentile`` or ``bca`` (``auto``: BCa below BCA_BELOW units)."""
    if method not in CI_METHODS:
        raise ValueError(f"ci method must be one of {', '.join(CI_METHODS)}, not {method!r}")
    if method == "auto":
        return "bca" if n_units < BCA_BELOW else "percentile"
    return method


def bca_ci(
    replicates: np.ndarray,
    estimate: float,
    jackknife: np.ndarray,
    level: float = 0.95,
    weights: np.ndarray | None = None,
) -> tuple[float | None, float | None]:
    """The bias-corrected and accelerated (BCa) interval of Efron (1987), as ``scipy.stats.bootstrap`` computes it.

    ``replicates`` are the bootstrap values, ``estimate`` the statistic on the full sample and ``jackknife``
    its leave-one-unit-out values (``weights``: how many units share each jackknife value, so identical
    leave-one-out samples are computed once). Falls back to the percentile interval where the correction
    is undefined (a non-finite estimate, or every replicate on one side of it).
    """
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return None, None
    if not np.isfinite(estimate):
        return percentile_ci(finite, level)
    from scipy.special import ndtr, ndtri  # scipy is a dependency; kept off judge's import path

    below = ((finite < estimate).sum() + (finite <= estimate).sum()) / (2 * finite.size)
    z0 = float(ndtri(below))
    w = np.ones(len(jackknife)) if weights is None else np.asarray(weights, dtype=float)
    ok = np.isfinite(jackknife)
    acc = 0.0
    if ok.sum() >= 2:
        jk, w = jackknife[ok], w[ok]
        dev = np.average(jk, weights=w) - jk
        denom = 6 * (w * dev**2).sum() ** 1.5
        acc = float((w * dev**3).sum() / denom) if denom > 0 else 0.0
    if not np.isfinite(z0):
        return percentile_ci(finite, level)
    z = ndtri(np.array([(1 - level) / 2, (1 + level) / 2]))
    alphas = ndtr(z0 + (z0 + z) / (1 - acc * (z0 + z)))
    if not np.all(np.isfinite(alphas)):
        return percentile_ci(finite, level)
    lo, hi = np.percentile(finite, alphas * 100)
    return float(lo), float(hi)


def safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` elementwise, 0 where ``den`` is 0."""
    out = np.zeros(np.broadcast(num, den).shape, dtype=float)
    np.divide(num, den, out=out, where=den > 0)
    return out


def macro_f1(cm: np.ndarray, classes: np.ndarray | None = None) -> np.ndarray:
    """Macro-averaged F1 of a (C, C) confusion matrix or a (B, C, C) batch (gold in rows, prediction in
    columns): the mean of 2 TP / (gold + predicted) over the classes that occur as gold or prediction and
    are among ``classes`` (a (C,) mask; default all), the classes sklearn's ``f1_score(average="macro")``
    averages over. NaN where no class occurs."""
    cm = np.asarray(cm, dtype=float)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    occurs = cm.sum(axis=-1) + cm.sum(axis=-2)
    present = (occurs > 0) if classes is None else (occurs > 0) & classes
    n_present = present.sum(axis=-1)
    return safe_div((safe_div(2 * tp, occurs) * present).sum(axis=-1), n_present) + np.where(n_present > 0, 0.0, np.nan)


def balanced_accuracy(cm: np.ndarray) -> np.ndarray:
    """Balanced accuracy of a (C, C) confusion matrix or a (B, C, C) batch (gold in rows): the mean recall
    over the classes that occur as gold. NaN where none does."""
    cm = np.asarray(cm, dtype=float)
    support = cm.sum(axis=-1)
    has_support = support > 0
    recall = safe_div(np.diagonal(cm, axis1=-2, axis2=-1), support)
    n_support = has_support.sum(axis=-1)
    return safe_div((recall * has_support).sum(axis=-1), n_support) + np.where(n_support > 0, 0.0, np.nan)


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's ρ (average ranks for ties); None with fewer than 3 pairs or a constant side."""
    if len(x) < 3:
        return None
    from scipy.stats import rankdata

    rx, ry = rankdata(x), rankdata(y)
    if np.std(rx) == 0 or np.std(ry) == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


Z95 = 1.959963984540054
"""The standard normal's 97.5th percentile: the z of a two-sided 95% interval."""


def wilson(share: float | None, n: int, z: float = Z95) -> tuple[float | None, float | None]:
    """The Wilson score interval (95%) of a share of ``n``; (None, None) when undefined."""
    if share is None or n <= 0:
        return None, None
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def spearman_ci(
    x: Sequence[float], y: Sequence[float], z: float = Z95
) -> tuple[float | None, float | None, float | None]:
    """Spearman's ρ and its 95% interval by Fisher's z with the Bonett & Wright (2000) variance for Spearman,
    ``tanh(atanh(ρ) ± z·sqrt((1 + ρ²/2) / (n − 3)))``: closed-form, no seed, cheap enough for every cell of a
    report grid. (ρ, None, None) with fewer than 4 pairs; (None, None, None) where ρ is undefined."""
    rho = spearman(x, y)
    n = len(x)
    if rho is None or n < 4:
        return rho, None, None
    if abs(rho) > 1 - 1e-12:  # a perfect ranking (up to rounding): the interval collapses onto it
        return rho, rho, rho
    half = z * math.sqrt((1 + rho * rho / 2) / (n - 3))
    centre = math.atanh(rho)
    return rho, math.tanh(centre - half), math.tanh(centre + half)
