"""Report kind ``verdicts``: a ``judge score`` verdict JSONL (one record per Verdict), joined by id with the
items' texts when ``--items`` is given."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from judge.report import svg
from judge.report.section import (
    QUEUE,
    Items,
    ReportKind,
    Review,
    Section,
    Table,
    add_length_bias,
    cell,
    item_texts,
    num,
    review_texts,
)
from judge.stats import wilson
from judge.textfmt import fmt, fmt_ci


def detect(data: Any) -> bool:
    """Verdict records: the first carries ``rubric_hash``, ``status`` and ``score``."""
    return isinstance(data, list) and bool(data) and {"rubric_hash", "status", "score"} <= data[0].keys()


def load(rows: list[dict[str, Any]], source: str, items: Items = None) -> Section:
    """The section of verdict records read from ``source``."""
    return html(rows, source, items)


def rubric_scale(rows: Sequence[dict[str, Any]]) -> tuple[tuple[float, float] | None, str]:
    """The score axis of one rubric's verdicts and where it comes from: 0–1 for pairwise (P(A better)) and
    opinions rubrics (the flagged share); else the built-in rubric of that name whose content hash the verdicts
    carry; else the score labels of logprob mode (``score_probs``); else None (unknown: the data's range)."""
    if any(r.get("label") is not None for r in rows):
        return (0.0, 1.0), "P(first answer better)"
    if any(r.get("details") for r in rows):
        return (0.0, 1.0), "share of opinions flagged"
    first = rows[0] if rows else {}
    name, digest = str(first.get("rubric")), str(first.get("rubric_hash"))
    if name.replace("_", "").replace("-", "").isalnum():
        from judge.rubric import load_rubric

        try:
            rubric = load_rubric(name)
        except Exception:  # noqa: BLE001 -- not a built-in rubric: look elsewhere
            rubric = None
        if rubric is not None and rubric.content_hash == digest and rubric.spec.scale is not None:
            return (float(rubric.spec.scale.min), float(rubric.spec.scale.max)), "the rubric's scale"
    keys = [num(k) for r in rows for k in r.get("score_probs") or {}]
    numeric = [k for k in keys if k is not None]
    if keys and len(numeric) == len(keys):
        return (min(numeric), max(numeric)), "the rubric's scale (from the judge's score labels)"
    return None, ""


def _position_table(s: Section, rows: list[dict[str, Any]], texts: dict[str, dict[str, Any]]) -> None:
    """Pairwise verdicts: position consistency and P(first wins) of ``--both-orders`` runs, and P(longer
    answer wins) when the items' texts are given; the same statistics and warnings as MT-Bench's."""
    from judge.mtbench.results import bias_warnings
    from judge.orders import position_stats
    from judge.runner import length_bias

    ordered = [tuple(o) for r in rows for o in r.get("orders") or []]
    pairwise = any(r.get("label") is not None for r in rows)
    if not ordered and not pairwise:
        return
    table = []
    stats: dict[str, Any] = {}
    if ordered:
        pos = position_stats(ordered)
        stats.update(pos._asdict())
        lo, hi = wilson(pos.consistency, pos.scored_pairs)
        table.append(
            [
                "position consistency",
                fmt_ci(pos.consistency, lo, hi, 3),
                f"{pos.scored_pairs} pairs judged in both orders (as given and swapped)",
            ]
        )
        lo, hi = wilson(pos.p_first_wins, pos.decisive_verdicts)
        table.append(
            [
                "P(first position wins)",
                fmt_ci(pos.p_first_wins, lo, hi, 3),
                f"{pos.decisive_verdicts} decisive verdicts, every order",
            ]
        )
    if texts:
        lengths = {
            k: (len(v["output"]) if isinstance(v.get("output"), str) else None,
                len(v["output_b"]) if isinstance(v.get("output_b"), str) else None)
            for k, v in texts.items()
        }  # fmt: skip
        lb = length_bias(rows, lengths)
        stats.update(p_longer_wins=lb.p_longer_wins, length_decisive_verdicts=lb.decisive)
        value = fmt_ci(lb.p_longer_wins, lb.p_longer_low, lb.p_longer_high, 3)
        table.append(["P(longer answer wins)", value, f"{lb.decisive} decisive picks"])
    if table:
        s.tables.append(
            Table(
                "Judge position and length statistics (Wilson 95% CIs); 0.5 = no bias",
                ["statistic", "value", "over"],
                table,
            )
        )
        s.warnings.extend(bias_warnings(stats))


def _provenance(
    rows: list[dict[str, Any]], rubrics: list[tuple[Any, Any]], ok: list[dict[str, Any]], unscored: list[dict[str, Any]]
) -> list[tuple[str, str]]:
    """Rubrics, judge, settings, counts (with the commonest reasons an item went unscored), tokens and cost."""
    reasons = Counter((r.get("error") or "unscored").split(":")[0][:60] for r in unscored)
    costs = [r.get("cost_usd") for r in rows]
    return [
        ("rubrics", ", ".join(f"{r} ({str(h)[:12]})" for r, h in rubrics)),
        ("judge model", ", ".join(sorted({str(r.get("judge_model")) for r in rows}))),
        ("score mode", ", ".join(sorted({str(r.get("score_mode")) for r in rows}))),
        ("temperature / seed", ", ".join(sorted({f"{r.get('temperature')} / {r.get('seed')}" for r in rows}))),
        (
            "items",
            f"{len(rows)}: {len(ok)} scored, {len(unscored)} unscored"
            + (f" ({', '.join(f'{k}: {v}' for k, v in reasons.most_common(5))})" if reasons else ""),
        ),
        ("from cache", str(sum(bool(r.get("cached")) for r in rows))),
        (
            "tokens",
            f"{sum(r.get('prompt_tokens') or 0 for r in rows)} prompt + "
            f"{sum(r.get('completion_tokens') or 0 for r in rows)} completion",
        ),
        ("cost", "unknown" if any(c is None for c in costs) else f"${sum(c for c in costs if c is not None):.4f}"),
    ]


def _scores(s: Section, rows: list[dict[str, Any]], ok: list[dict[str, Any]]) -> None:
    """The mean score per rubric and judge, and one histogram per rubric on its scale (when known)."""
    per_rubric: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in ok:
        per_rubric[str(r.get("rubric"))][str(r.get("judge_model"))].append(float(r["score"]))
    stat_rows = []
    for rubric, per_judge in per_rubric.items():
        for judge_model, vals in per_judge.items():
            stat_rows.append([rubric, judge_model, str(len(vals)), fmt(sum(vals) / len(vals), 3)])
        scale, where = rubric_scale([r for r in rows if str(r.get("rubric")) == rubric])
        axis = f"x-axis: {where} {fmt(scale[0])}–{fmt(scale[1])}" if scale else "x-axis: the scores' range"
        s.plots.append(
            (
                f"{rubric}: share of scored items per score, one colour per judge; {axis}",
                svg.histogram(per_judge, f"{rubric} score distribution", domain=scale),
            )
        )
    s.tables.append(Table("Scores", ["rubric", "judge", "scored", "mean"], stat_rows))


def _reviews(
    s: Section, ok: list[dict[str, Any]], unscored: list[dict[str, Any]], texts: dict[str, dict[str, Any]]
) -> None:
    """The lowest-scoring items and the unscored ones, each row with the item's texts when given."""

    def review_row(r: dict[str, Any]) -> dict[str, Any]:
        rec = {**texts.get(str(r.get("id")), {}), **r}
        return {
            "id": str(r.get("id")),
            "cells": [
                (str(r.get("id")), str(r.get("id"))),
                (str(r.get("rubric")), ""),
                cell(r.get("score")),
                (str(r.get("status")), ""),
            ],
            "texts": review_texts(rec),
        }

    lowest = sorted(ok, key=lambda r: float(r["score"]))[:QUEUE]
    s.reviews.append(
        Review(
            f"Lowest-scoring items ({len(lowest)} of {len(ok)})",
            ["id", "rubric", "score", "status"],
            [review_row(r) for r in lowest],
            "" if texts else "pass --items DATA to show each item's input and output here",
        )
    )
    if unscored:
        s.reviews.append(
            Review(
                f"Unscored items ({min(len(unscored), QUEUE)} of {len(unscored)})",
                ["id", "rubric", "score", "status"],
                [review_row(r) for r in unscored[:QUEUE]],
            )
        )


def html(rows: list[dict[str, Any]], source: str, items: str | Path | None = None) -> Section:
    """``judge score`` verdicts (one dict per Verdict), joined by id with the items' texts when given."""
    texts = item_texts(items)
    rubrics = sorted({(r.get("rubric"), r.get("rubric_hash")) for r in rows}, key=str)
    ok: list[dict[str, Any]] = []
    unscored: list[dict[str, Any]] = []
    for r in rows:
        (ok if r.get("status") == "ok" and num(r.get("score")) is not None else unscored).append(r)
    s = Section("verdicts", f"judge score: {', '.join(str(r[0]) for r in rubrics)}", source)
    s.provenance = _provenance(rows, rubrics, ok, unscored)
    _scores(s, rows, ok)
    _position_table(s, rows, texts)
    _reviews(s, ok, unscored, texts)
    if texts:
        groups: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
        for r in ok:
            out = texts.get(str(r.get("id")), {}).get("output")
            if isinstance(out, str):
                groups[(str(r.get("rubric")), "")].append((float(len(out)), float(r["score"])))
        add_length_bias(s, groups, "score")
    return s


KIND = ReportKind("verdicts", detect, load)
