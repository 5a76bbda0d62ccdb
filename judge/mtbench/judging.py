"""Judging model answers MT-Bench style: per turn, single (1-10) or pairwise in both orders.

Turn *k* is judged with the whole conversation up to *k* (the user turns and that model's own
replies). Categories that need it (math, reasoning, coding by default) are judged against reference
answers. Prompts come from our rubrics (``mt_bench_single`` / ``mt_bench_pairwise``, any number of
turns) or from a FastChat ``judge_prompts.jsonl`` (``single-v1``, ``pair-v2``, their ``-math-`` and
``-multi-turn`` variants; two turns at most, as in FastChat), so results can be compared with
published MT-Bench numbers.

Every call goes through :meth:`judge.grader.Grader.grade_messages`: the core's cache, transport
retries, parse re-asks and ``unscored`` semantics. A pairwise match is judged twice, with the
answers in both orders. In text score mode a verdict that flips with the order becomes a tie and is
recorded as inconsistent (MT-Bench's rule). In logprob score mode (the local judge's default) each
order's verdict is the judge's next-token distribution over the labels; the two are averaged in the
pair's orientation (:func:`judge.orders.mean_order_probs`) and the most likely label wins.
Judgments stream to disk as they finish.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any

from judge.errors import ConfigError, DataError
from judge.grader import Grader
from judge.io import read_rows
from judge.mtbench.formats import Answer, JudgePrompt, Question, QuestionId
from judge.orders import combine_order_probs, combine_orders, mean_order_probs, unswap
from judge.pipeline import Executor, InProcess, run_units
from judge.rubric import Rubric
from judge.verdict import Verdict

if TYPE_CHECKING:
    from judge.batch import BatchReport

MODES = ("single", "pairwise-baseline", "pairwise-all")
REFERENCE_CATEGORIES = ("math", "reasoning", "coding")
"""Categories judged against reference answers, as in MT-Bench."""
DEFAULT_BASELINE = "gpt-3.5-turbo"
"""FastChat's default baseline for ``pairwise-baseline``."""

# a label in the pair's original orientation (g1 shows model_1 as A) -> which model it names;
# g2's labels are read back into this orientation by judge.orders
_G1 = {"A": "model_1", "B": "model_2", "tie": "tie"}


@dataclass(frozen=True)
class SingleMatch:
    """One model's reply to turn ``turn`` (1-based) of one question."""

    question: Question
    answer: Answer
    turn: int
    reference: list[str] | None


@dataclass(frozen=True)
class PairMatch:
    """Two models' replies to turn ``turn`` of one question (``model_1`` is shown first in game 1)."""

    question: Question
    answer_1: Answer
    answer_2: Answer
    turn: int
    reference: list[str] | None


Match = SingleMatch | PairMatch


def format_conversation(user_turns: Sequence[str], replies: Sequence[str], speaker: str = "Assistant") -> str:
    """``### User: ...`` / ``### Assistant: ...`` blocks, FastChat's multi-turn layout."""
    blocks = []
    for q, a in zip(user_turns, replies, strict=True):
        blocks.append(f"### User:\n{q}\n\n### {speaker}:\n{a}")
    return "\n\n".join(blocks)


def plan_matches(
    questions: Sequence[Question],
    answers: dict[str, dict[QuestionId, Answer]],
    mode: str,
    *,
    references: dict[QuestionId, Answer] | None = None,
    ref_categories: Sequence[str] = REFERENCE_CATEGORIES,
    baseline: str | None = None,
    pairs: str | Path | None = None,
) -> tuple[list[Match], list[str]]:
    """Every (model or pair, question, turn) to judge, and warnings about what was skipped.

    A question in a reference category without a reference answer (from ``references`` or the
    question's own ``reference`` field) is a :class:`DataError`: judging math without one is not MT-Bench.
    """
    if mode not in MODES:
        raise ConfigError(f"unknown mode '{mode}' (choose from {', '.join(MODES)})")
    if not answers:
        raise ConfigError("no model answers to judge")
    warnings: list[str] = []

    def reference_for(q: Question) -> list[str] | None:
        if q.category not in ref_categories:
            return None
        ref = references.get(q.question_id) if references else None
        turns = ref.turns if ref is not None else q.reference
        if not turns or len(turns) < q.n_turns:
            have = len(turns or [])
            raise DataError(
                f"question {q.question_id!r} is in category '{q.category}', which is judged against a reference, "
                f"but has {have} reference turn(s) for {q.n_turns} turn(s); pass --reference "
                "reference_answer.jsonl or drop the category from --ref-categories",
                path=q.source.rpartition(":")[0] or None,
                line=_line(q.source),
                field="reference",
            )
        return turns

    models = sorted(answers)
    if mode == "single":
        return _single_matches(questions, answers, models, reference_for, warnings), warnings
    if pairs is not None:
        return _pairs_from_file(pairs, questions, answers, reference_for), warnings
    model_pairs = _model_pairs(mode, answers, models, baseline, warnings)
    matches: list[Match] = []
    skipped = 0
    for q in questions:
        ref = reference_for(q)
        for m1, m2 in model_pairs:
            a1, a2 = answers[m1].get(q.question_id), answers[m2].get(q.question_id)
            if a1 is None or a2 is None:
                skipped += 1
                continue
            matches.extend(PairMatch(q, a1, a2, k, ref) for k in range(1, q.n_turns + 1))
    if skipped:
        warnings.append(f"{skipped} (question, pair) combination(s) skipped: one of the models has no answer")
    return matches, warnings


def _single_matches(
    questions: Sequence[Question],
    answers: dict[str, dict[QuestionId, Answer]],
    models: list[str],
    reference_for: Callable[[Question], list[str] | None],
    warnings: list[str],
) -> list[Match]:
    """Every turn of every model's answer to every question (a model without an answer is skipped, with a warning)."""
    for model in models:
        missing = [q.question_id for q in questions if q.question_id not in answers[model]]
        if missing:
            warnings.append(
                f"model '{model}' has no answer for {len(missing)} question(s) (e.g. {missing[0]!r}); skipped"
            )
    matches: list[Match] = []
    for q in questions:
        ref = reference_for(q)
        for model in models:
            ans = answers[model].get(q.question_id)
            if ans is not None:
                matches.extend(SingleMatch(q, ans, k, ref) for k in range(1, q.n_turns + 1))
    return matches


def _model_pairs(
    mode: str,
    answers: dict[str, dict[QuestionId, Answer]],
    models: list[str],
    baseline: str | None,
    warnings: list[str],
) -> list[tuple[str, str]]:
    """The (model_1, model_2) pairs of a pairwise mode: each model against the baseline, or every two models."""
    if mode == "pairwise-baseline":
        base = baseline or DEFAULT_BASELINE
        if base not in answers:
            raise ConfigError(f"baseline model '{base}' has no answers (models: {', '.join(models)}); use --baseline")
        model_pairs = [(m, base) for m in models if m != base]
    else:
        if baseline:
            warnings.append("--baseline is ignored in pairwise-all mode")
        model_pairs = list(combinations(models, 2))
    if not model_pairs:
        raise ConfigError(f"pairwise modes need at least two models (got {', '.join(models)})")
    return model_pairs


def _line(source: str) -> int | None:
    tail = source.rpartition(":")[2]
    return int(tail) if tail.isdigit() else None


def _pairs_from_file(
    path: str | Path,
    questions: Sequence[Question],
    answers: dict[str, dict[QuestionId, Answer]],
    reference_for: Any,
) -> list[Match]:
    """Exactly the pairs listed in ``path`` (question_id, model_1, model_2, optional turn), in that orientation.

    Any pairwise judgments file (ours, FastChat's, a labels file) works, so a judge can be run on
    the very pairs people labelled and joined to the labels by (question_id, model_1, model_2, turn).
    """
    by_id = {q.question_id: q for q in questions}
    matches: list[Match] = []
    seen: set[tuple[Any, ...]] = set()
    for row in read_rows(path):
        qid = row.data.get("question_id")
        q = by_id.get(qid) if isinstance(qid, int | str) else None
        if q is None:
            raise row.error(f"question {qid!r} is not in the question file", "question_id")
        sides = []
        for name in ("model_1", "model_2"):
            model = row.data.get(name)
            ans = answers.get(model, {}).get(q.question_id) if isinstance(model, str) else None
            if ans is None:
                raise row.error(f"no answer by model {model!r} to question {qid!r} among the answer files", name)
            sides.append(ans)
        turn = row.data.get("turn")
        turns = [turn] if turn is not None else list(range(1, q.n_turns + 1))
        for k in turns:
            if not isinstance(k, int) or not 1 <= k <= q.n_turns:
                raise row.error(f"turn must be 1..{q.n_turns}, got {k!r}", "turn")
            key = (q.question_id, sides[0].model, sides[1].model, k)
            if key not in seen:
                seen.add(key)
                matches.append(PairMatch(q, sides[0], sides[1], k, reference_for(q)))
    return matches


class PromptBuilder:
    """Renders the judge messages of a match: our rubrics, or FastChat's judge prompts when given."""

    def __init__(
        self,
        single: Rubric,
        pairwise: Rubric,
        judge_prompts: dict[str, JudgePrompt] | None = None,
        score_mode: str = "text",
    ) -> None:
        if judge_prompts is not None and score_mode != "text":
            raise ConfigError(
                "FastChat judge prompts ask for an explanation, then [[A]] or [[rating]]: they need --score-mode "
                "text (the logprob mode reads the verdict from the first token; use the built-in rubrics for it)"
            )
        self.single = single
        self.pairwise = pairwise
        self.judge_prompts = judge_prompts
        #: how the rubrics ask for the verdict: a JSON object (text) or the bare label / score (logprob)
        self.score_mode = score_mode

    def check(self, matches: Sequence[Match], *graders: Grader) -> None:
        """Fail before any call when a FastChat prompt a match needs is missing or cannot hold it, or
        when a grader reads another score mode than the prompts ask for."""
        for g in graders:
            if g.score_mode != self.score_mode:
                raise ConfigError(
                    f"the prompts are rendered for score mode '{self.score_mode}', the grader reads '{g.score_mode}'"
                )
        if self.judge_prompts is None:
            return
        for m in matches:
            if m.turn > 2:
                raise ConfigError(
                    f"FastChat judge prompts cover two turns, but question {m.question.question_id!r} has "
                    f"{m.question.n_turns}; judge it with the built-in rubrics (omit --judge-prompts)"
                )
            self._fastchat_prompt(m)

    def _fastchat_prompt(self, m: Match) -> JudgePrompt:
        assert self.judge_prompts is not None
        name = ("single" if isinstance(m, SingleMatch) else "pair") + (
            "-math-v1" if m.reference else ("-v1" if isinstance(m, SingleMatch) else "-v2")
        )
        if m.turn == 2:
            name += "-multi-turn"
        prompt = self.judge_prompts.get(name)
        if prompt is None:
            known = ", ".join(self.judge_prompts)
            raise ConfigError(f"the judge prompts file has no prompt named '{name}' (has: {known})")
        return prompt

    def messages(self, m: Match, swap: bool = False) -> tuple[list[dict[str, str]], str, str]:
        """(messages, prompt name, prompt hash) for a match; ``swap`` shows model_2 first (pairwise game 2)."""
        k = m.turn
        user_turns = m.question.turns[:k]
        ref_text = format_conversation(user_turns, m.reference[:k], "Reference answer") if m.reference else None
        if self.judge_prompts is not None:
            return self._fastchat_messages(m, swap)
        if isinstance(m, SingleMatch):
            values = {
                "conversation": format_conversation(user_turns, m.answer.turns[:k]),
                "question": user_turns[-1],
                "reference": ref_text,
            }
            return self.single.render(values, self.score_mode), self.single.id, self.single.content_hash
        a, b = (m.answer_2, m.answer_1) if swap else (m.answer_1, m.answer_2)
        values = {
            "conversation_a": format_conversation(user_turns, a.turns[:k], "Assistant A"),
            "conversation_b": format_conversation(user_turns, b.turns[:k], "Assistant B"),
            "question": user_turns[-1],
            "reference": ref_text,
        }
        return self.pairwise.render(values, self.score_mode), self.pairwise.id, self.pairwise.content_hash

    def _fastchat_messages(self, m: Match, swap: bool) -> tuple[list[dict[str, str]], str, str]:
        prompt = self._fastchat_prompt(m)
        q = m.question.turns
        ref = m.reference or []
        values: dict[str, str] = {
            "question": q[0],
            "question_1": q[0],
            "question_2": q[1] if len(q) > 1 else "",
            "ref_answer_1": ref[0] if ref else "",
            "ref_answer_2": ref[1] if len(ref) > 1 else "",
        }
        if isinstance(m, SingleMatch):
            t = m.answer.turns
            values.update(answer=t[0], answer_1=t[0], answer_2=t[1] if len(t) > 1 else "")
        else:
            a, b = (m.answer_2, m.answer_1) if swap else (m.answer_1, m.answer_2)
            for side, ans in (("a", a), ("b", b)):
                t = ans.turns
                second = t[1] if len(t) > 1 else ""
                values.update({f"answer_{side}": t[0], f"answer_{side}_1": t[0], f"answer_{side}_2": second})
        try:
            user = prompt.prompt_template.format(**values)
        except (KeyError, IndexError, ValueError) as exc:
            msg = f"{prompt.source}: judge prompt '{prompt.name}' uses an unknown placeholder: {exc}"
            raise ConfigError(msg) from None
        messages = [{"role": "system", "content": prompt.system_prompt}] if prompt.system_prompt.strip() else []
        messages.append({"role": "user", "content": user})
        return messages, prompt.name, prompt.hash


async def judge_matches(
    matches: Sequence[Match],
    builder: PromptBuilder,
    single_grader: Grader,
    pair_grader: Grader,
    *,
    concurrency: int = 8,
    out: str | Path | None = None,
    progress: bool = False,
    executor: Executor | None = None,
) -> list[dict[str, Any]]:
    """Judge every match through :func:`judge.pipeline.run_units`; stream records to ``out``.

    In process (the default executor) at most ``concurrency`` judge calls are in flight, paced by the
    adaptive limiter (rate-limit headers, backoff on 429/503) like ``judge score``. Records come back (and
    are finally rewritten) in match order, so reruns give identical files apart from ``tstamp``; an
    interrupted run leaves ``<out>.partial`` and the cache keeps every call.
    """
    records, _ = await _judge(
        matches, builder, single_grader, pair_grader, executor or InProcess(concurrency), out=out, progress=progress
    )
    return records


async def judge_matches_batched(
    matches: Sequence[Match],
    builder: PromptBuilder,
    single_grader: Grader,
    pair_grader: Grader,
    *,
    out: str | Path | None = None,
    progress: bool = False,
) -> tuple[list[dict[str, Any]], BatchReport]:
    """:func:`judge_matches` through the provider's Batch API (:class:`judge.batch.BatchAPI`, the executor
    ``judge score --batch`` uses): uncached calls become batch input lines (``custom_id`` = the call's cache
    key), are polled and reconciled into the cache, re-asks go into follow-up batches, and a rerun is served
    from the cache or resumes the batches already submitted. Verdicts equal the synchronous path's."""
    from judge.batch import BatchAPI

    executor = BatchAPI(single_grader.batch or pair_grader.batch)
    return await _judge(matches, builder, single_grader, pair_grader, executor, out=out, progress=progress)


class MatchWork:
    """A match's record: its one judge call (single) or its two orders (pairwise), on the bound graders."""

    def __init__(self, matches: Sequence[Match], rendered: list[list[tuple[list[dict[str, str]], str, str]]]):
        self.matches = matches
        self.rendered = rendered

    def __call__(self, graders: Sequence[Grader]) -> Callable[[int], Awaitable[dict[str, Any]]]:
        single, pair = graders

        async def one(i: int) -> dict[str, Any]:
            m = self.matches[i]
            grader = single if isinstance(m, SingleMatch) else pair
            games = _games(m, self.rendered[i])
            verdicts = await asyncio.gather(*(grader.grade_messages(ident, msgs) for ident, msgs in games))
            return _record(m, self.rendered[i], verdicts)

        return one


async def _judge(
    matches: Sequence[Match],
    builder: PromptBuilder,
    single_grader: Grader,
    pair_grader: Grader,
    executor: Executor,
    *,
    out: str | Path | None,
    progress: bool,
) -> tuple[list[dict[str, Any]], Any]:
    builder.check(matches, single_grader, pair_grader)
    rendered = [_render_all(builder, m) for m in matches]  # render errors surface before any call
    executor.check(single_grader)
    records: list[dict[str, Any]] = [{} for _ in matches]

    def keep(i: int, record: dict[str, Any]) -> None:
        records[i] = record

    report = await run_units(
        executor,
        [single_grader, pair_grader],
        MatchWork(matches, rendered),
        range(len(matches)),
        keep,
        n=len(matches),
        out=out,
        progress=progress,
        desc="judgments",
    )
    return records, report


def _games(m: Match, rendered: list[tuple[list[dict[str, str]], str, str]]) -> list[tuple[str, list[dict[str, str]]]]:
    """(item id, messages) of each judge call a match needs: one, or a pair's two orders."""
    if isinstance(m, SingleMatch):
        return [(_ident(m), rendered[0][0])]
    return [(_ident(m) + ":g1", rendered[0][0]), (_ident(m) + ":g2", rendered[1][0])]


def _record(
    m: Match, rendered: list[tuple[list[dict[str, str]], str, str]], verdicts: Sequence[Verdict]
) -> dict[str, Any]:
    (messages, name, prompt_hash) = rendered[0]
    if isinstance(m, SingleMatch):
        return single_record(m, verdicts[0], prompt_name=name, prompt_hash=prompt_hash, user_prompt=_user(messages))
    users = (_user(messages), _user(rendered[1][0]))
    return pair_record(m, verdicts[0], verdicts[1], prompt_name=name, prompt_hash=prompt_hash, user_prompts=users)


def _render_all(builder: PromptBuilder, m: Match) -> list[tuple[list[dict[str, str]], str, str]]:
    if isinstance(m, SingleMatch):
        return [builder.messages(m)]
    return [builder.messages(m, swap=False), builder.messages(m, swap=True)]


def _user(messages: list[dict[str, str]]) -> str:
    return messages[-1]["content"]


def _ident(m: Match) -> str:
    if isinstance(m, SingleMatch):
        return f"{m.question.question_id}:{m.answer.model}:t{m.turn}"
    return f"{m.question.question_id}:{m.answer_1.model}:{m.answer_2.model}:t{m.turn}"


def _judge_field(v: Verdict, prompt_name: str) -> list[str]:
    # FastChat writes judge as [judge model, prompt name]
    return [v.judge_model, prompt_name]


def single_record(
    m: SingleMatch, v: Verdict, *, prompt_name: str, prompt_hash: str, user_prompt: str
) -> dict[str, Any]:
    """A judgment line close to FastChat's ``model_judgment/*_single.jsonl`` (plus our fields)."""
    return {
        "question_id": m.question.question_id,
        "model": m.answer.model,
        "judge": _judge_field(v, prompt_name),
        "user_prompt": user_prompt,
        "judgment": v.raw,
        "score": v.score,
        "turn": m.turn,
        "tstamp": time.time(),
        "status": v.status,
        "error": v.error,
        "score_mode": v.score_mode,
        "score_probs": v.score_probs,
        "category": m.question.category,
        "reference_guided": m.reference is not None,
        "rubric_hash": prompt_hash,
        "cached": v.cached,
        "cost": v.cost_usd,
        "prompt_tokens": v.prompt_tokens,
        "completion_tokens": v.completion_tokens,
        "attempts": v.attempts,
    }


def pair_record(
    m: PairMatch, g1: Verdict, g2: Verdict, *, prompt_name: str, prompt_hash: str, user_prompts: tuple[str, str]
) -> dict[str, Any]:
    """A judgment line close to FastChat's ``model_judgment/*_pair.jsonl``, plus the resolved ``winner``.

    ``g1_winner``/``g2_winner`` are ``model_1``/``model_2``/``tie`` (null when that order is unscored).
    In text score mode ``winner`` is their common value, or ``tie`` when they disagree (``consistent:
    false``). In logprob score mode each order's label probabilities are kept (``g1_probs``/``g2_probs``,
    positional, as the judge gave them) and averaged in the pair's orientation (``probs``: ``model_1``,
    ``model_2``, ``tie``); ``winner`` is the most likely of those. Null when either order is unscored
    (``status: unscored``).
    """
    l1, l2 = (g1.label if g1.ok else None), (g2.label if g2.ok else None)
    w1, w2 = _G1.get(l1 or ""), _G1.get(unswap(l2) or "")
    p1, p2 = (g1.score_probs if g1.ok else None), (g2.score_probs if g2.ok else None)
    by_probs = g1.score_mode == "logprob" and bool(p1) and bool(p2)
    # the two-order rules, shared with judge score --both-orders
    combined = combine_order_probs(p1, p2) if by_probs else combine_orders(l1, l2)
    probs = (
        {_G1.get(k, k): round(q, 6) for k, q in mean_order_probs(p1, p2).items()}  # type: ignore[arg-type]
        if by_probs
        else None
    )
    scored = combined.winner is not None
    errors = [f"g{i}: {v.error}" for i, v in ((1, g1), (2, g2)) if not v.ok]
    costs = [g1.cost_usd, g2.cost_usd]
    k = m.turn
    return {
        "question_id": m.question.question_id,
        "model_1": m.answer_1.model,
        "model_2": m.answer_2.model,
        "g1_winner": w1,
        "g2_winner": w2,
        "winner": _G1.get(combined.winner or ""),
        "consistent": combined.consistent,
        "judge": _judge_field(g1, prompt_name),
        "g1_user_prompt": user_prompts[0],
        "g1_judgment": g1.raw,
        "g2_user_prompt": user_prompts[1],
        "g2_judgment": g2.raw,
        "turn": k,
        "tstamp": time.time(),
        "status": "ok" if scored else "unscored",
        "error": "; ".join(errors) or None,
        "category": m.question.category,
        "reference_guided": m.reference is not None,
        "g1_label": g1.label,
        "g2_label": g2.label,
        "score_mode": g1.score_mode,
        "g1_probs": p1,
        "g2_probs": p2,
        "probs": probs,
        "answer_1_chars": len(m.answer_1.turns[k - 1]),
        "answer_2_chars": len(m.answer_2.turns[k - 1]),
        "rubric_hash": prompt_hash,
        "cached": g1.cached and g2.cached,
        "cost": None if any(c is None for c in costs) else sum(c for c in costs if c is not None),
        "prompt_tokens": g1.prompt_tokens + g2.prompt_tokens,
        "completion_tokens": g1.completion_tokens + g2.completion_tokens,
    }
