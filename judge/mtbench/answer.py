"""The model under test answers every turn of every question, with the conversation so far.

Per-category temperatures follow FastChat's ``temperature_config`` (configurable); every call goes
through the core cache (keyed by provider, messages and generation config) and the core retry
layer, so a rerun is free and an interrupted run resumes. Answers are not judge calls: no JSON
schema is sent. The local provider decodes greedily only, so a temperature above 0 is decoded
greedily there and the record says so (``generation.decoding``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from judge.cache import Cache
from judge.config import GenerateConfig, Message
from judge.errors import ClientRequestError, ConfigError, ProviderError
from judge.generation import Answerer, answer_executor
from judge.grader import is_fatal
from judge.mtbench.formats import Question, answer_record
from judge.pipeline import run_units
from judge.providers._base import Provider
from judge.providers.registry import provider_info
from judge.retry import RetryPolicy

if TYPE_CHECKING:
    from judge.batch import BatchSettings

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


def _config(
    provider: Provider, question: Question, temperatures: Mapping[str, float] | None, max_tokens: int, seed: int
) -> tuple[GenerateConfig, float, bool]:
    """(the config of ``question``'s calls, the temperature asked for, whether it is decoded greedily instead)."""
    requested = temperature_for(question.category, temperatures)
    greedy = provider_info(provider).greedy_only and requested > 0
    return GenerateConfig(temperature=0.0 if greedy else requested, seed=seed, max_tokens=max_tokens), requested, greedy


async def answer_with(
    answerer: Answerer,
    question: Question,
    *,
    model_id: str,
    temperatures: Mapping[str, float] | None = None,
    max_tokens: int = 1024,
    seed: int = 0,
    system: str | None = None,
) -> dict[str, Any]:
    """All turns of one question through ``answerer``, each with the conversation so far: a FastChat answer
    record."""
    provider = answerer.provider
    config, requested, greedy = _config(provider, question, temperatures, max_tokens, seed)
    messages: list[Message] = [{"role": "system", "content": system}] if system else []
    turns: list[str] = []
    cached_all = True
    usage = [0, 0]
    for user in question.turns:
        messages.append({"role": "user", "content": user})
        out, cached = await answerer.answer(list(messages), config)
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


def answerer_for(
    provider: Provider,
    *,
    cache: Cache | None = None,
    retry: RetryPolicy | None = None,
    batch: BatchSettings | None = None,
    max_tokens: int = 1024,
    seed: int = 0,
) -> Answerer:
    """The model under test answering MT-Bench turns (cache keys of kind ``mtbench-answer``)."""
    default = GenerateConfig(temperature=0.0, seed=seed, max_tokens=max_tokens)  # each question brings its own
    return Answerer(provider, default, kind="mtbench-answer", cache=cache, retry=retry, batch=batch)


@dataclass(frozen=True)
class QuestionWork:
    """The run loop's work of :func:`answer_questions`: unit ``k`` is question ``k``'s answer record, or why it
    has none (a string)."""

    questions: Sequence[Question]
    model_id: str
    options: Mapping[str, Any]

    def __call__(self, answerers: Sequence[Answerer]) -> Callable[[int], Awaitable[dict[str, Any] | str]]:
        answerer = answerers[0]

        async def one(k: int) -> dict[str, Any] | str:
            q = self.questions[k]
            try:
                return await answer_with(answerer, q, model_id=self.model_id, **self.options)
            except ClientRequestError as exc:
                if is_fatal(exc):
                    raise
                return f"question {q.question_id!r}: request rejected: {exc}"
            except ProviderError as exc:
                if is_fatal(exc):  # nothing listens at the URL: no question can get past it
                    raise
                return f"question {q.question_id!r}: {type(exc).__name__}: {exc}"

        return one


async def answer_questions(
    provider: Provider,
    questions: Sequence[Question],
    *,
    model_id: str | None = None,
    out: str | Path | None = None,
    concurrency: int = 4,
    progress: bool = False,
    cache: Cache | None = None,
    retry: RetryPolicy | None = None,
    batch: BatchSettings | None = None,
    on_report: Callable[[Any], None] | None = None,
    **options: Any,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Answer every question (questions in parallel, turns in order) on :func:`judge.pipeline.run_units`;
    stream records to ``out``. In process at most ``concurrency`` calls are in flight (a server paced by the
    adaptive limiter); with ``batch`` the turns go through the provider's Batch API, one round per turn, its
    :class:`~judge.batch.BatchReport` handed to ``on_report``.

    Returns (records in question order, failures). A question whose calls fail after the retries is
    left out and named in ``failures`` (its finished turns stay in the cache); a rejected key or
    unknown model (401/403/404) stops the run.
    """
    model = model_id or provider.model
    answerer = answerer_for(
        provider,
        cache=cache,
        retry=retry,
        batch=batch,
        max_tokens=options.get("max_tokens", 1024),
        seed=options.get("seed", 0),
    )
    executor = answer_executor(answerer, concurrency)
    results: list[dict[str, Any] | str | None] = [None] * len(questions)

    def keep(i: int, result: dict[str, Any] | str) -> None:
        results[i] = result

    report = await run_units(
        executor,
        [answerer],
        QuestionWork(questions, model, options),
        range(len(questions)),
        keep,
        n=len(questions),
        out=out,
        to_record=lambda r: r if isinstance(r, dict) else None,  # a failed question has no line
        progress=progress,
        desc=f"answers {model}",
    )
    if report is not None and on_report is not None:
        on_report(report)
    final = [r for r in results if isinstance(r, dict)]
    failures = [r for r in results if isinstance(r, str)]
    return final, failures
