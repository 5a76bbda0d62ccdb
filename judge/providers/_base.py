"""The one seam every model provider implements."""

from __future__ import annotations

import abc
from typing import Any

from pydantic import BaseModel, Field

from judge.config import GenerateConfig, Message
from judge.errors import RETRYABLE


class Usage(BaseModel):
    """Token counts of one call."""

    prompt_tokens: int = 0
    completion_tokens: int = 0


class ModelOutput(BaseModel):
    """What a provider returns for one call."""

    text: str
    model: str
    usage: Usage = Field(default_factory=Usage)
    top_logprobs: list[dict[str, float]] | None = Field(
        None, description="Per completion position: token -> log-probability of the top alternatives."
    )
    score_logprobs: dict[str, float] | None = Field(
        None, description="Score string -> log-probability as the next output (logprob score mode)."
    )
    request_id: str | None = None
    finish_reason: str | None = None
    rate_limits: dict[str, str] | None = Field(
        None, exclude=True, description="The response's x-ratelimit-* headers, for the limiter (not cached)."
    )

    def to_cache(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class Provider(abc.ABC):
    """A source of completions: an OpenAI-compatible server, a local model, a script.

    Implementations translate their library's exceptions into :mod:`judge.errors` classes at this
    boundary, so the retry layer and the grader never see SDK types.
    """

    #: registry prefix, e.g. ``"openai"``
    name: str = ""
    #: whether ``GenerateConfig.json_schema`` is enforced by the backend
    supports_json_schema: bool = False
    #: whether ``score_candidates`` / ``logprobs`` can be answered
    supports_logprobs: bool = False
    #: whether a final assistant message is continued (prefilled), so a verdict prefix can be forced
    supports_prefill: bool = False
    #: whether the provider offers an asynchronous batch API (``batch_body``, ``batch_upload``... see judge.batch)
    supports_batch: bool = False
    #: default for the score mode when the user names none
    default_score_mode: str = "text"

    def __init__(self, model: str) -> None:
        self.model = model

    @property
    def id(self) -> str:
        """``provider/model`` as written on the command line and recorded in verdicts."""
        return f"{self.name}/{self.model}"

    @abc.abstractmethod
    async def generate(self, messages: list[Message], config: GenerateConfig) -> ModelOutput:
        """Produce one completion for ``messages``."""

    def should_retry(self, exc: BaseException) -> bool:
        """Whether ``exc`` is worth another attempt (the provider knows its failure modes best)."""
        return isinstance(exc, RETRYABLE)

    def cache_identity(self) -> dict[str, Any]:
        """What identifies this provider's outputs in the cache (beyond the messages and config): the
        model, not where it is served from, so a restarted server or another spelling of its URL hits."""
        return {"provider": self.name, "model": self.model}

    def count_tokens(self, messages: list[Message]) -> int | None:
        """Prompt tokens of ``messages`` by this model's own tokenizer, or None when there is none here."""
        return None

    def request_identity(self, config: GenerateConfig) -> dict[str, Any]:
        """What else this provider would send differently for ``config`` right now (for cache keys),
        e.g. the structured-output form after a server rejected the preferred one."""
        return {}

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections; default does nothing."""
