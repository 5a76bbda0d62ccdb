"""Entailment of an output by its premise (context, reference or input), with any NLI model.

SummaC-ZS style: the output (hypothesis) is split into sentences and the premise into chunks that
fit the model beside a sentence; every (chunk, sentence) pair is scored, each sentence keeps its
best-supporting chunk, and the item gets the mean and the minimum over sentences. Label indices
come from the model's ``id2label``.

Per item: ``entailment`` (mean over sentences of the max entailment probability), ``entailment_min``,
``contradiction`` (mean over sentences of the max contradiction probability), ``summac_zs`` (mean over
sentences of max(entailment - contradiction)), ``n_sentences``, ``n_chunks``.

Without an NLI model -- the default, since no package this machine can install ships NLI weights
(see VALIDITY.md) -- a causal LM (``smollm2``) answers zero-shot: for each (chunk, sentence) pair,
"Does the premise support the hypothesis? yes or no", read as P(yes) / (P(yes) + P(no)) from the
next-token distribution. "no" covers neutral and contradiction alike, so ``contradiction`` is null
and ``summac_zs`` uses P(no) in its place.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from judge.baselines._data import BaselineResult, columns, empty_reason
from judge.baselines._text import n_tokens, pack, sentences, split_to_fit
from judge.errors import ConfigError

MAX_LENGTH_CAP = 512
DEFAULT_MODEL = "smollm2"
ZERO_SHOT_MAX_LENGTH = 1024  # tokens per zero-shot prompt: room for a whole CNN/DM article, CPU-affordable
ZERO_SHOT_PROMPT = (
    "Premise: {premise}\n\nHypothesis: {hypothesis}\n\n"
    "Does the premise support the hypothesis? Answer with one word, yes or no."
)


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
    model: str = DEFAULT_MODEL,
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
            (e.g. ``microsoft/deberta-large-mnli``, ``cross-encoder/nli-deberta-v3-base``); or a causal
            LM (alias ``smollm2``, the default, or a folder), asked zero-shot.
        premises: premise texts when ``data`` is a list of outputs.
        premise_field: item field holding the premise (``context``, ``reference`` or ``input``).
        field: item field holding the hypothesis.
        max_length: tokens per (premise chunk, sentence) pair (default: the model's, at most 512).
    """
    import torch

    item_ids, cols = columns(data, [field, premise_field], texts={premise_field: premises}, mapping=mapping, ids=ids)
    scorer = _load_scorer(model, device, max_length)
    records, pairs, layout, owners = _pairs(cols[field], cols[premise_field], item_ids, (field, premise_field), scorer)
    probs, truncated, ent_i, con_i = scorer.probabilities(pairs, batch_size, torch)
    _fill(records, layout, probs, ent_i, con_i, scorer.zero_shot)
    for k in truncated:
        records[owners[k]]["truncated"] = True  # a chunk lost a few tokens to tokenization rounding: said, not hidden
    summary = {
        "baseline": "entailment",
        "model": model,
        "resolved_model": scorer.path,
        "method": "zero-shot causal LM: P(yes) / (P(yes) + P(no))" if scorer.zero_shot else "NLI classifier",
        "labels": scorer.labels,
        "items": len(records),
        "scored": len(layout),
        "unscored": len(records) - len(layout),
        "pairs": len(pairs),
        "max_length": scorer.max_len,
        "truncated_items": sum(1 for r in records if r.get("truncated")),
    }
    return BaselineResult("entailment", model, "entailment", records, summary)


@dataclass
class _Scorer:
    """The model that scores (premise chunk, hypothesis sentence) pairs, and the sizes its pairs must keep."""

    path: str  # the resolved model
    model: Any  # a causal LM (asked zero-shot) or an NLI classifier
    tokenizer: Any
    zero_shot: bool
    labels: dict[str, int | None]
    max_len: int  # tokens per pair
    special: int  # tokens of a pair that are neither premise nor hypothesis (the prompt, special tokens)

    def probabilities(
        self, pairs: list[tuple[str, str]], batch_size: int, torch: Any
    ) -> tuple[Any, set[int], int, int | None]:
        """The class probabilities of every pair, the pairs truncated, and the columns of entailment and
        contradiction (zero-shot: P(yes), P(no) -- "no" stands in for contradiction in summac_zs)."""
        if self.zero_shot:
            return _zero_shot(self.model, self.tokenizer, pairs, self.max_len, batch_size), set(), 0, 1
        probs, truncated = _classify(self.model, self.tokenizer, pairs, self.max_len, batch_size, torch)
        entail = self.labels["entailment"]
        assert entail is not None  # label_indices raises for a model without an entailment label
        return probs, truncated, entail, self.labels["contradiction"]


def _load_scorer(model: str, device: str | None, max_length: int | None) -> _Scorer:
    """Load ``model``: a causal LM is asked zero-shot, anything else must be an NLI classifier."""
    from judge.local.lm import model_max_length
    from judge.local.models import is_causal_lm, load_causal_lm, load_sequence_classifier, resolve_model

    path = resolve_model(model)
    if is_causal_lm(path):
        lm, tokenizer = load_causal_lm(model, device)
        labels: dict[str, int | None] = {"entailment": 0, "neutral": None, "contradiction": None}
        max_len = min(max_length or ZERO_SHOT_MAX_LENGTH, model_max_length(lm, tokenizer, None))
        special = len(_zero_shot_ids(tokenizer, "", ""))  # the prompt's own tokens
        return _Scorer(path, lm, tokenizer, True, labels, max_len, special)
    clf, tokenizer = load_sequence_classifier(model, device)
    labels = label_indices(clf.config.id2label, path)
    max_len = _max_length(clf, tokenizer, max_length)
    return _Scorer(path, clf, tokenizer, False, labels, max_len, tokenizer.num_special_tokens_to_add(pair=True))


def _pairs(
    hyps: Sequence[str | None],
    prems: Sequence[str | None],
    item_ids: Sequence[str],
    fields: tuple[str, str],
    scorer: _Scorer,
) -> tuple[list[dict[str, Any]], list[tuple[str, str]], list[tuple[int, int, int]], list[int]]:
    """One empty record per item, and the (premise chunk, sentence) pairs to score: every chunk against
    every sentence, sentence-major; the layout ``(record, n_sentences, n_chunks)`` of each scored item and
    the record of each pair. An item with nothing to score keeps its reason. ``fields``: the hypothesis's
    and the premise's."""
    field, premise_field = fields
    tokenizer, max_len, special = scorer.tokenizer, scorer.max_len, scorer.special
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
    return records, pairs, layout, owners


def _fill(
    records: list[dict[str, Any]],
    layout: list[tuple[int, int, int]],
    probs: Any,
    ent_i: int,
    con_i: int | None,
    zero_shot: bool,
) -> None:
    """Each scored item's figures from its pairs' probabilities: per sentence its best-supporting chunk."""
    pos = 0
    for i, n_s, n_c in layout:
        p = probs[pos : pos + n_s * n_c].reshape(n_s, n_c, -1)
        pos += n_s * n_c
        ent = p[:, :, ent_i].max(dim=1).values
        rec = records[i]
        rec.update(entailment=float(ent.mean()), entailment_min=float(ent.min()), n_sentences=n_s, n_chunks=n_c)
        if con_i is not None:
            con = p[:, :, con_i]
            rec["contradiction"] = None if zero_shot else float(con.max(dim=1).values.mean())
            rec["summac_zs"] = float((p[:, :, ent_i] - con).max(dim=1).values.mean())


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


def _zero_shot_ids(tokenizer: Any, premise: str, hypothesis: str) -> list[int]:
    """The chat prompt asking whether ``premise`` supports ``hypothesis``, ending where the answer starts."""
    content = ZERO_SHOT_PROMPT.format(premise=premise, hypothesis=hypothesis)
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=True
        )
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):  # BatchEncoding in newer transformers
            ids = ids["input_ids"]
        return list(ids)
    return list(tokenizer(content + "\nAnswer:", add_special_tokens=False)["input_ids"])


ANSWERS = {"yes": ("yes", "Yes"), "no": ("no", "No")}


def _single_token_answers(tokenizer: Any) -> dict[str, list[int]] | None:
    """Token ids of each answer's spellings when every spelling is one token (the batched fast path), else None."""
    found: dict[str, list[int]] = {}
    for answer, spellings in ANSWERS.items():
        ids = [tokenizer(w, add_special_tokens=False)["input_ids"] for w in spellings]
        unk = tokenizer.unk_token_id
        if unk is not None and any(unk in i for i in ids):
            raise ConfigError(f"the model's vocabulary cannot spell '{answer}': it cannot answer zero-shot yes/no")
        if any(len(i) != 1 for i in ids):
            return None
        found[answer] = sorted({int(i[0]) for i in ids})
    return found


def _zero_shot(lm: Any, tokenizer: Any, pairs: list[tuple[str, str]], max_len: int, batch_size: int) -> Any:
    """[P(yes), P(no)] per (premise, hypothesis) pair, each summed over its spellings, renormalised over the two.

    One batched forward pass per ``batch_size`` pairs when the answers are single tokens (SmolLM2);
    otherwise each spelling's exact multi-token probability, pair by pair.
    """
    import torch

    from judge.local.kv import shared_prefix_batches
    from judge.local.labels import candidate_logprobs

    single = _single_token_answers(tokenizer)
    rows = [_zero_shot_ids(tokenizer, p, h)[-max_len:] for p, h in pairs]
    out = torch.zeros((len(pairs), 2))
    device = next(lm.parameters()).device
    if single is None:
        spellings = tuple(w for ws in ANSWERS.values() for w in ws)
        with torch.inference_mode():
            for k, row in enumerate(rows):
                lp = candidate_logprobs(lm, tokenizer, row, spellings)
                mass = torch.tensor([sum(math.exp(lp[w]) for w in ANSWERS[a]) for a in ANSWERS], dtype=torch.float64)
                out[k] = (mass / mass.sum().clamp(min=1e-300)).float()
        return out

    def put(idx: list[int], logits: Any) -> None:
        p = torch.softmax(logits.float(), dim=-1)
        p_yes, p_no = p[:, single["yes"]].sum(-1), p[:, single["no"]].sum(-1)
        total = (p_yes + p_no).clamp(min=1e-30)
        out[torch.tensor(idx)] = torch.stack([p_yes / total, p_no / total], dim=-1).cpu()

    # the sentences asked against one premise chunk share the prompt up to the chunk's end: run it once
    by_premise: dict[str, list[int]] = {}
    for k, (premise, _) in enumerate(pairs):
        by_premise.setdefault(premise, []).append(k)
    alone: list[int] = []
    for members in by_premise.values():
        if len(members) < 2:
            alone.extend(members)
            continue
        n = min(len(rows[k]) for k in members) - 1  # every continuation keeps at least one token
        first = rows[members[0]]
        n = next((j for j in range(n) if any(rows[k][j] != first[j] for k in members)), n)
        if n < 1:
            alone.extend(members)
            continue
        conts = [rows[k][n:] for k in members]
        for batch, _, logits, _ in shared_prefix_batches(lm, first[:n], conts, batch_size):
            last = torch.tensor([len(conts[c]) - 1 for c in batch], device=logits.device)
            put([members[c] for c in batch], logits[torch.arange(len(batch), device=logits.device), last])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(alone, key=lambda k: len(rows[k]), reverse=True)
    # only the answer position's logits: a whole (batch, length, vocab) tensor would take gigabytes
    keep = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(lm.forward).parameters else {}
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            width = max(len(rows[k]) for k in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            attention = torch.zeros((len(idx), width), dtype=torch.long)
            for r, k in enumerate(idx):  # left padding: every row's answer position is the last one
                ids[r, width - len(rows[k]) :] = torch.tensor(rows[k], dtype=torch.long)
                attention[r, width - len(rows[k]) :] = 1
            positions = (attention.cumsum(-1) - 1).clamp(min=0)
            logits = (
                lm(
                    input_ids=ids.to(device),
                    attention_mask=attention.to(device),
                    position_ids=positions.to(device),
                    **keep,
                )
                .logits[:, -1]
                .float()
            )
            put(idx, logits)
    return out
