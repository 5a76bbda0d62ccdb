"""``labels:`` in a ``judge eval`` suite: a judge harsh on one system, corrected by human labels on a subset.

The judge is a real OpenAI-compatible HTTP server (the loopback server) scoring with the factuality rubric:
it reads the answer's stated quality, but takes 2 points off every answer of the tuned system. People (the
labels file) give the true quality. The judge-only delta says the tuned system got worse; the prediction-
powered delta, checked against the authors' ppi-python, says it got better -- and a gate reading it passes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from judge.testing.server import LoopbackServer, Reply
from judge.textfmt import fmt_ci
from tests.test_eval import run_cli, write_jsonl

N = 60
LABELLED = 20


def _quality(i: int, system: str) -> int:
    base = 1 + (i * 7) % 4  # 1..4
    return min(5, base + 1) if system == "tuned" and i % 5 else base  # tuned is better on 4 items of 5


def _judge(answer: str) -> int:
    q = int(re.search(r"quality (\d)", answer).group(1))  # type: ignore[union-attr]
    return max(1, q - 2) if "tuned" in answer else q


def responder(req: dict) -> Reply:
    answer = req["messages"][-1]["content"].split("[Answer]")[1].split("[Reference")[0]
    return Reply(json.dumps({"reasoning": "read the quality", "score": _judge(answer)}))


def _suite(
    tmp: Path, base_url: str, *, gates: list[dict], labels: dict | None = None, rows: list[str] | None = None
) -> Path:
    write_jsonl(tmp / "items.jsonl", [{"id": f"q{i}", "input": f"question {i}", "reference": "ref"} for i in range(N)])
    for system in ("base", "tuned"):
        write_jsonl(
            tmp / f"{system}.jsonl",
            [{"id": f"q{i}", "output": f"{system} answer {i}, quality {_quality(i, system)}"} for i in range(N)],
        )
    lines = rows
    if lines is None:
        lines = [f"q{i},{s},{_quality(i, s)}" for i in range(0, 3 * LABELLED, 3) for s in ("base", "tuned")]
    (tmp / "labels.csv").write_text("id,system,label\n" + "\n".join(lines) + "\n")
    suite = {
        "data": "items.jsonl",
        "systems": {"base": "base.jsonl", "tuned": "tuned.jsonl"},
        "baseline": "base",
        "metrics": [{"rubric": "factuality", "judge": "openai/m", "base_url": base_url}],
        "labels": labels if labels is not None else {"file": "labels.csv", "metric": "factuality", "scale": [1, 5]},
        "gates": gates,
        "bootstrap": 200,
        "permutations": 200,
    }
    path = tmp / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


def test_labels_correct_a_judge_harsh_on_one_system(tmp_path: Path, capsys) -> None:
    ppi_py = pytest.importorskip("ppi_py")
    gates = [
        {"metric": "factuality", "estimate": "ppi", "delta_ci_low_min": 0},
        {"metric": "factuality", "delta_ci_low_min": 0},
    ]
    with LoopbackServer(responder=responder) as srv:
        code, out, err = run_cli(
            ["eval", str(_suite(tmp_path, srv.base_url, gates=gates)), "--out", str(tmp_path / "run")], capsys
        )
    assert code == 1, err  # the judge-only gate fails
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert [(g.get("estimate"), g["passed"]) for g in res["gates"]] == [("ppi", True), (None, False)]

    # independent: the judge's and the people's values per item, and ppi-python on them
    lab = np.zeros(N, bool)
    lab[: 3 * LABELLED : 3] = True
    judge = {
        s: np.array([_judge(f"{s} answer {i}, quality {_quality(i, s)}") for i in range(N)], float)
        for s in ("base", "tuned")
    }
    human = {s: np.array([_quality(i, s) for i in range(N)], float) for s in ("base", "tuned")}
    for s in ("base", "tuned"):
        got = res["systems"][s]["factuality"]
        assert got["value"] == pytest.approx(judge[s].mean())  # the judge's own figure is unchanged
        y, f, fu = human[s][lab], judge[s][lab], judge[s][~lab]
        assert got["ppi"]["value"] == pytest.approx(float(ppi_py.ppi_mean_pointestimate(y, f, fu)[0]))
        lo, hi = (float(v[0]) for v in ppi_py.ppi_mean_ci(y, f, fu, alpha=0.05))
        assert (got["ppi"]["ci_low"], got["ppi"]["ci_high"]) == pytest.approx((lo, hi))
        assert got["ppi"]["labelled_only"]["value"] == pytest.approx(y.mean())
    d = res["deltas"]["tuned"]["factuality"]
    dy, df = human["tuned"] - human["base"], judge["tuned"] - judge["base"]
    assert d["value"] < 0 < d["ppi"]["value"]  # the judge says worse, the corrected delta says better
    assert d["ppi"]["value"] == pytest.approx(float(ppi_py.ppi_mean_pointestimate(dy[lab], df[lab], df[~lab])[0]))
    lo, hi = (float(v[0]) for v in ppi_py.ppi_mean_ci(dy[lab], df[lab], df[~lab], alpha=0.05))
    assert (d["ppi"]["ci_low"], d["ppi"]["ci_high"]) == pytest.approx((lo, hi))
    assert lo <= dy.mean() <= hi  # and it covers the people's delta on all items
    assert "factuality on tuned, human scale" in out and "Δ factuality on tuned, human scale" in out
    assert f"{LABELLED} labelled + {N - LABELLED} judge-only items" in out
    assert "PASS  gate factuality (PPI) delta_ci_low_min 0 on tuned" in out
    # the HTML report of the run shows the same estimates
    page = tmp_path / "report.html"
    assert run_cli(["report", str(tmp_path / "run"), "--out", str(page)], capsys)[0] == 0
    html = page.read_text()
    assert "Human-scale estimates from the labels" in html and "Δ factuality on tuned" in html
    assert fmt_ci(d["ppi"]["value"], d["ppi"]["ci_low"], d["ppi"]["ci_high"], 3) in html


@pytest.mark.parametrize(
    ("case", "expect"),
    [
        ("unknown-ids", "2 labelled id(s) are not items of the suite's data: nope1, nope2"),
        ("outside-scale", "labels.csv:3, field 'label': label '9' for item 'q3' is outside the scale 1..5"),
        ("too-few", "system 'base' has 5 labelled item(s); the prediction-powered estimate needs at least 10"),
        ("unknown-system", "labels.csv:2, field 'system': system 'other' is not one of the suite's"),
        ("gate-without-labels", "a gate with estimate: ppi needs 'labels' on its metric 'factuality'"),
    ],
)
def test_bad_labels_exit_2_before_any_judge_call(tmp_path: Path, capsys, case: str, expect: str) -> None:
    rows = [f"q{i},{s},3" for i in range(20) for s in ("base", "tuned")]
    labels = None
    if case == "unknown-ids":
        rows += ["nope1,base,3", "nope2,tuned,3"]
    elif case == "outside-scale":
        rows = ["q0,base,3", "q3,base,9", *rows]
    elif case == "too-few":
        rows = [f"q{i},{s},3" for i in range(5) for s in ("base", "tuned")]
    elif case == "unknown-system":
        rows = ["q0,other,3", *rows]
    elif case == "gate-without-labels":
        labels = {"file": "labels.csv", "metric": "exact_match"}
    gates = [{"metric": "factuality", "estimate": "ppi", "delta_ci_low_min": 0}]
    with LoopbackServer(responder=responder) as srv:
        suite = _suite(tmp_path, srv.base_url, gates=gates, labels=labels, rows=rows)
        code, _, err = run_cli(["eval", str(suite), "--out", str(tmp_path / "run")], capsys)
        assert srv.requests == []  # no judge call was made
    assert code == 2, err
    assert expect in err and "Traceback" not in err
    assert not (tmp_path / "run" / "results.json").exists()


def test_labels_on_another_scale_map_each_system_through_an_isotonic_fit(tmp_path: Path, capsys) -> None:
    """Pass/fail labels (quality >= 3) against the 1-5 rubric: ``map: isotonic`` maps each system's scores."""
    rows = [f"q{i},{s},{int(_quality(i, s) >= 3)}" for i in range(0, 3 * LABELLED, 3) for s in ("base", "tuned")]
    labels = {"file": "labels.csv", "metric": "factuality", "scale": [0, 1], "map": "isotonic"}
    with LoopbackServer(responder=responder) as srv:
        suite = _suite(tmp_path, srv.base_url, gates=[], labels=labels, rows=rows)
        code, _, err = run_cli(["eval", str(suite), "--out", str(tmp_path / "run")], capsys)
    assert code == 0, err
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    for s in ("base", "tuned"):
        ppi = res["systems"][s]["factuality"]["ppi"]
        assert ppi["mapping"] == "isotonic" and 0 <= ppi["judge_only"]["value"] <= 1  # on the labels' scale
    assert res["deltas"]["tuned"]["factuality"]["ppi"]["mapping"] == "isotonic (per system)"
