"""``judge mtbench``: answer, judge, show (and convert LLMBar's expert labels).

Module-level imports stay light: pandas/matplotlib/providers load only inside the commands.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from judge.cli import EXIT_CODES, exit_if_incomplete
from judge.cli_options import (
    NO_STRUCTURED_OUTPUT_HELP,
    BatchArgs,
    CacheArgs,
    batch_options,
    cache_options,
    collected,
    concurrency_option,
    judge_options,
    local_dtype_option,
    options,
    run_options,
    score_mode_option,
    seed_option,
    server_options,
    structured_output_option,
)
from judge.config import PLAIN_SCORE_MODES
from judge.progress import progress_enabled

ANSWER_EPILOG = """\b
Example:
  judge mtbench answer --questions data/mt_bench/question.jsonl \\
      --model openai/my-model --base-url http://localhost:8000/v1 --out model_answer/my-model.jsonl
  judge mtbench answer --questions examples/mtbench/question.jsonl --model local/smollm2 \\
      --out out/model_answer/smollm2.jsonl --temperature writing=0.5
"""
JUDGE_EPILOG = """\b
Examples:
  judge mtbench judge --questions question.jsonl --answers model_answer/ --mode single \\
      --reference reference_answer/gpt-4.jsonl --judge openai/gpt-4o --out judgments_single.jsonl
  judge mtbench judge --questions question.jsonl --answers model_answer/ --mode pairwise-baseline \\
      --baseline gpt-3.5-turbo --judge-prompts judge_prompts.jsonl --out judgments_pair.jsonl
"""
SHOW_EPILOG = """\b
Example:
  judge mtbench show judgments_single.jsonl --plot radar.png
  judge mtbench show judgments_pair.jsonl --json
"""
LLMBAR_EPILOG = """\b
Example:
  judge mtbench llmbar data/llmbar/Processed/MT-Bench/dataset.json \\
      --questions data/mt_bench/question.jsonl --answers data/mt_bench/model_answer --out-dir llmbar_mt/
  judge mtbench judge --questions llmbar_mt/question.jsonl --answers llmbar_mt/model_answer \\
      --mode pairwise-all --pairs llmbar_mt/labels.jsonl --reference data/mt_bench/reference_answer/gpt-4.jsonl \\
      --out llmbar_mt/judgments.jsonl
"""


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _select_questions(questions: list[Any], ids: str | None, first_n: int | None) -> list[Any]:
    from judge.errors import ConfigError

    wanted = _split(ids)
    if wanted:
        by_str = {str(q.question_id): q for q in questions}
        unknown = [w for w in wanted if w not in by_str]
        if unknown:
            raise ConfigError(f"--question-ids: unknown question id(s) {', '.join(unknown)}")
        questions = [by_str[w] for w in wanted]
    return questions[:first_n] if first_n else questions


def _question_options(verb: str) -> Any:
    """``--question-ids`` and ``--first-n``: which questions to ``verb``."""
    return options(
        click.option("--question-ids", default=None, help=f"Comma-separated question ids to {verb} (default: all)."),
        click.option(
            "--first-n",
            type=click.IntRange(min=1),
            default=None,
            help=f"{verb.capitalize()} only the first N (selected) questions.",
        ),
    )


@dataclass(frozen=True)
class MatchSelection:
    """What ``judge mtbench judge`` judges: the options that pick questions, answers and pairs, as given."""

    questions_path: str
    answer_paths: tuple[str, ...]
    mode: str
    baseline: str | None
    reference_paths: tuple[str, ...]
    ref_categories: str
    models: str | None
    question_ids: str | None
    first_n: int | None
    pairs: str | None

    def inputs(self) -> list[str | None]:
        """The question, answer and reference files (an output must not overwrite one)."""
        return [self.questions_path, *self.answer_paths, *self.reference_paths]

    def matches(self) -> list[Any]:
        """The matches to judge: the selected questions and models' answers, planned for the mode (warnings said)."""
        from judge.errors import ConfigError
        from judge.mtbench import formats
        from judge.mtbench.judging import plan_matches

        questions = formats.read_questions(self.questions_path)
        answers = formats.read_answers(self.answer_paths)
        formats.check_answers(questions, answers)
        questions = _select_questions(questions, self.question_ids, self.first_n)
        wanted = _split(self.models)
        if wanted:
            unknown = [m for m in wanted if m not in answers]
            if unknown:
                raise ConfigError(f"--models: no answers for {', '.join(unknown)} (have: {', '.join(sorted(answers))})")
            answers = {m: answers[m] for m in wanted}
        if self.pairs and self.mode == "single":
            raise ConfigError("--pairs needs a pairwise mode")
        references = formats.read_references(self.reference_paths) if self.reference_paths else None
        matches, warnings = plan_matches(
            questions,
            answers,
            self.mode,
            references=references,
            ref_categories=_split(self.ref_categories),
            baseline=self.baseline,
            pairs=self.pairs,
        )
        for w in warnings:
            click.echo(f"warning: {w}", err=True)
        return matches


@click.group("mtbench")
def mtbench() -> None:
    """MT-Bench-style multi-turn benchmarks in FastChat's file formats.

    \b
    answer: the model under test answers every turn (model_answer/*.jsonl)
    judge:  a judge grades every turn, single (1-10) or pairwise in both orders
    show:   tables per model, turn and category; win rates; position and length bias
    llmbar: LLMBar's expert-labelled MT-Bench pairs as question/answer/labels files
    """


@mtbench.command("answer", epilog=ANSWER_EPILOG + "\n" + EXIT_CODES)
@click.option(
    "--questions",
    "questions_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="FastChat question.jsonl (question_id, category, turns).",
)
@click.option("--model", required=True, help="Model under test, PROVIDER/MODEL (openai/..., local/smollm2, fake/...).")
@click.option("--model-id", default=None, help="Name recorded as model_id (default: the MODEL part of --model).")
@server_options("OpenAI-compatible server URL (vLLM, Ollama, llama.cpp...).", api_key=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Where to write the model_answer JSONL.")
@click.option(
    "--temperature",
    "temperatures",
    multiple=True,
    help="CATEGORY=T to override FastChat's per-category temperature, or T for every category. Repeatable.",
)
@click.option(
    "--max-tokens", type=click.IntRange(min=1), default=1024, show_default=True, help="Completion tokens per turn."
)
@seed_option("Seed sent with every call.")
@click.option("--system", default=None, help="Optional system prompt for the model under test.")
@_question_options("answer")
@concurrency_option(4, "Questions answered in parallel.")
@run_options
@cache_options(judge=False, collect="cache")
@batch_options(
    "Send the turns through the provider's Batch API (openai/* models): half the price, answers within 24 h, one "
    "round of batches per turn. Needs the cache; resumable: rerun the same command to collect the batches already "
    "submitted.",
    collect="batching",
)
def answer_cmd(
    questions_path: str,
    model: str,
    model_id: str | None,
    base_url: str | None,
    api_key: str | None,
    out: str,
    temperatures: tuple[str, ...],
    max_tokens: int,
    seed: int,
    system: str | None,
    question_ids: str | None,
    first_n: int | None,
    concurrency: int,
    max_unscored: float | None,
    progress: bool | None,
    cache: CacheArgs,
    batching: BatchArgs,
) -> None:
    """Generate the model under test's answers to every turn, FastChat's model_answer format."""
    from judge.io import OutputLock, check_output_path
    from judge.mtbench.answer import answer_questions, parse_temperatures
    from judge.mtbench.formats import read_questions
    from judge.providers.registry import get_provider
    from judge.runner import run_sync

    check_output_path(out, inputs=[questions_path])
    questions = _select_questions(read_questions(questions_path), question_ids, first_n)
    provider = get_provider(model, base_url=base_url, api_key=api_key)
    store = cache.open()
    settings = batching.settings()
    if settings is not None:
        from judge.batch import check_batch_support

        check_batch_support(provider, store, role="model")  # before any call
    reports: list[Any] = []

    async def go() -> Any:
        try:
            return await answer_questions(
                provider,
                questions,
                model_id=model_id,
                out=out,
                concurrency=concurrency,
                temperatures=parse_temperatures(temperatures),
                max_tokens=max_tokens,
                seed=seed,
                system=system,
                cache=store,
                batch=settings,
                on_report=reports.append,
                progress=progress_enabled(progress),
            )
        finally:
            await provider.aclose()

    with OutputLock(out):
        records, failures = run_sync(go())
    cached = sum(r["generation"]["cached"] for r in records)
    click.echo(f"{len(records)} question(s) answered by {model_id or provider.model} ({cached} from cache) -> {out}")
    for report in reports:
        click.echo(report.line())
    for f in failures:
        click.echo(f"failed: {f}", err=True)
    # a question fails only when its calls fail after every retry: a transport reason
    exit_if_incomplete("questions", len(questions), len(records), len(failures), 0, max_unscored)


@mtbench.command("judge", epilog=JUDGE_EPILOG + "\n" + EXIT_CODES)
@collected("selection", MatchSelection)
@click.option(
    "--questions", "questions_path", required=True, type=click.Path(dir_okay=False), help="FastChat question.jsonl."
)
@click.option(
    "--answers", "answer_paths", required=True, multiple=True, help="model_answer directory or files (repeatable)."
)
@click.option(
    "--mode",
    type=click.Choice(["single", "pairwise-baseline", "pairwise-all"]),
    default="single",
    show_default=True,
    help="Single 1-10 grading, or pairwise against a baseline or between all models.",
)
@click.option("--baseline", default=None, help="Baseline model for pairwise-baseline (default: gpt-3.5-turbo).")
@click.option(
    "--reference",
    "reference_paths",
    multiple=True,
    help="reference_answer JSONL (FastChat format), for the reference-guided categories. Repeatable.",
)
@click.option(
    "--ref-categories",
    default="math,reasoning,coding",
    show_default=True,
    help="Comma-separated categories judged against a reference answer.",
)
@judge_options(
    "Judge PROVIDER/MODEL (default: $JUDGE_MODEL, else openai when configured, else local/smollm2).",
    "OpenAI-compatible server URL for the judge.",
    param="judge_model",
    api_key=True,
)
@click.option(
    "--judge-prompts",
    default=None,
    type=click.Path(dir_okay=False),
    help="FastChat judge_prompts.jsonl to use instead of the built-in mt_bench_* rubrics (two turns at most).",
)
@click.option("--models", default=None, help="Comma-separated models to judge (default: every model in --answers).")
@_question_options("judge")
@click.option(
    "--pairs",
    default=None,
    type=click.Path(dir_okay=False),
    help="Judge exactly these pairs: a JSONL with question_id, model_1, model_2 (and turn), e.g. labels.",
)
@score_mode_option(
    PLAIN_SCORE_MODES,
    "text: the judge writes its verdict (JSON, or FastChat's [[A]] / [[rating]]); logprob: the verdict is read "
    "from the next-token distribution over the labels (pairwise, both orders' probabilities averaged) or the "
    "scores (single). Default: the judge's own (logprob for local models, text for servers); text with "
    "--judge-prompts.",
)
@local_dtype_option
@click.option(
    "--max-tokens",
    type=click.IntRange(min=1),
    default=1024,
    show_default=True,
    help="Completion tokens per judge call (text score mode).",
)
@concurrency_option(8, "Judge calls in flight.")
@run_options
@cache_options(collect="cache")
@structured_output_option(
    NO_STRUCTURED_OUTPUT_HELP + " Always off with --judge-prompts (FastChat asks for [[rating]])."
)
@batch_options(
    "Send the judge calls through the provider's Batch API (openai/* judges), as `judge score --batch`: half "
    "the price, answers within 24 h. Resumable: rerun the same command to collect the batches already submitted.",
    collect="batching",
)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Where to write the judgments JSONL.")
def judge_cmd(
    selection: MatchSelection,
    judge_model: str | None,
    base_url: str | None,
    api_key: str | None,
    judge_prompts: str | None,
    score_mode: str | None,
    local_dtype: str | None,
    max_tokens: int,
    concurrency: int,
    max_unscored: float | None,
    progress: bool | None,
    cache: CacheArgs,
    batching: BatchArgs,
    out: str,
    no_structured_output: bool = False,
) -> None:
    """Judge every turn of every answer; stream FastChat-style judgment lines to --out."""
    from judge.io import OutputLock, check_output_path
    from judge.mtbench import formats
    from judge.mtbench.judging import PromptBuilder, judge_matches, judge_matches_batched
    from judge.rubric import load_rubric
    from judge.runner import run_sync
    from judge.spec import JudgeSpec

    check_output_path(out, inputs=[*selection.inputs(), judge_prompts, selection.pairs])
    matches = selection.matches()
    prompts = formats.read_judge_prompts(judge_prompts) if judge_prompts else None
    _check_score_mode(prompts, score_mode)
    single_rubric, pair_rubric = load_rubric("mt_bench_single"), load_rubric("mt_bench_pairwise")
    # one judge spec, one provider and one cache for both graders; the score mode defaults to the provider's
    # (logprob for local models), text for FastChat's prompts
    spec = JudgeSpec.of(
        judge_model,
        score_mode="text" if prompts is not None else score_mode,
        max_tokens=max_tokens,
        batch=batching.settings(),
        base_url=base_url,
        api_key=api_key,
        # FastChat prompts ask for [[rating]] / [[A]]: do not force a JSON schema on them
        structured_output=False if (prompts or no_structured_output) else None,
        dtype=local_dtype,
        **cache.grader_kwargs(),
    )
    single = spec.grader(single_rubric)
    provider = single.provider
    graders = [single, spec.grader(pair_rubric, provider=provider, cache=single.cache)]
    builder = PromptBuilder(single_rubric, pair_rubric, prompts, score_mode=single.score_mode)

    show = progress_enabled(progress)
    batch = batching.batch

    async def go() -> tuple[list[dict[str, Any]], Any]:
        try:
            if batch:  # the calls go through judge score --batch's seam (judge.batch.BatchAPI)
                return await judge_matches_batched(matches, builder, *graders, out=out, progress=show)
            return await judge_matches(
                matches, builder, *graders, concurrency=concurrency, out=out, progress=show
            ), None
        finally:
            await provider.aclose()

    with OutputLock(out):
        records, batch_report = run_sync(go())
    _judged(records, batch_report, provider.id, single.score_mode, selection.mode, out, max_unscored)


def _check_score_mode(prompts: Any, score_mode: str | None) -> None:
    from judge.errors import ConfigError

    if prompts is not None and score_mode == "logprob":
        raise ConfigError(
            "--score-mode logprob reads the verdict from the first token, but FastChat's judge prompts ask for an "
            "explanation first; use the built-in rubrics (omit --judge-prompts) or --score-mode text"
        )


def _judged(
    records: list[dict[str, Any]],
    batch_report: Any,
    judge_id: str,
    score_mode: str,
    mode: str,
    out: str,
    max_unscored: float | None,
) -> None:
    """What the judging run did, its summary table, and exit 3 when it is incomplete."""
    from judge.mtbench.results import pairwise_summary, render, single_summary

    n_cached = sum(bool(r["cached"]) for r in records)
    n_unscored = sum(r["status"] != "ok" for r in records)
    click.echo(
        f"{len(records)} judgment(s) by {judge_id}, score mode {score_mode} ({n_cached} from cache, "
        f"{n_unscored} unscored) -> {out}"
    )
    if batch_report is not None:
        click.echo(batch_report.line())
    if mode == "single":
        click.echo(render({"single": single_summary(records)}))
    else:
        click.echo(render({"pairwise": pairwise_summary(records)}))
    causes = [_record_cause(r) for r in records]
    exit_if_incomplete(
        "judgments", len(records), causes.count(None), causes.count("transport"), causes.count("parse"), max_unscored
    )


def _record_cause(record: dict[str, Any]) -> str | None:
    """A judgment's unscored cause; a pairwise one ("g1: ...; g2: ...") is transport if either game's is."""
    from judge.verdict import unscored_cause

    if record.get("status") == "ok":
        return None
    parts = [p.strip().removeprefix("g1:").removeprefix("g2:") for p in str(record.get("error") or "").split("; ")]
    return "transport" if any(unscored_cause(p) == "transport" for p in parts) else "parse"


@mtbench.command("show", epilog=SHOW_EPILOG + "\n" + EXIT_CODES)
@click.argument("judgments", type=click.Path(dir_okay=False))
@click.option("--plot", default=None, type=click.Path(dir_okay=False), help="Write a radar plot of categories (PNG).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON instead of tables.")
def show_cmd(judgments: str, plot: str | None, as_json: bool) -> None:
    """Tables from a judgments file: per model, turn and category; win rates; judge bias statistics."""
    import json

    from judge.io import check_output_path
    from judge.mtbench.results import radar_plot, render, summarize

    if plot:
        check_output_path(plot, "--plot", [judgments])
    summary = summarize(judgments)
    click.echo(json.dumps(summary, indent=2, default=str) if as_json else render(summary))
    if plot:
        click.echo(f"radar plot -> {radar_plot(summary, plot)}", err=True)


@mtbench.command("llmbar", epilog=LLMBAR_EPILOG + "\n" + EXIT_CODES)
@click.argument("dataset", type=click.Path(dir_okay=False))
@click.option(
    "--questions",
    "questions_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="MT-Bench question.jsonl, to recover question ids from the turn-1 text.",
)
@click.option(
    "--answers",
    "answer_paths",
    multiple=True,
    help="Published model_answer files or directory, to recover model names from identical texts.",
)
@click.option(
    "--out-dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Writes question.jsonl, model_answer/llmbar.jsonl and labels.jsonl here.",
)
def llmbar_cmd(dataset: str, questions_path: str, answer_paths: tuple[str, ...], out_dir: str) -> None:
    """Convert LLMBar's MT-Bench subset (expert pairwise labels) into MT-Bench files plus labels."""
    from judge.io import check_output_path
    from judge.mtbench.formats import read_answers, read_questions
    from judge.mtbench.llmbar import convert_llmbar

    written = ("question.jsonl", "labels.jsonl", "model_answer/llmbar.jsonl")
    for name in written:
        check_output_path(Path(out_dir) / name, "--out-dir", [dataset, questions_path, *answer_paths])
    known = read_answers(answer_paths) if answer_paths else None
    counts = convert_llmbar(dataset, read_questions(questions_path), out_dir, known)
    click.echo(", ".join(f"{k}: {v}" for k, v in counts.items()) + f" -> {Path(out_dir)}")
