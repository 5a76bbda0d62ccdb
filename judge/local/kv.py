"""Prefix KV caches and batched forward passes on them.

A prefix (a rubric's instructions, a source text) is run once; its KV cache is then shared, as
expanded views never copied per row, by batches of continuations -- right- or left-padded by length
(:func:`forward_on_prefix`), or packed end to end under a block attention mask
(:func:`packed_logits`). :class:`PrefixCache` keeps recent prompts' caches for prompts to come.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from judge.local.attention import SPLIT_SDPA

LOGITS_BUDGET = 1 << 26  # float32 logits elements per batch (256 MiB: a batch stays small beside the model)


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
    kv = cache_tensors(cache, n_prefix)
    budget = max(1, LOGITS_BUDGET // vocab_size(model))
    for rows in length_batches([len(c) for c in conts], batch_size, budget):
        logits, ids = forward_on_prefix(model, kv, n_prefix, [conts[c] for c in rows])
        yield rows, logits, ids


PACK_TOKENS = 512  # tokens per packed pass: a pack attends across its rows, so small packs waste less (bench: 512)


def can_pack(model: Any) -> bool:
    """Whether the model takes the custom 4-D attention mask :func:`packed_logits` needs (SDPA, eager)."""
    return getattr(model.config, "_attn_implementation", None) in ("sdpa", "eager", SPLIT_SDPA)


def vocab_size(model: Any) -> int:
    """The model's vocabulary size (50,000 when its config does not say)."""
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
    limit = max(1, min(max_tokens, LOGITS_BUDGET // vocab_size(model)))
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


def common_length(seqs: list[list[int]], limit: int) -> int:
    """Length of the common beginning of ``seqs``, at most ``limit``."""
    first = seqs[0]
    n = min(limit, *(len(s) for s in seqs))
    for s in seqs[1:]:
        n = next((i for i in range(n) if s[i] != first[i]), n)
    return max(n, 0)


def shared_prefix_groups(prompts: list[list[int]], min_shared: int, max_tokens: int) -> list[list[int]]:
    """Prompt indices grouped into passes: prompts of one group share at least ``min_shared`` leading
    tokens, and a group's new positions (rows x the longest end after the shared part) stay within
    ``max_tokens`` (a longer prompt goes alone). Neighbours in token order share the most."""
    order = sorted(range(len(prompts)), key=lambda i: prompts[i])
    groups: list[list[int]] = []
    shared = 0
    for i in order:
        if groups:
            group = groups[-1]
            first = prompts[group[0]]
            common = min(shared, common_length([first, prompts[i]], len(first)))
            longest = max(len(prompts[j]) for j in [*group, i])
            if common >= min_shared and (len(group) + 1) * (longest - common) <= max_tokens:
                group.append(i)
                shared = common
                continue
        groups.append([i])
        shared = len(prompts[i])
    return groups


@dataclass(eq=False)
class PrefixCache:
    """The KV caches of recent prompts, most recently used first, within a memory budget.

    A new prompt starts from the kept cache sharing the longest beginning with it (at least
    ``min_shared`` tokens); what is not kept yet is run once and kept in turn.
    """

    #: shortest common beginning (tokens) worth reusing from a kept cache
    min_shared: int = 32
    #: memory for kept caches (bytes); the least recently used goes first
    max_bytes: int = 512 << 20
    #: kept caches, most recently used first: token ids and each layer's (keys, values), batch 1
    entries: list[tuple[list[int], Any]] = field(default_factory=list)

    def clear(self) -> None:
        """Forget every kept cache (the next prompt starts cold, as in a new process)."""
        self.entries = []

    def shared(self, model: Any, prompts: list[list[int]]) -> tuple[int, Any]:
        """How many leading tokens all ``prompts`` share, and the KV cache holding them (None: nothing shared).

        The prompts' common beginning (a single prompt: all of it but the last token, whose logits are
        wanted) starts from the kept cache sharing the most of it; what is not kept yet is run once,
        and the result kept for the next prompts.
        """
        limit = min(len(p) for p in prompts) - 1  # at least one new token per prompt gives its last logits
        n = common_length(prompts, limit)
        best, have = None, 0
        for k, (kept, _) in enumerate(self.entries):
            m = common_length([kept, prompts[0]], n)
            if m > have:
                best, have = k, m
        if have < self.min_shared:
            best, have = None, 0
        if best is not None:
            self.entries.insert(0, self.entries.pop(best))  # most recently used
        if have == n and have:
            kv = self.entries[0][1]
            return n, [(k[..., :n, :], v[..., :n, :]) for k, v in kv]  # views
        if n < self.min_shared:
            return 0, None
        start = [(k[..., :have, :], v[..., :have, :]) for k, v in self.entries[0][1]] if have else None
        cache, _ = run_prefix(model, prompts[0][:n], start, have)
        kv = cache_tensors(cache)
        self.entries.insert(0, (list(prompts[0][:n]), kv))
        self._evict()
        return n, kv

    def _evict(self) -> None:
        """Drop the least recently used kept caches beyond the memory budget (the newest always stays)."""
        total = 0
        for k, (_, kv) in enumerate(self.entries):
            total += sum(t.numel() * t.element_size() for pair in kv for t in pair)
            if k and total > self.max_bytes:
                del self.entries[k:]
                return
