"""The local provider on a real (tiny, random) transformers model, and on the real SmolLM2."""

from __future__ import annotations

import math

import pytest

from judge import score
from judge.config import GenerateConfig
from judge.providers.local import LocalProvider
from judge.testing.tiny import tiny_causal_lm

from .conftest import EXAMPLES

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    return str(tiny_causal_lm(tmp_path_factory.mktemp("tiny-lm")))


def reference_logprob(model_dir: str, messages, candidate: str, must_end: bool = False) -> float:
    """log P(candidate | chat prompt) by one plain forward pass over prompt + candidate; with
    ``must_end``, times P(the next token is not a digit), digits found by decoding every token."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    c_ids = tok(candidate, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([p_ids + c_ids])).logits[0].float(), -1)
    total = sum(float(logp[len(p_ids) - 1 + j, t]) for j, t in enumerate(c_ids))
    if must_end:
        nxt = logp[len(p_ids) - 1 + len(c_ids)].exp()
        digit = sum(float(nxt[i]) for i in range(len(tok)) if tok.decode([i]).strip()[:1].isdigit())
        total += math.log(1.0 - digit)
    return total


def test_logprob_scores_are_exact_probabilities(tiny_model: str) -> None:
    items = [{"id": "a", "input": "Is it right?", "output": "The answer is 7."}]
    v = score(items, "helpfulness", f"local/{tiny_model}", cache=False)[0]
    assert v.status == "ok" and v.score_mode == "logprob" and v.judge_model == f"local/{tiny_model}"
    assert set(v.score_probs) == {str(i) for i in range(1, 11)}
    assert math.isclose(sum(v.score_probs.values()), 1.0, abs_tol=1e-4)
    assert v.score == pytest.approx(sum(int(k) * p for k, p in v.score_probs.items()), abs=1e-4)
    # against an independent computation: the two-token "10", and "1", which must not go on to "10"
    provider = LocalProvider(tiny_model)
    from judge import load_rubric

    msgs = load_rubric("helpfulness").render({"input": "Is it right?", "output": "The answer is 7."}, "logprob")
    ref = {c: reference_logprob(tiny_model, msgs, c) for c in ("3", "10")}
    ref["1"] = reference_logprob(tiny_model, msgs, "1", must_end=True)
    assert ref["1"] < reference_logprob(tiny_model, msgs, "1")
    out = provider._generate_sync(msgs, GenerateConfig(score_candidates=tuple(str(i) for i in range(1, 11))))
    for c, lp in ref.items():
        assert out.score_logprobs[c] == pytest.approx(lp, abs=1e-4)


def test_text_mode_is_greedy_deterministic_and_never_zero(tiny_model: str) -> None:
    items = [{"id": "a", "input": "2+2?", "output": "4"}, {"id": "b", "input": "3+3?", "output": "5"}]
    first = score(items, "factuality", f"local/{tiny_model}", score_mode="text", max_tokens=12, cache=False)
    second = score(items, "factuality", f"local/{tiny_model}", score_mode="text", max_tokens=12, cache=False)
    assert [v.raw for v in first] == [v.raw for v in second]
    for v in first:
        # a random model answers noise: unscored with the reason and the completion kept, never 0
        assert (v.status == "ok" and 1 <= v.score <= 5) or (v.status == "unscored" and v.score is None and v.error)
        assert v.raw is not None and v.completion_tokens > 0


def test_missing_model_folder_is_a_clear_error(tmp_path) -> None:
    from judge.errors import ConfigError

    with pytest.raises(ConfigError, match="does not exist"):
        score([{"input": "q", "output": "o"}], "factuality", f"local/{tmp_path}/nope", cache=False)


@pytest.mark.slow
def test_smollm2_scores_the_demo_file() -> None:
    results = score(EXAMPLES / "qa.jsonl", "factuality", "local/smollm2", cache=False)
    assert len(results) >= 20
    assert all(v.status == "ok" and 1 <= v.score <= 5 for v in results)
    assert all(abs(sum(v.score_probs.values()) - 1) < 1e-4 for v in results)
    # greedy text mode on a couple of items: a real chat model's completion, parsed or unscored with a reason
    text = score(EXAMPLES / "qa.jsonl", "factuality", "local/smollm2", score_mode="text", max_tokens=60, cache=False)
    assert all(v.raw for v in text)
    assert all((v.status == "ok") == (v.score is not None) for v in text)
