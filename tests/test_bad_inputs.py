"""Bad input, tried as a new user would: each case ends in one clear message and exit code 2.

The files live in ``tests/bad_inputs/``; cases that need a folder, a lock or permissions build them in
``tmp_path``. Every case runs the real CLI entry point (``judge.cli.main``) and checks the exit code, that
no traceback is shown, that the message names the file (and line or field where there is one), and that
no output, not even a partial one, was written.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from judge.cli import main
from judge.io import OutputLock, atomic_write_text

CORPUS = Path(__file__).resolve().parent / "bad_inputs"
ITEMS = CORPUS / "items.jsonl"
SCORE = ["score", "--rubric", "relevance", "--judge", "fake/echo-score", "--no-cache", "--no-progress"]


@dataclass
class Case:
    """A command line, what its message must contain, and the paths that must not appear."""

    argv: list[str]
    expect: list[str]
    not_written: list[Path] = field(default_factory=list)


def read_only_dir(tmp: Path) -> Path:
    """A folder this process cannot write: chmod 555, or for root (who ignores modes) /sys."""
    if os.geteuid() != 0:
        d = tmp / "ro"
        d.mkdir()
        d.chmod(stat.S_IRUSR | stat.S_IXUSR)
        return d
    if os.access("/sys", os.W_OK) and not _unwritable(Path("/sys")):
        pytest.skip("running as root with no read-only folder to test against")
    return Path("/sys")


def _unwritable(d: Path) -> bool:
    try:
        (d / ".judge-probe").touch()
    except OSError:
        return True
    (d / ".judge-probe").unlink()
    return False


def garbage_parquet(tmp: Path) -> Case:
    out = tmp / "v.jsonl"
    return Case([*SCORE, str(CORPUS / "garbage.parquet"), "-o", str(out)], ["garbage.parquet", "Parquet"], [out])


def out_is_a_folder(tmp: Path) -> Case:
    return Case([*SCORE, str(ITEMS), "-o", str(tmp)], [str(tmp), "--out is a folder"], [tmp / "verdicts.jsonl"])


def out_under_a_file(tmp: Path) -> Case:
    (tmp / "afile").write_text("x")
    out = tmp / "afile" / "v.jsonl"
    return Case([*SCORE, str(ITEMS), "-o", str(out)], [str(out), "is a file, not a folder"])


def out_in_read_only_folder(tmp: Path) -> Case:
    out = read_only_dir(tmp) / "v.jsonl"
    return Case([*SCORE, str(ITEMS), "-o", str(out)], [str(out), "cannot be written"], [out])


def out_locked_by_another_run(tmp: Path) -> Case:
    out = tmp / "v.jsonl"
    _HELD.append(OutputLock(out).acquire())  # as another run would hold it; released after the case
    return Case([*SCORE, str(ITEMS), "-o", str(out)], [str(out), "another run is writing", "v.jsonl.lock"], [out])


def calibrate_json_read_only(tmp: Path) -> Case:
    target = read_only_dir(tmp) / "report.json"
    argv = ["calibrate", "--judge", str(CORPUS / "verdicts.jsonl"), "--human", str(CORPUS / "verdicts.jsonl")]
    return Case([*argv, "--bootstrap", "0", "--json", str(target)], [str(target), "--json cannot be written"])


def rubric(name: str, *expect: str) -> Callable[[Path], Case]:
    def build(tmp: Path) -> Case:
        out = tmp / "v.jsonl"
        argv = ["score", str(ITEMS), "--rubric", str(CORPUS / name), "--judge", "fake/echo-score", "-o", str(out)]
        return Case([*argv, "--no-cache"], [name, *expect], [out])

    return build


def validate_a_folder(tmp: Path) -> Case:
    return Case(["rubrics", "validate", str(CORPUS)], [str(CORPUS), "is a folder", "*.j2"])


def utf16(name: str) -> Callable[[Path], Case]:
    def build(tmp: Path) -> Case:
        out = tmp / "v.jsonl"
        return Case([*SCORE, str(CORPUS / name), "-o", str(out)], [name, "UTF-16", "iconv -f utf-16"], [out])

    return build


def labels_share_no_class(tmp: Path) -> Case:
    argv = ["calibrate", "--judge", str(CORPUS / "verdicts.jsonl"), "--human", str(CORPUS / "labels_good_bad.csv")]
    return Case([*argv, "--bootstrap", "0"], ["labels_good_bad.csv", "share no value", "bad, good"])


def deep(command: str) -> Callable[[Path], Case]:
    """``deep.jsonl``'s line 2 nests 5000 lists deep: read by each command, as data, verdicts or labels."""

    def build(tmp: Path) -> Case:
        data, out = str(CORPUS / "deep.jsonl"), tmp / "out"
        labels = str(CORPUS / "labels_float_ids.csv")
        suite = tmp / "suite.yaml"
        suite.write_text(f"data: {data}\nsystems:\n  a: {data}\n  b: {data}\nmetrics: [exact_match]\n")
        argv = {
            "score": [*SCORE, data, "-o", str(out)],
            "calibrate-judge": ["calibrate", "--judge", data, "--human", labels, "--json", str(out)],
            "calibrate-human": ["calibrate", "--judge", str(CORPUS / "verdicts.jsonl"), "--human", data],
            "report": ["report", data, "--out", str(out)],
            "eval": ["eval", str(suite), "--out", str(out)],
        }[command]
        return Case(argv, ["deep.jsonl:2", "nested more than 100 levels deep"], [out])

    return build


def suite_file(name: str, *expect: str) -> Callable[[Path], Case]:
    def build(tmp: Path) -> Case:
        return Case(["eval", str(CORPUS / name), "--out", str(tmp / "ev")], [name, *expect], [tmp / "ev"])

    return build


_HELD: list[OutputLock] = []

CASES: dict[str, Callable[[Path], Case]] = {
    "garbage-parquet": garbage_parquet,
    "out-is-a-folder": out_is_a_folder,
    "out-under-a-file": out_under_a_file,
    "out-in-read-only-folder": out_in_read_only_folder,
    "out-locked-by-another-run": out_locked_by_another_run,
    "calibrate-json-read-only": calibrate_json_read_only,
    "rubric-include": rubric("include.j2", ":9:", "{% include %} is not allowed"),
    "rubric-huge-range": rubric("range.j2", "range of 1000000000 items is too large"),
    "rubric-huge-repeat": rubric("repeat.j2", "repeating a str 1000000000 times"),
    "rubrics-validate-a-folder": validate_a_folder,
    "utf16-with-bom": utf16("utf16_bom.jsonl"),
    "utf16-without-bom": utf16("utf16_nobom.csv"),
    "labels-share-no-class-with-judge": labels_share_no_class,
    **{f"deeply-nested-{command}": deep(command) for command in ("score", "calibrate-judge", "calibrate-human")},
    **{f"deeply-nested-{command}": deep(command) for command in ("report", "eval")},
    "deeply-nested-suite": suite_file("deep_suite.yaml", ":6:", "nested more than 100 levels deep"),
    "suite-alias-bomb": suite_file("bomb_suite.yaml", "bomb_suite.yaml:", "aliases expand to more than 100,000 values"),
    "rubric-recursive-macro": rubric("recursive_macro.j2", ":9:", "recursed too deeply"),
    "rubric-silent-loops": rubric("silent_loops.j2", ":11:", "more than 1,000,000 loop steps and calls"),
}


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run ``judge ARGV`` in-process; return the exit code and everything printed."""
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_exits_2_with_a_message_naming_the_file(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case = CASES[name](tmp_path)
    try:
        code, output = run_cli(case.argv, capsys)
    finally:
        while _HELD:
            _HELD.pop().release()
    assert code == 2, output
    assert "Traceback" not in output
    for text in case.expect:
        assert text in output, f"{text!r} not in {output!r}"
    for path in case.not_written:
        assert not path.exists(), f"{path} was written"
        assert not path.with_name(path.name + ".partial").exists()


def test_blank_label_cells_are_skipped_and_counted(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["calibrate", "--judge", str(CORPUS / "verdicts.jsonl"), "--human", str(CORPUS / "labels_blank_cells.csv")]
    code, output = run_cli([*argv, "--bootstrap", "0", "--label-type", "ordinal"], capsys)
    assert code == 0, output
    assert "skipped 2 row(s) with a blank label or annotator" in output and "lines 14, 15" in output


def test_float_looking_ids_match_integer_ids(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["calibrate", "--judge", str(CORPUS / "verdicts_int_ids.jsonl"), "--human"]
    code, output = run_cli([*argv, str(CORPUS / "labels_float_ids.csv"), "--bootstrap", "0"], capsys)
    assert code == 0, output
    assert "compared 12" in output and "match no judge item" not in output


def test_one_annotator_says_why_there_is_no_ceiling(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["calibrate", "--judge", str(CORPUS / "verdicts_int_ids.jsonl"), "--human"]
    _, output = run_cli([*argv, str(CORPUS / "labels_float_ids.csv"), "--bootstrap", "0"], capsys)
    assert "one label per item (a single annotator), so there is no human-human ceiling" in output


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        [*SCORE, str(ITEMS), "--timeout", "0"],
        [*SCORE, str(ITEMS), "--concurrency", "0"],
        ["mtbench", "judge", "--questions", "q.jsonl", "--answers", "a", "--out", "o.jsonl", "--concurrency", "0"],
        ["mtbench", "answer", "--questions", "q.jsonl", "--model", "fake/x", "--out", "o.jsonl", "--concurrency=-3"],
        [*SCORE, str(ITEMS), "--max-unscored", "1.5"],
        ["score", "--no-such-option"],
    ):
        code, output = run_cli(argv, capsys)
        assert code == 2, (argv, output)
        assert "Traceback" not in output


def test_files_written_atomically_get_the_umask_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        with OutputLock(tmp_path / "b.jsonl"):
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert not (tmp_path / "b.jsonl.lock").exists()  # the lock file goes with the run


def test_score_exit_codes_count_transport_and_parse_failures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from judge.testing.server import LoopbackServer, Reply

    data = tmp_path / "d.jsonl"
    shutil.copy(ITEMS, data)
    base = ["score", str(data), "-r", "relevance", "--judge", "openai/m", "--no-cache", "--no-progress"]
    # every completion unreadable: nothing scored -> 3
    with LoopbackServer(responder=lambda r: Reply(content="no idea")) as srv:
        code, output = run_cli([*base, "--base-url", srv.base_url, "--max-attempts", "1"], capsys)
    assert code == 3 and "nothing scored: 0 of 2 items (0 for a transport reason, 2 unreadable)" in output
    # one item unreadable, the other fine: parse failures alone do not fail the run...
    good = json.dumps({"reasoning": "fine", "score": 4})

    def half(request: dict) -> Reply:
        return Reply(content=good if "2+2" in json.dumps(request) else "no idea")

    with LoopbackServer(responder=half) as srv:
        code, output = run_cli([*base, "--base-url", srv.base_url], capsys)
        assert code == 0, output
        # ...unless their share passes --max-unscored
        code, output = run_cli([*base, "--base-url", srv.base_url, "--max-unscored", "0.25"], capsys)
    assert (
        code == 3 and "1 of 2 items unscored (0 for a transport reason, 1 unreadable), above --max-unscored" in output
    )

    # one item never answered (HTTP 500 after every retry): the run is incomplete at once
    def flaky(request: dict) -> Reply:
        return Reply(content=good) if "2+2" in json.dumps(request) else Reply(content="down", status=500)

    with LoopbackServer(responder=flaky) as srv:
        code, output = run_cli([*base, "--base-url", srv.base_url, "--max-attempts", "2"], capsys)
    assert code == 3, output
    assert "1 of 2 items unscored for a transport reason after all retries" in output


# --- an output that would overwrite an input of the run: refused up front, the input untouched ---------------


def _copy(tmp: Path, *names: str) -> list[Path]:
    out = []
    for name in names:
        shutil.copy(CORPUS / name, tmp / name)
        out.append(tmp / name)
    return out


def _answers(tmp: Path) -> Path:
    folder = tmp / "answers"
    folder.mkdir()
    rows = [{"question_id": 1, "model_id": "m", "choices": [{"turns": ["Hi.", "Why?"]}]}]
    (folder / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder / "m.jsonl"


def _questions(tmp: Path) -> Path:
    q = tmp / "question.jsonl"
    shutil.copy(Path(__file__).resolve().parent.parent / "examples" / "mtbench" / "question.jsonl", q)
    return q


def _suite(tmp: Path) -> Path:
    (tmp / "a.jsonl").write_text('{"id": "a", "output": "4"}\n{"id": "b", "output": "Paris"}\n')
    (tmp / "scores.jsonl").write_text('{"id": "a", "output": "5"}\n{"id": "b", "output": "Lyon"}\n')
    suite = tmp / "suite.yaml"
    body = "data: items.jsonl\nsystems:\n  a: a.jsonl\n  b: scores.jsonl\nmetrics:\n  - exact_match\n"
    suite.write_text(body)
    return suite


def score_out_is_a_symlink_to_the_data(tmp: Path) -> tuple[list[str], Path]:
    (data,) = _copy(tmp, "items.jsonl")
    (tmp / "link.jsonl").symlink_to(data)
    return [*SCORE, str(data), "-o", str(tmp / "link.jsonl")], data


def score_out_is_the_rubric(tmp: Path) -> tuple[list[str], Path]:
    (data, rub) = _copy(tmp, "items.jsonl", "repeat.j2")
    argv = ["score", str(data), "--rubric", str(rub), "--judge", "fake/echo-score", "--no-cache"]
    return [*argv, "-o", str(tmp / "sub" / ".." / "repeat.j2")], rub


def calibrate_json_is_the_labels(tmp: Path) -> tuple[list[str], Path]:
    (verdicts, labels) = _copy(tmp, "verdicts_int_ids.jsonl", "labels_float_ids.csv")
    argv = ["calibrate", "--judge", str(verdicts), "--human", str(labels), "--bootstrap", "0"]
    return [*argv, "--json", str(tmp / "." / "labels_float_ids.csv")], labels


def calibrate_report_is_the_verdicts(tmp: Path) -> tuple[list[str], Path]:
    (verdicts, labels) = _copy(tmp, "verdicts_int_ids.jsonl", "labels_float_ids.csv")
    argv = ["calibrate", "--judge", str(verdicts), "--human", str(labels), "--bootstrap", "0"]
    return [*argv, "--report", str(verdicts)], verdicts


def report_out_is_an_input(tmp: Path) -> tuple[list[str], Path]:
    (verdicts, items) = _copy(tmp, "verdicts.jsonl", "items.jsonl")
    return ["report", str(verdicts), "--items", str(items), "--out", str(items)], items


def eval_report_is_the_data(tmp: Path) -> tuple[list[str], Path]:
    (items,) = _copy(tmp, "items.jsonl")
    return ["eval", str(_suite(tmp)), "--out", str(tmp / "ev"), "--report", str(items)], items


def eval_out_holds_a_system_file(tmp: Path) -> tuple[list[str], Path]:
    _copy(tmp, "items.jsonl")
    return ["eval", str(_suite(tmp)), "--out", str(tmp)], tmp / "scores.jsonl"  # would write tmp/scores.jsonl


def mtbench_judge_out_is_an_answers_file(tmp: Path) -> tuple[list[str], Path]:
    answers = _answers(tmp)
    argv = ["mtbench", "judge", "--questions", str(_questions(tmp)), "--answers", str(answers.parent)]
    return [*argv, "--mode", "single", "--judge", "fake/x", "--out", str(answers)], answers


def mtbench_answer_out_is_the_questions(tmp: Path) -> tuple[list[str], Path]:
    q = _questions(tmp)
    return ["mtbench", "answer", "--questions", str(q), "--model", "fake/x", "--out", str(q)], q


def mtbench_show_plot_is_the_judgments(tmp: Path) -> tuple[list[str], Path]:
    (verdicts,) = _copy(tmp, "verdicts.jsonl")
    return ["mtbench", "show", str(verdicts), "--plot", str(verdicts)], verdicts


def mtbench_llmbar_out_dir_holds_the_questions(tmp: Path) -> tuple[list[str], Path]:
    (data,) = _copy(tmp, "items.jsonl")  # never read: the check comes first
    return ["mtbench", "llmbar", str(data), "--questions", str(_questions(tmp)), "--out-dir", str(tmp)], tmp / (
        "question.jsonl"
    )


def baseline_out_is_the_data(tmp: Path) -> tuple[list[str], Path]:
    (data,) = _copy(tmp, "items.jsonl")
    return ["baseline", "similarity", str(data), "--out", str(data)], data


OVERWRITES: dict[str, Callable[[Path], tuple[list[str], Path]]] = {
    "score-out-symlink-to-data": score_out_is_a_symlink_to_the_data,
    "score-out-is-the-rubric": score_out_is_the_rubric,
    "calibrate-json-is-the-labels": calibrate_json_is_the_labels,
    "calibrate-report-is-the-verdicts": calibrate_report_is_the_verdicts,
    "report-out-is-an-input": report_out_is_an_input,
    "eval-report-is-the-data": eval_report_is_the_data,
    "eval-out-holds-a-system-file": eval_out_holds_a_system_file,
    "mtbench-judge-out-is-an-answers-file": mtbench_judge_out_is_an_answers_file,
    "mtbench-answer-out-is-the-questions": mtbench_answer_out_is_the_questions,
    "mtbench-show-plot-is-the-judgments": mtbench_show_plot_is_the_judgments,
    "mtbench-llmbar-out-dir-holds-the-questions": mtbench_llmbar_out_dir_holds_the_questions,
    "baseline-out-is-the-data": baseline_out_is_the_data,
}


@pytest.mark.parametrize("name", list(OVERWRITES))
def test_an_output_that_is_an_input_is_refused_before_any_work(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv, victim = OVERWRITES[name](tmp_path)
    before = victim.read_bytes()
    code, output = run_cli(argv, capsys)
    assert code == 2, output
    assert "Traceback" not in output
    assert "is an input of this run" in output and victim.name in output, output
    assert victim.read_bytes() == before  # not a byte changed
