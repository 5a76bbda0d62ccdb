"""Statistics of ``judge eval``: each system's value with a bootstrap CI, and paired deltas.

Item figures (exact match, ROUGE, a rubric's score) are means of per-item scores; corpus figures
(BLEU, chrF, macro-F1) are recomputed from re-summed per-item sufficient statistics, so a resample
of items gives the corpus score of those items, as sacrebleu's own paired bootstrap does. Every
resample comes from :mod:`judge.stats`; the paired delta draws the same items for both systems.
With ``groups`` (a suite's ``group:`` column: several items per prompt, article or question) whole
groups are drawn with all their items -- the same groups for both systems -- and BCa's jackknife
leaves out one group at a time. Intervals are percentile or BCa (``Resampling.ci``; ``auto`` = BCa
below :data:`judge.stats.BCA_BELOW` units).
The p-value is approximate randomization: each paired item's two outputs are swapped with
probability 1/2, and the p-value is the share of such shuffles whose delta is at least as large
(in absolute value) as the observed one, with the usual +1 correction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from judge.metrics.base import Corpus
from judge.stats import bca_ci, leave_one_out_sums, percentile_ci, resample_weights, resolve_ci_method


@dataclass(frozen=True)
class Resampling:
    """How many bootstrap resamples and randomization rounds, and the seed they are drawn from."""

    n_boot: int = 2000
    n_perm: int = 2000
    seed: int = 0
    level: float = 0.95
    ci: str = "auto"  # percentile | bca | auto (BCa below judge.stats.BCA_BELOW resampling units)
    # the last resample weights and swap matrix drawn: every figure and system of a run draws the same
    # ones (same n, seed and groups), so they are drawn once, not once per figure and system
    _memo: dict[str, tuple[Any, np.ndarray]] = field(default_factory=dict, compare=False, repr=False)

    def weights(self, n: int, codes: np.ndarray | None) -> np.ndarray:
        """Bootstrap weights (n_boot, n) from :func:`judge.stats.resample_weights`, reused while n and groups
        stay the same."""
        key = (n, None if codes is None else codes.tobytes())
        hit = self._memo.get("weights")
        if hit is None or hit[0] != key:
            hit = (key, resample_weights(n, self.n_boot, self.seed, codes))
            self._memo["weights"] = hit
        return hit[1]

    def swaps(self, n: int) -> np.ndarray:
        """The approximate-randomization swap matrix (n_perm, n) of 0/1, reused while n stays the same."""
        hit = self._memo.get("swaps")
        if hit is None or hit[0] != n:
            hit = (n, np.random.default_rng(self.seed + 1).integers(0, 2, size=(self.n_perm, n)).astype(float))
            self._memo["swaps"] = hit
        return hit[1]

    def method(self, n_units: int) -> str:
        """The interval method used for ``n_units`` resampling units (items, or groups)."""
        return resolve_ci_method(self.ci, n_units)


def _corpus_values(corpus: Corpus, sums: np.ndarray) -> np.ndarray:
    if corpus.vectorised:
        return np.asarray(corpus.score(sums), dtype=float)
    return np.array([corpus.score(row) for row in sums], dtype=float)


def _codes(groups: np.ndarray | None, keep: np.ndarray) -> np.ndarray | None:
    """Group codes 0..g-1 of the kept items (None: every item is its own unit)."""
    if groups is None:
        return None
    return np.unique(np.asarray(groups)[keep], return_inverse=True)[1].ravel()


def _interval(
    reps: np.ndarray, value: float, jack: Callable[[], np.ndarray], method: str, level: float
) -> tuple[float | None, float | None]:
    return bca_ci(reps, value, jack(), level) if method == "bca" else percentile_ci(reps, level)


def _mean_jackknife(values: np.ndarray, codes: np.ndarray | None) -> np.ndarray:
    sums = leave_one_out_sums(np.column_stack([values, np.ones(len(values))]), codes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums[:, 0] / sums[:, 1]


def system_value(
    scores: np.ndarray, corpus: Corpus | None, rs: Resampling, groups: np.ndarray | None = None
) -> dict[str, float | int | None]:
    """``{value, ci_low, ci_high, n, n_unscored}`` of one system on one figure (``groups``: each item's
    group, for the cluster bootstrap)."""
    ok = np.isfinite(scores)
    n = int(ok.sum())
    out: dict[str, float | int | None] = {"value": None, "ci_low": None, "ci_high": None, "n": n}
    out["n_unscored"] = int(len(scores) - n)
    if n == 0:
        return out
    codes = _codes(groups, ok)
    counts = rs.weights(n, codes)
    method = rs.method(n if codes is None else int(codes.max()) + 1)
    if corpus is not None:
        stats = corpus.stats[ok]
        value = float(_corpus_values(corpus, stats.sum(axis=0, keepdims=True))[0])
        reps = _corpus_values(corpus, counts @ stats)

        def jack() -> np.ndarray:
            return _corpus_values(corpus, leave_one_out_sums(stats, codes))
    else:
        vals = scores[ok]
        value = float(vals.mean())
        reps = counts @ vals / counts.sum(axis=1)

        def jack() -> np.ndarray:
            return _mean_jackknife(vals, codes)

    out["value"] = value
    out["ci_low"], out["ci_high"] = _interval(reps, value, jack, method, rs.level)
    return out


def paired_delta(
    system: np.ndarray,
    baseline: np.ndarray,
    corpus: tuple[Corpus, Corpus] | None,
    higher_is_better: bool,
    rs: Resampling,
    groups: np.ndarray | None = None,
) -> dict[str, float | int | None]:
    """``{value, ci_low, ci_high, p_value, wins, losses, ties, n_pairs}``: system minus baseline on the
    items both scored. Wins and losses count items where the system is better or worse, by the
    figure's direction (for corpus figures, by the per-item sentence scores). With ``groups`` the CI
    resamples whole groups, the same ones for both systems (the randomization p-value still swaps
    each item's pair of outputs)."""
    both = np.isfinite(system) & np.isfinite(baseline)
    n = int(both.sum())
    out: dict[str, float | int | None] = {
        "value": None,
        "ci_low": None,
        "ci_high": None,
        "p_value": None,
        "wins": 0,
        "losses": 0,
        "ties": 0,
        "n_pairs": n,
    }
    if n == 0:
        return out
    s, b = system[both], baseline[both]
    diff = s - b if higher_is_better else b - s
    out["wins"], out["losses"] = int((diff > 1e-12).sum()), int((diff < -1e-12).sum())
    out["ties"] = n - out["wins"] - out["losses"]  # type: ignore[operator]
    codes = _codes(groups, both)
    counts = rs.weights(n, codes)
    method = rs.method(n if codes is None else int(codes.max()) + 1)
    swap = rs.swaps(n)
    if corpus is not None:
        cs, cb = corpus
        ss, sb = cs.stats[both], cb.stats[both]
        delta = float(_corpus_values(cs, ss.sum(0, keepdims=True))[0] - _corpus_values(cb, sb.sum(0, keepdims=True))[0])
        reps = _corpus_values(cs, counts @ ss) - _corpus_values(cb, counts @ sb)

        def jack() -> np.ndarray:
            return _corpus_values(cs, leave_one_out_sums(ss, codes)) - _corpus_values(cb, leave_one_out_sums(sb, codes))

        # swapped rows: the system's statistics where swap is 1, the baseline's elsewhere
        perm = _corpus_values(cs, swap @ sb + (1 - swap) @ ss) - _corpus_values(cb, swap @ ss + (1 - swap) @ sb)
    else:
        d = s - b
        delta = float(d.mean())
        reps = counts @ d / counts.sum(axis=1)
        perm = (1 - 2 * swap) @ d / n

        def jack() -> np.ndarray:
            return _mean_jackknife(d, codes)

    out["value"] = delta
    out["ci_low"], out["ci_high"] = _interval(reps, delta, jack, method, rs.level)
    extreme = int((np.abs(perm) >= abs(delta) - 1e-12).sum())
    out["p_value"] = (extreme + 1) / (rs.n_perm + 1)
    return out


FEW_UNITS = 30
"""Below this many resampling units (items, or groups with ``group``) ``judge eval`` warns: bootstrap
intervals of a handful of items are too narrow, and one can exclude 0 while the permutation p-value says
the difference may be chance (3 items: a CI above 0 with p = 0.25)."""


def small_sample_warnings(
    systems: dict[str, dict[str, dict[str, Any]]], deltas: dict[str, dict[str, dict[str, Any]]], bootstrap: dict, n: int
) -> list[str]:
    """What a reader of a run on few items must know: how few, which interval method, and every delta
    whose CI excludes 0 while its p-value is above ``1 - level``."""
    units = bootstrap.get("n_groups") or n
    kind = f"groups ({bootstrap['group']})" if bootstrap.get("group") else "items"
    method, level = bootstrap.get("ci"), float(bootstrap.get("level") or 0.95)
    warns = []
    if units < FEW_UNITS:
        warns.append(
            f"only {units} {kind}: below {FEW_UNITS} the bootstrap intervals ({method}, {level:.0%}) are too narrow "
            "to trust and a paired CI can exclude 0 by chance; read the p-values, and evaluate on more items"
        )
    else:
        for fig in next(iter(systems.values()), {}):
            fewest = min(per[fig]["n"] for per in systems.values())
            if fewest < FEW_UNITS:
                warns.append(f"{fig}: only {fewest} scored items; its intervals ({method}) are too narrow to trust")
    for system, per in deltas.items():
        for fig, d in per.items():
            lo, hi, p = d.get("ci_low"), d.get("ci_high"), d.get("p_value")
            if lo is None or hi is None or p is None:
                continue
            if (lo > 0 or hi < 0) and p > 1 - level:
                warns.append(
                    f"{system} {fig}: the {level:.0%} CI of the delta [{lo:.3g}, {hi:.3g}] excludes 0 but p = {p:.2f}: "
                    "not significant"
                )
    return warns
