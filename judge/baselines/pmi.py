"""Pointwise mutual information between an output and its source, from a causal LM.

``pmi = log p(output | source) - log p(output)`` per output token: how much more likely the source
makes the output. Like BARTScore's faithfulness direction (source -> output), it rewards outputs
the source explains and discounts outputs that are merely fluent. Both terms score the same output
tokens (the output is tokenized once); a source too long for the model's window keeps its end, and
the number of source tokens left out is reported as ``source_tokens_dropped``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from judge.baselines._data import BaselineResult, columns, empty_reason
from judge.errors import ConfigError
from judge.local.lm import LogLik, loglikelihoods, model_max_length, start_token_id

DEFAULT_MODEL = "smollm2"
DEFAULT_TEMPLATE = "{source}\n"


def pmi(
    data: Any,
    *,
    sources: Sequence[str | None] | None = None,
    model: str = DEFAULT_MODEL,
    source_field: str = "input",
    field: str = "output",
    template: str = DEFAULT_TEMPLATE,
    mapping: Mapping[str, str] | None = None,
    ids: Sequence[str] | None = None,
    device: str | None = None,
    batch_size: int = 16,
    max_length: int | None = None,
    stride: int | None = None,
    share_prefixes: bool = True,
) -> BaselineResult:
    """Score ``log p(output | source) - log p(output)`` per output token for each item.

    Args:
        data: outputs (with ``sources``), records, a DataFrame or a data file.
        sources: source texts when ``data`` is a list of outputs.
        model: a causal LM: alias (``smollm2``), local folder or hub id.
        source_field: the item field that conditions the output (``input``, ``context``, ``reference``).
        field: the item field scored.
        template: text put before the output, with ``{source}``; the output follows it directly.
        mapping, ids, device, batch_size, max_length, stride: as for :func:`~judge.baselines.perplexity`.
        share_prefixes: run each source once and reuse its KV cache for all of its outputs (same values).
    """
    from judge.local.models import load_causal_lm

    if "{source}" not in template:
        raise ConfigError("--template must contain {source}")
    item_ids, cols = columns(data, [field, source_field], texts={source_field: sources}, mapping=mapping, ids=ids)
    lm, tokenizer = load_causal_lm(model, device)
    max_len = model_max_length(lm, tokenizer, max_length)
    records, requests, slots = _requests(
        cols[field], cols[source_field], item_ids, (field, source_field), template, tokenizer
    )

    t0 = time.perf_counter()
    scored = loglikelihoods(
        lm, tokenizer, requests, max_length=max_len, stride=stride, batch_size=batch_size, share_prefixes=share_prefixes
    )
    seconds = time.perf_counter() - t0
    _fill(records, slots, scored)
    values = [r["pmi"] for r in records if r["pmi"] is not None]
    summary: dict[str, Any] = {
        "baseline": "pmi",
        "model": model,
        "field": field,
        "source_field": source_field,
        "items": len(records),
        "scored": len(slots),
        "unscored": len(records) - len(slots),
        "truncated_sources": sum(1 for r in records if r["source_tokens_dropped"]),
        "max_length": max_len,
        "seconds": round(seconds, 3),
        "mean_pmi": sum(values) / len(values) if values else None,
    }
    return BaselineResult("pmi", model, "pmi", records, summary)


def _requests(
    outputs: Sequence[str | None],
    srcs: Sequence[str | None],
    item_ids: Sequence[str],
    fields: tuple[str, str],
    template: str,
    tokenizer: Any,
) -> tuple[list[dict[str, Any]], list[tuple[list[int], int]], list[int]]:
    """One empty record per item; two log-likelihood requests per item with output tokens -- the output
    after the start token and the templated source, then after the start token alone -- and the index of
    its item. An item with nothing to score keeps its reason. ``fields``: the output's and the source's."""
    field, source_field = fields
    start = start_token_id(tokenizer)
    records: list[dict[str, Any]] = []
    requests: list[tuple[list[int], int]] = []
    slots: list[int] = []
    for i, (out, src) in enumerate(zip(outputs, srcs, strict=True)):
        rec: dict[str, Any] = {
            "id": item_ids[i],
            "pmi": None,
            "pmi_total": None,
            "logp_given_source": None,
            "logp": None,
            "n_tokens": 0,
            "source_tokens_dropped": 0,
        }
        records.append(rec)
        reason = empty_reason(out, field) or empty_reason(src, source_field)
        if reason is None:
            out_ids = tokenizer(out, add_special_tokens=False)["input_ids"]
            prefix = tokenizer(template.format(source=src), add_special_tokens=False)["input_ids"]
            if out_ids:
                cond_ids = [start, *prefix, *out_ids]
                requests.append((cond_ids, len(cond_ids) - len(out_ids)))
                requests.append(([start, *out_ids], 1))
                slots.append(i)
                continue
            reason = f"{field} has no tokens"
        rec["reason"] = reason
    return records, requests, slots


def _fill(records: list[dict[str, Any]], slots: list[int], scored: list[LogLik]) -> None:
    """Write each scored item's PMI figures into its record, from its two log-likelihoods."""
    for k, i in enumerate(slots):
        cond, uncond = scored[2 * k], scored[2 * k + 1]
        n = uncond.n_tokens
        records[i].update(
            pmi=(cond.logprob - uncond.logprob) / n,
            pmi_total=cond.logprob - uncond.logprob,
            logp_given_source=cond.logprob / n,
            logp=uncond.logprob / n,
            n_tokens=n,
            source_tokens_dropped=cond.context_dropped,
        )
