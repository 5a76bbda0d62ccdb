"""What a judge is: :class:`JudgeSpec`, built once (from CLI flags, a suite entry or Python), and the
:class:`~judge.grader.Grader` built from it for a rubric."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from judge.batch import BatchSettings, check_batch_support
from judge.cache import Cache
from judge.providers.registry import default_judge, get_provider
from judge.retry import RetryPolicy

if TYPE_CHECKING:
    from judge.grader import Grader
    from judge.providers._base import Provider
    from judge.rubric import Rubric


class JudgeSpec(BaseModel):
    """A judge: the provider and model, how to reach it, how it is asked and how its calls are kept.

    Picklable and comparable (no connection, no open cache): a grader is built from it for a rubric
    with :meth:`grader`, here or on an engine's worker.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    judge: str | None = Field(
        None, description="PROVIDER/MODEL (openai/gpt-4o-mini, local/smollm2, fake/echo-score); None: the default."
    )
    base_url: str | None = Field(None, description="OpenAI-compatible server (openai/* judges).")
    api_key: str | None = Field(None, repr=False)
    timeout: float | None = Field(None, description="Seconds before a call is abandoned and retried.")
    provider_options: dict[str, Any] = Field(
        default_factory=dict, description="More provider options (dtype, structured_output, device ...)."
    )
    score_mode: str | None = Field(None, description="text, logprob or reason; None: the provider's default.")
    seed: int = 0
    temperature: float = 0.0
    max_tokens: int = 512
    max_reasks: int = 2
    retry: RetryPolicy | None = None
    prices: str | None = Field(None, description="A JSON price table extending the built-in one.")
    cache: bool | Path | None = Field(True, description="True: the default cache folder; a folder; False: none.")
    cache_namespace: str = Field("", description="Part of every cache key: judge again what would hit.")
    keep_failed: bool = Field(False, description="Serve cached unparseable or truncated completions.")
    batch: BatchSettings | None = Field(None, description="Judge through the provider's Batch API.")

    @field_validator("cache", mode="before")
    @classmethod
    def _cache(cls, value: Any) -> Any:
        return Path(value) if isinstance(value, str) else value  # a folder, never a word read as a bool

    @field_validator("batch", mode="before")
    @classmethod
    def _batch(cls, value: Any) -> Any:
        # True, a BatchSettings, or its fields as a dict (a `judge eval` suite entry: {metric: factuality, batch: true})
        if value is True:
            return {}
        return value or None

    @classmethod
    def of(cls, judge: str | None = None, **options: Any) -> JudgeSpec:
        """A spec from keyword options: the spec's own fields, and any other as a provider option
        (``dtype=``, ``structured_output=``); None values are left out."""
        own = {k: v for k, v in options.items() if k in cls.model_fields and k != "provider_options"}
        rest = {k: v for k, v in options.items() if k not in cls.model_fields and v is not None}
        rest.update(options.get("provider_options") or {})
        return cls(judge=judge, provider_options=rest, **{k: v for k, v in own.items() if v is not None})

    def provider(self) -> Provider:
        """The judge's provider (its default when :attr:`judge` is None)."""
        return get_provider(
            self.judge or default_judge(self.base_url),
            base_url=self.base_url,
            api_key=self.api_key,
            timeout=self.timeout,
            **self.provider_options,
        )

    def open_cache(self) -> Cache | None:
        """The call cache this spec names (None: no cache)."""
        if self.cache is True:
            return Cache.in_dir()
        if not self.cache:
            return None
        return Cache.in_dir(self.cache)

    def grader(
        self, rubric: str | Path | Rubric, *, provider: Provider | None = None, cache: Cache | None | bool = True
    ) -> Grader:
        """The grader of ``rubric`` by this judge; ``provider`` and ``cache`` (a :class:`Cache`, or None for
        none) when already open (True: the spec's)."""
        from judge.grader import Grader
        from judge.rubric import Rubric, load_rubric

        rub = rubric if isinstance(rubric, Rubric) else load_rubric(rubric)
        judge = provider or self.provider()
        store = self.open_cache() if cache is True else (None if cache is False else cache)
        if self.batch is not None:
            check_batch_support(judge, store)
        return Grader(
            rub,
            judge,
            score_mode=self.score_mode,
            seed=self.seed,
            temperature=self.temperature,
            cache=store,
            retry=self.retry,
            prices=self.prices,
            max_reasks=self.max_reasks,
            max_tokens=self.max_tokens,
            cache_namespace=self.cache_namespace,
            keep_failed=self.keep_failed,
            batch=self.batch,
        )
