"""Errors, sorted by whose fault they are.

* The user's: :class:`ConfigError`, :class:`RubricError`, :class:`DataError` -- they say which file,
  line and field is wrong and what to do about it.
* The server's: :class:`ProviderError` and its subclasses -- raised by providers at their boundary,
  carrying the HTTP status, request id and body when there is one.
* The judge's: :class:`VerdictParseError` -- the completion could not be read as a verdict.

The CLI renders any :class:`JudgeError` as one readable message instead of a traceback.
"""

from __future__ import annotations

from pathlib import Path


class JudgeError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(JudgeError):
    """A setting, option or argument is wrong."""


class RubricError(JudgeError):
    """A rubric file is malformed, or rendering it failed (a missing variable, say)."""

    def __init__(self, message: str, *, path: str | Path | None = None, line: int | None = None) -> None:
        self.path = str(path) if path is not None else None
        self.line = line
        where = self.path or ""
        if line is not None:
            where += f":{line}"
        super().__init__(f"{where}: {message}" if where else message)


class DataError(JudgeError):
    """A data file (items, labels, answers) is malformed; names the file, line and field."""

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field
        parts = []
        if self.path:
            parts.append(self.path + (f":{line}" if line is not None else ""))
        elif line is not None:
            parts.append(f"line {line}")
        if field:
            parts.append(f"field '{field}'")
        prefix = ", ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class ProviderError(JudgeError):
    """A model provider failed to produce a completion."""

    #: whether no other item can get past this error either (the run stops)
    fatal = False
    #: the response's x-ratelimit-* headers, for the limiter (set by the provider)
    rate_limits: dict[str, str] | None = None
    #: set by the adaptive limiter: a 429/5xx without Retry-After or rate-limit headers while faults are rare
    #: (a flaky proxy, not a rate limit or an overload), retried after a short delay (``RetryPolicy.scattered_wait``)
    scattered = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        request_id: str | None = None,
        body: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.request_id = request_id
        self.body = body
        self.retry_after = retry_after
        #: HTTP attempts made before this error was raised (set by the retry layer)
        self.attempts = 1
        super().__init__(message)


class RateLimitError(ProviderError):
    """HTTP 429: too many requests. Retried, honouring ``Retry-After``."""


class ServerError(ProviderError):
    """HTTP 5xx, 408 or 409 from the server. Retried."""


class ProviderTimeoutError(ProviderError):
    """The request took longer than the configured timeout. Retried."""


class ProviderConnectionError(ProviderError):
    """The connection failed or was dropped. Retried."""


class BadResponseError(ProviderError):
    """The server answered 200 with a body that is not a valid completion. Retried."""


class ClientRequestError(ProviderError):
    """HTTP 400/401/403/404/422: the request itself is wrong. Not retried."""


class ContextLengthError(ProviderError):
    """The prompt plus ``max_tokens`` does not fit the model's context (OpenAI's 400
    ``context_length_exceeded``, llama-server's 500 "Context size has been exceeded"). The same
    request would fail again: not retried, the item is unscored at once."""


class EndpointUnreachableError(ProviderError):
    """No server answers at the base URL (connection refused, unknown host) and none ever has in this
    run: every item would fail the same way, so the run stops, like a 401 does."""

    fatal = True


class BudgetReached(JudgeError):
    """A judge call would pass ``--max-cost``: it is not sent, and its item is unscored ("budget reached")."""


class VerdictParseError(JudgeError):
    """The judge's completion could not be read as a verdict on the rubric's scale."""

    def __init__(self, message: str, *, raw: str | None = None) -> None:
        self.raw = raw
        super().__init__(message)


RETRYABLE: tuple[type[ProviderError], ...] = (
    RateLimitError,
    ServerError,
    ProviderTimeoutError,
    ProviderConnectionError,
    BadResponseError,
)
