"""Label probabilities from a local causal LM: exact log P(the answer is candidate | prompt).

The probability of every candidate answer (a score "1".."10", a pairwise label "A" / "B" / "tie") is
computed by teacher forcing its tokens after the prompt, not read from a top-k list; prompts sharing a
beginning run it once (:class:`~judge.local.kv.PrefixCache`) and their ends as one left-padded batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from judge.local.kv import PrefixCache, common_length, forward_on_prefix, length_batches, shared_prefix_groups
from judge.local.prompts import chat_ids, chat_text


def prompt_and_candidates(
    tok: Any, messages: list[dict[str, str]], candidates: tuple[str, ...]
) -> tuple[list[int], dict[str, list[int]]]:
    """The prompt's token ids and each candidate's, with the tokenisation boundary handled.

    After a chat prompt (which ends in a special token and a newline) a candidate is tokenised on its
    own. After a prefill the prompt ends in text ("Verdict: "), and a candidate may merge with its last
    tokens (" A" is one token): the prompt is then cut back to where every ``text + candidate``
    tokenises alike, and each candidate is the rest of its own tokenisation -- the canonical tokens.
    """
    if not messages or messages[-1]["role"] != "assistant":
        return chat_ids(tok, messages), {c: tok(c, add_special_tokens=False)["input_ids"] for c in candidates}
    text = chat_text(tok, messages)
    prompt = list(tok(text, add_special_tokens=False)["input_ids"])
    full = {c: list(tok(text + c, add_special_tokens=False)["input_ids"]) for c in candidates}
    k = min(common_length([prompt, f], len(prompt)) for f in full.values())
    return prompt[:k], {c: f[k:] for c, f in full.items()}


def candidate_logprobs(model: Any, tok: Any, prompt_ids: list[int], candidates: tuple[str, ...]) -> dict[str, float]:
    """Exact log P(the answer is candidate | prompt) for one prompt."""
    cand_ids = {c: tok(c, add_special_tokens=False)["input_ids"] for c in candidates}
    return candidate_logprobs_batch(model, tok, [(prompt_ids, cand_ids)], 0, None)[0]


def candidate_logprobs_batch(
    model: Any,
    tok: Any,
    encoded: list[tuple[list[int], dict[str, list[int]]]],
    n_prefix: int,
    kv: Any,
    batch_size: int = 64,
) -> list[dict[str, float]]:
    """Exact log P(the answer is candidate | prompt) for several prompts sharing their first ``n_prefix`` tokens.

    Each prompt's own end (after the shared prefix, whose KV ``kv`` is reused) runs once, left-padded
    in a batch with the others, and only the last positions' logits are computed. Its last logits
    answer every single-token candidate (digits 1-9, A, B on most tokenizers); a multi-token candidate
    ("10" as "1","0") adds one row holding the prompt's end and the candidate's tokens but the last.
    A candidate whose tokens begin a longer one ("1" in "10") must also *end* there: its probability
    is multiplied by P(the next token is not a digit), read from the longer candidate's row.
    """
    import torch

    rows: list[list[int]] = []
    index: list[tuple[int, str | None]] = []  # (prompt, multi-token candidate or None)
    for i, (ids, cand_ids) in enumerate(encoded):
        multi: list[str | None] = [c for c, t in cand_ids.items() if len(t) > 1]
        for cand in multi or [None]:
            rows.append(ids[n_prefix:] + (cand_ids[cand][:-1] if cand is not None else []))
            index.append((i, cand))
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    last: dict[int, Any] = {}  # prompt -> log-probabilities after its last token
    after: dict[
        tuple[int, str], Any
    ] = {}  # (prompt, candidate) -> log-probabilities after each of its tokens but the last
    for batch in length_batches([len(r) for r in rows], batch_size, 1 << 30):
        spans = [len(encoded[i][1][cand]) if cand is not None else 1 for i, cand in (index[r] for r in batch)]
        keep = max(spans)
        logits, _ = forward_on_prefix(
            model, kv, n_prefix, [rows[r] for r in batch], left_pad=True, keep=keep, pad_id=pad_id
        )
        logp = torch.log_softmax(logits, dim=-1)
        for j, (r, span) in enumerate(zip(batch, spans, strict=True)):
            i, cand = index[r]
            last[i] = logp[j, keep - span]
            if cand is not None:
                after[(i, cand)] = logp[j, keep - span + 1 :]
    digits = _digit_token_ids(tok)
    results = []
    for i, (_, cand_ids) in enumerate(encoded):
        out = {}
        for c, ids in cand_ids.items():
            out[c] = float(last[i][ids[0]]) + sum(float(after[(i, c)][j - 1, t]) for j, t in enumerate(ids) if j > 0)
        longer_cands = [c for c, t in cand_ids.items() if len(t) > 1]
        for c, ids in cand_ids.items():
            longer = next((d for d in longer_cands if d != c and cand_ids[d][: len(ids)] == ids), None)
            if longer is not None:  # c is a prefix of a longer score: the answer must stop after c
                p_digit = float(after[(i, longer)][len(ids) - 1].exp()[digits].sum())
                out[c] += math.log(max(1.0 - p_digit, 1e-30))
        results.append(out)
    return results


ASCII_DIGITS = frozenset("0123456789")  # not str.isdigit: byte-level alphabets hold "²", "³"
_DIGIT_IDS: dict[int, Any] = {}


def _digit_token_ids(tok: Any) -> Any:
    """Ids of the vocabulary tokens that start with a digit (after word-boundary markers), cached."""
    import torch

    key = id(tok)
    if key not in _DIGIT_IDS:
        ids = [i for t, i in tok.get_vocab().items() if t.lstrip("Ġ▁ ")[:1] in ASCII_DIGITS]
        _DIGIT_IDS[key] = torch.tensor(sorted(ids), dtype=torch.long)
    return _DIGIT_IDS[key]


def score_prompts(
    model: Any,
    tok: Any,
    prompts: Sequence[list[dict[str, str]]],
    candidates: tuple[str, ...],
    *,
    prefix_cache: PrefixCache | None = None,
    batch_tokens: int = 1024,
) -> list[tuple[list[int], dict[str, float]]]:
    """Each prompt's token ids and the log-probability of each candidate answer to it.

    With a ``prefix_cache``, prompts are grouped by the beginning they share (a group's new positions
    within ``batch_tokens``), each group's beginning starts from the kept caches, and only the ends are
    run; without one, all prompts run whole as one batch. The values are the same up to float rounding.
    """
    encoded = [prompt_and_candidates(tok, m, candidates) for m in prompts]
    scores: list[dict[str, float]] = [{} for _ in encoded]
    if prefix_cache is not None:
        groups = shared_prefix_groups([ids for ids, _ in encoded], prefix_cache.min_shared, batch_tokens)
    else:
        groups = [list(range(len(encoded)))]
    for group in groups:
        n, kv = prefix_cache.shared(model, [encoded[i][0] for i in group]) if prefix_cache is not None else (0, None)
        part = candidate_logprobs_batch(model, tok, [encoded[i] for i in group], n, kv)
        for i, s in zip(group, part, strict=True):
            scores[i] = s
    return [(ids, s) for (ids, _), s in zip(encoded, scores, strict=True)]
