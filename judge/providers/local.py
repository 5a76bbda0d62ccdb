"""In-process transformers causal LM as a judge (``local/<alias-or-path>``).

Greedy decoding is temperature 0. In logprob score mode the probability of every score string (or
pairwise label) is computed exactly (teacher forcing each candidate's tokens after the prompt), not
read from a top-k list. In that mode the KV caches of recent prompts are kept (least recently used
out first, within a memory budget) and a new prompt starts from the longest beginning it shares
with one of them -- the rubric's system prompt and instructions, the same for every item, and
beyond: both orders of a pairwise comparison share the question too. Concurrent calls are scored
together: prompts sharing a beginning have their item-specific ends run as one left-padded batch on
that shared cache, as long as the batch stays small enough for batching to pay on a CPU. A final
assistant message is continued, not closed (a prefill: the reason score mode's forced "Score:" after
the judge's reasoning). torch/transformers are imported lazily; one model per process, calls
serialised. Float32 by default (exact); ``dtype="bfloat16"`` is faster and slightly less exact.
"""

from __future__ import annotations

import asyncio
import math
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from judge.config import GenerateConfig, Message
from judge.errors import JudgeError, ProviderError
from judge.providers._base import ModelOutput, Provider, Usage


@dataclass
class _Queue:
    """Logprob calls waiting to be scored together (one per event loop: asyncio locks bind to a loop)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pending: list[tuple[list[Message], GenerateConfig, asyncio.Future[ModelOutput]]] = field(default_factory=list)


class LocalProvider(Provider):
    """A transformers causal LM in this process."""

    name = "local"
    supports_json_schema = False
    supports_logprobs = True
    supports_prefill = True  # a verdict prefix is forced after reasoning
    default_score_mode = "logprob"

    #: shortest common beginning (tokens) worth reusing from a kept KV cache
    MIN_SHARED_PREFIX = 32
    #: logprob calls scored in one forward pass (bench/local_modes.py: items/s stop rising past this on 2 cores)
    DEFAULT_BATCH_SIZE = 8
    #: new positions (rows x width) of one batched pass; past this a batch is split -- long prompts
    #: (MT-Bench's ~1,000 tokens) already give the matrix products enough rows, and padding is waste
    BATCH_TOKENS = 1024
    #: memory for kept prompt caches (bytes); the least recently used goes first
    PREFIX_CACHE_BYTES = 512 << 20

    def __init__(
        self,
        model: str = "smollm2",
        *,
        device: str | None = None,
        dtype: str | None = None,
        prefix_reuse: bool = True,
        batch_size: int | None = None,
        generate_batch_size: int = 1,
        content_identity: bool = False,
        adapter: str | None = None,
        preloaded: tuple[Any, Any] | None = None,
    ) -> None:
        super().__init__(model)
        self.device = device
        self.dtype = dtype if dtype != "float32" else None
        self.prefix_reuse = prefix_reuse
        self.batch_size = batch_size or self.DEFAULT_BATCH_SIZE
        #: free-text calls (temperature 0) generated together in one left-padded batch; 1 = one at a time
        self.generate_batch_size = max(1, generate_batch_size)
        #: identify the model by a hash of its files (config, tokenizer, weights) rather than its path, so a
        #: checkpoint folder overwritten with new weights is never served another model's cached outputs
        self.content_identity = content_identity
        self.adapter = adapter  # a PEFT adapter folder applied on top of the model
        self._lock = threading.Lock()
        self._loaded: tuple[Any, Any] | None = preloaded  # (model, tokenizer) already in memory
        self._tokenizer: Any = None  # the tokenizer alone, for count_tokens before any call
        # kept prompt caches, most recently used first: token ids and each layer's (keys, values), batch 1
        self._prefixes: list[tuple[list[int], Any]] = []
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Queue] = weakref.WeakKeyDictionary()

    def clear_prefix_cache(self) -> None:
        """Forget the kept prompt caches (the next call starts cold, as a new process would)."""
        self._prefixes = []

    def _shared_prefix(self, model: Any, prompts: list[list[int]]) -> tuple[int, Any]:
        """How many leading tokens all ``prompts`` share, and the KV cache holding them (None: nothing shared).

        The prompts' common beginning (a single prompt: all of it but the last token, whose logits are
        wanted) starts from the kept cache sharing the most of it; what is not kept yet is run once,
        and the result kept for the next prompts.
        """
        from judge.baselines._lm import cache_tensors, run_prefix

        if not self.prefix_reuse:
            return 0, None
        limit = min(len(p) for p in prompts) - 1  # at least one new token per prompt gives its last logits
        n = _common_length(prompts, limit)
        best, have = None, 0
        for k, (kept, _) in enumerate(self._prefixes):
            m = _common_length([kept, prompts[0]], n)
            if m > have:
                best, have = k, m
        if have < self.MIN_SHARED_PREFIX:
            best, have = None, 0
        if best is not None:
            self._prefixes.insert(0, self._prefixes.pop(best))  # most recently used
        if have == n and have:
            kv = self._prefixes[0][1]
            return n, [(k[..., :n, :], v[..., :n, :]) for k, v in kv]  # views
        if n < self.MIN_SHARED_PREFIX:
            return 0, None
        start = [(k[..., :have, :], v[..., :have, :]) for k, v in self._prefixes[0][1]] if have else None
        cache, _ = run_prefix(model, prompts[0][:n], start, have)
        kv = cache_tensors(cache)
        self._prefixes.insert(0, (list(prompts[0][:n]), kv))
        self._evict()
        return n, kv

    def _evict(self) -> None:
        """Drop the least recently used kept caches beyond the memory budget (the newest always stays)."""
        total = 0
        for k, (_, kv) in enumerate(self._prefixes):
            total += sum(t.numel() * t.element_size() for pair in kv for t in pair)
            if k and total > self.PREFIX_CACHE_BYTES:
                del self._prefixes[k:]
                return

    def cache_identity(self) -> dict[str, Any]:
        from judge.localmodels import resolve_model

        ident = {"provider": self.name, "model": self.model, "resolved": str(resolve_model(self.model))}
        if self.content_identity:
            from judge.localmodels import model_fingerprint

            ident = {"provider": self.name, "fingerprint": model_fingerprint(ident["resolved"])}
        if self.adapter:
            from judge.localmodels import model_fingerprint

            ident["adapter"] = model_fingerprint(self.adapter)
        if self.dtype:  # another precision gives other probabilities (float32 keeps the keys it always had)
            ident["dtype"] = self.dtype
        return ident

    def count_tokens(self, messages: list[Message]) -> int | None:
        """Prompt tokens by this model's tokenizer and chat template (for ``--dry-run``; loads no weights)."""
        if self._loaded is not None:
            return len(_chat_ids(self._loaded[1], messages))
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            from judge.localmodels import resolve_model

            self._tokenizer = AutoTokenizer.from_pretrained(str(resolve_model(self.model)))
        return len(_chat_ids(self._tokenizer, messages))

    def _load(self) -> tuple[Any, Any]:
        if self._loaded is None:
            from judge.localmodels import load_causal_lm

            self._loaded = load_causal_lm(self.model, self.device, self.dtype, adapter=self.adapter)
        return self._loaded

    async def generate(self, messages: list[Message], config: GenerateConfig) -> ModelOutput:
        try:
            if config.score_candidates and self.batch_size > 1:
                return await self._queued(messages, config, self._score_many_sync, self.batch_size)
            if not config.score_candidates and self.generate_batch_size > 1 and config.temperature == 0:
                return await self._queued(messages, config, self._generate_many_sync, self.generate_batch_size)
            return await asyncio.to_thread(self._generate_sync, messages, config)
        except JudgeError:
            raise
        except (RuntimeError, ValueError, IndexError) as exc:  # torch: out of memory, bad input, ...
            raise ProviderError(f"local model failed: {type(exc).__name__}: {exc}") from exc

    async def _queued(
        self,
        messages: list[Message],
        config: GenerateConfig,
        run_many: Callable[[list[list[Message]], GenerateConfig], list[ModelOutput]],
        size: int,
    ) -> ModelOutput:
        """Run this call together with the other calls of the same config waiting now, in one batch."""
        loop = asyncio.get_running_loop()
        queue = self._queues.get(loop)
        if queue is None:
            queue = self._queues[loop] = _Queue()
        mine: asyncio.Future[ModelOutput] = loop.create_future()
        queue.pending.append((messages, config, mine))
        async with queue.lock:
            if not mine.done():
                await asyncio.sleep(0)  # calls started in the same tick join this batch
                batch = [p for p in queue.pending if p[1] == config and not p[2].done()][:size]
                if all(p[2] is not mine for p in batch):
                    batch = [*batch[:-1], next(p for p in queue.pending if p[2] is mine)]
                taken = {id(p[2]) for p in batch}
                queue.pending[:] = [p for p in queue.pending if id(p[2]) not in taken and not p[2].done()]
                try:
                    outs = await asyncio.to_thread(run_many, [p[0] for p in batch], config)
                except BaseException as exc:
                    for entry in batch:
                        fut = entry[2]
                        if fut is not mine and not fut.done():
                            if isinstance(exc, Exception):
                                fut.set_exception(exc)
                            else:  # this call was cancelled: the others go back in the queue
                                queue.pending.append(entry)
                    raise
                for (_, _, fut), out in zip(batch, outs, strict=True):
                    if not fut.done():
                        fut.set_result(out)
        return await mine

    def _score_many_sync(self, prompts: list[list[Message]], config: GenerateConfig) -> list[ModelOutput]:
        """The logprob answers to several prompts at once (the same as one call each, up to float rounding)."""
        assert config.score_candidates is not None
        with self._lock:
            model, tok = self._load()
            encoded = [_prompt_and_candidates(tok, m, config.score_candidates) for m in prompts]
            scores: list[dict[str, float]] = [{} for _ in encoded]
            if self.prefix_reuse:
                groups = _batches([ids for ids, _ in encoded], self.MIN_SHARED_PREFIX, self.BATCH_TOKENS)
            else:
                groups = [list(range(len(encoded)))]
            for group in groups:
                n, kv = self._shared_prefix(model, [encoded[i][0] for i in group])
                part = _candidate_logprobs_batch(model, tok, [encoded[i] for i in group], n, kv)
                for i, s in zip(group, part, strict=True):
                    scores[i] = s
        return [
            ModelOutput(
                text=max(s, key=lambda c: s[c]),
                model=self.model,
                usage=Usage(prompt_tokens=len(ids), completion_tokens=0),
                score_logprobs=s,
            )
            for (ids, _), s in zip(encoded, scores, strict=True)
        ]

    def _generate_sync(self, messages: list[Message], config: GenerateConfig) -> ModelOutput:
        if config.score_candidates:
            return self._score_many_sync([messages], config)[0]
        return self._generate_many_sync([messages], config)[0]

    def _generate_many_sync(self, prompts: list[list[Message]], config: GenerateConfig) -> list[ModelOutput]:
        """Greedy completions of several prompts in one left-padded ``generate`` call (one prompt: no padding)."""
        import torch

        from judge.localmodels import eos_token_ids, prompt_ids

        if config.temperature != 0:
            raise ProviderError("the local provider decodes greedily only (temperature 0)")
        with self._lock:
            model, tok = self._load()
            encoded = [prompt_ids(tok, m, config.chat_template) for m in prompts]
            device = next(model.parameters()).device
            width = max(len(ids) for ids in encoded)
            pad = tok.pad_token_id
            input_ids = torch.full((len(encoded), width), pad, dtype=torch.long)
            attention = torch.zeros((len(encoded), width), dtype=torch.long)
            for row, ids in enumerate(encoded):
                input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
                attention[row, width - len(ids) :] = 1
            extra: dict[str, Any] = {"stop_strings": list(config.stop), "tokenizer": tok} if config.stop else {}
            with torch.inference_mode():
                torch.manual_seed(config.seed)
                out = model.generate(
                    input_ids.to(device),
                    attention_mask=attention.to(device),
                    max_new_tokens=config.max_tokens,
                    do_sample=False,
                    pad_token_id=pad,
                    **extra,
                )
            ends = eos_token_ids(model, tok)
            results = []
            for row, ids in enumerate(encoded):
                new = out[row, width:].tolist()
                end = next((k for k, t in enumerate(new) if t in ends), None)
                finish = "stop" if end is not None else "length"
                new = new[: end + 1] if end is not None else new
                text = tok.decode(new, skip_special_tokens=True)
                for s in config.stop or ():
                    cut = text.find(s)
                    if cut >= 0:
                        text, finish = text[:cut], "stop"
                results.append(
                    ModelOutput(
                        text=text,
                        model=self.model,
                        usage=Usage(prompt_tokens=len(ids), completion_tokens=len(new)),
                        finish_reason=finish,
                    )
                )
            return results


def _batches(prompts: list[list[int]], min_shared: int, max_tokens: int) -> list[list[int]]:
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
            common = min(shared, _common_length([first, prompts[i]], len(first)))
            longest = max(len(prompts[j]) for j in [*group, i])
            if common >= min_shared and (len(group) + 1) * (longest - common) <= max_tokens:
                group.append(i)
                shared = common
                continue
        groups.append([i])
        shared = len(prompts[i])
    return groups


def _common_length(seqs: list[list[int]], limit: int) -> int:
    """Length of the common beginning of ``seqs``, at most ``limit``."""
    first = seqs[0]
    n = min(limit, *(len(s) for s in seqs))
    for s in seqs[1:]:
        n = next((i for i in range(n) if s[i] != first[i]), n)
    return max(n, 0)


def _chat_ids(tok: Any, messages: list[Message]) -> list[int]:
    from judge.localmodels import prompt_ids

    return prompt_ids(tok, messages)


def _chat_text(tok: Any, messages: list[Message]) -> str:
    """The prompt text of ``messages`` whose last one, from the assistant, is continued (not closed)."""
    if getattr(tok, "chat_template", None):
        return str(tok.apply_chat_template(messages, tokenize=False, continue_final_message=True))
    text = "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)
    return (tok.bos_token or "") + text


def _prompt_and_candidates(
    tok: Any, messages: list[Message], candidates: tuple[str, ...]
) -> tuple[list[int], dict[str, list[int]]]:
    """The prompt's token ids and each candidate's, with the tokenisation boundary handled.

    After a chat prompt (which ends in a special token and a newline) a candidate is tokenised on its
    own. After a prefill the prompt ends in text ("Verdict: "), and a candidate may merge with its last
    tokens (" A" is one token): the prompt is then cut back to where every ``text + candidate``
    tokenises alike, and each candidate is the rest of its own tokenisation -- the canonical tokens.
    """
    if not messages or messages[-1]["role"] != "assistant":
        return _chat_ids(tok, messages), {c: tok(c, add_special_tokens=False)["input_ids"] for c in candidates}
    text = _chat_text(tok, messages)
    prompt = list(tok(text, add_special_tokens=False)["input_ids"])
    full = {c: list(tok(text + c, add_special_tokens=False)["input_ids"]) for c in candidates}
    k = min(_common_length([prompt, f], len(prompt)) for f in full.values())
    return prompt[:k], {c: f[k:] for c, f in full.items()}


def _candidate_logprobs(model: Any, tok: Any, prompt_ids: list[int], candidates: tuple[str, ...]) -> dict[str, float]:
    """Exact log P(the answer is candidate | prompt) for one prompt."""
    cand_ids = {c: tok(c, add_special_tokens=False)["input_ids"] for c in candidates}
    return _candidate_logprobs_batch(model, tok, [(prompt_ids, cand_ids)], 0, None)[0]


def _candidate_logprobs_batch(
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

    from judge.baselines._lm import forward_on_prefix, length_batches

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
