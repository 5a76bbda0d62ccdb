"""Rubrics: rendering snapshots, strict variables, the sandbox, front-matter errors, validation."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from judge.cli import cli
from judge.errors import RubricError
from judge.rubric import list_rubrics, load_rubric, parse_rubric

FACTUALITY_SNAPSHOT = """\
Grade the factual correctness of the answer to the question below on a scale from 1 to 5.

Scale:
1: The answer is wrong, or contradicts the reference on the main point.
2: The main point is wrong, though some details are right.
3: Partly correct; a noticeable error or an important omission.
4: Correct on the main point; a minor inaccuracy or imprecision.
5: Fully correct and consistent with the reference; no false statements.

[Question]
What is the capital of Canada?

[Answer]
Toronto.

[Reference answer — treat it as correct]
Ottawa

Respond with a JSON object and nothing else, in this form:
{"reasoning": "<one short paragraph>", "score": <whole number from 1 to 5>}"""


def test_factuality_render_snapshot() -> None:
    r = load_rubric("factuality")
    msgs = r.render({"input": "What is the capital of Canada?", "output": "Toronto.", "reference": "Ottawa"})
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert msgs[1]["content"] == FACTUALITY_SNAPSHOT
    # without the optional reference the section disappears; logprob mode asks for a bare number
    bare = r.render({"input": "Q?", "output": "A."}, "logprob")[1]["content"]
    assert "Reference" not in bare and bare.endswith("a single whole number from 1 to 5, and nothing else.\nScore:")


def test_builtins_validate_and_hash_is_content_based(tmp_path) -> None:
    ids = {r.id for r in list_rubrics()}
    assert {"factuality", "relevance", "helpfulness", "faithfulness", "pairwise"} <= ids
    for r in list_rubrics():
        assert r.validate() == [], r.id
    text = load_rubric("relevance").text
    copy = tmp_path / "rel.j2"
    copy.write_text(text)
    assert load_rubric(copy).content_hash == load_rubric("relevance").content_hash
    copy.write_text(text.replace("Rate the relevance", "Rate the relevancy"))
    assert load_rubric(copy).content_hash != load_rubric("relevance").content_hash


RUBRIC = """---
id: custom
description: test
scale: {min: 0, max: 3}
inputs: {required: [output]}
---
{% block user %}BODY{% endblock %}
"""


def test_strict_undefined_and_sandbox() -> None:
    undeclared = parse_rubric(RUBRIC.replace("BODY", "{{ output }} {{ mystery }}"), "custom.j2")
    problems = undeclared.validate()
    assert any("mystery" in p and "do not declare" in p for p in problems)
    with pytest.raises(RubricError, match="'mystery' is undefined"):
        undeclared.render({"output": "x"})
    evil = parse_rubric(RUBRIC.replace("BODY", "{{ output.__class__.__mro__[1].__subclasses__() }}"), "evil.j2")
    with pytest.raises(RubricError, match="unsafe"):
        evil.render({"output": "x"})
    with pytest.raises(RubricError, match="needs 'output'"):
        parse_rubric(RUBRIC, "c.j2").render({"output": None})
    parse_rubric(RUBRIC, "c.j2").render({"output": "  "})  # an empty answer is an answer: it is judged


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (RUBRIC.replace("scale: {min: 0, max: 3}", "scale: {min: 3, max: 0}"), r"c\.j2:4: field 'scale'.*greater"),
        (RUBRIC.replace("description: test\n", ""), r"c\.j2: field 'description': Field required"),
        (RUBRIC.replace("inputs:", "inputz:"), r"c\.j2:5: field 'inputz'.*Extra inputs"),
        (RUBRIC.replace("id: custom", "id: [unclosed"), r"c\.j2:\d+: front matter is not valid YAML"),
        (RUBRIC.replace("{% block user %}", "{% block user %}{% if %}"), r"c\.j2:7: template syntax error"),
        (RUBRIC.replace("{% block user %}BODY{% endblock %}", "no blocks"), r"must define \{% block user %\}"),
        ("id: x\n", r"c\.j2:1: rubric must start with a '---'"),
    ],
)
def test_front_matter_errors_name_file_line_and_field(text: str, match: str) -> None:
    with pytest.raises(RubricError, match=match):
        parse_rubric(text, "c.j2")


def test_rubrics_cli(tmp_path) -> None:
    runner = CliRunner()
    out = runner.invoke(cli, ["rubrics", "list"])
    assert out.exit_code == 0 and "factuality" in out.output and "1-10" in out.output
    shown = runner.invoke(cli, ["rubrics", "show", "faithfulness", "--render", "text"])
    assert shown.exit_code == 0 and '"hash"' in shown.output and "[Context]\n<context>" in shown.output
    bad = tmp_path / "bad.j2"
    bad.write_text(RUBRIC.replace("BODY", "{{ nope }}"))
    res = runner.invoke(cli, ["rubrics", "validate", "rubrics/factuality.j2", str(bad)])
    assert res.exit_code == 1
    assert "ok   rubrics/factuality.j2" in res.output and "FAIL" in res.output and "nope" in res.output


def test_unguarded_optional_input_is_caught_before_any_call(tmp_path) -> None:
    from judge import score
    from judge.testing.server import LoopbackServer

    body = "{{ output }} Reference: {{ reference }}"  # prints "None" when the item has no reference
    path = tmp_path / "opt.j2"
    path.write_text(
        RUBRIC.replace("inputs: {required: [output]}", "inputs: {required: [output], optional: [reference]}").replace(
            "BODY", body
        )
    )
    assert any("without a {% if reference %} guard" in p for p in load_rubric(path).validate())
    with LoopbackServer() as srv, pytest.raises(RubricError, match="guard"):
        score([{"output": "x"}], path, "openai/m", base_url=srv.base_url, api_key="k", cache=False)
    assert srv.requests == []  # stopped before the first call
    guarded = parse_rubric(
        RUBRIC.replace("BODY", "{{ output }}{% if reference %} Ref: {{ reference }}{% endif %}"), "g.j2"
    )
    guarded.spec.inputs.optional.append("reference")
    assert guarded.render({"output": "x"})[-1]["content"].startswith("x\n\n")
    assert "Ref: r" in guarded.render({"output": "x", "reference": "r"})[-1]["content"]
