"""Judging one item: render -> call (cached, retried) -> parse -> re-ask -> :class:`Verdict`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from judge.cache import Cache
from judge.calls import (
    REJECTED_STATUSES,
    Caller,
    CallGuard,
    CallResult,
    DirectCaller,
    call_key,
)
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
from judge.retry import RetryPolicy
from judge.rubric import Rubric
from judge.verdict import Parsed, Verdict, parse_verdict, reask_message, score_from_logprobs

if TYPE_CHECKING:
    from judge.batch import BatchSettings

__all__ = [
    "FATAL_STATUSES",
    "REJECTED_STATUSES",
    "SCORE_MODES",
    "CallGuard",
    "CallResult",
    "Caller",
    "Grader",
    "call_key",
    "is_fatal",
]

FATAL_STATUSES = (401, 403, 404)
"""Client errors that no item can get past (bad key, no access, unknown model): they stop the run."""

REASONING_TOKENS = 64


def is_fatal(exc: ProviderError) -> bool:
    """Whether ``exc`` stops the whole run (a dead endpoint, a bad key, an unknown model)."""
    return exc.fatal or (isinstance(exc, ClientRequestError) and exc.status in FATAL_STATUSES)


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


def check_score_mode(rubric: Rubric, provider: Provider, score_mode: str | None) -> str:
    """The score mode a grader of ``rubric`` by ``provider`` reads (``score_mode``, else the provider's default;
    text for an opinions rubric); a :class:`ConfigError` when they cannot go together."""
    # logprob reads a score or a label from the next-token distribution; opinions rubrics need text
    mode = score_mode or rubric.kind_info.default_score_mode(provider.default_score_mode)
    if mode not in SCORE_MODES:
        raise ConfigError(f"unknown score mode '{mode}' (choose from {', '.join(SCORE_MODES)})")
    if mode not in rubric.kind_info.score_modes:
        modes, kind = " or ".join(rubric.kind_info.score_modes), rubric.spec.kind
        raise ConfigError(f"the {mode} score mode reads a score or a label; {kind} rubrics use --score-mode {modes}")
    refuse_small_opinions_judge(rubric, provider)
    if mode in LOGPROB_MODES and not provider.supports_logprobs:
        raise ConfigError(f"provider '{provider.name}' cannot return logprobs; use --score-mode text")
    if mode == "reason" and not provider.supports_prefill:
        raise ConfigError(f"the reason score mode needs a local judge; provider '{provider.name}' cannot continue one")
    return mode


def judge_config(
    rubric: Rubric, provider: Provider, mode: str, *, seed: int, temperature: float, max_tokens: int
) -> GenerateConfig:
    """The verdict call's settings: two tokens and the label or score candidates' logprobs (logprob, reason),
    or up to ``max_tokens`` of text, in the rubric's JSON schema where the provider takes one (text)."""
    if mode in LOGPROB_MODES:
        return GenerateConfig(
            temperature=temperature,
            seed=seed,
            max_tokens=2,
            logprobs=True,
            top_logprobs=20,
            score_candidates=rubric.kind_info.score_candidates(rubric.spec),
        )
    schema = rubric.json_schema() if provider.supports_json_schema else None
    return GenerateConfig(temperature=temperature, seed=seed, max_tokens=max_tokens, json_schema=schema)


@dataclass
class _Calls:
    """What one item's calls came to: the calls made, HTTP attempts (retries and re-asks included; a cached call
    counts once), whether all came from the cache, and the tokens."""

    calls: list[CallResult] = field(default_factory=list)
    attempts: int = 0
    all_cached: bool = True
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, res: CallResult) -> None:
        self.calls.append(res)
        self.attempts += res.attempts or 1
        self.all_cached = self.all_cached and res.cached
        self.prompt_tokens += res.output.usage.prompt_tokens
        self.completion_tokens += res.output.usage.completion_tokens

    def failed(self, attempts: int, *, cached: bool) -> None:
        self.attempts += attempts
        self.all_cached = self.all_cached and cached


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
        reasoning_seed: int | None = None,
        caller: Caller | None = None,
    ) -> None:
        #: what this grader was built with: :meth:`with_caller` / :meth:`with_seed` build another from it
        self._settings: dict[str, Any] = {
            "score_mode": score_mode,
            "seed": seed,
            "temperature": temperature,
            "max_tokens": max_tokens,
            "max_reasks": max_reasks,
            "retry": retry,
            "cache": cache,
            "prices": prices,
            "cache_namespace": cache_namespace,
            "keep_failed": keep_failed,
            "batch": batch,
            "reasoning_tokens": reasoning_tokens,
            "reasoning_seed": reasoning_seed,
            "caller": caller,
        }
        mode = check_score_mode(rubric, provider, score_mode)
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
        #: makes every call and keeps what the grader stores (default: the cache, then the server)
        self.caller: Caller = caller or DirectCaller(cache, self.retry, keep_failed=keep_failed)
        #: reason mode: the bounded, greedy reasoning call made before the verdict is read (a repeat keeps the
        #: first repeat's seed for it: :meth:`with_seed`)
        self.reason_config = GenerateConfig(
            temperature=temperature,
            seed=seed if reasoning_seed is None else reasoning_seed,
            max_tokens=reasoning_tokens,
        )
        #: the verdict call
        self.config = judge_config(rubric, provider, mode, seed=seed, temperature=temperature, max_tokens=max_tokens)

    @property
    def settings(self) -> dict[str, Any]:
        """The keyword arguments this grader was built with (its rubric and provider aside)."""
        return dict(self._settings)

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
        """One judge call through this grader's caller (nothing stored yet)."""
        return await self.caller.call(
            self.provider,
            messages,
            config or self.config,
            limiter=limiter,
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
        tally = _Calls()
        raw: str | None = None
        parsed: Parsed | None = None
        error: str | None = None
        for round_ in range(self.max_reasks + 1):
            try:
                res, thought = await self._ask(messages, limiter, tally)
            except Exception as exc:  # noqa: BLE001 - each failure becomes a reason; what stops the run is raised
                error = self._failed(exc, tally)
                break
            tally.add(res)
            out = res.output
            raw = out.text if thought is None else tally.calls[-2].output.text  # reason mode: the reasoning
            parsed, error, reask = self._read(out, thought)
            if reask is None:
                break
            if round_ < self.max_reasks:
                messages = [
                    *messages,
                    {"role": "assistant", "content": out.text},
                    {"role": "user", "content": reask_message(reask, self.rubric, self.score_mode)},
                ]
        if error is not None and len(tally.calls) > 1:
            n = len(tally.calls) - 1
            error += f" (after {n} re-ask{'s' if n > 1 else ''})"
        self._store(tally.calls, final=parsed is not None)
        return self._verdict(item_id, parsed, error, raw, tally, start)

    async def _ask(
        self, messages: list[Message], limiter: Limiter | None, tally: _Calls
    ) -> tuple[CallResult, str | None]:
        """The verdict call, and in reason mode the reasoning kept from the call made before it (counted in
        ``tally``), which the verdict call continues after the rubric's verdict prefix."""
        if self.score_mode != "reason":
            return await self.call(messages, limiter), None
        first = await self.call(messages, limiter, self.reason_config)
        tally.add(first)
        thought = self.rubric.cut_reasoning(first.output.text)
        forced = {"role": "assistant", "content": f"{thought}\n{self.rubric.verdict_prefix} ".lstrip()}
        return await self.call([*messages, forced], limiter), thought

    def _failed(self, exc: Exception, tally: _Calls) -> str:
        """Why a call that raised ``exc`` leaves the item unscored (counted in ``tally``); raised again when it
        stops the whole run (a fatal server error, the user's setup, the budget)."""
        if isinstance(exc, ContextLengthError):
            tally.failed(exc.attempts, cached=False)
            return f"context length exceeded: the prompt plus max_tokens does not fit the model ({exc})"
        if isinstance(exc, ClientRequestError):
            if is_fatal(exc):
                raise exc
            tally.failed(exc.attempts or 1, cached=exc.attempts == 0)  # 0: the rejection was served from the cache
            return f"request rejected: {exc}"
        if isinstance(exc, ProviderError):
            if is_fatal(exc):
                raise exc
            tally.failed(exc.attempts, cached=False)
            return f"{type(exc).__name__} after {exc.attempts} attempt{'s' if exc.attempts > 1 else ''}: {exc}"
        if isinstance(exc, ConfigError | RubricError | DataError | BudgetReached):
            raise exc  # the user's setup is wrong for every item (or the budget is spent): the caller says so
        # a bug or an unforeseen failure must not sink the run
        tally.failed(1, cached=False)
        return f"internal error: {type(exc).__name__}: {exc}"

    def _read(self, out: ModelOutput, thought: str | None) -> tuple[Parsed | None, str | None, str | None]:
        """(the verdict read from ``out``, else None; why not; what a re-ask should tell the judge, None when
        re-asking cannot help)."""
        reads_logprobs = self.score_mode in LOGPROB_MODES
        try:
            if not reads_logprobs:
                return parse_verdict(out.text, self.rubric), None, None
            parsed = score_from_logprobs(out.score_logprobs, out.top_logprobs, self.rubric)
            if thought is not None:
                parsed.reasoning = thought
            return parsed, None, None
        except VerdictParseError as exc:
            if out.finish_reason == "length" and not reads_logprobs:
                # the same max_tokens would cut the answer again: re-asking cannot help
                return None, f"truncated at max_tokens ({self.config.max_tokens}): raise max_tokens ({exc})", None
            # logprobs: the same call would give the same logprobs, re-asking cannot help
            return None, f"unparseable verdict: {exc}", None if reads_logprobs else str(exc)
        except Exception as exc:  # noqa: BLE001 - a parser bug costs one item, with the completion kept
            return None, f"internal error while reading the verdict: {type(exc).__name__}: {exc}", None

    def _verdict(
        self, item_id: str, parsed: Parsed | None, error: str | None, raw: str | None, tally: _Calls, start: float
    ) -> Verdict:
        cached = tally.all_cached  # every call (or the rejection) came from the cache
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
            prompt_tokens=tally.prompt_tokens,
            completion_tokens=tally.completion_tokens,
            # a verdict served from the cache cost nothing this time
            cost_usd=0.0 if cached else self._cost(tally.prompt_tokens, tally.completion_tokens),
            latency_ms=round((time.perf_counter() - start) * 1000, 3),
            cached=cached,
            temperature=self.config.temperature,
            seed=self.config.seed,
            label=parsed.label if parsed else None,
            score_probs=parsed.score_probs if parsed else None,
            details=parsed.details if parsed else None,
            attempts=max(tally.attempts, 1),
        )

    def _store(self, calls: list[CallResult], *, final: bool) -> None:
        """Cache this item's completions, marked final only when they made an ok verdict: an
        unparseable or truncated completion is kept as what it is and called again next run."""
        for res in calls:
            if not res.cached or res.final != final:
                self.caller.store(res.key, {**res.output.to_cache(), "final": final})

    def _cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        return cost_usd(self.provider.id, prompt_tokens, completion_tokens, self.prices, batch=self.batch is not None)

    def _rebuilt(self, **changes: Any) -> Grader:
        """A grader built from this one's rubric, provider and settings, with ``changes``."""
        return Grader(self.rubric, self.provider, **{**self._settings, **changes})

    def with_caller(self, caller: Caller, *, batch: BatchSettings | None = None) -> Grader:
        """This grader with its calls made by ``caller`` (same rubric, provider and settings); ``batch``: the
        settings of the Batch API run ``caller`` belongs to (its verdicts are priced at the batch price)."""
        return self._rebuilt(caller=caller, batch=batch or self.batch)

    def with_seed(self, seed: int) -> Grader:
        """This grader with another seed (a repeat): same provider, caller and settings, another cache entry.
        Reason mode's reasoning call keeps this grader's seed."""
        return self._rebuilt(seed=seed, reasoning_seed=self.reason_config.seed, caller=self.caller)

    def with_guard(self, guard: CallGuard | None) -> Grader:
        """This grader with every call it sends wrapped by ``guard`` (same provider, cache and settings)."""
        if not isinstance(self.caller, DirectCaller):
            raise ConfigError("--max-cost guards calls sent to the server as they go; this run does not send them")
        return self.with_caller(self.caller.derive(guard=guard))

    def describe(self) -> dict[str, Any]:
        return {"rubric": self.rubric.id, "judge": self.provider.id, "score_mode": self.score_mode}
