"""Judging one item more than once: repeats with different seeds, and a pair in both orders.

``judge score --repeats N`` judges every item N times, repeat *r* with seed ``seed + r`` (each a
different cache entry), and writes **one verdict per item**: ``score`` is the mean of the repeats that
scored, ``repeat_scores`` lists every repeat's score (null where unscored), ``spread`` is max - min,
``flipped`` says whether the verdict itself changed (the label, or the score rounded to the scale).
``judge score -r pairwise --both-orders`` judges each pair as given and swapped; the two verdicts
combine as MT-Bench's do (:mod:`judge.orders`): text verdicts by FastChat's rule (orders that disagree make a
tie), label probabilities (logprob, reason) averaged in the pair's orientation, the most likely label winning.
Each order's labels are kept in ``orders``, its probabilities in ``order_probs``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel

from judge.orders import combine_order_probs, combine_orders, mean_order_probs, position_stats
from judge.verdict import PAIRWISE_SCORE, Verdict

SWAPPED_FIELDS = ("output", "output_b")
"""The two answers of a pairwise item, exchanged for the second order."""


def swapped_values(values: dict[str, Any]) -> dict[str, Any]:
    """An item's template values with its two answers exchanged (the pair's second order)."""
    a, b = SWAPPED_FIELDS
    return {**values, a: values.get(b), b: values.get(a)}


def _sum_costs(verdicts: Sequence[Verdict]) -> float | None:
    costs = [v.cost_usd for v in verdicts]
    return None if any(c is None for c in costs) else sum(c for c in costs if c is not None)


def _merged(first: Verdict, parts: Sequence[Verdict], **update: Any) -> Verdict:
    """``first`` with the totals of ``parts`` (tokens, cost, attempts, latency, cached) and ``update``."""
    totals = {
        "prompt_tokens": sum(v.prompt_tokens for v in parts),
        "completion_tokens": sum(v.completion_tokens for v in parts),
        "cost_usd": _sum_costs(parts),
        "attempts": sum(v.attempts for v in parts),
        "latency_ms": round(sum(v.latency_ms for v in parts), 3),
        "cached": all(v.cached for v in parts),
    }
    return first.model_copy(update={**totals, **update})


def combine_order_verdicts(v1: Verdict, v2: Verdict) -> Verdict:
    """One verdict from a pair judged as given (``v1``) and swapped (``v2``, its labels positional).

    With label probabilities in both orders, they are averaged in the pair's orientation and the most
    likely label wins (the score is the expected one under that average); text verdicts keep their common
    label when consistent and become a tie when not. If either order is unscored, so is the pair, with
    that order's error (its cause decides the exit code).
    """
    l1, l2 = (v1.label if v1.ok else None), (v2.label if v2.ok else None)
    p1, p2 = (v1.score_probs if v1.ok else None), (v2.score_probs if v2.ok else None)
    by_probs = bool(p1) and bool(p2)
    combined = combine_order_probs(p1, p2) if by_probs else combine_orders(l1, l2)
    probs = {k: round(q, 6) for k, q in mean_order_probs(p1, p2).items()} if p1 and p2 else None
    if combined.winner is None:
        score = None
    elif probs is not None:
        score = sum(PAIRWISE_SCORE.get(label, 0.5) * q for label, q in probs.items())
    else:
        score = PAIRWISE_SCORE.get(combined.winner, 0.5)
    failed = next((v for v in (v1, v2) if not v.ok), None)
    error = None if failed is None else f"{failed.error} (in the {'A/B' if failed is v1 else 'B/A'} order)"
    return _merged(
        v1,
        [v1, v2],
        label=combined.winner,
        score=score,
        status="ok" if combined.winner is not None else "unscored",
        error=error,
        reasoning=v1.reasoning if combined.winner is not None else None,
        score_probs=probs,
        orders=[[l1, l2]],
        order_probs=[[p1, p2]] if p1 or p2 else None,
        consistent=combined.consistent,
    )


def verdict_key(v: Verdict) -> str | None:
    """What counts as "the verdict" when asking whether repeats agree: the label, else the most likely
    score (logprob mode), else the score rounded to a whole point."""
    if not v.ok or v.score is None:
        return None
    if v.label is not None:
        return v.label
    if v.score_probs:
        return max(v.score_probs, key=lambda k: v.score_probs[k])  # type: ignore[index]
    return str(round(v.score))


def combine_repeats(verdicts: Sequence[Verdict]) -> Verdict:
    """One verdict from an item's repeats: the mean score of those that scored (see the module docstring).

    Unscored when no repeat scored (with the first repeat's error); a repeat that failed while others
    scored is visible as a null in ``repeat_scores``, and its error is kept.
    """
    ok = [v for v in verdicts if v.ok and v.score is not None]
    keys = {verdict_key(v) for v in ok}
    if not ok:
        first = verdicts[0]
        return _merged(
            first,
            verdicts,
            repeat_scores=[None] * len(verdicts),
            orders=_orders(verdicts),
            order_probs=_order_probs(verdicts),
        )
    labels = Counter(v.label for v in ok if v.label is not None)
    scores = [float(v.score) for v in ok if v.score is not None]
    failed = [v for v in verdicts if not v.ok]
    return _merged(
        ok[0],
        verdicts,
        score=sum(scores) / len(scores),
        label=labels.most_common(1)[0][0] if labels else None,
        status="ok",
        error=(f"{len(failed)} of {len(verdicts)} repeats unscored: {failed[0].error}" if failed else None),
        score_probs=None if len(verdicts) > 1 else ok[0].score_probs,
        seed=verdicts[0].seed,
        repeat_scores=[v.score if v.ok else None for v in verdicts],
        spread=max(scores) - min(scores),
        flipped=len(keys) > 1,
        orders=_orders(verdicts),
        order_probs=_order_probs(verdicts),
        consistent=None,
    )


def _orders(verdicts: Iterable[Verdict]) -> list[list[str | None]] | None:
    pairs = [pair for v in verdicts for pair in (v.orders or [])]
    return pairs or None


def _order_probs(verdicts: Sequence[Verdict]) -> list[list[dict[str, float] | None]] | None:
    """Each repeat's pair of order probabilities, aligned with :func:`_orders` (None where it had none)."""
    if not any(v.order_probs for v in verdicts):
        return None
    return [pair for v in verdicts for pair in (v.order_probs or [[None, None]] * len(v.orders or []))]


class TrialStats(BaseModel):
    """What repeats and both orders measured over a run (None where the run did not use them)."""

    repeats: int = 1
    flip_rate: float | None = None
    """Share of items scored at least twice whose verdict changed across repeats."""
    mean_spread: float | None = None
    """Mean over those items of max - min of the repeats' scores."""
    consistency: float | None = None
    """--both-orders: share of pairs (judged in both orders) whose two verdicts agree."""
    p_first_wins: float | None = None
    """--both-orders: share of decisive verdicts, over every order, that pick the answer shown first."""
    scored_pairs: int | None = None


def trial_stats(verdicts: Iterable[Verdict]) -> TrialStats:
    """Flip rate, spread and position statistics of a run's verdicts."""
    tally = TrialTally()
    for v in verdicts:
        tally.add(v)
    return tally.stats()


class TrialTally:
    """:func:`trial_stats` one verdict at a time, keeping counts only (a streamed run holds no verdicts)."""

    def __init__(self) -> None:
        self.used = False  # any verdict with repeats or orders
        self.repeats: int | None = None  # most repeats of a verdict; None: no verdict had repeats
        self.measured = 0
        self.flips = 0
        self.spread = 0.0
        self.pairs: Counter[tuple[str | None, str | None]] = Counter()

    def add(self, v: Verdict) -> None:
        if v.repeat_scores is not None:
            self.used = True
            self.repeats = max(self.repeats or 0, len(v.repeat_scores))
            if sum(s is not None for s in v.repeat_scores) >= 2:
                self.measured += 1
                self.flips += bool(v.flipped)
                self.spread += v.spread or 0.0
        for p in v.orders or []:
            self.used = True
            self.pairs[(p[0], p[1])] += 1

    def stats(self) -> TrialStats:
        stats = TrialStats()
        if self.repeats is not None:
            stats.repeats = self.repeats
            if self.measured:
                stats.flip_rate = self.flips / self.measured
                stats.mean_spread = self.spread / self.measured
        if self.pairs:
            pos = position_stats(pair for pair, count in self.pairs.items() for _ in range(count))
            stats.consistency, stats.p_first_wins = pos.consistency, pos.p_first_wins
            stats.scored_pairs = pos.scored_pairs
        return stats
