"""Statistics of ``judge eval``: each system's value with a bootstrap CI, and paired deltas.

Item figures (exact match, ROUGE, a rubric's score) are means of per-item scores; corpus figures
(BLEU, chrF, macro-F1) are recomputed from re-summed per-item sufficient statistics, so a resample
of items gives the corpus score of those items, as sacrebleu's own paired bootstrap does. Every
resample comes from :mod:`judge.stats`; the paired delta draws the same items for both systems.
The p-value is approximate randomization: each paired item's two outputs are swapped with
probability 1/2, and the p-value is the share of such shuffles whose delta is at least as large
(in absolute value) as the observed one, with the usual +1 correction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from judge.metrics.base import Corpus
from judge.stats import percentile_ci, resample_counts, resample_indices


@dataclass(frozen=True)
class Resampling:
    """How many bootstrap resamples and randomization rounds, and the seed they are drawn from."""

    n_boot: int = 2000
    n_perm: int = 2000
    seed: int = 0
    level: float = 0.95


def _corpus_values(corpus: Corpus, sums: np.ndarray) -> np.ndarray:
    if corpus.vectorised:
        return np.asarray(corpus.score(sums), dtype=float)
    return np.array([corpus.score(row) for row in sums], dtype=float)


def system_value(scores: np.ndarray, corpus: Corpus | None, rs: Resampling) -> dict[str, float | int | None]:
    """``{value, ci_low, ci_high, n, n_unscored}`` of one system on one figure."""
    ok = np.isfinite(scores)
    n = int(ok.sum())
    out: dict[str, float | int | None] = {"value": None, "ci_low": None, "ci_high": None, "n": n}
    out["n_unscored"] = int(len(scores) - n)
    if n == 0:
        return out
    counts = resample_counts(resample_indices(n, rs.n_boot, rs.seed), n)
    if corpus is not None:
        stats = corpus.stats[ok]
        out["value"] = float(_corpus_values(corpus, stats.sum(axis=0, keepdims=True))[0])
        reps = _corpus_values(corpus, counts @ stats)
    else:
        vals = scores[ok]
        out["value"] = float(vals.mean())
        reps = counts @ vals / n
    out["ci_low"], out["ci_high"] = percentile_ci(reps, rs.level)
    return out


def paired_delta(
    system: np.ndarray,
    baseline: np.ndarray,
    corpus: tuple[Corpus, Corpus] | None,
    higher_is_better: bool,
    rs: Resampling,
) -> dict[str, float | int | None]:
    """``{value, ci_low, ci_high, p_value, wins, losses, ties, n_pairs}``: system minus baseline on the
    items both scored. Wins and losses count items where the system is better or worse, by the
    figure's direction (for corpus figures, by the per-item sentence scores)."""
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
    counts = resample_counts(resample_indices(n, rs.n_boot, rs.seed), n)
    swap = np.random.default_rng(rs.seed + 1).integers(0, 2, size=(rs.n_perm, n)).astype(float)
    if corpus is not None:
        cs, cb = corpus
        ss, sb = cs.stats[both], cb.stats[both]
        delta = float(_corpus_values(cs, ss.sum(0, keepdims=True))[0] - _corpus_values(cb, sb.sum(0, keepdims=True))[0])
        reps = _corpus_values(cs, counts @ ss) - _corpus_values(cb, counts @ sb)
        # swapped rows: the system's statistics where swap is 1, the baseline's elsewhere
        perm = _corpus_values(cs, swap @ sb + (1 - swap) @ ss) - _corpus_values(cb, swap @ ss + (1 - swap) @ sb)
    else:
        d = s - b
        delta = float(d.mean())
        reps = counts @ d / n
        perm = (1 - 2 * swap) @ d / n
    out["value"] = delta
    out["ci_low"], out["ci_high"] = percentile_ci(reps, rs.level)
    extreme = int((np.abs(perm) >= abs(delta) - 1e-12).sum())
    out["p_value"] = (extreme + 1) / (rs.n_perm + 1)
    return out
