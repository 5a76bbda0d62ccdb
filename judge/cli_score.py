"""``judge score`` and ``judge rubrics``."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from judge.cli import EXIT_CODES, EXIT_INCOMPLETE, exit_if_incomplete
from judge.cli_options import (
    SCORE_CACHE_DIR_HELP,
    BatchArgs,
    CacheArgs,
    EngineArgs,
    batch_options,
    cache_options,
    concurrency_option,
    engine_options,
    judge_options,
    local_dtype_option,
    map_option,
    run_options,
    score_mode_option,
    seed_option,
    structured_output_option,
)
from judge.config import PLAIN_SCORE_MODES, SCORE_MODES
from judge.errors import ConfigError, RubricError
from judge.progress import progress_enabled


def default_out(data: Path, rubric: str) -> Path:
    """``run.a.jsonl`` + ``factuality`` -> ``run.a.factuality.verdicts.jsonl`` next to the data.

    Only the final suffix is dropped, so ``run.a.jsonl`` and ``run.b.jsonl`` never share an output;
    a rubric given as a path (``rubrics/my.j2``, ``./myrubric``) contributes its file stem.
    """
    return data.with_name(f"{Path(data.name).stem}.{Path(rubric).stem}.verdicts.jsonl")


@click.command(
    epilog="""\b
Examples:
  judge score examples/qa.jsonl --rubric factuality
  judge score data.csv --rubric relevance --judge openai/gpt-4o-mini --concurrency 16
  judge score data.jsonl --rubric my_rubric.j2 --judge openai/qwen2.5-7b --base-url http://localhost:8000/v1
  judge score data.jsonl --rubric helpfulness --map output=answer --map input=question
  judge score logs.jsonl --rubric relevance --judge openai/gpt-4o-mini --batch

Environment: every option has a JUDGE_SCORE_<OPTION> variable (e.g. JUDGE_SCORE_JUDGE, JUDGE_SCORE_MAP);
OPENAI_API_KEY / OPENAI_BASE_URL configure openai/* judges; JUDGE_CACHE_DIR moves the cache.

"""
    + EXIT_CODES,
)
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--rubric", "-r", required=True, help="Built-in rubric id (see `judge rubrics list`) or a .j2 file.")
@judge_options(
    "PROVIDER/MODEL: openai/<model>, local/<alias-or-path>, fake/echo-score. Default: $JUDGE_MODEL, else "
    "openai/gpt-4o-mini if --base-url, OPENAI_BASE_URL or OPENAI_API_KEY is set, else local/smollm2.",
    "OpenAI-compatible server, e.g. http://localhost:8000/v1 (vLLM); for openai/* judges only.",
    short=True,
    envvar="JUDGE_SCORE_JUDGE",  # the parameter is named judge_spec; keep the variable named after the flag
)
@click.option(
    "--out",
    "-o",
    type=click.Path(path_type=Path),
    default=None,
    help="Verdict JSONL (default: DATA's name + .<rubric>.verdicts.jsonl next to it).",
)
@concurrency_option(16, "Judge calls in flight at once.", short=True)
@cache_options(SCORE_CACHE_DIR_HELP, path_type=True, collect="cache")
@score_mode_option(
    SCORE_MODES,
    "text: parse the verdict; logprob: probability-weighted mean over score tokens (G-Eval); "
    "reason (local judges): a short greedy reasoning (64 tokens), then the score read as in logprob "
    "after a forced 'Score:'. Default: logprob for local judges, text otherwise.",
)
@local_dtype_option
@map_option("mapping", envvar="JUDGE_SCORE_MAP")  # space-separated FIELD=COLUMN pairs
@seed_option("Seed sent with every call.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds before a call is abandoned and retried (above 0).",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(1, 50),
    default=6,
    show_default=True,
    help="Attempts per call on 429/5xx/timeouts.",
)
@structured_output_option()
@click.option(
    "--prices",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="JSON price table to extend the built-in one: {model: {input: $/1M, output: $/1M}}.",
)
@batch_options(
    "Send the calls through the provider's Batch API (openai/* judges): half the price, answers within 24 h. "
    "Resumable: rerun the same command after a crash or Ctrl-C to collect the batches already submitted "
    "(see `judge batches list`)."
)
@engine_options(
    "Where items are judged: in this process, or on a Ray actor pool (one judge per actor; "
    "pip install 'judge[scale]'). With openai/* judges --concurrency bounds the requests of all actors together.",
    collect="engines",
)
@click.option(
    "--repeats",
    type=click.IntRange(1, 100),
    default=1,
    show_default=True,
    help="Judge every item N times, repeat r with seed SEED+r (and --temperature if set); one verdict per item: "
    "score = the mean, repeat_scores, spread (max-min), flipped; the summary gives the flip rate.",
)
@click.option(
    "--both-orders",
    is_flag=True,
    help="Pairwise rubrics: judge each pair as given and swapped. Label probabilities (logprob, reason) are "
    "averaged over the two orders and the most likely label wins; text verdicts that disagree make a tie. The "
    "summary gives the position-consistency rate and P(first wins).",
)
@click.option(
    "--temperature",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Sampling temperature of the judge (0: greedy); above 0, --repeats measures its sampling noise.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Render every prompt and count tokens (the local judge's tokenizer, else characters/4), print requests, "
    "tokens and cost from the price table, and send nothing.",
)
@click.option(
    "--max-cost",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="USD",
    help="Spend at most USD: each call sent reserves its worst case (prompt + max_tokens) while in flight and is "
    "refused only when the spending leaves no room for it; finished items are kept and cached, the rest unscored "
    "('budget reached'); exit 3 with the amount spent. The judge must be in the price table (see --prices).",
)
@run_options
def score(
    data: Path,
    rubric: str,
    judge_spec: str | None,
    base_url: str | None,
    out: Path | None,
    concurrency: int,
    cache: CacheArgs,
    score_mode: str | None,
    local_dtype: str | None,
    mapping: tuple[str, ...],
    seed: int,
    timeout: float,
    max_attempts: int,
    no_structured_output: bool,
    prices: str | None,
    max_unscored: float | None,
    progress: bool | None,
    engines: EngineArgs,
    batch: bool = False,
    batch_poll: float = 30.0,
    repeats: int = 1,
    both_orders: bool = False,
    temperature: float = 0.0,
    dry_run: bool = False,
    max_cost: float | None = None,
) -> None:
    """Score every row of DATA (JSONL, CSV or Parquet) and write one JSON verdict per item."""
    from judge.io import OutputLock, check_output_path
    from judge.pipeline import run
    from judge.retry import RetryPolicy
    from judge.runner import run_sync
    from judge.spec import JudgeSpec

    # every check that can fail on the user's input runs before the first call
    target = out or default_out(data, rubric)
    check_output_path(target, inputs=[data, rubric if Path(rubric).is_file() else None, prices])
    eng = check_engine(engines, batch=batch)
    items = _read_items(data, mapping, prices)
    spec = _judge_named(judge_spec, base_url)
    structured = False if no_structured_output else None  # None: the provider's default (get_provider drops None)
    judge = JudgeSpec.of(
        spec, score_mode=score_mode, base_url=base_url, timeout=timeout, dtype=local_dtype, seed=seed,
        temperature=temperature, retry=RetryPolicy(max_attempts=max_attempts), prices=prices,
        batch=BatchArgs(batch, batch_poll).settings(), structured_output=structured, **cache.grader_kwargs(),
    )  # fmt: skip
    grader = judge.grader(rubric)
    show = progress_enabled(progress)
    executor, budget, estimate = _plan(grader, items, eng, repeats, both_orders, max_cost, dry_run, concurrency, judge)
    if estimate is not None:
        click.echo(render_estimate(estimate, grader.describe(), len(items)))
        return

    async def go():
        try:  # in process the verdicts go to the file and the totals, none is kept: flat memory
            return await run(
                grader, items, executor, n=len(items), out=target, progress=show, repeats=repeats,
                both_orders=both_orders, budget=budget,
            )  # fmt: skip
        finally:
            await grader.provider.aclose()

    with _interrupt_notes(target, batch=batch), OutputLock(target):  # the lock is let go first
        tally = run_sync(go())
    _finish(tally, grader, target, items, budget, max_unscored)


def _read_items(data: Path, mapping: tuple[str, ...], prices: str | None) -> Any:
    """The items of DATA, checked now and read again as the run goes (never all held); the price table
    checked too, and a note on values read as text."""
    from judge.dataset import coercion_note, parse_mapping, stream_items
    from judge.pricing import load_prices

    load_prices(prices)
    items = stream_items(data, parse_mapping(mapping))
    note = coercion_note(items.coerced)
    if note:
        click.echo(note, err=True)
    return items


def _judge_named(judge_spec: str | None, base_url: str | None) -> str:
    """The judge: ``--judge``, or the default with a one-line notice of why it was picked."""
    from judge.providers.registry import resolve_judge

    spec, why = resolve_judge(judge_spec, base_url)
    if why is not None:
        click.echo(f"judge: {spec} ({why})", err=True)
    return spec


def _plan(
    grader: Any, items: Any, eng: Any, repeats: int, both_orders: bool, max_cost: float | None, dry_run: bool,
    concurrency: int, judge: Any,
) -> Any:  # fmt: skip
    """``(executor, budget, estimate)``: how the calls are made (:func:`make_executor`), the ``--max-cost``
    budget and the ``--dry-run`` estimate (None when not asked), each checked before any call; the provider is
    closed when a check fails and after an estimate (nothing more is sent)."""
    from judge.runner import Budget, check_trials, estimate_run, run_sync

    try:
        check_trials(grader, repeats, both_orders)
        budget = Budget.for_grader(max_cost, grader) if max_cost is not None else None
        executor = make_executor(eng, grader, concurrency, judge)
        executor.check(grader, budget=budget)  # what it cannot do, said before any work
        estimate = estimate_run(grader, items, calls_per_item=repeats * (2 if both_orders else 1)) if dry_run else None
    except BaseException:
        run_sync(grader.provider.aclose())
        raise
    if estimate is not None:
        run_sync(grader.provider.aclose())
    return executor, budget, estimate


@contextlib.contextmanager
def _interrupt_notes(target: Path, *, batch: bool) -> Iterator[None]:
    """On Ctrl-C, say where the finished verdicts are and that submitted batches keep running."""
    try:
        yield
    except KeyboardInterrupt:
        partial = target.with_name(target.name + ".partial")
        if partial.exists():
            click.echo(f"verdicts finished before the interrupt: {partial}", err=True)
        if batch:
            click.echo("submitted batches keep running on the server: rerun the same command to collect them", err=True)
        raise


def _finish(tally: Any, grader: Any, target: Path, items: Any, budget: Any, max_unscored: float | None) -> None:
    """The run's summary; exit 3 when the budget ran out or the run is incomplete."""
    click.echo(render_summary(tally, grader.describe(), target, lengths=length_summary(target, items)))
    batch_report = tally.report
    if batch_report is not None:
        click.echo(batch_report.line())
    if budget is not None and budget.reached:
        click.echo(
            f"run incomplete: budget reached: spent ${budget.spent:.4f} of --max-cost ${budget.max_usd:g}; "
            f"{budget.skipped} of {tally.n_items} items not judged (unscored, 'budget reached'). Finished items are "
            "cached: rerun with a higher --max-cost to judge the rest",
            err=True,
        )
        sys.exit(EXIT_INCOMPLETE)
    causes = tally.causes
    exit_if_incomplete("items", tally.n_items, causes[None], causes["transport"], causes["parse"], max_unscored)


def check_engine(engines: EngineArgs, *, batch: bool):
    """The engine ``--engine`` names (None: the local path, unchanged), after the checks that need no data."""
    from judge.engines import get_engine

    engine, address = engines.engine or "local", engines.address

    if engine == "local":
        get_engine(engine, address)  # --address without --engine ray is an error
        return None
    if batch:
        raise ConfigError(
            f"--engine {engine} judges items on workers; --batch sends them to the provider's Batch API: choose one"
        )
    return get_engine(engine, address)


def make_executor(eng: Any, grader: Any, concurrency: int, judge: Any) -> Any:
    """How ``judge score`` makes its calls (:mod:`judge.pipeline`): on an engine's workers (a recipe from the
    :class:`~judge.spec.JudgeSpec` ``judge``), through the Batch API (a grader built with batch settings), or in
    this process."""
    from judge.runner import executor_for

    if eng is None:
        return executor_for(grader, concurrency=concurrency)
    from judge.engines.score import GraderRecipe, OnEngine

    options = {"base_url": judge.base_url, "timeout": judge.timeout, **judge.provider_options}
    recipe = GraderRecipe.of(grader, judge.judge, **options)
    return OnEngine(eng, recipe, concurrency=concurrency)


def length_summary(target: Path, items: Any) -> Any:
    """The run's :class:`~judge.runner.LengthBias`, read back from the verdicts file and the items (each id's
    output lengths only are held, two numbers per item); None when the file is not there."""
    from judge.io import read_rows
    from judge.runner import length_bias

    if not target.exists():
        return None

    def size(text: Any) -> int | None:
        return len(text) if isinstance(text, str) else None

    lengths = {}
    for it in items:
        values = it.values()
        lengths[str(it.id)] = (size(values.get("output")), size(values.get("output_b")))
    return length_bias((row.data for row in read_rows(target)), lengths)


def _with_ci(value: float, lo: float | None, hi: float | None) -> str:
    """``0.750 [0.409, 0.929]`` (three decimals, as the rest of the summary), or the value alone."""
    return f"{value:.3f}" if lo is None or hi is None else f"{value:.3f} [{lo:.3f}, {hi:.3f}]"


def render_summary(tally, describe: dict, target: Path, lengths=None) -> str:
    """A small readable table of a run, from its :class:`~judge.runner.Tally` (and its
    :class:`~judge.runner.LengthBias`, when given: Spearman's ρ of score vs output length for a single rubric,
    P(longer answer wins) for a pairwise one)."""
    s = tally.summary()
    mean = "-" if s.mean_score is None else f"{s.mean_score:.3f}"
    cost = "unknown (model not in price table)" if s.cost_usd is None else f"${s.cost_usd:.4f}"
    lines = [
        f"rubric {describe['rubric']}  judge {describe['judge']}  score mode {describe['score_mode']}",
        f"  items      {s.n_items}",
        f"  scored     {s.n_ok}",
        f"  unscored   {s.n_unscored}"
        + (f"  ({', '.join(f'{k}: {v}' for k, v in s.unscored_reasons.items())})" if s.unscored_reasons else ""),
        f"  from cache {s.n_cached}",
        f"  mean score {mean}",
        f"  tokens     {s.prompt_tokens} prompt + {s.completion_tokens} completion",
        f"  cost       {cost}",
    ]
    t = s.trials
    if t is not None and t.repeats > 1:
        flips = "-" if t.flip_rate is None else f"{t.flip_rate:.3f}"
        spread = "-" if t.mean_spread is None else f"{t.mean_spread:.3f}"
        lines.append(f"  repeats    {t.repeats}  flip rate {flips}  mean spread {spread}")
    if t is not None and t.scored_pairs is not None:
        cons = "-" if t.consistency is None else f"{t.consistency:.3f}"
        first = "-" if t.p_first_wins is None else f"{t.p_first_wins:.3f}"
        lines.append(f"  orders     position consistency {cons} over {t.scored_pairs} pairs  P(first wins) {first}")
    if lengths is not None and lengths.decisive:
        share = _with_ci(lengths.p_longer_wins, lengths.p_longer_low, lengths.p_longer_high)
        lines.append(
            f"  length     P(longer wins) {share} over {lengths.decisive} decisive picks "
            "(Wilson 95% CI; 0.5 = no length bias)"
        )
    elif lengths is not None and lengths.rho is not None:
        rho = _with_ci(lengths.rho, lengths.rho_low, lengths.rho_high)
        lines.append(
            f"  length     Spearman ρ of score vs output length {rho} over {lengths.n} items "
            "(95% CI by Fisher z; 0 = no length bias)"
        )
    dist = tally.distribution
    if dist:
        lines.append("  scores     " + "  ".join(f"{k}:{dist[k]}" for k in sorted(dist, key=lambda x: (len(x), x))))
    lines.append(f"verdicts written to {target}")
    return "\n".join(lines)


def render_estimate(est, describe: dict, n_items: int) -> str:
    """What ``--dry-run`` prints: requests, tokens and cost, and how they were counted."""
    cost = "unknown (model not in price table; see --prices)" if est.cost_usd is None else f"${est.cost_usd:.4f}"
    counted = "characters / 4" if est.tokenizer == "chars/4" else f"the tokenizer of {est.tokenizer}"
    return "\n".join(
        [
            f"dry run: nothing sent  rubric {describe['rubric']}  judge {describe['judge']}",
            f"  items       {n_items}",
            f"  requests    {est.requests}",
            f"  tokens      {est.prompt_tokens} prompt (counted with {counted}) + {est.completion_tokens} completion "
            "(assumed)",
            f"  cost        {cost}  (cached calls would cost nothing; re-asks and retries not counted)",
        ]
    )


@click.group(epilog=EXIT_CODES)
def rubrics() -> None:
    """List, show and validate rubrics."""


@rubrics.command("list")
def rubrics_list() -> None:
    """List the built-in rubrics."""
    from judge.rubric import list_rubrics

    for r in list_rubrics():
        scale = r.kind_info.scale_caption(r.spec)
        click.echo(f"{r.id:<22} v{r.spec.version:<3} {scale:<9} {r.spec.description}")


@rubrics.command("show")
@click.argument("name")
@click.option(
    "--render",
    "render_mode",
    envvar="JUDGE_RUBRICS_SHOW_RENDER",
    type=click.Choice(PLAIN_SCORE_MODES),
    default=None,
    help="Also print the messages rendered for a sample item.",
)
def rubrics_show(name: str, render_mode: str | None) -> None:
    """Show a rubric's front matter, hash and template (NAME or a .j2 path)."""
    from judge.rubric import describe, load_rubric

    r = load_rubric(name)
    click.echo(json.dumps(describe(r), indent=2))
    click.echo("--- template ---")
    click.echo(r.body.rstrip())
    if render_mode:
        click.echo("--- rendered for a sample item ---")
        for m in r.render(r.sample_values(), render_mode):
            click.echo(f"[{m['role']}]\n{m['content']}\n")


@rubrics.command(
    "validate",
    epilog="\b\nExamples:\n  judge rubrics validate examples/my_rubric.j2\n  judge rubrics validate rubrics/*.j2\n\n"
    + EXIT_CODES,
)
@click.argument("paths", nargs=-1, required=True)
def rubrics_validate(paths: tuple[str, ...]) -> None:
    """Check rubric files without any model call: front matter, syntax, variables, a sample render.

    Exits 1 when a rubric has a problem, 2 when a path is not a rubric file at all.
    """
    from judge.rubric import load_rubric

    for p in paths:
        if Path(p).is_dir():
            raise RubricError(f"is a folder; pass rubric files, e.g. judge rubrics validate {Path(p) / '*.j2'}", path=p)
    failed = 0
    for p in paths:
        try:
            problems = load_rubric(p).validate()
        except RubricError as exc:
            problems = [str(exc)]
        if problems:
            failed += 1
            for problem in problems:
                click.echo(f"FAIL {p}: {problem}")
        else:
            click.echo(f"ok   {p}")
    if failed:
        raise SystemExit(1)
