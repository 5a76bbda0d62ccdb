"""``judge baseline ...``: local baselines as JSON lines, one per item, joinable with verdicts by ``id``.

Only click and the light data helpers are imported here; the models load when a command runs.
Every option also reads ``JUDGE_BASELINE_<COMMAND>_<OPTION>`` (e.g. ``JUDGE_BASELINE_PERPLEXITY_MODEL``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

from judge.baselines._data import BaselineResult
from judge.cli import EXIT_CODES, exit_if_incomplete, max_unscored_option, progress_option
from judge.engines import ENGINES


def _common(default_model: str | None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Options every baseline command shares."""

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        f = max_unscored_option(f)
        f = progress_option(f)
        f = click.option(
            "--address",
            default=None,
            metavar="ADDR",
            help="Ray cluster for --engine ray: ray://HEAD:10001 or auto (default: $RAY_ADDRESS, else a local Ray).",
        )(f)
        f = click.option(
            "--engine",
            type=click.Choice(ENGINES),
            default="local",
            show_default=True,
            help="Where the model runs: in this process, or a Ray actor pool (pip install 'judge[scale]').",
        )(f)
        f = click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Texts per forward pass.")(f)
        f = click.option("--device", default=None, help="cpu, cuda, cuda:1, mps (default: cuda if available).")(f)
        f = click.option(
            "--out", "-o", type=click.Path(dir_okay=False), default=None, help="Output JSONL (default: stdout)."
        )(f)
        f = click.option(
            "--map",
            "maps",
            multiple=True,
            metavar="FIELD=COLUMN",
            help="Read FIELD from COLUMN (repeatable).",
        )(f)
        if default_model is None:
            f = click.option("--model", required=True, help="Local model folder or hub id.")(f)
        else:
            f = click.option(
                "--model", default=default_model, show_default=True, help="Alias, local model folder or hub id."
            )(f)
        return click.argument("data", type=click.Path(exists=True, dir_okay=False))(f)

    return decorate


def _run(
    name: str, data: str, out: str | None, engine: str, address: str | None, progress: bool | None, **kwargs: Any
) -> BaselineResult:
    """Run baseline ``name`` on the chosen engine, streaming records to --out (or stdout) in input order.

    An interrupted run leaves OUT.partial; the same command again skips the ids finished there.
    """
    import contextlib

    from judge.baselines._run import run_baseline
    from judge.engines import get_engine
    from judge.io import OutputLock
    from judge.progress import progress_enabled

    eng = get_engine(engine, address)

    def echo(rec: dict[str, Any]) -> None:
        click.echo(json.dumps(rec, ensure_ascii=False))

    with OutputLock(out) if out else contextlib.nullcontext():
        return run_baseline(
            name,
            data,
            engine=eng,
            out=out,
            on_record=None if out else echo,
            progress=progress_enabled(progress),
            **kwargs,
        )


def _emit(result: BaselineResult, out: str | None, max_unscored: float | None) -> None:
    if out:
        resumed = result.summary.get("resumed")
        note = f" ({resumed} resumed from {out}.partial)" if resumed else ""
        click.echo(f"wrote {len(result.records)} records to {out}{note}", err=True)
    click.echo(json.dumps(result.summary, ensure_ascii=False, default=str), err=True)
    sys.stderr.flush()
    # an item a baseline cannot score has an empty text (its reason says so): a data property, not a transport one
    n_ok = sum(score is not None for score in result.scores())
    n = len(result.records)
    exit_if_incomplete("items", n, n_ok, 0, n - n_ok, max_unscored)


def _check_out(out: str | None, data: str) -> None:
    """An unwritable --out, or one that is DATA, fails before any model is loaded."""
    if out:
        from judge.io import check_output_path

        check_output_path(out, inputs=[data])


def _kwargs(batch_size: int | None, device: str | None, maps: tuple[str, ...]) -> dict[str, Any]:
    """Options every baseline takes: device, --map renames and (if given) --batch-size."""
    from judge.dataset import parse_mapping

    kwargs: dict[str, Any] = {"device": device, "mapping": parse_mapping(maps)}
    if batch_size is not None:
        kwargs["batch_size"] = batch_size
    return kwargs


@click.group(epilog=EXIT_CODES)
def baseline() -> None:
    """Local baselines: perplexity, entailment, PMI, embedding similarity.

    Each command writes one JSON line per item with its id and scores; the corpus summary goes
    to stderr. Score them against human labels with `judge calibrate --score-column`.
    """


@baseline.command(epilog="\b\nExample:\n  judge baseline perplexity items.jsonl --out ppl.jsonl\n\n" + EXIT_CODES)
@_common("smollm2")
@click.option("--field", default="output", show_default=True, help="Item field to score.")
@click.option(
    "--max-length", type=click.IntRange(min=2), default=None, help="Window in tokens (default: model's, ≤2048)."
)
@click.option("--stride", type=click.IntRange(min=1), default=None, help="New tokens per window (default: half).")
def perplexity(
    data: str,
    model: str,
    maps: tuple[str, ...],
    out: str | None,
    device: str | None,
    batch_size: int | None,
    max_unscored: float | None,
    progress: bool | None,
    engine: str,
    address: str | None,
    field: str,
    max_length: int | None,
    stride: int | None,
) -> None:
    """Perplexity, NLL per token, bits per byte and word perplexity of each output under a causal LM."""
    _check_out(out, data)

    _emit(
        _run(
            "perplexity",
            data,
            out,
            engine,
            address,
            progress,
            model=model,
            field=field,
            max_length=max_length,
            stride=stride,
            **_kwargs(batch_size, device, maps),
        ),
        out,
        max_unscored,
    )


@baseline.command(
    epilog="\b\nExamples:\n  judge baseline entailment items.jsonl --premise context\n"
    "  judge baseline entailment items.jsonl --model ./deberta-large-mnli --premise context\n\n" + EXIT_CODES
)
@_common("smollm2")
@click.option("--premise", type=click.Choice(["context", "reference", "input"]), default="context", show_default=True)
@click.option("--hypothesis", default="output", show_default=True, help="Item field entailed by the premise.")
@click.option("--max-length", type=click.IntRange(min=16), default=None, help="Tokens per pair (default: ≤512).")
def entailment(
    data: str,
    model: str,
    maps: tuple[str, ...],
    out: str | None,
    device: str | None,
    batch_size: int | None,
    max_unscored: float | None,
    progress: bool | None,
    engine: str,
    address: str | None,
    premise: str,
    hypothesis: str,
    max_length: int | None,
) -> None:
    """SummaC-ZS-style entailment of each output by its premise: an NLI model, or a causal LM asked yes/no.

    The default, smollm2, answers zero-shot (no NLI weights ship in any package this machine reaches).
    """
    _check_out(out, data)

    _emit(
        _run(
            "entailment",
            data,
            out,
            engine,
            address,
            progress,
            model=model,
            premise_field=premise,
            field=hypothesis,
            max_length=max_length,
            **_kwargs(batch_size, device, maps),
        ),
        out,
        max_unscored,
    )


@baseline.command(
    epilog="\b\nExample:\n  judge baseline pmi items.jsonl --source context --out pmi.jsonl\n\n" + EXIT_CODES
)
@_common("smollm2")
@click.option(
    "--source",
    type=click.Choice(["input", "context", "reference"]),
    default="input",
    show_default=True,
    help="Field the output is conditioned on.",
)
@click.option("--field", default="output", show_default=True, help="Item field to score.")
@click.option(
    "--template",
    default="{source}\n",
    help="Text before the output, with {source}; \\n is a newline.",
    show_default="'{source}\\n'",
)
@click.option(
    "--max-length", type=click.IntRange(min=2), default=None, help="Window in tokens (default: model's, ≤2048)."
)
def pmi(
    data: str,
    model: str,
    maps: tuple[str, ...],
    out: str | None,
    device: str | None,
    batch_size: int | None,
    max_unscored: float | None,
    progress: bool | None,
    engine: str,
    address: str | None,
    source: str,
    field: str,
    template: str,
    max_length: int | None,
) -> None:
    """log p(output | source) - log p(output) per output token, under a causal LM."""
    _check_out(out, data)

    _emit(
        _run(
            "pmi",
            data,
            out,
            engine,
            address,
            progress,
            model=model,
            source_field=source,
            field=field,
            template=template.replace("\\n", "\n"),
            max_length=max_length,
            **_kwargs(batch_size, device, maps),
        ),
        out,
        max_unscored,
    )


@baseline.command(epilog="\b\nExample:\n  judge baseline similarity items.jsonl --against reference\n\n" + EXIT_CODES)
@_common("minilm")
@click.option(
    "--against",
    type=click.Choice(["reference", "input", "context"]),
    default="reference",
    show_default=True,
    help="Field the output is compared with.",
)
@click.option("--field", default="output", show_default=True, help="Item field to compare.")
def similarity(
    data: str,
    model: str,
    maps: tuple[str, ...],
    out: str | None,
    device: str | None,
    batch_size: int | None,
    max_unscored: float | None,
    progress: bool | None,
    engine: str,
    address: str | None,
    against: str,
    field: str,
) -> None:
    """Cosine similarity of sentence embeddings between each output and its reference or input."""
    _check_out(out, data)

    _emit(
        _run(
            "similarity",
            data,
            out,
            engine,
            address,
            progress,
            model=model,
            against_field=against,
            field=field,
            **_kwargs(batch_size, device, maps),
        ),
        out,
        max_unscored,
    )
