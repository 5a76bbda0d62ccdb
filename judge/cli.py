"""The ``judge`` command line.

Subcommands that need heavy libraries (calibration, baselines, MT-Bench) are imported only when
invoked, so ``judge --help`` stays fast. Every option can also be set through an environment
variable ``JUDGE_<COMMAND>_<OPTION>`` (click's auto_envvar_prefix); errors are rendered as one
line unless ``--debug`` is given.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from judge.errors import JudgeError

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
}
HELP_LINES = {
    "score": "Score every row of a data file with a rubric and a judge.",
    "rubrics": "List, show and validate rubrics.",
    "calibrate": "Measure agreement between judge scores and human labels, with bootstrap CIs.",
    "baseline": "Local baselines: perplexity, entailment, PMI, embedding similarity.",
    "mtbench": "MT-Bench-style multi-turn runs: answer, judge, show.",
    "eval": "Compare systems (a fine-tune vs its base) across metrics: paired deltas, gates, review queue.",
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
    """Entry point: run the CLI and turn our errors into one readable line and exit code 2."""
    args = argv if argv is not None else sys.argv[1:]
    debug = "--debug" in args
    try:
        return cli.main(args=args, prog_name="judge", standalone_mode=False)
    except click.exceptions.Abort as exc:
        # click turns Ctrl-C (KeyboardInterrupt) into Abort before it reaches us
        interrupted = isinstance(exc.__cause__ or exc.__context__, KeyboardInterrupt)
        click.echo(interrupt_hint(args) if interrupted else "Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except JudgeError as exc:
        if debug:
            raise
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:  # outside a command, e.g. while importing one
        click.echo(interrupt_hint(args), err=True)
        sys.exit(130)


def interrupt_hint(args: list[str]) -> str:
    """What a Ctrl-C leaves behind and how to carry on."""
    hint = "Interrupted: the verdicts finished so far stay in the output file + '.partial'; "
    if "--no-cache" in args:
        return hint + "--no-cache was given, so a rerun calls the judge again for every item."
    return hint + "rerun the same command: finished calls come from the cache."


if __name__ == "__main__":
    main()
