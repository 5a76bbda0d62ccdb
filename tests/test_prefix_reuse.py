"""Shared-prefix KV reuse for log p(output | source): the same values as the unshared computation."""

from __future__ import annotations

import pytest

from judge.baselines import pmi
from judge.baselines._lm import loglikelihoods
from judge.testing.tiny import causal_lm, tiny_causal_lm

pytest.importorskip("torch")

SOURCE = "the big red dog sat on the mat in the house and the small cat ran to the park ."
OUTPUTS = [
    "the dog sat .",
    "a cat ran to the park and it was big .",
    "he sat",
    "the red dog sat on the rug but the cat ran .",
    "paris is the capital city of france .",
]


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory) -> str:
    return str(causal_lm(tmp_path_factory.mktemp("lm")))


@pytest.mark.parametrize("batch_size", [1, 2, 16])
def test_shared_prefix_equals_unshared(lm_dir: str, batch_size: int) -> None:
    from judge.localmodels import load_causal_lm

    model, tok = load_causal_lm(lm_dir, "cpu")
    prefix = [2, *tok(SOURCE, add_special_tokens=False)["input_ids"]]
    other = [2, *tok("the cat", add_special_tokens=False)["input_ids"]]
    requests = [(prefix + tok(o, add_special_tokens=False)["input_ids"], len(prefix)) for o in OUTPUTS]
    requests += [(other + tok(o, add_special_tokens=False)["input_ids"], len(other)) for o in OUTPUTS[:2]]
    requests.append(([2, *tok(OUTPUTS[0], add_special_tokens=False)["input_ids"]], 1))  # nothing to share
    shared = loglikelihoods(model, tok, requests, max_length=64, batch_size=batch_size)
    plain = loglikelihoods(model, tok, requests, max_length=64, batch_size=batch_size, share_prefixes=False)
    for a, b in zip(shared, plain, strict=True):
        assert a.n_tokens == b.n_tokens and a.context_dropped == b.context_dropped == 0
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)


def test_pmi_with_and_without_prefix_reuse(lm_dir: str) -> None:
    sources = [SOURCE] * len(OUTPUTS) + ["the dog . " * 40]  # the last one does not fit: rolling windows
    outputs = [*OUTPUTS, "the dog sat ."]
    a = pmi(outputs, sources=sources, model=lm_dir, max_length=32)
    b = pmi(outputs, sources=sources, model=lm_dir, max_length=32, share_prefixes=False)
    assert a.records[-1]["source_tokens_dropped"] > 0
    for ra, rb in zip(a.records, b.records, strict=True):
        for key in ("pmi", "logp_given_source", "logp"):
            assert ra[key] == pytest.approx(rb[key], abs=1e-4)
        assert ra["source_tokens_dropped"] == rb["source_tokens_dropped"]


def test_shared_prefix_on_a_bpe_chat_model(tmp_path) -> None:
    from judge.localmodels import load_causal_lm

    model, tok = load_causal_lm(str(tiny_causal_lm(tmp_path / "lm")), "cpu")
    prefix = tok("The quick brown fox jumps over the lazy dog.\n")["input_ids"]
    requests = [(prefix + tok(o, add_special_tokens=False)["input_ids"], len(prefix)) for o in CORPUS_OUTPUTS]
    shared = loglikelihoods(model, tok, requests, max_length=256, batch_size=3)
    plain = loglikelihoods(model, tok, requests, max_length=256, share_prefixes=False)
    for a, b in zip(shared, plain, strict=True):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)


CORPUS_OUTPUTS = ["The fox is quick.", "Paris!", "A lazy dog; the answer is right or wrong.", "Score: 4", "x"]
