"""Click option groups shared by the commands: each option is declared once, worded once.

A group is a decorator that adds its options to a command (in the order written, as they show in
``--help``). Commands word some options their own way (``--base-url`` names the judge's server in
``judge score``, the model's in ``judge mtbench answer``), so a group takes those help texts as arguments;
what does not differ is written here. A group given ``collect="name"`` hands its values to the command as
one argument ``name`` (a :class:`CacheArgs`, :class:`BatchArgs` or :class:`EngineArgs`) instead of one
argument per option; the options, their flags and their ``JUDGE_<COMMAND>_<OPTION>`` variables stay.

Only click and light modules are imported here: ``judge --help`` and every command's help stay fast.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import click

from judge.engines import ENGINES

Decorator = Callable[[Any], Any]

MAX_UNSCORED_HELP = (
    "Largest share (0-1) of items that may end unscored, whatever the cause, before the run counts as "
    "incomplete (exit 3). Default: an unreadable verdict (parse failure, kept with its raw completion) never "
    "fails the run, while any item unscored for a transport reason (server error, timeout, refused connection, "
    "rejected request, after all retries) does. A run that scores nothing is always incomplete."
)
API_KEY_HELP = (
    "API key (default: $OPENAI_API_KEY). Prefer the environment variable: a key given here shows in the process "
    "list and the shell history."
)
RAY_ADDRESS_HELP = "Ray cluster for --engine ray: ray://HEAD:10001 or auto (default: $RAY_ADDRESS, else a local Ray)."
NO_STRUCTURED_OUTPUT_HELP = (
    "openai judges: do not send a JSON schema (for servers without structured output); "
    "a server that rejects it is detected and falls back by itself."
)


def options(*decorators: Decorator) -> Decorator:
    """One decorator of several: the first given is the first shown in ``--help``."""

    def decorate(f: Any) -> Any:
        for d in reversed(decorators):
            f = d(f)
        return f

    return decorate


def collected(name: str | None, cls: type[Any]) -> Decorator:
    """Pass the options of ``cls``'s fields to the command as one ``cls`` argument called ``name``."""
    if name is None:
        return lambda f: f
    names = [f.name for f in fields(cls)]

    def decorate(f: Any) -> Any:
        @functools.wraps(f)  # carries the click parameters declared so far
        def command(*args: Any, **kwargs: Any) -> Any:
            kwargs[name] = cls(**{k: kwargs.pop(k) for k in names if k in kwargs})
            return f(*args, **kwargs)

        return command

    return decorate


# --- the options every model-calling command words the same way -------------------------------------------


def max_unscored_option(f: Any) -> Any:
    """The ``--max-unscored FRACTION`` option, worded the same for every command that calls a model."""
    return click.option(
        "--max-unscored", type=click.FloatRange(0.0, 1.0), default=None, metavar="FRACTION", help=MAX_UNSCORED_HELP
    )(f)


def progress_option(f: Any) -> Any:
    """``--progress/--no-progress``, the same on every long command: bars on stderr (items/s, ETA, per stage)
    when it is a terminal unless forced; the command reads it with :func:`judge.progress.progress_enabled`."""
    return click.option(
        "--progress/--no-progress",
        default=None,
        help="Progress bars on stderr: items/s and ETA per stage (default: on when stderr is a terminal).",
    )(f)


def run_options(f: Any) -> Any:
    """``--max-unscored`` and ``--progress``: what every command that scores many items takes."""
    return options(max_unscored_option, progress_option)(f)


def local_dtype_option(f: Any) -> Any:
    """The ``--local-dtype`` option of the commands that can run a local judge."""
    return click.option(
        "--local-dtype",
        type=click.Choice(["float32", "bfloat16", "float16"]),
        default=None,
        help="Precision of a local judge (local/*). Default float32, exact; bfloat16 is faster on CPUs with "
        "AVX512-BF16 (1.3x on MT-Bench) and moves probabilities slightly (BENCHMARKS.md).",
    )(f)


# --- judge and server -----------------------------------------------------------------------------------------


def server_options(base_url_help: str, *, api_key: bool = False) -> Decorator:
    """``--base-url`` (and ``--api-key``): where an openai/* model is served."""
    opts = [click.option("--base-url", default=None, help=base_url_help)]
    if api_key:
        opts.append(click.option("--api-key", default=None, help=API_KEY_HELP))
    return options(*opts)


def judge_options(
    judge_help: str,
    base_url_help: str,
    *,
    param: str = "judge_spec",
    short: bool = False,
    envvar: str | None = None,
    api_key: bool = False,
) -> Decorator:
    """``--judge PROVIDER/MODEL`` (passed as ``param``) and the judge's server options."""
    flags = ["--judge", "-j"] if short else ["--judge"]
    judge = click.option(*flags, param, envvar=envvar, default=None, help=judge_help)
    return options(judge, server_options(base_url_help, api_key=api_key))


def structured_output_option(help: str = NO_STRUCTURED_OUTPUT_HELP) -> Decorator:
    return click.option("--no-structured-output", is_flag=True, help=help)


def score_mode_option(modes: tuple[str, ...], help: str) -> Decorator:
    """``--score-mode`` among ``modes`` (derived from :data:`judge.config.SCORE_MODES`)."""
    return click.option("--score-mode", type=click.Choice(modes), default=None, help=help)


def concurrency_option(default: int, help: str, *, short: bool = False) -> Decorator:
    flags = ["--concurrency", "-c"] if short else ["--concurrency"]
    return click.option(*flags, type=click.IntRange(1, 1024), default=default, show_default=True, help=help)


def seed_option(help: str, default: int | None = 0) -> Decorator:
    """``--seed N`` (its default shown unless None: a file's own seed applies)."""
    return click.option("--seed", type=int, default=default, show_default=default is not None, help=help)


# --- cache ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheArgs:
    """The cache options as given."""

    no_cache: bool = False
    cache_dir: str | Path | None = None
    keep_failed: bool = False
    cache_namespace: str | None = None

    def grader_kwargs(self) -> dict[str, Any]:
        """The cache settings of :func:`judge.runner.build_grader`."""
        return {
            "cache": False if self.no_cache else (self.cache_dir or True),
            "keep_failed": self.keep_failed,
            "cache_namespace": self.cache_namespace or "",
        }

    def open(self) -> Any:
        """The :class:`~judge.cache.Cache` these options name, or None with ``--no-cache``."""
        if self.no_cache:
            return None
        from judge.cache import Cache

        return Cache.in_dir(self.cache_dir)


SCORE_CACHE_DIR_HELP = "Cache folder (default ~/.cache/judge)."
CACHE_DIR_HELP = "Cache directory (default: $JUDGE_CACHE_DIR or ~/.cache/judge)."


def cache_options(
    cache_dir_help: str = CACHE_DIR_HELP,
    *,
    path_type: bool = False,
    judge: bool = True,
    collect: str | None = None,
) -> Decorator:
    """``--no-cache`` and ``--cache-dir``, and for a judge ``--cache-namespace`` and ``--keep-failed``."""
    cache_dir_type = click.Path(path_type=Path) if path_type else None
    opts = [
        click.option("--no-cache", is_flag=True, help="Do not read or write the call cache."),
        click.option("--cache-dir", type=cache_dir_type, default=None, help=cache_dir_help),
    ]
    if judge:
        opts += [
            click.option(
                "--cache-namespace",
                default=None,
                metavar="NAME",
                help="Part of the cache key next to provider and model: change it when a different model answers "
                "under the same name (a new quantisation or checkpoint), so its verdicts are not served from the "
                "old one's cache.",
            ),
            click.option(
                "--keep-failed",
                is_flag=True,
                help="Keep unreadable or truncated completions in the cache as final (default: they are retried "
                "next run).",
            ),
        ]
    return options(collected(collect, CacheArgs), *opts)


# --- Batch API --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchArgs:
    """``--batch`` and ``--batch-poll`` as given."""

    batch: bool = False
    batch_poll: float = 30.0

    def settings(self) -> Any:
        """The run's :class:`~judge.batch.BatchSettings`, or None without ``--batch``."""
        from judge.batch import BatchSettings

        return BatchSettings(poll_interval=self.batch_poll) if self.batch else None


def batch_options(batch_help: str, *, collect: str | None = None) -> Decorator:
    """``--batch`` (worded by the command) and ``--batch-poll``."""
    return options(
        collected(collect, BatchArgs),
        click.option("--batch", is_flag=True, help=batch_help),
        click.option(
            "--batch-poll",
            type=click.FloatRange(min=0, min_open=True),
            default=30.0,
            show_default=True,
            metavar="SECONDS",
            help="With --batch: seconds between two looks at the submitted batches.",
        ),
    )


# --- engines ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineArgs:
    """``--engine`` and ``--address`` as given."""

    engine: str | None = "local"
    address: str | None = None


def engine_options(
    engine_help: str,
    address_help: str = RAY_ADDRESS_HELP,
    *,
    default: str | None = "local",
    collect: str | None = None,
) -> Decorator:
    """``--engine`` among :data:`judge.engines.ENGINES` and ``--address``, the Ray cluster."""
    return options(
        collected(collect, EngineArgs),
        click.option(
            "--engine",
            type=click.Choice(ENGINES),
            default=default,
            show_default=default is not None,
            help=engine_help,
        ),
        click.option("--address", default=None, metavar="ADDR", help=address_help),
    )


# --- outputs ----------------------------------------------------------------------------------------------------


def report_option(contents: str, *, path_type: bool = False) -> Decorator:
    """``--report FILE``: a self-contained HTML report of ``contents`` besides the command's usual output."""
    return click.option(
        "--report",
        "report_path",
        type=click.Path(dir_okay=False, path_type=Path) if path_type else click.Path(dir_okay=False),
        default=None,
        help=f"Also write a self-contained HTML report ({contents}) to this file.",
    )


def map_option(param: str, help: str = "Read FIELD from COLUMN (repeatable).", envvar: str | None = None) -> Decorator:
    """``--map FIELD=COLUMN`` (repeatable), passed as ``param``."""
    return click.option("--map", param, envvar=envvar, multiple=True, metavar="FIELD=COLUMN", help=help)
