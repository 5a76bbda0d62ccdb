"""``judge score`` and ``judge rubrics``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from judge.cli import (
    EXIT_CODES,
    EXIT_INCOMPLETE,
    cache_options,
    exit_if_incomplete,
    local_dtype_option,
    max_unscored_option,
    progress_option,
)
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
@click.option(
    "--judge",
    "-j",
    "judge_spec",
    envvar="JUDGE_SCORE_JUDGE",  # the parameter is named judge_spec; keep the variable named after the flag
    default=None,
    help="PROVIDER/MODEL: openai/<model>, local/<alias-or-path>, fake/echo-score. Default: $JUDGE_MODEL, else "
    "openai/gpt-4o-mini if --base-url, OPENAI_BASE_URL or OPENAI_API_KEY is set, else local/smollm2.",
)
@click.option(
    "--base-url",
    default=None,
    help="OpenAI-compatible server, e.g. http://localhost:8000/v1 (vLLM); for openai/* judges only.",
)
@click.option(
    "--out",
    "-o",
    type=click.Path(path_type=Path),
    default=None,
    help="Verdict JSONL (default: DATA's name + .<rubric>.verdicts.jsonl next to it).",
)
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(1, 1024),
    default=16,
    show_default=True,
    help="Judge calls in flight at once.",
)
@click.option("--no-cache", is_flag=True, help="Do not read or write the call cache.")
@click.option(
    "--cache-dir", type=click.Path(path_type=Path), default=None, help="Cache folder (default ~/.cache/judge)."
)
@click.option(
    "--score-mode",
    type=click.Choice(["text", "logprob", "reason"]),
    default=None,
    help="text: parse the verdict; logprob: probability-weighted mean over score tokens (G-Eval); "
    "reason (local judges): a short greedy reasoning (64 tokens), then the score read as in logprob "
    "after a forced 'Score:'. Default: logprob for local judges, text otherwise.",
)
@local_dtype_option
@click.option(
    "--map",
    "mapping",
    envvar="JUDGE_SCORE_MAP",  # space-separated FIELD=COLUMN pairs
    multiple=True,
    metavar="FIELD=COLUMN",
    help="Read FIELD from COLUMN (repeatable).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed sent with every call.")
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
@click.option(
    "--no-structured-output",
    is_flag=True,
    help="openai judges: do not send a JSON schema (for servers without structured output); "
    "a server that rejects it is detected and falls back by itself.",
)
@click.option(
    "--prices",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="JSON price table to extend the built-in one: {model: {input: $/1M, output: $/1M}}.",
)
@cache_options
@click.option(
    "--batch",
    is_flag=True,
    help="Send the calls through the provider's Batch API (openai/* judges): half the price, answers within 24 h. "
    "Resumable: rerun the same command after a crash or Ctrl-C to collect the batches already submitted "
    "(see `judge batches list`).",
)
@click.option(
    "--batch-poll",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="With --batch: seconds between two looks at the submitted batches.",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="Where items are judged: in this process, or on a Ray actor pool (one judge per actor; "
    "pip install 'judge[scale]'). With openai/* judges --concurrency bounds the requests of all actors together.",
)
@click.option(
    "--address",
    default=None,
    metavar="ADDR",
    help="Ray cluster for --engine ray: ray://HEAD:10001 or auto (default: $RAY_ADDRESS, else a local Ray).",
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
@max_unscored_option
@progress_option
def score(
    data: Path,
    rubric: str,
    judge_spec: str | None,
    base_url: str | None,
    out: Path | None,
    concurrency: int,
    no_cache: bool,
    cache_dir: Path | None,
    score_mode: str | None,
    local_dtype: str | None,
    mapping: tuple[str, ...],
    seed: int,
    timeout: float,
    max_attempts: int,
    no_structured_output: bool,
    prices: str | None,
    keep_failed: bool,
    cache_namespace: str | None,
    max_unscored: float | None,
    progress: bool | None,
    batch: bool = False,
    batch_poll: float = 30.0,
    engine: str = "local",
    address: str | None = None,
    repeats: int = 1,
    both_orders: bool = False,
    temperature: float = 0.0,
    dry_run: bool = False,
    max_cost: float | None = None,
) -> None:
    """Score every row of DATA (JSONL, CSV or Parquet) and write one JSON verdict per item."""
    from judge.batch import BatchSettings
    from judge.dataset import coercion_note, parse_mapping, stream_items
    from judge.io import OutputLock, check_output_path
    from judge.pipeline import run
    from judge.pricing import load_prices
    from judge.providers.registry import explain_default_judge
    from judge.retry import RetryPolicy
    from judge.runner import Budget, check_trials, estimate_run, run_sync
    from judge.spec import JudgeSpec

    # every check that can fail on the user's input runs before the first call
    target = out or default_out(data, rubric)
    check_output_path(target, inputs=[data, rubric if Path(rubric).is_file() else None, prices])
    eng = check_engine(engine, address, batch=batch)
    load_prices(prices)
    items = stream_items(data, parse_mapping(mapping))  # checked now, read again as the run goes: never all held
    note = coercion_note(items.coerced)
    if note:
        click.echo(note, err=True)
    spec = judge_spec
    if spec is None:
        spec, why = explain_default_judge(base_url)
        click.echo(f"judge: {spec} ({why})", err=True)
    structured = False if no_structured_output else None
    judge = JudgeSpec.of(
        spec,
        score_mode=score_mode,
        cache=False if no_cache else (cache_dir or True),
        base_url=base_url,
        timeout=timeout,
        dtype=local_dtype,
        seed=seed,
        temperature=temperature,
        retry=RetryPolicy(max_attempts=max_attempts),
        prices=prices,
        keep_failed=keep_failed,
        cache_namespace=cache_namespace or "",
        batch=BatchSettings(poll_interval=batch_poll) if batch else None,
        structured_output=structured,  # None: the provider's default (get_provider drops None options)
    )
    grader = judge.grader(rubric)
    show = progress_enabled(progress)
    try:
        check_trials(grader, repeats, both_orders)
        budget = Budget.for_grader(max_cost, grader) if max_cost is not None else None
        executor = make_executor(eng, grader, concurrency, spec, base_url, timeout, structured, local_dtype)
        executor.check(grader, budget=budget)  # what it cannot do, said before any work
        estimate = estimate_run(grader, items, calls_per_item=repeats * (2 if both_orders else 1)) if dry_run else None
    except BaseException:
        run_sync(grader.provider.aclose())
        raise
    if estimate is not None:
        run_sync(grader.provider.aclose())
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

    try:
        with OutputLock(target):
            results = run_sync(go())
    except KeyboardInterrupt:
        partial = target.with_name(target.name + ".partial")
        if partial.exists():
            click.echo(f"verdicts finished before the interrupt: {partial}", err=True)
        if batch:
            click.echo("submitted batches keep running on the server: rerun the same command to collect them", err=True)
        raise
    tally = results
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


def check_engine(engine: str, address: str | None, *, batch: bool):
    """The engine ``--engine`` names (None: the local path, unchanged), after the checks that need no data."""
    from judge.engines import get_engine

    if engine == "local":
        get_engine(engine, address)  # --address without --engine ray is an error
        return None
    if batch:
        raise ConfigError(
            f"--engine {engine} judges items on workers; --batch sends them to the provider's Batch API: choose one"
        )
    return get_engine(engine, address)


def make_executor(eng, grader, concurrency: int, judge: str, base_url, timeout, structured, dtype):
    """How ``judge score`` makes its calls (:mod:`judge.pipeline`): on an engine's workers, through the Batch
    API (a grader built with batch settings), or in this process."""
    from judge.runner import executor_for

    if eng is None:
        return executor_for(grader, concurrency=concurrency)
    from judge.engines.score import GraderRecipe, OnEngine

    options = {"base_url": base_url, "timeout": timeout, "structured_output": structured, "dtype": dtype}
    recipe = GraderRecipe.of(grader, judge, **options)
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
    type=click.Choice(["text", "logprob"]),
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
