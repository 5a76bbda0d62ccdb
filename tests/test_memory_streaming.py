"""`judge score` streams: items read lazily, verdicts not held, output in input order, atomically.

The memory test measures a real `judge score` process (peak RSS from its own rusage) on two sizes:
a client that keeps every record grows by several KB per item (about 12 KB before streaming), which
the bound below fails by a wide margin; the streamed client stays within a few MB.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from judge import score
from judge.cli import cli
from judge.dataset import Item, ItemFile, load_items, stream_items
from judge.errors import ClientRequestError, DataError
from judge.io import OrderedJsonlWriter, write_jsonl
from judge.orders import position_stats
from judge.providers.fake import FakeProvider
from judge.rubric import load_rubric
from judge.runner import Results, Tally, build_grader, run_sync, score_stream, stream_run

VERDICT = json.dumps({"reasoning": "ok", "score": 4})


def write_items(path: Path, n: int) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            rec = {"id": f"i{i}", "input": f"Question {i}?", "output": f"Answer {i} " * 20, "reference": str(i)}
            fh.write(json.dumps(rec) + "\n")


def peak_rss_mb(tmp: Path, n: int) -> float:
    """Peak RSS of one `judge score` process over ``n`` fake-judged items (its own rusage)."""
    work = tmp / f"n{n}"
    work.mkdir()
    write_items(work / "items.jsonl", n)
    cmd = [sys.executable, "-m", "judge", "score", "items.jsonl", "-r", "factuality", "-j", "fake/echo-score"]
    cmd += ["--out", "v.jsonl", "--cache-dir", "cache", "--no-progress"]
    with (work / "log").open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=work, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (Popen.wait would reap it first)
        proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, (work / "log").read_text()
    assert (work / "v.jsonl").read_bytes().count(b"\n") == n
    return usage.ru_maxrss / 1024


def test_cli_peak_memory_does_not_grow_with_items(tmp_path: Path) -> None:
    small, large = 1_000, 6_000
    grown = peak_rss_mb(tmp_path, large) - peak_rss_mb(tmp_path, small)
    # streamed: ~1-3 MB (bookkeeping of 12-20 B/item, allocator noise); holding every record: ~60 MB
    assert grown < 20, f"peak RSS grew {grown:.1f} MB for {large - small} more items: records are being kept"


def test_stream_run_draws_items_only_as_slots_free_up(tmp_path: Path) -> None:
    n, concurrency = 2_000, 4
    window = 64  # max(64, 4 * concurrency)
    finished = 0
    ahead: list[int] = []

    def items():
        for i in range(n):
            ahead.append(i - finished)  # items drawn but not finished when item i is drawn
            yield Item(id=f"i{i}", input="q", output=f"a{i}", reference="r")

    def done(i: int, v) -> None:  # type: ignore[no-untyped-def]
        nonlocal finished
        finished += 1

    grader = build_grader("factuality", FakeProvider(), cache=False)
    asyncio.run(stream_run(grader, items(), done, n=n, concurrency=concurrency, out=tmp_path / "v.jsonl"))
    assert finished == n
    assert max(ahead) <= window, f"{max(ahead)} items drawn ahead of the verdicts: the input is read eagerly"


def test_cli_output_is_in_input_order_and_equals_the_python_api(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    write_items(data, 300)
    out = tmp_path / "cli.jsonl"
    res = CliRunner().invoke(
        cli, ["score", str(data), "-r", "factuality", "-j", "fake/echo-score", "--no-cache", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    api = score(str(data), "factuality", "fake/echo-score", cache=False)

    def strip(rec: dict) -> dict:
        return {k: v for k, v in rec.items() if k != "latency_ms"}

    cli_recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in cli_recs] == [f"i{i}" for i in range(300)]
    assert [strip(r) for r in cli_recs] == [strip(r) for r in api.to_records()]
    s = api.summary()
    assert f"items      {s.n_items}" in res.output and f"mean score {s.mean_score:.3f}" in res.output
    assert not out.with_name(out.name + ".partial").exists()


def test_ordered_writer_puts_records_in_job_order_atomically(tmp_path: Path) -> None:
    records = [{"id": f"i{i}", "text": "é" * (i % 7), "n": i} for i in range(500)]
    order = list(range(500))
    random.Random(0).shuffle(order)
    out = tmp_path / "v.jsonl"
    w = OrderedJsonlWriter(out, len(records))
    for k, i in enumerate(order):
        if i == 3:
            continue  # a job without a record is left out
        w.write(i, records[i])
        if k == 100:
            assert not out.exists()  # nothing at the target until close
    w.close()
    write_jsonl(tmp_path / "expected.jsonl", [r for i, r in enumerate(records) if i != 3])
    assert out.read_bytes() == (tmp_path / "expected.jsonl").read_bytes()
    assert not w.partial.exists()


def test_crash_keeps_partial_and_a_rerun_resumes_from_the_cache(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    write_items(data, 200)
    out, cache = tmp_path / "v.jsonl", tmp_path / "cache"
    script = [VERDICT] * 50 + [ClientRequestError("invalid api key", status=401)]  # 401 stops the run
    grader = build_grader("factuality", FakeProvider("scripted", script=script), cache=cache)
    items = stream_items(data)
    with pytest.raises(ClientRequestError):
        run_sync(score_stream(grader, items, n=len(items), concurrency=1, out=out))
    partial = out.with_name(out.name + ".partial")
    assert not out.exists() and partial.exists()
    kept = [json.loads(line) for line in partial.read_text().splitlines()]
    # the 50 answered before the 401, and what was in flight when it came (answered by the cycled script)
    assert 50 <= len(kept) < 200 and all(r["status"] == "ok" for r in kept)
    rerun = build_grader("factuality", FakeProvider("scripted", script=[VERDICT]), cache=cache)
    tally = run_sync(score_stream(rerun, items, n=len(items), concurrency=4, out=out))
    assert tally.n_items == 200 and tally.n_cached == len(kept) and tally.n_ok == 200
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [f"i{i}" for i in range(200)]
    assert not partial.exists()


def test_item_file_reads_like_load_items_and_rejects_repeated_ids(tmp_path: Path) -> None:
    csv = tmp_path / "d.csv"
    csv.write_text('id,question,answer\na,"two\nlines",x\nb,q,y\n', encoding="utf-8-sig")
    mapping = {"input": "question", "output": "answer"}
    assert list(stream_items(csv, mapping)) == load_items(csv, mapping)
    assert [it.source for it in ItemFile(csv, mapping)] == [f"{csv}:3", f"{csv}:4"]
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": "x", "output": "1"}\n{"id": "y", "output": "2"}\n\n{"id": "x", "output": "3"}\n')
    with pytest.raises(DataError, match=r"duplicate id 'x' \(first seen at .*dup.jsonl:1\)") as err:
        stream_items(dup)
    assert err.value.line == 4
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match="no items"):
        stream_items(empty)


def test_tally_matches_the_summary_over_a_list() -> None:
    rubric = load_rubric("pairwise")

    def judge(messages, config) -> str:  # type: ignore[no-untyped-def]
        # by a hash of the prompt: some pairs consistent across orders, some not, some unparseable
        h = sum(map(ord, messages[-1]["content"])) % 7
        return "no verdict" if h == 0 else json.dumps({"reasoning": "r", "verdict": "AB"[h % 2]})

    grader = build_grader(rubric, FakeProvider("pairs", script=judge), cache=False, max_reasks=0)
    items = [Item(id=f"p{i}", input="q", output=f"a{i}", output_b=f"b{i % 3}") for i in range(40)]
    results = run_sync(_run(grader, items))
    tally = Tally.of(reversed(results))  # any order: the sums do not depend on it
    s = tally.summary()
    assert s == results.summary()
    ok = [v for v in results if v.ok]
    assert (s.n_items, s.n_ok, s.n_unscored) == (40, len(ok), 40 - len(ok))
    assert s.mean_score == pytest.approx(sum(v.score for v in ok) / len(ok))
    assert s.prompt_tokens == sum(v.prompt_tokens for v in results)
    pos = position_stats((p[0], p[1]) for v in results for p in v.orders or [])
    assert s.trials is not None and s.trials.repeats == 2
    assert (s.trials.scored_pairs, s.trials.consistency) == (pos.scored_pairs, pos.consistency)


async def _run(grader, items) -> Results:  # type: ignore[no-untyped-def]
    from judge.runner import run_items

    return await run_items(grader, items, both_orders=True, repeats=2)
