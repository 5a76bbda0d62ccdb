"""``provider/model`` strings to provider objects, and what each provider is (:class:`ProviderInfo`).

What a provider *can do* (structured output, logprobs, prefill, a Batch API) is declared on its class
(:class:`~judge.providers._base.Provider`'s ``supports_*`` attributes); what it *is* -- the options its
constructor takes, whether it costs nothing, samples greedily only, loads a model here, answers without a
server -- is its :class:`ProviderInfo` here, one per prefix.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from judge.errors import ConfigError
from judge.providers._base import Provider

DEFAULT_LOCAL_JUDGE = "local/smollm2"
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"

#: options callers pass to whichever judge is named (the CLI's --timeout has a default, --api-key and
#: --no-structured-output apply to servers); a provider that makes no such call drops them
CALL_OPTIONS = ("api_key", "timeout", "structured_output")

#: for options given to the wrong kind of judge: the CLI flag and what to do instead
_MISPLACED = {
    "base_url": ("--base-url/base_url", "use -j openai/MODEL to call that server"),
    "dtype": ("--local-dtype/dtype", "a server picks its own precision"),
}


def _openai() -> type[Provider]:
    from judge.providers.openai import OpenAIProvider

    return OpenAIProvider


def _local() -> type[Provider]:
    from judge.providers.local import LocalProvider

    return LocalProvider


def _fake() -> type[Provider]:
    from judge.providers.fake import FakeProvider

    return FakeProvider


@dataclass(frozen=True)
class ProviderInfo:
    """One provider prefix: how to build it and what it is."""

    name: str
    #: the provider class (imported when first needed: a local model's module is heavy)
    loader: Callable[[], type[Provider]]
    #: keyword options its constructor accepts through :func:`get_provider`
    options: tuple[str, ...] = ()
    #: its calls cost nothing (no price lookup)
    free: bool = False
    #: it samples greedily only (a temperature above 0 is run at 0)
    greedy_only: bool = False
    #: the model runs in this process (batched forward passes, no server)
    local: bool = False
    #: another prefix of a provider listed before it (``hf/`` for ``local/``), left out of messages
    alias: bool = False
    #: its calls are answered in this process (a model, a script): no server for the adaptive limiter to pace
    in_process: bool = False

    def load(self) -> type[Provider]:
        return self.loader()

    def accepted(self, option: str) -> bool:
        """Whether ``option`` may be given for this provider (used, or one of the :data:`CALL_OPTIONS` it drops)."""
        return option in self.options or option in CALL_OPTIONS

    def check_options(self, spec: str, options: dict[str, Any]) -> dict[str, Any]:
        """The options this provider's constructor takes; a :class:`ConfigError` for any it does not know."""
        for option in options:
            if self.accepted(option):
                continue
            if option in _MISPLACED:
                flag, instead = _MISPLACED[option]
                owners = "/".join(f"{p.name}/*" for p in PROVIDERS.values() if option in p.options and not p.alias)
                raise ConfigError(f"{flag} is for {owners} judges, not '{spec}' ({instead})")
            raise ConfigError(
                f"unknown option '{option}' for a {self.name}/* judge '{spec}' "
                f"(accepted: {', '.join(self.options + CALL_OPTIONS)})"
            )
        return {k: v for k, v in options.items() if k in self.options}


_OPENAI_OPTIONS = ("base_url", "api_key", "timeout", "structured_output", "http_client")
_LOCAL = ProviderInfo("local", _local, ("device", "dtype"), free=True, greedy_only=True, local=True, in_process=True)
PROVIDERS: dict[str, ProviderInfo] = {
    "openai": ProviderInfo("openai", _openai, options=_OPENAI_OPTIONS),
    "local": _LOCAL,
    "hf": replace(_LOCAL, name="hf", alias=True),  # the same LocalProvider, by another prefix
    "fake": ProviderInfo("fake", _fake, options=("script",), free=True, in_process=True),
}
#: what a provider not in the registry (a test's own subclass) is taken to be: none of the above
UNREGISTERED = ProviderInfo("", lambda: Provider)


def provider_info(provider: str | Provider) -> ProviderInfo:
    """The registry entry of a prefix (``"openai"``, ``"local/smollm2"``) or a provider object;
    :data:`UNREGISTERED` for one not registered."""
    name = provider.name if isinstance(provider, Provider) else provider.partition("/")[0]
    return PROVIDERS.get(name, UNREGISTERED)


def resolve_judge(judge: str | None, base_url: str | None = None) -> tuple[str, str | None]:
    """``(judge, why)``: ``judge`` itself (``why`` None) or, when none is named, the default and the reason
    it was picked -- the one place a run's judge is chosen."""
    return (judge, None) if judge else explain_default_judge(base_url)


def default_judge(base_url: str | None = None) -> str:
    """The judge used when none is named.

    ``$JUDGE_MODEL`` if set; otherwise an OpenAI judge when a base URL (``base_url`` or
    ``$OPENAI_BASE_URL``) or ``$OPENAI_API_KEY`` is given; otherwise the offline SmolLM2-135M
    (good for smoke runs, not for trustworthy verdicts).
    """
    return resolve_judge(None, base_url)[0]


def explain_default_judge(base_url: str | None = None) -> tuple[str, str]:
    """``(judge, why)``: the default judge and the reason it was picked, for the CLI's one-line notice."""
    if os.environ.get("JUDGE_MODEL"):
        return os.environ["JUDGE_MODEL"], "JUDGE_MODEL is set"
    openai = f"openai/{DEFAULT_OPENAI_MODEL}"
    if base_url:
        return openai, "--base-url given"
    if os.environ.get("OPENAI_BASE_URL"):
        return openai, "OPENAI_BASE_URL is set"
    if os.environ.get("OPENAI_API_KEY"):
        return openai, "OPENAI_API_KEY is set"
    return DEFAULT_LOCAL_JUDGE, (
        "no --judge, JUDGE_MODEL, OPENAI_BASE_URL or OPENAI_API_KEY; "
        "a 135M model, good for smoke runs, not for trustworthy verdicts"
    )


def get_provider(spec: str | Provider, **options: Any) -> Provider:
    """Build a provider from ``provider/model`` (``openai/gpt-4o``, ``local/smollm2``, ``fake/echo-score``).

    ``options`` go to the provider's constructor (``base_url``, ``api_key``, ``timeout``, ``device``...);
    ``None`` values are ignored, an option the provider does not accept is a :class:`ConfigError`.
    """
    if isinstance(spec, Provider):
        return spec
    options = {k: v for k, v in options.items() if v is not None}
    prefix, sep, model = spec.partition("/")
    known = ", ".join(PROVIDERS)
    if not sep or not model:
        raise ConfigError(f"judge '{spec}' must look like PROVIDER/MODEL, with PROVIDER one of {known}")
    info = PROVIDERS.get(prefix)
    if info is None:
        raise ConfigError(f"unknown provider '{prefix}' in '{spec}' (known: {known})")
    return info.load()(model, **info.check_options(spec, options))
