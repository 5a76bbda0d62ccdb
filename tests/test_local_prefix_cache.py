"""The local judge's reuse of the rubric prefix's KV cache: the same probabilities as without it."""

from __future__ import annotations

import pytest

from judge import load_rubric
from judge.config import GenerateConfig
from judge.providers.local import LocalProvider
from judge.testing.tiny import tiny_causal_lm

pytest.importorskip("torch")

ITEMS = [
    {"input": "Is it right?", "output": "The answer is 7."},
    {"input": "Is it right?", "output": "Paris!"},
    {"input": "What is the capital of France?", "output": "The capital of France is Paris; the answer is right."},
]


@pytest.mark.parametrize(
    ("rubric", "candidates"), [("helpfulness", tuple(str(i) for i in range(1, 11))), ("pairwise", ("A", "B", "tie"))]
)
def test_prefix_reuse_gives_the_same_logprobs(tmp_path, rubric: str, candidates: tuple[str, ...]) -> None:
    model_dir = str(tiny_causal_lm(tmp_path / "lm"))
    reuse, plain = LocalProvider(model_dir), LocalProvider(model_dir, prefix_reuse=False)
    config = GenerateConfig(score_candidates=candidates)
    r = load_rubric(rubric)
    for item in ITEMS:
        msgs = r.render({**item, "output_b": "The quick brown fox."}, "logprob")
        a = reuse._generate_sync(msgs, config).score_logprobs
        b = plain._generate_sync(msgs, config).score_logprobs
        for c in candidates:
            assert a[c] == pytest.approx(b[c], abs=1e-4)
    kept, _ = reuse._prefix
    assert len(kept) >= LocalProvider.MIN_SHARED_PREFIX  # the rubric's common beginning, kept
    other = load_rubric("factuality").render({**ITEMS[0], "context": "x"}, "logprob")  # another prompt
    assert reuse._generate_sync(other, config).score_logprobs == pytest.approx(
        plain._generate_sync(other, config).score_logprobs, abs=1e-4
    )


@pytest.mark.parametrize(
    ("rubric", "candidates"), [("helpfulness", tuple(str(i) for i in range(1, 11))), ("pairwise", ("A", "B", "tie"))]
)
def test_batched_calls_equal_one_call_each(tmp_path, rubric: str, candidates: tuple[str, ...]) -> None:
    """Concurrent logprob calls scored as one left-padded batch on the shared prefix: the unbatched values."""
    import asyncio

    model_dir = str(tiny_causal_lm(tmp_path / "lm"))
    batched, plain = LocalProvider(model_dir, batch_size=4), LocalProvider(model_dir, prefix_reuse=False, batch_size=1)
    config = GenerateConfig(score_candidates=candidates)
    r = load_rubric(rubric)
    prompts = [r.render({**item, "output_b": "The quick brown fox."}, "logprob") for item in ITEMS * 2]

    async def run_all() -> list:
        return await asyncio.gather(*(batched.generate(p, config) for p in prompts))

    got = asyncio.run(run_all())
    assert len(batched._prefix[0]) >= LocalProvider.MIN_SHARED_PREFIX
    for p, out in zip(prompts, got, strict=True):
        want = plain._generate_sync(p, config).score_logprobs
        for c in candidates:
            assert out.score_logprobs[c] == pytest.approx(want[c], abs=1e-4)
    # one forward pass for several prompts of different lengths, without any shared prefix
    many = plain._score_many_sync(prompts[:3], config)
    for p, out in zip(prompts[:3], many, strict=True):
        assert out.score_logprobs == pytest.approx(plain._generate_sync(p, config).score_logprobs, abs=1e-4)
