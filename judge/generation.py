"""Generation: a model under test answers prompts. One path for ``judge mtbench answer`` and for the
systems of a ``judge eval`` suite that are models rather than files of outputs.

Every call goes through the core cache (keyed by the provider's identity -- for a local checkpoint a
hash of its files, not its path --, the messages and the generation settings) and the retry layer,
so a rerun is free, an interrupted run (even ``kill -9``) resumes without generating anything twice,
and adding a checkpoint to a sweep generates only for that checkpoint. A local model generates the
prompts of one system in left-padded batches, longest first (:class:`judge.providers.local.LocalProvider`).
An item whose generation fails after the retries keeps its place with the reason; a rejected key or
an unknown model (401/403/404) stops the run.

Generation runs on the judges' run loop (:func:`judge.pipeline.run_units`): an :class:`Answerer` is what an
executor needs of a grader, so a server is paced by the same adaptive limiter and ``--batch`` sends the calls
through the provider's Batch API (:class:`judge.batch.BatchAPI`) under the same cache keys.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from judge.cache import Cache
from judge.calls import Caller, DirectCaller
from judge.config import GenerateConfig, Message
from judge.errors import ClientRequestError, ProviderError
from judge.limiter import Limiter
from judge.providers._base import ModelOutput, Provider
from judge.providers.registry import provider_info
from judge.retry import RetryPolicy

if TYPE_CHECKING:
    from judge.batch import BatchSettings
    from judge.pipeline import Executor

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


class Answerer:
    """A model under test answering prompts, as the run loop's executors bind a grader
    (:class:`judge.pipeline.GraderLike`): every call through its caller -- the cache, then the server through
    the limiter and the retry layer (:class:`~judge.calls.DirectCaller`), or a Batch API run's collector --
    under the cache key of ``kind`` (``eval-generate``, ``mtbench-answer``); any completion is stored as final
    (answers are not parsed: nothing makes one worth asking again)."""

    keep_failed = False

    def __init__(
        self,
        provider: Provider,
        config: GenerateConfig,
        *,
        kind: str,
        cache: Cache | None = None,
        retry: RetryPolicy | None = None,
        batch: BatchSettings | None = None,
        prices: str | None = None,
        caller: Caller | None = None,
    ) -> None:
        self.provider = provider
        #: the default settings of a call (a call may bring its own: MT-Bench's per-category temperatures)
        self.config = config
        self.kind = kind
        self.cache = cache
        self.retry = retry or RetryPolicy()
        #: answer through the provider's Batch API (judge.batch); None: synchronously
        self.batch = batch
        self.prices = prices
        self.caller: Caller = caller or DirectCaller(cache, self.retry)

    def with_caller(self, caller: Caller, *, batch: BatchSettings | None = None) -> Answerer:
        """This answerer with its calls made by ``caller``."""
        return Answerer(
            self.provider,
            self.config,
            kind=self.kind,
            cache=self.cache,
            retry=self.retry,
            batch=batch or self.batch,
            prices=self.prices,
            caller=caller,
        )

    async def answer(self, messages: list[Message], config: GenerateConfig | None = None) -> tuple[ModelOutput, bool]:
        """One answer: ``(output, cached)``. Raises the provider's error when there is none."""
        res = await self.caller.call(self.provider, messages, config or self.config, kind=self.kind)
        if not res.cached:
            self.caller.store(res.key, {**res.output.to_cache(), "final": True})
        return res.output, res.cached


def answer_executor(answerer: Answerer, concurrency: int) -> Executor:
    """How ``answerer``'s calls are made: through the Batch API when it has batch settings (refused here when
    it cannot be: a provider without one, no cache); else in this process, at most ``concurrency`` calls at
    once -- a server paced by the adaptive limiter (its rate-limit headers, AIMD on refusals), a model in this
    process (which batches the calls waiting together) by a plain bound."""
    from judge.limiter import AdaptiveLimiter, FixedLimiter
    from judge.pipeline import SLOW_START, InProcess

    if answerer.batch is not None:
        from judge.batch import BatchAPI, check_batch_support

        check_batch_support(answerer.provider, answerer.cache, role="model")
        return BatchAPI(answerer.batch)
    limiter: Limiter
    if provider_info(answerer.provider).in_process:
        limiter = FixedLimiter(concurrency)
    else:
        limiter = AdaptiveLimiter(concurrency, slow_start=SLOW_START)
    return InProcess(concurrency, limiter=limiter)


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


def failed_reason(exc: ProviderError) -> str:
    """Why a generation that raised ``exc`` has no answer; ``exc`` raised again when it stops the whole run (a
    rejected key, an unknown model, nothing listening at the URL)."""
    from judge.grader import is_fatal

    if is_fatal(exc):
        raise exc
    if isinstance(exc, ClientRequestError):
        return f"generation rejected: {exc}"
    return f"generation failed: {type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class PromptWork:
    """The run loop's work of :func:`generate_outputs`: unit ``k`` is item ``k``'s record (its answer, or
    ``status: error`` and why there is none)."""

    ids: Sequence[str]
    prompts: Sequence[str]
    settings: GenerateSettings

    def __call__(self, answerers: Sequence[Answerer]) -> Callable[[int], Awaitable[dict[str, Any]]]:
        answerer = answerers[0]

        async def one(k: int) -> dict[str, Any]:
            try:
                out, cached = await answerer.answer(self.settings.messages(self.prompts[k]))
            except ProviderError as exc:
                return {"id": self.ids[k], "output": None, "status": "error", "error": failed_reason(exc)}
            return answer_record(self.ids[k], out, cached)

        return one


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
    batch: BatchSettings | None = None,
    on_report: Callable[[Any], None] | None = None,
) -> list[dict[str, Any]]:
    """Answer every prompt; one record per item, in item order: ``id, output, status, error, finish_reason,
    prompt_tokens, completion_tokens, cached``. Runs on :func:`judge.pipeline.run_units`
    (:func:`answer_executor`), longest prompts first (local batches pad least); ``batch``: through the
    provider's Batch API (needs the cache), its :class:`~judge.batch.BatchReport` handed to ``on_report``.
    ``progress``: a bar advanced per item (with ``batch``, the batches' progress shows too)."""
    from judge.pipeline import run_units

    answerer = Answerer(provider, settings.config(), kind="eval-generate", cache=cache, retry=retry, batch=batch)
    executor = answer_executor(answerer, concurrency)
    order = sorted(range(len(ids)), key=lambda k: -len(prompts[k]))
    records: list[dict[str, Any] | None] = [None] * len(ids)

    def keep(i: int, record: dict[str, Any]) -> None:
        records[order[i]] = record
        if progress is not None:
            progress.update(1)

    report = await run_units(
        executor,
        [answerer],
        PromptWork(ids, prompts, settings),
        order,
        keep,
        n=len(ids),
        progress=progress is not None and executor.shows_progress,  # an executor's own display (the batches')
    )
    if report is not None and on_report is not None:
        on_report(report)
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
