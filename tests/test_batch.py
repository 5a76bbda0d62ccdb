"""Batch mode (judge.batch) through real HTTP: the loopback server's Files + Batch endpoints, each way a
batch can end, resume, splitting, the CLI, and one independent server (../shared/bench-peers)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from judge import score
from judge.batch import BatchSettings, BatchStore, BatchWaitTimeout
from judge.cache import Cache
from judge.cli import cli
from judge.testing.server import LoopbackServer, Reply, judge_responder, prompt_text

ITEMS = [
    {"id": f"i{i}", "input": f"What is {i} + {i}?", "output": str(2 * i), "reference": str(2 * i)} for i in range(6)
]
FAST = BatchSettings(poll_interval=0.02)
PEER = Path(__file__).resolve().parents[2] / "shared" / "bench-peers" / "fake_openai_server.py"


def run(srv: LoopbackServer, cache: Path, items=ITEMS, settings: BatchSettings = FAST, **kw):
    return score(
        items, "factuality", "openai/gpt-4o-mini", base_url=srv.base_url, api_key="k", cache=cache, batch=settings, **kw
    )


def sync_scores(items=ITEMS) -> list[float | None]:
    with LoopbackServer() as srv:
        return [
            v.score
            for v in score(items, "factuality", "openai/gpt-4o-mini", base_url=srv.base_url, api_key="k", cache=False)
        ]


def test_batch_run_matches_sync_costs_half_and_reruns_from_cache(tmp_path: Path) -> None:
    with LoopbackServer(batch_seconds=0.1) as srv:
        results = run(srv, tmp_path)
        # every call went through one batch (output lines shuffled by the server), none synchronously
        assert len(srv.batch_desk.batches) == 1 and srv.batch_desk.lines_run == len(ITEMS)
        assert [v.id for v in results] == [it["id"] for it in ITEMS]
        assert [v.score for v in results] == sync_scores()
        report = results.batch_report
        assert report.batches_submitted == 1 and report.lines_submitted == len(ITEMS)
        assert report.cost_usd == pytest.approx(report.sync_cost_usd / 2, rel=1e-3) and report.cost_usd > 0
        assert "synchronously" in report.line()
        line = json.loads(next(iter(srv.batch_desk.files.values()))["data"].splitlines()[0])
        assert line["url"] == "/v1/chat/completions" and line["body"]["response_format"]["type"] == "json_schema"
        again = run(srv, tmp_path)
        assert len(srv.batch_desk.batches) == 1  # all final in the cache: nothing submitted
        assert all(v.cached for v in again) and [v.score for v in again] == [v.score for v in results]


def test_line_errors_resubmitted_rejected_or_unscored_with_reason(tmp_path: Path) -> None:
    seen: dict[str, int] = {}

    def responder(req):
        text = prompt_text(req)
        seen[text] = seen.get(text, 0) + 1
        if "1 + 1" in text and seen[text] == 1:
            return "500"  # a transient line error: resubmitted, then fine
        if "2 + 2" in text:
            return "400"  # a definitive refusal: cached as a rejection, like a synchronous 400
        if "3 + 3" in text:
            return "503"  # never answers: unscored after max_submissions
        return judge_responder(req)

    with LoopbackServer(responder, batch_seconds=0.05) as srv:
        results = run(srv, tmp_path)
    by_id = {v.id: v for v in results}
    assert by_id["i1"].status == "ok"
    assert by_id["i2"].status == "unscored" and by_id["i2"].error.startswith("request rejected: HTTP 400")
    assert (
        by_id["i3"].status == "unscored"
        and "HTTP 503" in by_id["i3"].error
        and "submitted 3 times" in by_id["i3"].error
    )
    assert by_id["i3"].unscored_cause == "transport"
    assert sum(v.status == "ok" for v in results) == 4
    assert results.batch_report.lines_resubmitted >= 1 and results.batch_report.lines_unanswered == 1


def test_unparseable_answers_are_reasked_in_a_follow_up_batch(tmp_path: Path) -> None:
    def responder(req):
        if len(req["messages"]) <= 2 and "4 + 4" in prompt_text(req):
            return Reply(content="I cannot decide.")  # no verdict: the grader re-asks
        return judge_responder(req)

    with LoopbackServer(responder, batch_seconds=0.05) as srv:
        results = run(srv, tmp_path)
        assert len(srv.batch_desk.batches) == 2  # the re-ask went into a second batch
    assert all(v.status == "ok" for v in results)
    assert results.batch_report.rounds == 2


@pytest.mark.parametrize("fault", ["expired", "drop"])
def test_expired_partial_output_and_missing_lines_are_resubmitted(tmp_path: Path, fault: str) -> None:
    with LoopbackServer(batch_seconds=0.1, batch_faults=[fault]) as srv:
        results = run(srv, tmp_path)
        assert len(srv.batch_desk.batches) == 2
        first = next(iter(srv.batch_desk.batches.values()))["obj"]
        assert first["status"] == ("expired" if fault == "expired" else "completed")
    assert [v.score for v in results] == sync_scores()
    assert results.batch_report.lines_resubmitted in (3, 2)


def test_validation_failure_unscores_with_reason_and_rerun_submits_again(tmp_path: Path) -> None:
    with LoopbackServer(batch_seconds=0.05, batch_faults=["failed"]) as srv:
        results = run(srv, tmp_path)
        assert all(v.status == "unscored" for v in results)
        assert "failed (token_limit_exceeded" in results[0].error and results[0].unscored_cause == "transport"
        again = run(srv, tmp_path)
        assert all(v.status == "ok" for v in again) and len(srv.batch_desk.batches) == 2


def test_split_within_line_and_byte_limits(tmp_path: Path) -> None:
    with LoopbackServer(batch_seconds=0.05) as srv:
        results = run(srv, tmp_path, settings=BatchSettings(poll_interval=0.02, max_lines=2))
        assert len(srv.batch_desk.batches) == 3 and all(v.status == "ok" for v in results)
    with LoopbackServer(batch_seconds=0.05) as srv:
        run(srv, tmp_path / "b", settings=BatchSettings(poll_interval=0.02, max_bytes=4096))
        sizes = [f["meta"]["bytes"] for f in srv.batch_desk.files.values() if f["meta"]["purpose"] == "batch"]
        assert len(sizes) > 1 and max(sizes) <= 4096


def test_resume_after_interrupt_collects_submitted_batches_without_paying_again(tmp_path: Path) -> None:
    with LoopbackServer(batch_seconds=0.6) as srv:
        with pytest.raises(BatchWaitTimeout, match="rerun the same command"):
            run(srv, tmp_path, settings=BatchSettings(poll_interval=0.02, timeout=0.05))
        (bid,) = srv.batch_desk.batches
        assert [r["id"] for r in BatchStore(Cache.in_dir(tmp_path)).rows()] == [bid]
        results = run(srv, tmp_path)
        assert len(srv.batch_desk.batches) == 1  # picked up, not submitted again
        assert all(v.status == "ok" for v in results) and results.batch_report.batches_resumed == 1
        rows = BatchStore(Cache.in_dir(tmp_path)).rows()
        assert rows[0]["status"] == "completed" and rows[0]["reconciled"]


def test_cancelled_batch_via_cli_unscores_then_rerun_resubmits(tmp_path: Path) -> None:
    runner = CliRunner()
    with LoopbackServer(batch_seconds=2.0) as srv:
        with pytest.raises(BatchWaitTimeout):
            run(srv, tmp_path, settings=BatchSettings(poll_interval=0.02, timeout=0.05))
        (bid,) = srv.batch_desk.batches
        listed = runner.invoke(cli, ["batches", "list", "--cache-dir", str(tmp_path)])
        assert bid in listed.output and "open" in listed.output
        res = runner.invoke(cli, ["batches", "cancel", bid, "--cache-dir", str(tmp_path)], env={"OPENAI_API_KEY": "k"})
        assert res.exit_code == 0, res.output
        assert "cancelling" in res.output
        results = run(srv, tmp_path)
        assert all(v.status == "unscored" and "cancelled" in v.error for v in results)
        status = runner.invoke(
            cli, ["batches", "status", bid, "--cache-dir", str(tmp_path)], env={"OPENAI_API_KEY": "k"}
        )
        assert '"cancelled"' in status.output
        again = run(srv, tmp_path)
        assert all(v.status == "ok" for v in again) and len(srv.batch_desk.batches) == 2


def test_cli_score_batch_prints_batch_and_sync_cost(tmp_path: Path) -> None:
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps(it) + "\n" for it in ITEMS))
    with LoopbackServer(batch_seconds=0.05) as srv:
        res = CliRunner().invoke(
            cli,
            [
                "score",
                str(data),
                "-r",
                "factuality",
                "-j",
                "openai/gpt-4o-mini",
                "--base-url",
                srv.base_url,
                "--cache-dir",
                str(tmp_path / "c"),
                "--batch",
                "--batch-poll",
                "0.02",
                "--no-progress",
            ],
        )
    assert res.exit_code == 0, res.output
    assert "batch API: 1 batches, 6 lines" in res.output and "synchronously $" in res.output
    assert len((tmp_path / "qa.factuality.verdicts.jsonl").read_text().splitlines()) == len(ITEMS)


def test_batch_needs_a_cache_and_a_batch_provider(tmp_path: Path) -> None:
    from judge.errors import ConfigError

    with LoopbackServer() as srv, pytest.raises(ConfigError, match="no-cache"):
        run(srv, False)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="no batch API"):
        score(ITEMS, "factuality", "fake/echo-score", cache=tmp_path, batch=True)


@pytest.fixture
def peer(tmp_path: Path):
    """../shared/bench-peers/fake_openai_server.py as a subprocess on 127.0.0.1 (skip when absent)."""
    if not PEER.exists():
        pytest.skip(f"independent server not available: {PEER}")
    procs = []

    def start(*args: str) -> str:
        port_file = tmp_path / f"port{len(procs)}"
        proc = subprocess.Popen(
            [
                sys.executable,
                str(PEER),
                "--port",
                "0",
                "--port-file",
                str(port_file),
                "--latency-ms",
                "0",
                "--max-seconds",
                "60",
                "--rating",
                "hash",
                *args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(proc)
        deadline = time.monotonic() + 10
        while not port_file.exists() or not port_file.read_text().strip():
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail("fake_openai_server.py did not start")
            time.sleep(0.02)
        return f"http://127.0.0.1:{port_file.read_text().strip()}/v1"

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=5)


@pytest.mark.parametrize("fail", ["off", "expired", "failed"])
def test_interop_with_the_independent_fake_openai_server(peer, tmp_path: Path, fail: str) -> None:
    base_url = peer("--batch-seconds", "0.3", "--batch-fail", fail)
    results = score(
        ITEMS, "factuality", "openai/gpt-4o-mini", base_url=base_url, api_key="k", cache=tmp_path, batch=FAST
    )
    assert [v.id for v in results] == [it["id"] for it in ITEMS]
    if fail == "failed":
        assert all(v.status == "unscored" and "token_limit_exceeded" in v.error for v in results)
    else:
        assert all(v.status == "ok" and 1 <= v.score <= 5 for v in results), [v.error for v in results]
        assert results.batch_report.batches_submitted == (2 if fail == "expired" else 1)
