"""Cosine similarity of sentence embeddings between an output and its input or reference.

Default model: all-MiniLM-L6-v2, shipped offline (``minilm``); any sentence-transformers folder
works. A text longer than the model's ``max_seq_length`` is cut into consecutive pieces that fit,
and its embedding is the token-weighted mean of the pieces' embeddings (``n_chunks`` says so), so no
part of it is silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from judge.baselines._data import BaselineResult, columns, empty_reason
from judge.baselines._text import n_tokens, split_to_fit

DEFAULT_MODEL = "minilm"


def similarity(
    data: Any,
    *,
    against: Sequence[str | None] | None = None,
    model: str = DEFAULT_MODEL,
    against_field: str = "reference",
    field: str = "output",
    mapping: Mapping[str, str] | None = None,
    ids: Sequence[str] | None = None,
    device: str | None = None,
    batch_size: int = 64,
) -> BaselineResult:
    """Score the cosine similarity between each item's ``field`` and its ``against_field``.

    Args:
        data: outputs (with ``against``), records, a DataFrame or a data file.
        against: texts to compare with when ``data`` is a list of outputs.
        model: a sentence-transformers model: alias (``minilm``), local folder or hub id.
        against_field: ``reference`` or ``input`` (or ``context``).
    """
    import numpy as np

    from judge.local.models import load_sentence_transformer

    item_ids, cols = columns(data, [field, against_field], texts={against_field: against}, mapping=mapping, ids=ids)
    outs, refs = cols[field], cols[against_field]
    st = load_sentence_transformer(model, device)
    tokenizer = st.tokenizer
    budget = int(st.max_seq_length or 256) - tokenizer.num_special_tokens_to_add(pair=False)

    records: list[dict[str, Any]] = []
    pieces: list[str] = []
    weights: list[int] = []
    spans: dict[tuple[int, str], tuple[int, int]] = {}  # (record, side) -> piece range
    for i, (out, ref) in enumerate(zip(outs, refs, strict=True)):
        rec: dict[str, Any] = {"id": item_ids[i], "similarity": None, "n_chunks": 0}
        records.append(rec)
        reason = empty_reason(out, field) or empty_reason(ref, against_field)
        if reason is not None:
            rec["reason"] = reason
            continue
        for side, text in (("a", out), ("b", ref)):
            assert text is not None
            parts = split_to_fit(tokenizer, text, budget)
            spans[(i, side)] = (len(pieces), len(pieces) + len(parts))
            pieces.extend(parts)
            weights.extend(max(1, n_tokens(tokenizer, p)) for p in parts)
            rec["n_chunks"] += len(parts)

    emb = np.zeros((0, 1), dtype=np.float32)
    if pieces:
        emb = st.encode(
            pieces, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
        )
    w = np.asarray(weights, dtype=np.float64)

    def embed(i: int, side: str) -> Any:
        a, b = spans[(i, side)]
        v = (emb[a:b] * w[a:b, None]).sum(axis=0)
        return v / np.linalg.norm(v)

    scored = 0
    for i, rec in enumerate(records):
        if (i, "a") in spans:
            rec["similarity"] = float(np.dot(embed(i, "a"), embed(i, "b")))
            scored += 1
    values = [r["similarity"] for r in records if r["similarity"] is not None]
    summary = {
        "baseline": "similarity",
        "model": model,
        "field": field,
        "against_field": against_field,
        "items": len(records),
        "scored": scored,
        "unscored": len(records) - scored,
        "chunked_items": sum(1 for r in records if r["n_chunks"] > 2),
        "mean_similarity": sum(values) / len(values) if values else None,
    }
    return BaselineResult("similarity", model, "similarity", records, summary)
