"""Resampling primitives shared by calibration and ``judge eval``: one bootstrap, written once.

A resample is a row of item indices drawn with replacement. Callers turn a batch of rows into
statistics their own way (calibration re-counts contingency tables; ``judge eval`` averages
per-item scores or re-sums corpus statistics), but every interval in the project is drawn from
:func:`resample_indices` and summarised by :func:`percentile_ci`.
"""

from __future__ import annotations

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
