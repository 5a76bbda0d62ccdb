"""Rubric kinds as strategy objects: what each ``kind:`` of rubric means, asked of it in one place.

A rubric's front matter names its kind (``single``, ``pairwise`` or ``opinions``, see :mod:`judge.rubric`);
:data:`RUBRIC_KINDS` maps each name to a :class:`RubricKind` that answers what the rest of the package
used to decide by comparing that name: which fields the spec needs, how the judge is told to answer (the
output-format instructions and the structured-output schema), which score modes can read its verdict and
which tokens a logprob mode reads, whether it compares two outputs, what range its scores take and how
``judge rubrics list`` shows its scale. :func:`rubric_kind` is the one place an unknown kind is refused.

How a verdict is read from the judge's answer lives in :mod:`judge.verdict`, which holds one reader per
answer shape (:attr:`RubricKind.answer`: a score on a scale, a label, a list of opinions).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from judge.rubric import RubricSpec

OPINION_VERDICTS = ("yes", "no")
"""An opinions rubric's verdict on one opinion: "yes" = it is what ``flag`` names (toxic, biased)."""
PAIRWISE_CHOICES = {"A": "the first answer is better", "B": "the second answer is better", "tie": "tie"}
"""A pairwise rubric's verdict labels when its front matter gives no ``choices``."""
ANSWER_SHAPES = ("score", "label", "opinions")
"""What a verdict holds (:attr:`RubricKind.answer`); :mod:`judge.verdict` has a reader for each."""

_JSON_ONLY = "Respond with a JSON object and nothing else, in this form:\n"
_REASON = "First give your reasons in one or two short sentences. Then, on a new line, write"


class RubricKind:
    """One kind of rubric: the questions the package asks of a rubric's kind, answered once.

    Subclasses set the class attributes and implement the methods; one instance of each is registered
    in :data:`RUBRIC_KINDS`.
    """

    name: ClassVar[str]
    """The ``kind:`` value in a rubric's front matter."""
    answer: ClassVar[str]
    """What a verdict holds, one of :data:`ANSWER_SHAPES`: it picks the verdict reader in :mod:`judge.verdict`."""
    score_modes: ClassVar[tuple[str, ...]]
    """The score modes that can read its verdict, the first being the one to use when the judge's own default
    cannot: ``text`` (a written answer), ``logprob`` (the next-token distribution), ``reason`` (both)."""
    compares_pair: ClassVar[bool]
    """Whether it judges two outputs (``output`` and ``output_b``) against each other: both orders then mean
    something (``--both-orders``), one system's outputs cannot be scored alone (``judge eval``), and a human
    labels it left / right / tie."""
    counts_flags: ClassVar[bool]
    """Whether its score counts the opinions flagged with ``flag`` (it takes ``flag`` and ``strict``)."""
    verdict_prefix: ClassVar[str]
    """What precedes the verdict in a reasoned answer (reason score mode)."""

    @property
    def needs_free_text(self) -> bool:
        """Whether its verdict can only be read from a written answer (text score mode), never from one token."""
        return self.score_modes == ("text",)

    def default_score_mode(self, judge_default: str) -> str:
        """The score mode to use when none is asked for: the judge's default where it can read this verdict."""
        return judge_default if judge_default in self.score_modes else self.score_modes[0]

    def check(self, spec: RubricSpec) -> None:
        """Raise ValueError when the spec lacks a field this kind needs or has one it does not take; fill in
        the fields this kind defaults (a pairwise rubric's ``choices``)."""
        raise NotImplementedError

    def score_candidates(self, spec: RubricSpec) -> tuple[str, ...]:
        """The tokens a logprob or reason score mode reads the verdict from (scale points or labels)."""
        raise NotImplementedError

    def score_range(self, spec: RubricSpec) -> tuple[float, float]:
        """The lowest and highest score a verdict can have."""
        raise NotImplementedError

    def scale_caption(self, spec: RubricSpec) -> str:
        """Its scale in a few characters, for ``judge rubrics list``: ``1-5``, ``A/B/tie``, ``0-1 share``."""
        raise NotImplementedError

    def format_instructions(self, spec: RubricSpec, score_mode: str) -> str:
        """How the judge must answer in ``score_mode``: one wording for every rubric of this kind."""
        raise NotImplementedError

    def json_schema(self, spec: RubricSpec) -> dict[str, Any]:
        """The verdict's JSON schema, for structured output."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<rubric kind {self.name!r}>"


def _no_flag(spec: RubricSpec) -> None:
    if spec.flag is not None or spec.strict:
        raise ValueError("'flag' and 'strict' apply to opinions rubrics only (kind: opinions)")


def _object_schema(props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


class SingleKind(RubricKind):
    """``single``: one output, a whole-number score on the rubric's ``scale``."""

    name = "single"
    answer = "score"
    score_modes = ("text", "logprob", "reason")
    compares_pair = False
    counts_flags = False
    verdict_prefix = "Score:"

    def check(self, spec: RubricSpec) -> None:
        if spec.scale is None:
            raise ValueError("a single-answer rubric needs a 'scale' with min and max")
        _no_flag(spec)

    def _scale(self, spec: RubricSpec) -> tuple[int, int]:
        assert spec.scale is not None, "a single rubric has a scale (checked when it loads)"
        return spec.scale.min, spec.scale.max

    def score_candidates(self, spec: RubricSpec) -> tuple[str, ...]:
        lo, hi = self._scale(spec)
        return tuple(str(p) for p in range(lo, hi + 1))

    def score_range(self, spec: RubricSpec) -> tuple[float, float]:
        lo, hi = self._scale(spec)
        return float(lo), float(hi)

    def scale_caption(self, spec: RubricSpec) -> str:
        lo, hi = self._scale(spec)
        return f"{lo}-{hi}"

    def format_instructions(self, spec: RubricSpec, score_mode: str) -> str:
        lo, hi = self._scale(spec)
        if score_mode == "reason":
            return f'{_REASON} "{self.verdict_prefix}" and a single whole number from {lo} to {hi}.'
        if score_mode == "logprob":
            return f"Respond with only the score, a single whole number from {lo} to {hi}, and nothing else.\nScore:"
        return _JSON_ONLY + f'{{"reasoning": "<one short paragraph>", "score": <whole number from {lo} to {hi}>}}'

    def json_schema(self, spec: RubricSpec) -> dict[str, Any]:
        lo, hi = self._scale(spec)
        score = {"type": "integer", "minimum": lo, "maximum": hi}
        return _object_schema({"reasoning": {"type": "string"}, "score": score})


class PairwiseKind(RubricKind):
    """``pairwise``: two outputs compared, a label from the rubric's ``choices`` (A / B / tie by default)."""

    name = "pairwise"
    answer = "label"
    score_modes = ("text", "logprob", "reason")
    compares_pair = True
    counts_flags = False
    verdict_prefix = "Verdict:"

    def check(self, spec: RubricSpec) -> None:
        _no_flag(spec)
        if not spec.choices:
            spec.choices = dict(PAIRWISE_CHOICES)
        missing = {"A", "B"} - set(spec.choices)
        if missing:
            raise ValueError(f"pairwise 'choices' must include A and B (missing {sorted(missing)})")

    def _choices(self, spec: RubricSpec) -> list[str]:
        assert spec.choices is not None, "a pairwise rubric has choices (filled in when it loads)"
        return list(spec.choices)

    def score_candidates(self, spec: RubricSpec) -> tuple[str, ...]:
        return tuple(self._choices(spec))

    def score_range(self, spec: RubricSpec) -> tuple[float, float]:
        return 0.0, 1.0

    def scale_caption(self, spec: RubricSpec) -> str:
        return "/".join(self._choices(spec))

    def format_instructions(self, spec: RubricSpec, score_mode: str) -> str:
        choices = self._choices(spec)
        *rest, last = choices
        if score_mode == "reason":
            return f'{_REASON} "{self.verdict_prefix}" and the verdict, {", ".join(rest)} or {last}.'
        if score_mode == "logprob":  # the verdict is read from the next token's distribution over the labels
            return f"Respond with only the verdict, {', '.join(rest)} or {last}, and nothing else.\nVerdict:"
        labels = " or ".join(f'"{c}"' for c in choices)
        return _JSON_ONLY + f'{{"reasoning": "<one short paragraph>", "verdict": <{labels}>}}'

    def json_schema(self, spec: RubricSpec) -> dict[str, Any]:
        verdict: dict[str, Any] = {"type": "string", "enum": self._choices(spec)}
        return _object_schema({"reasoning": {"type": "string"}, "verdict": verdict})


class OpinionsKind(RubricKind):
    """``opinions``: the judge lists the opinions the output states, each with a yes/no verdict on ``flag``; the
    score is the flagged fraction (0 when there are none), or 1/0 with ``strict: true``."""

    name = "opinions"
    answer = "opinions"
    score_modes = ("text",)
    compares_pair = False
    counts_flags = True
    verdict_prefix = "Score:"

    def check(self, spec: RubricSpec) -> None:
        if not spec.flag:
            raise ValueError("an opinions rubric needs a 'flag': what a 'yes' verdict means, e.g. toxic")
        if spec.scale is not None or spec.choices is not None:
            raise ValueError("an opinions rubric scores the flagged fraction: it takes no 'scale' or 'choices'")

    def score_candidates(self, spec: RubricSpec) -> tuple[str, ...]:
        raise ValueError("an opinions rubric's verdict is a written list of opinions: no token holds it")

    def score_range(self, spec: RubricSpec) -> tuple[float, float]:
        return 0.0, 1.0

    def scale_caption(self, spec: RubricSpec) -> str:
        return "0-1 share"

    def format_instructions(self, spec: RubricSpec, score_mode: str) -> str:
        return (
            _JSON_ONLY + '{"opinions": [{"opinion": "<the opinion, quoted or closely paraphrased>", '
            f'"verdict": <"yes" if it is {spec.flag}, else "no">, "reason": "<one short sentence>"}}], '
            '"reasoning": "<one short paragraph>"}\n'
            'List every opinion the output itself states, one entry each; "opinions" is [] when it states none.'
        )

    def json_schema(self, spec: RubricSpec) -> dict[str, Any]:
        entry = _object_schema(
            {
                "opinion": {"type": "string"},
                "verdict": {"type": "string", "enum": list(OPINION_VERDICTS)},
                "reason": {"type": "string"},
            }
        )
        return _object_schema({"opinions": {"type": "array", "items": entry}, "reasoning": {"type": "string"}})


RUBRIC_KINDS: dict[str, RubricKind] = {k.name: k for k in (SingleKind(), PairwiseKind(), OpinionsKind())}
"""Every rubric kind by its ``kind:`` name."""


def rubric_kind(name: str) -> RubricKind:
    """The strategy for the kind ``name``; ValueError naming the accepted kinds when there is none."""
    try:
        return RUBRIC_KINDS[name]
    except (KeyError, TypeError):
        accepted = ", ".join(RUBRIC_KINDS)
        raise ValueError(f"unknown rubric kind {name!r} (accepted: {accepted})") from None
