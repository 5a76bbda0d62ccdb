"""The reason score mode: a bounded greedy reasoning, then the verdict read after a forced prefix."""

from __future__ import annotations

import asyncio
import math

import pytest

from judge import load_rubric
from judge.dataset import Item
from judge.errors import ConfigError
from judge.grader import Grader
from judge.providers.fake import FakeProvider
from judge.providers.local import LocalProvider
from judge.testing.tiny import tiny_causal_lm

pytest.importorskip("torch")

ITEM = {"input": "Is it right?", "output": "Paris.", "output_b": "The answer is 7."}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    return str(tiny_causal_lm(tmp_path_factory.mktemp("tiny-lm")))


def independent(model_dir: str, messages, n_new: int, prefix: str, labels) -> tuple[str, dict[str, float]]:
    """Greedy reasoning by a plain loop, then P(label | prompt + reasoning + prefix) by full forward passes."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    new: list[int] = []
    with torch.no_grad():
        for _ in range(n_new):  # greedy, one token at a time, no cache
            nxt = int(model(torch.tensor([ids + new])).logits[0, -1].argmax())
            new.append(nxt)
            if nxt == tok.eos_token_id:
                break
    text = tok.decode(new, skip_special_tokens=True)
    thought = text[: text.find(prefix)] if prefix in text else text
    forced = prompt + f"{thought.strip()}\n{prefix} ".lstrip()
    seqs = {c: tok(forced + c, add_special_tokens=False)["input_ids"] for c in labels}
    k = min(
        next((i for i, (a, b) in enumerate(zip(s, seqs[labels[0]], strict=False)) if a != b), len(s))
        for s in seqs.values()
    )
    k = min(k, *(len(s) - 1 for s in seqs.values()))
    logp = {}
    with torch.no_grad():
        for c, s in seqs.items():
            lp = torch.log_softmax(model(torch.tensor([s])).logits[0].float(), -1)
            logp[c] = sum(float(lp[j - 1, s[j]]) for j in range(k, len(s)))
            if any(d != c and d.startswith(c) for d in labels):  # "1" of "10": the score must end after it
                digits = [i for t, i in tok.get_vocab().items() if t.lstrip("Ġ")[:1] in set("0123456789")]
                logp[c] += math.log(1 - float(lp[-1].exp()[digits].sum()))
    total = sum(math.exp(v) for v in logp.values())
    return thought.strip(), {c: math.exp(v) / total for c, v in logp.items()}


@pytest.mark.parametrize("rubric", ["helpfulness", "pairwise"])
def test_reason_mode_reads_the_verdict_after_bounded_reasoning(tiny_model: str, rubric: str, monkeypatch) -> None:
    monkeypatch.setattr("judge.verdict.MIN_SCORE_MASS", 0.0)  # a random model spreads its mass everywhere
    r = load_rubric(rubric)
    grader = Grader(r, LocalProvider(tiny_model), score_mode="reason", reasoning_tokens=6)
    v = asyncio.run(grader.grade(Item(id="a", **ITEM)))
    assert v.status == "ok" and v.score_mode == "reason"
    assert 0 < v.completion_tokens <= 6  # the reasoning is bounded
    labels = grader.config.score_candidates
    thought, probs = independent(tiny_model, r.render(ITEM, "reason"), 6, r.verdict_prefix, labels)
    assert v.reasoning == thought
    assert set(v.score_probs) == set(labels)
    for c in labels:
        assert v.score_probs[c] == pytest.approx(probs[c], abs=1e-4)
    if rubric == "pairwise":
        assert v.label == max(probs, key=probs.get)
    else:
        assert v.score == pytest.approx(sum(float(c) * p for c, p in probs.items()), abs=1e-3)


def test_reason_mode_instructions_and_cut() -> None:
    r = load_rubric("helpfulness")
    assert r.render(ITEM, "reason")[-1]["content"].endswith('write "Score:" and a single whole number from 1 to 10.')
    assert r.cut_reasoning(" It is fine.\nScore: 7 because") == "It is fine."
    assert r.validate() == []
    with pytest.raises(ConfigError, match="local judge"):
        Grader(r, FakeProvider(), score_mode="reason")
