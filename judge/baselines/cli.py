"""``judge baseline ...``: local baselines as JSON lines, one per item, joinable with verdicts by ``id``.

Only click and the light data helpers are imported here; the models load when a command runs.
Every option also reads ``JUDGE_BASELINE_<COMMAND>_<OPTION>`` (e.g. ``JUDGE_BASELINE_PERPLEXITY_MODEL``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from judge.baselines._data import BaselineResult
from judge.cli import EXIT_CODES, exit_if_incomplete
from judge.cli_options import collected, engine_options, map_option, options, run_options


@dataclass(frozen=True)
class BaselineArgs:
    """The arguments every baseline command takes, as given."""

    data: str
    model: str
    maps: tuple[str, ...]
    out: str | None
    device: str | None
    batch_size: int | None
    engine: str
    address: str | None
    progress: bool | None
    max_unscored: float | None

    def run(self, name: str, **kwargs: Any) -> None:
        """Run baseline ``name`` (with its own ``kwargs``), then report and exit as every baseline does."""
        _check_out(self.out, self.data)
        kwargs.update(model=self.model, **_kwargs(self.batch_size, self.device, self.maps))
        result = _run(name, self.data, self.out, self.engine, self.address, self.progress, **kwargs)
        _emit(result, self.out, self.max_unscored)


_SCORED_FIELD = click.option("--field", default="output", show_default=True, help="Item field to score.")
_WINDOW = click.option(
    "--max-length", type=click.IntRange(min=2), default=None, help="Window in tokens (default: model's, ≤2048)."
)


def _common(default_model: str | None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Options every baseline command shares, handed to the command as one ``common`` argument."""
    if default_model is None:
        model = click.option("--model", required=True, help="Local model folder or hub id.")
    else:
        model = click.option(
            "--model", default=default_model, show_default=True, help="Alias, local model folder or hub id."
        )
    return options(
        collected("common", BaselineArgs),
        click.argument("data", type=click.Path(exists=True, dir_okay=False)),
        model,
        map_option("maps"),
        click.option(
            "--out", "-o", type=click.Path(dir_okay=False), default=None, help="Output JSONL (default: stdout)."
        ),
        click.option("--device", default=None, help="cpu, cuda, cuda:1, mps (default: cuda if available)."),
        click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Texts per forward pass."),
        engine_options("Where the model runs: in this process, or a Ray actor pool (pip install 'judge[scale]')."),
        run_options,
    )


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
@_SCORED_FIELD
@_WINDOW
@click.option("--stride", type=click.IntRange(min=1), default=None, help="New tokens per window (default: half).")
def perplexity(
    common: BaselineArgs,
    field: str,
    max_length: int | None,
    stride: int | None,
) -> None:
    """Perplexity, NLL per token, bits per byte and word perplexity of each output under a causal LM."""
    common.run(
        "perplexity",
        field=field,
        max_length=max_length,
        stride=stride,
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
    common: BaselineArgs,
    premise: str,
    hypothesis: str,
    max_length: int | None,
) -> None:
    """SummaC-ZS-style entailment of each output by its premise: an NLI model, or a causal LM asked yes/no.

    The default, smollm2, answers zero-shot (no NLI weights ship in any package this machine reaches).
    """
    common.run(
        "entailment",
        premise_field=premise,
        field=hypothesis,
        max_length=max_length,
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
@_SCORED_FIELD
@click.option(
    "--template",
    default="{source}\n",
    help="Text before the output, with {source}; \\n is a newline.",
    show_default="'{source}\\n'",
)
@_WINDOW
def pmi(
    common: BaselineArgs,
    source: str,
    field: str,
    template: str,
    max_length: int | None,
) -> None:
    """log p(output | source) - log p(output) per output token, under a causal LM."""
    common.run(
        "pmi",
        source_field=source,
        field=field,
        template=template.replace("\\n", "\n"),
        max_length=max_length,
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
    common: BaselineArgs,
    against: str,
    field: str,
) -> None:
    """Cosine similarity of sentence embeddings between each output and its reference or input."""
    common.run(
        "similarity",
        against_field=against,
        field=field,
    )
