"""``judge report``: one self-contained HTML file from any mix of results."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(
    "report",
    epilog="""\b
Examples:
  judge report runs/eval-suite --out report.html
  judge report qa.factuality.verdicts.jsonl --items examples/qa.jsonl --out qa.html --open
  judge report calibration.json judgments_single.jsonl judgments_pair.jsonl --out all.html

INPUT is a `judge score` verdicts file, a `judge eval` output folder (or its results.json), a
`judge calibrate --json` file or an MT-Bench judgment file; several inputs give one section each.
The file opens from disk with no network: plots are inline SVG, nothing is fetched.

Environment: every option has a JUDGE_REPORT_<OPTION> variable (e.g. JUDGE_REPORT_OUT).""",
)
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("report.html"),
    show_default=True,
    help="The HTML file to write.",
)
@click.option(
    "--items",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The data file given to `judge score`: its texts are shown beside the verdicts (and give the length bias).",
)
@click.option("--title", default=None, help="Page title (default: the kinds of result in it).")
@click.option("--open", "open_browser", is_flag=True, help="Open the report in the default browser.")
def report_command(
    inputs: tuple[Path, ...], out: Path, items: Path | None, title: str | None, open_browser: bool
) -> None:
    """Write one HTML report (plots, tables, review queue) from INPUT... results."""
    from judge.io import check_output_path
    from judge.report import build

    check_output_path(out, inputs=[*inputs, items])
    html = build(*inputs, out=out, items=items, title=title)
    click.echo(f"wrote {out} ({len(html.encode('utf-8')) / 1024:.0f} KB)")
    if open_browser:
        import webbrowser

        webbrowser.open(out.resolve().as_uri())
