"""How many judge calls may be in flight and how fast they start: a fixed bound, or one that adapts.

A limiter wraps each HTTP attempt (``await limiter.run(call)``), not each item, so a call waiting
out a ``Retry-After`` or a backoff holds no slot and other work goes on. The adaptive limiter
starts at the bound the user gave (``--concurrency``) with no pacing -- or, with ``slow_start`` (as
the runner builds it), at a few slots, one more per success (doubling per round trip) up to the bound
until the server first pushes back, so an unknown limit is met by a few calls rather than a burst --
and runs two AIMD loops:

* concurrency (for a server that is overloaded): halved on a 503, cut by 10 % when latency grows
  well past the best seen (a queue is building up), grown by about one slot per round trip of
  successes back up to the bound;
* start rate (for a rate limit): until one is met, a 429 counts only while refusals are a good share of the
  recent answers (:data:`RATE_LIMIT_SHARE`; scattered 429s from a flaky proxy are retried and change nothing,
  their ``Retry-After`` delaying only their own retry); the first that counts seeds it with 90 % of what got
  through in the first second; a later one sets it to 90 % of the rate that succeeded over the last two seconds (at most
  one cut per ``RATE_CUT_GAP_S``, so refusals from a bucket that an overshoot emptied do not cascade).
  Between refusals it probes upward by ``RATE_GROWTH_PER_S`` per second of use (five times faster
  while below 80 % of the highest rate refused lately), so a low limit is found as fast as a high one.

Each loop steps down at most once per round trip (only a call started after the last decrease can
trigger the next, so one burst of 429s counts once), and every new call waits until a
``Retry-After`` the server sent has passed.

A server that describes its rate limits (OpenAI and the APIs copying it send ``x-ratelimit-limit-*``,
``x-ratelimit-remaining-*`` and ``x-ratelimit-reset-*`` on every response) replaces the start-rate
loop: :class:`ServerBudget` keeps each bucket's level as the latest response reported it, refills it
at the rate the headers imply ((limit - remaining) / reset), charges every call started since then
(one request; the tokens per call learnt from how the level fell), and a call starts only when every
bucket holds one call's worth -- so the limiter paces itself to the server's rate from the first
answer on, instead of finding it by refusals. Without those headers (vLLM, llama.cpp) the AIMD
loops above are all there is.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

from judge.errors import ProviderError, RateLimitError

T = TypeVar("T")


RATE_CUT_GAP_S = 0.5
"""Seconds between two cuts of the start rate at least."""
RATE_GROWTH_PER_S = 0.1
"""How fast the start rate probes upward between refusals: this share per second of use (5x while far below)."""
RECENT_ANSWERS = 20
"""How many of the latest answers a 429 without rate-limit headers is weighed against (see :data:`RATE_LIMIT_SHARE`)."""
RATE_LIMIT_SHARE = 0.5
"""A 429 without rate-limit headers is taken for the server's rate limit only when refusals are at least this
share of the last :data:`RECENT_ANSWERS` answers: a rate limit that is met refuses most calls sent past it at
once, while scattered refusals (a flaky proxy, 5-20 % of answers) reach 10 of 20 rarely (in a run of 250
answers: never in 4 000 simulated runs at 10 %, 14 % of runs at 20 %; 8 of 20 was met in 2.6 % of runs at 10 %,
and by ``bench/faults.py --seed 1``) and are retried without slowing the run down. Failures of any kind (429,
5xx) under this share also mark a 429/5xx without ``Retry-After`` as scattered: its retry waits a short delay
(``RetryPolicy.scattered_wait``), not the full exponential schedule."""


class Limiter(Protocol):
    """Admits calls: ``await limiter.run(call)``."""

    limit: float

    async def run(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run ``call`` once a slot is free; free the slot when it returns or raises."""
        ...


class FixedLimiter:
    """At most ``limit`` calls in flight, whatever the server says (a plain semaphore)."""

    def __init__(self, limit: int) -> None:
        self.limit = float(max(1, limit))
        self._sem = asyncio.Semaphore(int(self.limit))

    async def run(self, call: Callable[[], Awaitable[T]]) -> T:
        async with self._sem:
            return await call()


def is_overload(exc: BaseException) -> bool:
    """A server telling us to slow down: 429, or 503 (overloaded / unavailable)."""
    return isinstance(exc, RateLimitError) or (isinstance(exc, ProviderError) and exc.status == 503)


# ---- pacing by the server's own account of its rate limits (x-ratelimit-* headers)

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|h|m|s)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_HEADER = re.compile(r"x-ratelimit-(limit|remaining|reset)-(.+)")


def parse_duration(text: str) -> float | None:
    """Seconds in a reset header: OpenAI's Go-style ``"6m0s"``, ``"1.5s"``, ``"12ms"``, or plain seconds (Azure)."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        return value if math.isfinite(value) and value >= 0 else None
    total, pos = 0.0, 0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _UNIT_S[m.group(2)]
        pos = m.end()
    return total if pos == len(text) and pos > 0 else None


def parse_rate_limits(headers: Mapping[str, str]) -> dict[str, tuple[float, float, float]]:
    """``{bucket: (limit, remaining, reset seconds)}`` from ``x-ratelimit-*`` headers (bucket: ``requests``,
    ``tokens``, ...); a bucket missing one of the three, or with a negative value (Azure's -1), is left out."""
    parts: dict[str, dict[str, float]] = {}
    for name, value in headers.items():
        m = _HEADER.fullmatch(name.lower())
        if m is None:
            continue
        kind, bucket = m.groups()
        if kind == "reset":
            number = parse_duration(value)
        else:
            try:
                number = float(value)
            except ValueError:
                number = None
        if number is not None and math.isfinite(number) and number >= 0:
            parts.setdefault(bucket, {})[kind] = number
    return {
        b: (p["limit"], p["remaining"], p["reset"])
        for b, p in parts.items()
        if len(p) == 3 and p["limit"] > 0 and p["remaining"] <= p["limit"]
    }


@dataclass
class Bucket:
    """One of the server's rate-limit buckets, as its latest response described it."""

    SPREAD_MARGIN = 3.0
    """Margin held for one more call, in multiples of ``spread + deviation``."""
    MARGIN = 0.05
    """Margin held for one more call at least, as a share of its cost."""

    limit: float
    #: what was left when the server admitted (or refused) the call that reported it
    remaining: float
    #: refill per second: (limit - remaining) / reset, averaged over recent responses; None while always full
    rate: float | None = None
    #: what one admitted call takes from it: 1 for ``requests``; learnt for ``tokens``; None until known
    cost: float | None = None
    #: how much more than the server reported the projection promised, on average (see ServerBudget.observe)
    spread: float = 0.0
    #: how far calls' costs stray from ``cost`` (prompts differ in length), on average
    deviation: float = 0.0
    #: ``cost`` is the first report's upper bound, not yet measured
    provisional: bool = False
    _used: float = 0.0
    _reset: float = 0.0

    def need(self) -> float:
        """What the bucket should hold for one more call: its cost plus a margin for the projection's errors and
        for calls costing more than most (``SPREAD_MARGIN`` times ``spread`` + ``deviation``, ``MARGIN`` of the
        cost at least; the bucket's size at most). Held back once, not per call: it costs no rate, a little burst."""
        cost = self.cost or 0.0
        return min(self.limit, cost + max(self.SPREAD_MARGIN * (self.spread + self.deviation), self.MARGIN * cost))


@dataclass
class _Start:
    at: float
    refused: bool = False


class ServerBudget:
    """The server's buckets projected from its ``x-ratelimit-*`` headers, to decide when a call may start.

    Times are the caller's clock (``loop.time()``); a response's headers are taken as of its call's start
    (the server admits a call about when it is sent; a delay there is one of the errors the margin covers).
    The level now of a bucket = the reported ``remaining`` + refill since, capped at ``limit``, minus the
    cost of each call started since that was not refused. A call may start when every bucket whose rate
    and cost are known holds one call's cost and a margin (:meth:`Bucket.need`); :meth:`wait` says how
    long until then. The margin grows with how far reports fell short of the projection (calls admitted
    in another order than sent, delays before admission, prompts longer than most).
    """

    #: weight of a new sample in the running tokens-per-call estimate
    COST_WEIGHT = 0.25
    #: weight kept by the previous refill-rate sums per response
    RATE_DECAY = 0.8

    def __init__(self) -> None:
        self.buckets: dict[str, Bucket] = {}
        #: start time of the call whose response the buckets reflect
        self.at: float | None = None
        self._starts: deque[_Start] = deque(maxlen=4096)  # calls started since then (and a few before)

    @property
    def known(self) -> bool:
        """Whether the server has described its limits (then it, not the AIMD rate, paces new calls)."""
        return bool(self.buckets)

    def started(self, at: float) -> _Start:
        """Count a call started at ``at`` against the buckets; its response goes to :meth:`observe`."""
        start = _Start(at)
        self._starts.append(start)
        return start

    def _charged_between(self, lo: float | None, hi: float) -> int:
        return sum(1 for s in self._starts if (lo is None or s.at > lo) and s.at <= hi and not s.refused)

    def observe(self, start: _Start, headers: Mapping[str, str] | None, *, refused: bool = False) -> bool:
        """Take in the rate-limit headers of the response to the call ``start`` (``refused``: a 429, which
        the server did not charge); whether they described any bucket."""
        start.refused = refused
        seen = parse_rate_limits(headers or {})
        if not seen or (self.at is not None and start.at <= self.at):
            return bool(seen)  # nothing, or older news than what the buckets already reflect
        for name, (limit, remaining, reset) in seen.items():
            b = self.buckets.get(name)
            if b is not None and self.at is not None:
                # how much more the projection promised than the server had: calls admitted in another order
                # than they were sent, the delay before admission, calls costing more than most
                over = max(0.0, self.level(name, start.at) - remaining)
                b.spread = (1 - self.COST_WEIGHT) * b.spread + self.COST_WEIGHT * over
            if b is None:
                b = self.buckets[name] = Bucket(limit, remaining, cost=1.0 if name == "requests" else None)
                if b.cost is None and limit > remaining:
                    # all the first report used may be this call's (or the calls sent with it took some): an upper
                    # bound, until the next report measures one call
                    b.cost, b.provisional = limit - remaining, True
            elif b.rate is not None and self.at is not None and name != "requests":
                # how far the level fell, over the calls the server admitted in between: tokens per call
                expected = b.remaining + b.rate * (start.at - self.at)
                n = self._charged_between(self.at, start.at)
                if n and expected <= b.limit and expected > remaining:  # no refill lost to the cap
                    sample = (expected - remaining) / n
                    w = self.COST_WEIGHT
                    if b.cost is None or b.provisional:
                        b.cost, b.provisional = sample, False
                    else:
                        b.deviation = (1 - w) * b.deviation + w * abs(sample - b.cost)
                        b.cost = (1 - w) * b.cost + w * sample
            b.limit, b.remaining = limit, remaining
            if reset > 0 and limit > remaining:
                b._used = self.RATE_DECAY * b._used + (limit - remaining)
                b._reset = self.RATE_DECAY * b._reset + reset
                b.rate = b._used / b._reset
        self.at = start.at
        while self._starts and self._starts[0].at <= start.at:
            self._starts.popleft()
        return True

    def level(self, name: str, now: float) -> float:
        """Bucket ``name``'s projected level at ``now``."""
        b = self.buckets[name]
        refill = (b.rate or 0.0) * max(0.0, now - (self.at or now))
        return min(b.limit, b.remaining + refill) - (b.cost or 0.0) * self._charged_between(self.at, now)

    def wait(self, now: float) -> float:
        """Seconds from ``now`` until every bucket holds one more call's worth (0: start now)."""
        wait = 0.0
        for name, b in self.buckets.items():
            if b.rate is None or b.cost is None or b.cost > b.limit:
                continue  # never drained (no pressure) or nothing known to charge
            short = b.need() - self.level(name, now)
            if short > 0:
                wait = max(wait, short / b.rate)
        return wait


class AdaptiveLimiter:
    """AIMD concurrency between ``min_limit`` and ``max_limit``, plus pacing: by the server's rate-limit headers
    where it sends them, else AIMD on its refusals (see the module docstring)."""

    def __init__(
        self,
        max_limit: int,
        *,
        min_limit: int = 1,
        decrease: float = 0.5,
        latency_factor: float = 2.0,
        latency_floor_s: float = 0.05,
        rate_decrease: float = 0.9,
        rate_increase: float = 0.002,
        rate_recovery: float = 0.01,
        min_rate: float = 0.1,
        slow_start: int | None = None,
    ) -> None:
        self.max_limit = float(max(1, max_limit))
        self.min_limit = float(max(1, min(min_limit, max_limit)))
        #: slow start: begin with this many slots and add one per success (doubling per round trip) up to the
        #: bound, until the server first pushes back -- so an unknown limit is met by a few calls, not a burst
        self.slow_start = slow_start is not None and slow_start < self.max_limit
        self.limit = float(max(self.min_limit, slow_start)) if self.slow_start and slow_start else self.max_limit
        self.decrease = decrease
        self.latency_factor = latency_factor
        # latency growth below this many seconds is noise (scheduling, GC), not a queue
        self.latency_floor_s = latency_floor_s
        #: calls started per second at most; None until the server first answers 429
        self.rate: float | None = None
        self.rate_decrease = rate_decrease
        self.rate_increase = rate_increase
        #: per-success growth while the rate is well below the last one the server refused (after deep cuts)
        self.rate_recovery = rate_recovery
        self.min_rate = min_rate
        self._ceiling: float | None = None
        self._last_growth: float | None = None
        self.in_flight = 0
        self.overloads = 0
        self.decreases = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._not_before = 0.0
        self._next_start = 0.0
        self._wake_at: asyncio.TimerHandle | None = None
        self._last_decrease = float("-inf")
        self._last_rate_cut = float("-inf")
        self._ok_times: deque[float] = deque()
        self._recent: deque[bool] = deque(maxlen=RECENT_ANSWERS)  # the latest answers: True for a 429
        self._faults: deque[bool] = deque(maxlen=RECENT_ANSWERS)  # the latest answers: True for any failure
        #: 429s taken for scattered faults, not a rate limit (retried, nothing slowed)
        self.scattered = 0
        self._first_start: float | None = None
        self._ewma: float | None = None
        self._best: float | None = None
        #: the server's rate-limit buckets, when its responses describe them (x-ratelimit-* headers)
        self.budget = ServerBudget()

    async def run(self, call: Callable[[], Awaitable[T]]) -> T:
        await self._acquire()
        loop = asyncio.get_running_loop()
        start = loop.time()
        started: _Start | None = None
        try:
            await self._pace()
            start = loop.time()
            if self._first_start is None:
                self._first_start = start
            started = self.budget.started(start)
            result = await call()
        except BaseException as exc:
            described = False
            if started is not None:
                refused = isinstance(exc, RateLimitError)
                described = self.budget.observe(started, getattr(exc, "rate_limits", None), refused=refused)
            if isinstance(exc, ProviderError):
                self._faults.append(True)
                # judged before _on_overload counts a 429 (which may meet a rate limit)
                exc.scattered = not described and self._is_scattered(exc)
            if is_overload(exc):
                self._on_overload(start, exc)
            self._release()
            raise
        if started is not None:
            self.budget.observe(started, getattr(result, "rate_limits", None))
        self._on_success(start, loop.time() - start)
        self._release()
        return result

    def _cap(self) -> int:
        return max(int(self.min_limit), int(self.limit))

    async def _acquire(self) -> None:
        loop = asyncio.get_running_loop()
        if not self._waiters and self.in_flight < self._cap() and loop.time() >= self._not_before:
            self.in_flight += 1
            return
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.append(fut)
        try:
            await fut  # _wake hands over the slot (in_flight already counts it)
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._release()
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)
            raise

    async def _pace(self) -> None:
        """Wait until the server's buckets hold a call's worth, when its headers describe them; else space
        call starts 1/rate apart once a rate limit has been met."""
        loop = asyncio.get_running_loop()
        if self.budget.known:
            while (wait := max(self._not_before - loop.time(), self.budget.wait(loop.time()))) > 0:
                await asyncio.sleep(wait)
            return
        if self.rate is None:
            return
        now = loop.time()
        at = max(now, self._next_start, self._not_before)
        self._next_start = at + 1.0 / self.rate
        if at > now:
            await asyncio.sleep(at - now)

    def _release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() < self._not_before:
            # a Retry-After pause: nobody starts until it ends; then wake as many as fit
            if self._wake_at is None:
                self._wake_at = loop.call_at(self._not_before, self._end_pause)
            return
        while self._waiters and self.in_flight < self._cap():
            fut = self._waiters.popleft()
            if not fut.done():
                self.in_flight += 1
                fut.set_result(None)

    def _end_pause(self) -> None:
        self._wake_at = None
        self._wake()

    def _is_scattered(self, exc: ProviderError) -> bool:
        """Whether a failed answer looks like a scattered fault (a flaky proxy) rather than a rate limit or an
        overload: a 429 or a 5xx other than 503, with no ``Retry-After``, no rate limit met or described, while
        failures are under :data:`RATE_LIMIT_SHARE` of the recent answers (this one included). Its retry then
        waits a short jittered delay (``RetryPolicy.scattered_wait``), not the full exponential schedule: once
        failures persist, or a rate limit is met, the full schedule is back."""
        if exc.retry_after is not None or exc.status is None or self.budget.known or self.rate is not None:
            return False
        if exc.status == 429:
            if sum(self._recent) + 1 >= RATE_LIMIT_SHARE * RECENT_ANSWERS:  # + 1: this 429, not yet counted
                return False
        elif exc.status < 500 or exc.status == 503:
            return False
        return sum(self._faults) < RATE_LIMIT_SHARE * RECENT_ANSWERS

    def _on_success(self, start: float, latency: float) -> None:
        now = start + latency
        self._recent.append(False)
        self._faults.append(False)
        self._ok_times.append(now)
        while self._ok_times and self._ok_times[0] < now - 2.0:
            self._ok_times.popleft()
        if self.rate is not None:
            # probe upward by a share per second (RATE_GROWTH_PER_S), faster while far below the last refused
            # rate; per success at least rate_increase. Growth per second, not per success, so a low limit
            # (a few calls a second) is found as fast as a high one; idle time does not count.
            far_below = self._ceiling is not None and self.rate < 0.8 * self._ceiling
            dt = min(now - (self._last_growth or now), 2.0 / self.rate)
            per_s = RATE_GROWTH_PER_S * (5.0 if far_below else 1.0)
            step = self.rate_recovery if far_below else self.rate_increase
            self.rate *= 1.0 + max(step, per_s * dt)
            self._last_growth = now
        if self.limit < self.max_limit:
            self.limit = min(self.max_limit, self.limit + (1.0 if self.slow_start else 1.0 / self.limit))
        self._ewma = latency if self._ewma is None else 0.8 * self._ewma + 0.2 * latency
        self._best = self._ewma if self._best is None else min(self._best, self._ewma)
        grown = self._ewma > self.latency_factor * self._best and self._ewma - self._best > self.latency_floor_s
        if grown and start > self._last_decrease:
            self._cut(0.9)
            self._best *= 1.1  # let the baseline drift up: prompts get longer, servers warm up

    def _rate_limited(self) -> bool:
        """Whether the 429s without headers lately look like a rate limit met, not scattered faults."""
        return sum(self._recent) >= RATE_LIMIT_SHARE * RECENT_ANSWERS

    def _on_overload(self, start: float, exc: BaseException) -> None:
        self.overloads += 1
        now = asyncio.get_running_loop().time()
        # until a rate limit has been met (then every 429 is one, as before), a 429 without headers must persist
        if isinstance(exc, RateLimitError):
            self._recent.append(True)
            if not self.budget.known and self.rate is None and not self._rate_limited():
                self.scattered += 1
                return  # a scattered refusal: its own retry waits (Retry-After or backoff); nothing else slows down
        self.slow_start = False
        retry_after = getattr(exc, "retry_after", None)
        if retry_after:
            self._not_before = max(self._not_before, now + retry_after)
        if isinstance(exc, RateLimitError) and self.budget.known:
            pass  # the refusal's headers already set the buckets' levels: no rate to cut
        elif isinstance(exc, RateLimitError):
            # one cut per round trip and at most one per RATE_CUT_GAP_S: right after an overshoot the server's
            # bucket is empty, and the refusals of calls paced just below its rate must not cascade the rate down
            if start > self._last_rate_cut and now - self._last_rate_cut >= RATE_CUT_GAP_S:
                while self._ok_times and self._ok_times[0] < now - 2.0:
                    self._ok_times.popleft()
                # what the limit let through lately; early in a run the span is short and a first burst
                # inflates it, but the next 429 (a round trip later) measures again over a longer span
                elapsed = now - (self._first_start or now)
                if self.rate is None:
                    # the first refusal: seed the rate from what the server let through in the first second
                    # (a bucket holds about a second's worth, so a shorter span would overstate it)
                    if not self._ok_times:
                        return  # nothing got through yet: the Retry-After pause alone for now
                    served: float | None = len(self._ok_times) / max(1.0, min(2.0, elapsed))
                else:
                    span = max(0.5, min(2.0, elapsed))
                    served = len(self._ok_times) / span if len(self._ok_times) >= 5 else None
                    served = min(served, self.rate) if served is not None else self.rate
                assert served is not None
                # the highest rate refused lately: recovery is quick while far below it (a cascade of cuts)
                recent = self._ceiling is not None and now - self._last_rate_cut < 2.0
                self._ceiling = max(served, self._ceiling or 0.0) if recent else served
                self.rate = max(self.min_rate, self.rate_decrease * served)
                self._last_rate_cut = now
                self.decreases += 1
        elif start > self._last_decrease:
            self._cut(self.decrease)

    def _cut(self, factor: float) -> None:
        self.slow_start = False
        self.limit = max(self.min_limit, self.limit * factor)
        self._last_decrease = asyncio.get_running_loop().time()
        self.decreases += 1
