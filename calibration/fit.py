"""Fitting the judge's scale to the humans': a cross-validated decision threshold and an isotonic map.

* :func:`fit_threshold` picks the judge-score cutoff (``score >= cutoff`` means positive) that maximises
  F1 or Cohen's κ against binary labels. The cutoff is chosen on training folds and scored on held-out
  folds, so the reported ``cv_f1``/``cv_kappa`` are honest; the out-of-fold predictions can stand in for
  a binary judge when no cutoff is given.
* :func:`fit_isotonic` learns a monotone map from judge score to the human scale with scikit-learn's
  ``IsotonicRegression`` and reports the held-out MAE before and after mapping.
* :func:`reliability_curve` bins a continuous judge score against binary labels: per bin the mean
  (0–1 rescaled) score, the share of positive labels with its Wilson 95 % interval, and the count; plus
  the Brier score (scores in 0–1) and the expected calibration error.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import cohen_kappa_score, f1_score
from sklearn.model_selection import KFold, StratifiedKFold


class ThresholdFit(BaseModel):
    """The judge-score cutoff for binary decisions."""

    criterion: str = Field(description="What the cutoff maximises: 'f1' or 'kappa'.")
    threshold: float = Field(description="Cutoff fitted on all items: score >= threshold means positive.")
    fold_thresholds: list[float] = Field(description="Cutoff chosen on each training fold.")
    cv_f1: float = Field(description="F1 of the out-of-fold predictions.")
    cv_kappa: float = Field(description="Cohen's κ of the out-of-fold predictions.")
    n_splits: int


class IsotonicFit(BaseModel):
    """A monotone map from judge score to the human scale (piecewise linear between the points)."""

    x: list[float] = Field(description="Judge-score breakpoints.")
    y: list[float] = Field(description="Mapped human-scale value at each breakpoint.")
    cv_mae_raw: float = Field(description="Held-out MAE of the raw judge scores against the humans.")
    cv_mae_mapped: float = Field(description="Held-out MAE after the isotonic map.")
    n_splits: int


def _best_threshold(labels: np.ndarray, scores: np.ndarray, criterion: str) -> float:
    candidates = np.unique(scores)
    pred = scores[None, :] >= candidates[:, None]
    pos = labels[None, :] == 1
    tp = (pred & pos).sum(axis=1).astype(float)
    fp = (pred & ~pos).sum(axis=1).astype(float)
    fn = (~pred & pos).sum(axis=1).astype(float)
    n = float(len(labels))
    with np.errstate(all="ignore"):
        if criterion == "f1":
            value = np.where(tp > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
        else:
            tn = n - tp - fp - fn
            observed = (tp + tn) / n
            expected = ((tp + fp) * (tp + fn) + (tn + fn) * (tn + fp)) / n**2
            value = np.nan_to_num((observed - expected) / (1 - expected), nan=0.0)
    return float(candidates[int(np.argmax(value))])


def _splits(n_items: int, n_minority: int, n_splits: int) -> int:
    return max(2, min(n_splits, n_minority, n_items // 2))


def fit_threshold(
    labels: np.ndarray, scores: np.ndarray, *, criterion: str = "f1", n_splits: int = 5, seed: int = 0
) -> tuple[ThresholdFit, np.ndarray] | None:
    """Fit the cutoff; returns the fit and the out-of-fold 0/1 predictions, or None with fewer than 2 per class."""
    labels = labels.astype(int)
    minority = int(min((labels == 0).sum(), (labels == 1).sum()))
    if minority < 2:
        return None
    k = _splits(len(labels), minority, n_splits)
    oof = np.zeros(len(labels), dtype=float)
    folds: list[float] = []
    for train, test in StratifiedKFold(k, shuffle=True, random_state=seed).split(scores, labels):
        cut = _best_threshold(labels[train], scores[train], criterion)
        folds.append(cut)
        oof[test] = (scores[test] >= cut).astype(float)
    fit = ThresholdFit(
        criterion=criterion,
        threshold=_best_threshold(labels, scores, criterion),
        fold_thresholds=folds,
        cv_f1=float(f1_score(labels, oof.astype(int), zero_division=0)),
        cv_kappa=_safe_kappa(labels, oof.astype(int)),
        n_splits=k,
    )
    return fit, oof


def _safe_kappa(a: np.ndarray, b: np.ndarray) -> float:
    if len(np.unique(np.concatenate([a, b]))) < 2:
        return float("nan")
    return float(cohen_kappa_score(a, b))


def fit_isotonic(scores: np.ndarray, human: np.ndarray, *, n_splits: int = 5, seed: int = 0) -> IsotonicFit | None:
    """Fit the isotonic map from judge score to human value; None with fewer than 10 items or constant scores."""
    if len(scores) < 10 or np.ptp(scores) == 0:
        return None
    k = _splits(len(scores), len(scores), n_splits)
    mapped = np.zeros(len(scores))
    for train, test in KFold(k, shuffle=True, random_state=seed).split(scores):
        model = IsotonicRegression(out_of_bounds="clip").fit(scores[train], human[train])
        mapped[test] = model.predict(scores[test])
    model = IsotonicRegression(out_of_bounds="clip").fit(scores, human)
    return IsotonicFit(
        x=[float(v) for v in model.X_thresholds_],
        y=[float(v) for v in model.y_thresholds_],
        cv_mae_raw=float(np.mean(np.abs(scores - human))),
        cv_mae_mapped=float(np.mean(np.abs(mapped - human))),
        n_splits=k,
    )


# ------------------------------------------------------------------------------------- reliability curve

RELIABILITY_BINS = 10
WILSON_Z = 1.959963984540054  # the normal quantile of a two-sided 95 % interval


class ReliabilityBin(BaseModel):
    """One bin of the judge score: what the judge said on average, and how often the humans said yes."""

    lo: float = Field(description="Lower edge of the bin, in judge-score units.")
    hi: float = Field(description="Upper edge of the bin, in judge-score units (the last bin includes it).")
    mean_score: float = Field(description="Mean judge score of the bin's items, rescaled to 0–1.")
    mean_raw: float = Field(description="Mean judge score of the bin's items, in judge-score units.")
    share_positive: float = Field(description="Share of the bin's items whose human consensus is positive.")
    n: int = Field(description="Items in the bin.")
    ci_low: float = Field(description="Wilson 95% interval of share_positive, lower end.")
    ci_high: float = Field(description="Wilson 95% interval of share_positive, upper end.")


class Reliability(BaseModel):
    """A reliability curve of a continuous judge score against binary human labels.

    The judge score is rescaled to 0–1 as ``(score - lo) / (hi - lo)``, clipped to 0–1, where ``(lo, hi)``
    is the rubric's ``scale`` when given, else 0–1 when every score already lies in it, else the observed
    min–max of the scores (then the rescaled score is only a rank-preserving stand-in for a probability).
    The rescaled score is cut into ``n_bins`` equal-width bins over 0–1 (so equal-width over ``lo..hi`` in
    judge units); empty bins are left out.
    """

    binning: str = Field("equal-width", description="How the bins are cut: equal-width over lo..hi.")
    n_bins: int = Field(description="Bins cut (empty ones are not listed).")
    lo: float = Field(description="Judge score that maps to 0.")
    hi: float = Field(description="Judge score that maps to 1.")
    rescale: str = Field(description="Where lo..hi come from: 'none' (scores in 0–1), 'scale' or 'observed'.")
    n: int = Field(description="Items binned.")
    bins: list[ReliabilityBin]
    brier: float | None = Field(
        description="Mean squared gap between score and label; only when every raw score lies in 0–1."
    )
    ece: float = Field(description="Expected calibration error: sum over bins of n/N * |mean_score - share|.")


def wilson_interval(k: float, n: float, z: float = WILSON_Z) -> tuple[float, float]:
    """Wilson score interval of the proportion k/n (n > 0)."""
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def reliability_curve(
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    scale: tuple[float, float] | None = None,
    n_bins: int = RELIABILITY_BINS,
) -> Reliability | None:
    """Bin a continuous judge score and compare each bin's mean score with its share of positive labels.

    ``labels`` are 0/1. Returns None when the scores span no range to bin over.
    """
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=float)
    if s.size == 0:
        return None
    in_unit = bool(np.all((s >= 0) & (s <= 1)))
    if scale is not None:
        lo, hi, how = float(scale[0]), float(scale[1]), "scale"
    elif in_unit:
        lo, hi, how = 0.0, 1.0, "none"
    else:
        lo, hi, how = float(s.min()), float(s.max()), "observed"
    if not hi > lo:
        return None
    r = np.clip((s - lo) / (hi - lo), 0.0, 1.0)
    k = np.minimum((r * n_bins).astype(int), n_bins - 1)
    bins: list[ReliabilityBin] = []
    ece = 0.0
    for b in range(n_bins):
        inside = k == b
        n = int(inside.sum())
        if n == 0:
            continue
        share = float(y[inside].mean())
        mean_r = float(r[inside].mean())
        ci_low, ci_high = wilson_interval(float(y[inside].sum()), n)
        bins.append(
            ReliabilityBin(
                lo=lo + (hi - lo) * b / n_bins,
                hi=lo + (hi - lo) * (b + 1) / n_bins,
                mean_score=mean_r,
                mean_raw=float(s[inside].mean()),
                share_positive=share,
                n=n,
                ci_low=ci_low,
                ci_high=ci_high,
            )
        )
        ece += n / s.size * abs(mean_r - share)
    brier = float(np.mean((s - y) ** 2)) if in_unit else None
    return Reliability(n_bins=n_bins, lo=lo, hi=hi, rescale=how, n=int(s.size), bins=bins, brier=brier, ece=ece)
