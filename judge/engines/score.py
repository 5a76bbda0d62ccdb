"""``judge score`` on an engine (:class:`OnEngine`, an executor of :func:`judge.pipeline.run`): the items go
through :meth:`Engine.map`, one grader per worker.

Who does what:

* **The driver** (this process) runs :func:`judge.pipeline.run` as the local path does -- the checks,
  the verdicts streamed to ``--out`` (its ``.partial`` on an interrupt), the progress bar and the
  tally are the same. :class:`OnEngine` serves every item whose calls are all in the cache
  (:class:`~judge.calls.CacheOnlyCaller`: that is how a rerun resumes, finished items are never sent
  again), sends the rest to the engine and writes each returned item's cache entries itself (workers
  never touch the SQLite file, which may not even be on their machine).
* **A worker** (a Ray actor) builds the grader once from a picklable :class:`GraderRecipe` (rubric
  text, judge name, the driver's grader settings and cache identity) and runs the run's
  :class:`~judge.pipeline.ItemWork` (repeats, both orders) on each item with the same
  :class:`~judge.grader.Grader` code, re-asks included, through a
  :class:`~judge.calls.RecordingCaller` that makes the keys with the driver's model identity; it
  returns each verdict with the cache entries the grader would have written.
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
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from judge.calls import CacheOnlyCaller, NotCached, RecordingCaller
from judge.config import GenerateConfig
from judge.dataset import Item
from judge.errors import ConfigError, ProviderError, RateLimitError, RubricError
from judge.limiter import is_overload
from judge.pipeline import SLOW_START, GraderLike, ItemWork, Results, Work, run
from judge.pricing import cost_usd
from judge.providers.registry import provider_info
from judge.retry import RetryPolicy
from judge.verdict import Verdict

if TYPE_CHECKING:
    from judge.engines.base import BatchFn, Engine
    from judge.grader import Grader

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
    """The driver's grader settings (:attr:`judge.grader.Grader.settings`), cache, batch and prices left out."""
    cache_identity: dict[str, Any]
    provider_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, grader: Grader, judge: str, **provider_options: Any) -> GraderRecipe:
        """The recipe of ``grader``, whose provider was built from ``judge`` and ``provider_options``."""
        if "base_url" in provider_info(grader.provider).options and provider_options.get("base_url") is None:
            # the driver's $OPENAI_BASE_URL, resolved here so a worker without it calls the same server
            provider_options["base_url"] = getattr(grader.provider, "base_url", None)
        # no cache, caller or batch (the driver's), no price table (a path the worker may not have: the driver prices)
        settings = {k: v for k, v in grader.settings.items() if k not in ("cache", "caller", "batch", "prices")}
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


def grading_batch(recipe: GraderRecipe, permits: Any = None, work: Work | None = None) -> BatchFn:
    """The per-worker batch function (module level: it pickles to Ray workers).

    ``permits``: a :class:`PermitServer` actor handle every HTTP attempt takes a permit from (API
    judges); None: items are graded one after another (a local model runs one call at a time).
    ``work``: what each item gets (:class:`~judge.pipeline.ItemWork`: repeats, both orders); default one verdict.
    """
    grader = recipe.build()
    limiter = SharedLimiter(permits) if permits is not None else None
    item_work = work or ItemWork()
    loop = asyncio.new_event_loop()  # one loop per worker: an HTTP client's connections belong to it

    async def one(item: Item) -> Graded:
        caller = recipe.caller(limiter)
        verdict = await item_work([grader.with_caller(caller)])(item)
        return verdict, caller.writes

    async def grade(items: list[Item]) -> list[Graded]:
        if limiter is None:
            return [await one(item) for item in items]
        return list(await asyncio.gather(*(one(item) for item in items)))

    def run(items: list[Item]) -> list[Graded]:
        return loop.run_until_complete(grade(items))

    weakref.finalize(run, loop.close)  # the worker's loop goes with its batch function (an in-process engine's)
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


async def from_cache(grader: Grader, item: Item, work: Work | None = None) -> Verdict | None:
    """``item``'s verdict if every call it needs is in the cache (as the local engine would serve it), else None."""
    if grader.cache is None:
        return None
    cache_only = grader.with_caller(CacheOnlyCaller(grader.cache, keep_failed=grader.keep_failed))
    try:
        return await (work or ItemWork())([cache_only])(item)
    except NotCached:
        return None


class OnEngine:
    """The :class:`~judge.pipeline.Executor` of an engine (see the module docstring): items whose calls are all
    in the cache are served here, the others graded on the engine's workers with a grader built from
    ``recipe``; the workers' cache entries are written here. ``concurrency`` bounds an API judge's requests in
    flight across all workers together."""

    shows_progress = False

    def __init__(
        self, engine: Engine, recipe: GraderRecipe, *, concurrency: int = 16, items_per_batch: int | None = None
    ) -> None:
        self.engine = engine
        self.name = engine.name
        self.recipe = recipe
        self.concurrency = concurrency
        self.items_per_batch = items_per_batch

    def check(self, grader: GraderLike, *, budget: Any = None) -> None:
        from judge.grader import Grader

        if not isinstance(grader, Grader):
            raise ConfigError(f"--engine {self.name} runs a judge's grader on its workers, not {type(grader).__name__}")
        if grader.batch is not None:
            raise ConfigError(f"--engine {self.name} grades on workers; --batch sends the calls to the Batch API")
        if budget is not None:
            raise ConfigError(
                f"--max-cost cannot be enforced with --engine {self.name}: the budget reserves each call's worst case "
                "before it is sent, and the workers send their calls on their own, reporting what they spent only "
                "with each batch of verdicts"
            )

    async def map(
        self,
        graders: Sequence[GraderLike],
        work: Work,
        units: Iterable[Any],
        done: Callable[[int, Any], None],
        *,
        progress: bool = False,
    ) -> None:
        self.check(graders[0])
        grader = cast("Grader", graders[0])
        items = list(units)
        todo: list[int] = []
        # the cache pass: an item whose calls are all cached is served here (how a rerun resumes)
        cached = work([grader.with_caller(CacheOnlyCaller(grader.cache, keep_failed=grader.keep_failed))])
        for i, item in enumerate(items):
            try:
                served = await cached(item) if grader.cache is not None else None
            except NotCached:
                served = None
            if served is None:
                todo.append(i)
            else:
                done(i, served)
        if todo:
            await self._on_workers(grader, work, items, todo, done)

    async def _on_workers(
        self, grader: Grader, work: Work, items: list[Item], todo: list[int], done: Callable[[int, Any], None]
    ) -> None:
        loop = asyncio.get_running_loop()
        finished: asyncio.Future[None] = loop.create_future()
        left = len(todo)
        stop = threading.Event()
        self.engine.start()
        local = provider_info(grader.provider).local
        permits: Any = None
        if not local and self.engine.name == "ray":
            import ray

            permits = ray.remote(PermitServer).options(num_cpus=0).remote(self.concurrency, SLOW_START)
        size = self.items_per_batch or (
            LOCAL_ITEMS_PER_BATCH if local else max(API_ITEMS_PER_BATCH_MIN, self.concurrency)
        )

        def deliver(k: int, result: Graded) -> None:
            nonlocal left
            if finished.done():
                return
            verdict, writes = result
            if grader.cache is not None:
                for key, value in writes:
                    grader.cache.put(key, value)
            if not verdict.cached:  # priced here, with the driver's price table
                verdict.cost_usd = cost_usd(
                    grader.provider.id, verdict.prompt_tokens, verdict.completion_tokens, grader.prices
                )
            try:
                done(todo[k], verdict)
            except BaseException as exc:  # noqa: BLE001 - raised in the run, not in the event loop's handler
                finished.set_exception(exc)
                return
            left -= 1
            if left == 0:
                finished.set_result(None)

        def fail(exc: BaseException) -> None:
            if not finished.done():
                finished.set_exception(exc)

        def pump() -> None:
            results = self.engine.map(_factory(self.recipe, permits, work), [items[i] for i in todo], batch_size=size)
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
            await finished
        finally:
            stop.set()
            await asyncio.to_thread(worker.join, 5.0)
            if permits is not None:
                import ray

                ray.kill(permits)


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
    repeats: int = 1,
    both_orders: bool = False,
) -> Results:
    """:func:`judge.pipeline.run` on ``engine`` (:class:`OnEngine`): the verdicts in input order, same as in
    process, same output file, same cache entries."""
    verdicts: list[Verdict | None] = [None] * len(items)

    def keep(i: int, v: Verdict) -> None:
        verdicts[i] = v

    executor = OnEngine(engine, recipe, concurrency=concurrency, items_per_batch=items_per_batch)
    await run(
        grader, items, executor, on_verdict=keep, repeats=repeats, both_orders=both_orders, out=out, progress=progress
    )
    return Results(v for v in verdicts if v is not None)


def _factory(recipe: GraderRecipe, permits: Any, work: Work) -> Callable[[], BatchFn]:
    import functools

    return functools.partial(grading_batch, recipe, permits, work)


__all__ = ["GraderRecipe", "OnEngine", "PermitServer", "SharedLimiter", "from_cache", "grading_batch", "run_items_on"]
