"""Generation: a model under test answers prompts. One path for ``judge mtbench answer`` and for the
systems of a ``judge eval`` suite that are models rather than files of outputs.

Every call goes through the core cache (keyed by the provider's identity -- for a local checkpoint a
hash of its files, not its path --, the messages and the generation settings) and the retry layer,
so a rerun is free, an interrupted run (even ``kill -9``) resumes without generating anything twice,
and adding a checkpoint to a sweep generates only for that checkpoint. A local model generates the
prompts of one system in left-padded batches, longest first (:class:`judge.providers.local.LocalProvider`).
An item whose generation fails after the retries keeps its place with the reason; a rejected key or
an unknown model (401/403/404) stops the run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from judge.cache import Cache
from judge.config import GenerateConfig, Message
from judge.errors import ClientRequestError, ProviderError
from judge.limiter import Limiter
from judge.providers._base import ModelOutput, Provider
from judge.retry import RetryPolicy

#: local generation: prompts per left-padded ``generate`` call (bench/generation.py)
LOCAL_GENERATE_BATCH = 8


class GenerateSettings(BaseModel):
    """How a model under test answers: ``generate:`` of a suite (defaults) and of a system (overrides)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_new_tokens: int = Field(256, ge=1, description="Upper bound on the answer's tokens.")
    temperature: float = Field(0.0, ge=0.0, description="0: greedy (local models decode greedily only).")
    seed: int = 0
    system_prompt: str | None = Field(None, description="A system message before each item's input.")
    chat_template: Literal["auto", "none"] = Field(
        "auto", description="auto: the model's chat template (apply_chat_template); none: the input as raw text."
    )
    stop: tuple[str, ...] = Field((), description="Strings that end an answer (not part of it).")

    def messages(self, prompt: str) -> list[Message]:
        head: list[Message] = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return [*head, {"role": "user", "content": prompt}]

    def config(self) -> GenerateConfig:
        return GenerateConfig(
            temperature=self.temperature,
            seed=self.seed,
            max_tokens=self.max_new_tokens,
            stop=self.stop or None,
            chat_template=False if self.chat_template == "none" else None,
        )

    @classmethod
    def merged(cls, *layers: GenerateSettings | None) -> GenerateSettings:
        """Later layers' explicitly set keys override earlier ones (suite defaults, then the system's)."""
        merged: dict[str, Any] = {}
        for layer in layers:
            if layer is not None:
                merged.update(layer.model_dump(exclude_unset=True))
        return cls.model_validate(merged)


async def generate_reply(
    provider: Provider,
    messages: list[Message],
    config: GenerateConfig,
    cache: Cache | None,
    retry: RetryPolicy | None = None,
    *,
    kind: str = "generate",
    limiter: Limiter | None = None,
) -> tuple[ModelOutput, bool]:
    """One answer through the cache, the limiter and the retry layer: ``(output, cached)``, stored as final."""
    from judge.grader import cached_call

    out, cached, _ = await cached_call(
        provider, messages, config, cache, retry or RetryPolicy(), limiter=limiter, kind=kind
    )
    return out, cached


def answer_record(ident: str, out: ModelOutput, cached: bool) -> dict[str, Any]:
    """One line of ``outputs/<system>.jsonl`` for an answer that came back."""
    return {
        "id": ident,
        "output": out.text,
        "status": "ok",
        "error": None,
        "finish_reason": out.finish_reason,
        "prompt_tokens": out.usage.prompt_tokens,
        "completion_tokens": out.usage.completion_tokens,
        "cached": cached,
    }


async def generate_outputs(
    provider: Provider,
    ids: Sequence[str],
    prompts: Sequence[str],
    settings: GenerateSettings,
    *,
    cache: Cache | None,
    concurrency: int = 16,
    retry: RetryPolicy | None = None,
    progress: Any = None,
) -> list[dict[str, Any]]:
    """Answer every prompt; one record per item, in item order: ``id, output, status, error, finish_reason,
    prompt_tokens, completion_tokens, cached``. Longest prompts go first (local batches pad least). A server
    is paced by the same adaptive limiter as judge calls (its rate-limit headers, AIMD on refusals)."""
    from judge.grader import is_fatal
    from judge.limiter import AdaptiveLimiter
    from judge.runner import SLOW_START, gather_streamed

    config = settings.config()
    sem = asyncio.Semaphore(max(1, concurrency))
    limiter = None if provider.name in ("local", "hf", "fake") else AdaptiveLimiter(concurrency, slow_start=SLOW_START)
    records: list[dict[str, Any] | None] = [None] * len(ids)

    async def one(k: int) -> None:
        rec: dict[str, Any] = {"id": ids[k]}
        async with sem:
            try:
                out, cached = await generate_reply(
                    provider, settings.messages(prompts[k]), config, cache, retry, kind="eval-generate", limiter=limiter
                )
            except ClientRequestError as exc:
                if is_fatal(exc):
                    raise
                rec |= {"output": None, "status": "error", "error": f"generation rejected: {exc}"}
            except ProviderError as exc:
                if is_fatal(exc):  # nothing listens at the URL: no item can get past it
                    raise
                rec |= {"output": None, "status": "error", "error": f"generation failed: {type(exc).__name__}: {exc}"}
            else:
                rec = answer_record(ids[k], out, cached)
        records[k] = rec
        if progress is not None:
            progress.update(1)

    order = sorted(range(len(ids)), key=lambda k: -len(prompts[k]))
    await gather_streamed([one(k) for k in order])
    return [r for r in records if r is not None]


def _local_batch_fn(path: str, adapter: str | None, settings: dict[str, Any]) -> Any:
    """The per-worker batch function of engine generation: the model loads once per worker, and each batch of
    prompts is one left-padded greedy ``generate`` (module level, so it pickles to Ray actors)."""
    from judge.providers.local import LocalProvider

    provider = LocalProvider(path, adapter=adapter)
    gen = GenerateSettings.model_validate(settings)
    config = gen.config()

    def run(batch: list[str]) -> list[dict[str, Any]]:
        outs = provider.generate_batch([gen.messages(p) for p in batch], config)
        return [o.to_cache() for o in outs]

    return run


def generate_on_engine(
    engine: Any,
    provider: Any,
    ids: Sequence[str],
    prompts: Sequence[str],
    settings: GenerateSettings,
    *,
    cache: Cache | None,
    batch_size: int = LOCAL_GENERATE_BATCH,
    progress: Any = None,
) -> list[dict[str, Any]]:
    """A local model's answers computed on an engine (``--engine ray``: batches spread over an actor pool,
    one model per actor), under the same cache keys as :func:`generate_outputs`, so either engine reuses
    what the other generated; each answer is cached as it arrives (a killed run resumes)."""
    import functools

    from judge.grader import call_key

    config = settings.config()
    keys = [call_key(provider, settings.messages(p), config, kind="eval-generate") for p in prompts]
    records: list[dict[str, Any] | None] = [None] * len(ids)

    def record(k: int, out: ModelOutput, cached: bool) -> None:
        records[k] = answer_record(ids[k], out, cached)
        if progress is not None:
            progress.update(1)

    todo = []
    for k, key in enumerate(keys):
        hit = cache.get(key) if cache is not None else None
        if hit is not None and hit.get("final", True) and "rejected" not in hit:
            record(k, ModelOutput.model_validate(hit), True)
        else:
            todo.append(k)
    todo.sort(key=lambda k: -len(prompts[k]))  # longest first: batches of like lengths pad least
    factory = functools.partial(_local_batch_fn, provider.model, provider.adapter, settings.model_dump(mode="json"))
    results = engine.map(factory, [prompts[k] for k in todo], batch_size=batch_size)
    for k, raw in zip(todo, results, strict=True):
        out = ModelOutput.model_validate(raw)
        if cache is not None:
            cache.put(keys[k], {**out.to_cache(), "final": True})
        record(k, out, False)
    return [r for r in records if r is not None]
