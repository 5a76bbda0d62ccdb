"""``judge mtbench judge --batch``: MT-Bench judge calls through the Batch API seam of ``judge score --batch``.

Real HTTP against the loopback server's Files + Batch endpoints, on the published MT-Bench answers:
verdicts equal the synchronous run's, a rerun is served from the cache, an interrupted run (a killed
process) is resumed from the recorded batch ids without submitting again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from judge.batch import BatchStore
from judge.cache import Cache
from judge.testing.server import LoopbackServer, Reply, judge_responder, prompt_text
from tests.test_mtbench import invoke, ok, rows

MT = Path(__file__).resolve().parents[2] / "shared" / "data" / "mt_bench"
COMPARED = ("question_id", "model_1", "model_2", "turn", "g1_label", "g2_label", "winner", "consistent", "status")


@pytest.fixture(autouse=True)
def needs_data() -> None:
    if not MT.exists():
        pytest.skip(f"real MT-Bench data not found at {MT}")


def judge_args(url: str, out: Path, *extra: str) -> list[str]:
    return [
        "judge",
        "--questions", str(MT / "question.jsonl"),
        "--answers", str(MT / "model_answer"),
        "--reference", str(MT / "reference_answer" / "gpt-4.jsonl"),
        "--models", "gpt-4,llama-13b",
        "--question-ids", "81,111",  # writing; math (reference-guided)
        "--judge", "openai/gpt-4o-mini",
        "--base-url", url,
        "--out", str(out),
        *extra,
    ]  # fmt: skip


def sync_run(tmp_path: Path, *extra: str, responder: Any = judge_responder) -> list[dict[str, Any]]:
    out = tmp_path / "sync.jsonl"
    with LoopbackServer(responder) as srv:
        ok(invoke(*judge_args(srv.base_url, out, "--no-cache", *extra)))
    return rows(out)


def picked(recs: list[dict[str, Any]], fields: tuple[str, ...] = COMPARED) -> list[tuple[Any, ...]]:
    return [tuple(r.get(k) for k in fields) for r in recs]


def test_pairwise_batch_equals_sync_costs_half_and_reruns_from_cache(tmp_path: Path) -> None:
    sync = sync_run(tmp_path, "--mode", "pairwise-all")
    out, cache = tmp_path / "batch.jsonl", tmp_path / "cache"
    batch_args = judge_args(str(0), out, "--mode", "pairwise-all", "--cache-dir", str(cache), "--batch")
    with LoopbackServer(batch_seconds=0.05) as srv:
        batch_args[batch_args.index("--base-url") + 1] = srv.base_url
        text = ok(invoke(*batch_args, "--batch-poll", "0.02"))
        # every call in one batch (2 questions x 2 turns x 2 orders), none synchronously
        assert len(srv.batch_desk.batches) == 1 and srv.batch_desk.lines_run == 8
        assert len(srv.requests) == srv.batch_desk.lines_run
        first = rows(out)
        ok(invoke(*batch_args, "--batch-poll", "0.02"))  # rerun: served from the cache, nothing submitted
        assert len(srv.batch_desk.batches) == 1 and len(srv.requests) == 8
    assert "batch API: 1 batches, 8 lines" in text and "synchronously $" in text
    assert picked(first) == picked(sync)
    assert [r["g1_judgment"] for r in first] == [r["g1_judgment"] for r in sync]
    assert all(r["status"] == "ok" for r in first) and not any(r["cached"] for r in first)
    # the Batch API's price: half the synchronous one
    assert sum(r["cost"] for r in first) == pytest.approx(sum(r["cost"] for r in sync) / 2, rel=1e-6)
    again = rows(out)
    assert all(r["cached"] and r["cost"] == 0 for r in again) and picked(again) == picked(first)


def test_single_batch_with_reasks_in_a_follow_up_batch_equals_sync(tmp_path: Path) -> None:
    def responder(req: dict[str, Any]) -> Reply:
        # turn 2 of the math question answers without a verdict the first time: the grader re-asks
        if len(req["messages"]) <= 2 and "Reference" in prompt_text(req) and "### User" in prompt_text(req):
            text = prompt_text(req)
            if text.count("### User") >= 2:
                return Reply(content="I will not grade this.")
        return judge_responder(req)

    sync = sync_run(tmp_path, "--mode", "single", responder=responder)
    out = tmp_path / "batch.jsonl"
    with LoopbackServer(responder, batch_seconds=0.05) as srv:
        args = judge_args(srv.base_url, out, "--mode", "single", "--cache-dir", str(tmp_path / "c"), "--batch")
        ok(invoke(*args, "--batch-poll", "0.02"))
        assert len(srv.batch_desk.batches) == 2  # the re-asks went into a second batch
    fields = ("question_id", "model", "turn", "score", "status", "attempts")
    assert picked(rows(out), fields) == picked(sync, fields)
    assert any(r["attempts"] == 2 for r in sync)  # the re-ask happened, in both runs


def test_killed_batch_run_resumes_from_the_recorded_batch_without_paying_again(tmp_path: Path) -> None:
    sync = sync_run(tmp_path, "--mode", "pairwise-all")
    out, cache = tmp_path / "batch.jsonl", tmp_path / "cache"
    with LoopbackServer(batch_seconds=3.0) as srv:
        args = judge_args(srv.base_url, out, "--mode", "pairwise-all", "--cache-dir", str(cache), "--batch")
        proc = subprocess.Popen(
            [sys.executable, "-m", "judge", "mtbench", *args, "--batch-poll", "0.05"],
            env={**os.environ, "OPENAI_API_KEY": os.environ.get("OPENAI_API_KEY", "k")},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while not srv.batch_desk.batches and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.05)
            assert srv.batch_desk.batches, "the batch run submitted nothing"
            time.sleep(0.2)  # the batch id is recorded right after it is created
        finally:
            proc.kill()  # a crash: no cleanup runs
            proc.wait()
        (bid,) = srv.batch_desk.batches
        assert [r["id"] for r in BatchStore(Cache.in_dir(cache)).rows()] == [bid]
        text = ok(invoke(*args, "--batch-poll", "0.05"))
        assert list(srv.batch_desk.batches) == [bid]  # picked up, not submitted again
        assert srv.batch_desk.lines_run == 8
    assert "(+1 resumed)" in text
    assert picked(rows(out)) == picked(sync)


def test_batch_needs_a_batch_provider(tmp_path: Path) -> None:
    res = invoke(
        "judge", "--questions", str(MT / "question.jsonl"), "--answers", str(MT / "model_answer"),
        "--models", "gpt-4,llama-13b", "--question-ids", "81", "--mode", "pairwise-all", "--judge", "fake/x",
        "--cache-dir", str(tmp_path / "c"), "--batch", "--out", str(tmp_path / "o.jsonl"),
    )  # fmt: skip
    assert res.exit_code != 0 and "batch API" in (str(res.exception) + res.output)
