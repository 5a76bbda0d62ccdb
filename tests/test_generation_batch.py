"""``judge eval --batch`` and ``judge mtbench answer --batch``: a model under test answers through the Batch API.

Real HTTP against the loopback server's Files + Batch endpoints: every answer comes from a batch (no
chat-completions call), the outputs equal a synchronous run's, a rerun is served from the cache, an
item the batch answers with an error is unscored with the reason, and ``--batch`` with nothing to send
is refused before any work. MT-Bench's turns go in one round of batches per turn.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from judge.testing.server import LoopbackServer, Reply
from tests.conftest import judge_cli

ITEMS = [
    {"id": "a", "input": "What is two plus two?", "reference": "four"},
    {"id": "b", "input": "Name a primary colour.", "reference": "red"},
    {"id": "c", "input": "The capital of France?", "reference": "Paris"},
    {"id": "d", "input": "Opposite of hot?", "reference": "cold"},
    {"id": "e", "input": "A large grey animal with a trunk, in one word, please.", "reference": "elephant"},
]
FIELDS = ("id", "output", "status", "error", "finish_reason", "prompt_tokens", "completion_tokens")


def responder(request: dict[str, Any]) -> Reply | str:
    text = request["messages"][-1]["content"]
    if "France" in text:
        return "400"  # refused: the item is unscored with the reason, never dropped
    if "colour" in text:
        return "500"  # a line error: resubmitted, then unscored when it keeps failing
    return Reply(f"The answer is {text.split()[-1]}", finish_reason="stop")


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def _suite(tmp_path: Path, url: str, **extra: Any) -> Path:
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ITEMS), encoding="utf-8")
    (tmp_path / "base.jsonl").write_text(
        "".join(json.dumps({"id": r["id"], "output": r["reference"]}) + "\n" for r in ITEMS), encoding="utf-8"
    )
    suite = {
        "data": "items.jsonl",
        "systems": {"base": "base.jsonl", "api": {"model": "openai/served", "base_url": url}},
        "generate": {"max_new_tokens": 8},
        "metrics": ["token_f1"],
        "bootstrap": 200,
        "permutations": 200,
        **extra,
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite), encoding="utf-8")
    return path


def _eval(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    return judge_cli(capsys, "eval", *args)


def _picked(records: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [tuple(r.get(k) for k in FIELDS) for r in records]


def test_eval_batch_generates_through_batches_equal_to_sync_and_reruns_from_cache(tmp_path, capsys, monkeypatch):
    sync_dir, batch_dir = tmp_path / "sync", tmp_path / "batch"
    sync_dir.mkdir()
    batch_dir.mkdir()
    with monkeypatch.context() as env, LoopbackServer(responder) as srv:
        env.setenv("JUDGE_CACHE_DIR", str(sync_dir / "cache"))  # the batch run shares none of these answers
        code, _, err = _eval(capsys, str(_suite(sync_dir, srv.base_url)), "--out", str(sync_dir / "out"))
        assert code == 0, err
    sync = _jsonl(sync_dir / "out" / "outputs" / "api.jsonl")

    with LoopbackServer(responder, batch_seconds=0.02) as srv:
        suite = _suite(batch_dir, srv.base_url)
        args = [str(suite), "--out", str(batch_dir / "out"), "--batch", "--batch-poll", "0.01"]
        code, _, err = _eval(capsys, *args)
        assert code == 0, err
        assert "generate api: batch API: 3 batches, 7 lines (2 resubmitted, 1 unanswered) in 3 rounds" in err
        # every answer from a batch: no chat-completions call; the 500 line was submitted 3 times (max_submissions)
        assert srv.statuses == [] and len(srv.requests) == srv.batch_desk.lines_run == len(ITEMS) + 2
        lines = [
            json.loads(x)
            for f in srv.batch_desk.files.values()
            if f["meta"]["purpose"] == "batch"
            for x in f["data"].decode().splitlines()
        ]
        assert all(x["url"] == "/v1/chat/completions" and x["body"]["max_tokens"] == 8 for x in lines)
        assert {x["body"]["messages"][-1]["content"] for x in lines} == {r["input"] for r in ITEMS}
        first = _jsonl(batch_dir / "out" / "outputs" / "api.jsonl")
        batches = set(srv.batch_desk.batches)
        provenance = json.loads((batch_dir / "out" / "results.json").read_text())["provenance"]
        report = provenance["models"]["api"]["batch"]  # what the Batch API did: 3 rounds (b resubmitted twice)
        assert (report["batches_submitted"], report["lines_submitted"], report["rounds"]) == (3, len(ITEMS) + 2, 3)
        assert report["lines_unanswered"] == 1 and report["batch_ids"] == list(srv.batch_desk.batches)

        # rerun: every answer (and the refusal) from the cache; only the item that got none is submitted again
        code, _, err = _eval(capsys, *args)
        assert code == 0, err
        assert srv.statuses == [] and srv.batch_desk.lines_run == len(ITEMS) + 2 + 3
        resent = [b["lines"] for bid, b in srv.batch_desk.batches.items() if bid not in batches]
        assert [[body["messages"][-1]["content"] for _, body in ls] for ls in resent] == [[ITEMS[1]["input"]]] * 3
        again = _jsonl(batch_dir / "out" / "outputs" / "api.jsonl")

    ok = [r for r in first if r["status"] == "ok"]
    assert [r["id"] for r in ok] == ["a", "d", "e"] and not any(r["cached"] for r in ok)
    # the answers equal the synchronous run's (the failures' reasons name the batch instead of the server)
    assert _picked(ok) == _picked([r for r in sync if r["status"] == "ok"])
    by_id = {r["id"]: r for r in first}
    assert by_id["c"]["output"] is None and by_id["c"]["error"].startswith("generation rejected: HTTP 400 in batch")
    assert by_id["b"]["error"].startswith("generation failed: BatchLineError: batch ")
    assert "(submitted 3 times)" in by_id["b"]["error"]
    assert all(r["cached"] for r in again if r["status"] == "ok")
    assert _picked([r for r in again if r["id"] != "b"]) == _picked([r for r in first if r["id"] != "b"])

    scores = {(r["id"], r["system"]): r for r in _jsonl(batch_dir / "out" / "scores.jsonl")}
    assert scores[("c", "api")]["status"] == "unscored" and "HTTP 400 in batch" in scores[("c", "api")]["error"]
    assert scores[("a", "api")]["status"] == "ok"


def test_suite_key_batch_with_settings(tmp_path, capsys):
    with LoopbackServer(responder, batch_seconds=0.02) as srv:
        suite = _suite(tmp_path, srv.base_url, batch={"poll_interval": 0.01, "max_submissions": 1})
        code, _, err = _eval(capsys, str(suite), "--out", str(tmp_path / "out"))
        assert code == 0, err
        assert srv.statuses == [] and len(srv.batch_desk.batches) == 1 and srv.batch_desk.lines_run == len(ITEMS)
    records = {r["id"]: r for r in _jsonl(tmp_path / "out" / "outputs" / "api.jsonl")}
    assert [records[k]["status"] for k in "abcde"] == ["ok", "error", "error", "ok", "ok"]
    assert "(submitted 1 times)" in records["b"]["error"]


def test_eval_batch_with_nothing_to_send_is_refused_before_any_work(tmp_path, capsys):
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ITEMS), encoding="utf-8")
    outputs = "".join(json.dumps({"id": r["id"], "output": r["reference"]}) + "\n" for r in ITEMS)
    (tmp_path / "base.jsonl").write_text(outputs, encoding="utf-8")
    (tmp_path / "tuned.jsonl").write_text(outputs, encoding="utf-8")
    suite = {"data": "items.jsonl", "systems": {"base": "base.jsonl", "tuned": "tuned.jsonl"}, "metrics": ["token_f1"]}
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite), encoding="utf-8")
    code, _, err = _eval(capsys, str(tmp_path / "suite.yaml"), "--out", str(tmp_path / "out"), "--batch")
    assert code == 2, err
    assert "openai/* model systems" in err and "this suite has none" in err
    assert not (tmp_path / "out" / "results.json").exists()


def _answer_args(url: str, out: Path, *extra: str) -> list[str]:
    from tests.test_mtbench import EXAMPLE_QUESTIONS

    return [
        "answer",
        "--questions", str(EXAMPLE_QUESTIONS),
        "--model", "openai/loop",
        "--base-url", url,
        "--out", str(out),
        *extra,
    ]  # fmt: skip


def test_mtbench_answer_batch_one_round_per_turn_equal_to_sync_and_reruns_from_cache(tmp_path):
    from tests.test_mtbench import invoke, ok, rows

    sync_out, out = tmp_path / "sync.jsonl", tmp_path / "batch.jsonl"
    with LoopbackServer() as srv:
        ok(invoke(*_answer_args(srv.base_url, sync_out, "--no-cache")))
    cache = str(tmp_path / "cache")
    with LoopbackServer(batch_seconds=0.02) as srv:
        args = _answer_args(srv.base_url, out, "--cache-dir", cache, "--batch", "--batch-poll", "0.01")
        text = ok(invoke(*args))
        # 4 questions of 2, 2, 2 and 3 turns: every turn in a batch, one round per turn, no chat-completions call
        assert srv.statuses == [] and srv.batch_desk.lines_run == len(srv.requests) == 9
        assert [len(b["lines"]) for b in srv.batch_desk.batches.values()] == [4, 4, 1]
        assert "batch API: 3 batches, 9 lines (0 resubmitted, 0 unanswered) in 3 rounds" in text
        first = rows(out)
        again_text = ok(invoke(*args))  # rerun: every turn from the cache, nothing submitted
        assert len(srv.batch_desk.batches) == 3 and srv.batch_desk.lines_run == 9
        assert "4 question(s) answered by loop (4 from cache)" in again_text
    sync = rows(sync_out)

    def turns(recs: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [(r["question_id"], r["choices"][0]["turns"], r["generation"]["temperature"]) for r in recs]

    assert turns(first) == turns(sync) and not any(r["generation"]["cached"] for r in first)
    assert turns(rows(out)) == turns(first)


def test_mtbench_answer_batch_without_the_cache_is_refused(tmp_path, capsys):
    code, _, err = judge_cli(
        capsys, "mtbench", *_answer_args("http://127.0.0.1:9/v1", tmp_path / "a.jsonl", "--no-cache", "--batch")
    )
    assert code == 2 and "drop --no-cache" in err
    assert not (tmp_path / "a.jsonl").exists()
