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
* start rate (for a rate limit): the first 429 seeds it with 90 % of what got through in the first
  second; a later one sets it to 90 % of the rate that succeeded over the last two seconds (at most
  one cut per ``RATE_CUT_GAP_S``, so refusals from a bucket that an overshoot emptied do not cascade).
  Between refusals it probes upward by ``RATE_GROWTH_PER_S`` per second of use (five times faster
  while below 80 % of the highest rate refused lately), so a low limit is found as fast as a high one.

Each loop steps down at most once per round trip (only a call started after the last decrease can
trigger the next, so one burst of 429s counts once), and every new call waits until a
``Retry-After`` the server sent has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from judge.errors import ProviderError, RateLimitError

T = TypeVar("T")


RATE_CUT_GAP_S = 0.5
"""Seconds between two cuts of the start rate at least."""
RATE_GROWTH_PER_S = 0.1
"""How fast the start rate probes upward between refusals: this share per second of use (5x while far below)."""


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


class AdaptiveLimiter:
    """AIMD concurrency between ``min_limit`` and ``max_limit`` plus AIMD pacing (see the module docstring)."""

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
        self._first_start: float | None = None
        self._ewma: float | None = None
        self._best: float | None = None

    async def run(self, call: Callable[[], Awaitable[T]]) -> T:
        await self._acquire()
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            await self._pace()
            start = loop.time()
            if self._first_start is None:
                self._first_start = start
            result = await call()
        except BaseException as exc:
            if is_overload(exc):
                self._on_overload(start, exc)
            self._release()
            raise
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
        """Space call starts 1/rate apart once a rate limit has been met."""
        if self.rate is None:
            return
        now = asyncio.get_running_loop().time()
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

    def _on_success(self, start: float, latency: float) -> None:
        now = start + latency
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

    def _on_overload(self, start: float, exc: BaseException) -> None:
        self.overloads += 1
        self.slow_start = False
        now = asyncio.get_running_loop().time()
        retry_after = getattr(exc, "retry_after", None)
        if retry_after:
            self._not_before = max(self._not_before, now + retry_after)
        if isinstance(exc, RateLimitError):
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
