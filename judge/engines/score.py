"""``judge score`` on an engine: the items go through :meth:`Engine.map`, one grader per worker.

Who does what:

* **The driver** (this process) validates the rubric and the items, serves every item whose calls
  are all in the cache (that is how a rerun resumes: finished items are never sent again), sends the
  rest to the engine, writes each returned item's cache entries itself (workers never touch the
  SQLite file, which may not even be on their machine) and streams the verdicts to ``--out`` through
  :func:`judge.runner.gather_streamed`, as the local path does, so the output file, its ``.partial``
  on an interrupt, the progress bar and the summary are the same.
* **A worker** (a Ray actor) builds the grader once from a picklable :class:`GraderRecipe` (rubric
  text, judge name, the driver's generate config and cache identity, so the cache keys it reports
  are the driver's) and grades its batch with the same :class:`~judge.grader.Grader` code, re-asks
  included; it returns each verdict with the cache entries the grader would have written.
* **API judges** (``openai/...``): the calls are made by the workers, but every HTTP attempt first
  takes a permit from one :class:`PermitServer` actor that owns the run's
  :class:`~judge.limiter.AdaptiveLimiter`, so at most ``--concurrency`` requests are in flight across
  all workers together and a 429's ``Retry-After`` pauses all of them. (The other design -- the
  driver keeps the limiter and workers only make HTTP calls -- would leave rendering, parsing and
  re-asks on the driver, i.e. nothing worth distributing.) Local judges need no limiter: each actor
  owns its model and calls it one at a time.

``ray`` is imported only when a run uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from judge.calls import CacheOnlyCaller, NotCached, RecordingCaller
from judge.config import GenerateConfig
from judge.dataset import Item
from judge.errors import ConfigError, ProviderError, RateLimitError, RubricError
from judge.limiter import is_overload
from judge.pricing import cost_usd
from judge.retry import RetryPolicy
from judge.verdict import Verdict

if TYPE_CHECKING:
    from judge.engines import BatchFn, Engine
    from judge.grader import Grader
    from judge.runner import Results

T = TypeVar("T")

LOCAL_ITEMS_PER_BATCH = 8
"""Items per engine batch for a local judge: small, so verdicts stream back steadily (a forward pass
costs far more than moving a batch)."""
API_ITEMS_PER_BATCH_MIN = 16
"""Items per engine batch for an API judge at least; a worker grades its batch concurrently, so a batch
of ``--concurrency`` items lets one worker alone fill every permit."""


@dataclass(frozen=True)
class GraderRecipe:
    """What a worker needs to build the driver's grader (picklable: text and names, no connections)."""

    judge: str
    rubric_text: str
    rubric_source: str
    rubric_hash: str
    config: GenerateConfig
    settings: dict[str, Any]
    """The driver's grader settings (:attr:`judge.grader.Grader.settings`), cache and batch left out."""
    cache_identity: dict[str, Any]
    provider_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, grader: Grader, judge: str, **provider_options: Any) -> GraderRecipe:
        """The recipe of ``grader``, whose provider was built from ``judge`` and ``provider_options``."""
        if grader.provider.name == "openai" and provider_options.get("base_url") is None:
            # the driver's $OPENAI_BASE_URL, resolved here so a worker without it calls the same server
            provider_options["base_url"] = getattr(grader.provider, "base_url", None)
        settings = {k: v for k, v in grader.settings.items() if k not in ("cache", "caller", "batch")}
        return cls(
            judge=judge,
            rubric_text=grader.rubric.text,
            rubric_source=str(grader.rubric.source),
            rubric_hash=grader.rubric.content_hash,
            config=grader.config,
            settings=settings,
            cache_identity=grader.provider.cache_identity(),
            provider_options={k: v for k, v in provider_options.items() if v is not None},
        )

    @property
    def retry(self) -> RetryPolicy:
        return self.settings.get("retry") or RetryPolicy()

    def build(self) -> Grader:
        """The grader, in a worker: built with the driver's settings, no cache (the driver's)."""
        from judge.grader import Grader
        from judge.providers.registry import get_provider
        from judge.rubric import parse_rubric

        rubric = parse_rubric(self.rubric_text, self.rubric_source)
        if rubric.content_hash != self.rubric_hash:
            raise RubricError("the rubric parsed on a worker differs from the driver's", path=self.rubric_source)
        grader = Grader(rubric, get_provider(self.judge, **self.provider_options), **self.settings)
        if grader.config != self.config:
            raise ConfigError(
                f"the judge built on a worker sends {grader.config.cache_dict()}, "
                f"the driver's {self.config.cache_dict()}"
            )
        return grader

    def caller(self, limiter: Any = None) -> RecordingCaller:
        """A worker's caller for one item: the server, no cache, the writes recorded; keys made with the driver's
        identity (e.g. its path of a local model), so the keys a worker reports are the driver's."""
        return RecordingCaller(self.retry, limiter=limiter, identity=dict(self.cache_identity))


Graded = tuple[Verdict, list[tuple[str, dict[str, Any]]]]
"""What a worker returns per item: the verdict and the cache entries to write."""


def grading_batch(recipe: GraderRecipe, permits: Any = None) -> BatchFn:
    """The per-worker batch function (module level: it pickles to Ray workers).

    ``permits``: a :class:`PermitServer` actor handle every HTTP attempt takes a permit from (API
    judges); None: items are graded one after another (a local model runs one call at a time).
    """
    grader = recipe.build()
    limiter = SharedLimiter(permits) if permits is not None else None
    loop = asyncio.new_event_loop()  # one loop per worker: an HTTP client's connections belong to it

    async def one(item: Item) -> Graded:
        caller = recipe.caller(limiter)
        return await grader.with_caller(caller).grade(item), caller.writes

    async def grade(items: list[Item]) -> list[Graded]:
        if limiter is None:
            return [await one(item) for item in items]
        return list(await asyncio.gather(*(one(item) for item in items)))

    def run(items: list[Item]) -> list[Graded]:
        return loop.run_until_complete(grade(items))

    return run


class PermitServer:
    """A Ray actor (async) that owns the run's adaptive limiter and hands out one permit per HTTP attempt.

    A worker's :class:`SharedLimiter` calls :meth:`acquire` before a request and :meth:`release` after
    it with how it ended. Each permit is one ``limiter.run(call)`` whose ``call`` lasts from the grant to
    the release and raises the worker's overload, so the limiter sees every worker's calls as its own:
    its bound on calls in flight, its pacing and its ``Retry-After`` pauses hold across the workers.
    """

    def __init__(self, concurrency: int, slow_start: int | None) -> None:
        from judge.limiter import AdaptiveLimiter

        self.limiter = AdaptiveLimiter(concurrency, slow_start=slow_start)
        self._held: dict[str, asyncio.Future[BaseException | None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def acquire(self, token: str) -> None:
        loop = asyncio.get_running_loop()
        granted: asyncio.Future[None] = loop.create_future()
        done: asyncio.Future[BaseException | None] = loop.create_future()
        self._held[token] = done

        async def hold() -> None:
            granted.set_result(None)
            outcome = await done
            if outcome is not None:
                raise outcome

        async def permit() -> None:
            # a worker's overload, raised here for the limiter to see; the worker handles the call itself
            with contextlib.suppress(ProviderError):
                await self.limiter.run(hold)

        task = asyncio.ensure_future(permit())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        await granted

    async def release(self, token: str, overload: tuple[bool, int | None, float | None] | None = None) -> None:
        done = self._held.pop(token, None)
        if done is None or done.done():
            return
        if overload is None:
            done.set_result(None)
            return
        rate_limited, status, retry_after = overload
        kind = RateLimitError if rate_limited else ProviderError
        done.set_result(kind(f"HTTP {status} on a worker", status=status, retry_after=retry_after))


class SharedLimiter:
    """A worker's :class:`~judge.limiter.Limiter` that takes each call's slot from a :class:`PermitServer`."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.limit = 0.0  # the bound lives in the server

    async def run(self, call: Callable[[], Awaitable[T]]) -> T:
        token = uuid.uuid4().hex
        await self.server.acquire.remote(token)
        try:
            result = await call()
        except BaseException as exc:
            # an overload is always a ProviderError (429 or 503); the isinstance check says so to the type checker
            overload = (
                (isinstance(exc, RateLimitError), exc.status, exc.retry_after)
                if isinstance(exc, ProviderError) and is_overload(exc)
                else None
            )
            self.server.release.remote(token, overload)
            raise
        self.server.release.remote(token, None)
        return result


async def from_cache(grader: Grader, item: Item) -> Verdict | None:
    """``item``'s verdict if every call it needs is in the cache (as the local engine would serve it), else None."""
    if grader.cache is None:
        return None
    try:
        return await grader.with_caller(CacheOnlyCaller(grader.cache, keep_failed=grader.keep_failed)).grade(item)
    except NotCached:
        return None


async def run_items_on(
    engine: Engine,
    grader: Grader,
    items: list[Item],
    recipe: GraderRecipe,
    *,
    concurrency: int = 16,
    out: str | Path | None = None,
    progress: bool = False,
    items_per_batch: int | None = None,
) -> Results:
    """:func:`judge.runner.run_items` on ``engine``: same verdicts, same output file, same cache entries.

    Items whose calls are all cached are served here; the others are graded on the engine's workers
    (see the module docstring). ``concurrency`` bounds an API judge's requests in flight across all
    workers together.
    """
    from judge.runner import SLOW_START, Results, check_items, gather_streamed

    problems = grader.rubric.validate()
    if problems:
        raise RubricError("; ".join(problems), path=grader.rubric.source)
    check_items(items, grader.rubric)
    if grader.batch is not None:
        raise ConfigError(f"--engine {engine.name} grades on workers; --batch sends the calls to the Batch API")

    served = [await from_cache(grader, item) for item in items]
    todo = [item for item, v in zip(items, served, strict=True) if v is None]
    loop = asyncio.get_running_loop()
    waiting: list[asyncio.Future[Verdict]] = [loop.create_future() for _ in todo]
    jobs: list[Awaitable[Verdict | None]] = []
    it = iter(waiting)
    for v in served:
        jobs.append(_ready(v) if v is not None else next(it))

    stop = threading.Event()
    worker: threading.Thread | None = None
    permits: Any = None
    if todo:
        engine.start()
        local = grader.provider.name in ("local", "hf")
        if not local and engine.name == "ray":
            import ray

            permits = ray.remote(PermitServer).options(num_cpus=0).remote(concurrency, SLOW_START)
        size = items_per_batch or (LOCAL_ITEMS_PER_BATCH if local else max(API_ITEMS_PER_BATCH_MIN, concurrency))

        def deliver(k: int, result: Graded) -> None:
            verdict, writes = result
            if grader.cache is not None:
                for key, value in writes:
                    grader.cache.put(key, value)
            if not verdict.cached:  # priced here, with the driver's price table
                verdict.cost_usd = cost_usd(
                    grader.provider.id, verdict.prompt_tokens, verdict.completion_tokens, grader.prices
                )
            if not waiting[k].done():
                waiting[k].set_result(verdict)

        def fail(exc: BaseException) -> None:
            for fut in waiting:
                if not fut.done():
                    fut.set_exception(exc)
                    return

        def pump() -> None:
            results = engine.map(_factory(recipe, permits), todo, batch_size=size)
            try:
                for k, result in enumerate(results):
                    if stop.is_set():
                        break
                    loop.call_soon_threadsafe(deliver, k, result)
            except BaseException as exc:  # noqa: BLE001 - handed to the event loop, raised there
                loop.call_soon_threadsafe(fail, exc)
            finally:
                close = getattr(results, "close", None)
                if close is not None:
                    close()

        worker = threading.Thread(target=pump, name="judge-engine", daemon=True)
        worker.start()
    try:
        verdicts = await gather_streamed(
            jobs, out=out, to_record=lambda v: v.model_dump(mode="json"), progress=progress
        )
    finally:
        stop.set()
        if worker is not None:
            await asyncio.to_thread(worker.join, 5.0)
        if permits is not None:
            import ray

            ray.kill(permits)
    return Results(v for v in verdicts if v is not None)


def _factory(recipe: GraderRecipe, permits: Any) -> Callable[[], BatchFn]:
    import functools

    return functools.partial(grading_batch, recipe, permits)


async def _ready(v: T) -> T:
    return v


__all__ = ["GraderRecipe", "PermitServer", "SharedLimiter", "from_cache", "grading_batch", "run_items_on"]
