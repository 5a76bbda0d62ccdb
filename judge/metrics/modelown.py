"""Metrics that need the system's own model (systems given as ``model:`` or ``sweep:``), not its outputs.

* ``loss`` -- the model's per-token cross-entropy on each item's ``reference`` given its ``input``,
  the prompt rendered as generation renders it (chat template, system prompt) and masked: only the
  answer's tokens and the template's end-of-turn marker are scored, as supervised fine-tuning trains
  them. Reported as nats/token (``loss``), bits/token (``loss_bits``), perplexity (``loss_ppl`` =
  e^loss) and bits per UTF-8 byte of the reference (``loss_bpb``, comparable across tokenizers); a
  system's value is the corpus one (token-weighted; bytes-weighted for bits per byte). References
  longer than the model's window are scored in rolling windows, every token once.
* ``choice_accuracy`` -- a multiple-choice benchmark (MMLU, TruthfulQA MC1, or JSONL; see
  :mod:`judge.benchmarks`) scored by the log-likelihood of each choice after the question, as
  lm-evaluation-harness's ``acc`` (the most likely choice is the correct one) and ``acc_norm`` (the
  likelihood divided by the choice's length in characters). A question's choices share its prompt,
  which runs once. Per-subject accuracy is in the details. The figure is named by ``name:``
  (``{metric: choice_accuracy, data: ../shared/data/mmlu, name: mmlu}`` gives ``mmlu`` and ``mmlu_norm``).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import numpy as np

from judge.errors import ConfigError
from judge.metrics.base import Corpus, EvalInput, Figure, MetricResult
from judge.metrics.reference import int_option
from judge.progress import items_done

LN2 = math.log(2)


def _batch_size(options: dict[str, Any], default: int) -> int:
    """The ``batch_size`` option: an integer >= 1 (an explicit null is not one)."""
    value = int_option(options, "batch_size", default, lo=1)
    if value is None:
        raise ConfigError("option 'batch_size' must be an integer >= 1, not None")
    return value


def _corpus(column: int, scale: float = 1.0, exp: bool = False, per: int = 1) -> Corpus:
    """stats = (nll nats, tokens, bytes) per item; the score is sum(nll) / sum(stats[per]) * scale."""

    def score(sums: np.ndarray) -> Any:
        sums = np.atleast_2d(sums)
        with np.errstate(divide="ignore", invalid="ignore"):
            value = sums[:, 0] / sums[:, per] * scale
        return np.exp(value) if exp else value

    return Corpus(np.zeros((0, 3)), score, vectorised=True)


def _remembered(data: EvalInput, what: str, payload: Any, compute: Any) -> tuple[np.ndarray, bool]:
    """``compute()`` (an array), kept in the call cache under the model's identity and ``payload``, so a rerun
    -- or a sweep that gained a checkpoint -- recomputes nothing it already has. An array with a NaN (a
    served model's item the server could not score) is not kept: the next run asks again. Returns (array,
    cached)."""
    ident = data.model.identity() if data.model is not None else None
    if ident is None:
        return compute(), False
    from judge.cache import Cache, cache_key

    key = cache_key(kind="model-metric", what=what, model=ident, payload=payload)
    cache = Cache.in_dir()
    try:
        hit = cache.get(key)
        if hit is not None:
            return np.array(hit["values"], dtype=float), True
        values = np.asarray(compute(), dtype=float)
        if np.isfinite(values).all():
            cache.put(key, {"values": values.tolist()})
        return values, False
    finally:
        cache.close()


def _loss_stats(data: EvalInput, inputs: list[str], refs: list[str], options: dict) -> tuple[np.ndarray, bool]:
    settings = data.model.generate
    payload = {
        "inputs": inputs,
        "refs": refs,
        "system_prompt": settings.system_prompt,
        "chat_template": settings.chat_template,
        "max_length": options.get("max_length"),
    }
    return _remembered(data, "loss", payload, lambda: _compute_loss_stats(inputs, refs, data, options))


def _compute_loss_stats(inputs: list[str], refs: list[str], data: EvalInput, options: dict) -> np.ndarray:
    from judge.local.lm import answer_requests, loglikelihoods, model_max_length

    model, tok = data.model.load()
    settings = data.model.generate
    requests = answer_requests(
        tok, [settings.messages(x) for x in inputs], refs, False if settings.chat_template == "none" else None
    )
    max_length = model_max_length(model, tok, int_option(options, "max_length", None, lo=2))
    batch_size = _batch_size(options, 8)
    lls = loglikelihoods(model, tok, requests, max_length=max_length, batch_size=batch_size, on_done=items_done)
    return np.array([(-ll.logprob, ll.n_tokens, len(r.encode("utf-8"))) for ll, r in zip(lls, refs, strict=True)])


# ------------------------------------------------------------------ served models (prompt logprobs)

SERVED_SEPARATOR = "\n\n"
"""Between a served model's raw prompt text and the reference it scores (a paragraph break)."""


def served_prompt(data: EvalInput, prompt: str) -> str:
    """The raw text a served model's ``loss`` scores the reference after: the prompt's paragraphs (system
    prompt, then the input) and a blank line. ``/v1/completions`` takes text, so no chat template."""
    from judge.local.prompts import raw_prompt_text

    return raw_prompt_text(data.model.generate.messages(prompt)) + SERVED_SEPARATOR


def _served_loss_stats(
    inputs: list[str], refs: list[str], data: EvalInput, options: dict
) -> tuple[np.ndarray, list[str | None]]:
    """(nll, tokens, bytes) per item from the server's echoed log-probabilities, and per item the reason it
    could not be scored (its row is NaN then)."""
    pairs = [(served_prompt(data, x), r) for x, r in zip(inputs, refs, strict=True)]
    spans = served_loglikelihoods(data.model, pairs, options)
    rows = [
        (np.nan, np.nan, np.nan) if isinstance(got, str) else (-got[0], got[1], len(ref.encode("utf-8")))
        for (_, ref), got in zip(pairs, spans, strict=True)
    ]
    reasons = [got if isinstance(got, str) else None for got in spans]
    return np.array(rows, dtype=float).reshape(len(pairs), 3), reasons


def _any_loss_stats(
    data: EvalInput, inputs: list[str], refs: list[str], options: dict
) -> tuple[np.ndarray, bool, list[str | None]]:
    """(stats, cached, reasons): a local model's (remembered by content) or a served model's."""
    if data.model.is_local:
        got, cached = _loss_stats(data, inputs, refs, options)
        return got, cached, [None] * len(refs)
    reasons: list[str | None] = [None] * len(refs)

    def compute() -> np.ndarray:
        stats, why = _served_loss_stats(inputs, refs, data, options)
        reasons[:] = why
        return stats

    settings = data.model.generate
    payload = {"inputs": inputs, "refs": refs, "system_prompt": settings.system_prompt, "separator": SERVED_SEPARATOR}
    got, cached = _remembered(data, "served loss", payload, compute)
    return got, cached, reasons


def served_loglikelihoods(model: Any, pairs: list[tuple[str, str]], options: dict[str, Any]) -> list[Any]:
    """(log-likelihood, tokens) of each continuation after its context, from a served model's echoed
    prompt log-probabilities (:meth:`judge.providers.openai.OpenAIProvider.echo_logprobs`), or the reason
    (a string) a pair could not be scored. Requests carry ``batch_size`` texts each (default 8), at most
    ``concurrency`` at once (default 8), retried as judge calls are; a fatal server error stops the run."""
    from judge.runner import run_sync

    chunk = _batch_size(options, 8)
    concurrency = int_option(options, "concurrency", 8, lo=1) or 8
    return list(run_sync(_served_spans(model.provider_instance(), pairs, chunk, concurrency)))


async def _served_spans(provider: Any, pairs: list[tuple[str, str]], chunk: int, concurrency: int) -> list[Any]:
    import asyncio

    from judge.errors import ProviderError
    from judge.grader import is_fatal
    from judge.retry import RetryPolicy, with_retries

    gate = asyncio.Semaphore(concurrency)
    out: list[Any] = [None] * len(pairs)

    async def one(lo: int) -> None:
        part = pairs[lo : lo + chunk]
        texts = [c + x for c, x in part]
        async with gate:
            try:
                echoed = await with_retries(lambda: provider.echo_logprobs(texts), provider.should_retry, RetryPolicy())
            except ProviderError as exc:
                if is_fatal(exc):
                    raise
                out[lo : lo + len(part)] = [f"{type(exc).__name__}: {exc}"] * len(part)
                return
        for k, ((context, text), got) in enumerate(zip(part, echoed, strict=True)):
            try:
                logprob, n = got.span(len(context), len(context) + len(text))
            except ProviderError as exc:
                out[lo + k] = str(exc)
                continue
            merged = "no token of the continuation's own: the server merged it into the prompt's last token"
            out[lo + k] = (logprob, n) if n else merged
        items_done(len(part))

    try:
        await asyncio.gather(*(one(lo) for lo in range(0, len(pairs), chunk)))
    finally:
        await provider.aclose()
    return out


_PROBED: dict[tuple[str, str | None], str | None] = {}


def check_served_logprobs(model: Any) -> None:
    """Refuse, before anything runs, a served model whose server does not return prompt log-probabilities
    (``/v1/completions`` with ``echo``; vLLM does, llama.cpp's server and OpenAI's chat models do not):
    one probe request per server and model, remembered for the process."""
    key = (model.path, model.base_url)
    if key not in _PROBED:
        from judge.errors import ClientRequestError

        try:
            probe = served_loglikelihoods(model, [("The capital of France is", " Paris.")], {"batch_size": 1})[0]
        except ClientRequestError as exc:
            if exc.status not in (400, 404, 405, 422):  # a bad key is the run's failure (exit 3), not a refusal
                raise
            probe = str(exc)  # no such route, or the server refuses echo/logprobs
        _PROBED[key] = probe if isinstance(probe, str) else None
    if _PROBED[key] is not None:
        raise ConfigError(
            f"asked {model.base_url or 'the server'} for /v1/completions with echo and logprobs; it answered "
            f"{_PROBED[key]}. Serve the model with vLLM "
            "(which echoes prompt log-probabilities), or give the system as model: local/FOLDER"
        )


def loss(data: EvalInput, options: dict[str, Any]) -> MetricResult:
    if data.model is None:
        raise ConfigError("loss needs a system that is a model")
    n = len(data.ids)
    errors: list[str | None] = [None if refs else "not applicable: no reference" for refs in data.references]
    scored = [k for k in range(n) if errors[k] is None]
    names = ("loss", "loss_bits", "loss_ppl", "loss_bpb")
    scores = {f: np.full(n, np.nan) for f in names}
    stats = np.zeros((n, 3))
    details: dict[str, Any] = {"cached": True}
    if scored:
        refs = [data.references[k][0] for k in scored]  # type: ignore[index]
        got, cached, reasons = _any_loss_stats(data, [data.inputs[k] for k in scored], refs, options)
        details["cached"] = cached
        for k, why in zip(scored, reasons, strict=True):
            errors[k] = why
        kept = [k for k, why in zip(scored, reasons, strict=True) if why is None]
        got = got[[why is None for why in reasons]]
        stats[kept] = got
        per_token = got[:, 0] / got[:, 1]
        scores["loss"][kept] = per_token
        scores["loss_bits"][kept] = per_token / LN2
        scores["loss_ppl"][kept] = np.exp(per_token)
        scores["loss_bpb"][kept] = got[:, 0] / LN2 / got[:, 2]
        details |= {"tokens": int(got[:, 1].sum()), "bytes": int(got[:, 2].sum())}
    if data.train is not None:
        t_inputs, t_refs = data.train
        got, cached, reasons = _any_loss_stats(data, list(t_inputs), list(t_refs), options)
        got = got[[why is None for why in reasons]]
        details["cached"] = details["cached"] and cached
        details["train_loss"] = float(got[:, 0].sum() / got[:, 1].sum())
        details["train_tokens"] = int(got[:, 1].sum())
        details["train_items"] = len(got)
    corpus = {
        "loss": _corpus(0),
        "loss_bits": _corpus(0, 1 / LN2),
        "loss_ppl": _corpus(0, exp=True),
        "loss_bpb": _corpus(0, 1 / LN2, per=2),
    }
    for c in corpus.values():
        c.stats = stats
    return MetricResult(
        scores,
        errors,
        corpus=corpus,
        settings={
            "model": data.model.spec,
            "scored": "the reference's tokens and the chat template's end-of-turn marker, after the prompt "
            "as generation renders it; system value = corpus (token-weighted)"
            if data.model.is_local
            else "the reference's tokens after the raw prompt text and a blank line, as the server tokenizes "
            "them (/v1/completions echo, no chat template); system value = corpus (token-weighted)",
            "chat_template": data.model.generate.chat_template if data.model.is_local else "none (server text)",
            "system_prompt": data.model.generate.system_prompt,
        },
        details=details,
    )


LOSS_FIGURES = (
    Figure("loss", "lower", 0.0, None, "the model's own cross-entropy on the reference (nats/token)"),
    Figure("loss_bits", "lower", 0.0, None, "the same in bits/token"),
    Figure("loss_ppl", "lower", 1.0, None, "perplexity on the reference, e^loss"),
    Figure("loss_bpb", "lower", 0.0, None, "bits per UTF-8 byte of the reference (comparable across tokenizers)"),
)


# ------------------------------------------------------------------------------------- choice accuracy


def choice_figures(options: dict[str, Any]) -> tuple[Figure, ...]:
    name = str(options.get("name") or "choice_accuracy")
    return (
        Figure(name, "higher", 0.0, 1.0, "multiple-choice accuracy: the most likely choice is the correct one"),
        Figure(f"{name}_norm", "higher", 0.0, 1.0, "accuracy with each choice's likelihood per character"),
    )


@functools.lru_cache(maxsize=8)
def _questions(path: str, split: str, shots: int, per_subject: int | None, seed: int) -> tuple[Any, ...]:
    from judge.benchmarks import load_benchmark, stratified

    questions = load_benchmark(path, split=split, shots=shots)
    if per_subject is not None:
        questions = stratified(questions, per_subject, seed)
    return tuple(questions)


def benchmark_questions(options: dict[str, Any]) -> tuple[Any, ...]:
    """The questions a ``choice_accuracy`` entry scores (checked at plan time; cached)."""
    data = options.get("data")
    if not isinstance(data, str) or not data:
        raise ConfigError("choice_accuracy needs 'data': an MMLU folder or CSV, TruthfulQA.csv or a .jsonl file")
    per_subject = int_option(options, "limit_per_subject", None, lo=1)
    shots = int_option(options, "shots", 0, lo=0)
    return _questions(data, str(options.get("split", "test")), shots or 0, per_subject, int(options.get("seed", 0)))


def choice_accuracy(data: EvalInput, options: dict[str, Any]) -> MetricResult:
    from judge.local.lm import choice_requests, loglikelihoods, model_max_length

    if data.model is None:
        raise ConfigError("choice_accuracy needs a system that is a model")
    questions = benchmark_questions(options)
    acc_name, norm_name = (f.name for f in choice_figures(options))

    def compute() -> np.ndarray:
        if not data.model.is_local:
            pairs = [(q.context, c) for q in questions for c in q.choices]
            got = served_loglikelihoods(data.model, pairs, options)
            return np.array([np.nan if isinstance(g, str) else g[0] for g in got], dtype=float)
        model, tok = data.model.load()
        requests, _ = choice_requests(tok, [q.context for q in questions], [q.choices for q in questions])
        max_length = model_max_length(model, tok, int_option(options, "max_length", None, lo=2))
        lls = loglikelihoods(model, tok, requests, max_length=max_length, batch_size=_batch_size(options, 16))
        return np.array([ll.logprob for ll in lls])

    payload = {"questions": [(q.context, q.choices) for q in questions], "max_length": options.get("max_length")}
    flat, cached = _remembered(data, "choice_accuracy", payload, compute)
    per_q: list[list[float]] = []
    at = 0
    for q in questions:
        per_q.append([float(x) for x in flat[at : at + len(q.choices)]])
        at += len(q.choices)
    # a question with a choice the server could not score is unscored, not guessed
    errors = [
        "the server gave no log-probability for a choice" if any(math.isnan(x) for x in v) else None for v in per_q
    ]
    acc = np.array(
        [
            np.nan if why else float(int(np.argmax(v)) == q.answer)
            for v, q, why in zip(per_q, questions, errors, strict=True)
        ]
    )
    norm = np.array(
        [
            np.nan
            if why
            else float(int(np.argmax([lp / len(c) for lp, c in zip(v, q.choices, strict=True)])) == q.answer)
            for v, q, why in zip(per_q, questions, errors, strict=True)
        ]
    )
    subjects: dict[str, list[float]] = {}
    for q, a in zip(questions, acc, strict=True):
        if not math.isnan(a):
            subjects.setdefault(q.subject, []).append(float(a))
    return MetricResult(
        {acc_name: acc, norm_name: norm},
        errors,
        settings={
            "data": str(Path(options["data"])),
            "split": options.get("split", "test"),
            "shots": int(options.get("shots", 0) or 0),
            "limit_per_subject": options.get("limit_per_subject"),
            "n_questions": len(questions),
            "scoring": "log-likelihood of each choice after the prompt (acc; acc_norm per character)",
        },
        details={
            "per_subject": {s: {"n": len(v), "accuracy": float(np.mean(v))} for s, v in sorted(subjects.items())},
            "cached": cached,
        },
        ids=[q.id for q in questions],
    )


def estimate_loss(
    model: Any,
    tokenizer: Any,
    texts: list[str],
    *,
    prompts: list[str] | None = None,
    system_prompt: str | None = None,
    chat_template: bool | None = None,
    max_length: int | None = None,
    batch_size: int = 8,
) -> dict[str, Any]:
    """A model's own cross-entropy on ``texts`` -- for a custom training loop.

    Without ``prompts`` each text is scored whole after the start token. With ``prompts`` each text is
    the answer to its prompt, rendered as ``judge eval``'s ``loss`` renders it (chat template unless
    ``chat_template=False``) and only the answer scored. Runs under ``torch.no_grad()`` in eval mode and
    restores train mode. Returns ``loss`` (nats/token, token-weighted), ``bits_per_token``,
    ``perplexity``, ``bits_per_byte``, ``tokens``, ``bytes`` and ``per_item`` losses.
    """
    import torch

    from judge.local.lm import answer_requests, loglikelihoods, model_max_length, text_requests

    if prompts is not None:
        if len(prompts) != len(texts):
            raise ValueError(f"{len(prompts)} prompts for {len(texts)} texts")
        head = [{"role": "system", "content": system_prompt}] if system_prompt else []
        requests = answer_requests(
            tokenizer, [[*head, {"role": "user", "content": p}] for p in prompts], texts, chat_template
        )
    else:
        requests = text_requests(tokenizer, texts)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            lls = loglikelihoods(
                model,
                tokenizer,
                requests,
                max_length=model_max_length(model, tokenizer, max_length),
                batch_size=batch_size,
            )
    finally:
        if was_training:
            model.train()
    nll = sum(-ll.logprob for ll in lls)
    tokens = sum(ll.n_tokens for ll in lls)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    loss_value = nll / tokens if tokens else float("nan")
    return {
        "loss": loss_value,
        "bits_per_token": loss_value / LN2,
        "perplexity": math.exp(loss_value) if tokens else float("nan"),
        "bits_per_byte": nll / LN2 / n_bytes if n_bytes else float("nan"),
        "tokens": tokens,
        "bytes": n_bytes,
        "per_item": [-ll.logprob / ll.n_tokens if ll.n_tokens else float("nan") for ll in lls],
    }
