"""Calibration on public human-label sets (skipped when ../shared/data is absent).

Each test recomputes the key numbers independently (pandas + sklearn/scipy on the joined arrays).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import stats
from sklearn.metrics import cohen_kappa_score

from calibration import calibrate
from calibration.datasets import load_pandalm, load_summeval
from judge.cli import cli, main
from judge.testing.server import LoopbackServer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _need(*parts: str) -> Path:
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path


def _majority(values: list[str]) -> str:
    counts = Counter(values).most_common()
    return "tie" if len(counts) > 1 and counts[0][1] == counts[1][1] else counts[0][0]


def test_llmfao_gpt4_vs_crowd_through_the_cli(tmp_path: Path, capsys) -> None:
    root = _need("llmfao")
    out = tmp_path / "llmfao.json"
    main(
        [
            "calibrate",
            "--judge",
            str(root / "gpt4-crowd-comparisons.csv"),
            "--human",
            str(root / "crowd-comparisons.csv"),
            "--label-column",
            "winner",
            "--annotator-column",
            "worker",
            "--label-type",
            "pairwise",
            "--bootstrap",
            "500",
            "--json",
            str(out),
        ]
    )
    report = json.loads(out.read_text())
    assert (report["n_items"], report["n_unscored"], report["n_missing_label"]) == (2139, 0, 0)

    to_ab = {"left": "A", "right": "B", "tie": "tie"}
    gpt = pd.read_csv(root / "gpt4-crowd-comparisons.csv").set_index("id")["winner"].map(to_ab)
    crowd = pd.read_csv(root / "crowd-comparisons.csv")
    crowd["winner"] = crowd["winner"].map(to_ab)
    gold = crowd.groupby("id")["winner"].agg(lambda s: _majority(list(s)))
    y, p = gold.loc[gpt.index].to_numpy(), gpt.to_numpy()
    m = report["metrics"]
    assert m["agreement_with_ties"]["value"] == pytest.approx(np.mean(y == p))
    both = (y != "tie") & (p != "tie")
    assert m["agreement_without_ties"]["value"] == pytest.approx(np.mean(y[both] == p[both]))
    assert m["cohen_kappa"]["value"] == pytest.approx(cohen_kappa_score(y, p))
    assert report["tie_rate"]["judge"] == pytest.approx(np.mean(p == "tie"))

    # human-human: every worker against the majority of the other workers on the pair, pooled
    hits, hits_nt, n_nt = [], [], 0
    for _, group in crowd.groupby("id"):
        labels = list(group["winner"])
        for j, own in enumerate(labels):
            rest = labels[:j] + labels[j + 1 :]
            if not rest:
                continue
            other = _majority(rest)
            hits.append(own == other)
            if own != "tie" and other != "tie":
                n_nt += 1
                hits_nt.append(own == other)
    ceiling = report["human_ceiling"]
    assert ceiling["agreement_with_ties"]["value"] == pytest.approx(np.mean(hits))
    assert ceiling["agreement_without_ties"]["value"] == pytest.approx(np.mean(hits_nt))
    assert report["ceiling_pairs"] == len(hits)
    # the published picture: GPT-4 rarely says tie, the crowd often does; without ties GPT-4 is near the ceiling
    assert m["agreement_with_ties"]["value"] < ceiling["agreement_with_ties"]["value"]
    assert "human vs human" in capsys.readouterr().out


def test_pandalm_three_annotator_ceiling() -> None:
    items, labels = load_pandalm(_need("pandalm_testset", "testset-v1.json"))
    # a length baseline as the "judge": the longer response wins
    longer = np.where(items["response1"].str.len() > items["response2"].str.len(), "A", "B")
    report = calibrate(items.assign(score=longer), labels, label_type="pairwise", n_boot=300, seed=0)
    assert report.n_annotators == 3 and report.n_compared == 999
    wide = labels.pivot(index="id", columns="annotator", values="label")
    pooled = []
    for a in wide.columns:
        others = wide.drop(columns=a)
        target = [_majority(list(r)) for r in others.itertuples(index=False)]
        pooled.extend(zip(wide[a], target, strict=True))
    own, target = zip(*pooled, strict=True)
    ceiling = report.human_ceiling
    assert ceiling is not None
    assert ceiling["agreement_with_ties"].value == pytest.approx(np.mean(np.array(own) == np.array(target)))
    assert ceiling["cohen_kappa"].value == pytest.approx(cohen_kappa_score(own, target))
    # the PandaLM README reports inter-annotator κ of 0.85-0.88; leave-one-out agrees
    assert 0.8 < ceiling["cohen_kappa"].value < 0.95
    assert report.metrics["cohen_kappa"].value < ceiling["cohen_kappa"].value


def test_summeval_correlations_of_score_columns() -> None:
    items, labels = load_summeval(_need("summeval", "summeval_flat.jsonl"), dimension="coherence")
    length = items.assign(score=items["summary"].str.split().str.len().astype(float))
    report = calibrate(length, labels, label_type="ordinal", n_boot=300, seed=0)
    assert report.n_compared == 1600 and "kappa_linear" not in report.metrics  # continuous judge: no κ
    y = items["coherence"].to_numpy(float)
    x = length["score"].to_numpy(float)
    assert report.metrics["spearman"].value == pytest.approx(stats.spearmanr(y, x).statistic)
    assert report.metrics["kendall_tau"].value == pytest.approx(stats.kendalltau(y, x).statistic)
    assert report.metrics["pearson"].value == pytest.approx(stats.pearsonr(y, x).statistic)
    other = calibrate(items.assign(score=items["relevance"]), labels, label_type="ordinal", n_boot=300, seed=0)
    assert other.metrics["spearman"].value == pytest.approx(stats.spearmanr(y, items["relevance"]).statistic)
    lo, hi = other.metrics["spearman"].ci_low, other.metrics["spearman"].ci_high
    assert lo is not None and hi is not None and lo < other.metrics["spearman"].value < hi and hi - lo < 0.15


def _cli(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.output


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_llmbar_mtbench_expert_labels_convert_judge_calibrate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The one LLMBar flow: ``mtbench llmbar`` -> ``mtbench judge --pairs`` -> ``calibrate``, on all 200 pairs."""
    dataset = _need("llmbar", "Processed", "MT-Bench", "dataset.json")
    mt = _need("mt_bench")
    conv = tmp_path / "llmbar_mt"
    _cli(
        "mtbench",
        "llmbar",
        str(dataset),
        "--questions",
        str(mt / "question.jsonl"),
        "--answers",
        str(mt / "model_answer"),
        "--out-dir",
        str(conv),
    )
    labels = conv / "labels.jsonl"
    judged = conv / "judged.jsonl"
    monkeypatch.setenv("OPENAI_API_KEY", "loopback")
    # a hash-based fake judge: its verdicts are arbitrary but deterministic, so only the plumbing is tested
    with LoopbackServer() as srv:
        _cli(
            "mtbench",
            "judge",
            "--questions",
            str(conv / "question.jsonl"),
            "--answers",
            str(conv / "model_answer"),
            "--mode",
            "pairwise-all",
            "--pairs",
            str(labels),
            "--reference",
            str(mt / "reference_answer" / "gpt-4.jsonl"),
            "--judge",
            "openai/loopback",
            "--base-url",
            srv.base_url,
            "--concurrency",
            "32",
            "--out",
            str(judged),
        )
    out = tmp_path / "report.json"
    _cli(
        "calibrate",
        "--judge",
        str(judged),
        "--human",
        str(labels),
        "--label-type",
        "pairwise",
        "--bootstrap",
        "200",
        "--json",
        str(out),
    )
    report = json.loads(out.read_text())
    assert (report["n_items"], report["n_compared"]) == (200, 200)
    assert (report["n_unscored"], report["n_missing_label"]) == (0, 0)
    assert not report["unscored_ids"] and not report["missing_label_ids"] and not report["unmatched_label_ids"]

    # independent join on (question_id, model_1, model_2, turn), with winners read as written
    key = ("question_id", "model_1", "model_2", "turn")
    human = {tuple(r[k] for k in key): r["winner"] for r in _jsonl(labels)}
    judge = {tuple(r[k] for k in key): r["winner"] for r in _jsonl(judged)}
    assert len(human) == 200 and judge.keys() == human.keys()
    y = np.array([human[k] for k in human])
    p = np.array([judge[k] for k in human])
    m = report["metrics"]
    agreement = float(np.mean(y == p))
    assert m["agreement_with_ties"]["value"] == pytest.approx(agreement)
    decisive = p != "tie"  # the experts never say tie
    assert m["agreement_without_ties"]["value"] == pytest.approx(np.mean(y[decisive] == p[decisive]))
    assert m["cohen_kappa"]["value"] == pytest.approx(cohen_kappa_score(y, p))
    assert report["tie_rate"]["judge"] == pytest.approx(np.mean(p == "tie"))
    capsys.readouterr()
    kappa, tie_rate = m["cohen_kappa"]["value"], np.mean(p == "tie")
    with capsys.disabled():  # the measured numbers, for the record (of a fake judge: meaningless as quality)
        print(
            f"\nllmbar mt-bench vs hash-based loopback judge: compared {report['n_compared']}, "
            f"agreement {agreement:.3f}, kappa {kappa:.3f}, judge tie rate {tie_rate:.3f}"
        )
