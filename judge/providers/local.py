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

The machinery (loading, prompt caches, label probabilities, batched generation) lives in
:mod:`judge.local`; this module is the :class:`Provider` over it: call batching, cache identity, outputs.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from judge.config import GenerateConfig, Message
from judge.errors import JudgeError, ProviderError
from judge.local.generate import greedy_generate
from judge.local.kv import PrefixCache
from judge.local.labels import score_prompts
from judge.local.models import load_causal_lm, model_fingerprint, resolve_model
from judge.local.prompts import chat_ids, prompt_ids
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
    #: a final assistant message is continued (prefilled), so a verdict prefix can be forced after reasoning
    supports_prefill = True
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
        #: kept prompt caches (None without prefix reuse)
        self.prefix_cache = PrefixCache(self.MIN_SHARED_PREFIX, self.PREFIX_CACHE_BYTES) if prefix_reuse else None
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Queue] = weakref.WeakKeyDictionary()

    def clear_prefix_cache(self) -> None:
        """Forget the kept prompt caches (the next call starts cold, as a new process would)."""
        if self.prefix_cache is not None:
            self.prefix_cache.clear()

    def cache_identity(self) -> dict[str, Any]:
        ident = {"provider": self.name, "model": self.model, "resolved": str(resolve_model(self.model))}
        if self.content_identity:
            ident = {"provider": self.name, "fingerprint": model_fingerprint(ident["resolved"])}
        if self.adapter:
            ident["adapter"] = model_fingerprint(self.adapter)
        if self.dtype:  # another precision gives other probabilities (float32 keeps the keys it always had)
            ident["dtype"] = self.dtype
        return ident

    def count_tokens(self, messages: list[Message]) -> int | None:
        """Prompt tokens by this model's tokenizer and chat template (for ``--dry-run``; loads no weights)."""
        if self._loaded is not None:
            return len(chat_ids(self._loaded[1], messages))
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(str(resolve_model(self.model)))
        return len(chat_ids(self._tokenizer, messages))

    def _load(self) -> tuple[Any, Any]:
        if self._loaded is None:
            self._loaded = load_causal_lm(self.model, self.device, self.dtype, adapter=self.adapter)
        return self._loaded

    async def generate(self, messages: list[Message], config: GenerateConfig) -> ModelOutput:
        try:
            if config.score_candidates and self.batch_size > 1:
                return await self._queued(messages, config, self._score_many_sync, self.batch_size)
            if not config.score_candidates and self.generate_batch_size > 1 and config.temperature == 0:
                return await self._queued(messages, config, self.generate_batch, self.generate_batch_size)
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
            scored = score_prompts(
                model,
                tok,
                prompts,
                config.score_candidates,
                prefix_cache=self.prefix_cache,
                batch_tokens=self.BATCH_TOKENS,
            )
        return [
            ModelOutput(
                text=max(s, key=lambda c: s[c]),
                model=self.model,
                usage=Usage(prompt_tokens=len(ids), completion_tokens=0),
                score_logprobs=s,
            )
            for ids, s in scored
        ]

    def _generate_sync(self, messages: list[Message], config: GenerateConfig) -> ModelOutput:
        if config.score_candidates:
            return self._score_many_sync([messages], config)[0]
        return self.generate_batch([messages], config)[0]

    def generate_batch(self, prompts: list[list[Message]], config: GenerateConfig) -> list[ModelOutput]:
        """Greedy completions of several prompts in one left-padded ``generate`` call (one prompt: no padding)."""
        if config.temperature != 0:
            raise ProviderError("the local provider decodes greedily only (temperature 0)")
        with self._lock:
            model, tok = self._load()
            encoded = [prompt_ids(tok, m, config.chat_template) for m in prompts]
            done = greedy_generate(
                model, tok, encoded, max_tokens=config.max_tokens, stop=config.stop or (), seed=config.seed
            )
        return [
            ModelOutput(
                text=c.text,
                model=self.model,
                usage=Usage(prompt_tokens=len(ids), completion_tokens=c.completion_tokens),
                finish_reason=c.finish_reason,
            )
            for ids, c in zip(encoded, done, strict=True)
        ]
