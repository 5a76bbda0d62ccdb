"""Zero-shot entailment from a causal LM: P(yes) vs P(no), sentence-level, SummaC-ZS aggregation."""

from __future__ import annotations

import math

import pytest

from judge.baselines import entailment
from judge.baselines.entailment import _zero_shot_ids
from judge.testing.tiny import tiny_causal_lm

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def chat_lm(tmp_path_factory) -> str:
    return str(tiny_causal_lm(tmp_path_factory.mktemp("chat-lm")))


def direct_p_yes(model_dir: str, premise: str, hypothesis: str) -> float:
    """P(yes) / (P(yes) + P(no)), each word's spellings summed, by plain forward passes."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    prompt = _zero_shot_ids(tok, premise, hypothesis)

    def p(word: str) -> float:
        ids = tok(word, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([prompt + ids])).logits[0].float(), -1)
        return math.exp(sum(float(logp[len(prompt) - 1 + j, t]) for j, t in enumerate(ids)))

    yes, no = p("yes") + p("Yes"), p("no") + p("No")
    return yes / (yes + no)


def test_zero_shot_entailment_is_the_yes_probability(chat_lm: str) -> None:
    premise = "The quick brown fox jumps over the lazy dog."
    res = entailment(
        ["The fox is quick.", "The fox is quick. Paris is the capital of France.", ""],
        premises=[premise] * 3,
        model=chat_lm,
    )
    assert res.summary["method"].startswith("zero-shot") and res.summary["resolved_model"] == chat_lm
    one, two, empty = res.records
    assert one["n_sentences"] == 1 and one["n_chunks"] == 1 and one["contradiction"] is None
    expected = direct_p_yes(chat_lm, premise, "The fox is quick.")
    assert one["entailment"] == pytest.approx(expected, abs=1e-4)
    assert one["summac_zs"] == pytest.approx(2 * expected - 1, abs=1e-4)
    assert two["n_sentences"] == 2 and two["entailment_min"] <= two["entailment"] <= 1
    assert empty["entailment"] is None and "empty" in empty["reason"]
    assert res.scores()[0] == one["entailment"]


@pytest.mark.slow
def test_smollm2_zero_shot_prefers_supported_claims() -> None:
    premise = "The city council voted on Tuesday to close the old bridge for repairs until June."
    res = entailment(
        ["The council voted to close the bridge for repairs.", "The council voted to build a new stadium."],
        premises=[premise] * 2,
    )
    assert res.summary["model"] == "smollm2"
    assert res.records[0]["entailment"] > res.records[1]["entailment"]


def test_single_token_answers_share_the_premise_prefix(chat_lm: str, monkeypatch) -> None:
    # "A" / "B" are single tokens of the tiny tokenizer: the batched path, with the premise run once
    import sys

    import torch

    monkeypatch.setattr(sys.modules["judge.baselines.entailment"], "ANSWERS", {"yes": ("A",), "no": ("B",)})
    from transformers import AutoModelForCausalLM, AutoTokenizer

    premise = "The quick brown fox jumps over the lazy dog."
    outputs = ["The fox is quick. Paris is the capital of France. The dog is lazy.", "Score: 4"]
    res = entailment(outputs, premises=[premise, "Question? Answer!"], model=chat_lm, batch_size=2)
    tok = AutoTokenizer.from_pretrained(chat_lm)
    model = AutoModelForCausalLM.from_pretrained(chat_lm).eval()
    a, b = tok("A", add_special_tokens=False)["input_ids"][0], tok("B", add_special_tokens=False)["input_ids"][0]

    def p_a(prem: str, hyp: str) -> float:
        with torch.no_grad():
            p = torch.softmax(model(torch.tensor([_zero_shot_ids(tok, prem, hyp)])).logits[0, -1], -1)
        return float(p[a] / (p[a] + p[b]))

    sents = ["The fox is quick.", "Paris is the capital of France.", "The dog is lazy."]
    expected = [p_a(premise, s) for s in sents]
    assert res.records[0]["n_sentences"] == 3
    assert res.records[0]["entailment"] == pytest.approx(sum(expected) / 3, abs=1e-4)
    assert res.records[0]["entailment_min"] == pytest.approx(min(expected), abs=1e-4)
    assert res.records[1]["entailment"] == pytest.approx(p_a("Question? Answer!", "Score: 4"), abs=1e-4)
