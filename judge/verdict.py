"""The verdict schema and how a completion becomes one.

A completion that cannot be read as a score on the rubric's scale is never turned into 0: the
grader re-asks with the parse error, and after that the item is ``unscored`` with the reason and
the raw completion kept.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from judge.errors import VerdictParseError
from judge.rubric import Rubric

PAIRWISE_SCORE = {"A": 1.0, "B": 0.0, "tie": 0.5}
"""Pairwise verdicts as numbers: the probability-like score that answer A is the better one."""


class Verdict(BaseModel):
    """One judged item. Field names are a contract: later tooling (calibration, CI gates) reads them."""

    model_config = ConfigDict(extra="forbid")

    id: str
    rubric: str
    rubric_hash: str
    judge_model: str
    score_mode: str
    score: float | None = Field(description="The score on the rubric's scale; null when unscored (never 0).")
    status: Literal["ok", "unscored"]
    reasoning: str | None = None
    error: str | None = Field(None, description="Why the item is unscored (or null).")
    raw: str | None = Field(None, description="The judge's last completion, verbatim.")
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    latency_ms: float = 0.0
    cached: bool = False
    temperature: float = 0.0
    seed: int = 0
    label: str | None = Field(None, description="Pairwise rubrics: the chosen label (A, B, tie).")
    score_probs: dict[str, float] | None = Field(None, description="Logprob mode: probability of each score.")
    attempts: int = Field(1, description="Judge calls made for this item, re-asks included.")

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class Parsed(BaseModel):
    """A verdict read from a completion."""

    score: float
    reasoning: str | None = None
    label: str | None = None
    score_probs: dict[str, float] | None = None


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)
_NUM = r"(-?\d+(?:\.\d+)?)"
_SCORE_PATTERNS = [
    re.compile(r"\[\[\s*" + _NUM + r"\s*\]\]"),  # MT-Bench: Rating: [[7]]
    re.compile(r'"?(?:score|rating|grade)"?\s*[:=]\s*"?' + _NUM, re.IGNORECASE),
    re.compile(r"\b" + _NUM + r"\s*/\s*\d+\b"),  # 4/5
    re.compile(r"^\s*" + _NUM + r"\s*\.?\s*$", re.MULTILINE),  # a bare number on its own line
]
_LABEL_PATTERNS = [
    re.compile(r"\[\[\s*(A|B|C|tie)\s*\]\]", re.IGNORECASE),  # FastChat: [[A]] [[B]] [[C]]=tie
    re.compile(r'"?(?:verdict|winner|choice)"?\s*[:=]\s*"?\s*(A|B|tie)\b', re.IGNORECASE),
]


def _json_candidates(text: str) -> list[dict[str, Any]]:
    """Every JSON object found in ``text`` (fenced blocks first, then brace-balanced spans), in order."""
    found: list[dict[str, Any]] = []
    spans = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for span in spans:
        i = span.find("{")
        while i != -1:
            try:
                obj, end = decoder.raw_decode(span, i)
            except json.JSONDecodeError:
                i = span.find("{", i + 1)
                continue
            if isinstance(obj, dict):
                found.append(obj)
            i = span.find("{", end)
    return found


def parse_verdict(text: str, rubric: Rubric) -> Parsed:
    """Read a verdict from a completion: JSON first, then the *last* score-like match, scale-checked.

    Raises :class:`VerdictParseError` with a reason the judge can act on when re-asked.
    """
    if rubric.spec.kind == "pairwise":
        return _parse_pairwise(text, rubric)
    assert rubric.spec.scale is not None
    lo, hi = rubric.spec.scale.min, rubric.spec.scale.max
    if not text or not text.strip():
        raise VerdictParseError("the completion is empty", raw=text)
    problems: list[str] = []
    for obj in reversed(_json_candidates(text)):
        key = next((k for k in ("score", "rating", "grade") if k in obj), None)
        if key is None:
            continue
        value = _as_number(obj[key])
        if value is None:
            problems.append(f"'{key}' is {obj[key]!r}, not a number")
            continue
        if not lo <= value <= hi:
            problems.append(f"score {value:g} is outside the scale {lo}..{hi}")
            continue
        reasoning = obj.get("reasoning") or obj.get("reason") or obj.get("explanation")
        return Parsed(score=value, reasoning=str(reasoning) if reasoning is not None else None)
    for pattern in _SCORE_PATTERNS:
        matches = list(pattern.finditer(text))
        if not matches:
            continue
        value = float(matches[-1].group(1))
        if lo <= value <= hi:
            reasoning = text[: matches[-1].start()].strip() or None
            return Parsed(score=value, reasoning=reasoning)
        problems.append(f"score {value:g} is outside the scale {lo}..{hi}")
        break
    detail = "; ".join(problems) if problems else "no score found"
    raise VerdictParseError(f"could not read a score from {lo} to {hi}: {detail}", raw=text)


def _parse_pairwise(text: str, rubric: Rubric) -> Parsed:
    assert rubric.spec.choices is not None
    labels = {c.lower(): c for c in rubric.spec.choices}
    if not text or not text.strip():
        raise VerdictParseError("the completion is empty", raw=text)
    for obj in reversed(_json_candidates(text)):
        key = next((k for k in ("verdict", "winner", "choice") if k in obj), None)
        if key is None:
            continue
        label = labels.get(str(obj[key]).strip().strip("[]").lower())
        if label is None:
            continue
        reasoning = obj.get("reasoning") or obj.get("reason")
        return Parsed(
            score=PAIRWISE_SCORE.get(label, 0.5), label=label, reasoning=str(reasoning) if reasoning else None
        )
    for pattern in _LABEL_PATTERNS:
        matches = list(pattern.finditer(text))
        if matches:
            raw_label = matches[-1].group(1).lower()
            label = "tie" if raw_label == "c" else labels.get(raw_label)
            if label is not None:
                reasoning = text[: matches[-1].start()].strip() or None
                return Parsed(score=PAIRWISE_SCORE.get(label, 0.5), label=label, reasoning=reasoning)
    options = ", ".join(rubric.spec.choices)
    raise VerdictParseError(f"no verdict found (expected one of {options})", raw=text)


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        m = re.fullmatch(r"\s*" + _NUM + r"\s*(?:/\s*\d+)?\s*", value)
        return float(m.group(1)) if m else None
    return None


def score_from_logprobs(
    score_logprobs: dict[str, float] | None,
    top_logprobs: list[dict[str, float]] | None,
    rubric: Rubric,
) -> Parsed:
    """G-Eval: the probability-weighted mean over the scale's score tokens.

    Uses exact per-score log-probabilities when the provider computed them (local models), else
    the top alternatives at the first completion position (OpenAI-compatible servers). Raises
    :class:`VerdictParseError` when there are none -- never a silent fall back to text.
    """
    assert rubric.spec.scale is not None
    points = [str(p) for p in rubric.spec.scale.points]
    if score_logprobs:
        mass = {p: math.exp(score_logprobs[p]) for p in points if p in score_logprobs}
    elif top_logprobs:
        mass = {}
        for token, lp in top_logprobs[0].items():
            key = token.strip()
            if key in points:
                mass[key] = mass.get(key, 0.0) + math.exp(lp)
    else:
        raise VerdictParseError(
            "the provider returned no logprobs, so the logprob score mode cannot score this item "
            "(use --score-mode text, or a server that returns logprobs)"
        )
    total = sum(mass.values())
    if total <= 0:
        raise VerdictParseError("no score token among the returned top logprobs")
    probs = {p: mass[p] / total for p in points if p in mass}
    value = sum(float(p) * q for p, q in probs.items())
    best = max(probs, key=lambda p: probs[p])
    reasoning = f"probability-weighted score over {len(probs)} score tokens (mass {total:.3f}); most likely {best}"
    return Parsed(score=value, reasoning=reasoning, score_probs={p: round(q, 6) for p, q in probs.items()})


def reask_message(error: str, rubric: Rubric, score_mode: str) -> str:
    """The follow-up sent after an unreadable verdict (instructor-style re-ask)."""
    return f"Your previous answer could not be read: {error}.\n\n{rubric.format_instructions(score_mode)}"
