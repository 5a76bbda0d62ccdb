"""``judge label``: plan which items people should label, and a page to label them in.

    judge label plan qa.verdicts.jsonl --n 150 --items qa.jsonl --out to_label.jsonl
    judge label page to_label.jsonl --out label.html --blind
    judge calibrate --judge qa.verdicts.jsonl --human labels.csv --plan to_label.jsonl

Heavy libraries are imported inside the commands so that ``judge --help`` stays cheap.
"""

from __future__ import annotations

from typing import Any

import click

from calibration.cli import items_options
from judge.cli import EXIT_CODES
from judge.cli_options import seed_option
from judge.errors import ConfigError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def label() -> None:
    """Human labels that correct the judge: which items to label, and a page to label them in."""


PLAN_EPILOG = """\b
Examples:
  judge label plan qa.verdicts.jsonl --n 150 --items qa.jsonl --out to_label.jsonl
  judge label plan qa.verdicts.jsonl --n 200 --strategy uncertainty --seed 7 --out to_label.jsonl

Every planned row records its stratum and sampling weight; give the plan to `judge calibrate --plan` so the
prediction-powered estimate weighs each stratum by its share of the pool.

"""


@label.command("plan", epilog=PLAN_EPILOG + EXIT_CODES)
@click.argument("verdicts", type=click.Path(dir_okay=False))
@click.option("--n", "n", type=int, required=True, help="How many items to label.")
@click.option(
    "--strategy",
    type=click.Choice(["stratified", "uncertainty", "random"]),
    default="stratified",
    show_default=True,
    help="Strata of the judge's score, of its uncertainty (needs score_probs: logprob mode), or none.",
)
@seed_option("Seed of the draw (the same seed, the same plan).")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="The plan (JSONL).")
@click.option("--score-column", default="score", show_default=True, help="Judge column to stratify on.")
@click.option("--id-column", default="id", show_default=True, help="Item id column.")
@items_options("its texts go into the plan for the labelling page")
def plan_command(
    verdicts: str,
    n: int,
    strategy: str,
    seed: int,
    out_path: str,
    score_column: str,
    id_column: str,
    items_path: str | None,
    mapping: tuple[str, ...],
) -> None:
    """Pick the items to label from judged VERDICTS: seeded, stratified, with sampling weights recorded."""
    import json

    from calibration.cli import attach_texts
    from calibration.labels import load_judge_scores
    from calibration.plan import plan, uncertainty
    from calibration.ppi import numeric_verdicts
    from judge.dataset import FIELDS
    from judge.io import atomic_write_text, check_output_path

    check_output_path(out_path, "--out")
    scores = load_judge_scores(verdicts, score_column=score_column, id_column=id_column)
    if items_path is not None:
        scores = attach_texts(scores, items_path, mapping)
    scores = scores.copy()
    scores["value"] = numeric_verdicts(scores["score"])
    scores["uncertainty"] = [uncertainty(r) for r in scores.to_dict("records")]
    picked = plan(scores, n, strategy=strategy, seed=seed, source=verdicts)
    keep = ["stratum", "stratum_size", "stratum_labelled", "weight", "stratify_on", "edges"]
    rows: list[dict[str, Any]] = []
    for rec in picked.to_dict("records"):
        row: dict[str, Any] = {"id": rec["id"], "judge": rec["score"], "reasoning": rec.get("reasoning")}
        row.update({k: _plain(rec[k]) for k in keep})
        for field in ("rubric", *FIELDS):
            value = rec.get(field)
            if isinstance(value, str) and value:
                row[field] = value
        rows.append(row)
    atomic_write_text(out_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    strata = picked.drop_duplicates("stratum")
    click.echo(
        f"planned {len(rows)} of {int(scores['value'].notna().sum())} scored items ({strategy}, seed {seed}, "
        f"{len(strata)} strata: "
        + ", ".join(f"{int(r.stratum_labelled)}/{int(r.stratum_size)}" for r in strata.itertuples())
        + f")\nwrote {out_path}"
    )


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


PAGE_EPILOG = """\b
Examples:
  judge label page to_label.jsonl --out label.html
  judge label page to_label.jsonl --out label.html --blind --rubric helpfulness --annotator ana

The page is one self-contained HTML file: no server, no network. Labels stay in the browser's localStorage
(a reload loses nothing); "Export" saves labels.csv (id, annotator, label, seconds), which `judge calibrate
--human` reads as it is. Keys: the scale's digits (or a / b / t for pairwise), n / p for next and previous.

"""


@label.command("page", epilog=PAGE_EPILOG + EXIT_CODES)
@click.argument("plan_path", metavar="PLAN", type=click.Path(dir_okay=False))
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="The HTML page to write.")
@click.option("--blind", is_flag=True, help="Hide the judge's verdict and reasoning from the annotator.")
@click.option(
    "--rubric",
    default=None,
    help="Rubric whose scale and anchors become the buttons (default: the one named in the plan).",
)
@click.option("--annotator", default="", help="Pre-filled annotator name (each person can change it in the page).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the pairwise left/right order.")
def page_command(plan_path: str, out_path: str, blind: bool, rubric: str | None, annotator: str, seed: int) -> None:
    """Write one self-contained HTML page to label the items of PLAN with the keyboard."""
    from judge.io import atomic_write_text, check_output_path, read_rows
    from judge.report.label_page import render_label_page

    check_output_path(out_path, "--out")
    rows = [r.data | {"_line": r.line} for r in read_rows(plan_path)]
    if not rows:
        raise ConfigError(f"{plan_path}: the plan has no rows")
    html = render_label_page(rows, source=plan_path, blind=blind, rubric=rubric, annotator=annotator, seed=seed)
    atomic_write_text(out_path, html)
    click.echo(f"wrote {out_path} ({len(rows)} items{', blind' if blind else ''})")
