"""Calibration on public human-label sets (skipped when ../shared/data is absent).

Each test recomputes the key numbers independently (pandas + sklearn/scipy on the joined arrays).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import cohen_kappa_score

from calibration import calibrate
from calibration.datasets import load_llmbar_mtbench, load_pandalm, load_summeval
from judge.cli import main

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


def test_llmbar_mtbench_adapter_by_id_and_by_model_names(tmp_path: Path, capsys) -> None:
    dataset = _need("llmbar", "Processed", "MT-Bench", "dataset.json")
    _need("mt_bench", "question.jsonl")
    items, labels = load_llmbar_mtbench(dataset)
    assert len(items) == 200 and items["question_id"].notna().all()
    named = items.dropna(subset=["model_1", "model_2"])
    assert 40 < len(named) < 200

    # the judge: the longer answer wins (an independent, transparent baseline)
    items["winner"] = np.where(items["output_1"].str.len() >= items["output_2"].str.len(), "A", "B")
    by_id = tmp_path / "by_id.jsonl"
    by_id.write_text("".join(json.dumps({"id": r.id, "score": r.winner}) + "\n" for r in items.itertuples()))
    out = tmp_path / "r.json"
    main(
        [
            "calibrate",
            "--adapter",
            "llmbar-mtbench",
            "--human",
            str(dataset),
            "--judge",
            str(by_id),
            "--bootstrap",
            "200",
            "--json",
            str(out),
        ]
    )
    report = json.loads(out.read_text())
    gold = labels.set_index("id")["label"]
    expected = np.mean(items.set_index("id")["winner"] == gold)
    assert report["n_items"] == 200 and report["metrics"]["agreement_with_ties"]["value"] == pytest.approx(expected)

    # MT-Bench judgment lines (question_id, model_1, model_2, winner), half of them in swapped order
    lines = []
    for k, r in enumerate(named.itertuples()):
        w = "model_1" if r.output_1 and len(r.output_1) >= len(r.output_2) else "model_2"
        if k % 2:
            lines.append(
                {
                    "question_id": r.question_id,
                    "model_1": r.model_2,
                    "model_2": r.model_1,
                    "winner": {"model_1": "model_2", "model_2": "model_1"}[w],
                }
            )
        else:
            lines.append({"question_id": r.question_id, "model_1": r.model_1, "model_2": r.model_2, "winner": w})
    judgments = tmp_path / "mtbench_pair.jsonl"
    judgments.write_text("".join(json.dumps(x) + "\n" for x in lines))
    main(
        [
            "calibrate",
            "--adapter",
            "llmbar-mtbench",
            "--human",
            str(dataset),
            "--judge",
            str(judgments),
            "--bootstrap",
            "200",
            "--json",
            str(out),
        ]
    )
    joined = json.loads(out.read_text())
    assert joined["n_compared"] == len(named)
    sub = items.set_index("id").loc[named["id"]]
    assert joined["metrics"]["agreement_with_ties"]["value"] == pytest.approx(np.mean(sub["winner"] == gold[sub.index]))
    assert len(joined["unmatched_label_ids"]) == 200 - len(named)
    capsys.readouterr()
