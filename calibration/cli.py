"""``judge calibrate``: agreement between judge scores and human labels, as a table and as JSON.

Heavy libraries (pandas, scikit-learn, scipy, krippendorff) are imported inside the command so that
importing this module (``judge --help``) stays cheap.
"""

from __future__ import annotations

import json
from typing import Any

import click

from judge.cli import EXIT_CODES
from judge.cli_options import map_option, progress_option, report_option, seed_option
from judge.errors import ConfigError

EPILOG = """\b
Examples:
  judge calibrate --judge qa.verdicts.jsonl --human labels.csv --label-type ordinal --scale 1 5
  judge calibrate --judge gpt4.csv --human crowd.csv --label-column winner --annotator-column worker \\
      --label-type pairwise --json report.json
  judge calibrate --judge baseline.jsonl --human labels.csv --score-column entailment --label-type binary
  judge calibrate --judge summaries.jsonl --human ratings.csv --group article_id --ci-method bca

\b
Judge scores on 2 000 items, labels on 150 of them: the report adds the prediction-powered estimate of the
human mean (PPI++), with the labelled-only and judge-only estimates beside it (--ppi on|off|auto).

\b
LLMBar's MT-Bench expert labels (200 pairs): convert them, judge the same pairs, compare:
  judge mtbench llmbar llmbar/Processed/MT-Bench/dataset.json --questions mt_bench/question.jsonl \\
      --answers mt_bench/model_answer --out-dir llmbar_mt
  judge mtbench judge --questions llmbar_mt/question.jsonl --answers llmbar_mt/model_answer \\
      --mode pairwise-all --pairs llmbar_mt/labels.jsonl --reference mt_bench/reference_answer/gpt-4.jsonl \\
      --judge openai/gpt-4o --out llmbar_mt/judged.jsonl
  judge calibrate --judge llmbar_mt/judged.jsonl --human llmbar_mt/labels.jsonl --label-type pairwise

MT-Bench pairwise judgment files (question_id, model_1, model_2, [turn], winner) need no id column: each
pair's id is question_id:model_1:model_2:t<turn>, and a `winner` column is read as the label.

Every option can also be set as JUDGE_CALIBRATE_<OPTION>, e.g. JUDGE_CALIBRATE_BOOTSTRAP=500.

"""


def items_options(purpose: str) -> Any:
    """``--items`` (the data file given to ``judge score``) and ``--map FIELD=COLUMN``: texts joined on by id."""

    def decorate(f: Any) -> Any:
        f = map_option("mapping", "With --items: read FIELD from COLUMN.")(f)
        return click.option(
            "--items",
            "items_path",
            type=click.Path(exists=True, dir_okay=False),
            default=None,
            help=f"The scored data file (as given to `judge score`): {purpose}.",
        )(f)

    return decorate


@click.command(epilog=EPILOG + EXIT_CODES, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--judge",
    "judge_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Judge results: verdict JSONL from `judge score`, or any CSV/JSONL with an id and a score column.",
)
@click.option(
    "--human",
    "human_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Human labels: CSV/JSONL with id, label and optional annotator (one row per annotator).",
)
@click.option(
    "--label-type",
    type=click.Choice(["ordinal", "binary", "pairwise", "nominal"]),
    default=None,
    help="How to read the labels; guessed from them when left out.",
)
@click.option(
    "--bootstrap",
    "n_boot",
    type=int,
    default=2000,
    show_default=True,
    help="Bootstrap resamples for the 95% CIs (0 = none).",
)
@seed_option("Seed of the bootstrap and CV splits.")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the report as JSON to this file.",
)
@report_option("heatmap, scatter, statistics, disagreements")
@click.option("--by", default=None, help="A column of the results (e.g. category): the same report per group.")
@click.option(
    "--group",
    default=None,
    metavar="COLUMN",
    help="Items sharing COLUMN (question, article, prompt) are not independent: resample whole groups "
    "(cluster bootstrap). MT-Bench judgments group by question_id unless told; `--group id` resamples items.",
)
@click.option(
    "--ci-method",
    type=click.Choice(["auto", "percentile", "bca"]),
    default="auto",
    show_default=True,
    help="95% CI method: percentile, BCa (bias-corrected and accelerated), or auto = BCa below 100 items/groups.",
)
@click.option(
    "--score-column",
    default="score",
    show_default=True,
    help="Judge column to calibrate (a `winner` column is used when it is missing).",
)
@click.option("--label-column", default="label", show_default=True, help="Label column of the human file.")
@click.option("--id-column", default="id", show_default=True, help="Item id column, in both files.")
@click.option("--annotator-column", default="annotator", show_default=True, help="Annotator column of the human file.")
@click.option(
    "--scale",
    nargs=2,
    type=float,
    default=None,
    metavar="MIN MAX",
    help="The rubric's scale: labels outside it are an error, judge scores outside it a warning.",
)
@click.option(
    "--threshold",
    type=float,
    default=None,
    help="Binary labels, continuous judge: score >= THRESHOLD is positive (default: cross-validated fit).",
)
@click.option(
    "--threshold-metric",
    type=click.Choice(["f1", "kappa"]),
    default="f1",
    show_default=True,
    help="What the threshold fit maximises.",
)
@click.option(
    "--disagreements",
    "n_disagreements",
    type=int,
    default=15,
    show_default=True,
    help="How many of the largest disagreements to list for review.",
)
@items_options("its texts are shown next to the disagreements")
@click.option(
    "--ppi",
    type=click.Choice(["auto", "on", "off"]),
    default="auto",
    show_default=True,
    help="Prediction-powered estimate of the human-scale mean from every judge score and the labelled subset "
    "(auto: when the judge scored 10 or more unlabelled items). With it, labels for unknown ids are an error.",
)
@click.option(
    "--ppi-map",
    type=click.Choice(["auto", "identity", "isotonic"]),
    default="auto",
    show_default=True,
    help="How PPI puts judge scores on the human scale: a cross-fitted isotonic map, or as they are "
    "(auto: isotonic for binary labels against a continuous score).",
)
@click.option(
    "--plan",
    "plan_path",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="The `judge label plan` file the labelled items were drawn by: PPI weighs its strata as the plan did.",
)
@click.option(
    "--level",
    "levels",
    type=click.Choice(["item", "summary", "system"]),
    multiple=True,
    help="Also correlate at the summary level (within each --group document, averaged) or the system level "
    "(per --system means), as SummEval and G-Eval report; item level is always there. Repeatable.",
)
@click.option(
    "--system", default=None, metavar="COLUMN", help="With --level system: the column naming each item's system."
)
@progress_option
def calibrate(
    judge_path: str,
    human_path: str,
    label_type: str | None,
    n_boot: int,
    seed: int,
    json_path: str | None,
    report_path: str | None,
    by: str | None,
    group: str | None,
    ci_method: str,
    score_column: str,
    label_column: str,
    id_column: str,
    annotator_column: str,
    scale: tuple[float, float] | None,
    threshold: float | None,
    threshold_metric: str,
    n_disagreements: int,
    items_path: str | None,
    mapping: tuple[str, ...],
    ppi: str,
    ppi_map: str,
    plan_path: str | None,
    levels: tuple[str, ...],
    system: str | None,
    progress: bool | None,
) -> None:
    """Measure agreement between judge scores and human labels, with bootstrap CIs and the human ceiling."""
    from calibration.core import calibrate as run_calibration
    from calibration.labels import load_human_labels, load_judge_scores
    from calibration.report import render_text
    from judge.io import atomic_write_text, check_output_path, read_rows
    from judge.progress import progress_enabled

    if scale is not None and scale[0] >= scale[1]:
        raise ConfigError(f"--scale MIN MAX needs MIN < MAX, got {scale[0]:g} {scale[1]:g}")
    inputs = [judge_path, human_path, items_path]
    if json_path:
        check_output_path(json_path, "--json", inputs)  # before minutes of bootstrap, not after
    if report_path:
        check_output_path(report_path, "--report", [*inputs, json_path])
    scores = load_judge_scores(judge_path, score_column=score_column, id_column=id_column)
    averaged = scores.attrs.get("averaged_repeats") or {}
    if averaged:
        click.echo(
            f"note: {averaged['ids']} item id(s) appear more than once in {judge_path} ({averaged['rows']} rows): "
            "each is scored by the mean of its scored rows (repeats)",
            err=True,
        )
    if items_path is not None:
        scores = attach_texts(scores, items_path, mapping)
    labels, kind = load_human_labels(
        human_path,
        label_column=label_column,
        id_column=id_column,
        annotator_column=annotator_column,
        label_type=label_type,
        scale=scale,
        keep=[c for c in (by, group, system) if c],
    )
    skipped = labels.attrs.get("skipped_blank_lines") or []
    if skipped:
        shown = ", ".join(map(str, skipped[:10])) + (", ..." if len(skipped) > 10 else "")
        click.echo(
            f"note: skipped {len(skipped)} row(s) with a blank label or annotator in {human_path} (lines {shown})",
            err=True,
        )
    report = run_calibration(
        scores,
        labels,
        label_type=kind,
        n_boot=n_boot,
        seed=seed,
        scale=scale,
        threshold=threshold,
        threshold_metric=threshold_metric,
        by=by,
        group=group,
        ci_method=ci_method,
        n_disagreements=n_disagreements,
        judge_source=judge_path,
        labels_source=human_path,
        ppi=ppi,
        ppi_map=ppi_map,
        plan=(plan_path, [r.data | {"_line": r.line} for r in read_rows(plan_path)]) if plan_path else None,
        levels=levels,
        system=system,
        progress=progress_enabled(progress),
    )
    click.echo(render_text(report))
    if json_path:
        atomic_write_text(json_path, json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n")
        click.echo(f"\nwrote {json_path}")
    if report_path:
        from judge.report import build

        build(report, out=report_path)
        click.echo(f"wrote {report_path}")


def attach_texts(scores: Any, items_path: str, mapping: tuple[str, ...]) -> Any:
    """Join the items' texts (input, output, reference, context) onto the judge scores by id."""
    from judge.dataset import FIELDS, load_items, parse_mapping

    texts = {item.id: {f: getattr(item, f) for f in FIELDS} for item in load_items(items_path, parse_mapping(mapping))}
    scores = scores.copy()
    for field in FIELDS:
        if field not in scores.columns:
            scores[field] = [texts.get(i, {}).get(field) for i in scores["id"]]
    return scores
