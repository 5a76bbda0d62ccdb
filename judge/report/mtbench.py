"""Report kind ``mtbench``: MT-Bench judgment files (ours or FastChat's), single-answer and pairwise: the
tables of ``judge mtbench show``, the radar and the review of the lowest scores and the order flips."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from judge.report import svg
from judge.report.section import QUEUE, Items, ReportKind, Review, Section, Table, cell, clip, num
from judge.textfmt import fmt


def detect(data: Any) -> bool:
    """Judgment records: the first carries ``question_id`` and ``model`` (single) or ``model_1`` (pairwise)."""
    if not isinstance(data, list) or not data:
        return False
    first = data[0]
    return "question_id" in first and ("model" in first or "model_1" in first)


def load(rows: list[dict[str, Any]], source: str, items: Items = None) -> Section:
    """The section of judgment records read from ``source``: the single ones (model and score) and the pairwise
    ones (model_1 and model_2); ``items`` is not used."""
    singles = [r for r in rows if "model" in r and "score" in r]
    pairs = [r for r in rows if "model_1" in r and "model_2" in r]
    return html(singles, pairs, source)


def text(path: str | Path) -> str:
    """The text report of a judgment file, as ``judge mtbench show`` prints it."""
    from judge.mtbench.results import render, summarize

    return render(summarize(path))


def _distribution(probs: dict[str, Any]) -> str:
    """Label or score probabilities, most likely first: ``3: 41%, 4: 30%, …``."""
    ranked = sorted(((k, num(v) or 0.0) for k, v in probs.items()), key=lambda kv: -kv[1])
    return ", ".join(f"{k}: {v:.0%}" for k, v in ranked)


def _judgment_texts(r: dict[str, Any], fields: Sequence[str]) -> list[tuple[str, str]]:
    """An MT-Bench record's texts for its review row. In logprob mode the judge's completion is its first
    token only (say "1"), while the score is the probability-weighted mean (say 3.9): show the score with the
    distribution it came from, and the raw token labelled as such, never the bare token as "the judgment"."""
    probs = {"judgment": r.get("score_probs"), "g1_judgment": r.get("g1_probs"), "g2_judgment": r.get("g2_probs")}
    out = []
    for k in fields:
        p = probs.get(k)
        if r.get("score_mode") == "logprob" and isinstance(p, dict) and p:
            what = f"score {fmt(num(r.get('score')), 2)}, the probability-weighted mean of" if k == "judgment" else ""
            text = (
                f"logprob mode: {what or 'label'} distribution over the judge's next token: {_distribution(p)}"
                + (f" (raw first token: {clip(r[k], 40)!r})" if r.get(k) else "")
            )
            out.append((k, text))
        elif r.get(k):
            out.append((k, clip(r[k])))
    return out


def _provenance(singles: list[dict[str, Any]], pairs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Judges, prompt hashes, counts and tokens of every judgment."""
    rows = singles + pairs
    judges = sorted(
        {" / ".join(map(str, r["judge"])) if isinstance(r.get("judge"), list) else str(r.get("judge")) for r in rows}
    )
    return [
        ("judge", ", ".join(judges)),
        (
            "prompt hashes",
            ", ".join(sorted({str(r.get("rubric_hash"))[:12] for r in rows if r.get("rubric_hash")})) or "-",
        ),
        (
            "judgments",
            f"{len(singles)} single, {len(pairs)} pairwise; "
            f"{sum(r.get('status', 'ok') != 'ok' for r in rows)} unscored",
        ),
        (
            "tokens",
            f"{sum(r.get('prompt_tokens') or 0 for r in rows)} prompt + "
            f"{sum(r.get('completion_tokens') or 0 for r in rows)} completion",
        ),
    ]


def _single_tables(s: Section, single: dict[str, Any]) -> dict[str, str]:
    """Mean score per turn and per category, and the radar; returns each model's colour (the same in every plot)."""
    turns = sorted({k for m in single.values() for k in m["turns"]})
    s.tables.append(
        Table(
            "Single-answer grading: mean score (1-10)",
            ["model", *(f"turn {k}" for k in turns), "overall", "n", "unscored"],
            [
                [
                    m,
                    *(fmt(v["turns"].get(k), 2) for k in turns),
                    fmt(v["overall"], 2),
                    str(v["n"]),
                    str(v["unscored"]),
                ]
                for m, v in single.items()
            ],
        )
    )
    cats = sorted({c for m in single.values() for c in m["categories"]})
    s.tables.append(
        Table(
            "Mean score per category",
            ["model", *cats],
            [[m, *(fmt(v["categories"].get(c), 2) for c in cats)] for m, v in single.items()],
        )
    )
    colors = {str(m): svg.color(i) for i, m in enumerate(single)}  # one colour per model in every plot
    s.plots.append(
        (
            "Mean score (1–10) per category, one polygon per model: further out is better; a dent is a weak "
            "category",
            svg.radar(
                cats,
                {m: [v["categories"].get(c) for c in cats] for m, v in single.items()},
                "MT-Bench radar",
                colors=colors,
            ),
        )
    )
    return colors


def _singles(s: Section, singles: list[dict[str, Any]]) -> None:
    """Single-answer grading: the tables, the radar, the score histogram and the lowest-scoring judgments."""
    from judge.mtbench.results import single_summary

    single = single_summary(singles)
    colors = _single_tables(s, single)
    scored = [r for r in singles if r.get("status", "ok") == "ok" and num(r.get("score")) not in (None, -1.0)]
    per_model: dict[str, list[float]] = {str(m): [] for m in single}
    for r in scored:
        per_model.setdefault(str(r["model"]), []).append(float(r["score"]))
    s.plots.append(
        (
            "Share of judgments per score on MT-Bench's 1–10 scale, one colour per model (as in the radar)",
            svg.histogram(
                {m: v for m, v in per_model.items() if v},
                "MT-Bench score distribution",
                domain=(1, 10),
                colors=colors,
            ),
        )
    )
    lowest = sorted(scored, key=lambda r: float(r["score"]))[:QUEUE]
    s.reviews.append(
        Review(
            f"Lowest-scoring judgments ({len(lowest)})",
            ["id", "model", "turn", "category", "score"],
            [
                {
                    "id": f"{r['question_id']}:{r['model']}:t{r.get('turn', 1)}",
                    "cells": [
                        (f"{r['question_id']}:{r['model']}:t{r.get('turn', 1)}", ""),
                        (str(r["model"]), ""),
                        cell(r.get("turn")),
                        (str(r.get("category")), ""),
                        cell(r.get("score")),
                    ],
                    "texts": _judgment_texts(r, ("user_prompt", "judgment", "error")),
                }
                for r in lowest
            ],
        )
    )


def _flips(pairs: list[dict[str, Any]]) -> Review | None:
    """The pairs whose verdict flips when the answers swap places, or that went unscored; None without any."""
    flips = [r for r in pairs if r.get("consistent") is False or r.get("status", "ok") != "ok"][:QUEUE]
    if not flips:
        return None
    return Review(
        f"Pairs whose verdict flips with the order, or unscored ({len(flips)})",
        ["id", "model 1", "model 2", "g1", "g2"],
        [
            {
                "id": f"{r['question_id']}:{r['model_1']}:{r['model_2']}:t{r.get('turn', 1)}",
                "cells": [
                    (f"{r['question_id']}:{r['model_1']}:{r['model_2']}", ""),
                    (str(r["model_1"]), ""),
                    (str(r["model_2"]), ""),
                    (str(r.get("g1_winner")), ""),
                    (str(r.get("g2_winner")), ""),
                ],
                "texts": _judgment_texts(r, ("g1_judgment", "g2_judgment", "error")),
            }
            for r in flips
        ],
    )


def _pairs(s: Section, pairs: list[dict[str, Any]]) -> None:
    """Pairwise judgments: wins, losses and ties, the judge's position and length statistics, and the flips."""
    from judge.mtbench.results import pairwise_summary

    pw = pairwise_summary(pairs)
    s.tables.append(
        Table(
            "Pairwise: wins, losses, ties (win rate counts ties half)",
            ["model", "win", "loss", "tie", "unscored", "win rate"],
            [
                [m, str(t["win"]), str(t["loss"]), str(t["tie"]), str(t["unscored"]), fmt(t["win_rate"], 3)]
                for m, t in pw["models"].items()
            ],
        )
    )
    st = pw["stats"]
    s.tables.append(
        Table(
            "Judge position and length statistics",
            ["statistic", "value", "over"],
            [
                [
                    "position consistency",
                    fmt(st["consistency"], 3),
                    f"{st['scored_pairs']} pairs judged in both orders",
                ],
                [
                    "P(first position wins)",
                    fmt(st["p_first_wins"], 3),
                    f"{st['decisive_verdicts']} decisive verdicts",
                ],
                [
                    "P(longer answer wins)",
                    fmt(st["p_longer_wins"], 3),
                    f"{st['length_decisive_verdicts']} verdicts",
                ],
            ],
        )
    )
    s.warnings = list(pw["warnings"])
    flips = _flips(pairs)
    if flips is not None:
        s.reviews.append(flips)


def html(singles: list[dict[str, Any]], pairs: list[dict[str, Any]], source: str) -> Section:
    """MT-Bench judgment files (ours or FastChat's): the tables of ``judge mtbench show`` and the radar."""
    s = Section("mtbench", f"MT-Bench judgments: {Path(source).name}", source)
    s.provenance = _provenance(singles, pairs)
    if singles:
        _singles(s, singles)
    if pairs:
        _pairs(s, pairs)
    return s


KIND = ReportKind("mtbench", detect, load, text=text)
