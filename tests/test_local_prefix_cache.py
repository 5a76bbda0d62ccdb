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
    for p, out in zip(prompts, got, strict=True):
        want = plain._generate_sync(p, config).score_logprobs
        for c in candidates:
            assert out.score_logprobs[c] == pytest.approx(want[c], abs=1e-4)
    # one forward pass for several prompts of different lengths, without any shared prefix
    many = plain._score_many_sync(prompts[:3], config)
    for p, out in zip(prompts[:3], many, strict=True):
        assert out.score_logprobs == pytest.approx(plain._generate_sync(p, config).score_logprobs, abs=1e-4)


def test_alternating_rubrics_each_start_from_their_own_kept_cache(tmp_path, monkeypatch) -> None:
    """Prompts of two rubrics in turn (MT-Bench's turn 1 and turn 2): each prompt starts from the kept
    cache sharing the most with it, so only its own end is run -- and the values are the unshared ones."""
    import functools

    from judge.local.labels import prompt_and_candidates

    model_dir = str(tiny_causal_lm(tmp_path / "lm"))
    reuse, plain = LocalProvider(model_dir, batch_size=1), LocalProvider(model_dir, prefix_reuse=False)
    config = GenerateConfig(score_candidates=("A", "B", "tie"))
    rubrics = [load_rubric("pairwise"), load_rubric("helpfulness")]
    prompts = [rubrics[k % 2].render({**ITEMS[k // 2], "output_b": "Two."}, "logprob") for k in range(6)]
    want = [plain._generate_sync(p, config).score_logprobs for p in prompts]

    model, tok = reuse._load()  # the same loaded model as plain's: one per process
    run: list[int] = []  # new positions of every forward pass
    forward = model.forward

    @functools.wraps(forward)  # the same signature: the cache argument's name is read from it
    def counting(*args, **kwargs):
        run.append(int(kwargs["input_ids"].numel()))
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", counting)
    seen: list[list[int]] = []
    for k, p in enumerate(prompts):
        before = len(run)
        assert reuse._generate_sync(p, config).score_logprobs == pytest.approx(want[k], abs=1e-4)
        ids, cands = prompt_and_candidates(tok, p, config.score_candidates)
        shared = max((_common(ids, q) for q in seen), default=0)
        shared = shared if shared >= LocalProvider.MIN_SHARED_PREFIX else 0
        multi = [len(t) - 1 for t in cands.values() if len(t) > 1]
        rest = len(ids) - shared
        # nothing is run twice: the new part once, plus one row per multi-token candidate's extra tokens
        assert sum(run[before:]) == (sum(rest + m for m in multi) if multi else rest)
        if k >= 2:
            assert shared >= LocalProvider.MIN_SHARED_PREFIX  # the same rubric's prompt, two calls back
        seen.append(ids)
    reuse.clear_prefix_cache()
    assert reuse.prefix_cache.entries == []
    # all six in one call: grouped by rubric, each group on its own shared beginning
    many = reuse._score_many_sync(prompts, config)
    for out, w in zip(many, want, strict=True):
        assert out.score_logprobs == pytest.approx(w, abs=1e-4)
    ids = [prompt_and_candidates(tok, p, ("A",))[0] for p in prompts]
    common = [min(_common(ids[r], ids[r + 2]), _common(ids[r], ids[r + 4])) for r in (0, 1)]
    assert sorted(len(kept) for kept, _ in reuse.prefix_cache.entries) == sorted(common)


def _common(a: list[int], b: list[int]) -> int:
    """Tokens ``a`` can take from the kept cache of ``b`` (each but its last token, at most)."""
    n = 0
    while n < min(len(a), len(b)) - 1 and a[n] == b[n]:
        n += 1
    return n
