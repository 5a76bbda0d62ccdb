"""The opinions rubrics (toxicity, bias) through real HTTP against the loopback server: the judge
lists opinions with a yes/no verdict each, the score is computed from the list, and an answer that
cannot be read is re-asked and then unscored -- never 0."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from judge import score
from judge.cli import cli, main
from judge.errors import ConfigError, RubricError, VerdictParseError
from judge.retry import RetryPolicy
from judge.rubric import builtin_dir, load_rubric, parse_rubric
from judge.testing.server import LoopbackServer, Reply
from judge.verdict import parse_verdict

FAST_RETRY = RetryPolicy(max_attempts=2, initial_wait=0.01, max_wait=0.05)
ITEM = {"id": "t1", "input": "What do you think of my neighbour?", "output": "He is loud. Also an idiot. Nice dog."}


def run(srv: LoopbackServer, items=(ITEM,), rubric="toxicity", **kw):
    kw.setdefault("cache", False)
    kw.setdefault("retry", FAST_RETRY)
    return score(list(items), rubric, "openai/judge-model", base_url=srv.base_url, api_key="k", **kw)


def answer(*verdicts: str, reasoning: str = "checked each opinion") -> str:
    opinions = [{"opinion": f"opinion {i}", "verdict": v, "reason": f"because {i}"} for i, v in enumerate(verdicts)]
    return json.dumps({"opinions": opinions, "reasoning": reasoning})


def strict_rubric(tmp_path, name: str = "toxicity"):
    text = (builtin_dir() / f"{name}.j2").read_text(encoding="utf-8")
    path = tmp_path / f"{name}_strict.j2"
    path.write_text(text.replace("kind: opinions\n", "kind: opinions\nstrict: true\n", 1), encoding="utf-8")
    return path


def test_one_of_three_toxic_scores_a_third_and_request_carries_the_opinions_schema() -> None:
    with LoopbackServer(script=[Reply(answer("no", "yes", "no"))]) as srv:
        (v,) = run(srv)
    assert v.status == "ok" and v.score == pytest.approx(1 / 3) and v.error is None and v.attempts == 1
    assert v.details is not None
    assert v.details["n_opinions"] == 3 and v.details["n_flagged"] == 1 and v.details["flag"] == "toxic"
    assert [o["verdict"] for o in v.details["opinions"]] == ["no", "yes", "no"]
    assert v.details["opinions"][1] == {"opinion": "opinion 1", "verdict": "yes", "reason": "because 1"}
    assert "1 of 3 opinions toxic" in v.reasoning and "'opinion 1': because 1" in v.reasoning
    assert v.reasoning.startswith("checked each opinion")
    assert json.loads(v.raw)["opinions"][1]["verdict"] == "yes"
    assert v.model_dump()["details"]["n_flagged"] == 1  # in the verdict records written to JSONL

    req = srv.requests[0]
    schema = req["response_format"]["json_schema"]["schema"]
    assert schema["required"] == ["opinions", "reasoning"] and schema["additionalProperties"] is False
    entry = schema["properties"]["opinions"]["items"]
    assert schema["properties"]["opinions"]["type"] == "array"
    assert entry["properties"]["verdict"] == {"type": "string", "enum": ["yes", "no"]}
    assert set(entry["required"]) == {"opinion", "verdict", "reason"}
    assert "score" not in schema["properties"]
    prompt = req["messages"][-1]["content"]
    assert ITEM["output"] in prompt and ITEM["input"] in prompt
    assert '"verdict": <"yes" if it is toxic, else "no">' in prompt


def test_no_opinion_stated_scores_zero() -> None:
    item = {"id": "f", "output": "The train leaves at 9:40 from platform 2."}  # input is optional
    with LoopbackServer(script=[Reply(answer(reasoning="only facts"))]) as srv:
        (v,) = run(srv, [item])
    assert v.status == "ok" and v.score == 0.0 and v.details["n_opinions"] == 0
    assert "0 of 0 opinions toxic (the output states none)." in v.reasoning
    assert "[What the output was responding to" not in srv.requests[0]["messages"][-1]["content"]


def test_strict_makes_any_flagged_opinion_score_one(tmp_path) -> None:
    path = strict_rubric(tmp_path)
    assert load_rubric(path).spec.strict is True
    script = [Reply(answer("no", "yes", "no")), Reply(answer("no", "no")), Reply(answer())]
    items = [{"id": f"s{i}", "output": f"text {i}"} for i in range(3)]
    with LoopbackServer(script=script) as srv:
        results = run(srv, items, rubric=path, concurrency=1)
    assert [v.score for v in results] == [1.0, 0.0, 0.0]
    assert all(v.status == "ok" and v.details["strict"] is True for v in results)


def test_bias_rubric_scores_the_biased_fraction() -> None:
    item = {"id": "b", "output": "Older people can't learn software. I prefer tea."}
    with LoopbackServer(script=[Reply("```json\n" + answer("yes", "no") + "\n```")]) as srv:
        (v,) = run(srv, [item], rubric="bias")
    assert v.status == "ok" and v.score == 0.5 and v.rubric == "bias" and v.details["flag"] == "biased"
    assert "1 of 2 opinions biased" in v.reasoning


def test_malformed_opinion_entries_are_reasked_then_unscored_with_the_reason() -> None:
    bad = json.dumps(
        {
            "opinions": [{"opinion": "he is an idiot", "verdict": "yes", "reason": "insult"}, {"opinion": "nice dog"}],
            "reasoning": "forgot one verdict",
        }
    )
    with LoopbackServer(script=[Reply(bad)] * 3) as srv:
        (v,) = run(srv)
    assert v.status == "unscored" and v.score is None and v.details is None
    assert v.attempts == 3 and len(srv.requests) == 3
    assert 'opinion 2 has no "verdict"' in v.error and "(after 2 re-asks)" in v.error
    assert v.raw == bad
    # the re-ask tells the judge what was wrong and repeats the format
    reask = srv.requests[1]["messages"][-1]["content"]
    assert srv.requests[1]["messages"][-2] == {"role": "assistant", "content": bad}
    assert 'opinion 2 has no "verdict"' in reask and '"opinions": [{"opinion":' in reask


def test_invalid_verdict_value_is_reasked_and_a_good_second_answer_is_scored() -> None:
    bad = json.dumps({"opinions": [{"opinion": "x", "verdict": "maybe", "reason": "r"}], "reasoning": "unsure"})
    with LoopbackServer(script=[Reply(bad), Reply(answer("yes", "no", "no", "no"))]) as srv:
        (v,) = run(srv)
    assert v.status == "ok" and v.score == 0.25 and v.attempts == 2 and v.error is None
    assert '"verdict": "maybe", not "yes" or "no"' in srv.requests[1]["messages"][-1]["content"]


def test_plain_text_answer_is_unscored_never_zero() -> None:
    text = "The output contains no toxic opinions at all. Score: 0"
    with LoopbackServer(script=[Reply(text)] * 3) as srv:
        (v,) = run(srv)
    assert v.status == "unscored" and v.score is None
    assert 'no JSON object with an "opinions" list found' in v.error and v.raw == text


def test_default_loopback_judge_answers_opinions_deterministically() -> None:
    items = [{"id": f"d{i}", "output": f"Opinionated text number {i}."} for i in range(12)]
    with LoopbackServer() as srv:
        first = run(srv, items)
    with LoopbackServer() as srv2:
        second = run(srv2, items, structured_output=False)  # no schema: detected from the prompt
    assert "response_format" not in srv2.requests[0]
    for results in (first, second):
        assert all(v.status == "ok" and 0.0 <= v.score <= 1.0 for v in results)
        for v in results:
            n, k = v.details["n_opinions"], v.details["n_flagged"]
            assert v.score == (k / n if n else 0.0)
    with LoopbackServer() as srv3:
        again = run(srv3, items)
    assert [v.score for v in again] == [v.score for v in first]
    assert len({v.details["n_opinions"] for v in first}) > 1  # not one canned answer


def test_logprob_mode_is_refused_and_default_mode_is_text() -> None:
    with pytest.raises(ConfigError, match="opinions rubrics use --score-mode text"):
        score([ITEM], "toxicity", "fake/echo-score", score_mode="logprob", cache=False)
    with LoopbackServer(script=[Reply(answer())]) as srv:
        (v,) = run(srv)
    assert v.score_mode == "text"


def test_parser_edge_cases() -> None:
    rubric = load_rubric("toxicity")
    # prose around the JSON, booleans, the flag name as the key
    text = 'Here is my analysis.\n{"opinions": [{"opinion": "a", "toxic": true}, {"opinion": "b", "verdict": "No"}]}'
    parsed = parse_verdict(text, rubric)
    assert parsed.score == 0.5 and parsed.details["opinions"][0]["reason"] is None
    for bad, reason in [
        ("", "the completion is empty"),
        ('{"opinions": null, "reasoning": "x"}', '"opinions" is null, not a list'),
        ('{"opinions": ["rude"], "reasoning": "x"}', 'opinion 1 is "rude", not an object'),
        ('{"opinions": [{"verdict": "yes"}]}', 'opinion 1 has no "opinion" text'),
        ('{"reasoning": "fine", "score": 0}', 'no JSON object with an "opinions" list'),
    ]:
        with pytest.raises(VerdictParseError, match=re.escape(reason)):
            parse_verdict(bad, rubric)


def test_opinions_front_matter_is_validated() -> None:
    head = "---\nid: x\ndescription: d\ninputs: {required: [output]}\n"
    body = "---\n{% block user %}{{ output }}{% endblock %}\n"
    with pytest.raises(RubricError, match="needs a 'flag'"):
        parse_rubric(head + "kind: opinions\n" + body)
    with pytest.raises(RubricError, match="takes no 'scale'"):
        parse_rubric(head + "kind: opinions\nflag: toxic\nscale: {min: 1, max: 5}\n" + body)
    with pytest.raises(RubricError, match="opinions rubrics only"):
        parse_rubric(head + "scale: {min: 1, max: 5}\nstrict: true\n" + body)
    ok = parse_rubric(head + "kind: opinions\nflag: rude\n" + body)
    assert ok.validate() == [] and ok.spec.direction == "higher"
    for name in ("toxicity", "bias"):
        spec = load_rubric(name).spec
        assert spec.kind == "opinions" and spec.direction == "lower" and spec.strict is False
        assert spec.inputs.required == ["output"] and spec.inputs.optional == ["input"]


def test_cli_validates_and_lists_the_safety_rubrics(tmp_path, capsys) -> None:
    paths = [str(builtin_dir() / "toxicity.j2"), str(builtin_dir() / "bias.j2"), str(strict_rubric(tmp_path, "bias"))]
    main(["rubrics", "validate", *paths, "toxicity", "bias"])
    out = capsys.readouterr().out
    assert out.count("ok   ") == 5 and "FAIL" not in out

    broken = tmp_path / "broken.j2"
    broken.write_text((builtin_dir() / "toxicity.j2").read_text().replace("flag: toxic\n", ""))
    with pytest.raises(SystemExit) as exc:
        main(["rubrics", "validate", str(broken)])
    assert exc.value.code == 1 and "needs a 'flag'" in capsys.readouterr().out

    listed = CliRunner().invoke(cli, ["rubrics", "list"])
    assert listed.exit_code == 0
    names = [line.split()[0] for line in listed.output.splitlines()]
    assert "toxicity" in names and "bias" in names


def test_score_cli_with_toxicity_against_loopback(tmp_path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"id": f"c{i}", "output": f"text {i}"}) + "\n" for i in range(2)))
    out = tmp_path / "v.jsonl"
    with LoopbackServer(script=[Reply(answer("yes", "no")), Reply(answer())]) as srv:
        res = CliRunner().invoke(
            cli,
            ["score", str(data), "-r", "toxicity", "--judge", "openai/m", "--base-url", srv.base_url]
            + ["--out", str(out), "--no-cache", "--concurrency", "1"],
            env={"OPENAI_API_KEY": "k"},
        )
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["score"] for r in rows] == [0.5, 0.0] and rows[0]["details"]["n_flagged"] == 1


@pytest.mark.parametrize("rubric", ["toxicity", "bias"])
def test_default_local_judge_refuses_opinions_rubrics_up_front(tmp_path, rubric, monkeypatch, capsys) -> None:
    """SmolLM2-135M cannot write the opinions list (it gave no verdict in 300 s): refused before any model
    load or call, with the reason and the alternatives; a larger local model is not refused."""
    from judge.grader import Grader
    from judge.providers.local import LocalProvider

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps(ITEM) + "\n")
    monkeypatch.delenv("JUDGE_MODEL", raising=False)
    with pytest.raises(SystemExit) as exc:
        main(["score", str(data), "-r", rubric, "--no-progress", "-o", str(tmp_path / "v.jsonl")])
    assert exc.value.code != 0 and not (tmp_path / "v.jsonl").exists()
    text = " ".join(capsys.readouterr().err.split())
    assert "default local judge (SmolLM2-135M) cannot write" in text and "--judge openai/gpt-4o-mini" in text
    assert "--base-url" in text and "--judge local/" in text
    provider = LocalProvider("smollm2")
    with pytest.raises(ConfigError, match="kind: opinions"):
        Grader(load_rubric(rubric), provider)
    assert provider._loaded is None  # refused without loading the model
    assert Grader(load_rubric(rubric), LocalProvider("Qwen/Qwen2.5-7B-Instruct")).score_mode == "text"
