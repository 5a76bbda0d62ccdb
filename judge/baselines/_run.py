"""Run a baseline through an engine: batches of items out, records streamed back in input order.

The baseline functions score whatever texts they are given; this module cuts the items into
batches, sends them to an engine (:mod:`judge.engines`: in-process, or a Ray actor pool with one
model per actor), writes each record as it arrives, and merges the per-batch summaries. An
interrupted run leaves ``OUT.partial``; rerunning the same command skips the ids found there.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from judge.baselines._data import BaselineResult, columns
from judge.engines import BatchFn, Engine, LocalEngine
from judge.errors import DataError
from judge.progress import progress_bar


@dataclass(frozen=True)
class Kind:
    """How a baseline is fed: its field options, the keyword for its second texts, its batch size."""

    score_field: str
    field_options: tuple[str, ...]  # keyword options naming the item fields read, first one scored
    defaults: tuple[str, ...]  # their defaults
    texts_keyword: str | None  # keyword taking the second field's texts when data is a list of texts
    items_per_batch: int  # items per engine batch: enough to keep a model busy, small enough to spread


# Items per engine batch, per model family: a causal LM batch of 64 items is ~1-3 s of CPU for
# SmolLM2 (long enough to hide Ray's per-batch cost); sentence embeddings are ~50x cheaper per item.
KINDS: dict[str, Kind] = {
    "perplexity": Kind("perplexity", ("field",), ("output",), None, 64),
    "pmi": Kind("pmi", ("field", "source_field"), ("output", "input"), "sources", 64),
    "entailment": Kind("entailment", ("field", "premise_field"), ("output", "context"), "premises", 32),
    "similarity": Kind("similarity", ("field", "against_field"), ("output", "reference"), "against", 256),
}
_SUMMED = ("tokens", "seconds", "pairs", "truncated_sources", "truncated_items", "chunked_items")
_MEANS = {"mean_item_perplexity": "perplexity", "mean_pmi": "pmi", "mean_similarity": "similarity"}


def _module(name: str) -> Any:
    return importlib.import_module(f"judge.baselines.{name}")


def _function(name: str) -> Callable[..., BaselineResult]:
    return getattr(_module(name), name)


def _score_batch(name: str, kwargs: Mapping[str, Any], batch: list[tuple[Any, ...]]) -> list[tuple[dict, dict | None]]:
    """Score one batch of ``(id, text[, second text])``; the batch summary rides on its first record."""
    kind = KINDS[name]
    ids = [b[0] for b in batch]
    extra = {kind.texts_keyword: [b[2] for b in batch]} if kind.texts_keyword else {}
    res = _function(name)([b[1] for b in batch], ids=ids, **extra, **kwargs)
    return [(rec, res.summary if k == 0 else None) for k, rec in enumerate(res.records)]


def _batch_fn(name: str, kwargs: Mapping[str, Any]) -> BatchFn:
    """The per-worker batch function (module level, so the factory pickles to Ray workers)."""
    return functools.partial(_score_batch, name, dict(kwargs))


def _previous(out: str | Path | None, score_field: str) -> dict[str, dict[str, Any]]:
    """Records an interrupted run left in ``OUT.partial``, by id."""
    if out is None:
        return {}
    partial = Path(out).with_name(Path(out).name + ".partial")
    if not partial.is_file():
        return {}
    done: dict[str, dict[str, Any]] = {}
    for n, line in enumerate(partial.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            break  # the line being written when the run stopped
        if not isinstance(rec, dict) or "id" not in rec or score_field not in rec:
            raise DataError(
                f"line {n} is not a {score_field} record: this partial output is from another command; delete it",
                path=partial,
            )
        done[str(rec["id"])] = rec
    return done


def merge_summaries(
    name: str, summaries: Sequence[dict[str, Any]], records: Sequence[dict[str, Any]], texts: Sequence[str | None]
) -> dict[str, Any]:
    """One summary for the whole run from the batches' summaries and all records (resumed ones included)."""
    kind = KINDS[name]
    summary: dict[str, Any] = dict(summaries[0]) if summaries else {"baseline": name}
    scored = [r for r in records if r.get(kind.score_field) is not None]
    summary.update(items=len(records), scored=len(scored), unscored=len(records) - len(scored))
    for key in _SUMMED:
        if key in summary:
            summary[key] = sum(s.get(key) or 0 for s in summaries)
    if "seconds" in summary:
        summary["seconds"] = round(summary["seconds"], 3)
    if "tokens_per_s" in summary:
        t = summary["seconds"]
        summary["tokens_per_s"] = round(summary["tokens"] / t, 1) if t else None
    for key, fld in _MEANS.items():
        if key in summary:
            values = [r[fld] for r in scored]
            summary[key] = sum(values) / len(values) if values else None
    if name == "perplexity":
        summary.pop("mean_item_perplexity", None)
        for key in [k for k in summary if k.startswith("corpus_")]:
            del summary[key]
        summary.update(_corpus_perplexity(records, texts))
    return summary


def _corpus_perplexity(records: Sequence[dict[str, Any]], texts: Sequence[str | None]) -> dict[str, Any]:
    from judge.baselines.perplexity import _WORD, _figures

    lp = 0.0
    n_tok = n_bytes = n_words = 0
    ppls = []
    for rec, text in zip(records, texts, strict=True):
        if rec.get("perplexity") is None or text is None:
            continue
        lp -= rec["nll"] * rec["n_tokens"]
        n_tok += rec["n_tokens"]
        n_bytes += len(text.encode("utf-8"))
        n_words += len(_WORD.findall(text))
        ppls.append(rec["perplexity"])
    if not n_tok:
        return {}
    out: dict[str, Any] = {f"corpus_{k}": v for k, v in _figures(lp, n_tok, n_bytes, n_words).items()}
    out["mean_item_perplexity"] = sum(ppls) / len(ppls)
    return out


def run_baseline(
    name: str,
    data: Any,
    *,
    engine: Engine | None = None,
    mapping: Mapping[str, str] | None = None,
    ids: Sequence[str] | None = None,
    texts: Sequence[str | None] | None = None,
    out: str | Path | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    items_per_batch: int | None = None,
    progress: bool = False,
    **kwargs: Any,
) -> BaselineResult:
    """Run baseline ``name`` over ``data`` on ``engine`` (default: in-process), records in input order.

    Args:
        name: ``perplexity``, ``pmi``, ``entailment`` or ``similarity``.
        data: texts, records, a DataFrame or a data file, as the baseline function takes.
        mapping: field -> column renames, as ``--map``.
        ids: ids for a list of texts.
        texts: the second field's texts when ``data`` is a list of texts.
        out: JSONL file written as records arrive (through ``OUT.partial``, whose finished ids a
            rerun skips).
        on_record: called with each record as it arrives (e.g. to print it).
        items_per_batch: items per engine batch (default: tuned per baseline in :data:`KINDS`).
        progress: a progress bar on stderr over the items to score (:func:`judge.progress.progress_bar`).
        **kwargs: the baseline's own options (model, field names, device, batch_size ...).
    """
    from judge.io import JsonlAppender

    if name not in KINDS:
        raise DataError(f"unknown baseline '{name}' (baselines: {', '.join(KINDS)})")
    kind = KINDS[name]
    engine = engine or LocalEngine()
    fields = [str(kwargs.get(opt, default)) for opt, default in zip(kind.field_options, kind.defaults, strict=True)]
    given = {fields[1]: texts} if texts is not None and len(fields) > 1 else {}
    item_ids, cols = columns(data, fields, texts=given, mapping=mapping, ids=ids)
    rows = list(zip(item_ids, *(cols[f] for f in fields), strict=True))
    done = _previous(out, kind.score_field)
    todo = [row for row in rows if row[0] not in done]
    size = items_per_batch or kind.items_per_batch

    fresh: dict[str, dict[str, Any]] = {}
    summaries: list[dict[str, Any]] = []
    writer = JsonlAppender(out) if out is not None else None
    with writer or contextlib.nullcontext():
        results = iter(engine.map(functools.partial(_batch_fn, name, kwargs), todo, batch_size=size))
        with progress_bar(len(todo), name, progress) as bar:
            for row in rows:
                if row[0] in done:
                    rec = done[row[0]]
                else:
                    rec, summary = next(results)
                    if summary is not None:
                        summaries.append(summary)
                    fresh[row[0]] = rec
                    bar.update(1)
                if writer is not None:
                    writer.write(rec)
                if on_record is not None:
                    on_record(rec)
    records = [done.get(i) or fresh[i] for i in item_ids]
    summary = merge_summaries(name, summaries, records, cols[fields[0]])
    summary["engine"] = engine.name
    if done:
        summary["resumed"] = len(done)
    model = str(kwargs.get("model") or summary.get("model") or getattr(_module(name), "DEFAULT_MODEL", ""))
    return BaselineResult(name, model, kind.score_field, records, summary)
