"""Log-likelihood of token sequences under a causal LM: rolling windows, length-sorted batches.

Shared by perplexity, PMI and a model's own metrics (:mod:`judge.metrics.modelown`), with the
requests they ask (texts, answers to prompts, multiple-choice options). A request is a token
sequence and the index of its first scored token; every scored token is scored exactly once, with
as much preceding context as fits in the model's window (lm-evaluation-harness style rolling
windows with a stride), never truncated.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from judge.errors import ConfigError
from judge.local.kv import (
    LOGITS_BUDGET,
    LSE_CHUNK,
    cache_tensors,
    can_pack,
    continue_batches,
    length_batches,
    pack_groups,
    packed_logits,
    packing_pays,
    run_prefix,
    vocab_size,
)
from judge.local.prompts import end_of_turn, prompt_ids

DEFAULT_MAX_LENGTH_CAP = 2048  # long windows cost quadratic attention on CPU; --max-length raises it


@dataclass
class LogLik:
    """Sum of log-probabilities (nats) of a sequence's scored tokens, and how they were computed."""

    logprob: float = 0.0
    n_tokens: int = 0
    n_windows: int = 0
    context_dropped: int = 0  # tokens before the first scored token that did not fit in its window


@dataclass
class Window:
    request: int
    ids: list[int]
    n_scored: int  # the last n_scored tokens of ids are scored


def model_max_length(model: Any, tokenizer: Any, max_length: int | None) -> int:
    """The window size: ``max_length`` if given, else the model's positions capped at 2048."""
    limit = None
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(model.config, attr, None)
        if isinstance(value, int) and value > 0:
            limit = value
            break
    if max_length is not None:
        if max_length < 2:
            raise ConfigError(f"--max-length must be at least 2, got {max_length}")
        if limit is not None and max_length > limit:
            raise ConfigError(f"--max-length {max_length} exceeds the model's {limit} positions")
        return max_length
    return min(limit or DEFAULT_MAX_LENGTH_CAP, DEFAULT_MAX_LENGTH_CAP)


def start_token_id(tokenizer: Any) -> int:
    """The token put before a text so its first token is scored too (BOS, else EOS, as HF evaluate does)."""
    for tok_id in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if tok_id is not None:
            return int(tok_id)
    raise ConfigError("the tokenizer has neither a BOS nor an EOS token to start texts with")


def plan_windows(n: int, first: int, max_len: int, stride: int) -> list[tuple[int, int]]:
    """Windows ``(start, end)`` over a sequence of ``n`` tokens scoring tokens ``first..n-1`` once each.

    A window scores the tokens from where the previous one stopped to its ``end`` and sees up to
    ``max_len`` tokens; after the first window each scored token has at least ``max_len - stride``
    tokens of context.
    """
    if not 1 <= stride < max_len:
        raise ConfigError(f"stride must be between 1 and max length - 1 ({max_len - 1}), got {stride}")
    windows = []
    p = max(first, 1)
    while p < n:
        end = min(n, max(p + stride, max_len))
        start = max(0, end - max_len)
        windows.append((start, end))
        p = end
    return windows


def loglikelihoods(
    model: Any,
    tokenizer: Any,
    requests: Sequence[tuple[list[int], int]],
    *,
    max_length: int,
    stride: int | None = None,
    batch_size: int = 16,
    share_prefixes: bool = True,
    on_done: Callable[[int], None] | None = None,
) -> list[LogLik]:
    """Score ``(token_ids, first_scored)`` requests: summed log-probability of the tokens from ``first_scored`` on.

    With ``share_prefixes``, requests whose unscored prefixes are equal (the many outputs of one
    source) and that fit in one window run that prefix once and reuse its KV cache; the values equal
    the unshared computation up to float rounding. ``on_done(n)`` hears, batch by batch, how many more
    requests are complete (a progress bar).
    """
    stride = stride if stride is not None else max_length // 2
    results = [LogLik() for _ in requests]
    rest: Sequence[int] = range(len(requests))
    if share_prefixes:
        shared = _score_shared_prefixes(model, requests, max_length, batch_size, results, on_done)
        rest = [r for r in range(len(requests)) if r not in shared]
    windows: list[Window] = []
    for r in rest:
        ids, first = requests[r]
        plan = plan_windows(len(ids), first, max_length, stride)
        prev_end = max(first, 1)
        for k, (start, end) in enumerate(plan):
            windows.append(Window(r, ids[start:end], end - prev_end))
            if k == 0:
                results[r].context_dropped = start
            prev_end = end
        results[r].n_windows = len(plan)
    _score_windows(model, tokenizer, windows, results, batch_size, on_done)
    return results


def _score_shared_prefixes(
    model: Any,
    requests: Sequence[tuple[list[int], int]],
    max_length: int,
    batch_size: int,
    results: list[LogLik],
    on_done: Callable[[int], None] | None,
) -> set[int]:
    """Score the requests that share their unscored prefix with another one (the prefix runs once); returns
    which requests that were."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for r, (ids, first) in enumerate(requests):
        if 1 < first < len(ids) <= max_length:
            groups.setdefault(tuple(ids[:first]), []).append(r)
    shared = {prefix: members for prefix, members in groups.items() if len(members) > 1}
    for prefix, members in shared.items():
        conts = [requests[r][0][len(prefix) :] for r in members]
        for r, lp in zip(members, _shared_prefix_logprobs(model, list(prefix), conts, batch_size), strict=True):
            results[r] = LogLik(logprob=lp, n_tokens=len(requests[r][0]) - len(prefix), n_windows=1)
        if on_done is not None:
            on_done(len(members))
    return {r for members in shared.values() for r in members}


def _score_windows(
    model: Any,
    tokenizer: Any,
    windows: list[Window],
    results: list[LogLik],
    batch_size: int,
    on_done: Callable[[int], None] | None,
) -> None:
    """Add each window's log-likelihood to its request's result, in length-sorted batches."""
    import torch

    # longest first: the first batch shows at once whether memory suffices
    windows = sorted(windows, key=lambda w: len(w.ids), reverse=True)
    left = [0] * len(results)  # windows still to score, per request
    for w in windows:
        left[w.request] += 1
    # rows of logits a batch may hold (with the head run in pieces, bigger batches were no faster on CPU and
    # took more memory: bench/perplexity.py, examples/finetune)
    positions = LOGITS_BUDGET // vocab_size(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    keep_arg = "logits_to_keep" in inspect.signature(model.forward).parameters
    with torch.inference_mode():
        i = 0
        while i < len(windows):
            batch = [windows[i]]
            keep = windows[i].n_scored
            while (
                i + len(batch) < len(windows)
                and len(batch) < batch_size
                and (len(batch) + 1) * (max(keep, windows[i + len(batch)].n_scored) + 1) <= positions
            ):
                keep = max(keep, windows[i + len(batch)].n_scored)
                batch.append(windows[i + len(batch)])
            i += len(batch)
            done = 0
            for w, lp in zip(batch, _score_batch(model, batch, keep, pad_id, device, keep_arg), strict=True):
                results[w.request].logprob += lp
                results[w.request].n_tokens += w.n_scored
                left[w.request] -= 1
                done += left[w.request] == 0
            if on_done is not None and done:
                on_done(done)


def _score_batch(model: Any, batch: list[Window], keep: int, pad_id: int, device: Any, keep_arg: bool) -> list[float]:
    import torch

    width = max(len(w.ids) for w in batch)
    # left padding: every row's scored tokens are its last ones, so only the last `keep` logits are needed
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for row, w in enumerate(batch):
        input_ids[row, width - len(w.ids) :] = torch.tensor(w.ids, dtype=torch.long)
        attention[row, width - len(w.ids) :] = 1
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    inputs = {"input_ids": input_ids.to(device), "attention_mask": attention.to(device)}
    inputs["position_ids"] = positions.to(device)
    targets = input_ids[:, width - keep :].to(device)
    split = head_split(model)
    if split is not None:
        # the body's hidden states, then the LM head a few positions at a time: a 2,048-token window's logits
        # (400 MB for a 49k vocabulary) never exist at once
        decoder, head = split
        hidden = decoder(**inputs, use_cache=False).last_hidden_state[:, -(keep + 1) : -1]
        token_lp = _head_logprobs(head, hidden, targets, vocab_size(model))
    else:
        kwargs: dict[str, Any] = {"logits_to_keep": keep + 1} if keep_arg else {}
        out = model(**inputs, use_cache=False, **kwargs)
        logits = out.logits[:, -(keep + 1) : -1, :].float()  # predictions of the last `keep` tokens
        token_lp = _target_logprobs(logits, targets)
    n_scored = torch.tensor([w.n_scored for w in batch], device=device)
    mask = torch.arange(keep, device=device).unsqueeze(0) >= (keep - n_scored).unsqueeze(1)
    sums = torch.where(mask, token_lp.double(), 0.0).sum(-1)  # where, not *: pad rows may hold NaN
    return [float(x) for x in sums.cpu()]


#: architectures whose logits are exactly ``lm_head(decoder(...).last_hidden_state)`` (no soft-capping or
#: scaling after the head), so the head can run in pieces; others run whole, their logits within LOGITS_BUDGET
PLAIN_HEAD_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "phi3", "olmo2", "smollm3"})


def head_split(model: Any) -> tuple[Any, Any] | None:
    """(decoder, LM head) of a model whose head can run position by position, else None. A PEFT model
    answers with its base's modules, adapters inside them."""
    if getattr(model.config, "model_type", None) not in PLAIN_HEAD_TYPES:
        return None
    try:
        decoder, head = model.get_decoder(), model.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    if decoder is None or head is None or decoder is model:
        return None
    return decoder, head


def _head_logprobs(head: Any, hidden: Any, targets: Any, vocab: int) -> Any:
    """``log softmax(head(hidden))[target]`` per position of ``hidden`` (B, T, H), the head applied to a few
    dozen positions at a time."""
    import torch

    out = torch.empty(targets.shape, dtype=torch.float32, device=hidden.device)
    step = max(1, LSE_CHUNK // max(1, vocab))
    for b in range(hidden.shape[0]):
        for a in range(0, hidden.shape[1], step):
            logits = head(hidden[b, a : a + step]).float()
            want = targets[b, a : a + step, None]
            out[b, a : a + step] = logits.gather(-1, want).squeeze(-1) - torch.logsumexp(logits, -1)
    return out


def _shared_prefix_logprobs(model: Any, prefix: list[int], conts: list[list[int]], batch_size: int) -> list[float]:
    """Summed log-probability of each continuation after ``prefix``, the prefix run once.

    Continuations are packed (:func:`packed_logits`) where the model takes a block attention mask,
    else run as padded batches on the prefix's cache (:func:`continue_batches`).
    """
    import torch

    cache, first_logits = run_prefix(model, prefix)
    first_lp = torch.log_softmax(first_logits, dim=-1)
    sums = {c: float(first_lp[cont[0]]) for c, cont in enumerate(conts)}
    lengths = [len(c) for c in conts]
    packs = pack_groups(lengths, model)
    batches = length_batches(lengths, batch_size, max(1, LOGITS_BUDGET // vocab_size(model)))
    if can_pack(model) and packing_pays(model, len(prefix), lengths, batches, packs):
        kv = cache_tensors(cache, len(prefix))
        for group in packs:
            rows = [conts[c] for c in group]
            wanted = [list(range(len(r) - 1)) for r in rows]  # every position that predicts a next token
            logits = packed_logits(model, kv, len(prefix), rows, wanted)
            targets = torch.tensor([t for r in rows for t in r[1:]], device=logits.device)
            token_lp = _target_logprobs(logits, targets)
            for c, part in zip(group, torch.split(token_lp.double(), [len(r) - 1 for r in rows]), strict=True):
                sums[c] += float(part.sum())
        return [sums[c] for c in range(len(conts))]
    for batch, logits, ids in continue_batches(model, cache, len(prefix), conts, batch_size):
        lengths = [len(conts[c]) for c in batch]
        # only the real positions that predict a next token: no work on padding
        real = torch.arange(ids.shape[1] - 1).unsqueeze(0) < torch.tensor([n - 1 for n in lengths]).unsqueeze(1)
        real = real.to(logits.device)
        token_lp = _target_logprobs(logits[:, :-1][real], ids[:, 1:][real])
        for c, part in zip(batch, torch.split(token_lp.double(), [n - 1 for n in lengths]), strict=True):
            sums[c] += float(part.sum())
    return [sums[c] for c in range(len(conts))]


def _target_logprobs(logits: Any, targets: Any) -> Any:
    """``log softmax(logits)[target]`` per position (``logits`` (..., V), ``targets`` (...)), a few thousand
    positions at a time: ``logsumexp``'s temporaries are as large as its input, so taken over a whole batch
    they would triple the logits' memory."""
    import torch

    out = torch.empty(targets.shape, dtype=logits.dtype, device=logits.device)
    step = max(1, LSE_CHUNK // max(1, logits.shape[-1]))
    rows = logits.reshape(-1, *logits.shape[-2:]) if logits.dim() > 2 else logits.unsqueeze(0)
    want = targets.reshape(-1, targets.shape[-1]) if targets.dim() > 1 else targets.unsqueeze(0)
    got = out.view(want.shape)
    for b in range(rows.shape[0]):
        for a in range(0, rows.shape[1], step):
            part = rows[b, a : a + step]
            got[b, a : a + step] = part.gather(-1, want[b, a : a + step, None]).squeeze(-1) - torch.logsumexp(part, -1)
    return out


def answer_requests(
    tok: Any, prompts: Sequence[list[dict[str, str]]], answers: Sequence[str], chat_template: bool | None = None
) -> list[tuple[list[int], int]]:
    """``(token_ids, first_scored)`` per (prompt, answer): the prompt as generation renders it (the chat
    template with its generation prompt, or the raw text), then the answer's tokens -- with the
    template's end-of-turn marker -- which alone are scored."""
    suffix = end_of_turn(tok) if chat_template is not False else ""
    requests = []
    for messages, answer in zip(prompts, answers, strict=True):
        head = prompt_ids(tok, messages, chat_template)
        if not head:
            head = [start_token_id(tok)]
        tail = list(tok(answer + suffix, add_special_tokens=False)["input_ids"])
        requests.append((head + tail, len(head)))
    return requests


def text_requests(tok: Any, texts: Sequence[str]) -> list[tuple[list[int], int]]:
    """Plain texts scored whole, after the start token (as perplexity scores outputs)."""
    start = start_token_id(tok)
    return [([start, *tok(t, add_special_tokens=False)["input_ids"]], 1) for t in texts]


def choice_requests(
    tok: Any, contexts: Sequence[str], choices: Sequence[Sequence[str]]
) -> tuple[list[tuple[list[int], int]], list[int]]:
    """One request per (question, choice): the context's tokens, then the choice's (scored), as
    lm-evaluation-harness's loglikelihood requests are; the contexts of a question's choices are the
    same tokens, so :func:`loglikelihoods` runs each question's prefix once. Also returns the question
    index of each request."""
    requests: list[tuple[list[int], int]] = []
    owner: list[int] = []
    for q, (context, options) in enumerate(zip(contexts, choices, strict=True)):
        head = list(tok(context)["input_ids"]) or [start_token_id(tok)]
        for option in options:
            requests.append((head + list(tok(option, add_special_tokens=False)["input_ids"]), len(head)))
            owner.append(q)
    return requests, owner
