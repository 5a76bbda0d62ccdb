"""``judge score --engine ray``: a real local Ray instance (one per module) against the local engine.

The local engine's run is the independent computation: the Ray run must give the same verdicts in the
same order, the same unscored reasons and the same cache entries. API judges run against the loopback
server, which counts the requests in flight: across all actors never more than ``--concurrency``.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from judge.cli import main
from judge.testing.server import LoopbackServer, Reply, judge_responder
from judge.testing.tiny import tiny_causal_lm
from tests.test_engines import ray_instance  # noqa: F401 - the module's Ray instance (2 CPUs)

ITEMS = [
    {"id": f"q{k}", "input": f"What is {k} plus {k}?", "output": f"It is {2 * k + (k % 3 == 0)}."} for k in range(14)
]


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def write(path: Path, items: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(it) + "\n" for it in items), encoding="utf-8")
    return path


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def cache_rows(cache_dir: Path) -> dict[str, tuple[bool, str | None]]:
    """key -> (final, completion text) of every cache entry."""
    with sqlite3.connect(cache_dir / "calls.sqlite") as db:
        rows = db.execute("SELECT key, value FROM calls").fetchall()
    return {k: (json.loads(v).get("final", True), json.loads(v).get("text")) for k, v in rows}


def same_verdicts(local: list[dict[str, Any]], remote: list[dict[str, Any]]) -> None:
    assert [r["id"] for r in remote] == [r["id"] for r in local]
    for a, b in zip(local, remote, strict=True):
        assert (b["status"], b["error"], b["label"], b["raw"]) == (a["status"], a["error"], a["label"], a["raw"])
        assert (b["prompt_tokens"], b["completion_tokens"], b["attempts"]) == (
            a["prompt_tokens"],
            a["completion_tokens"],
            a["attempts"],
        )
        if a["score"] is None:
            assert b["score"] is None
        else:
            assert b["score"] == pytest.approx(a["score"], rel=1e-5, abs=1e-6)


@pytest.fixture(scope="module")
def tiny_judge(tmp_path_factory: pytest.TempPathFactory) -> str:
    return "local/" + str(tiny_causal_lm(tmp_path_factory.mktemp("tiny-judge"), max_positions=512))


def test_local_judge_on_ray_matches_local_and_resumes_from_the_cache(
    ray_instance: None,  # noqa: F811
    tiny_judge: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = write(tmp_path / "items.jsonl", ITEMS)
    base = ["score", str(data), "-r", "factuality", "-j", tiny_judge, "--no-progress"]
    code, output = cli([*base, "-o", str(tmp_path / "local.jsonl"), "--cache-dir", str(tmp_path / "c-local")], capsys)
    assert code == 0, output
    local = records(tmp_path / "local.jsonl")

    # a first Ray run judges the first 5 items only; the second, on all items and the same cache,
    # serves those 5 from the cache (never sent to a worker) and judges the rest on the actors
    ray_cache = str(tmp_path / "c-ray")
    head = write(tmp_path / "head.jsonl", ITEMS[:5])
    head_args = [*base[:1], str(head), *base[2:], "-o", str(tmp_path / "head.v.jsonl")]
    code, output = cli([*head_args, "--engine", "ray", "--cache-dir", ray_cache], capsys)
    assert code == 0, output
    out = tmp_path / "ray.jsonl"
    code, output = cli([*base, "--engine", "ray", "-o", str(out), "--cache-dir", ray_cache], capsys)
    assert code == 0, output
    remote = records(out)
    same_verdicts(local, remote)
    assert [r["cached"] for r in remote] == [k < 5 for k in range(len(ITEMS))]
    assert "from cache 5" in output
    # the driver wrote the workers' cache entries under the same keys as the local engine
    assert cache_rows(tmp_path / "c-ray") == cache_rows(tmp_path / "c-local")


def test_unscored_items_on_ray_match_local(ray_instance: None, tiny_judge: str, tmp_path: Path) -> None:  # noqa: F811
    """Text mode cut at 4 tokens: unscored with the local engine's reason; its completions cached as not
    final, so a rerun judges them again (on the workers) instead of serving them."""
    from judge.dataset import coerce_items
    from judge.engines import get_engine
    from judge.engines.score import GraderRecipe, run_items_on
    from judge.runner import build_grader, run_items, run_sync

    items = coerce_items(ITEMS[:4], None)

    def grader(cache: str) -> Any:
        return build_grader("factuality", tiny_judge, score_mode="text", max_tokens=4, cache=tmp_path / cache)

    local = run_sync(run_items(grader("local"), items))
    g = grader("ray")
    recipe = GraderRecipe.of(g, tiny_judge)
    first = run_sync(run_items_on(get_engine("ray"), g, items, recipe, out=tmp_path / "v.jsonl"))
    again = run_sync(run_items_on(get_engine("ray"), g, items, recipe))
    assert all(v.status == "unscored" and v.error.startswith("truncated at max_tokens (4)") for v in local)
    for remote in (first, again):
        same_verdicts(local.to_records(), remote.to_records())
        assert not any(v.cached for v in remote)
    assert records(tmp_path / "v.jsonl") == first.to_records()
    assert cache_rows(tmp_path / "ray") == cache_rows(tmp_path / "local")
    assert {final for final, _ in cache_rows(tmp_path / "ray").values()} == {False}


class Recording:
    """Loopback responder: answers like a judge after ``delay_s``, refuses the first ``refuse`` with 429,
    and records when each request started."""

    def __init__(self, delay_s: float, refuse: int = 0) -> None:
        self.delay_s = delay_s
        self.refuse = refuse
        self.starts: list[tuple[float, str]] = []
        self.prompts: list[str] = []  # the prompt of each start, in the same order
        self.lock = threading.Lock()

    def __call__(self, request: dict[str, Any]) -> Reply | str:
        with self.lock:
            refused = len([s for s in self.starts if s[1] == "429"]) < self.refuse
            self.starts.append((time.monotonic(), "429" if refused else "ok"))
            self.prompts.append(json.dumps(request.get("messages"), sort_keys=True))
        if refused:
            return "429"
        reply = judge_responder(request)
        reply.delay_s = self.delay_s
        return reply


def api_run(
    tmp: Path, server: LoopbackServer, engine: str, capsys: pytest.CaptureFixture[str], copies: int = 3
) -> list[dict]:
    data = write(tmp / "api.jsonl", [dict(it, id=f"a{k}", output=f"It is {k}.") for k, it in enumerate(ITEMS * copies)])
    out = tmp / f"{engine}.jsonl"
    argv = ["score", str(data), "-r", "factuality", "-j", "openai/loopback-judge", "--base-url", server.base_url]
    argv += ["--concurrency", "3", "--no-cache", "--no-progress", "-o", str(out), "--engine", engine]
    code, output = cli(argv, capsys)
    assert code == 0, output
    return records(out)


def test_api_judge_on_ray_shares_the_concurrency_bound(
    ray_instance: None,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with LoopbackServer() as srv:
        local = api_run(tmp_path, srv, "local", capsys)
    responder = Recording(delay_s=0.05)
    with LoopbackServer(responder) as srv:
        remote = api_run(tmp_path, srv, "ray", capsys)
        # 2 actors, each grading a batch of 16 items at once: only the shared permits keep this at 3
        assert 1 < srv.max_in_flight <= 3
    same_verdicts(local, remote)
    assert all(r["status"] == "ok" for r in remote) and len(responder.starts) == len(remote)


def test_api_judge_on_ray_honours_retry_after_across_actors(
    ray_instance: None,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with LoopbackServer() as srv:
        local = api_run(tmp_path, srv, "local", capsys, copies=6)
    responder = Recording(delay_s=0.1, refuse=2)
    with LoopbackServer(responder, retry_after="1") as srv:
        remote = api_run(tmp_path, srv, "ray", capsys, copies=6)
        assert srv.max_in_flight <= 3
    same_verdicts(local, [dict(r, attempts=1) for r in remote])  # two items needed a second attempt
    assert sorted(r["attempts"] for r in remote)[-2:] == [2, 2]
    # two scattered 429s are not a rate limit (issue 22, class 11): each refused call's own retry waits its
    # Retry-After of 1 s, while the other actors' calls go on in that second
    first_429 = next(t for t, what in responder.starts if what == "429")
    for k, (t, what) in enumerate(responder.starts):
        if what == "429":
            retry = next(
                u
                for u, p in zip(responder.starts[k + 1 :], responder.prompts[k + 1 :], strict=True)
                if p == responder.prompts[k]
            )
            assert retry[0] - t >= 0.95, retry[0] - t
    assert any(0.2 < t - first_429 < 0.9 for t, _ in responder.starts)


def test_bad_engine_combinations_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write(tmp_path / "items.jsonl", ITEMS[:2])
    base = ["score", str(data), "-r", "factuality", "-j", "openai/gpt-4o-mini", "--base-url", "http://127.0.0.1:9/v1"]
    code, output = cli([*base, "--engine", "ray", "--batch"], capsys)
    assert code == 2 and "--batch" in output and "Traceback" not in output
    # --repeats and --both-orders run on an engine (test_repeats_and_both_orders_on_ray_equal_local); a budget
    # cannot be kept by workers that send their calls on their own, and the error says so
    code, output = cli([*base, "--engine", "ray", "--max-cost", "1"], capsys)
    assert code == 2 and "--max-cost cannot be enforced with --engine ray" in output and "Traceback" not in output
    code, output = cli([*base, "--address", "ray://head:10001"], capsys)
    assert code == 2 and "--address is for --engine ray" in output
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the 'scale' extra were not installed
    code, output = cli([*base, "--engine", "ray"], capsys)
    assert code == 2 and "pip install 'judge[scale]'" in output
    assert not list(tmp_path.glob("*.verdicts.jsonl*"))


def seeded_pairs(request: dict[str, Any]) -> Reply | str:
    """A pairwise judge whose pick follows the seed and the order shown (so repeats and orders both matter)."""
    seed = int(request.get("seed", 0))
    text = json.dumps(request.get("messages"))
    verdict = "A" if (seed + len(text)) % 3 else ("B" if seed % 2 else "tie")
    return Reply(content=json.dumps({"reasoning": "r", "verdict": verdict}))


def test_repeats_and_both_orders_on_ray_equal_local(
    ray_instance: None,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pairs = [{"id": f"p{k}", "input": f"q{k}", "output": f"a{k}" * (k + 1), "output_b": f"b{k}"} for k in range(6)]
    data = write(tmp_path / "pairs.jsonl", pairs)
    runs = {}
    for engine in ("local", "ray"):
        out = tmp_path / f"{engine}.jsonl"
        with LoopbackServer(seeded_pairs) as srv:
            argv = ["score", str(data), "-r", "pairwise", "-j", "openai/loopback-judge", "--base-url", srv.base_url]
            argv += ["--repeats", "2", "--both-orders", "--cache-dir", str(tmp_path / engine), "--no-progress"]
            code, output = cli([*argv, "-o", str(out), "--engine", engine], capsys)
            assert code == 0, output
            assert len(srv.requests) == len(pairs) * 2 * 2
            assert "repeats    2" in output and "position consistency" in output
        runs[engine] = records(out)
    same_verdicts(runs["local"], runs["ray"])
    for a, b in zip(runs["local"], runs["ray"], strict=True):
        assert (b["orders"], b["repeat_scores"], b["consistent"]) == (a["orders"], a["repeat_scores"], a["consistent"])
    assert cache_rows(tmp_path / "local") == cache_rows(tmp_path / "ray")  # the workers' entries, written here
