"""Perplexity of each output under a causal LM: a fluency / naturalness baseline.

Each text is scored after the model's start token (BOS, as the Hugging Face ``evaluate`` metric
does), so its first token counts too. Texts longer than the model's window are scored with rolling
windows, every token once. Per item: mean negative log-likelihood per token, perplexity, bits per
UTF-8 byte and word-level perplexity; the summary has the same figures over the whole corpus.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from judge.baselines._data import BaselineResult, columns, empty_reason
from judge.local.lm import LogLik, loglikelihoods, model_max_length, start_token_id
from judge.progress import items_done

DEFAULT_MODEL = "smollm2"
_WORD = re.compile(r"\S+")


def _figures(logprob: float, n_tokens: int, n_bytes: int, n_words: int) -> dict[str, float]:
    nll = -logprob / n_tokens
    return {
        "nll": nll,
        "perplexity": math.exp(nll),
        "bits_per_byte": -logprob / math.log(2) / n_bytes,
        "word_perplexity": math.exp(-logprob / max(n_words, 1)),
    }


def perplexity(
    data: Any,
    *,
    model: str = DEFAULT_MODEL,
    field: str = "output",
    mapping: Mapping[str, str] | None = None,
    ids: Sequence[str] | None = None,
    device: str | None = None,
    batch_size: int = 16,
    max_length: int | None = None,
    stride: int | None = None,
) -> BaselineResult:
    """Score the perplexity of ``field`` of each item (or of each string of a list).

    Args:
        data: texts, records, a DataFrame or a data file.
        model: a causal LM: alias (``smollm2``), local folder or hub id.
        field: which item field to score.
        mapping: field -> column renames, as ``--map``.
        ids: ids for a list of texts (default: their positions).
        device: torch device; default cuda if available, else cpu.
        batch_size: windows per forward pass (fewer if the logits would not fit in 1 GiB).
        max_length: window size in tokens (default: the model's, at most 2048).
        stride: new tokens per rolling window (default: half the window), so later windows keep
            ``max_length - stride`` tokens of context.
    """
    from judge.local.models import load_causal_lm

    item_ids, cols = columns(data, [field], mapping=mapping, ids=ids)
    texts = cols[field]
    # packed: SmolLM2's 4-bit layers stay in their blocks (same values, about 420 MB less resident)
    lm, tokenizer = load_causal_lm(model, device, packed=True)
    max_len = model_max_length(lm, tokenizer, max_length)
    records, requests, slots = _requests(texts, item_ids, field, tokenizer)

    t0 = time.perf_counter()
    scored = loglikelihoods(
        lm, tokenizer, requests, max_length=max_len, stride=stride, batch_size=batch_size, on_done=items_done
    )
    seconds = time.perf_counter() - t0

    totals = _fill(records, texts, slots, scored)
    summary: dict[str, Any] = {
        "baseline": "perplexity",
        "model": model,
        "field": field,
        "items": len(records),
        "scored": len(slots),
        "unscored": len(records) - len(slots),
        "tokens": totals.tokens,
        "max_length": max_len,
        "seconds": round(seconds, 3),
        "tokens_per_s": round(totals.tokens / seconds, 1) if seconds > 0 else None,
    }
    if totals.tokens:
        figures = _figures(totals.logprob, totals.tokens, totals.bytes, totals.words)
        summary.update({f"corpus_{k}": v for k, v in figures.items()})
        ppls = [r["perplexity"] for r in records if r["perplexity"] is not None]
        summary["mean_item_perplexity"] = sum(ppls) / len(ppls)
    return BaselineResult("perplexity", model, "perplexity", records, summary)


def _requests(
    texts: Sequence[str | None], item_ids: Sequence[str], field: str, tokenizer: Any
) -> tuple[list[dict[str, Any]], list[tuple[list[int], int]], list[int]]:
    """One empty record per item; the log-likelihood request of each text with tokens (after the start
    token), and the index of its item. An item with nothing to score keeps its reason."""
    start = start_token_id(tokenizer)
    records: list[dict[str, Any]] = []
    requests: list[tuple[list[int], int]] = []
    slots: list[int] = []
    for i, text in enumerate(texts):
        rec: dict[str, Any] = {
            "id": item_ids[i],
            "perplexity": None,
            "nll": None,
            "bits_per_byte": None,
            "word_perplexity": None,
            "n_tokens": 0,
            "n_windows": 0,
        }
        records.append(rec)
        reason = empty_reason(text, field)
        if reason is None:
            assert text is not None
            ids_ = tokenizer(text, add_special_tokens=False)["input_ids"]
            if ids_:
                requests.append(([start, *ids_], 1))
                slots.append(i)
                continue
            reason = f"{field} has no tokens"
        rec["reason"] = reason
    return records, requests, slots


@dataclass
class _Totals:
    """The corpus: summed log-probability, tokens, UTF-8 bytes and words of the scored texts."""

    logprob: float = 0.0
    tokens: int = 0
    bytes: int = 0
    words: int = 0


def _fill(
    records: list[dict[str, Any]], texts: Sequence[str | None], slots: list[int], scored: list[LogLik]
) -> _Totals:
    """Write each scored text's figures into its record; return the corpus totals."""
    totals = _Totals()
    for i, ll in zip(slots, scored, strict=True):
        text = texts[i]
        assert text is not None
        n_bytes, n_words = len(text.encode("utf-8")), len(_WORD.findall(text))
        records[i].update(_figures(ll.logprob, ll.n_tokens, n_bytes, n_words))
        records[i].update(n_tokens=ll.n_tokens, n_windows=ll.n_windows)
        totals.logprob += ll.logprob
        totals.tokens += ll.n_tokens
        totals.bytes += n_bytes
        totals.words += n_words
    return totals
