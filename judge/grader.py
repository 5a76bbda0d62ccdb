"""Judging one item: render -> call (cached, retried) -> parse -> re-ask -> :class:`Verdict`."""

from __future__ import annotations

import time
from typing import Any

from judge.cache import Cache, cache_key
from judge.config import GenerateConfig, Message
from judge.dataset import Item
from judge.errors import ClientRequestError, ConfigError, DataError, ProviderError, RubricError, VerdictParseError
from judge.pricing import cost_usd
from judge.providers._base import ModelOutput, Provider
from judge.retry import RetryPolicy, with_retries
from judge.rubric import Rubric
from judge.verdict import Parsed, Verdict, parse_verdict, reask_message, score_from_logprobs

FATAL_STATUSES = (401, 403, 404)
"""Client errors that no item can get past (bad key, no access, unknown model): they stop the run."""

SCORE_MODES = ("text", "logprob")


async def cached_call(
    provider: Provider,
    messages: list[Message],
    config: GenerateConfig,
    cache: Cache | None,
    retry: RetryPolicy,
    **key_parts: Any,
) -> tuple[ModelOutput, bool, int]:
    """One provider call through the cache and the retry layer: (output, cached, attempts).

    The cache key is the provider's identity, the messages, the config and ``key_parts``. A
    :class:`ProviderError` that ends the retries carries ``attempts``, for the unscored reason.
    """
    key = cache_key(**provider.cache_identity(), messages=messages, config=config.cache_dict(), **key_parts)
    if cache is not None:
        hit = cache.get(key)
        if hit is not None:
            return ModelOutput.model_validate(hit), True, 0
    attempts = 0

    def count(n: int) -> None:
        nonlocal attempts
        attempts = n

    try:
        out = await with_retries(lambda: provider.generate(messages, config), provider.should_retry, retry, count)
    except ProviderError as exc:
        exc.attempts = attempts  # type: ignore[attr-defined]
        raise
    if cache is not None:
        cache.put(key, out.to_cache())
    return out, False, attempts


class Grader:
    """Judges items with one rubric and one provider. Stateless per item; safe to share across tasks."""

    def __init__(
        self,
        rubric: Rubric,
        provider: Provider,
        *,
        score_mode: str | None = None,
        seed: int = 0,
        temperature: float = 0.0,
        max_tokens: int = 512,
        max_reasks: int = 2,
        retry: RetryPolicy | None = None,
        cache: Cache | None = None,
        prices: str | None = None,
    ) -> None:
        mode = score_mode or ("text" if rubric.spec.kind != "single" else provider.default_score_mode)
        if mode not in SCORE_MODES:
            raise ConfigError(f"unknown score mode '{mode}' (choose from {', '.join(SCORE_MODES)})")
        if mode == "logprob" and rubric.spec.kind != "single":
            raise ConfigError(
                f"the logprob score mode needs a numeric scale; {rubric.spec.kind} rubrics use --score-mode text"
            )
        if mode == "logprob" and not provider.supports_logprobs:
            raise ConfigError(f"provider '{provider.name}' cannot return logprobs; use --score-mode text")
        self.rubric = rubric
        self.provider = provider
        self.score_mode = mode
        self.max_reasks = max_reasks
        self.retry = retry or RetryPolicy()
        self.cache = cache
        self.prices = prices
        if mode == "logprob":
            assert rubric.spec.scale is not None
            self.config = GenerateConfig(
                temperature=temperature,
                seed=seed,
                max_tokens=2,
                logprobs=True,
                top_logprobs=20,
                score_candidates=tuple(str(p) for p in rubric.spec.scale.points),
            )
        else:
            schema = rubric.json_schema() if provider.supports_json_schema else None
            self.config = GenerateConfig(temperature=temperature, seed=seed, max_tokens=max_tokens, json_schema=schema)

    async def call(self, messages: list[Message]) -> tuple[ModelOutput, bool, int]:
        """One judge call through the cache and the retry layer: (output, cached, attempts)."""
        return await cached_call(
            self.provider,
            messages,
            self.config,
            self.cache,
            self.retry,
            rubric_hash=self.rubric.content_hash,
            score_mode=self.score_mode,
        )

    async def grade(self, item: Item) -> Verdict:
        """Judge one item. Never raises for the server's or the judge's faults: those give ``unscored``."""
        return await self.grade_messages(item.id, self.rubric.render(item.values(), self.score_mode))

    async def grade_messages(self, item_id: str, messages: list[Message]) -> Verdict:
        """Judge pre-rendered ``messages`` (e.g. a FastChat judge prompt) with this grader's parsing,
        re-asks, cache and unscored semantics; the rubric supplies the scale or choices."""
        start = time.perf_counter()
        prompt_tokens = completion_tokens = 0
        all_cached = True
        calls = 0
        raw: str | None = None
        parsed: Parsed | None = None
        error: str | None = None
        for round_ in range(self.max_reasks + 1):
            try:
                out, cached, attempts = await self.call(messages)
            except ClientRequestError as exc:
                if exc.status in FATAL_STATUSES:
                    raise
                error = f"request rejected: {exc}"
                all_cached = False
                break
            except ProviderError as exc:
                tries = getattr(exc, "attempts", 0) or 1
                error = f"{type(exc).__name__} after {tries} attempt{'s' if tries > 1 else ''}: {exc}"
                all_cached = False
                break
            except (ConfigError, RubricError, DataError):
                raise  # the user's setup is wrong for every item: stop and say so
            except Exception as exc:  # noqa: BLE001 - a bug or an unforeseen failure must not sink the run
                error = f"internal error: {type(exc).__name__}: {exc}"
                all_cached = False
                break
            calls += 1
            all_cached = all_cached and cached
            prompt_tokens += out.usage.prompt_tokens
            completion_tokens += out.usage.completion_tokens
            raw = out.text
            try:
                if self.score_mode == "logprob":
                    parsed = score_from_logprobs(out.score_logprobs, out.top_logprobs, self.rubric)
                else:
                    parsed = parse_verdict(out.text, self.rubric)
                error = None
                break
            except VerdictParseError as exc:
                parsed = None
                error = f"unparseable verdict: {exc}"
                if self.score_mode == "logprob":
                    break  # the same call would give the same logprobs: re-asking cannot help
                if round_ < self.max_reasks:
                    messages = [
                        *messages,
                        {"role": "assistant", "content": out.text},
                        {"role": "user", "content": reask_message(str(exc), self.rubric, self.score_mode)},
                    ]
            except Exception as exc:  # noqa: BLE001 - a parser bug costs one item, with the completion kept
                parsed = None
                error = f"internal error while reading the verdict: {type(exc).__name__}: {exc}"
                break
        if error is not None and calls > 1:
            error += f" (after {calls - 1} re-ask{'s' if calls > 2 else ''})"
        return Verdict(
            id=item_id,
            rubric=self.rubric.id,
            rubric_hash=self.rubric.content_hash,
            judge_model=self.provider.id,
            score_mode=self.score_mode,
            score=parsed.score if parsed else None,
            status="ok" if parsed else "unscored",
            reasoning=parsed.reasoning if parsed else None,
            error=error,
            raw=raw,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            # a verdict served from the cache cost nothing this time
            cost_usd=0.0 if all_cached and calls > 0 else self._cost(prompt_tokens, completion_tokens),
            latency_ms=round((time.perf_counter() - start) * 1000, 3),
            cached=all_cached and calls > 0,
            temperature=self.config.temperature,
            seed=self.config.seed,
            label=parsed.label if parsed else None,
            score_probs=parsed.score_probs if parsed else None,
            details=parsed.details if parsed else None,
            attempts=max(calls, 1),
        )

    def _cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        return cost_usd(self.provider.id, prompt_tokens, completion_tokens, self.prices)

    def describe(self) -> dict[str, Any]:
        return {"rubric": self.rubric.id, "judge": self.provider.id, "score_mode": self.score_mode}
