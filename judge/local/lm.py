"""Log-likelihood of token sequences under a causal LM: rolling windows, length-sorted batches.

Shared by perplexity and PMI. A request is a token sequence and the index of its first scored
token; every scored token is scored exactly once, with as much preceding context as fits in the
model's window (lm-evaluation-harness style rolling windows with a stride), never truncated.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from judge.errors import ConfigError

DEFAULT_MAX_LENGTH_CAP = 2048  # long windows cost quadratic attention on CPU; --max-length raises it
LOGITS_BUDGET = 1 << 26  # float32 logits elements per batch (256 MiB: a batch stays small beside the model)


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
) -> list[LogLik]:
    """Score ``(token_ids, first_scored)`` requests: summed log-probability of the tokens from ``first_scored`` on.

    With ``share_prefixes``, requests whose unscored prefixes are equal (the many outputs of one
    source) and that fit in one window run that prefix once and reuse its KV cache; the values equal
    the unshared computation up to float rounding.
    """
    import torch

    stride = stride if stride is not None else max_length // 2
    results = [LogLik() for _ in requests]
    rest: Sequence[int] = range(len(requests))
    if share_prefixes:
        groups: dict[tuple[int, ...], list[int]] = {}
        for r, (ids, first) in enumerate(requests):
            if 1 < first < len(ids) <= max_length:
                groups.setdefault(tuple(ids[:first]), []).append(r)
        shared = {prefix: members for prefix, members in groups.items() if len(members) > 1}
        for prefix, members in shared.items():
            conts = [requests[r][0][len(prefix) :] for r in members]
            for r, lp in zip(members, _shared_prefix_logprobs(model, list(prefix), conts, batch_size), strict=True):
                results[r] = LogLik(logprob=lp, n_tokens=len(requests[r][0]) - len(prefix), n_windows=1)
        done = {r for members in shared.values() for r in members}
        rest = [r for r in range(len(requests)) if r not in done]
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

    # longest first: the first batch shows at once whether memory suffices
    windows.sort(key=lambda w: len(w.ids), reverse=True)
    vocab = int(getattr(model.config, "vocab_size", 0) or 50_000)
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
                and (len(batch) + 1) * (max(keep, windows[i + len(batch)].n_scored) + 1) * vocab <= LOGITS_BUDGET
            ):
                keep = max(keep, windows[i + len(batch)].n_scored)
                batch.append(windows[i + len(batch)])
            i += len(batch)
            for w, lp in zip(batch, _score_batch(model, batch, keep, pad_id, device, keep_arg), strict=True):
                results[w.request].logprob += lp
                results[w.request].n_tokens += w.n_scored
    return results


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
    kwargs: dict[str, Any] = {"logits_to_keep": keep + 1} if keep_arg else {}
    out = model(
        input_ids=input_ids.to(device),
        attention_mask=attention.to(device),
        position_ids=positions.to(device),
        use_cache=False,
        **kwargs,
    )
    logits = out.logits[:, -(keep + 1) : -1, :].float()  # predictions of the last `keep` tokens
    targets = input_ids[:, width - keep :].to(device)
    token_lp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    n_scored = torch.tensor([w.n_scored for w in batch], device=device)
    mask = torch.arange(keep, device=device).unsqueeze(0) >= (keep - n_scored).unsqueeze(1)
    sums = torch.where(mask, token_lp.double(), 0.0).sum(-1)  # where, not *: pad rows may hold NaN
    return [float(x) for x in sums.cpu()]


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
    batches = length_batches(lengths, batch_size, max(1, LOGITS_BUDGET // _vocab(model)))
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
    """``log softmax(logits)[target]`` per row, without materialising the whole log-softmax."""
    import torch

    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def shared_prefix_batches(
    model: Any, prefix: list[int], conts: list[list[int]], batch_size: int
) -> Iterator[tuple[list[int], Any, Any, Any]]:
    """Run ``prefix`` once, then batches of continuations on its KV cache.

    Yields ``(rows, prefix_last_logits, logits, ids)``: the continuations' indices, the logits after
    the prefix (predicting each continuation's first token), the float32 logits at every continuation
    position (right-padded: row ``r``'s last real position is ``len(conts[rows[r]]) - 1``) and the
    padded ids. Continuations must be non-empty.
    """
    cache, first_logits = run_prefix(model, prefix)
    for rows, logits, ids in continue_batches(model, cache, len(prefix), conts, batch_size):
        yield rows, first_logits, logits, ids


def cache_kwarg(model: Any) -> str:
    """The forward argument that takes a KV cache: ``cache`` in transformers 5.x, ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def run_prefix(model: Any, ids: list[int], cache: Any = None, n_cached: int = 0) -> tuple[Any, Any]:
    """Extend a batch-1 KV cache holding ``ids[:n_cached]`` (or a new one) with the rest of ``ids``.

    Returns the cache (now holding all of ``ids``) and the float32 logits after the last token.
    ``cache`` may also be the per-layer ``(keys, values)`` of :func:`cache_tensors`; those are not changed.
    """
    import torch

    device = next(model.parameters()).device
    name = cache_kwarg(model)
    keep = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    if isinstance(cache, list):
        cache = expanded_cache(cache, 1)
    past = {name: cache} if cache is not None else {}
    with torch.inference_mode():
        out = model(
            input_ids=torch.tensor([ids[n_cached:]], device=device),
            position_ids=torch.arange(n_cached, len(ids), device=device).unsqueeze(0),
            use_cache=True,
            **past,
            **keep,
        )
    return getattr(out, name), out.logits[0, -1].float()


def cache_tensors(cache: Any, length: int | None = None) -> list[tuple[Any, Any]]:
    """Each layer's ``(keys, values)`` of a batch-1 KV cache, cut to ``length`` positions (views, no copy)."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        kv = [(layer.keys, layer.values) for layer in layers]
    else:  # transformers 4.x DynamicCache
        kv = list(zip(cache.key_cache, cache.value_cache, strict=True))
    if length is not None:
        kv = [(k[..., :length, :], v[..., :length, :]) for k, v in kv]
    return kv


def expanded_cache(kv: list[tuple[Any, Any]], rows: int) -> Any:
    """A new KV cache holding the batch-1 ``kv`` in each of ``rows`` rows, as expanded views (no copy).

    The prefix tensors are never written: the forward pass concatenates the new positions onto
    them into fresh tensors, which is the only copy made.
    """
    from transformers import DynamicCache

    data = [(k.expand(rows, *k.shape[1:]), v.expand(rows, *v.shape[1:])) for k, v in kv]
    cache = DynamicCache(ddp_cache_data=[(k[..., :0, :], v[..., :0, :]) for k, v in data])
    layers = getattr(cache, "layers", None)
    if layers is None or not all(hasattr(layer, "keys") for layer in layers):
        return DynamicCache(ddp_cache_data=data)  # another cache layout: let it copy
    for layer, (k, v) in zip(layers, data, strict=True):
        layer.keys, layer.values = k, v
    return cache


def length_batches(
    lengths: list[int], batch_size: int, width_budget: int, max_padding: float = 0.25
) -> list[list[int]]:
    """Indices grouped into batches, longest first: at most ``batch_size`` rows, ``rows x width <= width_budget``,
    and at most ``max_padding`` of a batch's positions padding (a short row starts a new batch)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    batches: list[list[int]] = []
    real = 0
    for i in order:
        if batches:
            batch = batches[-1]
            width = lengths[batch[0]]
            cells = (len(batch) + 1) * width
            if len(batch) < batch_size and cells <= width_budget and real + lengths[i] >= (1 - max_padding) * cells:
                batch.append(i)
                real += lengths[i]
                continue
        batches.append([i])
        real = lengths[i]
    return batches


def forward_on_prefix(
    model: Any,
    kv: list[tuple[Any, Any]] | None,
    n_prefix: int,
    rows: list[list[int]],
    *,
    left_pad: bool = False,
    keep: int | None = None,
    pad_id: int = 0,
) -> tuple[Any, Any]:
    """One forward pass of ``rows`` (each non-empty) after a shared prefix's KV (``kv``, batch 1; None: no prefix).

    Rows are right-padded, or left-padded with ``left_pad`` (then every row ends in the last column,
    so ``keep`` -- the number of final positions whose logits are computed -- serves all rows).
    Padding is masked out, so each row's logits equal its own unpadded, unbatched run up to rounding.
    Returns the float32 logits ``(rows, width or keep, vocab)`` and the padded ids.
    """
    import torch

    device = next(model.parameters()).device
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.ones((len(rows), n_prefix + width), dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r)
        cols = slice(width - n, width) if left_pad else slice(0, n)
        ids[i, cols] = torch.tensor(r, dtype=torch.long)
        positions[i, cols] = torch.arange(n_prefix, n_prefix + n)
        pad = slice(n_prefix, n_prefix + width - n) if left_pad else slice(n_prefix + n, n_prefix + width)
        attention[i, pad] = 0
    kwargs: dict[str, Any] = {}
    if kv is not None:
        kwargs[cache_kwarg(model)] = expanded_cache(kv, len(rows))
    if keep is not None and "logits_to_keep" in inspect.signature(model.forward).parameters:
        kwargs["logits_to_keep"] = keep
    with torch.inference_mode():
        logits = model(
            input_ids=ids.to(device),
            attention_mask=attention.to(device),
            position_ids=positions.to(device),
            use_cache=kv is not None,
            **kwargs,
        ).logits
    if keep is not None:
        logits = logits[:, -keep:]
    return logits.float(), ids.to(device)


def continue_batches(
    model: Any, cache: Any, n_prefix: int, conts: list[list[int]], batch_size: int
) -> Iterator[tuple[list[int], Any, Any]]:
    """Batches of right-padded continuations on a prefix's KV cache: ``(rows, logits, ids)`` per batch.

    The prefix's cache is shared by every row as an expanded view, never copied per row nor changed;
    batches group continuations of similar length, so little work goes to padding.
    """
    vocab = int(getattr(model.config, "vocab_size", 0) or 50_000)
    kv = cache_tensors(cache, n_prefix)
    budget = max(1, LOGITS_BUDGET // vocab)
    for rows in length_batches([len(c) for c in conts], batch_size, budget):
        logits, ids = forward_on_prefix(model, kv, n_prefix, [conts[c] for c in rows])
        yield rows, logits, ids


PACK_TOKENS = 512  # tokens per packed pass: a pack attends across its rows, so small packs waste less (bench: 512)


def can_pack(model: Any) -> bool:
    """Whether the model takes the custom 4-D attention mask :func:`packed_logits` needs (SDPA, eager)."""
    from judge.local.models import SPLIT_SDPA

    return getattr(model.config, "_attn_implementation", None) in ("sdpa", "eager", SPLIT_SDPA)


def _vocab(model: Any) -> int:
    return int(getattr(model.config, "vocab_size", 0) or 50_000)


def packing_pays(
    model: Any, n_prefix: int, lengths: list[int], batches: list[list[int]], packs: list[list[int]] | None = None
) -> bool:
    """Whether ``packs`` of the sequences (default: one) cost fewer multiply-adds than padded ``batches``.

    An estimate per position: the layers' weights, about ``6 x hidden size`` multiply-adds per key of
    attention, plus one per key it attends to; a padded batch runs every row to its width and attends to
    every column of it (a padding mask rules out SDPA's causal shortcut), a pack attends to all of itself.
    Packing wins on padding and loses on attention across rows, so many short rows on a long prefix
    pack, a few long rows do not.
    """
    per_position = 6 * int(getattr(model.config, "hidden_size", 0) or 768)
    padded = 0
    for batch in batches:
        width = max(lengths[i] for i in batch)
        padded += len(batch) * width * (per_position + n_prefix + width)
    packed = 0
    for pack in packs or [list(range(len(lengths)))]:
        q = sum(lengths[i] for i in pack)
        packed += q * (per_position + n_prefix + q)
    return packed < padded


def pack_groups(lengths: list[int], model: Any, max_tokens: int = PACK_TOKENS) -> list[list[int]]:
    """Indices in order, grouped into packs of at most ``max_tokens`` tokens and the logits budget
    (a longer sequence is a pack of its own)."""
    limit = max(1, min(max_tokens, LOGITS_BUDGET // _vocab(model)))
    groups: list[list[int]] = []
    total = 0
    for i, n in enumerate(lengths):
        if groups and total + n <= limit:
            groups[-1].append(i)
            total += n
        else:
            groups.append([i])
            total = n
    return groups


def packed_logits(
    model: Any, kv: list[tuple[Any, Any]] | None, n_prefix: int, rows: list[list[int]], wanted: list[list[int]]
) -> Any:
    """One forward pass of ``rows`` (each non-empty) packed end to end into one sequence after a shared
    prefix's KV (``kv``, batch 1, or None).

    A block attention mask lets each row see the prefix and, causally, itself only, and each row's
    positions start at ``n_prefix``, so its logits equal its own run on the prefix up to rounding --
    with no padding and no copy of the prefix per row. Only the positions in ``wanted[i]`` (indices
    into ``rows[i]``) reach the LM head; returns their float32 logits ``(sum of len(wanted), vocab)``,
    row by row. The model must pass :func:`can_pack`.
    """
    import torch

    param = next(model.parameters())
    lengths = [len(r) for r in rows]
    segment = torch.repeat_interleave(torch.arange(len(rows)), torch.tensor(lengths))
    within = torch.cat([torch.arange(n) for n in lengths])
    allowed = (segment.unsqueeze(1) == segment.unsqueeze(0)) & (within.unsqueeze(0) <= within.unsqueeze(1))
    if n_prefix:
        allowed = torch.cat([torch.ones((len(within), n_prefix), dtype=torch.bool), allowed], dim=1)
    # an additive mask: eager attention adds it to the scores, SDPA takes it as is
    mask = torch.zeros(allowed.shape, dtype=param.dtype).masked_fill_(~allowed, torch.finfo(param.dtype).min)
    starts = [0, *torch.tensor(lengths).cumsum(0).tolist()[:-1]]
    keep = torch.tensor([s + j for s, w in zip(starts, wanted, strict=True) for j in w], dtype=torch.long)
    kwargs: dict[str, Any] = {}
    if kv is not None:
        kwargs[cache_kwarg(model)] = expanded_cache(kv, 1)
    keep_arg = "logits_to_keep" in inspect.signature(model.forward).parameters
    if keep_arg:
        kwargs["logits_to_keep"] = keep.to(param.device)
    with torch.inference_mode():
        logits = model(
            input_ids=torch.tensor([[t for r in rows for t in r]], device=param.device),
            attention_mask=mask[None, None].to(param.device),
            position_ids=(within + n_prefix).unsqueeze(0).to(param.device),
            use_cache=kv is not None,
            **kwargs,
        ).logits[0]
    if not keep_arg:
        logits = logits[keep.to(param.device)]
    return logits.float()


# ------------------------------------------------------------------------ a model's own loss on answers

_SENTINEL = "\u2063judge-answer\u2063"


def end_of_turn(tok: Any) -> str:
    """What the chat template writes after an assistant message's text (ChatML: ``<|im_end|>\\n``), so an
    answer's scored tokens end as supervised fine-tuning trains them; "" without a template."""
    if not getattr(tok, "chat_template", None):
        return ""
    user = [{"role": "user", "content": "q"}]
    prompt = str(tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True))
    full = str(tok.apply_chat_template([*user, {"role": "assistant", "content": _SENTINEL}], tokenize=False))
    head = prompt + _SENTINEL
    return full[len(head) :] if full.startswith(head) else ""


def answer_requests(
    tok: Any, prompts: Sequence[list[dict[str, str]]], answers: Sequence[str], chat_template: bool | None = None
) -> list[tuple[list[int], int]]:
    """``(token_ids, first_scored)`` per (prompt, answer): the prompt as generation renders it (the chat
    template with its generation prompt, or the raw text), then the answer's tokens -- with the
    template's end-of-turn marker -- which alone are scored."""
    from judge.local.models import prompt_ids

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
