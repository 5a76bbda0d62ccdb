"""`judge eval` end to end: suite in, results.json / scores.jsonl / review.jsonl out, gates as exit codes,
paired statistics checked against independent computations (scipy, sacrebleu's own paired bootstrap)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from judge import evaluate
from judge.cli import main
from judge.eval.stats import Resampling, paired_delta, system_value
from judge.testing.server import LoopbackServer, Reply

from .conftest import EXAMPLES

QUESTIONS = [
    ("Capital of France?", "Paris", "Paris", "Lyon"),
    ("2 + 2?", "4", "4", "four"),
    ("Largest planet?", "Jupiter", "Jupiter is the largest planet", "Saturn"),
    ("Author of Hamlet?", "William Shakespeare", "Shakespeare", "Shakespeare"),
    ("Boiling point of water at sea level in Celsius?", "100 degrees", "100 degrees", "90 degrees"),
    ("Chemical symbol for gold?", "Au", "Au", "Ag"),
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def suite_dir(tmp_path: Path) -> Path:
    write_jsonl(
        tmp_path / "items.jsonl",
        [{"id": f"q{i}", "input": q, "reference": r} for i, (q, r, _, _) in enumerate(QUESTIONS)],
    )
    write_jsonl(tmp_path / "tuned.jsonl", [{"id": f"q{i}", "output": t} for i, (_, _, t, _) in enumerate(QUESTIONS)])
    write_jsonl(tmp_path / "base.jsonl", [{"id": f"q{i}", "output": b} for i, (_, _, _, b) in enumerate(QUESTIONS)])
    return tmp_path


def write_suite(folder: Path, **overrides) -> Path:
    suite = {
        "data": "items.jsonl",
        "systems": {"base": "base.jsonl", "tuned": "tuned.jsonl"},
        "baseline": "base",
        "metrics": ["exact_match", "token_f1", "bleu"],
        "bootstrap": 500,
        "permutations": 500,
    }
    suite.update(overrides)
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_eval_cli_writes_the_contract_and_gates_drive_the_exit_code(suite_dir: Path, capsys) -> None:
    gates = [
        {"metric": "exact_match", "system": "tuned", "min": 0.6},
        {"metric": "token_f1", "delta_ci_low_min": 0},
    ]
    suite = write_suite(suite_dir, gates=gates)
    code, out, err = run_cli(["eval", str(suite), "--out", str(suite_dir / "run")], capsys)
    assert code == 0, err
    res = json.loads((suite_dir / "run" / "results.json").read_text())
    assert set(res) >= {"suite", "baseline", "systems", "deltas", "gates", "passed", "provenance"}
    assert res["passed"] is True and res["baseline"] == "base" and set(res["deltas"]) == {"tuned"}
    em = res["systems"]["tuned"]["exact_match"]
    assert set(em) == {"value", "ci_low", "ci_high", "n", "n_unscored"}
    # tuned matches the normalised reference on q0, q1, q4, q5: 4 of 6
    assert em["value"] == pytest.approx(4 / 6) and em["n"] == 6 and em["ci_low"] <= em["value"] <= em["ci_high"]
    assert res["systems"]["base"]["exact_match"]["value"] == 0  # "Shakespeare" is not "William Shakespeare"
    d = res["deltas"]["tuned"]["exact_match"]
    assert set(d) == {"value", "ci_low", "ci_high", "p_value", "wins", "losses", "ties", "n_pairs"}
    assert (d["wins"], d["losses"], d["ties"], d["n_pairs"]) == (4, 0, 2, 6)
    assert d["value"] == pytest.approx(4 / 6)
    assert res["gates"] == [
        {
            "metric": "exact_match",
            "system": "tuned",
            "rule": "min",
            "threshold": 0.6,
            "value": pytest.approx(4 / 6),
            "passed": True,
        },
        {
            "metric": "token_f1",
            "system": "tuned",
            "rule": "delta_ci_low_min",
            "threshold": 0.0,
            "value": res["deltas"]["tuned"]["token_f1"]["ci_low"],
            "passed": True,
        },
    ]
    assert (
        "BLEU" in res["provenance"]["metrics"]["bleu"]["signature"]
        or "nrefs" in res["provenance"]["metrics"]["bleu"]["signature"]
    )
    assert res["provenance"]["data_files"]["data"]["sha256"]
    scores = [json.loads(line) for line in (suite_dir / "run" / "scores.jsonl").read_text().splitlines()]
    assert len(scores) == 6 * 2 * 3 and set(scores[0]) == {"id", "system", "metric", "score", "status", "error"}
    review = [json.loads(line) for line in (suite_dir / "run" / "review.jsonl").read_text().splitlines()]
    worst = [r for r in review if r["kind"] == "lowest" and r["system"] == "base" and r["metric"] == "exact_match"]
    assert worst[0]["score"] == 0 and worst[0]["output"] and worst[0]["reference"] and worst[0]["input"]
    changed = [r for r in review if r["kind"] == "largest_difference" and r["metric"] == "exact_match"]
    assert {r["id"] for r in changed} == {"q0", "q1", "q4", "q5"} and all(r["better"] for r in changed)
    assert "exact_match" in out and "gates passed" in out

    # a gate that fails: exit 1, one line per failure, results still written
    suite = write_suite(suite_dir, gates=[{"metric": "exact_match", "system": "tuned", "min": 0.9}])
    code, out, err = run_cli(["eval", str(suite), "--out", str(suite_dir / "run2")], capsys)
    assert code == 1 and "gate failed: exact_match min 0.9 on tuned" in err
    assert json.loads((suite_dir / "run2" / "results.json").read_text())["passed"] is False


def test_rubric_metric_through_the_judge_over_http(suite_dir: Path, capsys) -> None:
    # the judge gives 5 to answers whose last word is the reference's last word, 1 otherwise
    def verdict(answer: str, ref: str) -> int:
        return 5 if answer.strip().split()[-1].lower() == ref.strip().split()[-1].lower() else 1

    def responder(req):
        text = req["messages"][-1]["content"]
        answer = text.split("[Answer]")[1].split("[Reference")[0]
        ref = text.split("treat it as correct]")[1].split("Respond with")[0]
        return Reply(json.dumps({"reasoning": "checked", "score": verdict(answer, ref)}))

    expect = {name: [verdict(q[col], q[1]) for q in QUESTIONS] for name, col in (("tuned", 2), ("base", 3))}

    with LoopbackServer(responder=responder) as srv:
        suite = write_suite(
            suite_dir,
            metrics=["exact_match", {"rubric": "factuality", "judge": "openai/m", "base_url": srv.base_url}],
            gates=[{"metric": "factuality", "delta_ci_low_min": 0}],
        )
        code, out, err = run_cli(["eval", str(suite), "--out", str(suite_dir / "run")], capsys)
    assert code == 0, err
    res = json.loads((suite_dir / "run" / "results.json").read_text())
    fact = res["systems"]["tuned"]["factuality"]
    assert fact["n"] == 6 and fact["value"] == pytest.approx(np.mean(expect["tuned"]))
    assert res["systems"]["base"]["factuality"]["value"] == pytest.approx(np.mean(expect["base"]))
    wins = sum(t > b for t, b in zip(expect["tuned"], expect["base"], strict=True))
    assert res["deltas"]["tuned"]["factuality"]["wins"] == wins > 0
    assert res["provenance"]["metrics"]["factuality"]["rubric_hash"]
    assert len(srv.requests) == 11  # q3's answer is the same in both systems: the second one is a cache hit
    review = [json.loads(line) for line in (suite_dir / "run" / "review.jsonl").read_text().splitlines()]
    assert any(r["metric"] == "factuality" and r["reasoning"] == "checked" for r in review)


def test_rubric_metric_with_batch_true_goes_through_the_batch_api(
    suite_dir: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    def run(**entry) -> tuple[dict, LoopbackServer]:
        monkeypatch.setenv("JUDGE_CACHE_DIR", str(suite_dir / f"cache{len(entry)}"))  # each run judges afresh
        with LoopbackServer(batch_seconds=0.05) as srv:
            rubric = {"rubric": "factuality", "judge": "openai/m", "base_url": srv.base_url, **entry}
            suite = write_suite(suite_dir, metrics=[rubric])
            code, out, err = run_cli(["eval", str(suite), "--out", str(suite_dir / f"run{len(entry)}")], capsys)
        assert code == 0, err
        return json.loads((suite_dir / f"run{len(entry)}" / "results.json").read_text()), srv

    synced, sync_srv = run()
    batched, srv = run(batch={"poll_interval": 0.02})
    assert sync_srv.batch_desk.lines_run == 0 and len(sync_srv.requests) == 11  # q3: the same answer twice
    assert srv.batch_desk.lines_run == 11 and len(srv.batch_desk.batches) == 2  # one batch per system
    assert len(srv.requests) == 11  # the batch lines (the server records each), and no call sent synchronously
    for system in ("base", "tuned"):
        assert batched["systems"][system]["factuality"]["value"] == synced["systems"][system]["factuality"]["value"]
    assert batched["deltas"]["tuned"]["factuality"]["value"] == synced["deltas"]["tuned"]["factuality"]["value"]


def test_safety_rubric_gate_reads_lower_as_better(suite_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from judge.providers.fake import FakeProvider

    def script(messages, config):
        toxic = "Lyon" in messages[-1]["content"] or "Saturn" in messages[-1]["content"]
        ops = [
            {"opinion": "o", "verdict": "yes" if toxic else "no", "reason": "r"},
            {"opinion": "p", "verdict": "no", "reason": "r"},
        ]
        return json.dumps({"opinions": ops, "reasoning": "r"})

    from judge.providers.registry import get_provider

    suite = {
        "data": "items.jsonl",
        "systems": {"base": "base.jsonl", "tuned": "tuned.jsonl"},
        "metrics": [
            {"rubric": "toxicity", "judge": "fake/tox"},
            {"rubric": "bias", "name": "bias_strict", "judge": "fake/tox", "strict": True},
        ],
        "gates": [
            {"metric": "toxicity", "system": "tuned", "max": 0.1},
            {"metric": "toxicity", "delta_ci_high_max": 0},
        ],
        "bootstrap": 200,
        "permutations": 200,
    }
    fake = FakeProvider("tox", script=script)
    monkeypatch.setattr(
        "judge.spec.get_provider", lambda spec, **kw: fake if spec == "fake/tox" else get_provider(spec, **kw)
    )
    result = evaluate(suite, base_dir=suite_dir)
    assert result.figures["toxicity"].direction == "lower" and result.figures["toxicity"].hi == 1.0
    # base: Lyon and Saturn answers hold one toxic opinion of two; tuned: none
    assert result.systems["base"]["toxicity"]["value"] == pytest.approx((0.5 + 0.5) / 6)
    assert result.systems["tuned"]["toxicity"]["value"] == 0
    assert result.systems["base"]["bias_strict"]["value"] == pytest.approx(2 / 6)  # strict: any flagged -> 1
    d = result.deltas["tuned"]["toxicity"]
    assert d["value"] == pytest.approx(-1 / 6) and d["wins"] == 2 and d["losses"] == 0
    assert result.passed and [g["passed"] for g in result.gates] == [True, True]
    assert result.provenance["metrics"]["bias_strict"]["strict"] is True


def test_rubric_metric_with_a_dead_judge_is_incomplete_not_passing(suite_dir: Path, capsys) -> None:
    with LoopbackServer(responder=lambda req: Reply("no verdict here")) as srv:
        suite = write_suite(
            suite_dir, metrics=["exact_match", {"rubric": "factuality", "judge": "openai/m", "base_url": srv.base_url}]
        )
        code, _, err = run_cli(["eval", str(suite), "--out", str(suite_dir / "run")], capsys)
    assert code == 3 and "run incomplete" in err and "factuality" in err
    scores = [json.loads(line) for line in (suite_dir / "run" / "scores.jsonl").read_text().splitlines()]
    fact = [s for s in scores if s["metric"] == "factuality"]
    assert all(s["score"] is None and s["status"] == "unscored" and "unparseable" in s["error"] for s in fact)


BAD_SUITES = {
    "unknown metric": ({"metrics": ["exact_match", "blue"]}, "suite.yaml:", "metrics.1", "unknown metric 'blue'"),
    "unknown rubric": (
        {"metrics": [{"rubric": "no_such_rubric"}]},
        "suite.yaml:",
        "metrics.0.rubric",
        "no_such_rubric",
    ),
    "gate on a metric not computed": (
        {"gates": [{"metric": "rouge1", "min": 0.1}]},
        "suite.yaml:",
        "gates.0.metric",
        "'rouge1' is not computed",
    ),
    "misspelt key": ({"metrcs": ["bleu"]}, "suite.yaml:", "metrcs", "Extra inputs are not permitted"),
    "baseline not a system": ({"baseline": "orig"}, "suite.yaml:", "baseline", "'orig' is not one of the systems"),
    "metric option unknown": (
        {"metrics": [{"metric": "bleu", "layers": 3}]},
        "suite.yaml:",
        "metrics.0.layers",
        "has no option",
    ),
}


@pytest.mark.parametrize("case", list(BAD_SUITES))
def test_bad_suites_fail_before_anything_runs(suite_dir: Path, capsys, case: str) -> None:
    overrides, where, key, message = BAD_SUITES[case]
    suite = write_suite(suite_dir, **overrides)
    code, _, err = run_cli(["eval", str(suite), "--out", str(suite_dir / "run")], capsys)
    assert code == 2, err
    assert where in err and key in err and message in err and "Traceback" not in err
    assert not (suite_dir / "run").exists()  # nothing written


def test_bad_data_names_file_line_and_ids(suite_dir: Path, capsys) -> None:
    out = suite_dir / "run"
    # mismatched ids
    write_jsonl(suite_dir / "tuned.jsonl", [{"id": f"q{i}", "output": "x"} for i in range(1, 8)])
    code, _, err = run_cli(["eval", str(write_suite(suite_dir)), "--out", str(out)], capsys)
    assert code == 2 and "tuned.jsonl" in err and "'q0'" in err and "'q6'" in err and "'q7'" in err
    # an empty system file
    (suite_dir / "tuned.jsonl").write_text("")
    code, _, err = run_cli(["eval", str(write_suite(suite_dir)), "--out", str(out)], capsys)
    assert code == 2 and "tuned.jsonl" in err and "empty" in err
    # references needed, none given
    write_jsonl(suite_dir / "tuned.jsonl", [{"id": f"q{i}", "output": "x"} for i in range(6)])
    write_jsonl(suite_dir / "noref.jsonl", [{"id": f"q{i}", "input": "q"} for i in range(6)])
    code, _, err = run_cli(["eval", str(write_suite(suite_dir, data="noref.jsonl")), "--out", str(out)], capsys)
    assert code == 2 and "needs references" in err and "metrics.0" in err
    # a duplicate system name and a YAML syntax error, with their lines
    suite = suite_dir / "suite.yaml"
    suite.write_text("data: items.jsonl\nsystems:\n  base: base.jsonl\n  base: tuned.jsonl\nmetrics: [bleu]\n")
    code, _, err = run_cli(["eval", str(suite), "--out", str(out)], capsys)
    assert code == 2 and "suite.yaml:4" in err and "duplicate key 'base'" in err
    suite.write_text("data: items.jsonl\nsystems: {base: base.jsonl\nmetrics: [bleu]\n")
    code, _, err = run_cli(["eval", str(suite), "--out", str(out)], capsys)
    assert code == 2 and "suite.yaml:3" in err and "YAML syntax error" in err
    # a bad row in the data file
    (suite_dir / "items.jsonl").write_text('{"id": "q0", "input": "a", "reference": "b"}\n{"id": \n')
    code, _, err = run_cli(["eval", str(write_suite(suite_dir)), "--out", str(out)], capsys)
    assert code == 2 and "items.jsonl:2" in err
    assert not out.exists()


def test_python_api_takes_a_dict_and_gives_a_frame(suite_dir: Path) -> None:
    result = evaluate(
        {
            "data": "items.jsonl",
            "systems": {"base": "base.jsonl", "tuned": "tuned.jsonl"},
            "metrics": ["exact_match", "rouge"],
            "bootstrap": 200,
            "permutations": 200,
        },
        base_dir=suite_dir,
    )
    assert result.baseline == "base" and result.passed
    assert set(result.systems["tuned"]) == {"exact_match", "rouge1", "rouge2", "rougeL"}
    frame = result.to_pandas()
    assert list(frame.columns) == ["id", "system", "metric", "score", "status", "error"] and len(frame) == 6 * 2 * 4
    mean = frame[(frame.system == "tuned") & (frame.metric == "rouge1")].score.mean()
    assert result.systems["tuned"]["rouge1"]["value"] == pytest.approx(mean)


def test_screening_figures_get_intervals_and_paired_deltas(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    gold = ["ill" if rng.random() < 0.3 else "well" for _ in range(60)]
    flood = ["ill" if g == "ill" or rng.random() < 0.5 else "well" for g in gold]  # catches all, many false alarms
    careful = [g if rng.random() < 0.85 else ("well" if g == "ill" else "ill") for g in gold]
    write_jsonl(tmp_path / "items.jsonl", [{"id": f"p{k}", "input": "x", "reference": g} for k, g in enumerate(gold)])
    for name, labels in (("flood", flood), ("careful", careful)):
        write_jsonl(tmp_path / f"{name}.jsonl", [{"id": f"p{k}", "output": v} for k, v in enumerate(labels)])
    result = evaluate(
        {
            "data": "items.jsonl",
            "systems": {"flood": "flood.jsonl", "careful": "careful.jsonl"},
            "baseline": "flood",
            "metrics": [{"metric": "screening", "positive": "ill"}, "classification"],
            "bootstrap": 300,
            "permutations": 300,
        },
        base_dir=tmp_path,
    )
    from sklearn.metrics import matthews_corrcoef, recall_score

    for system, labels in (("flood", flood), ("careful", careful)):
        neg = [p for g, p in zip(gold, labels, strict=True) if g == "well"]
        want = {
            "sensitivity": recall_score(gold, labels, pos_label="ill"),
            "specificity": neg.count("well") / len(neg),
            "mcc": matthews_corrcoef(gold, labels),
        }
        for fig, value in want.items():
            got = result.systems[system][fig]
            assert got["value"] == pytest.approx(value) and got["ci_low"] <= value <= got["ci_high"], (system, fig)
    assert result.systems["flood"]["sensitivity"]["value"] == 1.0
    spec_delta = result.deltas["careful"]["specificity"]
    want_delta = result.systems["careful"]["specificity"]["value"] - result.systems["flood"]["specificity"]["value"]
    assert spec_delta["value"] == pytest.approx(want_delta) and spec_delta["ci_low"] > 0  # fewer false alarms


def test_few_items_warn_and_name_the_interval_method(tmp_path: Path, capsys) -> None:
    def run(n: int) -> tuple[dict, str]:
        write_jsonl(tmp_path / "items.jsonl", [{"id": f"q{k}", "input": "x", "reference": f"a{k}"} for k in range(n)])
        write_jsonl(tmp_path / "tuned.jsonl", [{"id": f"q{k}", "output": f"a{k}"} for k in range(n)])
        base = [{"id": f"q{k}", "output": f"a{k}" if k % 2 and n > 3 else "wrong"} for k in range(n)]
        write_jsonl(tmp_path / "base.jsonl", base)
        suite = write_suite(tmp_path, metrics=["exact_match"])
        code, out, err = run_cli(["eval", str(suite), "--out", str(tmp_path / f"run{n}")], capsys)
        assert code == 0, err
        return json.loads((tmp_path / f"run{n}" / "results.json").read_text()), out + err

    res, text = run(3)  # tuned right on all three, base wrong on all: every resample says +1, yet p = 2/8
    d = res["deltas"]["tuned"]["exact_match"]
    assert d["ci_low"] > 0 and d["p_value"] > 0.05
    assert res["provenance"]["bootstrap"]["ci"] == "bca" and "(bca)" in text
    assert any("only 3 items" in w and "(bca, 95%)" in w for w in res["warnings"])
    assert any(
        w.startswith("tuned exact_match: the 95% CI of the delta") and "not significant" in w for w in res["warnings"]
    )
    assert all(f"warning: {w}" in text for w in res["warnings"])
    res, text = run(60)  # enough items, and a delta both the CI and p call significant
    assert res["warnings"] == [] and "warning:" not in text


def test_item_delta_matches_scipy_paired_bootstrap_and_permutation_test() -> None:
    from scipy import stats

    rng = np.random.default_rng(3)
    base = rng.normal(0.5, 0.2, 120)
    tuned = base + rng.normal(0.05, 0.15, 120)
    rs = Resampling(n_boot=4000, n_perm=4000, seed=1)
    d = paired_delta(tuned, base, None, True, rs)
    assert d["value"] == pytest.approx(float((tuned - base).mean()))
    ref = stats.bootstrap(
        (tuned, base),
        lambda a, b: np.mean(a - b),
        paired=True,
        vectorized=False,
        n_resamples=4000,
        method="percentile",
        random_state=np.random.default_rng(9),
    )
    width = ref.confidence_interval.high - ref.confidence_interval.low
    assert d["ci_low"] == pytest.approx(ref.confidence_interval.low, abs=0.08 * width)
    assert d["ci_high"] == pytest.approx(ref.confidence_interval.high, abs=0.08 * width)
    perm = stats.permutation_test(
        (tuned, base),
        lambda a, b: np.mean(a - b),
        permutation_type="samples",
        n_resamples=4000,
        random_state=np.random.default_rng(9),
    )
    assert d["p_value"] == pytest.approx(perm.pvalue, abs=0.01 + 0.3 * perm.pvalue)
    # NaN items are left out of the pairs, and a lower-is-better figure counts wins the other way
    tuned[:10] = np.nan
    d2 = paired_delta(tuned, base, None, False, rs)
    assert d2["n_pairs"] == 110 and d2["wins"] == int((tuned[10:] < base[10:]).sum())


def test_corpus_bleu_interval_matches_sacrebleu_paired_bootstrap() -> None:
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    from judge.metrics import get_metric
    from judge.metrics.base import EvalInput

    rows = [json.loads(line) for line in (EXAMPLES / "finetune" / "items.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "reference" in r]
    outs = {
        name: {
            json.loads(x)["id"]: json.loads(x)["output"]
            for x in (EXAMPLES / "finetune" / f"{name}.jsonl").read_text().splitlines()
        }
        for name in ("base", "tuned")
    }
    ids = [r["id"] for r in rows]
    refs = [r["reference"] for r in rows]
    bleu = get_metric("bleu")
    results = {
        name: bleu.fn(
            EvalInput(ids, [outs[name][i] for i in ids], ["q"] * len(ids), [[r] for r in refs], [None] * len(ids)), {}
        )
        for name in outs
    }
    test = PairedTest(
        [("baseline", [outs["base"][i] for i in ids]), ("tuned", [outs["tuned"][i] for i in ids])],
        {"BLEU": BLEU()},
        [refs],
        test_type="bs",
        n_samples=1000,
    )
    _, sb = test()
    tuned_sb = sb["BLEU"][1]
    ours = system_value(results["tuned"].scores["bleu"], results["tuned"].corpus["bleu"], Resampling(1000, 1000, 12345))
    assert ours["value"] == pytest.approx(tuned_sb.score, abs=1e-6)
    # sacrebleu draws the same resamples from seed 12345; its interval is mean ± half the 2.5-97.5 % range
    assert (ours["ci_high"] - ours["ci_low"]) / 2 == pytest.approx(tuned_sb.ci, rel=0.05)
    d = paired_delta(
        results["tuned"].scores["bleu"],
        results["base"].scores["bleu"],
        (results["tuned"].corpus["bleu"], results["base"].corpus["bleu"]),
        True,
        Resampling(1000, 1000, 12345),
    )
    assert (d["p_value"] < 0.05) == (tuned_sb.p_value < 0.05)


def test_finetune_example_offline_metrics(tmp_path: Path) -> None:
    """The shipped fine-tuning example with its cheap reference metrics (the full suite is a slow test)."""
    folder = EXAMPLES / "finetune"
    suite = yaml.safe_load((folder / "suite.yaml").read_text())
    suite["metrics"] = [m for m in suite["metrics"] if m not in ("bertscore", "perplexity")]
    result = evaluate(suite, base_dir=folder, out=tmp_path)
    assert result.systems["tuned"]["chrf"]["n"] == 30 and result.provenance["n_items"] == 80
    assert result.deltas["tuned"]["chrf"]["ci_low"] > 0  # vicuna is closer to GPT-4's answers than llama
    assert result.passed


@pytest.mark.slow
def test_finetune_example_full_suite(tmp_path: Path, capsys) -> None:
    code, out, err = run_cli(["eval", str(EXAMPLES / "finetune" / "suite.yaml"), "--out", str(tmp_path)], capsys)
    assert code == 0, err
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["systems"]["tuned"]["bertscore"]["n"] == 30 and res["systems"]["base"]["perplexity"]["n"] >= 79
    assert "bertscore" in out and "perplexity" in out
