"""Any OpenAI-compatible chat-completions server (OpenAI, vLLM, Ollama, llama.cpp, LM Studio...).

The SDK's own retries are off (``max_retries=0``): our retry layer decides, so that a 429's
``Retry-After`` is honoured and every attempt is counted. SDK exceptions become
:mod:`judge.errors` classes here and nowhere else.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import httpx2
import openai

from judge.config import GenerateConfig, Message
from judge.errors import (
    BadResponseError,
    ClientRequestError,
    ConfigError,
    ContextLengthError,
    EndpointUnreachableError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitError,
    ServerError,
)
from judge.providers._base import ModelOutput, Provider, Usage
from judge.textfmt import redact_url

DEFAULT_TIMEOUT = 60.0
logger = logging.getLogger(__name__)

FORMATS = ("json_schema", "json_object", "none")
"""How the verdict schema is sent, best first: OpenAI's ``json_schema``; ``{"type": "json_object",
"schema": ...}`` (llama-cpp-python, llama-server); none (the text parser reads the verdict)."""

# a server refusing the response_format says so in its message, whatever the status: OpenAI and vLLM
# answer 400, llama-cpp-python 500 "Input should be 'text' or 'json_object'"
_FORMAT_REJECTED = re.compile(r"response_format|json_schema|json_object|grammar|input should be 'text'", re.IGNORECASE)
# OpenAI: 400 context_length_exceeded; llama-server: 500 "Context size has been exceeded" (newer
# builds: "exceeds the available context size"); vLLM: "maximum context length is N tokens"
_CONTEXT_EXCEEDED = re.compile(
    r"context_length_exceeded|context size has been exceeded|exceeds? the available context size"
    r"|exceed_context_size|maximum context length|context window",
    re.IGNORECASE,
)


class OpenAIProvider(Provider):
    """Chat completions through ``openai.AsyncOpenAI``."""

    name = "openai"
    supports_json_schema = True
    supports_logprobs = True

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        structured_output: bool = True,
        http_client: Any = None,
    ) -> None:
        super().__init__(model)
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            if self.base_url is None:
                raise ConfigError(
                    "openai judge needs OPENAI_API_KEY (or --base-url for a local OpenAI-compatible server)"
                )
            key = "not-needed"  # local servers (vLLM, Ollama, llama.cpp) accept any key
        if self.base_url is not None:
            _check_base_url(self.base_url)
        self.timeout = timeout
        #: the structured-output form sent now (one of FORMATS); degrades when the server rejects one
        self.response_format = "json_schema" if structured_output else "none"
        #: one line per thing the user should know about this server (a format fallback), for the CLI
        self.notices: list[str] = []
        # whether any HTTP response came back: a refused connection before that means a dead endpoint
        self._reached = False
        self._client = openai.AsyncOpenAI(
            api_key=key, base_url=self.base_url, timeout=timeout, max_retries=0, http_client=http_client
        )

    @property
    def structured_output(self) -> bool:
        """Whether the verdict schema is sent at all (json_schema or json_object)."""
        return self.response_format != "none"

    def request_identity(self, config: GenerateConfig) -> dict[str, Any]:
        # a schema-constrained verdict and a free-text one are different calls
        return {"response_format": self.response_format if config.json_schema is not None else "none"}

    async def generate(self, messages: list[Message], config: GenerateConfig) -> ModelOutput:
        while True:
            fmt = self.response_format if config.json_schema is not None else "none"
            try:
                return await self._generate(messages, config, fmt)
            except (ClientRequestError, ServerError) as exc:
                if fmt == "none" or not _FORMAT_REJECTED.search(exc.body or str(exc)):
                    raise
                self._degrade(fmt, exc)

    def _degrade(self, rejected: str, exc: ProviderError) -> None:
        """Fall back to the next structured-output form, once per server and run, and say so."""
        if self.response_format != rejected:
            return  # a concurrent call already fell back
        self.response_format = FORMATS[FORMATS.index(rejected) + 1]
        then = "a JSON object with the schema" if self.response_format == "json_object" else "the text parser"
        said = " ".join(_error_message(exc.body or str(exc)).split())[:160]
        notice = (
            f"{redact_url(self.base_url) or 'the server'} rejects response_format {rejected} "
            f"(HTTP {exc.status}: {said}); judging with {then} instead"
        )
        self.notices.append(notice)
        logger.warning("%s", notice)

    async def _generate(self, messages: list[Message], config: GenerateConfig, fmt: str) -> ModelOutput:
        kwargs = self._request_body(messages, config, fmt)
        try:
            # the SDK's generic POST: its auth, base URL, timeout and status-error mapping, without the
            # typed param transform and response models (about half of the client's CPU per call,
            # measured in bench/throughput.py); we read the JSON body ourselves below
            raw = await self._client.post("/chat/completions", cast_to=httpx2.Response, body=kwargs)
            self._reached = True
            out = _to_output(raw.json(), self.model, config)
            out.rate_limits = _rate_limit_headers(raw.headers)
            return out
        except Exception as exc:
            raise self._translate(exc) from exc

    def _request_body(self, messages: list[Message], config: GenerateConfig, fmt: str) -> dict[str, Any]:
        """The chat-completions request body (sent directly, or as one line of a batch input file)."""
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": config.temperature,
            "seed": config.seed,
            "max_tokens": config.max_tokens,
        }
        if config.stop:
            kwargs["stop"] = list(config.stop)
        if config.logprobs or config.score_candidates:
            kwargs["logprobs"] = True
            kwargs["top_logprobs"] = config.top_logprobs or 20
        if fmt == "json_schema":
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "verdict", "schema": config.json_schema, "strict": True},
            }
        elif fmt == "json_object":
            kwargs["response_format"] = {"type": "json_object", "schema": config.json_schema}
        return kwargs

    def _translate(self, exc: Exception) -> ProviderError:
        """The :mod:`judge.errors` class for an exception raised while talking to the server."""
        if isinstance(exc, ProviderError):
            return exc
        if isinstance(exc, openai.APITimeoutError):
            return ProviderTimeoutError(f"request timed out after {self.timeout:g} s")
        if isinstance(exc, openai.APIConnectionError):
            if not self._reached and isinstance(exc.__cause__, httpx2.ConnectError | httpx2.UnsupportedProtocol):
                url = redact_url(self.base_url) or "https://api.openai.com/v1"
                return EndpointUnreachableError(
                    f"cannot connect to {url} ({exc.__cause__ or 'connection failed'}): "
                    "is the server running, and is --base-url right?"
                )
            return ProviderConnectionError(f"connection failed: {exc}")
        if isinstance(exc, openai.APIStatusError):
            self._reached = True
            err = _status_error(exc)
            err.rate_limits = _rate_limit_headers(exc.response.headers)
            return err
        if isinstance(exc, openai.APIResponseValidationError):
            return BadResponseError(f"invalid response body: {exc}", status=exc.status_code)
        # a 200 whose body is not JSON, or not a completion in some other way
        return BadResponseError(f"unreadable response body: {type(exc).__name__}: {exc}")

    # ---- Batch API (judge.batch drives it): the same request bodies as JSONL lines, through Files + Batches
    supports_batch = True

    def batch_body(self, messages: list[Message], config: GenerateConfig) -> dict[str, Any]:
        """The body of one batch input line: what :meth:`generate` would send now."""
        return self._request_body(messages, config, self.response_format if config.json_schema is not None else "none")

    def batch_output(self, body: Any, config: GenerateConfig) -> ModelOutput:
        """A batch output line's ``response.body`` (a chat.completion) as a :class:`ModelOutput`."""
        return _to_output(body, self.model, config)

    async def batch_upload(self, data: bytes, filename: str) -> str:
        """Upload a batch input file (purpose ``batch``); its file id."""
        try:
            meta = await self._client.files.create(file=(filename, data, "application/jsonl"), purpose="batch")
            self._reached = True
            return str(meta.id)
        except Exception as exc:
            raise self._translate(exc) from exc

    async def batch_create(self, file_id: str, metadata: dict[str, str]) -> dict[str, Any]:
        """Submit an uploaded input file to ``/v1/chat/completions`` with the 24 h window; the Batch object."""
        try:
            batch = await self._client.batches.create(
                input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h", metadata=metadata
            )
            return batch.model_dump(mode="json")
        except Exception as exc:
            raise self._translate(exc) from exc

    async def batch_retrieve(self, batch_id: str) -> dict[str, Any]:
        try:
            return (await self._client.batches.retrieve(batch_id)).model_dump(mode="json")
        except Exception as exc:
            raise self._translate(exc) from exc

    async def batch_cancel(self, batch_id: str) -> dict[str, Any]:
        try:
            return (await self._client.batches.cancel(batch_id)).model_dump(mode="json")
        except Exception as exc:
            raise self._translate(exc) from exc

    async def file_content(self, file_id: str) -> bytes:
        """The bytes of a file (a batch's output or error file)."""
        try:
            return (await self._client.files.content(file_id)).content
        except Exception as exc:
            raise self._translate(exc) from exc

    # ---- prompt log-probabilities (``loss`` and ``choice_accuracy`` for a served model)
    async def echo_logprobs(self, prompts: list[str]) -> list[TextLogprobs]:
        """Each prompt's per-token log-probabilities as the model reads it: ``/v1/completions`` with
        ``echo``, ``logprobs: 1`` and one generated token (vLLM's and OpenAI's legacy completions), the raw
        text with no chat template. A body without a log-probability for the prompt's tokens (llama.cpp's
        server returns the generated token's only) raises :class:`NoPromptLogprobsError`: never a made-up
        likelihood."""
        body = {"model": self.model, "prompt": prompts, "max_tokens": 1, "echo": True, "logprobs": 1, "temperature": 0}
        try:
            raw = await self._client.post("/completions", cast_to=httpx2.Response, body=body)
            self._reached = True
            data = raw.json()
        except Exception as exc:
            raise self._translate(exc) from exc
        return _echoed(data, prompts)

    async def aclose(self) -> None:
        await self._client.close()


class NoPromptLogprobsError(ProviderError):
    """The server answered, but without the log-probabilities of the prompt's tokens. Not retried."""


class TextLogprobs(NamedTuple):
    """One echoed prompt: its tokens, each token's log-probability (None for the first, which has no
    context) and each token's character offset in the prompt."""

    tokens: list[str]
    logprobs: list[float | None]
    offsets: list[int]

    def span(self, start: int, end: int) -> tuple[float, int]:
        """(summed log-probability, token count) of the tokens that begin in ``[start, end)``; a token that
        begins before ``start`` counts as context even when it runs past it."""
        total, n = 0.0, 0
        for lp, at in zip(self.logprobs, self.offsets, strict=True):
            if start <= at < end:
                if lp is None:
                    raise NoPromptLogprobsError(f"no log-probability for the token at character {at}")
                total += lp
                n += 1
        return total, n


def _echoed(body: Any, prompts: list[str]) -> list[TextLogprobs]:
    """The echoed prompts of a completions body, in prompt order, checked: a log-probability for every
    prompt token after the first, offsets from 0 and increasing."""
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or len(choices) != len(prompts):
        got = len(choices) if isinstance(choices, list) else "no"
        raise BadResponseError(f"completions body has {got} choices for {len(prompts)} prompts")
    out: list[TextLogprobs] = []
    for choice, prompt in zip(sorted(choices, key=lambda c: c.get("index", 0)), prompts, strict=True):
        lp = choice.get("logprobs") or {}
        tokens, logprobs, offsets = lp.get("tokens"), lp.get("token_logprobs"), lp.get("text_offset")
        if not (isinstance(tokens, list) and isinstance(logprobs, list) and isinstance(offsets, list)):
            raise NoPromptLogprobsError("the completion has no logprobs.tokens/token_logprobs/text_offset")
        if not (len(tokens) == len(logprobs) == len(offsets)):
            raise BadResponseError("logprobs.tokens, token_logprobs and text_offset differ in length")
        inside = [k for k, at in enumerate(offsets) if isinstance(at, int) and at < len(prompt)]
        if not inside or offsets[0] != 0:
            raise NoPromptLogprobsError(
                f"the server returned log-probabilities for {len(offsets)} token(s), none of them the prompt's "
                "(it does not echo prompt log-probabilities)"
            )
        if any(b < a for a, b in zip(offsets, offsets[1:], strict=False)):
            raise BadResponseError("logprobs.text_offset is not in increasing order")
        if any(logprobs[k] is None for k in inside[1:]):
            raise NoPromptLogprobsError("the server left prompt tokens without a log-probability")
        out.append(TextLogprobs(list(tokens), [None if x is None else float(x) for x in logprobs], list(offsets)))
    return out


def _status_error(exc: openai.APIStatusError) -> ProviderError:
    status = exc.status_code
    body = _body_text(exc)
    request_id = getattr(exc, "request_id", None)
    retry_after = _retry_after(exc.response.headers)
    msg = f"HTTP {status} from server: {body[:300]}"
    kw: dict[str, Any] = {"status": status, "request_id": request_id, "body": body, "retry_after": retry_after}
    if status in (400, 413, 422, 500) and _CONTEXT_EXCEEDED.search(body):
        return ContextLengthError(msg, **kw)
    if status == 429:
        return RateLimitError(msg, **kw)
    if status in (408, 409) or status >= 500:
        return ServerError(msg, **kw)
    return ClientRequestError(msg, **kw)


_EXAMPLE_URL = "http://127.0.0.1:8000/v1"


def _check_base_url(url: str) -> None:
    """A base URL the client cannot use is the user's mistake: say so before any request."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError as exc:
        shown = redact_url(url)
        raise ConfigError(f"--base-url '{shown}' is not a valid URL ({exc}); expected e.g. {_EXAMPLE_URL}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        shown = redact_url(url)
        raise ConfigError(f"--base-url '{shown}' is not an http(s) URL with a host; expected e.g. {_EXAMPLE_URL}")


def _error_message(body: str) -> str:
    """The human part of an error body: ``error.message`` (OpenAI, llama.cpp) or ``detail`` (FastAPI)."""
    try:
        obj = json.loads(body)
    except ValueError:
        return body
    if isinstance(obj, dict):
        err = obj.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"]
        if isinstance(err, str):
            return err
        if "detail" in obj:
            return str(obj["detail"])
    return body


def _body_text(exc: openai.APIStatusError) -> str:
    try:
        return exc.response.text
    except Exception:  # noqa: BLE001 - a streamed or closed body; the message is all we have
        return str(exc.message)


def _retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` / ``Retry-After`` (seconds form), if given and sane."""
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            continue  # HTTP-date form: fall back to exponential backoff
        if math.isfinite(seconds) and 0 <= seconds <= 600:
            return seconds
    return None


def _rate_limit_headers(headers: Any) -> dict[str, str] | None:
    """The ``x-ratelimit-*`` headers (OpenAI and servers copying it), for the limiter to pace itself by."""
    found = {k.lower(): v for k, v in headers.items() if k.lower().startswith("x-ratelimit-")}
    return found or None


def _to_output(resp: Any, model: str, config: GenerateConfig) -> ModelOutput:
    if not isinstance(resp, dict):
        raise BadResponseError(f"response body is {type(resp).__name__}, not a JSON object")
    choices = resp.get("choices")
    if not choices or not isinstance(choices, list):
        raise BadResponseError("response has no choices")
    choice = choices[0]
    message = choice.get("message") or {}
    text = message.get("content")
    if not isinstance(text, str):
        refusal = message.get("refusal")
        raise BadResponseError(f"response has no message content{f' (refusal: {refusal})' if refusal else ''}")
    usage = resp.get("usage") or {}
    out = ModelOutput(
        text=text,
        model=resp.get("model") or model,
        usage=Usage(
            prompt_tokens=usage.get("prompt_tokens") or 0,
            completion_tokens=usage.get("completion_tokens") or 0,
        ),
        request_id=resp.get("id"),
        finish_reason=choice.get("finish_reason"),
    )
    content = (choice.get("logprobs") or {}).get("content")
    if content:
        out.top_logprobs = [
            {alt["token"]: alt["logprob"] for alt in (tok.get("top_logprobs") or [])} or {tok["token"]: tok["logprob"]}
            for tok in content
        ]
    return out
