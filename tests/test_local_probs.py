"""Pairwise verdicts read from the label distribution (no free generation), on a tiny random model."""

from __future__ import annotations

import math

import pytest

from judge import load_rubric, score
from judge.config import GenerateConfig
from judge.errors import ConfigError, VerdictParseError
from judge.grader import Grader
from judge.providers.fake import FakeProvider
from judge.providers.local import LocalProvider
from judge.testing.tiny import tiny_causal_lm
from judge.verdict import PAIRWISE_SCORE, score_from_logprobs

pytest.importorskip("torch")

ITEM = {"id": "a", "input": "Is it right?", "output": "Paris.", "output_b": "The answer is 7."}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    return str(tiny_causal_lm(tmp_path_factory.mktemp("tiny-lm")))


def direct_label_logprobs(model_dir: str, messages, labels) -> dict[str, float]:
    """log P(label | chat prompt): one plain forward pass over prompt + label for each label."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    out = {}
    for label in labels:
        c_ids = tok(label, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([p_ids + c_ids])).logits[0].float(), -1)
        out[label] = sum(float(logp[len(p_ids) - 1 + j, t]) for j, t in enumerate(c_ids))
    return out


def test_pairwise_verdict_is_the_label_distribution(tiny_model: str, monkeypatch) -> None:
    # a random model spreads its mass over the whole vocabulary: accept any mass on the labels here
    monkeypatch.setattr("judge.verdict.MIN_SCORE_MASS", 0.0)
    v = score([ITEM], "pairwise", f"local/{tiny_model}", cache=False)[0]
    assert v.status == "ok" and v.score_mode == "logprob"  # the default for local judges
    assert v.completion_tokens == 0  # nothing generated
    assert set(v.score_probs) == {"A", "B", "tie"}
    assert math.isclose(sum(v.score_probs.values()), 1.0, abs_tol=1e-5)
    assert v.score == pytest.approx(v.score_probs["A"] + 0.5 * v.score_probs["tie"], abs=1e-5)
    assert v.label == max(v.score_probs, key=v.score_probs.get)

    msgs = load_rubric("pairwise").render(ITEM, "logprob")
    ref = direct_label_logprobs(tiny_model, msgs, ("A", "B", "tie"))
    total = sum(math.exp(lp) for lp in ref.values())
    for label, lp in ref.items():
        assert v.score_probs[label] == pytest.approx(math.exp(lp) / total, abs=1e-4)
    out = LocalProvider(tiny_model)._generate_sync(msgs, GenerateConfig(score_candidates=("A", "B", "tie")))
    for label, lp in ref.items():
        assert out.score_logprobs[label] == pytest.approx(lp, abs=1e-4)


def test_too_little_mass_on_the_labels_is_unscored_not_a_guess(tiny_model: str) -> None:
    v = score([ITEM], "pairwise", f"local/{tiny_model}", cache=False)[0]
    assert v.status == "unscored" and v.score is None
    assert "carry only" in v.error


def test_logprob_pairwise_prompt_asks_for_the_label_only() -> None:
    rubric = load_rubric("pairwise")
    assert rubric.render(ITEM, "logprob")[-1]["content"].endswith(
        "Respond with only the verdict, A, B or tie, and nothing else.\nVerdict:"
    )
    assert rubric.validate() == []


def test_server_top_logprobs_give_the_label_distribution() -> None:
    rubric = load_rubric("pairwise")
    top = [{"A": math.log(0.5), " a": math.log(0.1), "B": math.log(0.2), "Tie": math.log(0.1), "The": math.log(0.1)}]
    parsed = score_from_logprobs(None, top, rubric)
    assert parsed.score_probs == pytest.approx({"A": 0.6 / 0.9, "B": 0.2 / 0.9, "tie": 0.1 / 0.9}, abs=1e-6)
    assert parsed.label == "A"
    assert parsed.score == pytest.approx(sum(PAIRWISE_SCORE[k] * p for k, p in parsed.score_probs.items()))
    with pytest.raises(VerdictParseError):
        score_from_logprobs(None, None, rubric)


def test_score_modes_per_rubric_kind() -> None:
    fake = FakeProvider()
    assert Grader(load_rubric("pairwise"), fake).score_mode == fake.default_score_mode
    assert Grader(load_rubric("pairwise"), fake, score_mode="logprob").config.score_candidates == ("A", "B", "tie")
    with pytest.raises(ConfigError, match="opinions"):
        Grader(load_rubric("toxicity"), fake, score_mode="logprob")
