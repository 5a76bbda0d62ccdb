"""`judge score` end to end: data files in, verdict JSONL out, clear errors, the Python API."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pandas as pd
import pytest
from click.testing import CliRunner

from judge import ascore, load_items, load_rubric, score
from judge.cli import cli
from judge.errors import DataError, VerdictParseError
from judge.testing.server import LoopbackServer
from judge.verdict import parse_verdict

from .conftest import EXAMPLES


def test_score_cli_against_loopback_writes_ordered_jsonl(tmp_path) -> None:
    data = tmp_path / "d.csv"
    data.write_text('question,answer,reference\nWhat is 2+2?,4,4\n"Capital of France, please?",Lyon,Paris\n')
    out = tmp_path / "v.jsonl"
    with LoopbackServer() as srv:
        res = CliRunner().invoke(
            cli,
            [
                "score",
                str(data),
                "--rubric",
                "factuality",
                "--judge",
                "openai/m",
                "--base-url",
                srv.base_url,
                "--map",
                "input=question",
                "--map",
                "output=answer",
                "--out",
                str(out),
                "--no-cache",
            ],
            env={"OPENAI_API_KEY": "k"},
        )
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows)
    # ids are derived from content: the same on every run
    assert [r["id"] for r in rows] == [i.id for i in load_items(data, {"input": "question", "output": "answer"})]
    assert rows[0]["id"].startswith("item-")
    assert "scored     2" in res.output and f"verdicts written to {out}" in res.output


def test_default_output_path_and_default_judge_line(tmp_path) -> None:
    data = tmp_path / "qa.jsonl"
    data.write_text(json.dumps({"id": "a", "input": "q", "output": "o"}) + "\n")
    res = CliRunner().invoke(cli, ["score", str(data), "-r", "relevance", "--judge", "fake/echo-score"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "qa.relevance.verdicts.jsonl").exists()


@pytest.mark.parametrize(
    ("content", "suffix", "expected"),
    [
        ('{"id": "a", "input": "q", "output": "o"}\n{"id": "b", "input": "q"\n', ".jsonl", r"d\.jsonl:2: invalid JSON"),
        (
            '{"id": "a", "input": "q", "output": "o"}\n{"id": "b", "input": "q"}\n',
            ".jsonl",
            r"d\.jsonl:2, field 'output': rubric 'factuality' requires 'output'",
        ),
        (
            '{"id": "a", "input": "q", "output": "o"}\n{"id": "a", "input": "q", "output": "p"}\n',
            ".jsonl",
            r"d\.jsonl:2, field 'id': duplicate id 'a' \(first seen at .*d\.jsonl:1\)",
        ),
        ("id,input,output\na,q,o\nb,q,o,extra\n", ".csv", r"d\.csv:3: more values than header columns"),
        ("[1, 2]", ".json", r"record 1: expected an object"),
        ("", ".jsonl", r"no items in file"),
        ("x", ".txt", r"unsupported file type"),
    ],
)
def test_bad_data_is_a_clear_error_naming_file_line_field(tmp_path, content, suffix, expected) -> None:
    data = tmp_path / f"d{suffix}"
    data.write_text(content)
    out = tmp_path / "v.jsonl"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "judge",
            "score",
            str(data),
            "-r",
            "factuality",
            "-j",
            "fake/echo-score",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    import re

    assert re.search(expected, proc.stderr), proc.stderr
    assert not out.exists() and not (tmp_path / "v.jsonl.partial").exists()  # nothing half written


def test_python_api_dataframe_async_and_parquet(tmp_path) -> None:
    df = pd.DataFrame({"input": ["2+2?", "3+3?"], "output": ["4", "7"], "topic": ["math", "math"]})
    results = score(df, "factuality", "fake/echo-score", cache=False)
    frame = results.to_pandas()
    assert list(frame["status"]) == ["ok", "ok"] and frame["score"].between(1, 5).all()
    again = asyncio.run(ascore(df.to_dict(orient="records"), "factuality", "fake/echo-score", cache=False))
    assert [v.score for v in again] == [v.score for v in results]
    df.to_parquet(tmp_path / "d.parquet")
    items = load_items(tmp_path / "d.parquet")
    assert items[0].extra == {"topic": "math"} and items[1].output == "7"


def test_examples_qa_file_scores_with_fake_judge() -> None:
    results = score(EXAMPLES / "qa.jsonl", "factuality", "fake/echo-score", cache=False)
    assert len(results) >= 20 and all(v.status == "ok" for v in results)


@pytest.mark.parametrize(
    ("text", "score"),
    [
        ('{"reasoning": "fine", "score": 4}', 4),
        ('```json\n{"score": "3", "reasoning": "x"}\n```', 3),
        ('Draft: {"score": 9}. Final: {"reasoning": "r", "score": 2}', 2),  # last valid one wins
        ("Looks good.\nScore: 5", 5),
        ("First I thought 1. Rating: [[4]]", 4),
        ("I'd give it 3/5", 3),
        ("score: 2\nOn reflection the final answer deserves 4/5", 4),  # the last valid score, across patterns
        ("Rating: [[7]] is what I first thought. Score: 4", 4),  # [[7]] is off the scale, a later 4 is not
        ("The answer is right.\n4\n", 4),  # a bare number on its own line
    ],
)
def test_parse_verdict_fallbacks(text, score) -> None:
    assert parse_verdict(text, load_rubric("factuality")).score == score


@pytest.mark.parametrize(
    "text", ["", "no number here", '{"score": 0}', '{"score": "high"}', "Score: 6", '{"score": true}']
)
def test_parse_verdict_refuses(text) -> None:
    with pytest.raises(VerdictParseError):
        parse_verdict(text, load_rubric("factuality"))


def test_pairwise_parsing() -> None:
    r = load_rubric("pairwise")
    assert parse_verdict('{"reasoning": "x", "verdict": "B"}', r).label == "B"
    assert parse_verdict("after thought [[C]]", r).label == "tie"
    with pytest.raises(DataError):
        load_items(EXAMPLES / "does-not-exist.jsonl")
