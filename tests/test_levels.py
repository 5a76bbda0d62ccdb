"""``judge calibrate --level summary|system``: correlations at the levels papers report, against an independent
re-implementation of the averaging rules (pandas + scipy on the raw SummEval file)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import shared_data
from tests.test_bad_inputs import run_cli

# ------------------------------------------------------------------------------------------ --level


def test_summary_and_system_level_match_an_independent_averaging(tmp_path: Path, capsys) -> None:
    """SummEval, the experts' coherence as the 'judge' of relevance: summary level = per-article correlations
    averaged over articles (articles with a constant side skipped and counted), system level = correlation of
    the 16 systems' means; recomputed here with pandas + scipy on the raw file."""
    from scipy import stats

    with shared_data("summeval", "summeval_flat.jsonl").open() as fh:
        rows = [json.loads(line) for line in fh]
    frame = pd.DataFrame(
        {
            "id": [f"{r['doc_id']}/{r['system_id']}" for r in rows],
            "score": [round(r["coherence"]) for r in rows],  # rounded: some articles become constant
            "doc": [r["doc_id"] for r in rows],
            "sys": [r["system_id"] for r in rows],
            "label": [r["relevance"] for r in rows],
        }
    )
    # the first three articles' judge scores made constant, so they must be skipped
    first = frame["doc"].isin(sorted(frame["doc"].unique())[:3])
    frame.loc[first, "score"] = 3
    judge_file, labels = tmp_path / "judge.csv", tmp_path / "labels.csv"
    frame[["id", "score", "doc", "sys"]].to_csv(judge_file, index=False)
    frame[["id", "label"]].to_csv(labels, index=False)
    out = tmp_path / "r.json"
    argv = ["calibrate", "--judge", str(judge_file), "--human", str(labels), "--group", "doc", "--system", "sys"]
    code, text = run_cli(
        [*argv, "--level", "summary", "--level", "system", "--bootstrap", "300", "--json", str(out)], capsys
    )
    assert code == 0, text
    levels = {lv["level"]: lv for lv in json.loads(out.read_text())["levels"]}

    per_doc = {"pearson": [], "spearman": [], "kendall": []}
    skipped = 0
    for _, g in frame.groupby("doc"):
        if g["score"].nunique() < 2 or g["label"].nunique() < 2:
            skipped += 1
            continue
        per_doc["pearson"].append(stats.pearsonr(g["score"], g["label"]).statistic)
        per_doc["spearman"].append(stats.spearmanr(g["score"], g["label"]).statistic)
        per_doc["kendall"].append(stats.kendalltau(g["score"], g["label"]).statistic)
    summary = levels["summary"]
    assert summary["n_skipped"] == skipped >= 3 and summary["n_units"] == 100 - skipped
    for name, values in per_doc.items():
        assert summary["metrics"][name]["value"] == pytest.approx(np.mean(values), abs=1e-12)
        lo, hi = summary["metrics"][name]["ci_low"], summary["metrics"][name]["ci_high"]
        assert lo < np.mean(values) < hi

    means = frame.groupby("sys")[["score", "label"]].mean()
    system = levels["system"]
    assert system["n_units"] == 16
    assert system["metrics"]["pearson"]["value"] == pytest.approx(stats.pearsonr(means["score"], means["label"])[0])
    assert system["metrics"]["spearman"]["value"] == pytest.approx(stats.spearmanr(means["score"], means["label"])[0])
    assert system["metrics"]["kendall"]["value"] == pytest.approx(stats.kendalltau(means["score"], means["label"])[0])
    assert f"summary level ({100 - skipped} documents, {skipped} skipped" in text
    # a level without the column it needs is a usage error
    code, text = run_cli(["calibrate", "--judge", str(judge_file), "--human", str(labels), "--level", "system"], capsys)
    assert code == 2 and "--level system needs --system COLUMN" in text
