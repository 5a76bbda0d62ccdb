"""The model under test answers every turn of every question, with the conversation so far.

Per-category temperatures follow FastChat's ``temperature_config`` (configurable); every call goes
through the core cache (keyed by provider, messages and generation config) and the core retry
layer, so a rerun is free and an interrupted run resumes. Answers are not judge calls: no JSON
schema is sent. The local provider decodes greedily only, so a temperature above 0 is decoded
greedily there and the record says so (``generation.decoding``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from judge.cache import Cache
from judge.config import GenerateConfig, Message
from judge.errors import ClientRequestError, ConfigError, ProviderError
from judge.generation import generate_reply
from judge.grader import is_fatal
from judge.mtbench.formats import Question, answer_record
from judge.providers._base import Provider
from judge.providers.registry import provider_info
from judge.retry import RetryPolicy
from judge.runner import gather_streamed

TEMPERATURES: dict[str, float] = {
    "writing": 0.7,
    "roleplay": 0.7,
    "extraction": 0.0,
    "math": 0.0,
    "coding": 0.0,
    "reasoning": 0.0,
    "stem": 0.1,
    "humanities": 0.1,
}
"""FastChat's per-category sampling temperatures for answer generation."""
DEFAULT_TEMPERATURE = 0.7
"""Categories FastChat's table does not name are sampled at 0.7, as in FastChat."""


def parse_temperatures(specs: Sequence[str]) -> dict[str, float]:
    """``["writing=0.5", "0"]`` -> overrides; a bare number sets every category (``"*"``)."""
    out: dict[str, float] = {}
    for spec in specs:
        name, sep, value = spec.rpartition("=")
        key = name.strip() if sep else "*"
        try:
            out[key] = float(value)
        except ValueError:
            raise ConfigError(f"--temperature expects CATEGORY=T or T, got '{spec}'") from None
        if out[key] < 0:
            raise ConfigError(f"--temperature must be >= 0, got '{spec}'")
    return out


def temperature_for(category: str, overrides: Mapping[str, float] | None = None) -> float:
    """The sampling temperature for a category: override, else ``*`` override, else FastChat's table."""
    overrides = overrides or {}
    if category in overrides:
        return overrides[category]
    if "*" in overrides:
        return overrides["*"]
    return TEMPERATURES.get(category, DEFAULT_TEMPERATURE)


async def answer_question(
    provider: Provider,
    question: Question,
    *,
    model_id: str,
    temperatures: Mapping[str, float] | None = None,
    max_tokens: int = 1024,
    seed: int = 0,
    system: str | None = None,
    cache: Cache | None = None,
    retry: RetryPolicy | None = None,
) -> dict[str, Any]:
    """All turns of one question, each answered with the conversation so far: a FastChat answer record."""
    requested = temperature_for(question.category, temperatures)
    greedy = provider_info(provider).greedy_only and requested > 0
    config = GenerateConfig(temperature=0.0 if greedy else requested, seed=seed, max_tokens=max_tokens)
    messages: list[Message] = [{"role": "system", "content": system}] if system else []
    turns: list[str] = []
    cached_all = True
    usage = [0, 0]
    for user in question.turns:
        messages.append({"role": "user", "content": user})
        out, cached = await generate_reply(provider, messages, config, cache, retry, kind="mtbench-answer")
        cached_all = cached_all and cached
        usage[0] += out.usage.prompt_tokens
        usage[1] += out.usage.completion_tokens
        text = out.text.strip()
        turns.append(text)
        messages.append({"role": "assistant", "content": text})
    generation = {
        "provider": provider.id,
        "temperature": config.temperature,
        "requested_temperature": requested,
        "decoding": "greedy (the local provider cannot sample)"
        if greedy
        else ("greedy" if requested == 0 else "sampled"),
        "seed": seed,
        "max_tokens": max_tokens,
        "cached": cached_all,
        "prompt_tokens": usage[0],
        "completion_tokens": usage[1],
    }
    return answer_record(
        model_id, question.question_id, turns, time.time(), category=question.category, generation=generation
    )


async def answer_questions(
    provider: Provider,
    questions: Sequence[Question],
    *,
    model_id: str | None = None,
    out: str | Path | None = None,
    concurrency: int = 4,
    progress: bool = False,
    **options: Any,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Answer every question (questions in parallel, turns in order); stream records to ``out``.

    Returns (records in question order, failures). A question whose calls fail after the retries is
    left out and named in ``failures`` (its finished turns stay in the cache); a rejected key or
    unknown model (401/403/404) stops the run.
    """
    model = model_id or provider.model
    sem = asyncio.Semaphore(max(1, concurrency))
    failures: list[str] = []

    async def one(q: Question) -> dict[str, Any] | None:
        async with sem:
            try:
                rec = await answer_question(provider, q, model_id=model, **options)
            except ClientRequestError as exc:
                if is_fatal(exc):
                    raise
                failures.append(f"question {q.question_id!r}: request rejected: {exc}")
                return None
            except ProviderError as exc:
                if is_fatal(exc):  # nothing listens at the URL: no question can get past it
                    raise
                failures.append(f"question {q.question_id!r}: {type(exc).__name__}: {exc}")
                return None
        return rec

    done = await gather_streamed([one(q) for q in questions], out=out, progress=progress, desc=f"answers {model}")
    final = [r for r in done if r is not None]
    return final, failures
