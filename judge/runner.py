"""Scoring many items: bounded concurrency, cache, streamed results, progress, totals.

``ascore`` is the core, written once; ``score`` is its synchronous wrapper.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence, Sized
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel

from judge.batch import BatchSettings
from judge.cache import Cache
from judge.config import GenerateConfig, Message
from judge.dataset import Item, coerce_items
from judge.errors import BudgetReached, ConfigError, RubricError
from judge.grader import Grader
from judge.io import JsonlAppender, OrderedJsonlWriter, write_jsonl
from judge.limiter import AdaptiveLimiter, Limiter
from judge.pricing import cost_usd
from judge.progress import progress_bar
from judge.providers._base import ModelOutput, Provider
from judge.rubric import Rubric
from judge.spec import JudgeSpec
from judge.trials import TrialStats, TrialTally, combine_order_verdicts, combine_repeats, swapped_values
from judge.verdict import Verdict

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


class LengthBias(BaseModel):
    """Whether the verdicts follow the answers' length: Spearman's ρ of score vs output characters (single
    rubrics), and P(longer answer wins) over the decisive picks whose two answers differ in length (pairwise;
    each order of a ``--both-orders`` pair is a pick, as MT-Bench counts it)."""

    n: int = 0
    """Scored verdicts with an output to measure."""
    rho: float | None = None
    rho_low: float | None = None
    rho_high: float | None = None
    """95% interval of ``rho``: Fisher z with the Bonett-Wright variance (:func:`judge.stats.spearman_ci`)."""
    p_longer_wins: float | None = None
    p_longer_low: float | None = None
    p_longer_high: float | None = None
    """95% Wilson interval of ``p_longer_wins`` over the ``decisive`` picks (:func:`judge.stats.wilson`)."""
    decisive: int = 0
    """Decisive picks between answers of different lengths (pairwise)."""


def length_bias(
    verdicts: Iterable[Mapping[str, Any]], lengths: Mapping[str, tuple[int | None, int | None]]
) -> LengthBias:
    """:class:`LengthBias` of verdict records (dicts as written to the verdicts file), given each item id's
    (output, output_b) length in characters (None where the item has no such text)."""
    from judge.orders import picked_answers
    from judge.stats import spearman_ci, wilson

    xs: list[float] = []
    ys: list[float] = []
    longer = decisive = 0
    pairwise = False
    for v in verdicts:
        if v.get("status") != "ok" or v.get("score") is None:
            continue
        pairwise = pairwise or v.get("label") is not None
        la, lb = lengths.get(str(v.get("id")), (None, None))
        if la is None:
            continue
        xs.append(float(la))
        ys.append(float(v["score"]))
        for pick in picked_answers(v.get("label"), v.get("orders")) if lb is not None and la != lb else []:
            decisive += 1
            longer += (la > lb) == (pick == "A")  # type: ignore[operator]
    rho, rho_low, rho_high = (None, None, None) if pairwise else spearman_ci(xs, ys)
    share = longer / decisive if decisive else None
    p_low, p_high = wilson(share, decisive)
    return LengthBias(
        n=len(xs),
        rho=rho,
        rho_low=rho_low,
        rho_high=rho_high,
        p_longer_wins=share,
        p_longer_low=p_low,
        p_longer_high=p_high,
        decisive=decisive,
    )


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


def build_grader(
    rubric: str | Path | Rubric = "factuality",
    judge: str | Provider | None = None,
    *,
    cache: bool | str | Path | Cache | None = True,
    batch: bool | dict[str, Any] | BatchSettings | None = None,
    **options: Any,
) -> Grader:
    """Resolve names into a :class:`Grader` (rubric, provider, cache, settings): a :class:`JudgeSpec` of
    ``judge`` and ``options`` (its fields -- ``score_mode``, ``base_url``, ``seed``, ``max_tokens``... --
    and any other as a provider option), built for ``rubric``.

    ``cache_namespace`` is part of every cache key: set it when the same model name means another
    model (two servers both calling theirs "local"), or to judge again without clearing the cache.
    ``keep_failed`` serves cached unparseable or truncated completions instead of asking again.
    ``batch`` (True or :class:`~judge.batch.BatchSettings`) sends the calls through the provider's Batch API.
    """
    provider = judge if isinstance(judge, Provider) else None
    opened = cache if isinstance(cache, Cache) else None
    spec = JudgeSpec.of(
        None if provider is not None else judge,  # type: ignore[arg-type]
        cache=True if opened is not None else (cache or False),
        batch=batch,
        **options,
    )
    return spec.grader(rubric, provider=provider, cache=opened if opened is not None else True)


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


async def gather_streamed(
    jobs: Sequence[Awaitable[R | None]],
    *,
    out: str | Path | None = None,
    to_record: Callable[[R], Mapping[str, Any]] = dict,  # type: ignore[assignment]
    progress: bool = False,
    desc: str = "",
) -> list[R | None]:
    """Await ``jobs`` concurrently; stream each result's record to ``out`` as it finishes.

    Results come back in job order (``None`` = the job produced no record). When all finish, ``out``
    is rewritten in job order, so reruns give identical files; if any job raises, the others are
    cancelled and ``<out>.partial`` keeps what finished. Concurrency limits belong to the jobs.
    """
    results: list[R | None] = [None] * len(jobs)
    writer = JsonlAppender(out) if out is not None else None
    with progress_bar(len(jobs), desc, progress) as bar:

        async def one(i: int, job: Awaitable[R | None]) -> None:
            result = await job
            results[i] = result
            if writer is not None and result is not None:
                writer.write(to_record(result))
            bar.update(1)

        tasks = [asyncio.create_task(one(i, job)) for i, job in enumerate(jobs)]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if writer is not None:
                writer.abort()
            raise
    if writer is not None:
        writer.close()
        write_jsonl(writer.path, [to_record(r) for r in results if r is not None])
    return results


async def run_items(
    grader: Grader,
    items: list[Item],
    *,
    concurrency: int = 16,
    out: str | Path | None = None,
    progress: bool = False,
    desc: str = "",
    limiter: Limiter | None = None,
    repeats: int = 1,
    both_orders: bool = False,
    budget: Budget | None = None,
) -> Results:
    """Judge ``items`` with at most ``concurrency`` calls in flight; stream verdicts to ``out``.

    Calls go through ``limiter``, by default an :class:`AdaptiveLimiter` bounded by ``concurrency``:
    it backs off on 429/503 and growing latency and waits out ``Retry-After`` without holding a slot.
    ``repeats`` judges each item that many times (seed, seed + 1, ...) and ``both_orders`` each pair as
    given and swapped, one verdict per item either way (:mod:`judge.trials`). With a ``budget``, each call
    sent reserves its worst case while in flight and is refused only when it would pass the cap
    (:class:`Budget`); an item with a refused call is unscored with "budget reached".
    """
    check_run(grader, items, repeats, both_orders, budget)
    if grader.batch is not None:
        from judge.batch import run_batched

        return await run_batched(grader, items, out=out, progress=progress)
    verdicts: list[Verdict | None] = [None] * len(items)

    def keep(i: int, v: Verdict) -> None:
        verdicts[i] = v

    await stream_run(
        grader,
        items,
        keep,
        n=len(items),
        concurrency=concurrency,
        out=out,
        progress=progress,
        desc=desc,
        limiter=limiter,
        repeats=repeats,
        both_orders=both_orders,
        budget=budget,
    )
    final = Results(v for v in verdicts if v is not None)
    assert len(final) == len(items), "every item yields exactly one verdict"
    return final


async def score_stream(
    grader: Grader,
    items: Iterable[Item],
    *,
    n: int,
    concurrency: int = 16,
    out: str | Path,
    progress: bool = False,
    desc: str = "",
    limiter: Limiter | None = None,
    repeats: int = 1,
    both_orders: bool = False,
    budget: Budget | None = None,
) -> Tally:
    """:func:`run_items` for runs too large to hold: ``items`` is read as the run goes (an
    :class:`~judge.dataset.ItemFile` is read from its file, twice: once to check, once to judge), the
    verdicts go to ``out`` and into a :class:`Tally`, and none is kept. Memory stays flat whatever ``n``:
    the items and verdicts in flight, plus 12 bytes an item for writing ``out`` in input order."""
    check_run(grader, items, repeats, both_orders, budget)
    if grader.batch is not None:
        raise ConfigError("score_stream: --batch runs go through run_items")
    tally = Tally()
    await stream_run(
        grader,
        items,
        lambda i, v: tally.add(v),
        n=n,
        concurrency=concurrency,
        out=out,
        progress=progress,
        desc=desc,
        limiter=limiter,
        repeats=repeats,
        both_orders=both_orders,
        budget=budget,
    )
    assert tally.n_items == n, f"every item yields exactly one verdict ({tally.n_items} of {n}: did the file change?)"
    return tally


def check_run(grader: Grader, items: Iterable[Item], repeats: int, both_orders: bool, budget: Budget | None) -> None:
    """Everything that can stop a run, checked before its first call."""
    problems = grader.rubric.validate()  # a template mistake stops the run before any call, not after some
    if problems:
        raise RubricError("; ".join(problems), path=grader.rubric.source)
    check_items(items, grader.rubric)
    check_trials(grader, repeats, both_orders)
    if grader.batch is not None and (repeats > 1 or both_orders or budget is not None):
        raise ConfigError("--repeats, --both-orders and --max-cost are not available with --batch yet")


async def stream_run(
    grader: Grader,
    items: Iterable[Item],
    on_verdict: Callable[[int, Verdict], None],
    *,
    n: int,
    concurrency: int = 16,
    out: str | Path | None = None,
    progress: bool = False,
    desc: str = "",
    limiter: Limiter | None = None,
    repeats: int = 1,
    both_orders: bool = False,
    budget: Budget | None = None,
) -> None:
    """The synchronous-path core of :func:`run_items` and :func:`score_stream` (inputs already checked).

    Items are taken from ``items`` only as a slot of the window frees up, so at most the window's items
    (and their tasks) exist at once; each verdict goes to ``on_verdict(input index, verdict)`` and to
    ``out`` as it finishes (``out.partial`` in finishing order; ``out`` in input order at the end,
    atomically). If any item raises, the others are cancelled and ``out.partial`` keeps what finished.
    """
    calls = limiter or AdaptiveLimiter(max(1, concurrency), slow_start=SLOW_START)
    graders = [grader.with_seed(grader.config.seed + r) for r in range(repeats)] if repeats > 1 else [grader]
    if budget is not None:
        graders = [g.with_guard(budget) for g in graders]

    async def trial(g: Grader, item: Item) -> Verdict:
        if not both_orders:
            return await g.grade(item, limiter=calls)
        swapped = g.rubric.render_item(item, swapped_values(item.values()), g.score_mode)
        v1, v2 = await asyncio.gather(g.grade(item, limiter=calls), g.grade_messages(item.id, swapped, limiter=calls))
        return combine_order_verdicts(v1, v2)

    async def judge_item(item: Item) -> Verdict:
        try:
            done = [await trial(g, item) for g in graders]  # repeats one after another: no burst per item
        except BudgetReached:
            assert budget is not None
            return budget.unscored(grader, item)
        return combine_repeats(done) if repeats > 1 else done[0]

    writer = OrderedJsonlWriter(out, n) if out is not None else None
    with progress_bar(n, desc, progress) as bar:

        def finished(i: int, v: Verdict) -> None:
            on_verdict(i, v)
            if writer is not None:
                writer.write(i, v.model_dump(mode="json"))
            bar.update(1)

        # items in progress (rendered, in the cache, waiting for a call slot or a retry): more than the call
        # slots, so an item waiting out a backoff leaves room for others, yet not every item at once
        try:
            await bounded_map(judge_item, items, finished, window=max(64, 4 * max(1, concurrency)))
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
    if writer is not None:
        writer.close()


async def bounded_map(
    fn: Callable[[Item], Awaitable[R]], items: Iterable[Item], done: Callable[[int, R], None], *, window: int
) -> None:
    """``done(i, await fn(item_i))`` for every item, at most ``window`` at once, started in input order.

    The next item is drawn from ``items`` only when a slot frees up, so a generator is read lazily.
    The first exception cancels the items in flight and is raised; no further item starts."""
    slots = asyncio.Semaphore(window)
    tasks: set[asyncio.Task[None]] = set()
    errors: list[BaseException] = []

    async def one(i: int, item: Item) -> None:
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
    if both_orders and grader.rubric.spec.kind != "pairwise":
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


class RunEstimate(BaseModel):
    """What a run would send, without sending it (``--dry-run``)."""

    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    tokenizer: str


ESTIMATED_COMPLETION_TOKENS = 100
"""Completion tokens assumed per request in a dry run (a verdict with a short reason), capped by max_tokens."""


def count_prompt_tokens(provider: Provider, messages: list[Message]) -> tuple[int, str]:
    """(tokens, tokenizer used) of a prompt: the judge model's own tokenizer where the provider has one
    here, otherwise characters / 4."""
    counted = provider.count_tokens(messages)
    if counted is None:
        return -(-sum(len(m["content"]) for m in messages) // 4), "chars/4"
    return counted, provider.id


def estimate_item(grader: Grader, item: Item) -> tuple[int, int, str]:
    """(prompt tokens, completion tokens, tokenizer used) of one call for ``item`` (see :func:`estimate_run`)."""
    messages = grader.rubric.render_item(item, score_mode=grader.score_mode)
    counted, tokenizer = count_prompt_tokens(grader.provider, messages)
    return counted, min(grader.config.max_tokens, ESTIMATED_COMPLETION_TOKENS), tokenizer


class SizedItems(Sized, Iterable[Item], Protocol):
    """Items that can be counted and iterated: a list, or an :class:`~judge.dataset.ItemFile` (read again)."""


def estimate_run(grader: Grader, items: SizedItems, *, calls_per_item: int = 1) -> RunEstimate:
    """Render every prompt and count its tokens: the judge model's own tokenizer where the provider
    has one here, otherwise characters / 4 (about right for English with OpenAI's tokenizers).
    Completion tokens are ``ESTIMATED_COMPLETION_TOKENS`` per request (at most ``max_tokens``);
    re-asks and retries are not counted. Prices come from :mod:`judge.pricing`. Sends nothing.
    ``calls_per_item``: repeats times orders (``--repeats 3 --both-orders`` makes 6 calls per item)."""
    check_items(items, grader.rubric)
    prompt_tokens = completion = 0
    tokenizer = "chars/4"
    for item in items:
        p, c, tokenizer = estimate_item(grader, item)
        prompt_tokens += p * calls_per_item
        completion += c * calls_per_item
    return RunEstimate(
        requests=len(items) * calls_per_item,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion,
        cost_usd=cost_usd(grader.provider.id, prompt_tokens, completion, grader.prices),
        tokenizer=tokenizer,
    )


async def ascore(
    data: Any,
    rubric: str | Path | Rubric = "factuality",
    judge: str | Provider | None = None,
    *,
    mapping: Mapping[str, str] | None = None,
    concurrency: int = 16,
    out: str | Path | None = None,
    progress: bool = False,
    repeats: int = 1,
    both_orders: bool = False,
    max_cost: float | None = None,
    **options: Any,
) -> Results:
    """Judge every item of ``data`` (list of dicts, DataFrame, or a file path) and return verdicts.

    ``options`` go to :func:`build_grader` (``score_mode``, ``cache``, ``base_url``, ``seed``...);
    ``repeats``, ``both_orders`` and ``max_cost`` (USD) as in :func:`run_items`.
    """
    items = coerce_items(data, mapping)
    grader = build_grader(rubric, judge, **options)
    try:
        budget = Budget.for_grader(max_cost, grader) if max_cost is not None else None
        return await run_items(
            grader,
            items,
            concurrency=concurrency,
            out=out,
            progress=progress,
            repeats=repeats,
            both_orders=both_orders,
            budget=budget,
        )
    finally:
        await grader.provider.aclose()


def score(
    data: Any, rubric: str | Path | Rubric = "factuality", judge: str | Provider | None = None, **kw: Any
) -> Results:
    """Synchronous :func:`ascore` (also works from inside a running event loop, e.g. Jupyter)."""
    return run_sync(ascore(data, rubric, judge, **kw))


def run_sync(coro: Any) -> Any:
    """Run a coroutine to completion, in a helper thread if this thread already runs a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]
