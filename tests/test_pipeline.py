"""The judge's seams: JudgeSpec (one description of a judge, built once), the callers a grader is built with,
and the one run loop with its executors (in process, Batch API, engines)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest

from judge import score
from judge.batch import BatchSettings
from judge.calls import CacheOnlyCaller, DirectCaller, NotCached, RecordingCaller
from judge.cli import main
from judge.dataset import Item
from judge.errors import ConfigError
from judge.providers.fake import FakeProvider
from judge.runner import build_grader, run_sync
from judge.spec import JudgeSpec
from judge.testing.server import LoopbackServer, Reply, prompt_text

FAST = BatchSettings(poll_interval=0.02)


def test_judge_spec_splits_its_fields_from_provider_options_and_pickles() -> None:
    spec = JudgeSpec.of("openai/m", base_url="http://127.0.0.1:9/v1", seed=3, dtype=None, structured_output=False)
    assert spec.judge == "openai/m" and spec.seed == 3 and spec.provider_options == {"structured_output": False}
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert JudgeSpec.of(cache="yes").cache == Path("yes")  # a folder named like a word stays a folder
    assert JudgeSpec.of(batch=True).batch == BatchSettings()
    grader = spec.model_copy(update={"cache": False}).grader("factuality")
    assert grader.config.seed == 3 and grader.cache is None and grader.provider.id.startswith("openai/")
    with pytest.raises(ConfigError, match="no batch API"):
        JudgeSpec.of("fake/echo-score", batch=True).grader("factuality", cache=None)


def test_graders_for_other_callers_are_built_not_patched(tmp_path: Path) -> None:
    grader = build_grader("factuality", FakeProvider(), cache=tmp_path)
    item = Item(id="a", input="1 + 1?", output="2", reference="2")
    assert isinstance(grader.caller, DirectCaller)
    with pytest.raises(NotCached):
        run_sync(grader.with_caller(CacheOnlyCaller(grader.cache)).grade(item))
    recording = RecordingCaller()
    fresh = run_sync(grader.with_caller(recording).grade(item))
    assert fresh.status == "ok" and [w[1]["final"] for w in recording.writes] == [True]
    assert grader.cache is not None and len(grader.cache) == 0  # the recording caller wrote nothing
    served = run_sync(grader.grade(item))
    assert not served.cached
    again = run_sync(grader.with_caller(CacheOnlyCaller(grader.cache)).grade(item))
    assert again.cached and again.score == fresh.score
    repeat = grader.with_seed(5)
    assert repeat.config.seed == 5 and repeat.caller is grader.caller and grader.config.seed == 0


# -- the one run loop: --repeats / --both-orders through every executor -----------------------------------------

PAIRS = [
    {"id": "f1", "input": "fair one", "output": "good answer", "output_b": "bad answer"},
    {"id": "f2", "input": "fair two", "output": "bad answer", "output_b": "good answer"},
    {"id": "b1", "input": "biased one", "output": "good answer", "output_b": "bad answer"},
]
COMPARED = ("id", "status", "score", "label", "orders", "consistent", "repeat_scores", "flipped")


def seeded_picky(request: dict[str, Any]) -> Reply | str:
    """A pairwise judge: on 'fair' items it picks the answer saying 'good'; on 'biased' ones the first answer on
    even seeds and the second on odd ones (so the orders of a repeat disagree and repeats differ)."""
    text = prompt_text(request)
    answers = text[text.index("[Answer A]") :]
    fair = "A" if answers.index("good") < answers.index("bad") else "B"
    verdict = ("A" if int(request.get("seed", 0)) % 2 == 0 else "B") if "biased" in text else fair
    return Reply(content=json.dumps({"reasoning": "r", "verdict": verdict}))


def picked(verdicts: Any) -> list[tuple[Any, ...]]:
    return [tuple(getattr(v, k) for k in COMPARED) for v in verdicts]


def test_repeats_and_both_orders_through_the_batch_api_equal_the_synchronous_run(tmp_path: Path) -> None:
    options: dict[str, Any] = {"base_url": "", "api_key": "k", "repeats": 2, "both_orders": True}
    with LoopbackServer(responder=seeded_picky, batch_seconds=0.05) as srv:
        options["base_url"] = srv.base_url
        sync = score(PAIRS, "pairwise", "openai/gpt-4o-mini", cache=False, **options)
        n_sync = len(srv.requests)
        batched = score(PAIRS, "pairwise", "openai/gpt-4o-mini", cache=tmp_path, batch=FAST, **options)
        # every call of every repeat and order in one batch, none synchronously
        assert len(srv.batch_desk.batches) == 1 and srv.batch_desk.lines_run == len(PAIRS) * 2 * 2 == n_sync
        assert len(srv.requests) == 2 * n_sync
        again = score(PAIRS, "pairwise", "openai/gpt-4o-mini", cache=tmp_path, batch=FAST, **options)
        assert len(srv.batch_desk.batches) == 1  # all in the cache: nothing submitted
    assert picked(batched) == picked(sync) and picked(again) == picked(sync)
    assert all(v.cached for v in again) and not any(v.cached for v in batched)
    by_id = {v.id: v for v in batched}
    assert by_id["b1"].orders == [["A", "A"], ["B", "B"]]  # repeat 2 went out with seed 1
    assert by_id["f1"].label == "A" and by_id["f2"].label == "B" and by_id["b1"].label == "tie"
    assert batched.batch_report.cost_usd == pytest.approx(batched.batch_report.sync_cost_usd / 2, rel=1e-6)
    assert sum(v.cost_usd or 0 for v in batched) == pytest.approx(sum(v.cost_usd or 0 for v in sync) / 2, rel=1e-6)


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_judge_score_batch_takes_repeats_and_refuses_a_budget_saying_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in PAIRS))
    out = tmp_path / "v.jsonl"
    with LoopbackServer(responder=seeded_picky, batch_seconds=0.05) as srv:
        base = ["score", str(data), "-r", "pairwise", "-j", "openai/gpt-4o-mini", "--base-url", srv.base_url]
        base += ["--cache-dir", str(tmp_path / "c"), "--batch", "--batch-poll", "0.02", "--no-progress", "-o", str(out)]
        code, output = cli([*base, "--repeats", "2", "--both-orders"], capsys)
        assert code == 0, output
        assert srv.batch_desk.lines_run == len(PAIRS) * 4
        code, refused = cli([*base, "--max-cost", "1"], capsys)
    assert "repeats    2  flip rate" in output and "position consistency" in output and "batch API: 1 batches" in output
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [p["id"] for p in PAIRS]
    assert code == 2 and "--max-cost cannot be enforced with --batch" in refused and "Traceback" not in refused


def test_mtbench_judging_is_paced_by_the_adaptive_limiter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_mtbench import MT, invoke, judge_args, needs, ok, rows

    needs(MT)
    import judge.pipeline

    paced: list[int] = []

    class Counting(judge.pipeline.AdaptiveLimiter):  # type: ignore[misc, name-defined]
        async def run(self, call):  # type: ignore[no-untyped-def]
            paced.append(1)
            return await super().run(call)

    monkeypatch.setattr(judge.pipeline, "AdaptiveLimiter", Counting)
    out = tmp_path / "pairs.jsonl"
    with LoopbackServer() as srv:
        ok(invoke(*judge_args(srv.base_url, out, "--mode", "pairwise-all", "--no-cache")))
        n_calls = len(srv.requests)
    assert n_calls > 0 and len(paced) == n_calls  # every judge call took a slot of the run's limiter
    assert all(r["status"] == "ok" for r in rows(out))


def test_an_engine_runs_the_same_item_work_and_resumes_from_the_cache(tmp_path: Path) -> None:
    from judge.engines import LocalEngine
    from judge.engines.score import GraderRecipe, run_items_on
    from judge.runner import run_items

    class Counting(LocalEngine):
        maps = 0

        def map(self, factory, items, *, batch_size):  # type: ignore[no-untyped-def]
            Counting.maps += 1
            return super().map(factory, items, batch_size=batch_size)

    items = [Item(id=f"i{k}", input=f"What is {k} + {k}?", output=str(2 * k)) for k in range(5)]
    fields = ("id", "status", "score", "repeat_scores", "spread", "prompt_tokens", "attempts")
    here = build_grader("factuality", "fake/echo-score", cache=tmp_path / "here")
    local = run_sync(run_items(here, items, repeats=2))
    grader = build_grader("factuality", "fake/echo-score", cache=tmp_path / "there")
    recipe = GraderRecipe.of(grader, "fake/echo-score")
    first = run_sync(run_items_on(Counting(), grader, items, recipe, repeats=2, out=tmp_path / "v.jsonl"))
    assert Counting.maps == 1 and not any(v.cached for v in first)
    def same(verdicts: Any) -> list[tuple[Any, ...]]:
        return [tuple(getattr(v, k) for k in fields) for v in verdicts]

    assert same(first) == same(local)
    written = [json.loads(line)["id"] for line in (tmp_path / "v.jsonl").read_text().splitlines()]
    assert written == [i.id for i in items]
    assert here.cache is not None and grader.cache is not None
    assert len(grader.cache) == len(here.cache) == len(items) * 2  # the workers' entries, written by the driver
    again = run_sync(run_items_on(Counting(), grader, items, recipe, repeats=2))
    assert Counting.maps == 1 and all(v.cached for v in again)  # every item served from the cache: no engine work
