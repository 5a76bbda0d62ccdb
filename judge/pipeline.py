"""The run loop: one way to judge many items, whatever makes the calls.

:func:`run` owns everything about a run but the calls: the checks before the first call, repeats and
both orders (:class:`ItemWork`), the ``--max-cost`` budget, the verdicts streamed to ``out`` in input
order and the :class:`Tally`. An :class:`Executor` only turns each unit's work into its result:

* :class:`InProcess` -- here, at most a window of items at once, every call through one
  :class:`~judge.limiter.AdaptiveLimiter` (the default);
* :class:`judge.batch.BatchAPI` -- the provider's Batch API, in rounds;
* :class:`judge.engines.score.OnEngine` -- an engine's workers (Ray), the cached items served here.

Executors import this module; this module imports none of them. :func:`run_units` is the same loop for
any unit of work (MT-Bench's matches: one or two judge calls each, one record).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pydantic import BaseModel

from judge.cache import Cache
from judge.calls import Caller, DirectCaller
from judge.config import GenerateConfig, Message
from judge.dataset import Item
from judge.errors import BudgetReached, ConfigError, RubricError
from judge.grader import Grader
from judge.io import OrderedJsonlWriter, write_jsonl
from judge.limiter import AdaptiveLimiter, Limiter
from judge.pricing import cost_usd
from judge.progress import progress_bar
from judge.providers._base import ModelOutput, Provider
from judge.rubric import Rubric
from judge.trials import TrialStats, TrialTally, combine_order_verdicts, combine_repeats, swapped_values
from judge.verdict import Verdict

if TYPE_CHECKING:
    from judge.batch import BatchSettings

U = TypeVar("U")
R = TypeVar("R")

class Summary(BaseModel):
    """Totals of a run."""

    n_items: int
    n_ok: int
    n_unscored: int
    n_cached: int
    mean_score: float | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    unscored_reasons: dict[str, int]
    trials: TrialStats | None = None
    """--repeats / --both-orders: flip rate, spread, position consistency, P(first wins)."""



class ExactSum:
    """A float sum that does not depend on the order of the terms (Shewchuk's partials, as math.fsum):
    a streamed run adds its verdicts as they finish, in an order that changes from run to run."""

    def __init__(self) -> None:
        self._partials: list[float] = []

    def add(self, x: float) -> None:
        i = 0
        for y in self._partials:
            if abs(x) < abs(y):
                x, y = y, x
            hi = x + y
            lo = y - (hi - x)
            if lo:
                self._partials[i] = lo
                i += 1
            x = hi
        self._partials[i:] = [x]

    def value(self) -> float:
        return math.fsum(self._partials)


class Tally:
    """The totals of a run, one verdict at a time: what :class:`Summary` reports, the unscored causes the
    exit code needs and the score distribution, in memory that does not grow with the items."""

    def __init__(self) -> None:
        self.n_items = self.n_ok = self.n_cached = 0
        self.prompt_tokens = self.completion_tokens = 0
        self.score_sum = ExactSum()
        self.cost = ExactSum()
        self.cost_unknown = False
        self.unscored_reasons: dict[str, int] = {}
        self.causes: dict[str | None, int] = {None: 0, "transport": 0, "parse": 0}
        self.distribution: dict[str, int] = {}
        """Scored verdicts per label, or per score (whole points; else two decimals)."""
        self.trials = TrialTally()
        self.report: Any = None
        """What the executor reports about the run (a :class:`~judge.batch.BatchReport`), or None."""

    @classmethod
    def of(cls, verdicts: Iterable[Verdict]) -> Tally:
        tally = cls()
        for v in verdicts:
            tally.add(v)
        return tally

    def add(self, v: Verdict) -> None:
        self.n_items += 1
        self.n_cached += v.cached
        self.prompt_tokens += v.prompt_tokens
        self.completion_tokens += v.completion_tokens
        if v.cost_usd is None:
            self.cost_unknown = True
        else:
            self.cost.add(v.cost_usd)
        cause = v.unscored_cause
        self.causes[cause] = self.causes.get(cause, 0) + 1
        if v.status == "ok":
            self.n_ok += 1
            if v.score is not None:
                self.score_sum.add(v.score)
                s = v.score
                key = v.label or (str(round(s)) if float(s).is_integer() or s > 1 else f"{s:.2f}")
                self.distribution[key] = self.distribution.get(key, 0) + 1
        else:
            reason = (v.error or "unknown").split(":")[0]
            self.unscored_reasons[reason] = self.unscored_reasons.get(reason, 0) + 1
        self.trials.add(v)

    def summary(self) -> Summary:
        return Summary(
            n_items=self.n_items,
            n_ok=self.n_ok,
            n_unscored=self.n_items - self.n_ok,
            n_cached=self.n_cached,
            mean_score=self.score_sum.value() / self.n_ok if self.n_ok else None,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            cost_usd=None if self.cost_unknown else round(self.cost.value(), 6),
            unscored_reasons=self.unscored_reasons,
            trials=self.trials.stats() if self.trials.used else None,
        )


class Results(list[Verdict]):
    """Verdicts in input order, with helpers for tables and totals."""

    #: what a ``--batch`` run did (batches, lines, batch vs synchronous cost); None for a synchronous run
    batch_report: Any = None

    def summary(self) -> Summary:
        return Tally.of(self).summary()

    def to_records(self) -> list[dict[str, Any]]:
        return [v.model_dump(mode="json") for v in self]

    def to_pandas(self) -> Any:
        """A DataFrame with one row per verdict (imports pandas on demand)."""
        import pandas as pd

        return pd.DataFrame(self.to_records())

    def to_jsonl(self, path: str | Path) -> None:
        write_jsonl(path, self.to_records())



def check_items(items: Iterable[Item], rubric: Rubric) -> None:
    """Fail before any model call if an item lacks an input the rubric requires (an empty answer, "", is an
    answer: the judge judges it)."""
    for item in items:
        for name in rubric.spec.inputs.required:
            value = item.values().get(name)
            if value is None or (isinstance(value, float) and value != value):
                msg = f"rubric '{rubric.id}' requires '{name}', which item '{item.id}' lacks"
                msg += " (use --map to rename a column)"
                raise item.error(msg, name)



def check_run(grader: Grader, items: Iterable[Item], repeats: int = 1, both_orders: bool = False) -> None:
    """Everything that can stop a run, checked before its first call."""
    problems = grader.rubric.validate()  # a template mistake stops the run before any call, not after some
    if problems:
        raise RubricError("; ".join(problems), path=grader.rubric.source)
    check_items(items, grader.rubric)
    check_trials(grader, repeats, both_orders)



async def bounded_map(
    fn: Callable[[U], Awaitable[R]], items: Iterable[U], done: Callable[[int, R], None], *, window: int
) -> None:
    """``done(i, await fn(item_i))`` for every item, at most ``window`` at once, started in input order.

    The next item is drawn from ``items`` only when a slot frees up, so a generator is read lazily.
    The first exception cancels the items in flight and is raised; no further item starts."""
    slots = asyncio.Semaphore(window)
    tasks: set[asyncio.Task[None]] = set()
    errors: list[BaseException] = []

    async def one(i: int, item: U) -> None:
        try:
            done(i, await fn(item))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            errors.append(exc)  # before the slot frees up: no further item starts
            raise
        finally:
            slots.release()

    def settled(t: asyncio.Task[None]) -> None:
        tasks.discard(t)
        if not t.cancelled():
            t.exception()  # retrieved here (raised from errors), so asyncio does not log it again

    try:
        for i, item in enumerate(items):
            await slots.acquire()
            if errors:
                break
            t = asyncio.create_task(one(i, item))
            tasks.add(t)
            t.add_done_callback(settled)
        while tasks and not errors:
            await asyncio.wait(set(tasks), return_when=asyncio.FIRST_EXCEPTION)
        if errors:
            raise errors[0]
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def check_trials(grader: Grader, repeats: int, both_orders: bool) -> None:
    """Fail before any call when ``--repeats`` / ``--both-orders`` cannot apply to this grader."""
    if repeats < 1:
        raise ConfigError(f"--repeats must be at least 1, got {repeats}")
    if both_orders and not grader.rubric.kind_info.compares_pair:
        raise ConfigError(
            f"--both-orders judges a pair as given and swapped; rubric '{grader.rubric.id}' is not pairwise "
            "(use -r pairwise or a rubric with kind: pairwise)"
        )


class Budget:
    """``--max-cost``: what a run may spend, checked as each call to the judge starts.

    A call sent to the server (one served from the cache costs nothing and is not checked) reserves its
    worst case -- its prompt's tokens (:func:`count_prompt_tokens`) plus ``max_tokens`` of completion, at
    the judge's prices -- once it holds a call slot, and gives the reservation back when it ends, its real
    cost (from the usage the server reports) joining the spending. It starts while the spending, the
    reservations in flight and its own stay within ``max_usd``; when only reservations in flight stand in
    the way it waits for them to end; when the spending alone leaves no room it is refused
    (:class:`BudgetReached`) and its item is unscored with "budget reached". Each call is checked on its
    own (re-asks and retries too), so a smaller call may still fit after a larger one was refused. The
    spending never passes ``max_usd`` (as long as the prompt count is not below the server's), and a run
    with items left stops less than one call's worst case below it.
    """

    def __init__(self, max_usd: float, provider: Provider, prices: str | None = None) -> None:
        if max_usd <= 0:
            raise ConfigError(f"--max-cost must be above 0 USD, got {max_usd}")
        self.max_usd = max_usd
        self.provider = provider
        self.prices = prices
        self.spent = 0.0
        self.in_flight = 0.0
        self.skipped = 0  # items unscored because a call of theirs was refused
        self._changed: asyncio.Condition | None = None

    @property
    def reached(self) -> bool:
        """Whether any item went unjudged for the budget."""
        return self.skipped > 0

    @classmethod
    def for_grader(cls, max_usd: float, grader: Grader) -> Budget:
        """A budget for ``grader``'s judge; a :class:`ConfigError` when the price table does not know it."""
        if cost_usd(grader.provider.id, 1, 1, grader.prices) is None:
            raise ConfigError(
                f"--max-cost: judge '{grader.provider.id}' has no price in the price table, so its spending cannot "
                f'be counted; give one with --prices FILE ({{"{grader.provider.model}": {{"input": USD per 1M '
                'tokens, "output": USD per 1M tokens}})'
            )
        return cls(max_usd, grader.provider, grader.prices)

    def _cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return cost_usd(self.provider.id, prompt_tokens, completion_tokens, self.prices) or 0.0

    async def __call__(
        self, messages: list[Message], config: GenerateConfig, generate: Callable[[], Awaitable[ModelOutput]]
    ) -> ModelOutput:
        """Send one call within the budget (the :class:`judge.grader.CallGuard` of a budgeted grader)."""
        worst = self._cost(count_prompt_tokens(self.provider, messages)[0], config.max_tokens)
        if self._changed is None:
            self._changed = asyncio.Condition()
        async with self._changed:
            while self.spent + self.in_flight + worst > self.max_usd:
                if self.spent + worst > self.max_usd:
                    raise BudgetReached(
                        f"--max-cost {self.max_usd:g} USD: ${self.spent:.4f} spent, this call may cost ${worst:.4f}"
                    )
                await self._changed.wait()  # calls in flight hold reservations they may not need
            self.in_flight += worst
        spent = 0.0
        try:
            out = await generate()
            spent = self._cost(out.usage.prompt_tokens, out.usage.completion_tokens)
            return out
        finally:
            async with self._changed:
                self.in_flight -= worst
                self.spent += spent
                self._changed.notify_all()

    def unscored(self, grader: Grader, item: Item) -> Verdict:
        """The verdict of an item a call of which was refused because it would pass the budget."""
        self.skipped += 1
        return Verdict(
            id=item.id,
            rubric=grader.rubric.id,
            rubric_hash=grader.rubric.content_hash,
            judge_model=grader.provider.id,
            score_mode=grader.score_mode,
            score=None,
            status="unscored",
            error=f"budget reached: --max-cost {self.max_usd:g} USD (its next call would pass it; not judged)",
            cost_usd=0.0,
            temperature=grader.config.temperature,
            seed=grader.config.seed,
            attempts=0,
        )


SLOW_START = 4
"""Call slots a run starts with; one more per success up to --concurrency until the server pushes back."""



def count_prompt_tokens(provider: Provider, messages: list[Message]) -> tuple[int, str]:
    """(tokens, tokenizer used) of a prompt: the judge model's own tokenizer where the provider has one
    here, otherwise characters / 4."""
    counted = provider.count_tokens(messages)
    if counted is None:
        return -(-sum(len(m["content"]) for m in messages) // 4), "chars/4"
    return counted, provider.id




class GraderLike(Protocol):
    """What an executor needs of each of a run's graders: a :class:`~judge.grader.Grader`, or a model under
    test answering prompts (:class:`judge.generation.Answerer`). The executor rebinds it to the caller that
    makes its calls its way (:meth:`with_caller`); the rest says which model, cache and prices it uses."""

    @property
    def provider(self) -> Provider: ...

    @property
    def caller(self) -> Caller: ...

    @property
    def cache(self) -> Cache | None: ...

    @property
    def keep_failed(self) -> bool: ...

    @property
    def batch(self) -> BatchSettings | None: ...

    @property
    def prices(self) -> str | None: ...

    @property
    def config(self) -> GenerateConfig:
        """The settings of its calls (how a Batch API answer line is read)."""
        ...

    def with_caller(self, caller: Caller, *, batch: BatchSettings | None = None) -> GraderLike:
        """The same, its calls made by ``caller`` (``batch``: the settings of the Batch API run it belongs to)."""
        ...


Work = Callable[[Sequence[Any]], Callable[[Any], Awaitable[Any]]]
"""What a run does with each unit: given the run's graders (:class:`GraderLike`) as the executor binds them
(their calls made its way), the coroutine function that turns one unit into its result. Built once per binding
(per run in process, per round for the Batch API, per item on an engine's worker); picklable for an engine."""


class Executor(Protocol):
    """Turns the units of a run into results, each handed to ``done(input index, result)`` as it finishes."""

    name: str
    shows_progress: bool
    """Whether it shows its own progress (then the run shows none)."""

    def check(self, grader: GraderLike, *, budget: Budget | None = None) -> None:
        """Refuse, before any call, what this executor cannot do with ``grader`` (and why)."""
        ...

    async def map(
        self,
        graders: Sequence[GraderLike],
        work: Work,
        units: Iterable[Any],
        done: Callable[[int, Any], None],
        *,
        progress: bool = False,
    ) -> Any:
        """Run ``work`` on every unit; return what it has to report about the run (or None)."""
        ...


class InProcess:
    """In this process: at most ``window`` units at once (started in input order, drawn from ``units`` only
    as a slot frees up, so a generator is read lazily), every call through one limiter -- by default an
    :class:`~judge.limiter.AdaptiveLimiter` bounded by ``concurrency``, which backs off on 429/503 and
    growing latency and waits out ``Retry-After`` without holding a slot."""

    name = "local"
    shows_progress = False

    def __init__(self, concurrency: int = 16, *, limiter: Limiter | None = None, window: int | None = None) -> None:
        self.concurrency = max(1, concurrency)
        self.limiter = limiter
        # units in progress (rendered, in the cache, waiting for a call slot or a retry): more than the call
        # slots, so a unit waiting out a backoff leaves room for others, yet not every unit at once
        self.window = window or max(64, 4 * self.concurrency)

    def check(self, grader: GraderLike, *, budget: Budget | None = None) -> None:
        """Everything runs here."""

    async def map(
        self,
        graders: Sequence[GraderLike],
        work: Work,
        units: Iterable[Any],
        done: Callable[[int, Any], None],
        *,
        progress: bool = False,
    ) -> None:
        calls = self.limiter or AdaptiveLimiter(self.concurrency, slow_start=SLOW_START)
        bound = [
            g.with_caller(g.caller.derive(limiter=calls)) if isinstance(g.caller, DirectCaller) else g for g in graders
        ]
        await bounded_map(work(bound), units, done, window=self.window)


@dataclass(frozen=True)
class ItemWork:
    """One item's verdict: ``repeats`` trials (seed, seed + 1, ...) one after another, each pair judged as given
    and swapped with ``both_orders`` (:mod:`judge.trials`); an item a call of which the ``budget`` refused is
    unscored with "budget reached". Picklable without a budget (what an engine's worker runs)."""

    repeats: int = 1
    both_orders: bool = False
    budget: Budget | None = None

    def __call__(self, graders: Sequence[Grader]) -> Callable[[Item], Awaitable[Verdict]]:
        grader = graders[0]
        trials = [grader.with_seed(grader.config.seed + r) for r in range(1, self.repeats)]
        trials.insert(0, grader)
        both_orders, budget = self.both_orders, self.budget

        async def trial(g: Grader, item: Item) -> Verdict:
            if not both_orders:
                return await g.grade(item)
            swapped = g.rubric.render_item(item, swapped_values(item.values()), g.score_mode)
            v1, v2 = await asyncio.gather(g.grade(item), g.grade_messages(item.id, swapped))
            return combine_order_verdicts(v1, v2)

        async def judge_item(item: Item) -> Verdict:
            try:
                done = [await trial(g, item) for g in trials]  # repeats one after another: no burst per item
            except BudgetReached:
                if budget is None:
                    raise
                return budget.unscored(grader, item)
            return combine_repeats(done) if len(done) > 1 else done[0]

        return judge_item


async def run_units(
    executor: Executor,
    graders: Sequence[GraderLike],
    work: Work,
    units: Iterable[U],
    done: Callable[[int, R], None],
    *,
    n: int,
    out: str | Path | None = None,
    to_record: Callable[[R], Any] = dict,  # type: ignore[assignment]
    progress: bool = False,
    desc: str = "",
) -> Any:
    """Run ``work`` on ``units`` with ``executor``; stream each result's record to ``out`` as it finishes.

    ``out.partial`` holds the records in finishing order; at the end ``out`` is written in input order,
    atomically, so reruns give identical files (a result whose ``to_record`` is None has no line). If any unit
    raises, the others are cancelled and ``out.partial`` keeps what finished. Returns the executor's report."""
    writer = OrderedJsonlWriter(out, n) if out is not None else None
    with writer or contextlib.nullcontext(), progress_bar(n, desc, progress and not executor.shows_progress) as bar:

        def finished(i: int, result: R) -> None:
            done(i, result)
            if writer is not None and (record := to_record(result)) is not None:
                writer.write(i, record)
            bar.update(1)

        return await executor.map(graders, work, units, finished, progress=progress)


async def run(
    grader: Grader,
    items: Iterable[Item],
    executor: Executor | None = None,
    *,
    n: int | None = None,
    on_verdict: Callable[[int, Verdict], None] | None = None,
    repeats: int = 1,
    both_orders: bool = False,
    budget: Budget | None = None,
    out: str | Path | None = None,
    progress: bool = False,
    desc: str = "",
    checked: bool = False,
) -> Tally:
    """Judge ``items`` with ``executor`` (default :class:`InProcess`); one verdict per item, to ``on_verdict(input
    index, verdict)``, to ``out`` (in input order) and into the returned :class:`Tally` (``report``: the
    executor's, e.g. a :class:`~judge.batch.BatchReport`).

    Before any call: the rubric, the items (unless ``checked``: ``items`` may then be a generator, read once),
    ``repeats`` / ``both_orders`` and what the executor refuses. ``repeats`` judges each item that many times
    (seed, seed + 1, ...) and ``both_orders`` each pair as given and swapped (:mod:`judge.trials`). With a
    ``budget``, each call sent reserves its worst case while in flight and is refused only when it would
    pass the cap (:class:`Budget`); an item with a refused call is unscored with "budget reached".
    ``n``: the number of items (default ``len(items)``)."""
    executor = executor or InProcess()
    if not checked:
        check_run(grader, items, repeats, both_orders)
    executor.check(grader, budget=budget)
    if n is None:
        n = len(items)  # type: ignore[arg-type]
    tally = Tally()

    def keep(i: int, v: Verdict) -> None:
        tally.add(v)
        if on_verdict is not None:
            on_verdict(i, v)

    graders = [grader.with_guard(budget) if budget is not None else grader]
    work = ItemWork(repeats, both_orders, budget)
    tally.report = await run_units(
        executor,
        graders,
        work,
        items,
        keep,
        n=n,
        out=out,
        to_record=lambda v: v.model_dump(mode="json"),
        progress=progress,
        desc=desc,
    )
    assert tally.n_items == n, f"every item yields exactly one verdict ({tally.n_items} of {n}: did the file change?)"
    return tally
