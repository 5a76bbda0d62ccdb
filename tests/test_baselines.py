"""Baselines on tiny random models (mechanics) and on the real offline models (slow)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from judge.baselines import entailment, perplexity, pmi, similarity
from judge.baselines._text import pack, sentences, split_to_fit
from judge.baselines.entailment import label_indices
from judge.errors import ConfigError, DataError
from judge.local.lm import loglikelihoods, plan_windows
from judge.testing.tiny import causal_lm, nli_model, sentence_transformer

os.environ["HF_HUB_OFFLINE"] = "1"

TEXTS = ["the cat sat on the mat .", "paris is the capital of france .", "", "a big red dog ran in the park"]


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(causal_lm(tmp_path_factory.mktemp("lm")))


@pytest.fixture(scope="module")
def nli_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(nli_model(tmp_path_factory.mktemp("nli")))


@pytest.fixture(scope="module")
def st_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(sentence_transformer(tmp_path_factory.mktemp("st") / "st"))


# --- rolling windows -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "first", "max_len", "stride"), [(1, 1, 4, 2), (10, 1, 4, 1), (50, 1, 8, 3), (40, 17, 8, 7)]
)
def test_windows_score_every_token_once_with_context(n: int, first: int, max_len: int, stride: int) -> None:
    windows = plan_windows(n, first, max_len, stride)
    scored: list[int] = []
    prev = first
    for k, (start, end) in enumerate(windows):
        assert end - start <= max_len and start < prev
        if k > 0:
            assert prev - start >= max_len - stride  # context kept by later windows
        scored.extend(range(prev, end))
        prev = end
    assert scored == list(range(first, n))


def test_bad_stride() -> None:
    with pytest.raises(ConfigError, match="stride"):
        plan_windows(10, 1, 4, 4)


def _direct(model, ids: list[int]) -> float:  # type: ignore[no-untyped-def]
    import torch

    with torch.inference_mode():
        logits = model(torch.tensor([ids])).logits[0, :-1].double()
    return float(torch.log_softmax(logits, -1).gather(-1, torch.tensor(ids[1:])[:, None]).sum())


def test_batched_left_padded_scores_equal_one_by_one(lm_dir: str) -> None:
    from judge.local.models import load_causal_lm

    model, tok = load_causal_lm(lm_dir, "cpu")
    seqs = [[2, *tok(t, add_special_tokens=False)["input_ids"]] for t in TEXTS if t]
    got = loglikelihoods(model, tok, [(s, 1) for s in seqs], max_length=64, batch_size=8)
    for s, ll in zip(seqs, got, strict=True):
        assert ll.n_tokens == len(s) - 1 and ll.n_windows == 1
        assert ll.logprob == pytest.approx(_direct(model, s), rel=1e-5)


def test_rolling_windows_with_full_context_match_one_pass(lm_dir: str) -> None:
    from judge.local.models import load_causal_lm

    model, tok = load_causal_lm(lm_dir, "cpu")
    seq = [2] + tok(" ".join(TEXTS), add_special_tokens=False)["input_ids"] * 2
    one = loglikelihoods(model, tok, [(seq, 1)], max_length=64)[0]
    heard: list[int] = []
    rolled = loglikelihoods(model, tok, [(seq, 1)], max_length=8, stride=3, on_done=heard.append)[0]
    assert heard == [1]  # done once its last window is scored, not per window
    assert rolled.n_tokens == one.n_tokens == len(seq) - 1 and rolled.n_windows > 1
    assert one.logprob == pytest.approx(_direct(model, seq), rel=1e-5)
    assert rolled.logprob != pytest.approx(one.logprob, rel=1e-9)  # less context: a different, finite number
    assert math.isfinite(rolled.logprob)


# --- perplexity / pmi --------------------------------------------------------------------------


def test_perplexity_fields_and_empty_text(lm_dir: str) -> None:
    res = perplexity(TEXTS, model=lm_dir, device="cpu")
    assert [r["id"] for r in res.records] == ["0", "1", "2", "3"]
    r0 = res.records[0]
    assert r0["n_tokens"] == 7 and r0["perplexity"] == pytest.approx(math.exp(r0["nll"]))
    assert r0["bits_per_byte"] == pytest.approx(r0["nll"] * 7 / math.log(2) / len(TEXTS[0]))
    assert r0["word_perplexity"] == pytest.approx(math.exp(r0["nll"] * 7 / 7))
    assert res.records[2]["perplexity"] is None and res.records[2]["reason"] == "empty output"
    assert res.summary["scored"] == 3 and res.summary["tokens"] == 7 + 7 + 8
    assert res.scores()[2] is None
    long = perplexity([" ".join(TEXTS) * 3], model=lm_dir, max_length=16)
    assert long.records[0]["n_windows"] > 1 and long.records[0]["n_tokens"] > 16


def test_perplexity_reads_files_with_map_and_content_ids(lm_dir: str, tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"question": f"q{i}", "answer": t}) + "\n" for i, t in enumerate(TEXTS[:2])))
    res = perplexity(data, model=lm_dir, mapping={"input": "question", "output": "answer"})
    ids = [r["id"] for r in res.records]
    assert all(i.startswith("item-") for i in ids) and len(set(ids)) == 2
    assert ids == [
        r["id"] for r in perplexity(data, model=lm_dir, mapping={"input": "question", "output": "answer"}).records
    ]
    with pytest.raises(DataError, match="--map output=COLUMN"):
        perplexity(data, model=lm_dir, mapping={"input": "question"})


def test_dataframes_are_accepted(lm_dir: str) -> None:
    import pandas as pd

    frame = pd.DataFrame({"id": ["x", "y"], "output": ["the cat sat .", None], "input": ["the cat", "a dog"]})
    assert [r["id"] for r in perplexity(frame, model=lm_dir).records] == ["x", "y"]
    res = pmi(frame, model=lm_dir)
    assert res.records[0]["pmi"] is not None and res.records[1]["reason"] == "no output"
    assert list(res.to_pandas().columns[:2]) == ["id", "pmi"]


def test_pmi_scores_the_same_tokens_both_ways(lm_dir: str) -> None:
    res = pmi(TEXTS, sources=["the cat", "paris", "x", "the dog . " * 40], model=lm_dir, max_length=32)
    r = res.records[0]
    assert r["pmi"] == pytest.approx(r["logp_given_source"] - r["logp"])
    assert r["pmi_total"] == pytest.approx(r["pmi"] * r["n_tokens"])
    assert res.records[2]["pmi"] is None and "empty" in res.records[2]["reason"]
    assert res.records[3]["source_tokens_dropped"] > 0 and res.summary["truncated_sources"] == 1
    with pytest.raises(DataError, match="pass the 'input' texts"):
        pmi(TEXTS, model=lm_dir)


# --- entailment ----------------------------------------------------------------------------------


def test_label_indices() -> None:
    assert label_indices({0: "CONTRADICTION", 1: "NEUTRAL", 2: "ENTAILMENT"}, "m") == {
        "entailment": 2,
        "neutral": 1,
        "contradiction": 0,
    }
    assert label_indices({0: "entailment", 1: "not_entailment"}, "m")["entailment"] == 0
    with pytest.raises(ConfigError, match="m has no entailment label"):
        label_indices({0: "LABEL_0", 1: "LABEL_1"}, "m")


def test_text_splitting_keeps_everything(nli_dir: str) -> None:
    from judge.local.models import load_sequence_classifier

    _, tok = load_sequence_classifier(nli_dir, "cpu")
    assert sentences("It rained. He ran!  Why?\nOK") == ["It rained.", "He ran!", "Why?", "OK"]
    text = "the cat sat on the mat and the dog ran in the park"
    pieces = split_to_fit(tok, text, 4)
    assert " ".join(pieces) == text and all(len(p.split()) <= 4 for p in pieces)
    assert pack(tok, ["the cat sat .", "a dog ran .", "it is big ."], 8) == ["the cat sat . a dog ran .", "it is big ."]


def test_entailment_sentence_level(nli_dir: str) -> None:
    premise = "the cat sat on the mat . " * 30  # longer than the model: chunked, not truncated
    res = entailment(
        ["the cat sat . the dog ran .", ""], premises=[premise, "x"], model=nli_dir, device="cpu", max_length=32
    )
    r = res.records[0]
    assert r["n_sentences"] == 2 and r["n_chunks"] > 1 and "truncated" not in r
    assert 0 <= r["entailment_min"] <= r["entailment"] <= 1 and 0 <= r["contradiction"] <= 1
    assert -1 <= r["summac_zs"] <= 1
    assert res.records[1]["entailment"] is None and res.records[1]["reason"] == "empty output"


def test_entailment_refuses_non_nli_models(tmp_path: Path, lm_dir: str) -> None:
    plain = nli_model(tmp_path / "plain", id2label={0: "LABEL_0", 1: "LABEL_1"})
    with pytest.raises(ConfigError, match="no entailment label"):
        entailment(["a"], premises=["b"], model=str(plain))
    with pytest.raises(ConfigError, match="cannot answer zero-shot"):  # a causal LM is asked yes/no
        entailment(["a"], premises=["b"], model=lm_dir)
    with pytest.raises(ConfigError, match="does not exist"):
        entailment(["a"], premises=["b"], model="./no/such/nli")


# --- similarity ----------------------------------------------------------------------------------


def test_similarity(st_dir: str) -> None:
    long = "the cat sat on the mat and the dog ran in the park . " * 4  # > max_seq_length 16: chunked
    res = similarity(
        ["the cat sat .", "a dog", long, None], against=["the cat sat .", "paris", long, "x"], model=st_dir
    )
    assert res.records[0]["similarity"] == pytest.approx(1.0)
    assert -1 <= res.records[1]["similarity"] <= 1
    assert res.records[2]["similarity"] == pytest.approx(1.0) and res.records[2]["n_chunks"] > 2
    assert res.records[3]["similarity"] is None and res.records[3]["reason"] == "no output"
    assert res.summary["chunked_items"] == 1


# --- CLI -----------------------------------------------------------------------------------------


def test_cli_writes_jsonl_joinable_by_id(lm_dir: str, st_dir: str, nli_dir: str, tmp_path: Path) -> None:
    from judge.cli import cli

    data = tmp_path / "items.csv"
    data.write_text("id,answer,ref\na1,the cat sat .,the cat sat on the mat .\na2,,paris\n")
    out = tmp_path / "ppl.jsonl"
    runner = CliRunner()
    args = ["baseline", "perplexity", str(data), "--model", lm_dir, "--map", "output=answer", "--out", str(out)]
    res = runner.invoke(cli, args)
    assert res.exit_code == 0, res.output
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in recs] == ["a1", "a2"] and recs[1]["reason"] == "empty output"

    res = runner.invoke(
        cli,
        ["baseline", "similarity", str(data), "--model", st_dir, "--map", "output=answer", "--map", "reference=ref"],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.splitlines()[0])["id"] == "a1"

    res = runner.invoke(
        cli,
        [
            "baseline",
            "entailment",
            str(data),
            "--model",
            nli_dir,
            "--premise",
            "reference",
            "--map",
            "output=answer",
            "--map",
            "reference=ref",
        ],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        cli,
        [
            "baseline",
            "pmi",
            str(data),
            "--model",
            lm_dir,
            "--source",
            "reference",
            "--map",
            "output=answer",
            "--map",
            "reference=ref",
            "--out",
            str(tmp_path / "p.jsonl"),
        ],
    )
    assert res.exit_code == 0, res.output


# --- real offline models -------------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_prefers_fluent_text() -> None:
    fluent = "The cat sat on the mat and looked out of the window at the rain."
    shuffled = "window mat the rain the of at sat looked cat out The and on the."
    res = perplexity([fluent, shuffled])
    assert res.records[0]["perplexity"] < res.records[1]["perplexity"]
    res = pmi(["Paris is the capital of France."], sources=["France's capital city is Paris."])
    assert res.records[0]["pmi"] > 0


@pytest.mark.slow
def test_minilm_similarity_orders_paraphrases_first() -> None:
    res = similarity(
        ["A man is playing a guitar.", "The stock market fell sharply today."],
        against=["Someone plays the guitar.", "Someone plays the guitar."],
    )
    assert res.records[0]["similarity"] > 0.5 > res.records[1]["similarity"]
