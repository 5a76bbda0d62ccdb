"""Prediction-powered estimates (judge.ppi) against the authors' ppi-python and direct re-derivations.

Real populations come from ../shared/data (skipped when absent): LLMFAO (GPT-4 vs the crowd, pairwise, coded
as model_x's win rate with a tie as 1/2) and SummEval (the experts' coherence standing in for a judge of
relevance, so the judge is biased by construction).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from judge.errors import DataError
from judge.ppi import Z95, cross_fit_isotonic, ppi_delta, ppi_mean
from judge.textfmt import fmt
from tests.conftest import shared_data
from tests.test_bad_inputs import run_cli

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


# ------------------------------------------------------------------------------------------ judge calibrate


def _llmfao_files(tmp_path: Path, n_labelled: int = 150, extra_ids: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """GPT-4's verdicts on every LLMFAO pair, and the crowd's labels on a random subset of the pairs."""
    root = shared_data("llmfao")
    crowd = pd.read_csv(root / "crowd-comparisons.csv", dtype={"id": str, "worker": str})
    rng = np.random.default_rng(5)
    keep = rng.choice(sorted(crowd["id"].unique()), n_labelled, replace=False)
    sub = crowd[crowd["id"].isin(keep)][["id", "worker", "winner"]]
    extra = pd.DataFrame({"id": list(extra_ids), "worker": "w1", "winner": "left"})
    labels = tmp_path / "labels.csv"
    pd.concat([sub, extra]).to_csv(labels, index=False)
    return root / "gpt4-crowd-comparisons.csv", labels


ARGS = ["--label-column", "winner", "--annotator-column", "worker", "--label-type", "pairwise", "--bootstrap", "50"]


def test_calibrate_reports_the_ppi_estimate_beside_labels_and_judge(tmp_path: Path, capsys) -> None:
    ppi_py = pytest.importorskip("ppi_py")
    judge_file, labels = _llmfao_files(tmp_path)
    out, html = tmp_path / "r.json", tmp_path / "r.html"
    code, text = run_cli(
        ["calibrate", "--judge", str(judge_file), "--human", str(labels), *ARGS, "--json", str(out)]
        + ["--report", str(html)],
        capsys,
    )
    assert code == 0, text
    ppi = json.loads(out.read_text())["ppi"]
    # recomputed from the files: the crowd majority per labelled pair, GPT-4's verdict on every pair
    gpt = pd.read_csv(judge_file, dtype={"id": str}).set_index("id")["winner"]
    win = {"left": 1.0, "right": 0.0, "tie": 0.5}
    crowd = pd.read_csv(labels, dtype={"id": str})
    gold = crowd.groupby("id")["winner"].agg(
        lambda s: "tie" if len(s.mode()) > 1 else s.mode().iloc[0]  # a tied majority is a tie
    )
    lab = list(gold.index)
    unl = [i for i in gpt.index if i not in set(lab)]
    y = gold.map(win).to_numpy(float)
    f, fu = gpt.loc[lab].map(win).to_numpy(float), gpt.loc[unl].map(win).to_numpy(float)
    lo, hi = (float(v[0]) for v in ppi_py.ppi_mean_ci(y, f, fu, alpha=0.05))
    assert (ppi["n_labelled"], ppi["n_unlabelled"]) == (150, len(gpt) - 150)
    assert ppi["ppi"]["value"] == pytest.approx(float(ppi_py.ppi_mean_pointestimate(y, f, fu)[0]))
    assert (ppi["ppi"]["ci_low"], ppi["ppi"]["ci_high"]) == pytest.approx((lo, hi))
    assert ppi["labelled_only"]["value"] == pytest.approx(y.mean())
    assert ppi["judge_only"]["value"] == pytest.approx(gpt.map(win).mean())
    assert ppi["estimand"].startswith("human win rate of A")
    assert f"your 150 labels + {len(unl)} judge scores are worth ~{ppi['effective_labels']:.0f} labels" in text
    page = html.read_text()
    assert "Human-scale estimate: human win rate of A" in page and "prediction-powered (PPI++" in page
    assert f"<td>{fmt(ppi['ppi']['value'], 3)}</td>" in page


def test_calibrate_ppi_refuses_labels_for_unknown_ids(tmp_path: Path, capsys) -> None:
    judge_file, labels = _llmfao_files(tmp_path, extra_ids=("no-such-pair", "nor-this"))
    out = tmp_path / "r.json"
    code, text = run_cli(
        ["calibrate", "--judge", str(judge_file), "--human", str(labels), *ARGS, "--json", str(out)], capsys
    )
    assert code == 2, text
    assert "Traceback" not in text and str(labels) in text
    assert "2 labelled id(s) are not among the judge's items" in text and "no-such-pair, nor-this" in text
    assert "pass --ppi off" in text
    assert not out.exists()
    # without PPI the same files are an agreement report with a warning, as before
    code, text = run_cli(
        ["calibrate", "--judge", str(judge_file), "--human", str(labels), *ARGS, "--ppi", "off"], capsys
    )
    assert code == 0 and "2 labelled ids match no judge item" in text


def test_calibrate_ppi_on_grouped_summeval_is_cluster_robust(tmp_path: Path, capsys) -> None:
    """SummEval: the experts' coherence as the 'judge' of relevance, 200 summaries labelled, grouped by article."""
    path = shared_data("summeval", "summeval_flat.jsonl")
    with path.open() as fh:
        rows = [json.loads(line) for line in fh]
    judge_file, labels = tmp_path / "judge.csv", tmp_path / "labels.csv"
    frame = pd.DataFrame(
        {
            "id": [f"{r['doc_id']}/{r['system_id']}" for r in rows],
            "score": [r["coherence"] for r in rows],
            "doc": [r["doc_id"] for r in rows],
            "label": [r["relevance"] for r in rows],
        }
    )
    frame[["id", "score", "doc"]].to_csv(judge_file, index=False)
    lab = np.random.default_rng(2).choice(len(frame), 200, replace=False)
    frame.iloc[lab][["id", "label"]].to_csv(labels, index=False)
    out = tmp_path / "r.json"
    argv = ["calibrate", "--judge", str(judge_file), "--human", str(labels), "--bootstrap", "0", "--json", str(out)]
    code, text = run_cli([*argv, "--group", "doc"], capsys)
    assert code == 0, text
    grouped = json.loads(out.read_text())["ppi"]
    code, text = run_cli(argv, capsys)
    plain = json.loads(out.read_text())["ppi"]
    assert grouped["n_groups"] == 100 and plain["n_groups"] is None
    assert grouped["ppi"]["value"] == pytest.approx(plain["ppi"]["value"])  # same estimate, another variance
    # the cluster-robust variance, re-derived: per article, the sum of its items' influences, squared
    is_lab = np.zeros(len(frame), bool)
    is_lab[lab] = True
    lam, y, f = grouped["lam"], frame["label"].to_numpy(), frame["score"].to_numpy()
    r = y[is_lab] - lam * f[is_lab]
    infl = np.where(is_lab, 0.0, lam * (f - f[~is_lab].mean()) / (~is_lab).sum())
    infl[is_lab] = (r - r.mean()) / is_lab.sum()
    per_doc = pd.Series(infl).groupby(frame["doc"]).sum()
    expect = np.sqrt(100 / 99 * (per_doc**2).sum())
    assert grouped["ppi"]["se"] == pytest.approx(expect, rel=1e-9)
    # a group known only to the labels leaves the unlabelled items without one: no estimate (auto), exit 2 (on)
    frame[["id", "score"]].to_csv(judge_file, index=False)
    frame.iloc[lab][["id", "label", "doc"]].to_csv(labels, index=False)
    code, text = run_cli([*argv, "--group", "doc"], capsys)
    assert code == 0 and json.loads(out.read_text())["ppi"] is None
    out.unlink()
    code, text = run_cli([*argv, "--group", "doc", "--ppi", "on"], capsys)
    assert code == 2 and "the group column 'doc' must be in the judge results" in text and not out.exists()


def test_paired_delta_maps_each_system_through_its_own_cross_fitted_fit() -> None:
    """Binary human verdicts, a judge score on 0-10 that is harsher on B: each system's scores are mapped to the
    0/1 scale by isotonic fits on its own labels (the same folds), then differenced; re-derived here with
    scikit-learn and ppi-python."""
    ppi_py = pytest.importorskip("ppi_py")
    from sklearn.isotonic import IsotonicRegression
    from sklearn.model_selection import KFold

    rng = np.random.default_rng(4)
    n, n_lab = 1500, 200
    quality = rng.normal(0, 1, n)
    y_a = (quality + 0.3 + rng.normal(0, 0.7, n) > 0).astype(float)
    y_b = (quality + rng.normal(0, 0.7, n) > 0).astype(float)
    f_a = 10 / (1 + np.exp(-(quality + 0.3 + rng.normal(0, 0.5, n))))
    f_b = 10 / (1 + np.exp(-(quality - 1.0 + rng.normal(0, 0.5, n))))  # harsh on B
    lab, unl = slice(0, n_lab), slice(n_lab, n)
    out = ppi_delta(y_a[lab], y_b[lab], f_a[lab], f_b[lab], f_a[unl], f_b[unl], mapping="isotonic")

    def mapped(f: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        own, rest = np.empty(n_lab), np.zeros(n - n_lab)
        for tr, te in KFold(5, shuffle=True, random_state=0).split(f[lab]):
            fit = IsotonicRegression(out_of_bounds="clip").fit(f[lab][tr], y[lab][tr])
            own[te] = fit.predict(f[lab][te])
            rest += fit.predict(f[unl]) / 5
        return own, rest

    (ma, ua), (mb, ub) = mapped(f_a, y_a), mapped(f_b, y_b)
    dy = y_a[lab] - y_b[lab]
    assert out.ppi.value == pytest.approx(float(ppi_py.ppi_mean_pointestimate(dy, ma - mb, ua - ub)[0]))
    lo, hi = (float(v[0]) for v in ppi_py.ppi_mean_ci(dy, ma - mb, ua - ub, alpha=0.05))
    assert (out.ppi.ci_low, out.ppi.ci_high) == pytest.approx((lo, hi))
    assert out.mapping == "isotonic (per system)"
    # mapped to the labels' 0/1 scale, the judge's scores still narrow the interval below the labels alone
    assert out.effective_labels > n_lab
