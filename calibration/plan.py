"""Which items to label: a seeded, stratified draw from the judged pool, with its sampling weights.

PPI's interval shrinks most when the labels land where the judge's errors vary most. ``judge label plan``
cuts the pool into strata of one variable and draws a fixed number of items from each, at random:

* ``stratified``: strata of the judge's score (each distinct score, or quantile bins when it takes more
  than :data:`MAX_LEVELS` values); labels allocated in proportion to the strata's sizes, at least
  :data:`judge.ppi.MIN_PER_STRATUM` each;
* ``uncertainty``: strata of the judge's own uncertainty -- the standard deviation of its score
  distribution (``score_probs``, logprob mode), or for pairwise labels one minus the top label's
  probability -- with labels allocated in proportion to size x mean uncertainty (Neyman allocation with
  the uncertainty standing in for the spread of the judge's error; active inference, Zrnic & Candès 2024);
* ``random``: one stratum, a simple random sample.

Each planned row records its ``stratum``, the stratum's pool size and labelled count, and its ``weight``
(pool size / labelled count: the inverse of its inclusion probability). The strata are a function of the
verdicts (variable + bin edges, recorded), so ``judge calibrate --plan`` puts every unlabelled item back
in its stratum and the stratified PPI estimate stays unbiased.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from judge.errors import ConfigError, DataError
from judge.ppi import MIN_PER_STRATUM

STRATEGIES = ("stratified", "uncertainty", "random")
MAX_LEVELS = 10  # a score with at most this many distinct values is stratified per value
N_BINS = 5  # otherwise: this many quantile bins


def uncertainty(row: dict[str, Any]) -> float | None:
    """The judge's uncertainty about one verdict from its ``score_probs`` (None without them)."""
    probs = row.get("score_probs")
    if not isinstance(probs, dict) or not probs:
        return None
    values, weights = [], []
    for key, p in probs.items():
        try:
            weights.append(float(p))
        except (TypeError, ValueError):
            return None
        try:
            values.append(float(key))
        except ValueError:
            values.append(math.nan)  # a label (A / B / tie)
    w = np.array(weights)
    if w.sum() <= 0:
        return None
    w = w / w.sum()
    v = np.array(values)
    if np.isnan(v).any():
        return float(1 - w.max())
    mean = float((w * v).sum())
    return float(np.sqrt((w * (v - mean) ** 2).sum()))


def edges_for(values: np.ndarray) -> list[float]:
    """Bin edges of the strata: midpoints between distinct values (few values), else inner quantiles."""
    levels = np.unique(values)
    if len(levels) <= MAX_LEVELS:
        return [float(x) for x in (levels[:-1] + levels[1:]) / 2]
    inner = np.quantile(values, np.linspace(0, 1, N_BINS + 1)[1:-1])
    return [float(x) for x in np.unique(inner)]


def assign(values: np.ndarray, edges: list[float]) -> np.ndarray:
    """Each value's stratum (0 .. len(edges)): how many edges lie at or below it."""
    return np.searchsorted(np.asarray(edges, dtype=float), np.asarray(values, dtype=float), side="right")


def allocate(sizes: np.ndarray, n: int, importance: np.ndarray | None = None) -> np.ndarray:
    """Labels per stratum summing to ``n``: proportional to size (x importance), at least MIN_PER_STRATUM each
    (never more than a stratum holds), by largest remainders."""
    sizes = np.asarray(sizes, dtype=int)
    floor = np.minimum(sizes, MIN_PER_STRATUM)
    if floor.sum() > n:
        raise DataError(
            f"{len(sizes)} strata need at least {MIN_PER_STRATUM} labels each ({floor.sum()} in all); "
            f"plan --n {floor.sum()} or more, or use --strategy random"
        )
    share = sizes * (importance if importance is not None else 1.0)
    share = share / share.sum() if share.sum() > 0 else sizes / sizes.sum()
    out = floor.copy()
    for _ in range(n - floor.sum()):  # one label at a time where the target exceeds the allocation most
        room = out < sizes
        gap = np.where(room, share * n - out, -np.inf)
        out[int(np.argmax(gap))] += 1
    return out


def plan(
    verdicts: pd.DataFrame,
    n: int,
    *,
    strategy: str = "stratified",
    seed: int = 0,
    source: str | None = None,
) -> pd.DataFrame:
    """Choose ``n`` items of the scored pool to label. ``verdicts``: as :func:`calibration.labels.load_judge_scores`
    returns them, with the value to stratify on in ``value`` (the judge score on the human scale) and, for the
    uncertainty strategy, ``uncertainty``. Returns the chosen rows in draw order with ``stratum``,
    ``stratum_size``, ``stratum_labelled``, ``weight``, ``stratify_on`` and ``edges``."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"--strategy must be one of {', '.join(STRATEGIES)}, not '{strategy}'")
    if n < 1:
        raise ConfigError("--n must be 1 or more")
    pool = verdicts[verdicts["value"].notna()].reset_index(drop=True)
    if n > len(pool):
        raise DataError(
            f"a plan of {n} items is larger than the pool: the judge scored {len(pool)} items "
            f"({len(verdicts) - len(pool)} unscored); plan --n {len(pool)} or fewer",
            path=source,
        )
    on = {"stratified": "score", "uncertainty": "uncertainty", "random": "none"}[strategy]
    importance = None
    if strategy == "random":
        edges: list[float] = []
        strata = np.zeros(len(pool), dtype=int)
    else:
        if strategy == "uncertainty":
            if "uncertainty" not in pool or pool["uncertainty"].isna().any():
                missing = int(pool["uncertainty"].isna().sum()) if "uncertainty" in pool else len(pool)
                raise DataError(
                    f"--strategy uncertainty needs the judge's score_probs (logprob mode) on every scored item; "
                    f"{missing} have none: use --strategy stratified",
                    path=source,
                    field="score_probs",
                )
            var = pool["uncertainty"].to_numpy(float)
        else:
            var = pool["value"].to_numpy(float)
        edges = edges_for(var)
        strata = assign(var, edges)
        if strategy == "uncertainty":
            importance = np.array([max(var[strata == h].mean(), 1e-6) for h in range(len(edges) + 1)])
    sizes = np.bincount(strata, minlength=len(edges) + 1)
    keep = sizes > 0
    alloc = np.zeros_like(sizes)
    alloc[keep] = allocate(sizes[keep], n, None if importance is None else importance[keep])
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for h in range(len(sizes)):
        members = np.flatnonzero(strata == h)
        chosen.extend(rng.choice(members, alloc[h], replace=False).tolist())
    order = rng.permutation(len(chosen))  # the page shows them in random order, not stratum by stratum
    picked = pool.iloc[[chosen[i] for i in order]].copy()
    of = strata[[chosen[i] for i in order]]
    picked["stratum"] = of
    picked["stratum_size"] = sizes[of]
    picked["stratum_labelled"] = alloc[of]
    picked["weight"] = sizes[of] / alloc[of]
    picked["stratify_on"] = on
    picked["edges"] = [edges] * len(picked)
    return picked.reset_index(drop=True)


def strata_from_plan(rows: list[dict[str, Any]], source: str) -> tuple[str, list[float]]:
    """The stratifying variable and bin edges a plan file records (the same on every row)."""
    if not rows:
        raise DataError("the plan file has no rows", path=source)
    first = rows[0]
    for key in ("stratify_on", "edges"):
        if key not in first:
            raise DataError(f"not a plan from `judge label plan`: no '{key}'", path=source, line=1, field=key)
    for k, row in enumerate(rows, start=1):
        if row.get("stratify_on") != first["stratify_on"] or row.get("edges") != first["edges"]:
            raise DataError("the plan's rows disagree on its strata", path=source, line=k, field="edges")
    return str(first["stratify_on"]), [float(x) for x in first["edges"]]
