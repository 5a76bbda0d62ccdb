"""Confidence intervals: BCa against scipy's, and the cluster bootstrap (calibrate, the CLI, judge eval)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from calibration import calibrate
from judge.cli import main
from judge.dataset import id_text
from judge.eval.run import evaluate
from judge.eval.stats import Resampling, paired_delta, system_value
from judge.stats import (
    balanced_accuracy,
    bca_ci,
    leave_one_out_sums,
    macro_f1,
    resample_weights,
    resolve_ci_method,
    spearman_ci,
    wilson,
)


def _kappa(y: np.ndarray, p: np.ndarray, axis: int = -1) -> np.ndarray:
    """Cohen's κ of codes 0..2, vectorised over leading axes (scipy.stats.bootstrap's calling convention)."""
    y, p = np.moveaxis(y, axis, -1), np.moveaxis(p, axis, -1)
    yo = (y[..., None] == np.arange(3)).astype(float)
    po = (p[..., None] == np.arange(3)).astype(float)
    n = y.shape[-1]
    observed = (yo * po).sum(axis=(-1, -2)) / n
    expected = (yo.mean(axis=-2) * po.mean(axis=-2)).sum(axis=-1)
    return (observed - expected) / (1 - expected)


def _ci(ref: stats._resampling.BootstrapResult) -> tuple[float, float]:
    return float(ref.confidence_interval.low), float(ref.confidence_interval.high)


def test_bca_of_a_mean_matches_scipy() -> None:
    x = np.random.default_rng(1).exponential(size=40)  # skewed: BCa moves away from the percentile interval
    reps = resample_weights(40, 20000, seed=3) @ x / 40
    loo = leave_one_out_sums(np.column_stack([x, np.ones(40)]))
    lo, hi = bca_ci(reps, float(x.mean()), loo[:, 0] / loo[:, 1])
    ref = stats.bootstrap((x,), np.mean, method="BCa", n_resamples=20000, random_state=np.random.default_rng(5))
    r_lo, r_hi = _ci(ref)
    width = r_hi - r_lo
    assert lo == pytest.approx(r_lo, abs=0.03 * width) and hi == pytest.approx(r_hi, abs=0.03 * width)
    p_lo, p_hi = np.percentile(reps, [2.5, 97.5])
    assert hi - p_hi > 0.03 * width  # the correction is not a no-op on skewed data


def test_bca_of_kappa_through_calibrate_matches_scipy() -> None:
    rng = np.random.default_rng(7)
    n = 80
    y = rng.integers(0, 3, n)
    p = np.where(rng.random(n) < 0.6, y, rng.integers(0, 3, n))
    names = np.array(["A", "B", "tie"])
    ids = [f"i{k}" for k in range(n)]
    report = calibrate(
        pd.Series(names[p], index=ids),
        pd.Series(names[y], index=ids),
        label_type="pairwise",
        n_boot=10000,
        seed=2,
        ci_method="bca",
    )
    assert report.ci_method == "bca"
    kappa = report.metrics["cohen_kappa"]
    assert kappa.value == pytest.approx(float(_kappa(y, p)))
    ref = stats.bootstrap(
        (y, p), _kappa, paired=True, method="BCa", n_resamples=10000, random_state=np.random.default_rng(4)
    )
    r_lo, r_hi = _ci(ref)
    width = r_hi - r_lo
    assert kappa.ci_low == pytest.approx(r_lo, abs=0.04 * width)
    assert kappa.ci_high == pytest.approx(r_hi, abs=0.04 * width)


def test_macro_f1_and_balanced_accuracy_of_confusion_matrices_match_sklearn() -> None:
    from sklearn.metrics import balanced_accuracy_score, f1_score

    rng = np.random.default_rng(3)
    gold, pred = rng.integers(0, 4, 60), rng.integers(0, 5, 60)  # class 4 is predicted, never gold
    cm = np.zeros((5, 5))
    np.add.at(cm, (gold, pred), 1)
    assert macro_f1(cm) == pytest.approx(f1_score(gold, pred, average="macro", zero_division=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn: y_pred has a class y_true lacks
        expected = balanced_accuracy_score(gold, pred)
    assert balanced_accuracy(cm) == pytest.approx(expected)
    batch = np.stack([cm, np.zeros((5, 5))])  # an empty table: NaN, not 0
    assert macro_f1(batch)[0] == pytest.approx(macro_f1(cm)) and np.isnan(macro_f1(batch)[1])
    assert np.isnan(balanced_accuracy(batch)[1])
    assert macro_f1(cm, classes=np.arange(5) < 4) == pytest.approx(  # the last column is no class
        f1_score(gold, pred, labels=[0, 1, 2, 3], average="macro", zero_division=0)
    )


def test_ids_read_the_same_everywhere() -> None:
    assert [id_text(v) for v in (3.0, 3, "3", 2.5, "03")] == ["3", "3", "3", "2.5", "03"]


def test_auto_method_rule() -> None:
    assert resolve_ci_method("auto", 40) == "bca" and resolve_ci_method("auto", 150) == "percentile"
    assert resolve_ci_method("percentile", 10) == "percentile"
    with pytest.raises(ValueError, match="ci method"):
        resolve_ci_method("student", 10)


def _duplicated(n_unique: int = 60, copies: int = 3) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(11)
    human = rng.integers(1, 6, n_unique).astype(float)
    judge = np.clip(human + rng.integers(-1, 2, n_unique), 1, 5)
    ids = [f"q{k}" for k in range(n_unique)]
    unique_scores = pd.DataFrame({"id": ids, "score": judge})
    unique_labels = pd.DataFrame({"id": ids, "label": human})
    dup_ids = [f"q{k}-{c}" for k in range(n_unique) for c in range(copies)]
    scores = pd.DataFrame({"id": dup_ids, "score": np.repeat(judge, copies), "prompt": np.repeat(ids, copies)})
    labels = pd.DataFrame({"id": dup_ids, "label": np.repeat(human, copies)})
    return scores, labels, unique_scores, unique_labels


def test_cluster_bootstrap_of_duplicated_items_equals_the_deduplicated_interval() -> None:
    scores, labels, unique_scores, unique_labels = _duplicated()
    kw = {"label_type": "ordinal", "n_boot": 3000, "seed": 0, "ci_method": "percentile"}
    grouped = calibrate(scores, labels, group="prompt", **kw)
    dedup = calibrate(unique_scores, unique_labels, **kw)
    naive = calibrate(scores, labels, **kw)
    assert grouped.group == "prompt" and grouped.n_groups == 60 and naive.group is None
    for name in ("accuracy", "cohen_kappa", "kappa_quadratic", "mae", "spearman"):
        g, d, i = grouped.metrics[name], dedup.metrics[name], naive.metrics[name]
        assert g.value == pytest.approx(d.value)
        width = d.ci_high - d.ci_low
        assert g.ci_low == pytest.approx(d.ci_low, abs=0.05 * width)
        assert g.ci_high == pytest.approx(d.ci_high, abs=0.05 * width)
        # items resampled as if independent: about 1/sqrt(3) of the honest width
        assert (i.ci_high - i.ci_low) < 0.75 * width
    with pytest.raises(Exception, match="no column 'article'"):
        calibrate(scores, labels, group="article", **kw)


def test_group_and_ci_method_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scores, labels, _, _ = _duplicated()
    scores.to_csv(tmp_path / "judge.csv", index=False)
    labels.to_csv(tmp_path / "human.csv", index=False)
    out = tmp_path / "report.json"
    args = ["calibrate", "--judge", str(tmp_path / "judge.csv"), "--human", str(tmp_path / "human.csv")]
    main([*args, "--label-type", "ordinal", "--bootstrap", "500", "--group", "prompt", "--json", str(out)])
    report = json.loads(out.read_text())
    assert report["group"] == "prompt" and report["n_groups"] == 60
    assert report["ci_method"] == "bca"  # auto: 60 groups is below 100
    assert "BCa intervals, resampling 60 groups of prompt" in capsys.readouterr().out
    main([*args, "--label-type", "ordinal", "--bootstrap", "500", "--ci-method", "percentile", "--json", str(out)])
    report = json.loads(out.read_text())
    assert report["group"] is None and report["ci_method"] == "percentile"  # 180 items, no grouping
    # the group column may live in the labels file instead of the judge file: the same report
    scores.drop(columns="prompt").to_csv(tmp_path / "judge_bare.csv", index=False)
    labels.merge(scores[["id", "prompt"]].drop_duplicates("id"), on="id").to_csv(tmp_path / "human_g.csv", index=False)
    out_g = tmp_path / "report_g.json"
    main(
        ["calibrate", "--judge", str(tmp_path / "judge_bare.csv"), "--human", str(tmp_path / "human_g.csv")]
        + ["--label-type", "ordinal", "--bootstrap", "500", "--group", "prompt", "--json", str(out_g)]
    )
    main([*args, "--label-type", "ordinal", "--bootstrap", "500", "--group", "prompt", "--json", str(out)])
    from_labels, from_judge = json.loads(out_g.read_text()), json.loads(out.read_text())
    assert from_labels["n_groups"] == 60
    for name in ("spearman", "kappa_quadratic"):
        assert from_labels["metrics"][name] == from_judge["metrics"][name]


def test_mtbench_judgments_group_by_question_automatically() -> None:
    rows = [(q, t, w) for q in range(30) for t in (1, 2) for w in ("A", "B", "tie")]
    ids = [f"{q}:m1:m2:t{t}:{w}" for q, t, w in rows]
    rng = np.random.default_rng(0)
    human = rng.choice(["A", "B", "tie"], len(rows))
    judge = np.where(rng.random(len(rows)) < 0.7, human, "A")
    scores = pd.DataFrame({"id": ids, "score": judge, "question_id": [q for q, _, _ in rows]})
    report = calibrate(scores, pd.DataFrame({"id": ids, "label": human}), label_type="pairwise", n_boot=200)
    assert report.group == "question_id" and report.n_groups == 30
    items = calibrate(scores, pd.DataFrame({"id": ids, "label": human}), label_type="pairwise", n_boot=200, group="id")
    assert items.group is None


def test_eval_cluster_bootstrap_resamples_groups_for_both_systems() -> None:
    rng = np.random.default_rng(5)
    n_groups, copies = 50, 4
    base = np.repeat(rng.normal(0.5, 0.2, n_groups), copies)
    tuned = base + np.repeat(rng.normal(0.05, 0.2, n_groups), copies)
    groups = np.repeat(np.arange(n_groups), copies)
    rs = Resampling(n_boot=3000, n_perm=200, seed=1, ci="percentile")
    grouped = paired_delta(tuned, base, None, True, rs, groups=groups)
    naive = paired_delta(tuned, base, None, True, rs)
    dedup = paired_delta(tuned[::copies], base[::copies], None, True, rs)
    width = dedup["ci_high"] - dedup["ci_low"]  # type: ignore[operator]
    assert grouped["ci_low"] == pytest.approx(dedup["ci_low"], abs=1e-9)  # same draws of the same groups
    assert grouped["ci_high"] == pytest.approx(dedup["ci_high"], abs=1e-9)
    assert naive["ci_high"] - naive["ci_low"] < 0.75 * width  # type: ignore[operator]
    value = system_value(tuned, None, Resampling(n_boot=2000, seed=1, ci="bca"), groups=groups)
    ref = system_value(tuned[::copies], None, Resampling(n_boot=2000, seed=1, ci="bca"))
    assert value["ci_low"] == pytest.approx(ref["ci_low"]) and value["ci_high"] == pytest.approx(ref["ci_high"])


def test_eval_suite_group_column_and_provenance(tmp_path: Path) -> None:
    rows = []
    for q in range(12):
        for s in range(3):
            rows.append({"id": f"{q}-{s}", "input": "x", "reference": f"r{q}", "prompt": q, "a": f"r{q}", "b": "no"})
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    suite = {
        "data": "items.jsonl",
        "systems": {"a": {"column": "a"}, "b": {"column": "b"}},
        "metrics": ["exact_match"],
        "bootstrap": 200,
        "permutations": 200,
        "group": "prompt",
        "ci": "bca",
    }
    result = evaluate(suite, base_dir=tmp_path)
    boot = result.provenance["bootstrap"]
    assert boot["group"] == "prompt" and boot["n_groups"] == 12 and boot["ci"] == "bca"
    assert result.systems["a"]["exact_match"]["value"] == 1.0
    rows[0].pop("prompt")
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(Exception, match="group column"):
        evaluate(suite, base_dir=tmp_path)


def test_wilson_matches_scipy() -> None:
    for k, n in [(0, 5), (3, 4), (6, 8), (17, 40), (40, 40), (512, 1000)]:
        ref = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert wilson(k / n, n) == pytest.approx((ref.low, ref.high), abs=1e-12)
    assert wilson(None, 10) == (None, None) and wilson(0.5, 0) == (None, None)


def test_spearman_ci_is_fisher_z_and_covers() -> None:
    rng = np.random.default_rng(11)
    x = rng.normal(size=30)
    y = np.round(x + rng.normal(size=30))  # ties on one side: average ranks
    rho, lo, hi = spearman_ci(list(x), list(y))
    ref = stats.spearmanr(x, y).statistic
    half = stats.norm.ppf(0.975) * np.sqrt((1 + ref**2 / 2) / (30 - 3))  # Bonett & Wright (2000)
    assert (rho, lo, hi) == pytest.approx((ref, np.tanh(np.arctanh(ref) - half), np.tanh(np.arctanh(ref) + half)))
    # close to the bootstrap over items (scipy's, percentile) at this n
    boot = stats.bootstrap(
        (x, y), lambda a, b: stats.spearmanr(a, b).statistic, paired=True, vectorized=False,
        n_resamples=2000, method="percentile", random_state=np.random.default_rng(2),
    )  # fmt: skip
    assert (lo, hi) == pytest.approx(_ci(boot), abs=0.05)
    # coverage of the population ρ_s = (6/π) asin(r/2) of a bivariate normal with correlation r
    r, n, reps = 0.5, 40, 1000
    truth = 6 / np.pi * np.arcsin(r / 2)
    xy = rng.multivariate_normal([0, 0], [[1, r], [r, 1]], size=(reps, n))
    hits = 0
    for sample in xy:
        _, lo, hi = spearman_ci(list(sample[:, 0]), list(sample[:, 1]))
        hits += lo <= truth <= hi
    assert 0.93 <= hits / reps <= 0.97
    # undefined and degenerate cases
    assert spearman_ci([1, 2, 3], [1, 3, 2])[1:] == (None, None)
    assert spearman_ci([1, 2, 3, 4], [5, 5, 5, 5]) == (None, None, None)
    assert spearman_ci([1, 2, 3, 4, 5], [2, 4, 6, 8, 10]) == pytest.approx((1.0, 1.0, 1.0))
