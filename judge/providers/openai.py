"""Any OpenAI-compatible chat-completions server (OpenAI, vLLM, Ollama, llama.cpp, LM Studio...).

The SDK's own retries are off (``max_retries=0``): our retry layer decides, so that a 429's
``Retry-After`` is honoured and every attempt is counted. SDK exceptions become
:mod:`judge.errors` classes here and nowhere else.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import httpx2
import openai

from judge.config import GenerateConfig, Message
from judge.errors import (
    BadResponseError,
    ClientRequestError,
    ConfigError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitError,
    ServerError,
)
from judge.providers._base import ModelOutput, Provider, Usage

DEFAULT_TIMEOUT = 60.0
logger = logging.getLogger(__name__)


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
        self.timeout = timeout
        self.structured_output = structured_output
        self._client = openai.AsyncOpenAI(
            api_key=key, base_url=self.base_url, timeout=timeout, max_retries=0, http_client=http_client
        )

    def cache_identity(self) -> dict[str, Any]:
        # the server is part of the judge: "openai/local" on two llama.cpp servers is two models
        server = (self.base_url or "https://api.openai.com/v1").rstrip("/")
        return {"provider": self.name, "model": self.model, "server": server}

    async def generate(self, messages: list[Message], config: GenerateConfig) -> ModelOutput:
        structured = config.json_schema is not None and self.structured_output
        try:
            return await self._generate(messages, config, structured)
        except ClientRequestError as exc:
            # a server without structured output rejects response_format: fall back to the text parser
            body = (exc.body or "").lower()
            if structured and exc.status in (400, 422) and ("response_format" in body or "json_schema" in body):
                self.structured_output = False
                logger.warning("%s rejects JSON-schema output; judging with the text parser instead", self.id)
                return await self._generate(messages, config, False)
            raise

    async def _generate(self, messages: list[Message], config: GenerateConfig, structured: bool) -> ModelOutput:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": config.temperature,
            "seed": config.seed,
            "max_tokens": config.max_tokens,
        }
        if config.logprobs or config.score_candidates:
            kwargs["logprobs"] = True
            kwargs["top_logprobs"] = config.top_logprobs or 20
        if structured:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "verdict", "schema": config.json_schema, "strict": True},
            }
        try:
            # the SDK's generic POST: its auth, base URL, timeout and status-error mapping, without the
            # typed param transform and response models (about half of the client's CPU per call,
            # measured in bench/throughput.py); we read the JSON body ourselves below
            raw = await self._client.post("/chat/completions", cast_to=httpx2.Response, body=kwargs)
            return _to_output(raw.json(), self.model, config)
        except openai.APITimeoutError as exc:
            raise ProviderTimeoutError(f"request timed out after {self.timeout:g} s") from exc
        except openai.APIConnectionError as exc:
            raise ProviderConnectionError(f"connection failed: {exc}") from exc
        except openai.APIStatusError as exc:
            raise _status_error(exc) from exc
        except openai.APIResponseValidationError as exc:
            raise BadResponseError(f"invalid response body: {exc}", status=exc.status_code) from exc
        except ProviderError:
            raise
        except Exception as exc:  # a 200 whose body is not JSON, or not a completion in some other way
            raise BadResponseError(f"unreadable response body: {type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        await self._client.close()


def _status_error(exc: openai.APIStatusError) -> ProviderError:
    status = exc.status_code
    body = _body_text(exc)
    request_id = getattr(exc, "request_id", None)
    retry_after = _retry_after(exc.response.headers)
    msg = f"HTTP {status} from server: {body[:300]}"
    kw: dict[str, Any] = {"status": status, "request_id": request_id, "body": body, "retry_after": retry_after}
    if status == 429:
        return RateLimitError(msg, **kw)
    if status in (408, 409) or status >= 500:
        return ServerError(msg, **kw)
    return ClientRequestError(msg, **kw)


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
