"""Judge–human correlations at the levels papers report: summary level and system level.

Published figures (SummEval's meta-evaluation, Fabbri et al. 2021; G-Eval, Liu et al. 2023) are rarely
pooled item-level correlations:

* **summary level**: within each source document, correlate the judge's and the humans' scores of the
  systems' outputs for it; average the per-document correlations over documents. A document whose judge
  or human scores are constant has no correlation: it is skipped, and counted (``n_skipped``).
* **system level**: each system's mean judge score and mean human score over its items; correlate the two
  across systems.

Statistics: Pearson r, Spearman ρ and Kendall τ-b (scipy's). 95 % percentile intervals resample the
level's units: documents for the summary level (the mean of the per-document values over a resample of
documents), systems for the system level (the correlation of a resample of the systems' mean pairs).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from calibration.report import LevelStats, Stat
from judge.errors import DataError
from judge.stats import percentile_ci, resample_indices

LEVELS = ("item", "summary", "system")
STATISTICS = ("pearson", "spearman", "kendall")


def _corr(name: str, x: np.ndarray, y: np.ndarray) -> float:
    from scipy import stats

    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    if name == "pearson":
        return float(np.corrcoef(x, y)[0, 1])
    if name == "spearman":
        return float(stats.spearmanr(x, y).statistic)
    return float(stats.kendalltau(x, y).statistic)


def summary_level(
    judge: np.ndarray, human: np.ndarray, docs: np.ndarray, *, n_boot: int = 1000, seed: int = 0, unit: str = "doc"
) -> LevelStats:
    """Per-document correlations averaged over documents (constant documents skipped and counted)."""
    frame = pd.DataFrame({"j": judge, "h": human, "d": np.asarray(docs).astype(str)})
    per_doc: dict[str, list[float]] = {s: [] for s in STATISTICS}
    skipped = 0
    for _, g in frame.groupby("d", sort=False):
        j, h = g["j"].to_numpy(float), g["h"].to_numpy(float)
        if len(g) < 2 or np.ptp(j) == 0 or np.ptp(h) == 0:
            skipped += 1
            continue
        for s in STATISTICS:
            per_doc[s].append(_corr(s, j, h))
    n = len(per_doc["pearson"])
    if n < 2:
        raise DataError(
            f"summary-level correlation needs at least 2 documents with varying judge and human scores; "
            f"{n} of {n + skipped} have them (group by the source document with --group)"
        )
    idx = resample_indices(n, n_boot, seed) if n_boot > 0 else None
    metrics = {}
    for s in STATISTICS:
        values = np.array(per_doc[s])
        lo, hi = percentile_ci(values[idx].mean(axis=1)) if idx is not None else (None, None)
        metrics[s] = Stat(value=float(values.mean()), ci_low=lo, ci_high=hi)
    return LevelStats(level="summary", unit=unit, n_units=n, n_skipped=skipped, metrics=metrics)


def system_level(
    judge: np.ndarray,
    human: np.ndarray,
    systems: np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    unit: str = "system",
) -> LevelStats:
    """Correlation across systems of their mean judge and mean human scores."""
    frame = pd.DataFrame({"j": judge, "h": human, "s": np.asarray(systems).astype(str)})
    means = frame.groupby("s", sort=True)[["j", "h"]].mean()
    n = len(means)
    if n < 3:
        raise DataError(f"system-level correlation needs at least 3 systems; the compared items hold {n}")
    j, h = means["j"].to_numpy(), means["h"].to_numpy()
    idx = resample_indices(n, n_boot, seed) if n_boot > 0 else None
    metrics = {}
    for s in STATISTICS:
        lo = hi = None
        if idx is not None:
            lo, hi = percentile_ci(np.array([_corr(s, j[row], h[row]) for row in idx]))
        value = _corr(s, j, h)
        metrics[s] = Stat(value=value if np.isfinite(value) else None, ci_low=lo, ci_high=hi)
    return LevelStats(level="system", unit=unit, n_units=n, metrics=metrics)
