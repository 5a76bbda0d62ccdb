"""Pacing by the server's rate-limit headers (judge.limiter.ServerBudget) and the loopback server's headers.

The pacing tests drive the budget against the loopback server's own token buckets on a simulated clock
(events in time order, no sleeping), so they decide the same way on a busy machine as on an idle one.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from dataclasses import dataclass, field
from typing import Any

import pytest

from judge.dataset import coerce_items
from judge.errors import RateLimitError
from judge.limiter import AdaptiveLimiter, ServerBudget, parse_duration, parse_rate_limits
from judge.retry import RetryPolicy
from judge.runner import build_grader, run_items, run_sync
from judge.testing.server import LoopbackServer, RateLimit, go_duration, prompt_text

# -- headers -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("6m0s", 360.0), ("1.5s", 1.5), ("12ms", 0.012), ("1m30.5s", 90.5), ("1h2m", 3720.0), ("0", 0.0), ("2", 2.0)],
)
def test_reset_durations_parse_as_openai_and_azure_write_them(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "5x", "1s5", "-1", "s"])
def test_unreadable_durations_are_none(text: str) -> None:
    assert parse_duration(text) is None


def test_rate_limit_headers_parse_per_bucket_and_skip_placeholders() -> None:
    openai = {  # as OpenAI sends them (from a chat completion's response)
        "x-ratelimit-limit-requests": "5000",
        "x-ratelimit-limit-tokens": "160000",
        "x-ratelimit-remaining-requests": "4999",
        "x-ratelimit-remaining-tokens": "159976",
        "x-ratelimit-reset-requests": "12ms",
        "X-RateLimit-Reset-Tokens": "9ms",
        "content-type": "application/json",
    }
    assert parse_rate_limits(openai) == {
        "requests": (5000, 4999, pytest.approx(0.012)),
        "tokens": (160000, 159976, pytest.approx(0.009)),
    }
    azure = {"x-ratelimit-limit-tokens": "-1", "x-ratelimit-remaining-tokens": "-1", "x-ratelimit-reset-tokens": "0"}
    assert parse_rate_limits(azure) == {}
    assert parse_rate_limits({"x-ratelimit-remaining-tokens": "10"}) == {}  # no limit, no reset: nothing to use


def test_loopback_bucket_reports_its_level_in_openai_headers() -> None:
    bucket = RateLimit(requests_per_s=50, tokens_per_min=40_000)  # 666.7 tokens a second, a second's burst
    t0 = bucket.stamp
    wait, headers = bucket.check(134, now=t0)
    assert wait == 0
    assert headers["x-ratelimit-limit-tokens"] == "666" and headers["x-ratelimit-remaining-tokens"] == "532"
    assert headers["x-ratelimit-limit-requests"] == "50" and headers["x-ratelimit-remaining-requests"] == "49"
    assert parse_duration(headers["x-ratelimit-reset-tokens"]) == pytest.approx(134 / (40_000 / 60), abs=1e-3)
    assert parse_duration(headers["x-ratelimit-reset-requests"]) == pytest.approx(0.02)
    for _ in range(3):
        bucket.check(134, now=t0)
    wait, headers = bucket.check(134, now=t0)  # 130.7 tokens left: refused, and the headers say so
    assert wait == pytest.approx((134 - (40_000 / 60 - 4 * 134)) / (40_000 / 60))
    assert headers["x-ratelimit-remaining-tokens"] == "130"
    assert RateLimit(headers=False).check(10)[1] == {}
    assert [go_duration(s) for s in (360.0, 61.25, 1.5, 0.0123, 0.0)] == ["6m0s", "1m1.25s", "1.5s", "13ms", "0ms"]


# -- pacing against the loopback bucket on a simulated clock --------------------------------------------


@dataclass(order=True)
class _Event:
    at: float
    seq: int
    kind: str = field(compare=False)
    data: Any = field(compare=False)


def simulate(
    bucket: RateLimit, costs: list[int], *, slots: int = 8, latency: float = 0.1, delays: tuple[float, ...] = (0.0,)
) -> tuple[int, int, float, ServerBudget]:
    """Send one call per cost through a ServerBudget against ``bucket``; (requests, refusals, end time, budget).

    The server admits a call ``delays[i % len(delays)]`` after it is sent (so calls can be admitted in
    another order than sent), answers ``latency`` later, or refuses it at once; a refused call is sent
    again once its Retry-After has passed. At most ``slots`` calls in flight, 4 at first and one more per
    answer (the runner's slow start).
    """
    budget = ServerBudget()
    t0 = bucket.stamp
    events: list[_Event] = []
    seq = 0
    waiting: list[tuple[float, int]] = [(0.0, i) for i in range(len(costs))]  # (ready at, item)
    in_flight = requests = refusals = done = 0
    now = 0.0

    def push(at: float, kind: str, data: Any) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, _Event(at, seq, kind, data))

    while done < len(costs):
        # start what may start now
        while in_flight < min(slots, 4 + done) and waiting and waiting[0][0] <= now and budget.wait(now) <= 0:
            _, item = heapq.heappop(waiting)
            start = budget.started(now)
            push(now + delays[requests % len(delays)], "admit", (start, item))
            requests += 1
            in_flight += 1
        wake = [events[0].at] if events else []
        if waiting and in_flight < min(slots, 4 + done):
            wake.append(max(now + budget.wait(now), waiting[0][0], now + 1e-6))
        now = min(wake)
        while events and events[0].at <= now:
            ev = heapq.heappop(events)
            start, item = ev.data[:2]
            if ev.kind == "admit":
                wait, headers = bucket.check(costs[item], now=t0 + ev.at)
                push(ev.at + (1e-3 if wait > 0 else latency), "answer", (start, item, headers, wait))
            else:
                _, _, headers, wait = ev.data
                in_flight -= 1
                budget.observe(start, headers, refused=wait > 0)
                if wait > 0:
                    refusals += 1
                    heapq.heappush(waiting, (ev.at + wait, item))
                else:
                    done += 1
    return requests, refusals, now, budget


def goodput_ratio(bucket: RateLimit, n: int, mean_cost: float, wall: float) -> float:
    """Calls answered / what the binding bucket allows over ``wall`` (its burst included)."""
    per_s = min(bucket.rates[0], bucket.rates[1] / mean_cost)
    burst = min(bucket.capacity[0], bucket.capacity[1] / mean_cost)
    return n / (burst + per_s * wall)


def test_budget_paces_to_a_token_bucket_with_few_refusals() -> None:
    # the token-bound case: 40k tokens/min binds (about 5 calls/s) long before 50 requests/s;
    # prompts of 120-149 tokens, admitted 0-15 ms after they are sent (out of order at times)
    costs = [120 + (i * 37) % 30 for i in range(150)]
    bucket = RateLimit(requests_per_s=50, tokens_per_min=40_000)
    requests, refusals, wall, budget = simulate(bucket, costs, delays=(0.0, 0.015, 0.004, 0.009))
    assert refusals <= 0.05 * requests, (refusals, requests)
    assert goodput_ratio(bucket, len(costs), sum(costs) / len(costs), wall) >= 0.9
    tokens = budget.buckets["tokens"]
    assert tokens.rate == pytest.approx(40_000 / 60, rel=0.05)  # read off (limit - remaining) / reset
    assert tokens.cost == pytest.approx(sum(costs) / len(costs), rel=0.1)  # learnt from how the level fell


def test_budget_paces_to_a_request_bucket_with_few_refusals() -> None:
    costs = [134] * 400
    bucket = RateLimit(requests_per_s=50, tokens_per_min=1_000_000)
    requests, refusals, wall, budget = simulate(bucket, costs, slots=32, delays=(0.0, 0.01, 0.003))
    assert refusals <= 0.05 * requests, (refusals, requests)
    assert goodput_ratio(bucket, len(costs), 134, wall) >= 0.9
    assert budget.buckets["requests"].cost == 1.0


def test_without_the_budget_the_simulated_bucket_refuses_most_calls() -> None:
    # the same simulation with nothing pacing the calls: the checks above can fail
    class NoBudget(ServerBudget):
        def wait(self, now: float) -> float:
            return 0.0

    costs = [120 + (i * 37) % 30 for i in range(60)]
    bucket = RateLimit(requests_per_s=50, tokens_per_min=40_000)
    import tests.test_limiter as me

    real, me.ServerBudget = me.ServerBudget, NoBudget  # type: ignore[misc]
    try:
        requests, refusals, _, _ = simulate(bucket, costs)
    finally:
        me.ServerBudget = real  # type: ignore[misc]
    assert refusals > 0.2 * requests


# -- the adaptive limiter takes the headers from results and refusals --------------------------------


@dataclass
class _Output:
    rate_limits: dict[str, str] | None


def _headers(remaining_tokens: int, reset: str, remaining_requests: int = 49) -> dict[str, str]:
    return {
        "x-ratelimit-limit-requests": "50",
        "x-ratelimit-remaining-requests": str(remaining_requests),
        "x-ratelimit-reset-requests": "20ms",
        "x-ratelimit-limit-tokens": "666",
        "x-ratelimit-remaining-tokens": str(remaining_tokens),
        "x-ratelimit-reset-tokens": reset,
    }


def test_adaptive_limiter_paces_by_headers_and_does_not_cut_a_rate_on_their_429s() -> None:
    lim = AdaptiveLimiter(16)

    async def main() -> tuple[float, float]:
        async def ok() -> _Output:
            return _Output(_headers(532, "201ms"))

        await lim.run(ok)
        now = asyncio.get_running_loop().time()
        room = lim.budget.wait(now)  # 532 tokens left: three more 134-token calls fit at once

        async def refused() -> _Output:
            err = RateLimitError("slow down", status=429)
            err.rate_limits = _headers(20, "970ms")
            raise err

        with pytest.raises(RateLimitError):
            await lim.run(refused)
        return room, lim.budget.wait(asyncio.get_running_loop().time())

    room, after_refusal = asyncio.run(main())
    tokens = lim.budget.buckets["tokens"]
    assert tokens.cost == pytest.approx(134) and tokens.rate == pytest.approx(134 / 0.201, rel=0.01)
    assert room == 0
    # 20 tokens left, far fewer than the projection promised: wait until 134 and a margin have come back
    assert (134 - 20) / 667 < after_refusal < 1.5
    assert lim.rate is None and lim.decreases == 0 and lim.limit == 16  # no AIMD cut: the headers said it all


def test_headers_travel_from_the_loopback_server_to_the_limiter() -> None:
    items = [{"id": "a", "input": "What is 1 + 1?", "output": "2"}]
    lim = AdaptiveLimiter(4)
    bucket = RateLimit(requests_per_s=50, tokens_per_min=40_000)
    with LoopbackServer(rate_limit=bucket) as srv:
        grader = build_grader("factuality", "openai/m", base_url=srv.base_url, api_key="x", cache=False)
        grader.retry = RetryPolicy(max_attempts=2, initial_wait=0.0, max_wait=0.0)

        async def go():
            try:
                return await run_items(grader, coerce_items(items), limiter=lim)
            finally:
                await grader.provider.aclose()

        results = run_sync(go())
        words = len(prompt_text(srv.requests[0]).split())
    assert results[0].status == "ok"
    tokens = lim.budget.buckets["tokens"]
    assert tokens.limit == 666 and tokens.cost is not None
    assert math.isclose(tokens.cost, words, abs_tol=1.0)  # the one call's charge, read from the first report
    assert lim.budget.buckets["requests"].limit == 50
