"""A pair judged in both orders: how the two verdicts combine, and what they say about the judge.

Written once for ``judge score --both-orders`` and MT-Bench's pairwise games. Labels are positional:
``A`` is the answer shown first, ``B`` the one shown second, ``tie`` neither. The first order shows
the pair as given (A = the first answer), the second order swaps it, so its ``A`` is the second answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

SWAP = {"A": "B", "B": "A", "tie": "tie"}
"""A positional label read back into the other order."""


def unswap(label: str | None) -> str | None:
    """A label given in the swapped order, in the pair's original orientation (A <-> B); None stays None."""
    return SWAP.get(label) if label is not None else None


class Combined(NamedTuple):
    """Two orders' verdict on one pair, in the original orientation."""

    winner: str | None
    """``A``, ``B`` or ``tie``: the common verdict, ``tie`` when the orders disagree; None when either is missing."""
    consistent: bool | None
    """Whether both orders named the same answer (None when either is missing)."""


def combine_orders(first: str | None, second: str | None) -> Combined:
    """Combine the label of the original order (``first``) and of the swapped order (``second``, as shown).

    An inconsistent pair -- the verdict follows the position, not the answers -- becomes a tie, as in
    MT-Bench.
    """
    a, b = first, unswap(second)
    if a is None or b is None:
        return Combined(None, None)
    return Combined(a if a == b else "tie", a == b)


def mean_order_probs(first: Mapping[str, float], second: Mapping[str, float]) -> dict[str, float]:
    """Label probabilities of the two orders, averaged in the pair's original orientation.

    ``first`` are the judge's label probabilities with the pair as given, ``second`` with it swapped
    (positional, as shown). The probability that the first answer wins is the mean of P(A) in the
    first order and P(B) in the second, and so on for every label (``tie`` maps to itself): the
    position-debiased verdict distribution. Labels missing from one order count as 0 there.
    """
    labels = list(dict.fromkeys([*first, *(SWAP.get(label, label) for label in second)]))
    return {label: (first.get(label, 0.0) + second.get(SWAP.get(label, label), 0.0)) / 2 for label in labels}


def combine_order_probs(first: Mapping[str, float] | None, second: Mapping[str, float] | None) -> Combined:
    """Like :func:`combine_orders` for label probabilities: the winner is the most likely label of
    :func:`mean_order_probs` (not a tie by rule when the orders disagree); ``consistent`` still says
    whether each order's own most likely label named the same answer. None when either order is missing."""
    if not first or not second:
        return Combined(None, None)
    mean = mean_order_probs(first, second)
    own = combine_orders(max(first, key=first.__getitem__), max(second, key=second.__getitem__))
    return Combined(max(mean, key=mean.__getitem__), own.consistent)


class PositionStats(NamedTuple):
    """How much a judge's pairwise verdicts follow the order the answers are shown in."""

    scored_pairs: int
    """Pairs with a verdict in both orders."""
    consistency: float | None
    """Share of those pairs whose two verdicts name the same answer."""
    p_first_wins: float | None
    """Share of decisive verdicts (not ties), over every order judged, that pick the answer shown first."""
    decisive_verdicts: int


def position_stats(pairs: Iterable[tuple[str | None, str | None]]) -> PositionStats:
    """Statistics over ``(label in the original order, label in the swapped order)`` per pair, positional;
    a missing order is None (it counts toward P(first wins) for the order that was judged)."""
    scored = consistent = first_wins = decisive = 0
    for first, second in pairs:
        for label in (first, second):
            if label in ("A", "B"):
                decisive += 1
                first_wins += label == "A"
        combined = combine_orders(first, second)
        if combined.consistent is not None:
            scored += 1
            consistent += combined.consistent
    return PositionStats(
        scored_pairs=scored,
        consistency=consistent / scored if scored else None,
        p_first_wins=first_wins / decisive if decisive else None,
        decisive_verdicts=decisive,
    )


def picked_answers(label: str | None, orders: Iterable[Iterable[str | None]] | None) -> list[str]:
    """Per judged order, the answer a decisive verdict picked, in the pair's original orientation (``A`` the
    first answer, ``B`` the second): both orders of a ``--both-orders`` pair (``orders``: [as given, swapped,
    positional]), else the one ``label``. Ties and missing orders pick nothing."""
    picks = [lab for first, second in orders for lab in (first, unswap(second))] if orders else [label]
    return [p for p in picks if p in ("A", "B")]
