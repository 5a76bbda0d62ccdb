"""The ``judge`` command line.

Subcommands that need heavy libraries (calibration, baselines, MT-Bench) are imported only when
invoked, so ``judge --help`` stays fast. Every option can also be set through an environment
variable ``JUDGE_<COMMAND>_<OPTION>`` (click's auto_envvar_prefix); errors are rendered as one
line unless ``--debug`` is given.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from typing import Any, NoReturn

import click

from judge.cli_options import (  # noqa: F401 - the option decorators' old home
    MAX_UNSCORED_HELP,
    local_dtype_option,
    max_unscored_option,
    progress_option,
)
from judge.errors import JudgeError, ProviderError

EXIT_OK, EXIT_GATE_FAILED, EXIT_USAGE, EXIT_INCOMPLETE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_CODES = """\b
Exit codes (the same for every command; --debug only adds the traceback):
  0    ok
  1    a gate failed (judge eval gates, judge rubrics validate)
  2    usage or data error: a bad option, file, rubric or output path (checked before any call)
  3    the run could not do its job: nothing scored, an item unscored for a transport reason after all
       retries, the unscored share above --max-unscored, or a server no item can get past (401, 403,
       404, nothing listening at the URL)
  130  interrupted (Ctrl-C): finished results stay in OUT.partial and the cache"""
"""The exit-code table every command's ``--help`` ends with (and the README repeats)."""

# name -> "module:attribute" of a click command, imported on first use
LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "score": (
        "judge.cli_score",
        "score",
    ),
    "rubrics": ("judge.cli_score", "rubrics"),
    "calibrate": ("calibration.cli", "calibrate"),
    "baseline": ("judge.baselines.cli", "baseline"),
    "mtbench": ("judge.mtbench.cli", "mtbench"),
    "eval": ("judge.eval.cli", "eval_command"),
    "report": ("judge.report.cli", "report_command"),
    "batches": ("judge.cli_batches", "batches"),
    "label": ("calibration.label_cli", "label"),
}
HELP_LINES = {
    "score": "Score every row of a data file with a rubric and a judge.",
    "rubrics": "List, show and validate rubrics.",
    "calibrate": "Measure agreement between judge scores and human labels, with bootstrap CIs.",
    "baseline": "Local baselines: perplexity, entailment, PMI, embedding similarity.",
    "mtbench": "MT-Bench-style multi-turn runs: answer, judge, show.",
    "eval": "Compare systems (a fine-tune vs its base) across metrics: paired deltas, gates, review queue.",
    "report": "One self-contained HTML report (plots, tables, review queue) from any results.",
    "batches": "List, inspect and cancel the Batch API jobs that `--batch` runs submitted.",
    "label": "Human labels that correct the judge: plan which items to label, and a page to label them in.",
}


class LazyGroup(click.Group):
    """A group whose subcommands live in other modules and are imported on demand."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(LAZY_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = LAZY_COMMANDS.get(cmd_name)
        if target is None:
            return None
        module = importlib.import_module(target[0])
        cmd = getattr(module, target[1])
        if not isinstance(cmd, click.Command):
            raise TypeError(f"{target[0]}:{target[1]} is not a click command")
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # help text without importing every subcommand module
        with formatter.section("Commands"):
            formatter.write_dl([(name, HELP_LINES.get(name, "")) for name in self.list_commands(ctx)])


@click.group(cls=LazyGroup, context_settings={"auto_envvar_prefix": "JUDGE", "help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.version_option(package_name="judge")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """LLM-as-judge evaluation: score outputs, calibrate judges against people, run MT-Bench.

    \b
    Examples:
      judge score examples/qa.jsonl --rubric factuality
      judge calibrate --judge qa.verdicts.jsonl --human labels.csv
      judge rubrics list
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def main(argv: list[str] | None = None) -> Any:
    """Entry point: run the CLI and turn our errors into one readable line and the exit code of the table
    (``--debug`` adds the traceback, never changes the code)."""
    args = argv if argv is not None else sys.argv[1:]
    debug = "--debug" in args
    try:
        return cli.main(args=args, prog_name="judge", standalone_mode=False)
    except click.exceptions.Abort as exc:
        # click turns Ctrl-C (KeyboardInterrupt) into Abort before it reaches us
        interrupted = isinstance(exc.__cause__ or exc.__context__, KeyboardInterrupt)
        click.echo(interrupt_hint(args) if interrupted else "Aborted.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ProviderError as exc:
        # a server no item can get past (401/403/404, nothing listening): the run could not do its job
        fail(f"error: the run could not do its job: {exc}", EXIT_INCOMPLETE, debug)
    except JudgeError as exc:
        fail(f"error: {exc}", EXIT_USAGE, debug)
    except OSError as exc:
        # a path the checks up front could not foresee (a disk filling up, a folder removed mid-run)
        if exc.filename is None:
            raise
        fail(f"error: {exc.filename}: {exc.strerror or exc}", EXIT_USAGE, debug)
    except KeyboardInterrupt:  # outside a command, e.g. while importing one
        click.echo(interrupt_hint(args), err=True)
        sys.exit(EXIT_INTERRUPTED)


def fail(message: str, code: int, debug: bool) -> NoReturn:
    """Print ``message`` (after the traceback of the error being handled, with ``--debug``) and exit ``code``."""
    if debug:
        traceback.print_exc()
    click.echo(message, err=True)
    sys.exit(code)


def incomplete_reason(
    what: str, n_items: int, n_ok: int, n_transport: int, n_parse: int, max_unscored: float | None
) -> str | None:
    """Why a run with these counts is incomplete (exit 3), or None when it is complete; see ``MAX_UNSCORED_HELP``."""
    counts = f"{n_transport} for a transport reason, {n_parse} unreadable"
    if n_items == 0 or n_ok == 0:
        return f"nothing scored: 0 of {n_items} {what} ({counts})"
    unscored = n_items - n_ok
    if max_unscored is None:
        if n_transport:
            return (
                f"{n_transport} of {n_items} {what} unscored for a transport reason after all retries "
                f"({n_parse} more unreadable); rerun the same command to retry them, finished calls come from the cache"
            )
        return None
    if unscored / n_items > max_unscored:
        return f"{unscored} of {n_items} {what} unscored ({counts}), above --max-unscored {max_unscored:g}"
    return None


def exit_if_incomplete(
    what: str, n_items: int, n_ok: int, n_transport: int, n_parse: int, max_unscored: float | None
) -> None:
    """Print the counts and exit 3 when the run is incomplete (see :func:`incomplete_reason`)."""
    reason = incomplete_reason(what, n_items, n_ok, n_transport, n_parse, max_unscored)
    if reason is not None:
        click.echo(f"run incomplete: {reason}", err=True)
        sys.exit(EXIT_INCOMPLETE)


def interrupt_hint(args: list[str]) -> str:
    """What a Ctrl-C leaves behind and how to carry on."""
    hint = "Interrupted: the verdicts finished so far stay in the output file + '.partial'; "
    if "--no-cache" in args:
        return hint + "--no-cache was given, so a rerun calls the judge again for every item."
    return hint + "rerun the same command: finished calls come from the cache."


if __name__ == "__main__":
    main()
