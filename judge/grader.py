"""Judging one item: render -> call (cached, retried) -> parse -> re-ask -> :class:`Verdict`."""

from __future__ import annotations

import copy
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from judge.cache import Cache, cache_key
from judge.config import LOGPROB_MODES, SCORE_MODES, GenerateConfig, Message
from judge.dataset import Item
from judge.errors import (
    BudgetReached,
    ClientRequestError,
    ConfigError,
    ContextLengthError,
    DataError,
    ProviderError,
    RubricError,
    VerdictParseError,
)
from judge.limiter import Limiter
from judge.pricing import cost_usd
from judge.providers._base import ModelOutput, Provider
from judge.providers.registry import provider_info
from judge.retry import RetryPolicy, with_retries
from judge.rubric import Rubric
from judge.verdict import Parsed, Verdict, parse_verdict, reask_message, score_from_logprobs

if TYPE_CHECKING:
    from judge.batch import BatchSettings

FATAL_STATUSES = (401, 403, 404)
"""Client errors that no item can get past (bad key, no access, unknown model): they stop the run."""

REASONING_TOKENS = 64
REJECTED_STATUSES = (400, 422)
"""Definitive refusals of one request: cached as final, like an ok verdict."""


def is_fatal(exc: ProviderError) -> bool:
    """Whether ``exc`` stops the whole run (a dead endpoint, a bad key, an unknown model)."""
    return exc.fatal or (isinstance(exc, ClientRequestError) and exc.status in FATAL_STATUSES)


class CallGuard(Protocol):
    """Wraps each call sent to the server (not one served from the cache), inside its call slot: the
    ``--max-cost`` budget (:class:`judge.runner.Budget`) reserves, waits, refuses and counts there."""

    async def __call__(
        self, messages: list[Message], config: GenerateConfig, generate: Callable[[], Awaitable[ModelOutput]]
    ) -> ModelOutput: ...


class CallResult(NamedTuple):
    """One judge call as the grader sees it."""

    output: ModelOutput
    cached: bool
    attempts: int  # HTTP attempts made now (0 when served from the cache)
    key: str
    final: bool | None  # a cache hit's mark (None: not from the cache)


def call_key(provider: Provider, messages: list[Message], config: GenerateConfig, **key_parts: Any) -> str:
    """The cache key of a call: the model's identity (not the server's URL), everything that changes
    the request (messages, config, structured-output form) and ``key_parts`` (rubric hash, score
    mode, the user's cache namespace)."""
    return cache_key(
        **provider.cache_identity(),
        **provider.request_identity(config),
        messages=messages,
        config=config.cache_dict(),
        **key_parts,
    )


async def call_through_cache(
    provider: Provider,
    messages: list[Message],
    config: GenerateConfig,
    cache: Cache | None,
    retry: RetryPolicy,
    *,
    limiter: Limiter | None = None,
    keep_failed: bool = False,
    guard: CallGuard | None = None,
    **key_parts: Any,
) -> CallResult:
    """One call through the cache, the limiter and the retry layer; stores nothing but rejections.

    A cached entry marked not final (an unparseable or truncated completion) is called again
    unless ``keep_failed``. A :class:`ProviderError` that ends the retries carries ``attempts``.
    A definitive refusal (HTTP 400/422) is cached as final and raised again on the next hit.
    """
    key = call_key(provider, messages, config, **key_parts)
    if cache is not None:
        hit = cache.get(key)
        if hit is not None and (hit.get("final", True) or keep_failed):
            if "rejected" in hit:
                rejection = ClientRequestError(hit["rejected"], status=hit.get("status"))
                rejection.attempts = 0  # served from the cache: no request made
                raise rejection
            return CallResult(ModelOutput.model_validate(hit), True, 0, key, bool(hit.get("final", True)))
    attempts = 0

    def count(n: int) -> None:
        nonlocal attempts
        attempts = n

    def send() -> Awaitable[ModelOutput]:
        if guard is None:
            return provider.generate(messages, config)
        return guard(messages, config, lambda: provider.generate(messages, config))

    def once() -> Awaitable[ModelOutput]:
        return send() if limiter is None else limiter.run(send)

    try:
        out = await with_retries(once, provider.should_retry, retry, count)
    except ProviderError as exc:
        exc.attempts = max(attempts, 1)
        if cache is not None and isinstance(exc, ClientRequestError) and exc.status in REJECTED_STATUSES:
            cache.put(call_key(provider, messages, config, **key_parts), {"rejected": str(exc), "status": exc.status})
        raise
    # stored under what was actually sent (a structured-output fallback changes the request)
    return CallResult(out, False, attempts, call_key(provider, messages, config, **key_parts), None)


async def cached_call(
    provider: Provider,
    messages: list[Message],
    config: GenerateConfig,
    cache: Cache | None,
    retry: RetryPolicy,
    *,
    limiter: Limiter | None = None,
    **key_parts: Any,
) -> tuple[ModelOutput, bool, int]:
    """One provider call through the cache, the limiter and the retry layer, stored as final:
    (output, cached, attempts).

    For callers that take any completion (answer generation); the grader marks its own entries.
    """
    res = await call_through_cache(provider, messages, config, cache, retry, limiter=limiter, **key_parts)
    if cache is not None and not res.cached:
        cache.put(res.key, {**res.output.to_cache(), "final": True})
    return res.output, res.cached, res.attempts


def refuse_small_opinions_judge(rubric: Rubric, provider: Provider) -> None:
    """Refuse, before any call, an opinions rubric (toxicity, bias) on the default local judge, SmolLM2-135M.

    Such a rubric needs a free-text JSON list of opinions, not a score read from one token: the 135M model
    generates it token by token on the CPU (up to ``max_tokens`` per call, re-asked when unreadable) and took
    over 300 s on one item without a usable verdict. The error names the alternatives.
    """
    from judge.local.models import SMOLLM2_ALIASES

    if not rubric.kind_info.needs_free_text or not provider_info(provider).local:
        return
    if str(provider.model).lower() not in SMOLLM2_ALIASES:
        return
    raise ConfigError(
        f"the '{rubric.id}' rubric lists each opinion the output states in a JSON answer (kind: opinions), which "
        "the default local judge (SmolLM2-135M) cannot write: it generates up to 512 tokens per call on the CPU, "
        "minutes per item, re-asked when unreadable, and gave no verdict in 300 s. Use a stronger judge: "
        "--judge openai/gpt-4o-mini (with OPENAI_API_KEY), any OpenAI-compatible server with --base-url "
        "(vLLM, llama.cpp), or a larger local model with --judge local/<hugging face id>"
    )


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
        cache_namespace: str = "",
        keep_failed: bool = False,
        batch: BatchSettings | None = None,
        reasoning_tokens: int = REASONING_TOKENS,
    ) -> None:
        # logprob reads a score or a label from the next-token distribution; opinions rubrics need text
        mode = score_mode or rubric.kind_info.default_score_mode(provider.default_score_mode)
        if mode not in SCORE_MODES:
            raise ConfigError(f"unknown score mode '{mode}' (choose from {', '.join(SCORE_MODES)})")
        if mode not in rubric.kind_info.score_modes:
            modes, kind = " or ".join(rubric.kind_info.score_modes), rubric.spec.kind
            raise ConfigError(
                f"the {mode} score mode reads a score or a label; {kind} rubrics use --score-mode {modes}"
            )
        refuse_small_opinions_judge(rubric, provider)
        if mode in LOGPROB_MODES and not provider.supports_logprobs:
            raise ConfigError(f"provider '{provider.name}' cannot return logprobs; use --score-mode text")
        if mode == "reason" and not provider.supports_prefill:
            raise ConfigError(
                f"the reason score mode needs a local judge; provider '{provider.name}' cannot continue one"
            )
        self.rubric = rubric
        self.provider = provider
        self.score_mode = mode
        self.max_reasks = max_reasks
        self.retry = retry or RetryPolicy()
        self.cache = cache
        self.prices = prices
        #: part of every cache key: change it to judge again what an unchanged request would hit
        self.cache_namespace = cache_namespace
        #: serve cached unparseable / truncated completions instead of calling again
        self.keep_failed = keep_failed
        #: judge through the provider's Batch API (judge.batch), priced at its batch price; None: synchronously
        self.batch = batch
        #: wraps each call sent (``--max-cost``: :meth:`with_guard`); None: calls go out as they come
        self.guard: CallGuard | None = None
        #: reason mode: the bounded, greedy reasoning call made before the verdict is read
        self.reason_config = GenerateConfig(temperature=temperature, seed=seed, max_tokens=reasoning_tokens)
        if mode in LOGPROB_MODES:
            candidates = rubric.kind_info.score_candidates(rubric.spec)
            self.config = GenerateConfig(
                temperature=temperature,
                seed=seed,
                max_tokens=2,
                logprobs=True,
                top_logprobs=20,
                score_candidates=candidates,
            )
        else:
            schema = rubric.json_schema() if provider.supports_json_schema else None
            self.config = GenerateConfig(temperature=temperature, seed=seed, max_tokens=max_tokens, json_schema=schema)

    @property
    def notices(self) -> list[str]:
        """What the user should hear once about this run's server (e.g. a structured-output fallback)."""
        return list(getattr(self.provider, "notices", []))

    def call_key(self, messages: list[Message]) -> str:
        """The cache key of this grader's call with ``messages`` (what a batch line's ``custom_id`` is)."""
        return call_key(
            self.provider,
            messages,
            self.config,
            rubric_hash=self.rubric.content_hash,
            score_mode=self.score_mode,
            namespace=self.cache_namespace,
        )

    async def call(
        self, messages: list[Message], limiter: Limiter | None = None, config: GenerateConfig | None = None
    ) -> CallResult:
        """One judge call through the cache, the limiter and the retry layer (nothing stored yet)."""
        return await call_through_cache(
            self.provider,
            messages,
            config or self.config,
            self.cache,
            self.retry,
            limiter=limiter,
            keep_failed=self.keep_failed,
            guard=self.guard,
            rubric_hash=self.rubric.content_hash,
            score_mode=self.score_mode,
            namespace=self.cache_namespace,
        )

    async def grade(self, item: Item, *, limiter: Limiter | None = None) -> Verdict:
        """Judge one item. Never raises for the server's or the judge's faults: those give ``unscored``."""
        messages = self.rubric.render_item(item, score_mode=self.score_mode)
        return await self.grade_messages(item.id, messages, limiter=limiter)

    async def grade_messages(self, item_id: str, messages: list[Message], *, limiter: Limiter | None = None) -> Verdict:
        """Judge pre-rendered ``messages`` (e.g. a FastChat judge prompt) with this grader's parsing,
        re-asks, cache and unscored semantics; the rubric supplies the scale or choices."""
        start = time.perf_counter()
        prompt_tokens = completion_tokens = 0
        all_cached = True
        attempts = 0  # HTTP attempts, retries and re-asks included; a cached call counts once
        calls: list[CallResult] = []
        raw: str | None = None
        parsed: Parsed | None = None
        error: str | None = None
        reads_logprobs = self.score_mode in LOGPROB_MODES
        thought: str | None = None
        for round_ in range(self.max_reasks + 1):
            try:
                if self.score_mode == "reason":  # reason briefly, then read the verdict after a forced prefix
                    first = await self.call(messages, limiter, self.reason_config)
                    calls.append(first)
                    attempts += first.attempts or 1
                    all_cached = all_cached and first.cached
                    prompt_tokens += first.output.usage.prompt_tokens
                    completion_tokens += first.output.usage.completion_tokens
                    thought = self.rubric.cut_reasoning(first.output.text)
                    forced = {"role": "assistant", "content": f"{thought}\n{self.rubric.verdict_prefix} ".lstrip()}
                    res = await self.call([*messages, forced], limiter)
                else:
                    res = await self.call(messages, limiter)
            except ContextLengthError as exc:
                attempts += exc.attempts
                error = f"context length exceeded: the prompt plus max_tokens does not fit the model ({exc})"
                all_cached = False
                break
            except ClientRequestError as exc:
                if is_fatal(exc):
                    raise
                attempts += exc.attempts or 1
                error = f"request rejected: {exc}"
                all_cached = all_cached and exc.attempts == 0  # 0: the rejection was served from the cache
                break
            except ProviderError as exc:
                if is_fatal(exc):
                    raise
                attempts += exc.attempts
                error = f"{type(exc).__name__} after {exc.attempts} attempt{'s' if exc.attempts > 1 else ''}: {exc}"
                all_cached = False
                break
            except (ConfigError, RubricError, DataError, BudgetReached):
                raise  # the user's setup is wrong for every item (or the budget is spent): the caller says so
            except Exception as exc:  # noqa: BLE001 - a bug or an unforeseen failure must not sink the run
                attempts += 1
                error = f"internal error: {type(exc).__name__}: {exc}"
                all_cached = False
                break
            calls.append(res)
            out = res.output
            attempts += res.attempts or 1
            all_cached = all_cached and res.cached
            prompt_tokens += out.usage.prompt_tokens
            completion_tokens += out.usage.completion_tokens
            raw = out.text if thought is None else calls[-2].output.text  # reason mode: the reasoning as generated
            try:
                if reads_logprobs:
                    parsed = score_from_logprobs(out.score_logprobs, out.top_logprobs, self.rubric)
                    if thought is not None:
                        parsed.reasoning = thought
                else:
                    parsed = parse_verdict(out.text, self.rubric)
                error = None
                break
            except VerdictParseError as exc:
                parsed = None
                if out.finish_reason == "length" and not reads_logprobs:
                    # the same max_tokens would cut the answer again: re-asking cannot help
                    error = f"truncated at max_tokens ({self.config.max_tokens}): raise max_tokens ({exc})"
                    break
                error = f"unparseable verdict: {exc}"
                if reads_logprobs:
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
        if error is not None and len(calls) > 1:
            error += f" (after {len(calls) - 1} re-ask{'s' if len(calls) > 2 else ''})"
        self._store(calls, final=parsed is not None)
        cached = all_cached  # every call (or the rejection) came from the cache
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
            cost_usd=0.0 if cached else self._cost(prompt_tokens, completion_tokens),
            latency_ms=round((time.perf_counter() - start) * 1000, 3),
            cached=cached,
            temperature=self.config.temperature,
            seed=self.config.seed,
            label=parsed.label if parsed else None,
            score_probs=parsed.score_probs if parsed else None,
            details=parsed.details if parsed else None,
            attempts=max(attempts, 1),
        )

    def _store(self, calls: list[CallResult], *, final: bool) -> None:
        """Cache this item's completions, marked final only when they made an ok verdict: an
        unparseable or truncated completion is kept as what it is and called again next run."""
        if self.cache is None:
            return
        for res in calls:
            if not res.cached or res.final != final:
                self.cache.put(res.key, {**res.output.to_cache(), "final": final})

    def _cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        return cost_usd(self.provider.id, prompt_tokens, completion_tokens, self.prices, batch=self.batch is not None)

    def with_seed(self, seed: int) -> Grader:
        """This grader with another seed (a repeat): same provider, cache and settings, another cache entry."""
        other = copy.copy(self)
        other.config = self.config.model_copy(update={"seed": seed})
        return other

    def with_guard(self, guard: CallGuard | None) -> Grader:
        """This grader with every call it sends wrapped by ``guard`` (same provider, cache and settings)."""
        other = copy.copy(self)
        other.guard = guard
        return other

    def describe(self) -> dict[str, Any]:
        return {"rubric": self.rubric.id, "judge": self.provider.id, "score_mode": self.score_mode}
