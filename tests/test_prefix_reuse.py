"""Shared-prefix KV reuse for log p(output | source): the same values as the unshared computation."""

from __future__ import annotations

import pytest

from judge.baselines import pmi
from judge.local.lm import loglikelihoods
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
    from judge.local.models import load_causal_lm

    model, tok = load_causal_lm(lm_dir, "cpu")
    prefix = [2, *tok(SOURCE, add_special_tokens=False)["input_ids"]]
    other = [2, *tok("the cat", add_special_tokens=False)["input_ids"]]
    requests = [(prefix + tok(o, add_special_tokens=False)["input_ids"], len(prefix)) for o in OUTPUTS]
    requests += [(other + tok(o, add_special_tokens=False)["input_ids"], len(other)) for o in OUTPUTS[:2]]
    requests.append(([2, *tok(OUTPUTS[0], add_special_tokens=False)["input_ids"]], 1))  # nothing to share
    heard: list[int] = []
    shared = loglikelihoods(model, tok, requests, max_length=64, batch_size=batch_size, on_done=heard.append)
    plain = loglikelihoods(model, tok, requests, max_length=64, batch_size=batch_size, share_prefixes=False)
    assert sum(heard) == len(requests) and all(n > 0 for n in heard)  # each request heard of once, when done
    assert len(heard) > 2  # batch by batch (two shared groups, then the rest), not once at the end
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
    from judge.local.models import load_causal_lm

    model, tok = load_causal_lm(str(tiny_causal_lm(tmp_path / "lm")), "cpu")
    prefix = tok("The quick brown fox jumps over the lazy dog.\n")["input_ids"]
    requests = [(prefix + tok(o, add_special_tokens=False)["input_ids"], len(prefix)) for o in CORPUS_OUTPUTS]
    shared = loglikelihoods(model, tok, requests, max_length=256, batch_size=3)
    plain = loglikelihoods(model, tok, requests, max_length=256, share_prefixes=False)
    for a, b in zip(shared, plain, strict=True):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)


CORPUS_OUTPUTS = ["The fox is quick.", "Paris!", "A lazy dog; the answer is right or wrong.", "Score: 4", "x"]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("with_prefix", [True, False])
def test_packed_rows_equal_their_own_runs(lm_dir: str, attn: str, with_prefix: bool) -> None:
    """Rows packed into one sequence with a block mask: each row's logits are those of its own unpadded run."""
    import torch
    from transformers import AutoModelForCausalLM

    from judge.local.kv import cache_tensors, can_pack, packed_logits, run_prefix

    model = AutoModelForCausalLM.from_pretrained(lm_dir, attn_implementation=attn).eval()
    assert can_pack(model)
    vocab = model.config.vocab_size
    prefix = [2, 5, 9, 11, 7, 30 % vocab, 12] if with_prefix else []
    rows = [[t % vocab for t in r] for r in ([4, 8, 15, 16, 23, 42], [3], [17, 19, 21, 22], [6] * 9)]
    wanted = [[0, 2, 5], [0], [0, 1, 2, 3], [8]]
    kv = cache_tensors(run_prefix(model, prefix)[0]) if prefix else None
    got = packed_logits(model, kv, len(prefix), rows, wanted)
    assert got.shape[0] == sum(len(w) for w in wanted)
    want = []
    with torch.inference_mode():
        for row, w in zip(rows, wanted, strict=True):
            logits = model(input_ids=torch.tensor([prefix + row])).logits[0].float()
            want.append(logits[[len(prefix) + j for j in w]])
    assert torch.allclose(got, torch.cat(want), atol=1e-4)
    if kv is not None:  # the prefix's KV is read, never changed
        again = cache_tensors(run_prefix(model, prefix)[0])
        for (k, v), (k2, v2) in zip(kv, again, strict=True):
            assert torch.equal(k, k2) and torch.equal(v, v2)


def test_shared_prefix_without_packing_equals_unshared(lm_dir: str, monkeypatch) -> None:
    """Models that take no block mask run the continuations as padded batches on the prefix's cache."""
    from judge.local import lm as _lm
    from judge.local.models import load_causal_lm

    model, tok = load_causal_lm(lm_dir, "cpu")
    monkeypatch.setattr(_lm, "can_pack", lambda model: False)
    prefix = [2, *tok(SOURCE, add_special_tokens=False)["input_ids"]]
    requests = [(prefix + tok(o, add_special_tokens=False)["input_ids"], len(prefix)) for o in OUTPUTS]
    shared = loglikelihoods(model, tok, requests, max_length=64, batch_size=2)
    plain = loglikelihoods(model, tok, requests, max_length=64, share_prefixes=False)
    for a, b in zip(shared, plain, strict=True):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)


def test_packs_respect_the_token_limit() -> None:
    from types import SimpleNamespace

    from judge.local.kv import pack_groups

    model = SimpleNamespace(config=SimpleNamespace(vocab_size=100))
    assert pack_groups([3, 4, 2, 9, 1], model, max_tokens=9) == [[0, 1, 2], [3], [4]]
    assert pack_groups([12, 1], model, max_tokens=9) == [[0], [1]]


def test_packing_only_where_it_saves_work() -> None:
    from types import SimpleNamespace

    from judge.local.kv import packing_pays

    model = SimpleNamespace(config=SimpleNamespace(hidden_size=576))
    summaries = [22, 111, 60, 78, 95, 70, 80, 85]  # on a long article: padding costs more than attention
    assert packing_pays(model, 455, summaries, [list(range(8))])
    assert not packing_pays(model, 0, [1000, 800], [[0, 1]])  # two long prompts: attention across them
    assert not packing_pays(model, 455, [128] * 16, [list(range(16))])  # no padding to save
