"""`judge score` review fixes: file encodings, the default judge, env vars, price tables, output paths, Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from judge.cli import LAZY_COMMANDS, cli, main
from judge.cli_score import default_out
from judge.dataset import load_items
from judge.errors import ConfigError, DataError
from judge.providers.registry import default_judge, explain_default_judge, get_provider
from judge.testing.server import LoopbackServer, Reply, judge_responder

ROW = {"id": "a", "input": "What is 2+2?", "output": "4"}


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def run_score(*args: str, env: dict[str, str] | None = None) -> click.testing.Result:
    return CliRunner().invoke(cli, ["score", *args], env=env)


# --- 2. encodings -------------------------------------------------------------------------------


def test_csv_with_bom_keeps_the_users_ids(tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    data.write_bytes("id,input,output\nq1,What is 2+2?,4\n".encode("utf-8-sig"))
    (item,) = load_items(data)
    assert item.id == "q1" and "\ufeffid" not in item.extra


def test_jsonl_with_bom_reads(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_bytes((json.dumps(ROW) + "\n").encode("utf-8-sig"))
    assert [i.id for i in load_items(data)] == ["a"]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_latin1_file_is_a_data_error_naming_file_and_line(tmp_path: Path, suffix: str) -> None:
    data = tmp_path / f"d{suffix}"
    text = "id,input,output\na,q,o\nb,caf\u00e9,o\n" if suffix == ".csv" else '{"id": "a"}\n{"id": "caf\u00e9"}\n'
    data.write_bytes(text.encode("latin-1"))
    with pytest.raises(DataError, match=r"d\.(csv:3|jsonl:2): not UTF-8 text \(byte 0xe9\): the file must be UTF-8"):
        load_items(data)
    res = run_score(str(data), "-r", "factuality", "-j", "fake/echo-score")
    assert isinstance(res.exception, DataError)


def test_jsonl_line_numbers_ignore_unicode_line_separators(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"id": "a", "input": "x\u2028y", "output": "o"}, {"id": "b"}])
    data.write_text(data.read_text().replace("\\u2028", "\u2028") + "{bad\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"d\.jsonl:3: invalid JSON"):
        load_items(data)


# --- 8. the default judge -----------------------------------------------------------------------


def test_default_judge_reasons(monkeypatch: pytest.MonkeyPatch) -> None:
    spec, why = explain_default_judge()
    assert spec == "local/smollm2" and "a 135M model, good for smoke runs, not for trustworthy verdicts" in why
    assert default_judge("http://127.0.0.1:9/v1") == "openai/gpt-4o-mini"
    assert explain_default_judge("http://127.0.0.1:9/v1")[1] == "--base-url given"
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    assert explain_default_judge() == ("openai/gpt-4o-mini", "OPENAI_API_KEY is set")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert explain_default_judge() == ("openai/gpt-4o-mini", "OPENAI_BASE_URL is set")
    monkeypatch.setenv("JUDGE_MODEL", "fake/echo-score")
    assert explain_default_judge("http://127.0.0.1:9/v1") == ("fake/echo-score", "JUDGE_MODEL is set")


def test_cli_prints_the_local_default_judge_line(tmp_path: Path) -> None:
    # the item lacks `output`, so the run stops at the input check, after the line and before SmolLM2 loads
    data = write_jsonl(tmp_path / "qa.jsonl", [{"id": "a", "input": "q"}])
    res = run_score(str(data), "-r", "factuality")
    assert "judge: local/smollm2 (no --judge, JUDGE_MODEL, OPENAI_BASE_URL or OPENAI_API_KEY; " in res.output
    assert "a 135M model, good for smoke runs, not for trustworthy verdicts)" in res.output
    assert isinstance(res.exception, DataError) and "requires 'output'" in str(res.exception)


@pytest.mark.parametrize("how", ["env", "flag"])
def test_base_url_without_judge_uses_openai(tmp_path: Path, how: str) -> None:
    data = write_jsonl(tmp_path / "qa.jsonl", [ROW])
    with LoopbackServer() as srv:
        flag = ["--base-url", srv.base_url] if how == "flag" else []
        env = {"OPENAI_BASE_URL": srv.base_url} if how == "env" else {}
        res = run_score(str(data), "-r", "factuality", "--no-cache", *flag, env=env)
        assert len(srv.requests) == 1
    assert res.exit_code == 0, res.output
    why = "--base-url given" if how == "flag" else "OPENAI_BASE_URL is set"
    assert f"judge: openai/gpt-4o-mini ({why})" in res.output
    assert "scored     1" in res.output


def test_base_url_for_a_non_openai_judge_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="base_url is for openai"):
        get_provider("fake/echo-score", base_url="http://127.0.0.1:9/v1")
    data = write_jsonl(tmp_path / "qa.jsonl", [ROW])
    res = run_score(str(data), "-r", "factuality", "-j", "fake/echo-score", "--base-url", "http://127.0.0.1:9/v1")
    assert isinstance(res.exception, ConfigError)


def test_an_unknown_provider_option_is_refused_naming_it_and_the_accepted_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown option 'devcie' for a fake/\* judge .*accepted: script, api_key"):
        get_provider("fake/echo-score", devcie="cpu")
    with pytest.raises(ConfigError, match=r"unknown option 'script'.*accepted: device, dtype"):
        get_provider("local/smollm2", script=["x"])
    # what callers pass to whichever judge is named (the CLI's --timeout has a default) is not refused
    assert get_provider("fake/echo-score", timeout=60.0, structured_output=False).id == "fake/echo-score"


def test_the_registry_says_what_each_provider_is() -> None:
    from judge.providers.registry import PROVIDERS, provider_info

    assert [p for p, info in PROVIDERS.items() if info.free] == ["local", "hf", "fake"]
    assert [p for p, info in PROVIDERS.items() if info.greedy_only] == ["local", "hf"]
    assert provider_info("hf/x").load() is provider_info("local").load()
    assert provider_info("local").load().supports_prefill and not provider_info("openai").load().supports_prefill
    assert provider_info(get_provider("fake/echo-score")).in_process
    assert provider_info("elsewhere/x").name == ""  # unregistered: none of the above


# --- 9. environment variables -------------------------------------------------------------------


def test_env_vars_named_after_the_flags(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "qa.jsonl", [{"id": "a", "question": "q", "answer": "o"}])
    env = {"JUDGE_SCORE_JUDGE": "fake/echo-score", "JUDGE_SCORE_MAP": "input=question output=answer"}
    res = run_score(str(data), "-r", "factuality", env=env)
    assert res.exit_code == 0, res.output
    assert "judge: " not in res.output  # a judge was named, so no default-judge notice
    verdict = json.loads((tmp_path / "qa.factuality.verdicts.jsonl").read_text())
    assert verdict["judge_model"] == "fake/echo-score" and verdict["status"] == "ok"


def test_every_score_option_reads_the_variable_named_after_its_flag() -> None:
    from judge.cli_score import rubrics_show, score

    for prefix, command in (("JUDGE_SCORE", score), ("JUDGE_RUBRICS_SHOW", rubrics_show)):
        for param in command.params:
            if isinstance(param, click.Option):
                flag = max(param.opts, key=len).lstrip("-").replace("-", "_").upper()
                # an explicit envvar wins; otherwise click derives the name from the parameter's name
                actual = param.envvar or f"{prefix}_{(param.name or '').upper()}"
                assert actual == f"{prefix}_{flag}", param.opts


# --- 10. price tables ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ({"gpt-4o-mini": {"input": 1.0}}, r"model 'gpt-4o-mini': 'output' is missing"),
        ({"m": {"input": "0.5", "output": 1}}, r"model 'm': 'input': Input should be a valid number"),
        ({"m": {"input": -1, "output": 1}}, r"model 'm': 'input': .*greater than or equal to 0"),
        ({"m": [1, 2]}, r"model 'm': must be an object, got list"),
        ([1, 2], r"expected a JSON object"),
    ],
)
def test_bad_price_table_is_refused_before_any_call(tmp_path: Path, table: object, expected: str) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps(table))
    data = write_jsonl(tmp_path / "qa.jsonl", [ROW])
    with LoopbackServer() as srv:
        res = run_score(
            str(data),
            "-r",
            "factuality",
            "-j",
            "openai/gpt-4o-mini",
            "--base-url",
            srv.base_url,
            "--prices",
            str(prices),
        )
        assert srv.requests == []
    assert isinstance(res.exception, ConfigError), res.output
    assert f"price table {prices}" in str(res.exception)
    assert re.search(expected, str(res.exception)), str(res.exception)


def test_good_price_table_prices_the_run(tmp_path: Path) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"_note": "mine", "m": {"input": 1000000, "output": 0}}))
    data = write_jsonl(tmp_path / "qa.jsonl", [ROW])
    with LoopbackServer() as srv:
        res = run_score(
            str(data), "-r", "factuality", "-j", "openai/m", "--base-url", srv.base_url, "--prices", str(prices)
        )
    assert res.exit_code == 0, res.output
    verdict = json.loads((tmp_path / "qa.factuality.verdicts.jsonl").read_text())
    assert verdict["cost_usd"] == verdict["prompt_tokens"] > 0


# --- 11. output paths ---------------------------------------------------------------------------


def test_default_out_keeps_all_but_the_final_suffix(tmp_path: Path) -> None:
    assert default_out(tmp_path / "run.a.jsonl", "factuality").name == "run.a.factuality.verdicts.jsonl"
    assert default_out(tmp_path / "run.b.jsonl", "factuality").name == "run.b.factuality.verdicts.jsonl"
    assert default_out(tmp_path / "qa.csv", "rubrics/mine.j2").name == "qa.mine.verdicts.jsonl"
    assert default_out(tmp_path / "qa.csv", "./myrubric").name == "qa.myrubric.verdicts.jsonl"


def test_rubric_path_without_j2_suffix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from judge.rubric import builtin_dir

    (tmp_path / "myrubric").write_text((builtin_dir() / "factuality.j2").read_text())
    data = write_jsonl(tmp_path / "qa.jsonl", [ROW])
    monkeypatch.chdir(tmp_path)
    res = run_score("qa.jsonl", "-r", "./myrubric", "-j", "fake/echo-score")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "qa.myrubric.verdicts.jsonl").exists() and data.exists()


def test_out_may_not_be_the_data_file(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "qa.jsonl", [ROW])
    before = data.read_text()
    res = run_score(str(data), "-r", "factuality", "-j", "fake/echo-score", "-o", str(tmp_path / "." / "qa.jsonl"))
    assert isinstance(res.exception, DataError) and "is an input of this run" in str(res.exception)
    assert data.read_text() == before


# --- 13. Ctrl-C ---------------------------------------------------------------------------------


@pytest.mark.parametrize("no_cache", [False, True])
def test_main_explains_an_interrupt(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], no_cache: bool
) -> None:
    @click.command()
    @click.option("--no-cache", is_flag=True)
    def boom(no_cache: bool) -> None:
        raise KeyboardInterrupt

    module = types.ModuleType("_judge_boom")
    module.boom = boom  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(LAZY_COMMANDS, "boom", (module.__name__, "boom"))
    with pytest.raises(SystemExit) as exc:
        main(["boom", *(["--no-cache"] if no_cache else [])])
    assert exc.value.code == 130
    err = capsys.readouterr().err
    assert "Interrupted" in err and ".partial" in err and "Aborted" not in err
    assert ("finished calls come from the cache" in err) is not no_cache


def test_ctrl_c_during_a_run_leaves_partial_and_says_how_to_resume(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "qa.jsonl", [{**ROW, "id": f"i{n}", "input": f"q{n}"} for n in range(3)])
    out = tmp_path / "v.jsonl"
    answered = threading.Event()

    def responder(request: dict) -> Reply:
        if answered.is_set():
            return Reply(content="too late", delay_s=30)
        answered.set()
        return judge_responder(request)

    with LoopbackServer(responder=responder, max_seconds=60) as srv:
        cmd = [sys.executable, "-m", "judge", "score", str(data), "-r", "factuality", "-j", "openai/m"]
        cmd += ["--base-url", srv.base_url, "-c", "1", "-o", str(out)]
        # PYTHONFAULTHANDLER: if the run ever fails to stop, SIGABRT makes it print where every thread is
        env = {**os.environ, "OPENAI_API_KEY": "k", "PYTHONFAULTHANDLER": "1"}
        # a suite started in the background (`.ci/run &`) inherits SIGINT ignored, as shells do for
        # background jobs; the child gets the default disposition back, as in a terminal
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            partial = tmp_path / "v.jsonl.partial"
            deadline = time.monotonic() + 30
            while not (partial.exists() and partial.read_text().strip()) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert partial.exists() and partial.read_text().strip(), "the first verdict never reached the partial file"
            proc.send_signal(signal.SIGINT)
            try:
                _, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGABRT)
                _, stuck = proc.communicate(timeout=30)
                pytest.fail(f"still running 30 s after Ctrl-C; where it was:\n{stuck}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert f"verdicts finished before the interrupt: {partial}" in err
    assert "rerun the same command: finished calls come from the cache" in err
    assert not out.exists() and len(partial.read_text().splitlines()) == 1
