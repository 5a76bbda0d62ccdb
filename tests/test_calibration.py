"""Calibration: statistics against the libraries, bootstrap, coverage, the CLI and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from calibration import calibrate, load_human_labels, render_text
from calibration.agreement import build_design, encode_auc_cells, encode_cells, point_estimates, table_estimates
from calibration.bootstrap import bootstrap
from judge.cli import main
from judge.errors import DataError

CONTRACT = {
    "n_items",
    "n_scored",
    "n_unscored",
    "n_missing_label",
    "label_type",
    "metrics",
    "human_ceiling",
    "warnings",
}


def _case(kind: str, rng: np.random.Generator, n: int = 150):
    y = rng.integers(1, 6, n).astype(float)
    if kind == "ordinal":
        return "ordinal", y, np.clip(y + rng.integers(-2, 3, n), 1, 7).astype(float), None
    if kind == "ordinal-continuous":
        return "ordinal", y, y + rng.normal(0, 1.5, n), None
    if kind in ("pairwise", "nominal"):
        y = rng.integers(0, 3, n).astype(float)
        return kind, y, np.where(rng.random(n) < 0.6, y, rng.integers(0, 3, n)).astype(float), None
    y = rng.integers(0, 2, n).astype(float)
    cont = y + rng.normal(0, 1, n)
    return "binary", y, (cont > 0.5).astype(float), cont


@pytest.mark.parametrize("kind", ["ordinal", "ordinal-continuous", "pairwise", "nominal", "binary"])
def test_vectorised_tables_equal_library_values_and_bootstrap_is_seeded(kind: str) -> None:
    """The bootstrap's table formulas give exactly the sklearn/scipy/krippendorff value on the full sample."""
    label_type, y, p, cont = _case(kind, np.random.default_rng(7))
    design = build_design(label_type, y, p, cont)
    points = point_estimates(design, y, p, cont)
    size = (len(design.human_grid), len(design.judge_grid))
    table = np.bincount(encode_cells(design, y, p), minlength=size[0] * size[1]).reshape(1, *size)
    auc = None
    if cont is not None:
        auc = np.bincount(encode_auc_cells(design, y, cont), minlength=2 * len(design.auc_grid)).reshape(1, 2, -1)
        assert points["roc_auc"] == pytest.approx(roc_auc_score(y, cont))
    from_tables = table_estimates(design, table, auc)
    for name in design.metrics:
        assert from_tables[name][0] == pytest.approx(points[name], abs=1e-12), name

    cells = encode_cells(design, y, p)
    auc_cells = encode_auc_cells(design, y, cont) if cont is not None else None
    first = bootstrap(design, cells, auc_cells=auc_cells, n_boot=300, seed=1)
    again = bootstrap(design, cells, auc_cells=auc_cells, n_boot=300, seed=1)
    other = bootstrap(design, cells, auc_cells=auc_cells, n_boot=300, seed=2)
    for name in design.metrics:
        np.testing.assert_array_equal(first[name], again[name])
        assert not np.array_equal(first[name], other[name])
        lo, hi = np.percentile(first[name], [2.5, 97.5])
        assert lo <= points[name] <= hi, name


def test_bootstrap_replicate_equals_library_on_the_resampled_items() -> None:
    """One resample's statistics equal scipy/sklearn run on the explicitly resampled arrays."""
    rng = np.random.default_rng(3)
    _, y, p, _ = _case("ordinal", rng, n=120)
    design = build_design("ordinal", y, p)
    reps = bootstrap(design, encode_cells(design, y, p), n_boot=5, seed=11)
    idx = np.random.default_rng(11).integers(0, len(y), size=(5, len(y)))[4]
    ys, ps = y[idx], p[idx]
    assert reps["kendall_tau"][4] == pytest.approx(stats.kendalltau(ys, ps).statistic)
    assert reps["spearman"][4] == pytest.approx(stats.spearmanr(ys, ps).statistic)
    grid = list(design.human_grid)
    hi, ji = [grid.index(v) for v in ys], [grid.index(v) for v in ps]
    expected = cohen_kappa_score(hi, ji, labels=range(len(grid)), weights="quadratic")
    assert reps["kappa_quadratic"][4] == pytest.approx(expected)


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def ordinal_files(tmp_path: Path) -> tuple[Path, Path, pd.DataFrame]:
    """120 verdicts (3 unscored, one id unlabelled) and 3 annotators on a 1-5 scale, plus a stray label."""
    rng = np.random.default_rng(5)
    truth = rng.integers(1, 6, 120)
    verdicts = []
    for i, t in enumerate(truth):
        status = "unscored" if i in (4, 50, 77) else "ok"
        score = None if status == "unscored" else int(np.clip(t + rng.integers(-1, 2), 1, 5))
        verdicts.append(
            {
                "id": f"q{i}",
                "rubric": "helpfulness",
                "score": score,
                "status": status,
                "category": "even" if i % 2 == 0 else "odd",
                "input": f"question {i}",
                "output": f"answer {i}",
            }
        )
    labels = []
    for i, t in enumerate(truth):
        if i == 9:
            continue
        for a in ("ann", "bob", "cat"):
            labels.append({"id": f"q{i}", "annotator": a, "label": int(np.clip(t + rng.integers(-1, 2), 1, 5))})
    labels.append({"id": "stray", "annotator": "ann", "label": 3})
    frame = pd.DataFrame(labels)
    judge = _write(tmp_path / "verdicts.jsonl", verdicts)
    human = tmp_path / "labels.csv"
    frame.to_csv(human, index=False)
    return judge, human, frame


def test_cli_ordinal_report_coverage_ceiling_and_json(ordinal_files, tmp_path: Path, capsys) -> None:
    judge, human, labels = ordinal_files
    out = tmp_path / "report.json"
    main(
        [
            "calibrate",
            "--judge",
            str(judge),
            "--human",
            str(human),
            "--label-type",
            "ordinal",
            "--scale",
            "1",
            "5",
            "--bootstrap",
            "500",
            "--json",
            str(out),
            "--by",
            "category",
        ]
    )
    text = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert set(report) >= CONTRACT
    assert (report["n_items"], report["n_scored"], report["n_unscored"], report["n_missing_label"]) == (120, 117, 3, 1)
    assert report["unscored_ids"] == ["q4", "q50", "q77"] and report["missing_label_ids"] == ["q9"]
    assert report["unmatched_label_ids"] == ["stray"] and report["n_compared"] == 116
    assert any("unscored" in w for w in report["warnings"]) and any("stray" in w for w in report["warnings"])
    assert set(report["metrics"]) == {
        "accuracy",
        "within_1",
        "mae",
        "cohen_kappa",
        "kappa_linear",
        "kappa_quadratic",
        "krippendorff_alpha",
        "spearman",
        "kendall_tau",
        "pearson",
    }
    assert set(report["human_ceiling"]) == set(report["metrics"])
    for stat in [*report["metrics"].values(), *report["human_ceiling"].values()]:
        assert stat["ci_low"] <= stat["value"] <= stat["ci_high"]

    # independent recomputation of the judge side from the raw files
    verdicts = pd.read_json(judge, lines=True)
    scored = verdicts[verdicts["status"] == "ok"].set_index("id")["score"]
    gold = labels.groupby("id")["label"].median()
    both = scored.index.intersection(gold.index)
    y, p = gold[both].to_numpy(float), scored[both].to_numpy(float)
    assert report["metrics"]["spearman"]["value"] == pytest.approx(stats.spearmanr(y, p).statistic)
    assert report["metrics"]["mae"]["value"] == pytest.approx(np.abs(y - p).mean())
    # leave-one-out ceiling, pooled, recomputed by hand: exact agreement of each annotator with the others' median
    pairs = [
        (row.label, labels[(labels.id == row.id) & (labels.annotator != row.annotator)]["label"].median())
        for row in labels[labels.id != "stray"].itertuples()
    ]
    assert report["human_ceiling"]["accuracy"]["value"] == pytest.approx(np.mean([a == b for a, b in pairs]))
    assert report["ceiling_pairs"] == len(pairs)

    assert set(report["groups"]) == {"even", "odd"}
    assert report["groups"]["even"]["n_items"] == 60
    assert "human vs human (ceiling)" in text and "group even" in text
    assert report["isotonic"]["cv_mae_mapped"] >= 0
    top = report["disagreements"][0]
    assert top["texts"]["input"].startswith("question") and top["gap"] >= report["disagreements"][-1]["gap"]


def test_python_api_binary_with_continuous_scores_fits_threshold_and_auc() -> None:
    rng = np.random.default_rng(9)
    y = rng.integers(0, 2, 160)
    score = pd.Series(y * 2.0 + rng.normal(0, 1.2, 160), index=[f"x{i}" for i in range(160)])
    labels = pd.Series(y, index=score.index)
    report = calibrate(score, labels, label_type="binary", n_boot=300, seed=0)
    assert report.metrics["roc_auc"].value == pytest.approx(roc_auc_score(y, score.to_numpy()))
    assert report.threshold is not None and 0 < report.threshold.threshold < 2.5
    assert report.threshold.cv_f1 > 0.6 and report.human_ceiling is None
    assert any("out-of-fold" in w for w in report.warnings)
    fixed = calibrate(score, labels, label_type="binary", n_boot=0, threshold=1.0)
    assert fixed.metrics["accuracy"].value == pytest.approx(np.mean((score.to_numpy() >= 1.0) == y))
    assert fixed.metrics["accuracy"].ci_low is None
    assert "roc_auc" in render_text(report)


def test_pairwise_spellings_ties_and_tie_rate() -> None:
    ids = [str(i) for i in range(40)]
    judge = pd.DataFrame({"id": ids, "score": ["model_1", "B", "tie", "[[A]]"] * 10})
    labels = pd.DataFrame(
        {
            "id": ids * 2,
            "annotator": ["h1"] * 40 + ["h2"] * 40,
            "label": ["A", "right", "tie", "A"] * 10 + ["A", "B", "tie", "B"] * 10,
        }
    )
    report = calibrate(judge, labels, label_type="pairwise", n_boot=100)
    # items 3, 7, ...: h1 says A, h2 says B -> tied majority -> "tie"; the judge said A there
    assert len(report.consensus_tie_ids) == 10
    assert report.metrics["agreement_with_ties"].value == pytest.approx(0.75)
    assert report.metrics["agreement_without_ties"].value == pytest.approx(1.0)
    assert report.tie_rate == {"judge": 0.25, "human": 0.5}
    assert report.confusion is not None and report.confusion.labels == ["A", "B", "tie"]


@pytest.mark.parametrize(
    ("rows", "extra", "message"),
    [
        ([{"id": "q1", "label": "good"}], ["--label-type", "ordinal"], "labels.csv:2, field 'label': label 'good'"),
        (
            [{"id": "q1", "label": 7}],
            ["--scale", "1", "5"],
            "labels.csv:2, field 'label': label '7' for item 'q1' is outside the scale 1..5",
        ),
        (
            [{"id": "q1", "annotator": "a", "label": 2}, {"id": "q1", "annotator": "a", "label": 3}],
            [],
            "labelled twice by annotator 'a' (lines 2, 3)",
        ),
        ([{"id": "zzz", "label": 2}], [], "no judge item has a human label"),
        ([{"id": f"q{i}", "label": 1 + i % 3} for i in range(5)], [], "only 5 items have both"),
    ],
)
def test_bad_label_files_are_one_line_errors(tmp_path: Path, capsys, rows, extra, message) -> None:
    judge = _write(tmp_path / "v.jsonl", [{"id": f"q{i}", "score": 1 + i % 3, "status": "ok"} for i in range(30)])
    human = tmp_path / "labels.csv"
    pd.DataFrame(rows).to_csv(human, index=False)
    with pytest.raises(SystemExit) as exc:
        main(["calibrate", "--judge", str(judge), "--human", str(human), "--bootstrap", "50", *extra])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_single_class_and_small_sample_warn(tmp_path: Path) -> None:
    labels, kind = load_human_labels(_write(tmp_path / "l.jsonl", [{"id": i, "label": 1} for i in range(20)]))
    assert kind == "binary"
    report = calibrate(pd.Series([1, 0] * 10, index=[str(i) for i in range(20)]), labels, n_boot=50)
    assert any("single class" in w for w in report.warnings)
    assert any("only 20 labelled items" in w and "CI" in w for w in report.warnings)
    assert report.metrics["cohen_kappa"].value is None or np.isfinite(report.metrics["cohen_kappa"].value)
    json.dumps(report.to_dict(), allow_nan=False)


def test_judge_file_problems_name_the_line(tmp_path: Path) -> None:
    from calibration import load_judge_scores

    # verdicts like A/B cannot be averaged: a repeated id is an error naming the line
    judge = _write(tmp_path / "v.jsonl", [{"id": "a", "score": "A"}, {"id": "a", "score": "B"}])
    with pytest.raises(DataError, match=r"v.jsonl:2, field 'id': item 'a' appears more than once"):
        load_judge_scores(judge)


def test_repeated_numeric_ids_are_averaged_and_said(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from calibration import load_judge_scores
    from judge.cli import cli

    rows = [{"id": "a", "score": 1}, {"id": "a", "score": 4}, {"id": "a", "status": "unscored", "score": None}]
    rows += [{"id": str(i), "score": i % 5 + 1} for i in range(30)]
    judge = _write(tmp_path / "v.jsonl", rows)
    scores = load_judge_scores(judge)
    assert scores.set_index("id").loc["a", "score"] == 2.5
    assert scores.attrs["averaged_repeats"] == {"ids": 1, "rows": 3}
    human = [{"id": "a", "label": 3}] + [{"id": str(i), "label": i % 5 + 1} for i in range(30)]
    labels = _write(tmp_path / "l.jsonl", human)
    res = CliRunner().invoke(cli, ["calibrate", "--judge", str(judge), "--human", str(labels), "--bootstrap", "50"])
    assert res.exit_code == 0, res.output
    assert "1 item id(s) appear more than once" in res.output and "mean of its scored rows" in res.output


def test_cli_items_attach_texts_to_disagreements(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from judge import score
    from judge.cli import cli

    examples = Path(__file__).resolve().parents[1] / "examples"
    verdicts = tmp_path / "v.jsonl"
    score(examples / "qa.jsonl", "factuality", "fake/echo-score", cache=False).to_jsonl(verdicts)
    out = tmp_path / "r.json"
    res = CliRunner().invoke(
        cli,
        [
            "calibrate",
            "--judge",
            str(verdicts),
            "--human",
            str(examples / "qa_labels.csv"),
            "--label-type",
            "ordinal",
            "--items",
            str(examples / "qa.jsonl"),
            "--bootstrap",
            "200",
            "--json",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert report["n_items"] == 22 and report["n_scored"] == 22
    first = report["disagreements"][0]
    question = {r["id"]: r["input"] for r in map(json.loads, (examples / "qa.jsonl").read_text().splitlines())}
    assert first["texts"]["input"] == question[first["id"]]
    assert f"input: {question[first['id']]}" in res.output


def test_reliability_curve_bins_match_numpy_on_a_small_binary_example() -> None:
    """Equal-width bins, per-bin means/shares/counts, Wilson intervals, Brier and ECE, recomputed independently."""
    rng = np.random.default_rng(3)
    n = 60
    prob = rng.random(n)
    y = (rng.random(n) < prob).astype(int)
    ids = [f"r{i}" for i in range(n)]
    report = calibrate(pd.Series(prob, index=ids), pd.Series(y, index=ids), label_type="binary", n_boot=0)
    rel = report.reliability
    assert rel is not None and rel.rescale == "none" and (rel.lo, rel.hi) == (0.0, 1.0) and rel.n == n
    counts, edges = np.histogram(prob, bins=10, range=(0.0, 1.0))
    pos, _ = np.histogram(prob, bins=edges, weights=y)
    sums, _ = np.histogram(prob, bins=edges, weights=prob)
    full = counts > 0
    assert [b.n for b in rel.bins] == counts[full].tolist()
    assert [b.lo for b in rel.bins] == pytest.approx(edges[:-1][full])
    assert [b.share_positive for b in rel.bins] == pytest.approx(pos[full] / counts[full])
    assert [b.mean_score for b in rel.bins] == pytest.approx(sums[full] / counts[full])
    z = stats.norm.ppf(0.975)
    for b, k, m in zip(rel.bins, pos[full], counts[full], strict=True):
        # Wilson: the p with |k/m - p| = z * sqrt(p (1 - p) / m), i.e. the roots of a quadratic in p
        roots = np.sort(np.roots([1 + z * z / m, -(2 * k / m + z * z / m), (k / m) ** 2]).real)
        assert (b.ci_low, b.ci_high) == pytest.approx(tuple(roots), abs=1e-9)
        assert b.ci_low <= b.share_positive <= b.ci_high
    assert rel.brier == pytest.approx(np.mean((prob - y) ** 2))
    ece = np.sum(counts[full] / n * np.abs(sums[full] / counts[full] - pos[full] / counts[full]))
    assert rel.ece == pytest.approx(ece)
    assert "reliability" in report.to_dict() and "ECE" in render_text(report)

    # a 1..10 judge scale: rescaled by the observed min-max, no Brier; 0/1 verdicts and ordinal labels: no curve
    raw = 1 + 9 * prob
    rescaled = calibrate(pd.Series(raw, index=ids), pd.Series(y, index=ids), label_type="binary", n_boot=0)
    rr = rescaled.reliability
    assert rr is not None and rr.rescale == "observed" and rr.brier is None
    assert (rr.lo, rr.hi) == (pytest.approx(raw.min()), pytest.approx(raw.max()))
    r01 = (raw - raw.min()) / (raw.max() - raw.min())
    c2, _ = np.histogram(r01, bins=10, range=(0.0, 1.0))
    assert [b.n for b in rr.bins] == c2[c2 > 0].tolist()
    assert all(0 <= b.mean_score <= 1 for b in rr.bins)
    verdicts = calibrate(pd.Series(y, index=ids), pd.Series(y, index=ids), label_type="binary", n_boot=0)
    assert verdicts.reliability is None
    ordinal = calibrate(pd.Series(raw, index=ids), pd.Series(1 + y * 4, index=ids), label_type="ordinal", n_boot=0)
    assert ordinal.reliability is None


def test_interval_alpha_in_closed_form_equals_krippendorff_and_scales_to_continuous_scores() -> None:
    import krippendorff
    import numpy as np

    from calibration import calibrate
    from calibration.agreement import interval_alpha

    rng = np.random.default_rng(3)
    human = rng.integers(1, 6, size=120).astype(float)
    judge = np.round(human + rng.normal(0, 0.8, size=120), 2)  # ~150 distinct values: krippendorff still copes
    want = krippendorff.alpha(reliability_data=np.vstack([human, judge]), level_of_measurement="interval")
    assert interval_alpha(human, judge) == pytest.approx(want, abs=1e-9)
    # 3,000 items of continuous judge scores: krippendorff's values x values matrix would need ~200 GiB
    human = rng.integers(1, 6, size=3000).astype(float)
    judge = human + rng.normal(0, 0.5, size=3000)
    ids = [f"i{k}" for k in range(3000)]
    report = calibrate(pd.Series(judge, index=ids), pd.Series(human, index=ids), label_type="ordinal", n_boot=200)
    assert report.metrics["krippendorff_alpha"].value == pytest.approx(interval_alpha(human, judge), abs=1e-9)
