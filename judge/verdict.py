"""The verdict schema and how a completion becomes one.

A completion that cannot be read as a score on the rubric's scale is never turned into 0: the
grader re-asks with the parse error, and after that the item is ``unscored`` with the reason and
the raw completion kept.

Opinions rubrics (toxicity, bias) are read from JSON only: the judge lists each opinion with a
yes/no verdict, and the score is computed here from that list -- the fraction flagged, 0.0 when the
output states no opinion, 1/0 with ``strict`` -- so the judge never does the arithmetic.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from judge.errors import VerdictParseError
from judge.rubric import OPINION_VERDICTS, Rubric

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
    score_probs: dict[str, float] | None = Field(
        None, description="Logprob mode: probability of each score (pairwise: of each label, e.g. A / B / tie)."
    )
    details: dict[str, Any] | None = Field(
        None,
        description="Opinions rubrics: the listed opinions, each with its verdict and reason, and the counts.",
    )
    attempts: int = Field(1, description="Judge calls made for this item, re-asks included.")
    repeat_scores: list[float | None] | None = Field(
        None, description="--repeats: each repeat's score in seed order (null where unscored); score is their mean."
    )
    spread: float | None = Field(None, description="--repeats: max - min of the repeats' scores.")
    flipped: bool | None = Field(
        None, description="--repeats: whether the verdict (label, or score rounded to the scale) changed across them."
    )
    orders: list[list[str | None]] | None = Field(
        None,
        description="--both-orders: per repeat, [label with the pair as given, label with it swapped], each as the "
        "judge gave it (A = the answer shown first); null where that order is unscored.",
    )
    consistent: bool | None = Field(
        None,
        description="--both-orders: whether both orders named the same answer (text verdicts: inconsistent -> tie).",
    )
    order_probs: list[list[dict[str, float] | None]] | None = Field(
        None,
        description="--both-orders with label probabilities (logprob, reason): per repeat, [probabilities with the "
        "pair as given, with it swapped], positional as the judge gave them; score_probs is their average in the "
        "pair's orientation, and its most likely label the verdict.",
    )

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def unscored_cause(self) -> Literal["transport", "parse"] | None:
        """Why an unscored item has no score (see :func:`unscored_cause`); None when scored."""
        return None if self.status == "ok" else unscored_cause(self.error)


TRANSPORT_ERROR_PREFIXES: tuple[str, ...] = (
    "RateLimitError",
    "ServerError",
    "ProviderTimeoutError",
    "ProviderConnectionError",
    "BadResponseError",
    "ProviderError",
    "ClientRequestError",
    "ContextLengthError",
    "EndpointUnreachableError",
    "request rejected",
    "internal error:",  # the call itself failed (a bug or an unforeseen failure), not the reading of a verdict
)
"""How the grader begins the error of an item the server never answered usably (after every retry)."""


def unscored_cause(error: str | None) -> Literal["transport", "parse"]:
    """Sort an unscored item's error into the two causes the exit code distinguishes.

    ``transport``: no usable completion came back after every retry (server errors, timeouts, refused
    connections, rejected requests) -- the run is incomplete, and rerunning may score the item.
    ``parse``: the judge answered, but the answer could not be read as a verdict on the scale (kept
    with its raw completion) -- a property of the judge, tolerated up to ``--max-unscored``.
    """
    text = (error or "").lstrip()
    if text.startswith(TRANSPORT_ERROR_PREFIXES) or _PROVIDER_ERROR_AFTER.match(text):
        return "transport"
    return "parse"


# any provider error the grader reports as "<SomeError> after N attempts: ...", including ones added later
_PROVIDER_ERROR_AFTER = re.compile(r"\w+Error after \d+ attempt")


class Parsed(BaseModel):
    """A verdict read from a completion."""

    score: float
    reasoning: str | None = None
    label: str | None = None
    score_probs: dict[str, float] | None = None
    details: dict[str, Any] | None = None


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)
_NUM = r"(-?\d+(?:\.\d+)?)"
_OUT_OF = r"(?:\s*/\s*(\d+))?"  # an optional denominator: 4/5, 7/10
_SCORE_PATTERNS = [
    re.compile(r"\[\[\s*" + _NUM + _OUT_OF + r"\s*\]\]"),  # MT-Bench: Rating: [[7]]
    re.compile(r'"?(?:score|rating|grade)"?\s*[:=]\s*"?' + _NUM + _OUT_OF, re.IGNORECASE),
    re.compile(r"(?<![\d.])" + _NUM + r"\s*/\s*(\d+)\b"),  # 4/5
]
# a bare number on its own line: only when nothing above matched anywhere
_BARE_NUMBER = re.compile(r"^\s*" + _NUM + r"\s*\.?\s*$", re.MULTILINE)
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
    return _TEXT_READERS[rubric.kind_info.answer](text, rubric)


def _parse_score(text: str, rubric: Rubric) -> Parsed:
    """A score on the rubric's scale (single rubrics)."""
    assert rubric.spec.scale is not None
    lo, hi = rubric.spec.scale.min, rubric.spec.scale.max
    if not text or not text.strip():
        raise VerdictParseError("the completion is empty", raw=text)
    problems: list[str] = []
    for obj in reversed(_json_candidates(text)):
        key = next((k for k in ("score", "rating", "grade") if k in obj), None)
        if key is None:
            continue
        value, out_of = _as_number(obj[key])
        if value is None:
            problems.append(f"'{key}' is {obj[key]!r}, not a number")
            continue
        problem = _check_score(value, out_of, lo, hi)
        if problem:
            problems.append(problem)
            continue
        reasoning = obj.get("reasoning") or obj.get("reason") or obj.get("explanation")
        return Parsed(score=value, reasoning=str(reasoning) if reasoning is not None else None)
    matches = sorted((m for p in _SCORE_PATTERNS for m in p.finditer(text)), key=lambda m: m.start())
    if not matches:
        matches = list(_BARE_NUMBER.finditer(text))
    for m in reversed(matches):  # bind to the last valid score
        value, out_of = float(m.group(1)), (int(m.group(2)) if m.re.groups > 1 and m.group(2) else None)
        problem = _check_score(value, out_of, lo, hi)
        if problem is None:
            return Parsed(score=value, reasoning=text[: m.start()].strip() or None)
        if problem not in problems:
            problems.append(problem)
    detail = "; ".join(problems) if problems else "no score found"
    raise VerdictParseError(f"could not read a whole-number score from {lo} to {hi}: {detail}", raw=text)


def _check_score(value: float, out_of: int | None, lo: int, hi: int) -> str | None:
    """Why ``value`` is not a score on the scale ``lo..hi`` (None when it is)."""
    if out_of is not None and out_of != hi:
        return f"score {value:g}/{out_of} is on another scale than {lo} to {hi}"
    if value != int(value):
        return f"score {value:g} is not a whole number"
    if not lo <= value <= hi:
        return f"score {value:g} is outside the scale {lo}..{hi}"
    return None


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


def _parse_opinions(text: str, rubric: Rubric) -> Parsed:
    """The last JSON object with a well-formed ``opinions`` list; the score is computed from it."""
    if not text or not text.strip():
        raise VerdictParseError("the completion is empty", raw=text)
    flag = rubric.spec.flag or "flagged"
    problems: list[str] = []
    for obj in reversed(_json_candidates(text)):
        if "opinions" not in obj:
            continue
        try:
            opinions = _read_opinions(obj["opinions"], flag)
        except ValueError as exc:
            if str(exc) not in problems:
                problems.append(str(exc))
            continue
        flagged = [o for o in opinions if o["verdict"] == "yes"]
        n, k = len(opinions), len(flagged)
        # the fraction flagged (0.0 when there is no opinion to flag); strict: any flagged opinion is 1
        score = (1.0 if k else 0.0) if rubric.spec.strict else (k / n if n else 0.0)
        summary = f"{k} of {n} opinion{'s' if n != 1 else ''} {flag}" + ("." if n else " (the output states none).")
        listed = [f"- {o['opinion']!r}" + (f": {o['reason']}" if o["reason"] else "") for o in flagged]
        judge_reasoning = obj.get("reasoning") or obj.get("reason")
        reasoning = "\n".join([*([str(judge_reasoning).strip(), ""] if judge_reasoning else []), summary, *listed])
        details = {"flag": flag, "strict": rubric.spec.strict, "n_opinions": n, "n_flagged": k, "opinions": opinions}
        return Parsed(score=score, reasoning=reasoning, details=details)
    detail = "; ".join(problems) if problems else 'no JSON object with an "opinions" list found'
    raise VerdictParseError(f"could not read the list of opinions: {detail}", raw=text)


def _read_opinions(value: Any, flag: str) -> list[dict[str, Any]]:
    """Normalised opinion entries; ValueError naming the first bad entry, in words the judge can act on."""
    if not isinstance(value, list):
        raise ValueError(f'"opinions" is {json.dumps(value)[:80]}, not a list (use [] when there are none)')
    allowed = " or ".join(f'"{v}"' for v in OPINION_VERDICTS)
    out: list[dict[str, Any]] = []
    for i, entry in enumerate(value, 1):
        if not isinstance(entry, dict):
            raise ValueError(f'opinion {i} is {json.dumps(entry)[:80]}, not an object with "opinion" and "verdict"')
        opinion = entry.get("opinion")
        if not isinstance(opinion, str) or not opinion.strip():
            raise ValueError(f'opinion {i} has no "opinion" text')
        key = next((k for k in ("verdict", flag) if k in entry), None)
        if key is None:
            raise ValueError(f'opinion {i} has no "verdict" ({allowed}: is it {flag}?)')
        verdict = _yes_no(entry[key])
        if verdict is None:
            raise ValueError(f'opinion {i} has "{key}": {json.dumps(entry[key])[:40]}, not {allowed}')
        reason = entry.get("reason")
        out.append({"opinion": opinion.strip(), "verdict": verdict, "reason": str(reason).strip() if reason else None})
    return out


def _yes_no(value: Any) -> str | None:
    """A per-opinion verdict as "yes" or "no"; booleans count, anything else is None (unreadable)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str) and value.strip().lower() in OPINION_VERDICTS:
        return value.strip().lower()
    return None


def _as_number(value: Any) -> tuple[float | None, int | None]:
    """A JSON score as (number, denominator): 4 -> (4, None), "4/5" -> (4, 5), "high" -> (None, None)."""
    if isinstance(value, bool):
        return None, None
    if isinstance(value, int | float):
        return (float(value) if math.isfinite(value) else None), None
    if isinstance(value, str):
        m = re.fullmatch(r"\s*" + _NUM + _OUT_OF + r"\s*", value)
        if m:
            return float(m.group(1)), int(m.group(2)) if m.group(2) else None
    return None, None


def score_from_logprobs(
    score_logprobs: dict[str, float] | None,
    top_logprobs: list[dict[str, float]] | None,
    rubric: Rubric,
) -> Parsed:
    """G-Eval: the probability-weighted mean over the scale's score tokens (a pairwise rubric: the label
    distribution, :func:`_label_from_logprobs`).

    Uses exact per-score log-probabilities when the provider computed them (local models), else
    the top alternatives at the first completion position (OpenAI-compatible servers). Raises
    :class:`VerdictParseError` when there are none -- never a silent fall back to text.
    """
    reader = _LOGPROB_READERS.get(rubric.kind_info.answer)
    if reader is None:
        raise VerdictParseError(f"a {rubric.spec.kind} rubric's verdict cannot be read from logprobs: use text")
    return reader(score_logprobs, top_logprobs, rubric)


def _score_from_logprobs(
    score_logprobs: dict[str, float] | None,
    top_logprobs: list[dict[str, float]] | None,
    rubric: Rubric,
) -> Parsed:
    """A score on the rubric's scale: the probability-weighted mean over its score tokens."""
    assert rubric.spec.scale is not None
    points = [str(p) for p in rubric.spec.scale.points]
    if score_logprobs:
        mass = {p: math.exp(score_logprobs[p]) for p in points if p in score_logprobs}
    elif top_logprobs:
        mass = _mass_from_top_logprobs(top_logprobs, points)
    else:
        raise VerdictParseError(
            "the provider returned no logprobs, so the logprob score mode cannot score this item "
            "(use --score-mode text, or a server that returns logprobs)"
        )
    total = sum(mass.values())
    if total <= 0:
        raise VerdictParseError("no score token among the returned top logprobs")
    if total < MIN_SCORE_MASS:
        raise VerdictParseError(
            f"the score tokens carry only {total:.1%} of the probability: the judge is not answering with a score"
        )
    probs = {p: mass[p] / total for p in points if p in mass}
    value = sum(float(p) * q for p, q in probs.items())
    best = max(probs, key=lambda p: probs[p])
    reasoning = f"probability-weighted score over {len(probs)} score tokens (mass {total:.3f}); most likely {best}"
    return Parsed(score=value, reasoning=reasoning, score_probs={p: round(q, 6) for p, q in probs.items()})


def _label_from_logprobs(
    score_logprobs: dict[str, float] | None,
    top_logprobs: list[dict[str, float]] | None,
    rubric: Rubric,
) -> Parsed:
    """A pairwise verdict from the distribution over the rubric's labels (A / B / tie ...), no free text.

    The probabilities are renormalised over the labels and kept in ``score_probs``; the score is
    their expectation under :data:`PAIRWISE_SCORE` (P(A) + 0.5 P(tie)), the label the most likely one.
    Exact per-label log-probabilities come from local models; a server's top alternatives at the
    first completion position are matched case-insensitively, whitespace stripped.
    """
    assert rubric.spec.choices is not None
    labels = list(rubric.spec.choices)
    if score_logprobs:
        mass = {c: math.exp(score_logprobs[c]) for c in labels if c in score_logprobs}
    elif top_logprobs:
        by_name = {c.lower(): c for c in labels}
        mass = {}
        for token, lp in top_logprobs[0].items():
            label = by_name.get(token.strip().lower())
            if label is not None:
                mass[label] = mass.get(label, 0.0) + math.exp(lp)
    else:
        raise VerdictParseError(
            "the provider returned no logprobs, so the logprob score mode cannot read this verdict "
            "(use --score-mode text, or a server that returns logprobs)"
        )
    total = sum(mass.values())
    if total < MIN_SCORE_MASS:
        raise VerdictParseError(
            f"the labels {', '.join(labels)} carry only {total:.1%} of the probability: the judge is not answering "
            "with a verdict"
        )
    probs = {c: mass.get(c, 0.0) / total for c in labels}
    best = max(probs, key=lambda c: probs[c])
    value = sum(PAIRWISE_SCORE.get(c, 0.5) * q for c, q in probs.items())
    shown = ", ".join(f"P({c})={q:.3f}" for c, q in probs.items())
    reasoning = f"verdict read from the label probabilities ({shown}; mass {total:.3f})"
    return Parsed(score=value, label=best, reasoning=reasoning, score_probs={c: round(q, 6) for c, q in probs.items()})


_TEXT_READERS: dict[str, Callable[[str, Rubric], Parsed]] = {
    "score": _parse_score,
    "label": _parse_pairwise,
    "opinions": _parse_opinions,
}
"""How a written verdict is read, by answer shape (:attr:`judge.rubric_kinds.RubricKind.answer`)."""
_LOGPROB_READERS: dict[str, Callable[[dict[str, float] | None, list[dict[str, float]] | None, Rubric], Parsed]] = {
    "score": _score_from_logprobs,
    "label": _label_from_logprobs,
}
"""How a verdict is read from logprobs, by answer shape; a shape not here is read from text only."""


MIN_SCORE_MASS = 0.01
"""Below this total probability on the scale's scores, a logprob verdict is noise, not a score."""

NEGLIGIBLE = 0.01
_DIGITS = frozenset("0123456789")
"""Probability below which an unresolved multi-token score ambiguity cannot move the score much."""


def _mass_from_top_logprobs(top: list[dict[str, float]], points: list[str]) -> dict[str, float]:
    """Probability of each score from a server's top logprobs.

    A score that the server's tokenizer splits ("10" as "1" + "0") shares its first token with a
    shorter score ("1"). When the judge's chosen first token is that prefix, the next position's
    alternatives split it exactly: P("10") = P("1") P("0" | "1"), P("1") = P("1") P(no digit | "1").
    Otherwise the split is unknown, which is tolerated only while the prefix is improbable.
    """
    first: dict[str, float] = {}
    for token, lp in top[0].items():
        first[token.strip()] = first.get(token.strip(), 0.0) + math.exp(lp)
    mass = {p: first[p] for p in points if p in first}
    split = [p for p in points if len(p) > 1 and p not in first]  # scores that arrive as several tokens
    if not split:
        return mass
    chosen = max(top[0], key=lambda t: top[0][t]).strip()
    for prefix in sorted({p[0] for p in split}):
        longer = [p for p in split if p[0] == prefix]
        p_prefix = first.get(prefix, 0.0)
        if p_prefix < NEGLIGIBLE:
            continue  # at most 1 % of mass is ambiguous: counted as the shorter score
        if chosen != prefix or len(top) < 2:
            raise VerdictParseError(
                f"this server's tokenizer splits scores like {longer[0]!r} into several tokens, and the top "
                f"logprobs cannot tell {prefix!r} from {longer[0]!r} (use --score-mode text, or a 1-9 scale)"
            )
        nxt: dict[str, float] = {}
        for token, lp in top[1].items():
            nxt[token.strip()] = nxt.get(token.strip(), 0.0) + math.exp(lp)
        digits = sum(q for t, q in nxt.items() if t[:1] in _DIGITS)
        for p in longer:
            mass[p] = p_prefix * nxt.get(p[1:], 0.0)
        if prefix in points:
            mass[prefix] = p_prefix * max(0.0, 1.0 - digits)
    return {p: q for p, q in mass.items() if q > 0}


def reask_message(error: str, rubric: Rubric, score_mode: str) -> str:
    """The follow-up sent after an unreadable verdict (instructor-style re-ask)."""
    return f"Your previous answer could not be read: {error}.\n\n{rubric.format_instructions(score_mode)}"
