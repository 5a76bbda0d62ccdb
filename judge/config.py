"""Generation settings sent with every judge call."""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

Message = dict[str, str]
"""A chat message: ``{"role": "system"|"user"|"assistant", "content": "..."}``."""

ScoreMode = Literal["text", "logprob", "reason"]
SCORE_MODES: tuple[ScoreMode, ...] = get_args(ScoreMode)
"""Every score mode (CLI choices and checks derive from it). reason: a short greedy reasoning, then the verdict
read from the label probabilities after a forced verdict prefix (local judges, which continue a final
assistant message)."""
LOGPROB_MODES: tuple[ScoreMode, ...] = ("logprob", "reason")
"""The modes that read the verdict from the next-token distribution (the provider must return logprobs)."""
PLAIN_SCORE_MODES: tuple[ScoreMode, ...] = tuple(m for m in SCORE_MODES if m != "reason")
"""The modes without a reasoning step (MT-Bench judging, ``judge rubrics show --render``)."""


class GenerateConfig(BaseModel):
    """What a provider is asked to do for one call. Recorded in every verdict and in the cache key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = Field(0.0, description="Sampling temperature; judges run at 0 (greedy).")
    seed: int = Field(0, description="Seed sent with every call, for servers that honour it.")
    max_tokens: int = Field(512, description="Upper bound on completion tokens.")
    logprobs: bool = Field(False, description="Ask for token log-probabilities of the completion.")
    top_logprobs: int | None = Field(None, description="How many alternatives per position (with logprobs).")
    json_schema: dict[str, Any] | None = Field(
        None, description="JSON schema the completion must follow, for providers with structured output."
    )
    score_candidates: tuple[str, ...] | None = Field(
        None,
        description="Score strings whose exact probabilities the provider should return as the next output "
        "(logprob score mode; local models compute them exactly, servers approximate from top logprobs).",
    )

    stop: tuple[str, ...] | None = Field(
        None, description="Generation stops before the first of these strings (not part of the output)."
    )
    chat_template: bool | None = Field(
        None,
        description="False: the prompt is the last user message as raw text, no chat template (local models only); "
        "None: the model's chat template, as always.",
    )

    def cache_dict(self) -> dict[str, Any]:
        """The fields that change the output, for cache keys (fields added later count only when set, so
        the keys of requests that do not use them stay what they were)."""
        dumped = self.model_dump(mode="json")
        for late in ("stop", "chat_template"):
            if dumped[late] is None:
                del dumped[late]
        return dumped
