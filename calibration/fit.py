"""Fitting the judge's scale to the humans': a cross-validated decision threshold and an isotonic map.

* :func:`fit_threshold` picks the judge-score cutoff (``score >= cutoff`` means positive) that maximises
  F1 or Cohen's κ against binary labels. The cutoff is chosen on training folds and scored on held-out
  folds, so the reported ``cv_f1``/``cv_kappa`` are honest; the out-of-fold predictions can stand in for
  a binary judge when no cutoff is given.
* :func:`fit_isotonic` learns a monotone map from judge score to the human scale with scikit-learn's
  ``IsotonicRegression`` and reports the held-out MAE before and after mapping.
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
