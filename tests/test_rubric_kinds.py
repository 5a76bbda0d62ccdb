"""Rubric kinds as strategy objects: every registered kind is complete, and an unknown kind is refused once."""

from __future__ import annotations

from typing import Any

import pytest

from judge import verdict
from judge.errors import RubricError
from judge.grader import SCORE_MODES
from judge.rubric import RubricSpec, list_rubrics, parse_rubric
from judge.rubric_kinds import ANSWER_SHAPES, RUBRIC_KINDS, RubricKind, rubric_kind

# the least front matter each kind loads with, beyond id and description
MINIMAL: dict[str, dict[str, Any]] = {
    "single": {"scale": {"min": 1, "max": 5}},
    "pairwise": {},
    "opinions": {"flag": "toxic"},
}


@pytest.mark.parametrize("name", list(RUBRIC_KINDS))
def test_every_kind_has_a_complete_strategy(name: str) -> None:
    kind = RUBRIC_KINDS[name]
    assert isinstance(kind, RubricKind) and kind.name == name and rubric_kind(name) is kind
    assert kind.answer in ANSWER_SHAPES and kind.answer in verdict._TEXT_READERS
    assert kind.score_modes and set(kind.score_modes) <= set(SCORE_MODES)
    if set(kind.score_modes) & {"logprob", "reason"}:
        assert kind.answer in verdict._LOGPROB_READERS
    assert kind.verdict_prefix.endswith(":")
    for attr in ("compares_pair", "counts_flags"):
        assert isinstance(getattr(kind, attr), bool), attr
    assert name in MINIMAL, f"add the least front matter of kind '{name}' to MINIMAL"
    spec = RubricSpec.model_validate({"id": "x", "description": "d", "kind": name, **MINIMAL[name]})
    assert spec.kind_info is kind
    for mode in kind.score_modes:  # every method answers for a valid spec: none is left to the base class
        assert kind.format_instructions(spec, mode).strip()
    assert kind.json_schema(spec)["type"] == "object"
    assert kind.scale_caption(spec)
    lo, hi = kind.score_range(spec)
    assert lo < hi
    if not kind.needs_free_text:
        assert kind.score_candidates(spec)
    assert kind.default_score_mode("logprob") in kind.score_modes
    assert kind.default_score_mode("text") in kind.score_modes
    assert any(r.spec.kind == name for r in list_rubrics()), f"no built-in rubric of kind '{name}'"


def test_unknown_kind_is_refused_with_the_accepted_list() -> None:
    accepted = r"\(accepted: single, pairwise, opinions\)"
    with pytest.raises(ValueError, match=r"unknown rubric kind 'ranking' " + accepted):
        rubric_kind("ranking")
    text = "---\nid: custom\ndescription: test\nkind: ranking\n---\n{% block user %}BODY{% endblock %}\n"
    with pytest.raises(RubricError, match=r"c\.j2:4: field 'kind'.*unknown rubric kind 'ranking' " + accepted):
        parse_rubric(text, "c.j2")
