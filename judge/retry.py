"""Transport retries: jittered exponential backoff that honours ``Retry-After``.

The provider decides what is retryable (``Provider.should_retry``); by default that is 408/409/
429/5xx, timeouts, dropped connections and unreadable 200 bodies -- never 400/401/403/404.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_random_exponential

T = TypeVar("T")


class RetryPolicy(BaseModel):
    """How transport failures are retried."""

    model_config = ConfigDict(frozen=True)

    max_attempts: int = Field(6, ge=1, description="Attempts per call, the first included.")
    initial_wait: float = Field(0.5, ge=0, description="Seconds; the exponential backoff's multiplier.")
    max_wait: float = Field(30.0, ge=0, description="Cap on one exponential-backoff wait.")
    max_retry_after: float = Field(120.0, ge=0, description="Cap on a wait the server asks for (Retry-After).")
    scattered_wait: float = Field(
        0.1,
        ge=0,
        description="Seconds; the backoff's multiplier for a scattered fault (a 429/5xx the adaptive limiter found "
        "rare among recent answers, with no Retry-After): a flaky proxy, not a rate limit, so no long wait.",
    )


class _Wait:
    """``Retry-After`` when the server sent one (capped), else jittered exponential: on the short schedule
    (``scattered_wait``) for a fault the limiter marked scattered, else on the full one (``initial_wait``)."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.backoff = wait_random_exponential(multiplier=policy.initial_wait, max=policy.max_wait)
        self.short = wait_random_exponential(multiplier=policy.scattered_wait, max=policy.max_wait)

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return min(float(retry_after), self.policy.max_retry_after)
        if getattr(exc, "scattered", False):
            return self.short(state)
        return self.backoff(state)


async def with_retries(
    call: Callable[[], Awaitable[T]],
    should_retry: Callable[[BaseException], bool],
    policy: RetryPolicy,
    on_attempt: Callable[[int], None] | None = None,
) -> T:
    """Run ``call`` until it succeeds, a non-retryable error is raised, or the attempts run out
    (then the last error is raised as is)."""
    retrying = AsyncRetrying(
        retry=retry_if_exception(should_retry),
        wait=_Wait(policy),
        stop=stop_after_attempt(policy.max_attempts),
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            if on_attempt is not None:
                on_attempt(attempt.retry_state.attempt_number)
            return await call()
    raise AssertionError("unreachable")  # pragma: no cover - reraise=True always raises
