"""The judge's seams: JudgeSpec (one description of a judge, built once), the callers a grader is built with,
and the one run loop with its executors (in process, Batch API, engines)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from judge.batch import BatchSettings
from judge.calls import CacheOnlyCaller, DirectCaller, NotCached, RecordingCaller
from judge.dataset import Item
from judge.errors import ConfigError
from judge.providers.fake import FakeProvider
from judge.runner import build_grader, run_sync
from judge.spec import JudgeSpec


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
