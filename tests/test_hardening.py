"""Hardening, round two (issue 22): one test per class of hostile input or fault, through the real CLI.

Every case runs ``judge.cli.main`` in-process, as ``tests/test_bad_inputs.py`` does, and checks the exit code of
the README's table, that no traceback is shown unless ``--debug`` asked for one, and what the message names.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from judge.testing.server import LoopbackServer
from tests.test_bad_inputs import CORPUS, ITEMS, SCORE, run_cli
from tests.test_report import browser  # noqa: F401 - the module's headless Chromium

QUESTIONS = Path(__file__).resolve().parent.parent / "examples" / "mtbench" / "question.jsonl"


def free_port() -> int:
    """A loopback port nothing listens on (bound, read, closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_suite(tmp: Path, metric: str = "{rubric: relevance, judge: openai/m}") -> Path:
    """A two-system suite over the bad-input corpus's two items."""
    (tmp / "a.jsonl").write_text('{"id": "a", "output": "4"}\n{"id": "b", "output": "Paris"}\n')
    (tmp / "b.jsonl").write_text('{"id": "a", "output": "5"}\n{"id": "b", "output": "Lyon"}\n')
    suite = tmp / "suite.yaml"
    suite.write_text(
        f"name: s\ndata: {ITEMS}\nsystems:\n  a: a.jsonl\n  b: b.jsonl\nbaseline: a\nmetrics:\n  - {metric}\n"
    )
    return suite


# --- class 5: --debug adds the traceback and never changes the exit code -------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [*SCORE, str(CORPUS / "garbage.parquet"), "-o", "{tmp}/v.jsonl"],  # DataError
        ["score", str(ITEMS), "--rubric", str(CORPUS / "include.j2"), "--judge", "fake/echo-score", "--no-cache"],
        [*SCORE, str(ITEMS), "-o", "{tmp}/afile/v.jsonl"],  # an output under a file
        ["calibrate", "--judge", str(CORPUS / "deep.jsonl"), "--human", str(CORPUS / "labels_float_ids.csv")],
        ["report", str(CORPUS / "deep.jsonl"), "--out", "{tmp}/r.html"],
        ["eval", str(CORPUS / "bomb_suite.yaml"), "--out", "{tmp}/ev"],
        ["mtbench", "answer", "--questions", str(CORPUS / "deep.jsonl"), "--model", "fake/x", "--out", "{tmp}/a.jsonl"],
        ["baseline", "similarity", str(ITEMS), "--out", str(ITEMS)],  # an output that is its input
    ],
    ids=["data-error", "rubric-error", "output-path-error", "calibrate", "report", "eval", "mtbench", "baseline"],
)
def test_debug_only_adds_the_traceback(argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "afile").write_text("x")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code, plain = run_cli(argv, capsys)
    debug_code, debug = run_cli(["--debug", *argv], capsys)
    assert code == 2 and "Traceback" not in plain, plain
    assert debug_code == code, debug
    assert "Traceback" in debug
    assert plain.strip().splitlines()[-1] in debug  # the same one-line message, after the traceback


# --- class 6: a server no item can get past exits 3 in every command ---------------------------------------


def fatal_commands(tmp: Path, base_url: str) -> dict[str, list[str]]:
    """Every command that calls a server judge, pointed at ``base_url``."""
    answers = tmp / "answers"
    answers.mkdir(exist_ok=True)
    rows = [{"question_id": 1, "model_id": "m", "choices": [{"turns": ["Hi.", "Why?"]}]}]
    (answers / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {
        "score": [*SCORE[:4], "openai/m", "--no-cache", "--no-progress", str(ITEMS), "-o", str(tmp / "v.jsonl")],
        "eval": ["eval", str(write_suite(tmp)), "--out", str(tmp / "ev"), "--no-progress"],
        "mtbench-judge": [
            *["mtbench", "judge", "--questions", str(QUESTIONS), "--answers", str(answers), "--mode", "single"],
            *["--judge", "openai/j", "--out", str(tmp / "j.jsonl"), "--no-cache"],
        ],
        "mtbench-answer": [
            *["mtbench", "answer", "--questions", str(QUESTIONS), "--model", "openai/m"],
            *["--out", str(tmp / "ans.jsonl"), "--no-cache"],
        ],
    }


@pytest.mark.parametrize("command", ["score", "eval", "mtbench-judge", "mtbench-answer"])
@pytest.mark.parametrize("fault", ["401", "403", "404", "unreachable"])
def test_a_fatal_server_answer_exits_3_in_every_command(
    command: str, fault: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if fault == "unreachable":
        url = f"http://127.0.0.1:{free_port()}/v1"
        argv = fatal_commands(tmp_path, url)[command]
        code, output = run_cli([*argv, "--base-url", url], capsys)
    else:
        from judge.testing.server import Reply

        with LoopbackServer(responder=lambda r: Reply(content=f"HTTP {fault}", status=int(fault))) as srv:
            argv = fatal_commands(tmp_path, srv.base_url)[command]
            code, output = run_cli([*argv, "--base-url", srv.base_url], capsys)
    assert code == 3, output
    assert "Traceback" not in output
    assert "could not do its job" in output


# --- class 1: deep nesting is a one-line error with file, line (and field), never a RecursionError -----------


def test_a_nested_field_past_the_limit_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from judge.io import MAX_DEPTH

    data = tmp_path / "d.jsonl"
    ok = {"id": "a", "input": "q", "output": "o", "meta": [[1]]}
    bad = {"id": "b", "input": "q", "output": "o", "meta": {"k": [[[]]]}}
    for _ in range(MAX_DEPTH):  # one level past the limit, well inside what json and Python manage
        bad["meta"] = [bad["meta"]]
    data.write_text(json.dumps(ok) + "\n" + json.dumps(bad) + "\n")
    code, output = run_cli([*SCORE, str(data), "-o", str(tmp_path / "v.jsonl")], capsys)
    assert code == 2 and "Traceback" not in output
    assert f"{data}:2, field 'meta': nested more than {MAX_DEPTH} levels deep" in output


# --- class 3: the render limit bounds work, not output; validate says so quickly ------------------------------


@pytest.mark.parametrize(
    ("name", "line", "reason"),
    [
        ("silent_loops.j2", 11, "more than 1,000,000 loop steps and calls"),
        ("recursive_macro.j2", 9, "rendering recursed too deeply"),
    ],
)
def test_rubrics_validate_stops_a_runaway_template_within_its_limit(
    name: str, line: int, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from judge.rubric import MAX_RENDER_SECONDS

    start = time.monotonic()
    code, output = run_cli(["rubrics", "validate", str(CORPUS / name)], capsys)
    elapsed = time.monotonic() - start
    assert code == 1, output  # validate's documented failure code
    assert "Traceback" not in output and f"FAIL {CORPUS / name}: {CORPUS / name}:{line}: " in output
    assert reason in output
    assert elapsed < MAX_RENDER_SECONDS  # a million steps, not seconds of waiting


def test_a_slow_render_that_prints_nothing_stops_at_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    from judge import rubric as rubric_module
    from judge.errors import RubricError

    # steps that are each slow (a recursive loop doubling at every level): the deadline, not the step count, stops it
    monkeypatch.setattr(rubric_module, "MAX_RENDER_SECONDS", 1.0)
    body = "{% for x in [1, 1] recursive %}{% if loop.depth < 40 %}{{ loop([1, 1]) }}{% endif %}{% endfor %}"
    front = "---\nid: r\nversion: 1\ndescription: d\nscale: {min: 1, max: 5}\n---\n"
    text = front + "{% block user %}" + body + "{% endblock %}"
    rub = rubric_module.parse_rubric(text, "r.j2")
    start = time.monotonic()
    with pytest.raises(RubricError, match=r"r\.j2:7: rubric 'r': rendering took over 1 s"):
        rub.render({"input": "q", "output": "o"})
    assert time.monotonic() - start < 2.0


# --- class 7: a statistic that is undefined is null with its reason, in JSON, text and HTML -------------------


def constant_labels(tmp: Path) -> tuple[Path, Path]:
    """12 judge scores spread over 1-5 against human labels that are all 3."""
    verdicts, labels = tmp / "v.jsonl", tmp / "labels.csv"
    verdicts.write_text(
        "".join(json.dumps({"id": f"q{i}", "score": 1 + i % 5, "status": "ok"}) + "\n" for i in range(12))
    )
    labels.write_text("id,label\n" + "".join(f"q{i},3\n" for i in range(12)))
    return verdicts, labels


def test_undefined_statistics_are_null_with_the_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    verdicts, labels = constant_labels(tmp_path)
    out = tmp_path / "r.json"
    argv = ["calibrate", "--judge", str(verdicts), "--human", str(labels), "--label-type", "ordinal"]
    code, text = run_cli([*argv, "--bootstrap", "200", "--json", str(out)], capsys)
    assert code == 0, text
    metrics = json.loads(out.read_text())["metrics"]
    why = "the human labels hold a single class/value"
    for name in ("cohen_kappa", "kappa_linear", "kappa_quadratic", "spearman", "kendall_tau", "pearson"):
        assert metrics[name] == {"value": None, "ci_low": None, "ci_high": None, "undefined": why}, name
        assert f"{name:<24}undefined: {why}" in text
    # what stays defined keeps its value: exact agreement is the share of judge scores equal to 3
    assert metrics["accuracy"]["value"] == pytest.approx(sum(1 + i % 5 == 3 for i in range(12)) / 12)
    assert metrics["accuracy"]["undefined"] is None


def test_undefined_statistics_say_so_in_the_html_report(
    browser: Any,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import judge

    verdicts, labels = constant_labels(tmp_path)
    out, page = tmp_path / "r.json", tmp_path / "r.html"
    argv = ["calibrate", "--judge", str(verdicts), "--human", str(labels), "--label-type", "ordinal"]
    assert run_cli([*argv, "--bootstrap", "200", "--json", str(out)], capsys)[0] == 0
    judge.report(out, out=page)
    browser.get(page.resolve().as_uri())
    rows = browser.execute_script(
        "return Array.from(document.querySelectorAll('section[data-kind=calibration] tr'))"
        ".map(r => Array.from(r.cells).map(c => c.textContent.trim()))"
    )
    kappa = next(r for r in rows if r and r[0] == "cohen_kappa")
    assert kappa[1] == "undefined: the human labels hold a single class/value"


# --- class 8: credentials in a base URL are never recorded or printed -----------------------------------------


def test_redact_url_hides_userinfo_and_secret_query_values() -> None:
    from judge.textfmt import redact_url

    assert redact_url("http://user:sk-123@host:8000/v1") == "http://***@host:8000/v1"
    assert (
        redact_url("https://host/v1?api_key=sk-1&model=m&token=t2") == "https://host/v1?api_key=***&model=m&token=***"
    )
    assert redact_url("http://u:p@host:notaport/v1?sig=abc") == "http://***@host:notaport/v1?sig=***"
    assert redact_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"  # nothing secret: unchanged


def test_a_base_url_with_credentials_stays_out_of_results_and_messages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from judge.testing.server import Reply

    answer = json.dumps({"reasoning": "fine", "score": 4})
    with LoopbackServer(responder=lambda r: Reply(content=answer)) as srv:
        url = srv.base_url.replace("http://", "http://alice:sekrit-key@")
        suite = write_suite(tmp_path, f"{{rubric: relevance, judge: openai/m, base_url: '{url}'}}")
        code, output = run_cli(["eval", str(suite), "--out", str(tmp_path / "ev"), "--no-progress"], capsys)
    assert code == 0, output
    results = (tmp_path / "ev" / "results.json").read_text()
    assert "sekrit" not in results and "sekrit" not in output
    assert "http://***@127.0.0.1" in results  # the URL is still recorded, without its credentials
    # a server that is not there: the message names the URL, not the key
    dead = f"http://alice:sekrit-key@127.0.0.1:{free_port()}/v1"
    code, output = run_cli([*fatal_commands(tmp_path, dead)["score"], "--base-url", dead], capsys)
    assert code == 3 and "cannot connect to http://***@127.0.0.1" in output and "sekrit" not in output


def test_api_key_help_says_to_prefer_the_environment(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("answer", "judge"):
        code, output = run_cli(["mtbench", command, "--help"], capsys)
        assert code == 0 and "Prefer the environment variable" in " ".join(output.split())


# --- class 10: --both-orders averages label probabilities when the judge gives them ---------------------------


def test_both_orders_average_label_probabilities(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import math

    from judge.testing.server import Reply, prompt_text

    # a judge leaning towards the answer shown first: P(A) is 0.9 when the right answer is first, 0.6 when it is
    # second; each order's argmax is "A", so the FastChat rule would make every pair a tie
    def leaning(request: dict) -> Reply:
        text = prompt_text(request)
        answers = text[text.index("[Answer A]") :]
        right_first = answers.index("right") < answers.index("wrong")
        probs = {"A": 0.9, "B": 0.05, "tie": 0.05} if right_first else {"A": 0.6, "B": 0.35, "tie": 0.05}
        return Reply(content="A", logprobs=[{k: math.log(v) for k, v in probs.items()}])

    items = [
        {"id": f"p{i}", "input": f"q{i}", "output": a, "output_b": b}
        for i, (a, b) in enumerate([("right answer", "wrong answer"), ("wrong answer", "right answer")] * 4)
    ]
    data, out = tmp_path / "d.jsonl", tmp_path / "v.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in items))
    with LoopbackServer(responder=leaning) as srv:
        argv = ["score", str(data), "-r", "pairwise", "--judge", "openai/m", "--base-url", srv.base_url]
        code, output = run_cli(
            [*argv, "--score-mode", "logprob", "--both-orders", "--no-cache", "-o", str(out)], capsys
        )
    assert code == 0, output
    got = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    for item in items:
        v = got[item["id"]]
        right = "A" if item["output"].startswith("right") else "B"
        first, second = v["order_probs"][0]  # positional, as the judge gave them
        assert max(first, key=first.get) == max(second, key=second.get) == "A"  # each order alone: "A"
        # the average, computed here in the pair's orientation: P(first answer) = (P1(A) + P2(B)) / 2 ...
        mean = {"A": (first["A"] + second["B"]) / 2, "B": (first["B"] + second["A"]) / 2}
        mean["tie"] = (first["tie"] + second["tie"]) / 2
        assert v["score_probs"] == pytest.approx(mean, abs=1e-6)
        assert v["label"] == right == max(mean, key=mean.get)  # ... picks the right answer every time
        assert v["score"] == pytest.approx(mean["A"] + 0.5 * mean["tie"], abs=1e-6)
        assert v["consistent"] is False and v["orders"] == [["A", "A"]]


def test_both_orders_text_verdicts_keep_the_fastchat_rule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from judge.testing.server import Reply

    data, out = tmp_path / "d.jsonl", tmp_path / "v.jsonl"
    data.write_text(json.dumps({"id": "p", "input": "q", "output": "x", "output_b": "y"}) + "\n")
    with LoopbackServer(responder=lambda r: Reply(content=json.dumps({"reasoning": "r", "verdict": "A"}))) as srv:
        argv = ["score", str(data), "-r", "pairwise", "--judge", "openai/m", "--base-url", srv.base_url]
        code, output = run_cli([*argv, "--both-orders", "--no-cache", "-o", str(out)], capsys)
    v = json.loads(out.read_text())
    assert code == 0 and v["label"] == "tie" and v["score_probs"] is None and v["order_probs"] is None


# --- class 12: an empty output is an answer, scored like any other ------------------------------------------

FINETUNE = Path(__file__).resolve().parent.parent / "examples" / "finetune"


def test_an_empty_answer_counts_against_its_system(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import sacrebleu

    def rows(name: str) -> list[dict]:
        return [json.loads(line) for line in (FINETUNE / name).read_text().splitlines()]

    items = rows("items.jsonl")
    outputs = {s: {r["id"]: r["output"] for r in rows(f"{s}.jsonl")} for s in ("base", "tuned")}
    ids = [i["id"] for i in items if i.get("reference")]
    assert [i for i in ids if not outputs["base"][i].strip()] == ["q127"]  # one empty base answer among them
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        f"data: {FINETUNE / 'items.jsonl'}\nsystems:\n  base: {FINETUNE / 'base.jsonl'}\n"
        f"  tuned: {FINETUNE / 'tuned.jsonl'}\nbaseline: base\nmetrics: [bleu, chrf, token_f1]\nbootstrap: 200\n"
        "permutations: 200\n"
    )
    code, output = run_cli(["eval", str(suite), "--out", str(tmp_path / "ev")], capsys)
    assert code == 0, output
    result = json.loads((tmp_path / "ev" / "results.json").read_text())
    refs = [[next(i["reference"] for i in items if i["id"] == k) for k in ids]]
    for system in ("base", "tuned"):
        hyps = [outputs[system][k] for k in ids]
        got = result["systems"][system]
        assert got["bleu"]["n"] == got["chrf"]["n"] == got["token_f1"]["n"] == 30
        # sacrebleu's own corpus scores over all 30 answers, the empty one included
        assert got["bleu"]["value"] == pytest.approx(sacrebleu.corpus_bleu(hyps, refs).score, abs=1e-9)
        assert got["chrf"]["value"] == pytest.approx(sacrebleu.corpus_chrf(hyps, refs).score, abs=1e-9)
    assert result["systems"]["base"]["bleu"]["value"] == pytest.approx(2.12, abs=0.005)  # not 2.38 over 29
    assert result["deltas"]["tuned"]["bleu"]["n_pairs"] == 30
    scores = [json.loads(line) for line in (tmp_path / "ev" / "scores.jsonl").read_text().splitlines()]
    empty = next(s for s in scores if s["id"] == "q127" and s["system"] == "base" and s["metric"] == "token_f1")
    assert empty["status"] == "ok" and empty["score"] == 0.0


def test_a_rubric_judge_judges_an_empty_answer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from judge.testing.server import Reply

    seen: list[str] = []

    def judge(request: dict) -> Reply:
        seen.append(json.dumps(request))
        return Reply(content=json.dumps({"reasoning": "r", "score": 1}))

    suite = write_suite(tmp_path)
    (tmp_path / "b.jsonl").write_text('{"id": "a", "output": ""}\n{"id": "b", "output": null}\n')
    with LoopbackServer(responder=judge) as srv:
        code, output = run_cli(["eval", str(suite), "--out", str(tmp_path / "ev"), "--base-url", srv.base_url], capsys)
    assert code == 0, output
    assert len(seen) == 3  # a's two outputs and b's two, less the one that does not exist (null)
    scores = {
        (s["system"], s["id"]): s for s in map(json.loads, (tmp_path / "ev" / "scores.jsonl").read_text().splitlines())
    }
    assert scores["b", "a"]["status"] == "ok" and scores["b", "a"]["score"] == 1.0  # the empty answer, judged
    assert scores["b", "b"]["status"] == "unscored" and scores["b", "b"]["error"] == "no output"


# --- class 9: coercions said out loud, or refused with file, line and field ----------------------------------


def test_values_read_as_text_are_counted_and_float_ids_match(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, out = tmp_path / "d.jsonl", tmp_path / "v.jsonl"
    rows = [
        {"id": 1.0, "input": "q", "output": 4},
        {"id": 2.0, "input": "q", "output": {"answer": 5}},
        {"id": 3, "input": "q", "output": "six"},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, output = run_cli([*SCORE, str(data), "-o", str(out)], capsys)
    assert code == 0, output
    assert (
        f"note: read as text: 2 'id' value(s) that are numbers (first at {data}:1); 1 'output' value(s) that are "
        f"numbers (first at {data}:1); 1 'output' value(s) that are JSON objects (first at {data}:2)"
    ) in output
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["1", "2", "3"]  # 1.0 is item "1"


def test_an_item_too_long_for_the_prompt_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from judge.rubric import MAX_RENDER_CHARS

    data, out = tmp_path / "d.jsonl", tmp_path / "v.jsonl"
    rows = [{"id": "a", "input": "q", "output": "x"}, {"id": "b", "input": "q", "output": "y" * (MAX_RENDER_CHARS + 1)}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, output = run_cli([*SCORE, str(data), "-o", str(out)], capsys)
    assert code == 2 and "Traceback" not in output
    assert f"{data}:2, field 'output': the prompt for item 'b' passes {MAX_RENDER_CHARS:,} characters" in output
    assert "relevance.j2" not in output  # not the rubric's fault


def test_two_systems_reading_the_same_outputs_are_warned_about(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = write_suite(tmp_path, "self_bleu")  # a metric that needs no reference
    suite.write_text(suite.read_text().replace("b: b.jsonl", "b: ./a.jsonl"))
    code, output = run_cli(["eval", str(suite), "--out", str(tmp_path / "ev")], capsys)
    assert code == 0, output
    assert (
        f"warning: systems a, b read the same outputs ({(tmp_path / 'a.jsonl').resolve()}, column 'output')" in output
    )
