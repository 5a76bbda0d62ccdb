"""``judge eval``: compare systems (a fine-tune and its base) across a metric stack, with gates for CI."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from judge.cli import EXIT_CODES
from judge.cli_options import (
    BatchArgs,
    batch_options,
    engine_options,
    judge_options,
    progress_option,
    report_option,
    seed_option,
)
from judge.progress import progress_enabled


@click.command(
    "eval",
    epilog="""\b
Examples:
  judge eval examples/finetune/suite.yaml
  judge eval suite.yaml --out runs/ckpt-1200 --json
  judge eval suite.yaml --judge openai/gpt-4o-mini --base-url http://localhost:8000/v1
  judge eval suite.yaml --batch --batch-poll 60     # openai/* model systems answer through the Batch API

Environment: every option has a JUDGE_EVAL_<OPTION> variable (e.g. JUDGE_EVAL_OUT).

"""
    + EXIT_CODES,
)
@click.argument("suite", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "-o",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder for results.json, scores.jsonl and review.jsonl (default: SUITE's folder / eval-<suite name>).",
)
@judge_options(
    "Judge for rubric metrics that name none (PROVIDER/MODEL).", "OpenAI-compatible server for openai/* judges."
)
@click.option("--bootstrap", type=click.IntRange(100, 1_000_000), default=None, help="Resamples per CI (suite: 2000).")
@seed_option("Seed for resampling (suite: 0).", default=None)
@click.option("--json", "as_json", is_flag=True, help="Print results.json to stdout instead of the table.")
@report_option("forest plot, gates, distributions, review queue", path_type=True)
@engine_options(
    "Where perplexity and BERTScore run: this process or a Ray actor pool (suite key 'engine'; default local).",
    "Ray cluster for --engine ray (ray://HEAD:10001, auto).",
    default=None,
)
@batch_options(
    "Generate the answers of openai/* model systems through the provider's Batch API: half the price, no rate "
    "limits, within 24 h; a rerun resumes the batches already submitted (suite key 'batch'). Local model systems "
    "generate here; a rubric metric batches its judge calls with its own 'batch' key.",
    collect="batch",
)
@click.option(
    "--limit-per-subject",
    type=click.IntRange(1, None),
    default=None,
    metavar="N",
    help="choice_accuracy metrics score at most N questions per subject (a seeded stratified subset; with 57 "
    "MMLU subjects, N=5 gives 285 questions and a 95%% CI about +-6 points wide each side).",
)
@progress_option
def eval_command(
    suite: Path,
    out: Path | None,
    judge_spec: str | None,
    base_url: str | None,
    bootstrap: int | None,
    seed: int | None,
    as_json: bool,
    report_path: Path | None,
    engine: str | None,
    address: str | None,
    limit_per_subject: int | None,
    progress: bool | None,
    batch: BatchArgs,
) -> None:
    """Run SUITE (YAML): every metric over every system's outputs, paired deltas against the baseline
    with bootstrap CIs and p-values, gates, and a review queue of the worst and most-changed items."""
    from judge.eval.run import run_suite, with_limit_per_subject
    from judge.eval.suite import load_suite

    spec, root = load_suite(suite)
    overrides = {"judge": judge_spec, "base_url": base_url, "bootstrap": bootstrap, "seed": seed}
    updates = {k: v for k, v in {**overrides, "engine": engine, "address": address}.items() if v is not None}
    if batch.batch:
        updates["batch"] = batch.settings()
    if updates:
        spec = spec.model_copy(update=updates)  # keeps the file and key lines for later messages
    spec = with_limit_per_subject(spec, limit_per_subject)
    target = out if out is not None else suite.parent / f"eval-{suite.stem}"
    if target.exists() and not target.is_dir():
        raise click.UsageError(f"--out {target} exists and is not a folder")
    _warn_shared_outputs(spec, root)
    _check_outputs(suite, spec, root, target, report_path)
    result = run_suite(spec, root, progress=progress_enabled(progress), out_dir=target)
    result.write(target)
    _say_batches(result)
    if report_path is not None:
        from judge.report import build

        build(result, out=report_path)
        click.echo(f"wrote {report_path}", err=True)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    else:
        click.echo(result.table())
        click.echo(f"\nwrote {target}/results.json, scores.jsonl, review.jsonl", err=True)
    _exit_on_failure(result)


def _say_batches(result: Any) -> None:
    """One line per system whose answers were generated through the Batch API (--batch)."""
    from judge.batch import BatchReport

    for name, model in result.provenance.get("models", {}).items():
        if "batch" in model:
            click.echo(f"generate {name}: {BatchReport(**model['batch']).line()}", err=True)


def _warn_shared_outputs(spec: Any, root: Path) -> None:
    """Warn of systems that read the same outputs: their deltas are 0 by construction."""
    same: dict[tuple[str, str, str], list[str]] = {}  # where a system's outputs come from -> the systems reading it
    for name, s in spec.systems.items():
        if s.model is not None or s.sweep is not None:
            continue  # a model answers for itself
        source = str((root / s.file).resolve()) if s.file else f"{root / spec.data} (column)"
        same.setdefault((source, s.column, s.id_column), []).append(name)
    for (source, column, _), names in same.items():
        if len(names) > 1:
            click.echo(
                f"warning: systems {', '.join(names)} read the same outputs ({source}, column '{column}'): "
                "their deltas are 0 by construction",
                err=True,
            )


def _check_outputs(suite: Path, spec: Any, root: Path, target: Path, report_path: Path | None) -> None:
    """Every file the run writes can be written and overwrites none of its inputs (checked before any work)."""
    from judge.io import check_output_path

    inputs = [suite, root / spec.data, *(root / s.file for s in spec.systems.values() if s.file)]
    inputs += [root / m.rubric for m in spec.metrics if m.rubric and (root / m.rubric).is_file()]
    for name in ("results.json", "scores.jsonl", "review.jsonl"):  # what result.write puts there
        check_output_path(target / name, "--out", inputs)
    if report_path is not None:
        check_output_path(report_path, "--report", [*inputs, *(target / n for n in ("results.json", "scores.jsonl"))])


def _exit_on_failure(result: Any) -> None:
    """Say the run's warnings; exit 3 when a metric scored nothing, 1 when a gate failed."""
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    if result.incomplete:
        click.echo(f"run incomplete: no item scored for {', '.join(result.incomplete)}", err=True)
        sys.exit(3)
    if not result.passed:
        for g in result.gates:
            if not g["passed"]:
                click.echo(
                    f"gate failed: {g['metric']} {g['rule']} {g['threshold']} on {g['system']} (value {g['value']})",
                    err=True,
                )
        sys.exit(1)
