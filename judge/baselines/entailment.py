"""Entailment of an output by its premise (context, reference or input), with any NLI model.

SummaC-ZS style: the output (hypothesis) is split into sentences and the premise into chunks that
fit the model beside a sentence; every (chunk, sentence) pair is scored, each sentence keeps its
best-supporting chunk, and the item gets the mean and the minimum over sentences. Label indices
come from the model's ``id2label``.

Per item: ``entailment`` (mean over sentences of the max entailment probability), ``entailment_min``,
``contradiction`` (mean over sentences of the max contradiction probability), ``summac_zs`` (mean over
sentences of max(entailment - contradiction)), ``n_sentences``, ``n_chunks``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from judge.baselines._data import BaselineResult, columns, empty_reason
from judge.baselines._text import n_tokens, pack, sentences, split_to_fit
from judge.errors import ConfigError

MAX_LENGTH_CAP = 512


def label_indices(id2label: Mapping[int, str], path: str) -> dict[str, int | None]:
    """Indices of the entailment / neutral / contradiction labels; error if there is no entailment label."""
    found: dict[str, int | None] = {"entailment": None, "neutral": None, "contradiction": None}
    for idx, label in id2label.items():
        name = str(label).lower()
        if name.startswith("not") or name.startswith("non"):
            continue  # "not_entailment" is not entailment
        for key, stem in (("entailment", "entail"), ("neutral", "neutral"), ("contradiction", "contradict")):
            if stem in name:
                found[key] = int(idx)
    if found["entailment"] is None:
        labels = ", ".join(f"{k}: {v}" for k, v in sorted(id2label.items()))
        raise ConfigError(f"model {path} has no entailment label in id2label ({labels}): it is not an NLI model")
    return found


def entailment(
    data: Any,
    *,
    model: str,
    premises: Sequence[str | None] | None = None,
    premise_field: str = "context",
    field: str = "output",
    mapping: Mapping[str, str] | None = None,
    ids: Sequence[str] | None = None,
    device: str | None = None,
    batch_size: int = 32,
    max_length: int | None = None,
) -> BaselineResult:
    """Score how well each item's premise entails its output, sentence by sentence.

    Args:
        data: outputs (with ``premises``), records, a DataFrame or a data file.
        model: an NLI sequence-classification model: local folder or hub id
            (e.g. ``microsoft/deberta-large-mnli``, ``cross-encoder/nli-deberta-v3-base``).
        premises: premise texts when ``data`` is a list of outputs.
        premise_field: item field holding the premise (``context``, ``reference`` or ``input``).
        field: item field holding the hypothesis.
        max_length: tokens per (premise chunk, sentence) pair (default: the model's, at most 512).
    """
    import torch

    from judge.localmodels import load_sequence_classifier, resolve_model

    item_ids, cols = columns(data, [field, premise_field], texts={premise_field: premises}, mapping=mapping, ids=ids)
    hyps, prems = cols[field], cols[premise_field]
    clf, tokenizer = load_sequence_classifier(model, device)
    labels = label_indices(clf.config.id2label, resolve_model(model))
    max_len = _max_length(clf, tokenizer, max_length)
    special = tokenizer.num_special_tokens_to_add(pair=True)
    sent_budget = max(8, (max_len - special) // 4)  # a hypothesis sentence longer than this is split

    records: list[dict[str, Any]] = []
    pairs: list[tuple[str, str]] = []
    layout: list[tuple[int, int, int]] = []  # (record, n_sentences, n_chunks), pairs in sentence-major order
    owners: list[int] = []  # record of each pair
    for i, (hyp, prem) in enumerate(zip(hyps, prems, strict=True)):
        rec: dict[str, Any] = {
            "id": item_ids[i],
            "entailment": None,
            "entailment_min": None,
            "contradiction": None,
            "summac_zs": None,
            "n_sentences": 0,
            "n_chunks": 0,
        }
        records.append(rec)
        reason = empty_reason(hyp, field) or empty_reason(prem, premise_field)
        if reason is not None:
            rec["reason"] = reason
            continue
        assert hyp is not None and prem is not None
        sents = [p for s in sentences(hyp) for p in split_to_fit(tokenizer, s, sent_budget)]
        longest = max(n_tokens(tokenizer, s) for s in sents)
        chunks = pack(tokenizer, sentences(prem), max(8, max_len - special - longest - 2))
        pairs.extend((c, s) for s in sents for c in chunks)
        owners.extend([i] * (len(sents) * len(chunks)))
        layout.append((i, len(sents), len(chunks)))

    probs, truncated = _classify(clf, tokenizer, pairs, max_len, batch_size, torch)
    ent_i, con_i = labels["entailment"], labels["contradiction"]
    pos = 0
    for i, n_s, n_c in layout:
        p = probs[pos : pos + n_s * n_c].reshape(n_s, n_c, -1)
        pos += n_s * n_c
        ent = p[:, :, ent_i].max(dim=1).values
        rec = records[i]
        rec.update(entailment=float(ent.mean()), entailment_min=float(ent.min()), n_sentences=n_s, n_chunks=n_c)
        if con_i is not None:
            con = p[:, :, con_i]
            rec["contradiction"] = float(con.max(dim=1).values.mean())
            rec["summac_zs"] = float((p[:, :, ent_i] - con).max(dim=1).values.mean())
    for k in truncated:
        records[owners[k]]["truncated"] = True  # a chunk lost a few tokens to tokenization rounding: said, not hidden
    summary = {
        "baseline": "entailment",
        "model": model,
        "labels": labels,
        "items": len(records),
        "scored": len(layout),
        "unscored": len(records) - len(layout),
        "pairs": len(pairs),
        "max_length": max_len,
        "truncated_items": sum(1 for r in records if r.get("truncated")),
    }
    return BaselineResult("entailment", model, "entailment", records, summary)


def _max_length(clf: Any, tokenizer: Any, max_length: int | None) -> int:
    limit = getattr(clf.config, "max_position_embeddings", None) or MAX_LENGTH_CAP
    # RoBERTa-style models reserve 2 positions for the padding offset
    if getattr(clf.config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        limit -= 2
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_limit, int) and 0 < tok_limit < limit:
        limit = tok_limit
    if max_length is not None:
        if max_length > limit:
            raise ConfigError(f"--max-length {max_length} exceeds the model's {limit} positions")
        return max_length
    return min(limit, MAX_LENGTH_CAP)


def _classify(
    clf: Any, tokenizer: Any, pairs: list[tuple[str, str]], max_len: int, batch_size: int, torch: Any
) -> tuple[Any, set[int]]:
    """Class probabilities for every (premise, hypothesis) pair, batched by length; and the pairs truncated."""
    n_labels = int(clf.config.num_labels)
    out = torch.zeros((len(pairs), n_labels))
    truncated: set[int] = set()
    order = sorted(range(len(pairs)), key=lambda k: len(pairs[k][0]) + len(pairs[k][1]))
    device = next(clf.parameters()).device
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            lengths = tokenizer([pairs[k][0] for k in idx], [pairs[k][1] for k in idx])["input_ids"]
            truncated.update(k for k, ids in zip(idx, lengths, strict=True) if len(ids) > max_len)
            enc = tokenizer(
                [pairs[k][0] for k in idx],
                [pairs[k][1] for k in idx],
                padding=True,
                truncation="only_first",  # chunks are sized to fit; this only guards rounding
                max_length=max_len,
                return_tensors="pt",
            )
            logits = clf(**{k: v.to(device) for k, v in enc.items()}).logits.float()
            out[torch.tensor(idx)] = torch.softmax(logits, dim=-1).cpu()
    return out, truncated
