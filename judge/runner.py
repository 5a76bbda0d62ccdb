"""Scoring many items from Python: :func:`ascore` / :func:`score`, :func:`run_items`, dry-run estimates.

The run loop itself (checks, repeats, both orders, budget, streamed writes, totals) is
:func:`judge.pipeline.run`; this module picks its executor (:func:`executor_for`) and re-exports its types.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable, Iterable, Mapping, Sized
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from judge.batch import BatchAPI, BatchSettings
from judge.cache import Cache
from judge.dataset import Item, coerce_items
from judge.grader import Grader
from judge.limiter import Limiter
from judge.pipeline import (
    SLOW_START,
    Budget,
    ExactSum,
    Executor,
    InProcess,
    Results,
    Summary,
    Tally,
    bounded_map,
    check_items,
    check_run,
    check_trials,
    count_prompt_tokens,
    run,
)
from judge.pricing import cost_usd
from judge.providers._base import Provider
from judge.rubric import Rubric
from judge.spec import JudgeSpec
from judge.verdict import Verdict

__all__ = [
    "SLOW_START",
    "Budget",
    "ExactSum",
    "LengthBias",
    "Results",
    "RunEstimate",
    "Summary",
    "Tally",
    "ascore",
    "bounded_map",
    "build_grader",
    "check_items",
    "check_run",
    "check_trials",
    "count_prompt_tokens",
    "estimate_run",
    "executor_for",
    "length_bias",
    "run_items",
    "run_sync",
    "score",
    "score_stream",
    "stream_run",
]


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


def executor_for(grader: Grader, *, concurrency: int = 16, limiter: Limiter | None = None) -> Executor:
    """How ``grader``'s calls are made by default: through the Batch API when it was built with batch settings,
    else in this process (at most ``concurrency`` calls in flight, through ``limiter`` when given)."""
    if grader.batch is not None:
        return BatchAPI(grader.batch)
    return InProcess(concurrency, limiter=limiter)


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
    executor: Executor | None = None,
) -> Results:
    """:func:`judge.pipeline.run`, the verdicts kept and returned in input order (``batch_report``: what a
    batch run did). ``executor``: default :func:`executor_for` the grader (``concurrency``, ``limiter``)."""
    verdicts: list[Verdict | None] = [None] * len(items)

    def keep(i: int, v: Verdict) -> None:
        verdicts[i] = v

    tally = await run(
        grader,
        items,
        executor or executor_for(grader, concurrency=concurrency, limiter=limiter),
        on_verdict=keep,
        repeats=repeats,
        both_orders=both_orders,
        budget=budget,
        out=out,
        progress=progress,
        desc=desc,
    )
    final = Results(v for v in verdicts if v is not None)
    assert len(final) == len(items), "every item yields exactly one verdict"
    final.batch_report = tally.report
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
    executor: Executor | None = None,
) -> Tally:
    """:func:`run_items` for runs too large to hold: ``items`` is read as the run goes (an
    :class:`~judge.dataset.ItemFile` is read from its file, twice: once to check, once to judge), the
    verdicts go to ``out`` and into a :class:`Tally`, and none is kept. Memory stays flat whatever ``n``
    in process: the items and verdicts in flight, plus 12 bytes an item for writing ``out`` in input order."""
    return await run(
        grader,
        items,
        executor or executor_for(grader, concurrency=concurrency, limiter=limiter),
        n=n,
        repeats=repeats,
        both_orders=both_orders,
        budget=budget,
        out=out,
        progress=progress,
        desc=desc,
    )


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
    """:func:`judge.pipeline.run` in process on items already checked (``items`` is read once, lazily: at most
    the window's items exist at once); each verdict goes to ``on_verdict(input index, verdict)``."""
    await run(
        grader,
        items,
        InProcess(concurrency, limiter=limiter),
        n=n,
        on_verdict=on_verdict,
        repeats=repeats,
        both_orders=both_orders,
        budget=budget,
        out=out,
        progress=progress,
        desc=desc,
        checked=True,
    )


class RunEstimate(BaseModel):
    """What a run would send, without sending it (``--dry-run``)."""

    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    tokenizer: str


ESTIMATED_COMPLETION_TOKENS = 100
"""Completion tokens assumed per request in a dry run (a verdict with a short reason), capped by max_tokens."""


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

    # the helper thread runs in a copy of this context, so context variables (a progress sink) carry over
    t = threading.Thread(target=contextvars.copy_context().run, args=(target,))
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]
