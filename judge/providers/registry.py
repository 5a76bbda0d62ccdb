"""``provider/model`` strings to provider objects."""

from __future__ import annotations

import os
from typing import Any

from judge.errors import ConfigError
from judge.providers._base import Provider

DEFAULT_LOCAL_JUDGE = "local/smollm2"
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
PROVIDERS = ("openai", "local", "hf", "fake")


def default_judge(base_url: str | None = None) -> str:
    """The judge used when none is named.

    ``$JUDGE_MODEL`` if set; otherwise an OpenAI judge when a base URL (``base_url`` or
    ``$OPENAI_BASE_URL``) or ``$OPENAI_API_KEY`` is given; otherwise the offline SmolLM2-135M
    (good for smoke runs, not for trustworthy verdicts).
    """
    return explain_default_judge(base_url)[0]


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
    ``None`` values are ignored.
    """
    if isinstance(spec, Provider):
        return spec
    options = {k: v for k, v in options.items() if v is not None}
    prefix, sep, model = spec.partition("/")
    if not sep or not model:
        raise ConfigError(f"judge '{spec}' must look like PROVIDER/MODEL, with PROVIDER one of {', '.join(PROVIDERS)}")
    if "base_url" in options and prefix != "openai":
        # a base URL only means something to an OpenAI-compatible server; ignoring it would hide a mistake
        raise ConfigError(
            f"--base-url/base_url is for openai/* judges, not '{spec}' (use -j openai/MODEL to call that server)"
        )
    if "dtype" in options and prefix not in ("local", "hf"):
        raise ConfigError(f"--local-dtype/dtype is for local/* judges, not '{spec}' (a server picks its own precision)")
    if prefix == "openai":
        from judge.providers.openai import OpenAIProvider

        return OpenAIProvider(
            model, **_only(options, "base_url", "api_key", "timeout", "structured_output", "http_client")
        )
    if prefix in ("local", "hf"):
        from judge.providers.local import LocalProvider

        return LocalProvider(model, **_only(options, "device", "dtype"))
    if prefix == "fake":
        from judge.providers.fake import FakeProvider

        return FakeProvider(model, **_only(options, "script"))
    raise ConfigError(f"unknown provider '{prefix}' in '{spec}' (known: {', '.join(PROVIDERS)})")


def _only(options: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: options[k] for k in names if k in options}
