"""Prediction-powered estimates (calibration.ppi) against the authors' ppi-python and direct re-derivations.

Real populations come from ../shared/data (skipped when absent): LLMFAO (GPT-4 vs the crowd, pairwise, coded
as model_x's win rate with a tie as 1/2) and SummEval (the experts' coherence standing in for a judge of
relevance, so the judge is biased by construction).
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from calibration.ppi import Z95, cross_fit_isotonic, ppi_delta, ppi_mean
from judge.errors import DataError
from tests.conftest import shared_data

WIN = {"A": 1.0, "B": 0.0, "tie": 0.5}


def _llmfao() -> tuple[np.ndarray, np.ndarray]:
    from calibration.datasets import load_llmfao

    items, labels = load_llmfao(shared_data("llmfao"))

    def majority(values: list[str]) -> str:
        counts = Counter(values).most_common()
        return "tie" if len(counts) > 1 and counts[0][1] == counts[1][1] else counts[0][0]

    gold = labels.groupby("id")["label"].agg(lambda s: majority(list(s)))
    keep = items[items["id"].isin(gold.index) & items["score"].notna()]
    return gold.loc[keep["id"]].map(WIN).to_numpy(float), keep["score"].map(WIN).to_numpy(float)


def _summeval() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with shared_data("summeval", "summeval_flat.jsonl").open() as fh:
        rows = [json.loads(line) for line in fh]
    return (
        np.array([r["relevance"] for r in rows]),
        np.array([r["coherence"] for r in rows]),
        np.array([r["doc_id"] for r in rows]),
    )


@pytest.mark.parametrize("population", ["llmfao", "summeval"])
@pytest.mark.parametrize("lam", [None, 1.0, 0.0])
def test_matches_ppi_python_on_real_data(population: str, lam: float | None) -> None:
    ppi_py = pytest.importorskip("ppi_py")
    y, f = _llmfao() if population == "llmfao" else _summeval()[:2]
    rng = np.random.default_rng(1)
    lab = rng.choice(len(y), 150, replace=False)
    unl = np.setdiff1d(np.arange(len(y)), lab)
    out = ppi_mean(y[lab], f[lab], f[unl], lam=lam)
    ref_point = float(ppi_py.ppi_mean_pointestimate(y[lab], f[lab], f[unl], lam=lam)[0])
    ref_lo, ref_hi = (float(v[0]) for v in ppi_py.ppi_mean_ci(y[lab], f[lab], f[unl], alpha=0.05, lam=lam))
    assert out.ppi.value == pytest.approx(ref_point, abs=1e-12)
    assert out.ppi.ci_low == pytest.approx(ref_lo, abs=1e-9)
    assert out.ppi.ci_high == pytest.approx(ref_hi, abs=1e-9)
    if lam == 0.0:  # no judge at all: the classical interval of the labels
        assert out.ppi.value == pytest.approx(y[lab].mean())
        assert out.ppi.se == pytest.approx(out.labelled_only.se)
    # the judge-only and labelled-only columns, recomputed
    f_all = np.concatenate([f[lab], f[unl]])
    assert out.judge_only.value == pytest.approx(f_all.mean())
    assert out.judge_only.se == pytest.approx(f_all.std() / np.sqrt(len(f_all)))
    assert out.labelled_only.ci_high == pytest.approx(y[lab].mean() + Z95 * y[lab].std() / np.sqrt(150))
    assert out.effective_labels == pytest.approx(150 * (out.labelled_only.se / out.ppi.se) ** 2)


def test_power_tuning_never_loses_to_the_labels_on_llmfao() -> None:
    """GPT-4 is biased on LLMFAO (it almost never says tie): the judge-only interval misses the crowd's value,
    PPI's holds it and is narrower than the labels alone."""
    y, f = _llmfao()
    rng = np.random.default_rng(0)
    lab = rng.choice(len(y), 200, replace=False)
    unl = np.setdiff1d(np.arange(len(y)), lab)
    out = ppi_mean(y[lab], f[lab], f[unl])
    truth = y.mean()
    assert not out.judge_only.ci_low <= truth <= out.judge_only.ci_high
    assert out.ppi.ci_low <= truth <= out.ppi.ci_high
    assert out.ppi.se <= out.labelled_only.se
    assert out.effective_labels > 200
    assert 0.0 < out.lam <= 1.0


def test_stratified_estimate_is_the_weighted_sum_of_per_stratum_ppi() -> None:
    """An independent re-derivation: per stratum, lam * mean(f unlabelled) + mean(y - lam f labelled), weighted by
    the stratum's share of the pool; variance the weighted sum of each stratum's two variance terms; lam the
    closed-form minimiser of that total variance (found here by a grid search instead)."""
    y, f, _ = _summeval()
    rng = np.random.default_rng(3)
    strata = np.digitize(f, [2.5, 3.5])  # three strata of the judge score
    lab = np.concatenate(
        [rng.choice(np.flatnonzero(strata == h), k, replace=False) for h, k in enumerate((30, 20, 30))]
    )
    unl = np.setdiff1d(np.arange(len(y)), lab)
    out = ppi_mean(y[lab], f[lab], f[unl], strata=strata[lab], strata_unlabelled=strata[unl])

    def var_of(lam: float) -> tuple[float, float]:
        value = var = 0.0
        for h in range(3):
            yl, fl, fu = y[lab][strata[lab] == h], f[lab][strata[lab] == h], f[unl][strata[unl] == h]
            w = (len(yl) + len(fu)) / len(y)
            value += w * (lam * fu.mean() + (yl - lam * fl).mean())
            var += w**2 * (lam**2 * fu.var() / len(fu) + (yl - lam * fl).var() / len(yl))
        return value, var

    # lam: PPI++'s closed form summed over strata, cov(y, f) over the labelled items, var(f) over the whole stratum
    num = den = 0.0
    for h in range(3):
        yl, fl, fu = y[lab][strata[lab] == h], f[lab][strata[lab] == h], f[unl][strata[unl] == h]
        w = (len(yl) + len(fu)) / len(y)
        num += w**2 * np.cov(yl, fl, ddof=0)[0, 1] / len(yl)
        den += w**2 * np.var(np.concatenate([fl, fu]), ddof=1) * (1 / len(yl) + 1 / len(fu))
    assert out.lam == pytest.approx(num / den, rel=1e-9)
    # and it is near-optimal: the variance it gives is within 1 % of the best one on a grid of lam
    grid = np.linspace(0, 1, 1001)
    assert var_of(out.lam)[1] <= 1.01 * min(var_of(lam)[1] for lam in grid)
    assert var_of(out.lam)[1] < var_of(0.0)[1]  # and the judge helped, even within strata of its own score
    value, var = var_of(out.lam)
    assert out.ppi.value == pytest.approx(value, abs=1e-12)
    assert out.ppi.se == pytest.approx(np.sqrt(var), rel=1e-9)
    assert out.n_strata == 3


def test_cluster_robust_variance_tracks_the_spread_of_the_estimate() -> None:
    """Items in groups sharing a random effect: over repeated draws the cluster-robust standard error matches the
    estimate's real spread, while the item-level one understates it."""
    rng = np.random.default_rng(7)
    reps, n_groups, size = 400, 60, 8
    estimates, se_cluster, se_items = [], [], []
    for _ in range(reps):
        effect = np.repeat(rng.normal(0, 1, n_groups), size)
        f = effect + rng.normal(0, 0.5, n_groups * size)
        y = 0.8 * effect + 0.3 + rng.normal(0, 0.5, n_groups * size)
        g = np.repeat(np.arange(n_groups), size)
        lab = rng.random(len(y)) < 0.25
        grouped = ppi_mean(y[lab], f[lab], f[~lab], groups=g[lab], groups_unlabelled=g[~lab])
        plain = ppi_mean(y[lab], f[lab], f[~lab], lam=grouped.lam)
        estimates.append(grouped.ppi.value)
        se_cluster.append(grouped.ppi.se)
        se_items.append(plain.ppi.se)
        assert grouped.n_groups == n_groups
    spread = np.std(estimates)
    assert np.mean(se_cluster) == pytest.approx(spread, rel=0.15)
    assert np.mean(se_items) < 0.8 * spread


def test_paired_delta_corrects_a_judge_harsh_on_one_system() -> None:
    """Two systems, the judge 0.3 points harsh on B only: the judge-only delta is off by 0.3, PPI's covers the truth
    in about 95 % of draws."""
    rng = np.random.default_rng(11)
    hits = judge_hits = 0
    reps = 300
    for _ in range(reps):
        quality = rng.normal(3, 1, 2000)
        y_a = quality + 0.1 + rng.normal(0, 0.5, 2000)
        y_b = quality + rng.normal(0, 0.5, 2000)
        f_a, f_b = y_a + rng.normal(0, 0.3, 2000), y_b - 0.3 + rng.normal(0, 0.3, 2000)
        lab = np.zeros(2000, bool)
        lab[rng.choice(2000, 150, replace=False)] = True
        out = ppi_delta(y_a[lab], y_b[lab], f_a[lab], f_b[lab], f_a[~lab], f_b[~lab])
        hits += out.ppi.ci_low <= 0.1 <= out.ppi.ci_high
        judge_hits += out.judge_only.ci_low <= 0.1 <= out.judge_only.ci_high
    assert 0.92 <= hits / reps <= 0.98
    assert judge_hits / reps < 0.05


def test_cross_fitted_map_never_maps_an_item_with_its_own_label() -> None:
    y, f, docs = _summeval()
    f_judge = np.exp(f)  # another scale, monotone in the judge
    lab = np.arange(0, 400)
    unl = np.arange(400, len(y))
    mapped, mapped_unl = cross_fit_isotonic(f_judge[lab], y[lab], f_judge[unl], seed=0)
    changed = y[lab].copy()
    changed[17] = 5.0 if changed[17] < 3 else 1.0
    again, _ = cross_fit_isotonic(f_judge[lab], changed, f_judge[unl], seed=0)
    assert again[17] == mapped[17]  # item 17's own label did not move its mapped score
    assert not np.array_equal(again, mapped)  # it moved others'
    # the unlabelled items: the mean of the fold maps, each fitted with scikit-learn directly
    from sklearn.isotonic import IsotonicRegression
    from sklearn.model_selection import KFold

    expect = np.mean(
        [
            IsotonicRegression(out_of_bounds="clip").fit(f_judge[lab][tr], y[lab][tr]).predict(f_judge[unl])
            for tr, _ in KFold(5, shuffle=True, random_state=0).split(f_judge[lab])
        ],
        axis=0,
    )
    np.testing.assert_allclose(mapped_unl, expect)
    # grouped folds keep every article on one side
    mapped_g, _ = cross_fit_isotonic(f_judge[lab], y[lab], f_judge[unl], groups=docs[lab])
    assert mapped_g.shape == mapped.shape


def test_too_few_labels_say_how_many_are_needed() -> None:
    with pytest.raises(DataError, match="at least 10 labelled items .* got 4"):
        ppi_mean(np.ones(4), np.ones(4), np.ones(50))
    with pytest.raises(DataError, match="stratum '1' has 1 labelled"):
        ppi_mean(np.arange(12.0), np.arange(12.0), np.arange(30.0), strata=[0] * 11 + [1], strata_unlabelled=[1] * 30)
