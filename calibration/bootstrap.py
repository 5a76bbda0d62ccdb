"""Vectorised item bootstrap for every agreement statistic.

A resample draws ``n`` items with replacement; it is summarised as a count table of (human value,
judge value) pairs, built for all resamples at once with one ``np.bincount`` over offset cell codes, and
the statistics are computed on the whole batch of tables (:func:`calibration.agreement.table_estimates`).
For the human-human ceiling an item contributes several pairs (one per annotator); the resample is then
an item-count matrix ``W`` (B, n) times a sparse item-by-cell matrix, so items, not pairs, are resampled.

With ``units`` the same machinery is the cluster bootstrap: pass each pair's group (an MT-Bench question,
a SummEval article) and whole groups are resampled with all their pairs.

Confidence intervals are percentile or BCa intervals of the resampled values (:mod:`judge.stats`),
ignoring resamples where a statistic is undefined (e.g. a resample with a single class). BCa's
acceleration comes from the jackknife (:func:`jackknife`): leaving one unit out is subtracting its counts
from the full table, and units with the same counts give the same table, so it costs one batch of at most
``n`` tables.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from calibration.agreement import Design, table_estimates
from judge.stats import percentile_ci, resample_counts, resample_indices

__all__ = ["bootstrap", "jackknife", "percentile_ci", "resample_indices"]

# at most this many table cells are held in memory per batch of resamples
_CELLS_PER_BATCH = 2_000_000


def _tables_direct(idx: np.ndarray, cells: np.ndarray, size: int) -> np.ndarray:
    b = idx.shape[0]
    offset = (np.arange(b, dtype=np.int64) * size)[:, None] + cells[idx]
    return np.bincount(offset.ravel(), minlength=b * size).reshape(b, size)


def _tables_pooled(idx: np.ndarray, unit_cells: sparse.csr_matrix) -> np.ndarray:
    weights = resample_counts(idx, idx.shape[1])
    return np.asarray((unit_cells.T @ weights.T).T)


def bootstrap(
    design: Design,
    cells: np.ndarray,
    *,
    units: np.ndarray | None = None,
    n_units: int | None = None,
    auc_cells: np.ndarray | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Resampled values of each statistic of ``design``: a dict of arrays of length ``n_boot``.

    ``cells`` holds each pair's cell in the design's table (see :func:`calibration.agreement.encode_cells`).
    Without ``units`` every pair is its own item; with ``units`` (the item index of each pair, ``n_units``
    items) whole items are resampled with all their pairs.
    """
    ky, kp = len(design.human_grid), len(design.judge_grid)
    size = ky * kp
    auc_size = 2 * len(design.auc_grid) if design.auc_grid is not None else 0
    n = len(cells) if units is None else int(n_units if n_units is not None else units.max() + 1)
    idx = resample_indices(n, n_boot, seed)
    if units is not None:
        unit_cells = sparse.csr_matrix((np.ones(len(cells)), (units, cells)), shape=(n, size))
    batch = max(1, _CELLS_PER_BATCH // max(size, auc_size, 1))
    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, n_boot, batch):
        chunk = idx[start : start + batch]
        table = _tables_direct(chunk, cells, size) if units is None else _tables_pooled(chunk, unit_cells)
        auc_table = None
        if auc_cells is not None and design.auc_grid is not None:
            auc_table = _tables_direct(chunk, auc_cells, auc_size).reshape(len(chunk), 2, -1)
        parts.append(table_estimates(design, table.reshape(len(chunk), ky, kp), auc_table))
    return {name: np.concatenate([p[name] for p in parts]) for name in design.metrics}


def jackknife(
    design: Design,
    cells: np.ndarray,
    *,
    units: np.ndarray | None = None,
    n_units: int | None = None,
    auc_cells: np.ndarray | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Leave-one-unit-out values of each statistic of ``design``, for BCa's acceleration.

    Returns, per statistic, ``(values, weights)``: one value per distinct leave-one-out table and how many
    units share it (units that fill the same cells leave the same table behind). Arguments as for
    :func:`bootstrap`.
    """
    ky, kp = len(design.human_grid), len(design.judge_grid)
    size = ky * kp
    use_auc = auc_cells is not None and design.auc_grid is not None
    auc_size = 2 * len(design.auc_grid) if use_auc and design.auc_grid is not None else 0
    if units is None:
        # every item is a unit filling one cell (and one AUC cell): distinct cells give distinct tables
        key = cells * max(auc_size, 1) + (auc_cells if use_auc and auc_cells is not None else 0)
        _, first, weights = np.unique(key, return_index=True, return_counts=True)
        rows = np.arange(len(first))
        main = sparse.csr_matrix((np.ones(len(first)), (rows, cells[first])), shape=(len(first), size))
        extra = None
        if use_auc and auc_cells is not None:
            extra = sparse.csr_matrix((np.ones(len(first)), (rows, auc_cells[first])), shape=(len(first), auc_size))
    else:
        n = int(n_units if n_units is not None else units.max() + 1)
        main = sparse.csr_matrix((np.ones(len(cells)), (units, cells)), shape=(n, size))
        extra = None
        if use_auc and auc_cells is not None:
            extra = sparse.csr_matrix((np.ones(len(cells)), (units, auc_cells)), shape=(n, auc_size))
        weights = np.ones(n, dtype=np.int64)
    full = np.bincount(cells, minlength=size).astype(float)
    full_auc = None
    if extra is not None and auc_cells is not None:
        full_auc = np.bincount(auc_cells, minlength=auc_size).astype(float)
    batch = max(1, _CELLS_PER_BATCH // max(size, auc_size, 1))
    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, main.shape[0], batch):
        table = full[None, :] - main[start : start + batch].toarray()
        auc_table = None
        if extra is not None and full_auc is not None:
            auc_table = (full_auc[None, :] - extra[start : start + batch].toarray()).reshape(len(table), 2, -1)
        parts.append(table_estimates(design, table.reshape(len(table), ky, kp), auc_table))
    w = weights.astype(float)
    return {name: (np.concatenate([p[name] for p in parts]), w) for name in design.metrics}
