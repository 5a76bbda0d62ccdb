"""Prediction-powered inference: many judge scores and a few human labels, one estimate of the *human* mean.

The judge scored every item of a pool; people labelled a subset. The judge-only mean carries the judge's
bias, and the labelled-only mean wastes the judge. PPI++ (Angelopoulos, Duchi & Zrnic 2023, "PPI++:
Efficient Prediction-Powered Inference") combines them::

    theta = lam * mean(f over unlabelled items) + mean(y - lam * f over labelled items)

which is unbiased for the human mean whatever the judge ``f`` is (the labelled items correct its bias), with
a normal 95 % interval from ``var = lam**2 var(f) / M + var(y - lam f) / n`` (``M`` unlabelled items, ``n``
labelled). ``lam`` is power-tuned: ``cov(y, f) / ((1 + n / M) var(f))`` clipped to 0..1, so the interval
is never wider than the labels-only one in the limit (``lam = 0`` *is* the labels-only estimate). The
conventions (the covariance over the labelled items with 1/n, var(f) over all items with 1/(N-1), standard
deviations with 1/n, the normal quantile) are those of the authors' ``ppi-python`` package, which the
tests compare against.

Extensions, all in one estimator (:func:`ppi_mean`):

* **strata**: labels drawn per stratum of the pool (``judge label plan``) -- each stratum gets its own
  PPI estimate, weighted by its share of the pool; one ``lam`` minimises the total variance;
* **groups**: items sharing an article or prompt are not independent: the variance is cluster-robust,
  summing each group's influence (labelled and unlabelled items of one group together) before squaring;
* **paired deltas** (:func:`ppi_delta`): the PPI estimate of ``mean(y_a - y_b)`` from ``f_a - f_b``, labels
  for both systems on the same subset of items;
* **another scale** (:func:`cross_fit_isotonic`): the judge's score mapped to the human scale through an
  isotonic fit on the labels, cross-fitted (each labelled item is mapped by a fit that did not see it; the
  unlabelled items by the average of the fold fits -- cross-prediction-powered inference, Zrnic & Candès
  2024), so the labels that fit the map do not also correct it (scikit-learn, imported when used).

Numpy only at import time: ``judge eval`` (labels in a suite) and ``judge calibrate`` both use it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, Field

from judge.errors import DataError

# PPI's interval needs a variance of the labelled residuals; below this many labels (per estimate) the
# power tuning and the isotonic map are noise, so we refuse rather than print a meaningless interval
MIN_LABELS = 10
# and at least this many labels in each stratum (a variance needs two)
MIN_PER_STRATUM = 2
Z95 = 1.959963984540054
MAPS = ("identity", "isotonic")


class Estimate(BaseModel):
    """A mean with its standard error and normal 95 % interval."""

    value: float
    se: float
    ci_low: float
    ci_high: float


class PPIResult(BaseModel):
    """The human-scale mean three ways, side by side, and what the judge scores were worth."""

    ppi: Estimate = Field(description="Prediction-powered (PPI++) estimate: judge scores corrected by the labels.")
    labelled_only: Estimate = Field(description="The labelled items' human mean alone.")
    judge_only: Estimate = Field(description="The judge's mean over every item (its bias included).")
    lam: float = Field(description="Power-tuning weight of the judge scores (0 = labels only, 1 = plain PPI).")
    n_labelled: int
    n_unlabelled: int
    n_strata: int = 1
    n_groups: int | None = Field(None, description="Clusters of the cluster-robust variance (None: items).")
    effective_labels: float = Field(
        description="How many labels alone would give the PPI interval's width: n * (se labelled-only / se PPI)^2."
    )
    mapping: str = Field("identity", description="How judge scores were put on the human scale.")


@dataclass(frozen=True)
class _Part:
    """One stratum: labelled y and f, unlabelled f, their groups, and the stratum's share of the pool."""

    y: np.ndarray
    f: np.ndarray
    fu: np.ndarray
    g: np.ndarray | None
    gu: np.ndarray | None
    w: float


def _estimate(value: float, se: float) -> Estimate:
    return Estimate(value=float(value), se=float(se), ci_low=float(value - Z95 * se), ci_high=float(value + Z95 * se))


def _se(contrib: list[np.ndarray], groups: list[np.ndarray] | None) -> float:
    """Standard error of a sum of centred per-item influences: squared per item, or per group when grouped
    (cluster-robust, with the G/(G-1) small-sample factor)."""
    a = np.concatenate(contrib)
    if groups is None:
        return float(np.sqrt(np.sum(a**2)))
    codes = np.unique(np.concatenate(groups), return_inverse=True)[1].ravel()
    sums = np.bincount(codes, weights=a)
    n_groups = len(sums)
    factor = n_groups / (n_groups - 1) if n_groups > 1 else 1.0
    return float(np.sqrt(factor * np.sum(sums**2)))


def _tuned_lambda(parts: list[_Part]) -> float:
    """The lam minimising the (stratified) PPI variance, clipped to 0..1."""
    num = den = 0.0
    for p in parts:
        n, m = len(p.y), len(p.fu)
        if m == 0:
            continue  # a stratum labelled in full: its estimate is its labels, whatever lam
        cov = float(np.mean((p.y - p.y.mean()) * (p.f - p.f.mean())))
        var_f = float(np.var(np.concatenate([p.f, p.fu]), ddof=1))
        num += p.w**2 * cov / n
        den += p.w**2 * var_f * (1 / n + 1 / m)
    if den <= 0:
        return 0.0
    return float(np.clip(num / den, 0.0, 1.0))


def _check(y: np.ndarray, f: np.ndarray, fu: np.ndarray, what: str) -> None:
    if len(y) != len(f):
        raise ValueError(f"{what}: {len(y)} labels but {len(f)} judge scores on the labelled items")
    for name, arr in (("labels", y), ("judge scores", f), ("unlabelled judge scores", fu)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{what}: {name} must be finite numbers")


def _strata(
    y: np.ndarray,
    f: np.ndarray,
    fu: np.ndarray,
    g: np.ndarray | None,
    gu: np.ndarray | None,
    strata: np.ndarray | None,
    strata_unlabelled: np.ndarray | None,
) -> list[_Part]:
    """The pool cut into its sampling strata, each weighted by its share of the pool (one part without strata);
    a stratum with fewer than :data:`MIN_PER_STRATUM` labels is a :class:`DataError`."""
    if strata is None:
        return [_Part(y, f, fu, g, gu, 1.0)]
    s = np.asarray(strata).astype(str)
    su = np.asarray(strata_unlabelled if strata_unlabelled is not None else []).astype(str)
    if len(s) != len(y) or len(su) != len(fu):
        raise ValueError("strata must be given for the labelled and the unlabelled items alike")
    total = len(y) + len(fu)
    parts = []
    for h in sorted(set(s) | set(su)):
        lab, unl = s == h, su == h
        if lab.sum() < MIN_PER_STRATUM:
            raise DataError(
                f"stratum '{h}' has {int(lab.sum())} labelled item(s); each stratum needs at least "
                f"{MIN_PER_STRATUM} for its variance"
            )
        parts.append(
            _Part(
                y[lab],
                f[lab],
                fu[unl],
                None if g is None else g[lab],
                None if gu is None else gu[unl],
                float((lab.sum() + unl.sum()) / total),
            )
        )
    return parts


def _combine(parts: list[_Part], lam: float, grouped: bool) -> tuple[tuple[float, float], tuple[float, float]]:
    """(value, standard error) of the PPI estimate with weight ``lam`` and of the labelled-only estimate: the
    strata's estimates weighted by their shares (a stratum labelled in full uses its labels alone), the errors
    from the per-item influences (per group when ``grouped``)."""
    value = lab_value = 0.0
    ppi_terms: list[np.ndarray] = []
    lab_terms: list[np.ndarray] = []
    groups_ppi: list[np.ndarray] = []
    groups_lab: list[np.ndarray] = []
    for p in parts:
        n, m = len(p.y), len(p.fu)
        lam_h = lam if m > 0 else 0.0
        resid = p.y - lam_h * p.f
        value += p.w * ((lam_h * p.fu.mean() if m else 0.0) + resid.mean())
        lab_value += p.w * p.y.mean()
        ppi_terms += [p.w * (resid - resid.mean()) / n]
        lab_terms += [p.w * (p.y - p.y.mean()) / n]
        if m:
            ppi_terms += [p.w * lam_h * (p.fu - p.fu.mean()) / m]
        if p.g is not None and p.gu is not None:
            groups_ppi += [p.g, p.gu] if m else [p.g]
            groups_lab += [p.g]
    se_ppi = _se(ppi_terms, groups_ppi if grouped else None)
    se_lab = _se(lab_terms, groups_lab if grouped else None)
    return (value, se_ppi), (lab_value, se_lab)


def ppi_mean(
    y: np.ndarray,
    f: np.ndarray,
    f_unlabelled: np.ndarray,
    *,
    lam: float | None = None,
    strata: np.ndarray | None = None,
    strata_unlabelled: np.ndarray | None = None,
    groups: np.ndarray | None = None,
    groups_unlabelled: np.ndarray | None = None,
    mapping: str = "identity",
    seed: int = 0,
    min_labels: int = MIN_LABELS,
) -> PPIResult:
    """The PPI++ estimate of the human mean, beside the labelled-only and judge-only estimates.

    ``y``, ``f``: human value and judge score of the labelled items; ``f_unlabelled``: judge scores of the
    rest of the pool. ``strata``/``strata_unlabelled``: each item's sampling stratum (labels drawn per
    stratum); ``groups``/``groups_unlabelled``: each item's cluster. ``lam`` fixes the power-tuning weight
    (None: tuned). ``mapping="isotonic"`` first puts the judge scores on the human scale with
    :func:`cross_fit_isotonic` (folds drawn from ``seed``, whole groups with ``groups``); the judge-only
    estimate is then the mean of the mapped scores. Raises :class:`DataError` with fewer than ``min_labels``
    labels or a stratum with fewer than two.
    """
    y, f, fu = (np.asarray(a, dtype=float) for a in (y, f, f_unlabelled))
    _check(y, f, fu, "ppi_mean")
    if len(y) < min_labels:
        raise DataError(
            f"prediction-powered estimates need at least {min_labels} labelled items with a judge score "
            f"(the interval needs the variance of the labels' corrections); got {len(y)}"
        )
    if mapping not in MAPS and mapping != "isotonic (per system)":  # the latter: mapped by ppi_delta already
        raise ValueError(f"mapping must be one of {', '.join(MAPS)}, not {mapping!r}")
    if mapping == "isotonic":
        f, fu = cross_fit_isotonic(f, y, fu, groups=groups, seed=seed)
    grouped = groups is not None or groups_unlabelled is not None
    g = None if groups is None else np.asarray(groups).astype(str)
    gu = None if groups_unlabelled is None else np.asarray(groups_unlabelled).astype(str)
    if grouped and (g is None or gu is None or len(g) != len(y) or len(gu) != len(fu)):
        raise ValueError("groups must be given for the labelled and the unlabelled items alike")
    parts = _strata(y, f, fu, g, gu, strata, strata_unlabelled)
    lam_used = _tuned_lambda(parts) if lam is None else float(lam)
    (value, se_ppi), (lab_value, se_lab) = _combine(parts, lam_used, grouped)

    f_all = np.concatenate([f, fu])
    judge_groups = [np.concatenate([g, gu])] if g is not None and gu is not None else None
    se_judge = _se([(f_all - f_all.mean()) / len(f_all)], judge_groups)
    n_groups = len(set(np.concatenate([g, gu]))) if g is not None and gu is not None else None
    effective = len(y) * (se_lab / se_ppi) ** 2 if se_ppi > 0 else float("inf")
    return PPIResult(
        ppi=_estimate(value, se_ppi),
        labelled_only=_estimate(lab_value, se_lab),
        judge_only=_estimate(float(f_all.mean()), se_judge),
        lam=lam_used,
        n_labelled=len(y),
        n_unlabelled=len(fu),
        n_strata=len(parts),
        n_groups=n_groups,
        effective_labels=float(effective),
        mapping=mapping,
    )


def ppi_delta(
    y_a: np.ndarray,
    y_b: np.ndarray,
    f_a: np.ndarray,
    f_b: np.ndarray,
    fu_a: np.ndarray,
    fu_b: np.ndarray,
    **kwargs: object,
) -> PPIResult:
    """PPI for the paired difference of two systems' human means on the same items.

    ``y_a``/``y_b``: human values of both systems' outputs on the labelled items, ``f_a``/``f_b`` the judge's on
    the same items, ``fu_a``/``fu_b`` the judge's on the unlabelled items (same order for both systems). The
    per-item difference is one variable, so the labels correct the judge's *relative* bias, and the paired
    design cancels what the items share. Keyword arguments as for :func:`ppi_mean`; with ``mapping="isotonic"``
    each system's scores are mapped to the human scale by their own cross-fitted fit (same folds for both)
    before they are differenced.
    """
    ya, yb, fa, fb, ua, ub = (np.asarray(a, dtype=float) for a in (y_a, y_b, f_a, f_b, fu_a, fu_b))
    if len(ya) != len(yb) or len(fa) != len(fb) or len(ua) != len(ub):
        raise ValueError("ppi_delta: both systems need values on the same items")
    if kwargs.get("mapping") == "isotonic":
        fold = {k: kwargs[k] for k in ("groups", "seed") if k in kwargs}
        fa, ua = cross_fit_isotonic(fa, ya, ua, **fold)  # type: ignore[arg-type]
        fb, ub = cross_fit_isotonic(fb, yb, ub, **fold)  # type: ignore[arg-type]
        kwargs = {**kwargs, "mapping": "isotonic (per system)"}
    return ppi_mean(ya - yb, fa - fb, ua - ub, **kwargs)  # type: ignore[arg-type]


def cross_fit_isotonic(
    f: np.ndarray,
    y: np.ndarray,
    f_unlabelled: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    n_splits: int = 5,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Judge scores mapped to the human scale by isotonic fits, cross-fitted.

    Returns ``(mapped labelled, mapped unlabelled)``: each labelled item is mapped by the fit on the other
    folds, each unlabelled item by the mean of the fold fits. With ``groups`` the folds keep groups whole,
    so no group both fits a map and is corrected by it.
    """
    from sklearn.isotonic import IsotonicRegression
    from sklearn.model_selection import GroupKFold, KFold

    f, y, fu = (np.asarray(a, dtype=float) for a in (f, y, f_unlabelled))
    if groups is not None:
        k = min(n_splits, len(set(np.asarray(groups).astype(str))))
        if k < 2:
            raise DataError("the isotonic map needs labelled items in at least 2 groups to cross-fit")
        folds = GroupKFold(k).split(f, y, np.asarray(groups).astype(str))
    else:
        k = max(2, min(n_splits, len(f) // 2))
        folds = KFold(k, shuffle=True, random_state=seed).split(f)
    mapped = np.empty(len(f))
    unl = np.zeros(len(fu))
    for train, test in folds:
        model = IsotonicRegression(out_of_bounds="clip").fit(f[train], y[train])
        mapped[test] = model.predict(f[test])
        unl += model.predict(fu) / k if len(fu) else 0.0
    return mapped, unl
