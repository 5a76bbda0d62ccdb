"""Metrics that run a local model: BERTScore (bert-score library) and perplexity (judge's baseline).

Both run on the engine of :func:`judge.engines.current` (in-process, or a Ray actor pool chosen by
the suite's ``engine:``). torch, transformers and bert_score are imported inside the functions.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from judge.errors import ConfigError
from judge.metrics.base import Corpus, EvalInput, MetricResult
from judge.metrics.reference import bool_option, int_option, nan_scores, prepare
from judge.progress import items_done

DEFAULT_BERTSCORE_MODEL = "minilm"
BERTSCORE_ITEMS_PER_BATCH = 256  # candidates per engine batch: a MiniLM batch of 256 is ~1 s of CPU
#: distinct text one bert-score call embeds (it holds every distinct sentence's token embeddings until the
#: call ends): ~100k tokens, ~150 MB for MiniLM, so memory stays flat however many items a suite has
BERTSCORE_CHUNK_CHARS = 400_000

_SCORERS: dict[tuple[str, int, str, bool], Any] = {}
_LOCK = threading.Lock()


def _num_hidden_layers(path: str) -> int:
    import json

    config = Path(path) / "config.json"
    if not config.is_file():
        raise ConfigError(f"bertscore: model folder {path} has no config.json")
    cfg = json.loads(config.read_text(encoding="utf-8"))
    for key in ("num_hidden_layers", "n_layers", "num_layers"):
        if isinstance(cfg.get(key), int):
            return int(cfg[key])
    raise ConfigError(f"bertscore: cannot tell how many layers {path} has: pass num_layers")


def _scorer(path: str, num_layers: int, device: str, idf: bool) -> Any:
    key = (path, num_layers, device, idf)
    with _LOCK:
        if key not in _SCORERS:
            from bert_score import BERTScorer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            try:
                # nthreads=0: idf counts in this process (no multiprocessing pool next to torch)
                _SCORERS[key] = BERTScorer(model_type=path, num_layers=num_layers, idf=idf, device=device, nthreads=0)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"bertscore: could not load {path} ({type(exc).__name__}: {exc})") from None
            except AssertionError as exc:
                raise ConfigError(f"bertscore: num_layers={num_layers} is out of range for {path} ({exc})") from None
        return _SCORERS[key]


def release_models() -> None:
    """Free the local models the model-based metrics loaded in this process (BERTScore's encoders, the
    perplexity model): ``judge eval`` calls it after each such metric, so two never sit in memory together."""
    from judge.local.models import release_all

    with _LOCK:
        _SCORERS.clear()
    release_all()


def _bertscore_batch(path: str, num_layers: int, device: str, idf_refs: list[str] | None, batch_size: int) -> Any:
    """The per-worker batch function: (candidate, references) pairs -> (P, R, F1); the model loads once."""
    scorer = _scorer(path, num_layers, device, idf_refs is not None)
    if idf_refs is not None:
        from bert_score.utils import get_idf_dict

        # every worker weighs tokens by the idf of all the scored items' references, as bert_score.score does
        scorer._idf_dict = get_idf_dict(idf_refs, scorer._tokenizer, nthreads=0)

    def score(batch: list[tuple[str, list[str]]]) -> Sequence[tuple[float, float, float]]:
        p, r, f = scorer.score([c for c, _ in batch], [g for _, g in batch], batch_size=batch_size)
        return list(zip(p.tolist(), r.tolist(), f.tolist(), strict=True))

    return score


def _chunks_sharing_references(pairs: Sequence[tuple[str, list[str]]], budget: int) -> list[list[int]]:
    """Indices of ``pairs`` in chunks, pairs with the same references side by side (so a reference is
    embedded once), each chunk's distinct text within ``budget`` characters (or a single pair)."""
    order = sorted(range(len(pairs)), key=lambda i: pairs[i][1])
    chunks: list[list[int]] = []
    seen: set[str] = set()
    size = 0
    for i in order:
        texts = {pairs[i][0], *pairs[i][1]}
        grow = sum(len(t) for t in texts - seen)
        if not chunks or size + grow > budget:
            chunks.append([])
            seen, size = set(), 0
            grow = sum(len(t) for t in texts)
        chunks[-1].append(i)
        seen |= texts
        size += grow
    return chunks


def bertscore(data: EvalInput, options: dict[str, Any]) -> MetricResult:
    """BERTScore F1 with bert-score's own code on a local encoder (default all-MiniLM-L6-v2, layer 6).

    ``model_type`` is the resolved local folder, so nothing is fetched from the hub; ``num_layers``
    defaults to the model's last layer (bert-score's tuned-layer table only knows hub names). No
    baseline rescaling. With several references bert-score keeps, for P, R and F1 separately, the
    best over the references. With ``idf: true`` the idf weights come from the scored items'
    references, as ``bert_score.score`` computes them.
    """
    from bert_score.utils import get_hash

    from judge.engines import current
    from judge.local.models import pick_device, resolve_model

    model = str(options.get("model", DEFAULT_BERTSCORE_MODEL))
    path = resolve_model(model)
    if not Path(path).is_dir():
        raise ConfigError(f"bertscore: model '{model}' is not a local folder: pass a local model folder or 'minilm'")
    num_layers = int_option(options, "num_layers", None, lo=1) or _num_hidden_layers(path)
    idf = bool_option(options, "idf", False)
    # 8: the same CPU as 16 on 1,000 SummEval pairs (23.1 vs 23.0 s) and ~100 MB less at the peak on
    # MT-Bench-length answers (examples/finetune)
    batch_size = int_option(options, "batch_size", 8, lo=1)
    if batch_size is None:
        raise ConfigError("option 'batch_size' must be an integer >= 1, not None")
    device = pick_device(options.get("device"))

    errors, refs = prepare(data, needs_reference=True)
    n = len(data.outputs)
    scores = nan_scores(n, "bertscore")
    details: dict[str, Any] = {}
    scored = [i for i in range(n) if errors[i] is None]
    settings = {
        "model": model,
        "model_path": path,
        "model_name": Path(path).name,
        "num_layers": num_layers,
        "idf": idf,
        "rescale_with_baseline": False,
        "device": device,
    }
    # an empty answer scores P = R = F1 = 0, as bert-score defines it ("Empty candidate sentence detected; setting
    # raw BERTscores to 0."); set here, since bert-score's own path for it fails on current transformers
    blank = [i for i in scored if not data.outputs[i].strip()]  # type: ignore[union-attr]
    scores["bertscore"][blank] = 0.0
    precision, recall = np.full(n, np.nan), np.full(n, np.nan)
    precision[blank] = recall[blank] = 0.0
    scored = [i for i in scored if data.outputs[i].strip()]  # type: ignore[union-attr]
    if scored:
        pairs = [(data.outputs[i].strip(), [r.strip() for r in refs[i]]) for i in scored]  # type: ignore[union-attr]
        idf_refs = [r for _, g in pairs for r in g] if idf else None
        engine = current()
        factory = functools.partial(_bertscore_batch, path, num_layers, device, idf_refs, batch_size)
        prf = np.empty((len(pairs), 3))
        for chunk in _chunks_sharing_references(pairs, BERTSCORE_CHUNK_CHARS):
            # in this process, a chunk is one call: bert-score sorts its candidates by length and embeds each
            # distinct sentence once, which small batches would defeat (1.6-2.0x the CPU on 1,000 SummEval
            # pairs in batches of 256)
            size = len(chunk) if engine.name == "local" else BERTSCORE_ITEMS_PER_BATCH
            prf[chunk] = list(engine.map(factory, [pairs[i] for i in chunk], batch_size=size))
            items_done(len(chunk))
        scores["bertscore"][scored] = prf[:, 2]
        precision[scored], recall[scored] = prf[:, 0], prf[:, 1]
        details = {"precision": precision.tolist(), "recall": recall.tolist()}
        settings["hash"] = get_hash(path, num_layers, idf, False, False, False)
        settings["engine"] = engine.name
    return MetricResult(scores, errors, settings=settings, details=details)


def _corpus_perplexity(sums: np.ndarray) -> Any:
    """exp(sum nll / sum tokens): (B,) of a (B, 2) batch of sums, (1,) of one (2,) sum.

    ``Any`` because :class:`Corpus` types ``score`` as returning a float, as a non-vectorised one does.
    """
    sums = np.atleast_2d(sums)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.exp(sums[:, 0] / sums[:, 1])


def perplexity(data: EvalInput, options: dict[str, Any]) -> MetricResult:
    """Perplexity of each output under a causal LM (``judge.baselines.perplexity``); lower is better."""
    from judge.baselines._run import run_baseline
    from judge.baselines.perplexity import DEFAULT_MODEL
    from judge.engines import current

    model = str(options.get("model", DEFAULT_MODEL))
    engine = current()
    res = run_baseline(
        "perplexity",
        list(data.outputs),
        engine=engine,
        model=model,
        ids=[str(i) for i in data.ids],
        device=options.get("device"),
        batch_size=int_option(options, "batch_size", 16, lo=1),
    )
    n = len(data.outputs)
    scores = nan_scores(n, "perplexity")
    errors: list[str | None] = []
    # the system's perplexity is the corpus one, exp(total NLL / total tokens), as language modelling
    # reports it: a mean of per-item perplexities is ruled by a few short, odd outputs
    stats = np.zeros((n, 2))
    for i, rec in enumerate(res.records):
        if rec.get("perplexity") is None:
            errors.append(rec.get("reason") or "not scored")
        else:
            scores["perplexity"][i] = rec["perplexity"]
            stats[i] = (rec["nll"] * rec["n_tokens"], rec["n_tokens"])
            errors.append(None)
    summary = res.summary
    corpus = Corpus(stats, _corpus_perplexity, vectorised=True)
    return MetricResult(
        scores,
        errors,
        corpus={"perplexity": corpus},
        settings={
            "model": model,
            "max_length": summary.get("max_length"),
            "engine": engine.name,
            "scoring": "after BOS, rolling windows; system value = corpus perplexity exp(sum NLL / sum tokens)",
        },
        details={k: summary[k] for k in ("corpus_perplexity", "tokens", "seconds") if k in summary},
    )
