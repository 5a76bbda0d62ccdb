"""How one judge call is made: the :class:`Caller` seam between the grader and whatever answers it.

The :class:`~judge.grader.Grader` renders, parses, re-asks and builds the verdict; it hands every call to
its caller and every completion it keeps back to the caller's store. A caller decides where the answer
comes from:

* :class:`DirectCaller` -- the cache, then the server through the limiter, the retry layer and the
  ``--max-cost`` guard (the synchronous path);
* :class:`CacheOnlyCaller` -- the cache alone; a call it cannot serve raises :class:`NotCached`
  (an engine's driver serves the items whose calls are all cached);
* :class:`RecordingCaller` -- the server, no cache lookup, every store recorded for someone else to write
  (an engine's worker, which never touches the driver's cache);
* :class:`judge.batch.BatchCollector` -- the cache and what the Batch API brought back; every other call
  is recorded for the next batch.

A grader for another caller is built with :meth:`judge.grader.Grader.with_caller`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, Protocol

from judge.cache import cache_key
from judge.config import GenerateConfig, Message
from judge.errors import ClientRequestError, ProviderError
from judge.limiter import Limiter
from judge.providers._base import ModelOutput, Provider
from judge.retry import RetryPolicy, with_retries

REJECTED_STATUSES = (400, 422)
"""Definitive refusals of one request: cached as final, like an ok verdict."""


class Store(Protocol):
    """Where completions are looked up and kept: a :class:`~judge.cache.Cache`, or a recorder of writes."""

    def get(self, key: str) -> dict[str, Any] | None: ...

    def put(self, key: str, value: dict[str, Any]) -> None: ...


class CallGuard(Protocol):
    """Wraps each call sent to the server (not one served from the cache), inside its call slot: the
    ``--max-cost`` budget (:class:`judge.runner.Budget`) reserves, waits, refuses and counts there."""

    async def __call__(
        self, messages: list[Message], config: GenerateConfig, generate: Callable[[], Awaitable[ModelOutput]]
    ) -> ModelOutput: ...


class CallResult(NamedTuple):
    """One judge call as the grader sees it."""

    output: ModelOutput
    cached: bool
    attempts: int  # HTTP attempts made now (0 when served from the cache)
    key: str
    final: bool | None  # a cache hit's mark (None: not from the cache)


class Caller(Protocol):
    """Makes one call for a grader: ``provider`` (the judge), ``messages`` and ``config`` (the request) and
    ``key_parts`` (rubric hash, score mode, namespace: the rest of the cache key) to a :class:`CallResult`;
    :meth:`store` keeps a completion under its key."""

    async def call(
        self,
        provider: Provider,
        messages: list[Message],
        config: GenerateConfig,
        *,
        limiter: Limiter | None = None,
        **key_parts: Any,
    ) -> CallResult: ...

    def store(self, key: str, entry: dict[str, Any]) -> None: ...


def call_key(
    provider: Provider,
    messages: list[Message],
    config: GenerateConfig,
    identity: dict[str, Any] | None = None,
    **key_parts: Any,
) -> str:
    """The cache key of a call: the model's identity (not the server's URL; ``identity`` when given, e.g.
    the driver's on an engine's worker), everything that changes the request (messages, config,
    structured-output form) and ``key_parts`` (rubric hash, score mode, the user's cache namespace)."""
    return cache_key(
        **(provider.cache_identity() if identity is None else identity),
        **provider.request_identity(config),
        messages=messages,
        config=config.cache_dict(),
        **key_parts,
    )


def cache_hit(cache: Store | None, key: str, keep_failed: bool) -> CallResult | None:
    """The cached answer of ``key`` (None: none usable). A cached entry marked not final (an unparseable or
    truncated completion) is not served unless ``keep_failed``; a cached refusal is raised again."""
    hit = cache.get(key) if cache is not None else None
    if hit is None or not (hit.get("final", True) or keep_failed):
        return None
    if "rejected" in hit:
        rejection = ClientRequestError(hit["rejected"], status=hit.get("status"))
        rejection.attempts = 0  # served from the cache: no request made
        raise rejection
    return CallResult(ModelOutput.model_validate(hit), True, 0, key, bool(hit.get("final", True)))


class CachedCaller:
    """The part every caller shares: the key (with an explicit model identity when given), the cache lookup
    and the store. :meth:`send` makes a call the cache could not serve."""

    def __init__(
        self, cache: Store | None, *, keep_failed: bool = False, identity: dict[str, Any] | None = None
    ) -> None:
        self.cache = cache
        #: serve cached unparseable / truncated completions instead of calling again
        self.keep_failed = keep_failed
        #: the model identity keys are made with (None: the provider's own)
        self.identity = identity

    def key(self, provider: Provider, messages: list[Message], config: GenerateConfig, **key_parts: Any) -> str:
        return call_key(provider, messages, config, self.identity, **key_parts)

    async def call(
        self,
        provider: Provider,
        messages: list[Message],
        config: GenerateConfig,
        *,
        limiter: Limiter | None = None,
        **key_parts: Any,
    ) -> CallResult:
        key = self.key(provider, messages, config, **key_parts)
        hit = cache_hit(self.cache, key, self.keep_failed)
        if hit is not None:
            return hit
        return await self.send(provider, messages, config, key, limiter, key_parts)

    async def send(
        self,
        provider: Provider,
        messages: list[Message],
        config: GenerateConfig,
        key: str,
        limiter: Limiter | None,
        key_parts: dict[str, Any],
    ) -> CallResult:
        raise NotImplementedError

    def store(self, key: str, entry: dict[str, Any]) -> None:
        if self.cache is not None:
            self.cache.put(key, entry)


class DirectCaller(CachedCaller):
    """The cache, then the server: through ``limiter`` (the call's, else this caller's), the retry layer and
    ``guard`` (``--max-cost``). Stores nothing but definitive refusals (HTTP 400/422), cached as final and
    raised again on the next hit; a :class:`ProviderError` that ends the retries carries ``attempts``."""

    def __init__(
        self,
        cache: Store | None,
        retry: RetryPolicy | None = None,
        *,
        limiter: Limiter | None = None,
        guard: CallGuard | None = None,
        keep_failed: bool = False,
        identity: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(cache, keep_failed=keep_failed, identity=identity)
        self.retry = retry or RetryPolicy()
        self.limiter = limiter
        self.guard = guard

    def derive(self, *, limiter: Limiter | None = None, guard: CallGuard | None = None) -> DirectCaller:
        """This caller with another limiter or guard (None: this one's)."""
        return DirectCaller(
            self.cache,
            self.retry,
            limiter=limiter or self.limiter,
            guard=guard or self.guard,
            keep_failed=self.keep_failed,
            identity=self.identity,
        )

    async def send(
        self,
        provider: Provider,
        messages: list[Message],
        config: GenerateConfig,
        key: str,
        limiter: Limiter | None,
        key_parts: dict[str, Any],
    ) -> CallResult:
        attempts = 0
        slots = limiter or self.limiter
        guard = self.guard

        def count(n: int) -> None:
            nonlocal attempts
            attempts = n

        def send() -> Awaitable[ModelOutput]:
            if guard is None:
                return provider.generate(messages, config)
            return guard(messages, config, lambda: provider.generate(messages, config))

        def once() -> Awaitable[ModelOutput]:
            return send() if slots is None else slots.run(send)

        try:
            out = await with_retries(once, provider.should_retry, self.retry, count)
        except ProviderError as exc:
            exc.attempts = max(attempts, 1)
            if isinstance(exc, ClientRequestError) and exc.status in REJECTED_STATUSES:
                rejected = {"rejected": str(exc), "status": exc.status}
                self.store(self.key(provider, messages, config, **key_parts), rejected)
            raise
        # stored under what was actually sent (a structured-output fallback changes the request)
        return CallResult(out, False, attempts, self.key(provider, messages, config, **key_parts), None)


class NotCached(ProviderError):
    """Raised by :class:`CacheOnlyCaller` for a call the cache cannot serve (fatal: stops that item's grading)."""

    fatal = True


class CacheOnlyCaller(CachedCaller):
    """The cache alone: a call it cannot serve raises :class:`NotCached`."""

    async def send(
        self,
        provider: Provider,
        messages: list[Message],
        config: GenerateConfig,
        key: str,
        limiter: Limiter | None,
        key_parts: dict[str, Any],
    ) -> CallResult:
        raise NotCached("not in the cache")


class Recorder:
    """A store that serves nothing and records every write, in order."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, dict[str, Any]]] = []

    def get(self, key: str) -> dict[str, Any] | None:
        return None

    def put(self, key: str, value: dict[str, Any]) -> None:
        self.writes.append((key, value))


class RecordingCaller(DirectCaller):
    """The server with no cache lookup; what the grader stores is recorded in :attr:`writes` (an engine's
    worker: the driver served what the cache could and writes these entries itself)."""

    def __init__(
        self,
        retry: RetryPolicy | None = None,
        *,
        limiter: Limiter | None = None,
        identity: dict[str, Any] | None = None,
    ) -> None:
        self.recorder = Recorder()
        super().__init__(self.recorder, retry, limiter=limiter, identity=identity)

    @property
    def writes(self) -> list[tuple[str, dict[str, Any]]]:
        return self.recorder.writes
