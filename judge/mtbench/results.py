"""Tables and bias statistics from judgments files (ours, or FastChat's ``model_judgment`` files).

* single: mean score per model per turn and overall, and per category; unscored judgments are
  counted in their own column and left out of the means (never counted as 0);
* pairwise: wins / losses / ties per model and the win rate (ties count half); the
  position-consistency rate, P(first position wins) and P(longer answer wins), with warnings when
  the judge looks position-biased.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from judge.errors import DataError
from judge.io import read_rows
from judge.orders import position_stats
from judge.textfmt import fmt
from judge.textfmt import format_table as _format_table

EXTREME_POSITION = 0.8
"""P(first position wins) above this (or below 1 minus it) is flagged as position bias."""
MIN_FOR_WARNING = 10
"""Decisive verdicts needed before a bias statistic is flagged."""


def load_judgments(path: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(single rows, pairwise rows) of a judgments JSONL; a row of neither kind is a :class:`DataError`."""
    singles: list[dict[str, Any]] = []
    pairs: list[dict[str, Any]] = []
    for row in read_rows(path):
        d = row.data
        if "model_1" in d and "model_2" in d:
            if "g1_winner" not in d and "winner" not in d:
                raise row.error("pairwise judgment has neither g1_winner/g2_winner nor winner", "winner")
            pairs.append(d)
        elif "model" in d and "score" in d:
            singles.append(d)
        else:
            raise row.error("not a judgment: expected model+score (single) or model_1+model_2 (pairwise)")
    if not singles and not pairs:
        raise DataError("no judgments in file", path=path)
    return singles, pairs


def _score(d: dict[str, Any]) -> float | None:
    """A usable score: null, -1 (FastChat's failure marker) and unscored rows give None."""
    s = d.get("score")
    if d.get("status", "ok") != "ok" or s is None or isinstance(s, bool):
        return None
    s = float(s)
    return None if s == -1 or math.isnan(s) else s


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def single_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per model: mean per turn, overall mean, per-category means, counts of scored and unscored."""
    per: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"turn": defaultdict(list), "category": defaultdict(list), "all": [], "unscored": 0}
    )
    for d in rows:
        m = per[str(d["model"])]
        s = _score(d)
        # every turn and category shows up in the tables, even where nothing was scored
        turn, cat = m["turn"][int(d.get("turn", 1))], m["category"][str(d.get("category") or "unknown")]
        if s is None:
            m["unscored"] += 1
            continue
        turn.append(s)
        cat.append(s)
        m["all"].append(s)
    out: dict[str, Any] = {}
    for model, m in per.items():
        out[model] = {
            "turns": {k: _mean(v) for k, v in sorted(m["turn"].items())},
            "overall": _mean(m["all"]),
            "categories": {c: _mean(v) for c, v in sorted(m["category"].items())},
            "n": len(m["all"]),
            "unscored": m["unscored"],
        }
    return dict(sorted(out.items(), key=lambda kv: -(kv[1]["overall"] or -1)))


def _order_verdicts(d: dict[str, Any]) -> list[tuple[str | None, str, str]]:
    """Per judged order: (model it picked or 'tie' or None, model shown first, model shown second)."""
    m1, m2 = str(d["model_1"]), str(d["model_2"])
    names = {"model_1": m1, "model_2": m2, "tie": "tie"}
    out = []
    if "g1_winner" in d or "g2_winner" in d:
        for key, first, second in (("g1_winner", m1, m2), ("g2_winner", m2, m1)):
            w = d.get(key)
            out.append((names.get(w) if isinstance(w, str) else None, first, second))
    return out


def _position(picked: str | None, first: str, second: str) -> str | None:
    """A picked model name as a positional label: ``A`` if it was shown first, ``B`` if second."""
    if picked is None or picked == "tie":
        return picked
    return "A" if picked == first else "B" if picked == second else None


def _final_winner(d: dict[str, Any]) -> str | None:
    if d.get("status", "ok") != "ok":
        return None
    w = d.get("winner")
    if w is None and "g1_winner" in d:  # FastChat files: resolve as FastChat's show_result does
        g1, g2 = d.get("g1_winner"), d.get("g2_winner")
        if g1 in ("model_1", "model_2", "tie") and g2 in ("model_1", "model_2", "tie"):
            w = g1 if g1 == g2 else "tie"
    return w if w in ("model_1", "model_2", "tie") else None


def pairwise_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Win/loss/tie per model and the judge's position and length statistics."""
    table: dict[str, dict[str, float]] = defaultdict(lambda: {"win": 0, "loss": 0, "tie": 0, "unscored": 0})
    positional: list[tuple[str | None, str | None]] = []  # per pair, each order's pick by position
    longer_wins = length_decisive = 0
    for d in rows:
        m1, m2 = str(d["model_1"]), str(d["model_2"])
        w = _final_winner(d)
        if w is None:
            table[m1]["unscored"] += 1
            table[m2]["unscored"] += 1
        elif w == "tie":
            table[m1]["tie"] += 1
            table[m2]["tie"] += 1
        else:
            win, lose = (m1, m2) if w == "model_1" else (m2, m1)
            table[win]["win"] += 1
            table[lose]["loss"] += 1
        orders = _order_verdicts(d)
        by_position = [_position(picked, first, second) for picked, first, second in orders]
        if by_position:
            positional.append((by_position[0], by_position[1] if len(by_position) > 1 else None))
        chars = {m1: d.get("answer_1_chars"), m2: d.get("answer_2_chars")}
        for picked, first, second in orders:
            if picked is None or picked == "tie":
                continue
            other = second if picked == first else first
            a, b = chars.get(picked), chars.get(other)
            if isinstance(a, int) and isinstance(b, int) and a != b:
                length_decisive += 1
                longer_wins += a > b
    models = {}
    for model, t in table.items():
        games = t["win"] + t["loss"] + t["tie"]
        models[model] = {
            **{k: int(v) for k, v in t.items()},
            "win_rate": (t["win"] + 0.5 * t["tie"]) / games if games else None,
        }
    models = dict(sorted(models.items(), key=lambda kv: -(kv[1]["win_rate"] or -1)))
    position = position_stats(positional)  # the two-order statistics, shared with judge score --both-orders
    stats = {
        "pairs": len(rows),
        "scored_pairs": position.scored_pairs,
        "consistency": position.consistency,
        "p_first_wins": position.p_first_wins,
        "decisive_verdicts": position.decisive_verdicts,
        "p_longer_wins": longer_wins / length_decisive if length_decisive else None,
        "length_decisive_verdicts": length_decisive,
    }
    return {"models": models, "stats": stats, "warnings": bias_warnings(stats)}


def bias_warnings(stats: dict[str, Any]) -> list[str]:
    """Flags for a judge whose verdicts follow the position (or the length) rather than the answers."""
    warns = []
    p, n = stats.get("p_first_wins"), stats.get("decisive_verdicts", 0)
    if p is not None and n >= MIN_FOR_WARNING and not 1 - EXTREME_POSITION <= p <= EXTREME_POSITION:
        side = "first" if p > 0.5 else "second"
        warns.append(
            f"position bias: the judge picks the answer shown {side} in {max(p, 1 - p):.0%} of "
            f"{n} decisive verdicts; pairwise results mostly reflect the order, not the answers"
        )
    c, k = stats.get("consistency"), stats.get("scored_pairs", 0)
    if c is not None and k >= MIN_FOR_WARNING and c < 0.5:
        warns.append(f"low position consistency: only {c:.0%} of {k} pairs get the same verdict in both orders")
    q, n2 = stats.get("p_longer_wins"), stats.get("length_decisive_verdicts", 0)
    if q is not None and n2 >= MIN_FOR_WARNING and not 1 - EXTREME_POSITION <= q <= EXTREME_POSITION:
        warns.append(
            f"length bias: the {'longer' if q > 0.5 else 'shorter'} answer wins {max(q, 1 - q):.0%} of "
            f"{n2} decisive verdicts"
        )
    return warns


def summarize(path: str | Path) -> dict[str, Any]:
    """Everything ``judge mtbench show`` prints, as a JSON-able dict."""
    singles, pairs = load_judgments(path)
    out: dict[str, Any] = {}
    if singles:
        out["single"] = single_summary(singles)
    if pairs:
        out["pairwise"] = pairwise_summary(pairs)
    return out


def _fmt(x: Any) -> str:
    return fmt(x, 2, trim=False)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table (judge.textfmt's), numbers with two decimals so the columns line up."""
    return _format_table(headers, [[_fmt(c) for c in r] for r in rows])


def render(summary: dict[str, Any]) -> str:
    """The text report of :func:`summarize`."""
    parts: list[str] = []
    single = summary.get("single")
    if single:
        turns = sorted({k for m in single.values() for k in m["turns"]})
        rows = [
            [model, *(m["turns"].get(k) for k in turns), m["overall"], m["n"], m["unscored"]]
            for model, m in single.items()
        ]
        parts.append(
            "Single-answer grading: mean score (1-10)\n"
            + format_table(["model", *(f"turn {k}" for k in turns), "overall", "n", "unscored"], rows)
        )
        cats = sorted({c for m in single.values() for c in m["categories"]})
        rows = [[model, *(m["categories"].get(c) for c in cats)] for model, m in single.items()]
        parts.append("Mean score per category\n" + format_table(["model", *cats], rows))
    pw = summary.get("pairwise")
    if pw:
        rows = [
            [model, t["win"], t["loss"], t["tie"], t["unscored"], t["win_rate"]] for model, t in pw["models"].items()
        ]
        parts.append(
            "Pairwise: wins, losses, ties (win rate counts ties half)\n"
            + format_table(["model", "win", "loss", "tie", "unscored", "win rate"], rows)
        )
        s = pw["stats"]
        parts.append(
            "Judge statistics\n"
            f"  pairs: {s['pairs']} ({s['scored_pairs']} scored in both orders)\n"
            f"  position consistency: {_fmt(s['consistency'])}\n"
            f"  P(first position wins): {_fmt(s['p_first_wins'])} over {s['decisive_verdicts']} decisive verdicts\n"
            f"  P(longer answer wins): {_fmt(s['p_longer_wins'])} over {s['length_decisive_verdicts']} verdicts"
        )
        parts.extend(f"WARNING: {w}" for w in pw["warnings"])
    return "\n\n".join(parts)


def radar_plot(summary: dict[str, Any], path: str | Path) -> Path:
    """Mean score per category, one polygon per model (matplotlib, Agg backend, imported here)."""
    single = summary.get("single")
    if not single:
        raise DataError("a radar plot needs single-answer judgments (the file holds only pairwise ones)", path=path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cats = sorted({c for m in single.values() for c, v in m["categories"].items() if v is not None})
    if not cats:
        raise DataError("nothing to plot: no judgment in the file was scored", path=path)
    angles = [2 * math.pi * i / len(cats) for i in range(len(cats))]
    fig = plt.figure(figsize=(6, 6))
    ax = fig.add_subplot(projection="polar")
    for model, m in single.items():
        if m["overall"] is None:
            continue
        # a category the model has no scored judgment in is left as a gap, not drawn as 0
        values = [m["categories"].get(c) or math.nan for c in cats]
        ax.plot([*angles, angles[0]], [*values, values[0]], label=model)
        ax.fill([*angles, angles[0]], [*values, values[0]], alpha=0.1)
    ax.set_xticks(angles)
    ax.set_xticklabels(cats)
    ax.set_ylim(0, 10)
    ax.legend(loc="upper right", bbox_to_anchor=(1.3, 1.1), fontsize="small")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight")
    plt.close(fig)
    return out
