"""MT-Bench: answer, judge (single and pairwise, our rubrics and FastChat's prompts), show, LLMBar labels.

Judging runs on the real published MT-Bench answers with a loopback OpenAI-compatible judge, through
the CLI; the local SmolLM2 run is marked slow.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from judge.cli import cli
from judge.errors import ClientRequestError, ConfigError, DataError
from judge.testing.server import LoopbackServer, Reply, prompt_text

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MT = DATA / "mt_bench"
LLMBAR = DATA / "llmbar" / "Processed" / "MT-Bench" / "dataset.json"
EXAMPLE_QUESTIONS = Path(__file__).resolve().parents[1] / "examples" / "mtbench" / "question.jsonl"
MODELS = "gpt-4,llama-13b,alpaca-13b"
QIDS = "81,111,131"  # writing, math (reference-guided), extraction


def needs(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"real data not found at {path}")


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, ["mtbench", *args], catch_exceptions=True)


def ok(result: Result) -> str:
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.output


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def line(qid: int, model: str, turns: list[str]) -> str:
    """One FastChat model_answer line."""
    return json.dumps({"question_id": qid, "model_id": model, "choices": [{"index": 0, "turns": turns}]}) + "\n"


def judge_args(url: str, out: Path, *extra: str, judge: str = "openai/loopback") -> list[str]:
    return [
        "judge",
        "--questions",
        str(MT / "question.jsonl"),
        "--answers",
        str(MT / "model_answer"),
        "--reference",
        str(MT / "reference_answer" / "gpt-4.jsonl"),
        "--models",
        MODELS,
        "--question-ids",
        QIDS,
        "--judge",
        judge,
        "--base-url",
        url,
        "--out",
        str(out),
        *extra,
    ]


def test_single_grading_on_real_answers_is_per_turn_reference_guided_and_cached(tmp_path: Path) -> None:
    needs(MT)
    answers = {r["model_id"]: r for r in rows(MT / "model_answer" / "gpt-4.jsonl") if r["question_id"] == 111}
    out = tmp_path / "single.jsonl"
    with LoopbackServer() as srv:
        text = ok(invoke(*judge_args(srv.base_url, out, "--mode", "single")))
        first = rows(out)
        n_requests = len(srv.requests)
        ok(invoke(*judge_args(srv.base_url, out, "--mode", "single")))  # rerun: every call from the cache
        assert len(srv.requests) == n_requests
    assert "turn 1" in text and "turn 2" in text and "unscored" in text
    shown = ok(invoke("show", str(out), "--plot", str(tmp_path / "radar.png")))
    assert "Mean score per category" in shown and "math" in shown
    assert (tmp_path / "radar.png").stat().st_size > 10_000
    assert len(first) == 3 * 3 * 2  # questions x models x turns
    again = rows(out)
    assert all(r["cached"] for r in again) and not any(r["cached"] for r in first)
    assert [r["score"] for r in again] == [r["score"] for r in first]
    by_key = {(r["question_id"], r["model"], r["turn"]): r for r in first}
    for r in first:
        assert r["status"] == "ok" and 1 <= r["score"] <= 10 and r["judge"] == ["openai/loopback", "mt_bench_single"]
        assert r["reference_guided"] == (r["category"] == "math")
    # turn 2 is judged with the whole conversation: the model's own turn-1 answer is in the prompt
    t2 = by_key[(111, "gpt-4", 2)]["user_prompt"]
    assert answers["gpt-4"]["choices"][0]["turns"][0][:200] in t2
    assert answers["gpt-4"]["choices"][0]["turns"][1][:200] in t2
    assert "Reference Answer" in t2 and "Reference answer" in t2
    assert "Reference" not in by_key[(81, "gpt-4", 2)]["user_prompt"]
    # FastChat-compatible fields
    assert {"question_id", "model", "judge", "user_prompt", "judgment", "score", "turn", "tstamp"} <= set(first[0])


def _always_first(request: dict[str, Any]) -> Reply:
    return Reply(content="Assistant A is better. [[A]]")


def _prefers_longer(request: dict[str, Any]) -> Reply:
    # FastChat pair-v2 prompt: pick the assistant whose (last) answer is longer
    text = prompt_text(request)
    a = re.findall(r"\[The Start of Assistant A's Answer\]\n(.*?)\n\[The End", text, re.S)
    b = re.findall(r"\[The Start of Assistant B's Answer\]\n(.*?)\n\[The End", text, re.S)
    if not a:  # multi-turn template
        a = re.findall(r"### Assistant A:\n(.*?)\n\n(?:### User|<\|The End)", text, re.S)[-1:]
        b = re.findall(r"### Assistant B:\n(.*?)\n\n(?:### User|<\|The End)", text, re.S)[-1:]
    la, lb = len(a[-1]), len(b[-1])
    return Reply(content="[[A]]" if la > lb else "[[B]]" if lb > la else "[[C]]")


def test_pairwise_with_fastchat_prompts_both_orders_and_bias_statistics(tmp_path: Path) -> None:
    needs(MT)
    prompts = ["--mode", "pairwise-all", "--judge-prompts", str(MT / "judge_prompts.jsonl")]
    biased, longer = tmp_path / "biased.jsonl", tmp_path / "longer.jsonl"
    with LoopbackServer(responder=_always_first) as srv:
        text = ok(invoke(*judge_args(srv.base_url, biased, *prompts)))
        sent = [prompt_text(r) for r in srv.requests]
    recs = rows(biased)
    assert len(recs) == 3 * 3 * 2 and len(sent) == 2 * len(recs)  # every pair judged in both orders
    # the FastChat prompt variant follows category and turn
    names = {(r["category"], r["turn"]): r["judge"][1] for r in recs}
    assert names == {
        ("writing", 1): "pair-v2",
        ("writing", 2): "pair-v2-multi-turn",
        ("math", 1): "pair-math-v1",
        ("math", 2): "pair-math-v1-multi-turn",
        ("extraction", 1): "pair-v2",
        ("extraction", 2): "pair-v2-multi-turn",
    }
    assert all("{" + "answer_a}" not in s for s in sent)
    for r in recs:  # [[A]] in both orders names both models: a flip, so a tie recorded as inconsistent
        assert (r["g1_winner"], r["g2_winner"], r["winner"], r["consistent"]) == ("model_1", "model_2", "tie", False)
        assert r["g1_user_prompt"] != r["g2_user_prompt"]
    assert "position bias" in text and "first in 100%" in text

    summary = json.loads(ok(invoke("show", str(biased), "--json")))["pairwise"]
    assert summary["stats"]["consistency"] == 0.0 and summary["stats"]["p_first_wins"] == 1.0
    assert all(m["tie"] == 12 and m["win_rate"] == 0.5 for m in summary["models"].values())
    assert any("position bias" in w for w in summary["warnings"])

    with LoopbackServer(responder=_prefers_longer) as srv:
        # another judge name: a new server can reuse the port, and the cache keys on (model, base URL)
        ok(invoke(*judge_args(srv.base_url, longer, *prompts, judge="openai/loopback-longer")))
    stats = json.loads(ok(invoke("show", str(longer), "--json")))["pairwise"]["stats"]
    assert stats["consistency"] == 1.0 and stats["p_longer_wins"] == 1.0
    assert 0.0 < stats["p_first_wins"] < 1.0
    for r in rows(longer):
        n1, n2 = r["answer_1_chars"], r["answer_2_chars"]
        expect = "model_1" if n1 > n2 else "model_2" if n2 > n1 else "tie"
        assert r["winner"] == expect and r["consistent"] is True


def test_answer_then_judge_then_show_with_unscored_counted(tmp_path: Path) -> None:
    out = tmp_path / "model_answer" / "loop.jsonl"
    with LoopbackServer() as srv:
        ok(
            invoke(
                "answer",
                "--questions",
                str(EXAMPLE_QUESTIONS),
                "--model",
                "openai/loop",
                "--base-url",
                srv.base_url,
                "--out",
                str(out),
                "--temperature",
                "writing=0.3",
            )
        )
        first_calls = list(srv.requests)
        ok(
            invoke(
                "answer",
                "--questions",
                str(EXAMPLE_QUESTIONS),
                "--model",
                "openai/loop",
                "--base-url",
                srv.base_url,
                "--out",
                str(out),
                "--temperature",
                "writing=0.3",
            )
        )
        assert len(srv.requests) == len(first_calls)  # rerun answered from the cache
    recs = rows(out)
    assert [len(r["choices"][0]["turns"]) for r in recs] == [2, 2, 2, 3]
    temps = {r["category"]: r["generation"]["temperature"] for r in recs}
    assert temps == {"writing": 0.3, "math": 0.0, "reasoning": 0.0, "roleplay": 0.7}
    # each turn is asked with the conversation so far, and answering sends no JSON schema
    assert [len(c["messages"]) for c in first_calls if "lighthouse" in c["messages"][0]["content"]] == [1, 3, 5]
    assert not any("response_format" in c for c in first_calls)

    # a judge that never answers in a readable form: unscored with a reason, counted, never 0
    judged = tmp_path / "j.jsonl"
    with LoopbackServer(responder=lambda r: Reply(content="I cannot decide.")) as srv:
        res = invoke(
            "judge",
            "--questions",
            str(EXAMPLE_QUESTIONS),
            "--answers",
            str(out.parent),
            "--judge",
            "openai/j",
            "--base-url",
            srv.base_url,
            "--out",
            str(judged),
        )
    # nothing scored: the run is incomplete (exit 3), with the counts
    assert res.exit_code == 3, res.output
    text = res.output
    assert "nothing scored: 0 of 9 judgments (0 for a transport reason, 9 unreadable)" in text
    recs = rows(judged)
    assert len(recs) == 9 and all(r["status"] == "unscored" and r["score"] is None for r in recs)
    assert "no score found" in recs[0]["error"] and recs[0]["attempts"] == 3
    assert "9 unscored" in text
    shown = ok(invoke("show", str(judged)))
    assert re.search(r"loop\s+-\s+-\s+-\s+-\s+0\s+9\n", shown), shown  # means '-', n 0, unscored 9
    assert isinstance(invoke("show", str(judged), "--plot", str(tmp_path / "r.png")).exception, DataError)


def test_bad_inputs_name_file_line_field_and_interrupted_runs_keep_judged(tmp_path: Path) -> None:
    q = tmp_path / "q.jsonl"
    q.write_text(
        '{"question_id": 1, "category": "writing", "turns": ["a", "b"]}\n'
        '{"question_id": 2, "category": "writing", "turns": []}\n'
    )
    ans = tmp_path / "ans"
    ans.mkdir()

    def run(*extra: str) -> BaseException | None:
        return invoke(
            "judge",
            "--questions",
            str(q),
            "--answers",
            str(ans),
            "--judge",
            "fake/echo-score",
            "--out",
            str(tmp_path / "o.jsonl"),
            *extra,
        ).exception

    exc = run()
    assert isinstance(exc, DataError) and exc.line == 2 and exc.field == "turns" and "no turns" in str(exc)
    q.write_text('{"question_id": 1, "category": "writing", "turns": ["a", "b"]}\n')
    (ans / "m.jsonl").write_text(line(1, "m", ["x"]))
    exc = run()
    assert isinstance(exc, DataError) and f"{ans / 'm.jsonl'}:1" in str(exc) and exc.field == "choices[0].turns"
    assert "1 turn(s)" in str(exc) and "which has 2" in str(exc)
    (ans / "m.jsonl").write_text(line(1, "m", ["x", "y"]) + line(7, "m", ["x", "y"]))
    exc = run()
    assert isinstance(exc, DataError) and exc.line == 2 and exc.field == "question_id" and "lacks" in str(exc)
    (ans / "m.jsonl").write_text(line(1, "m", ["x", "y"]))
    (ans / "n.jsonl").write_text(line(1, "m", ["x", "z"]))
    exc = run()
    assert isinstance(exc, DataError) and "duplicate model id 'm'" in str(exc) and exc.field == "model_id"
    (ans / "n.jsonl").write_text(line(1, "n", ["w", "z"]))
    assert isinstance(run("--mode", "pairwise-baseline"), ConfigError)  # no gpt-3.5-turbo answers
    q.write_text('{"question_id": 1, "category": "math", "turns": ["a", "b"]}\n')
    exc = run()
    assert isinstance(exc, DataError) and exc.field == "reference" and "--reference" in str(exc)
    # the CLI entry point renders it as one line, exit code 2
    from judge.cli import main

    with pytest.raises(SystemExit) as stop:
        main(
            [
                "mtbench",
                "judge",
                "--questions",
                str(q),
                "--answers",
                str(ans),
                "--judge",
                "fake/echo-score",
                "--out",
                str(tmp_path / "o.jsonl"),
            ]
        )
    assert stop.value.code == 2

    # interrupted: a rejected key stops the run; judged lines are in .partial, and the cache makes the rerun free
    q.write_text('{"question_id": 1, "category": "writing", "turns": ["a", "b"]}\n')
    out = tmp_path / "judged.jsonl"
    args = [
        "judge",
        "--questions",
        str(q),
        "--answers",
        str(ans),
        "--judge",
        "openai/j",
        "--concurrency",
        "1",
        "--mode",
        "single",
        "--out",
        str(out),
    ]
    with LoopbackServer(script=[Reply(content="Rating: [[7]]")] * 3 + ["401"]) as srv:
        exc = invoke(*args, "--base-url", srv.base_url).exception
        assert isinstance(exc, ClientRequestError) and not out.exists()
        assert len(rows(out.with_name(out.name + ".partial"))) == 3
        ok(invoke(*args, "--base-url", srv.base_url))  # same server (the cache key includes its URL)
        assert len(srv.requests) == 5  # 4 in the first run, then only the item that was never judged
    assert [r["cached"] for r in rows(out)] == [True, True, True, False]


def test_llmbar_expert_labels_become_joinable_pairwise_judgments(tmp_path: Path) -> None:
    needs(LLMBAR)
    needs(MT)
    conv = tmp_path / "llmbar"
    text = ok(
        invoke(
            "llmbar",
            str(LLMBAR),
            "--questions",
            str(MT / "question.jsonl"),
            "--answers",
            str(MT / "model_answer"),
            "--out-dir",
            str(conv),
        )
    )
    labels = rows(conv / "labels.jsonl")
    assert "pairs: 200" in text and len(labels) == 200
    assert {r["winner"] for r in labels} == {"model_1", "model_2"} and {r["turn"] for r in labels} == {1}
    models = {m for r in labels for m in (r["model_1"], r["model_2"])}
    assert {"alpaca-13b", "llama-13b"} <= models  # identical texts recover the published model names
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in labels[:8]))
    out = tmp_path / "judged.jsonl"
    with LoopbackServer() as srv:
        ok(
            invoke(
                "judge",
                "--questions",
                str(conv / "question.jsonl"),
                "--answers",
                str(conv / "model_answer"),
                "--mode",
                "pairwise-all",
                "--pairs",
                str(pairs),
                "--judge",
                "openai/loopback",
                "--base-url",
                srv.base_url,
                "--out",
                str(out),
            )
        )
    judged = rows(out)
    key = ("question_id", "model_1", "model_2", "turn")
    assert [tuple(r[k] for k in key) for r in judged] == [tuple(r[k] for k in key) for r in labels[:8]]
    assert all(r["winner"] in ("model_1", "model_2", "tie") for r in judged)


@pytest.mark.slow
def test_local_smollm2_answers_and_judges_offline(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from judge.local.models import resolve_model

    try:
        resolve_model("smollm2")
    except Exception as exc:  # noqa: BLE001 - no weights here: nothing to run
        pytest.skip(f"local smollm2 not available: {exc}")
    ans = tmp_path / "model_answer"
    start = time.perf_counter()
    for model_id, system in (("smollm2", None), ("smollm2-terse", "Answer in at most one sentence.")):
        ok(
            invoke(
                "answer",
                "--questions",
                str(EXAMPLE_QUESTIONS),
                "--model",
                "local/smollm2",
                "--model-id",
                model_id,
                "--first-n",
                "2",
                "--max-tokens",
                "48",
                "--out",
                str(ans / f"{model_id}.jsonl"),
                *(["--system", system] if system else []),
            )
        )
    recs = rows(ans / "smollm2.jsonl")
    assert recs[0]["generation"]["requested_temperature"] == 0.7 and recs[0]["generation"]["temperature"] == 0.0
    assert "greedy" in recs[0]["generation"]["decoding"]
    for mode in ("single", "pairwise-all"):
        out = tmp_path / f"{mode}.jsonl"
        ok(
            invoke(
                "judge",
                "--questions",
                str(EXAMPLE_QUESTIONS),
                "--answers",
                str(ans),
                "--first-n",
                "2",
                "--mode",
                mode,
                "--judge",
                "local/smollm2",
                "--max-tokens",
                "48",
                "--concurrency",
                "1",
                "--out",
                str(out),
            )
        )
        judged = rows(out)
        assert len(judged) == (8 if mode == "single" else 4)
        assert all(r["status"] in ("ok", "unscored") for r in judged)
        assert all(r["score"] is None or 1 <= r["score"] <= 10 for r in judged if mode == "single")
    print(f"smollm2 answer+judge on 2 questions: {time.perf_counter() - start:.1f}s")
