"""Cost control (--dry-run, --max-cost), repeats (--repeats: mean, spread, flip rate) and both orders
(--both-orders), through the CLI against the loopback server; and MT-Bench's grader options."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from click.testing import CliRunner, Result

from judge.cli import cli, main
from judge.dataset import load_items
from judge.runner import build_grader
from judge.testing.server import LoopbackServer, Reply, judge_responder, prompt_text

ITEMS = [{"id": f"i{i}", "input": f"What is {i} + {i}?", "output": str(2 * i)} for i in range(6)]


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def prices(tmp_path: Path) -> Path:
    p = tmp_path / "prices.json"
    p.write_text('{"judge-model": {"input": 1.0, "output": 2.0}}')
    return p


class Run(NamedTuple):
    exit_code: int
    output: str


@pytest.fixture
def score(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Run]:
    """``judge score ARGS`` in-process, as the entry point runs it (errors rendered, exit codes mapped)."""
    monkeypatch.setenv("OPENAI_API_KEY", "k")

    def run(url: str, *args: str) -> Run:
        try:
            main(["score", *args, "--judge", "openai/judge-model", "--base-url", url, "--no-progress"])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return Run(code, captured.out + captured.err)

    return run


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- cost control --------------------------------------------------------------------------------------


def test_dry_run_prints_requests_tokens_cost_and_sends_nothing(tmp_path: Path, score: Callable[..., Run]) -> None:
    data = write(tmp_path / "d.jsonl", ITEMS)
    out = tmp_path / "v.jsonl"
    with LoopbackServer() as srv:
        res = score(
            srv.base_url,
            str(data),
            "-r",
            "factuality",
            "--dry-run",
            "--prices",
            str(prices(tmp_path)),
            "--repeats",
            "3",
            "-o",
            str(out),
        )
        assert srv.requests == []
    assert res.exit_code == 0, res.output
    assert "dry run: nothing sent" in res.output
    assert "requests    18" in res.output  # 6 items x 3 repeats
    assert "characters / 4" in res.output and "$0." in res.output
    assert not out.exists()


def test_dry_run_of_an_unpriced_judge_says_the_cost_is_unknown(tmp_path: Path, score: Callable[..., Run]) -> None:
    data = write(tmp_path / "d.jsonl", ITEMS)
    res = score("http://127.0.0.1:9/v1", str(data), "-r", "factuality", "--dry-run")
    assert res.exit_code == 0, res.output
    assert "unknown (model not in price table; see --prices)" in res.output


def test_max_cost_without_a_price_is_a_usage_error(tmp_path: Path, score: Callable[..., Run]) -> None:
    data = write(tmp_path / "d.jsonl", ITEMS)
    with LoopbackServer() as srv:
        res = score(srv.base_url, str(data), "-r", "factuality", "--max-cost", "1")
        assert srv.requests == []
    assert res.exit_code == 2
    assert "has no price" in res.output and "--prices" in res.output


MANY = [{"id": f"m{i}", "input": f"What is {i} + {i}?", "output": f"{2 * i}" + " indeed" * (i % 5)} for i in range(22)]


def test_max_cost_spends_up_to_the_cap_never_past_it(tmp_path: Path, score: Callable[..., Run]) -> None:
    data = write(tmp_path / "d.jsonl", MANY)
    price = prices(tmp_path)  # $1 per 1M prompt tokens, $2 per 1M completion tokens
    free = tmp_path / "free.jsonl"
    with LoopbackServer() as srv:  # what each item really costs, unbounded
        res = score(srv.base_url, str(data), "-r", "factuality", "--prices", str(price), "-o", str(free))
        assert res.exit_code == 0, res.output
    cost = [r["cost_usd"] for r in rows(free)]
    assert cost == [pytest.approx((r["prompt_tokens"] + 2 * r["completion_tokens"]) / 1e6) for r in rows(free)]
    # worst case of each item's call: its prompt (characters / 4, as the loopback server has no tokenizer here)
    # plus max_tokens (512) of completion
    grader = build_grader("factuality", "openai/judge-model", base_url="http://127.0.0.1:9/v1", cache=False)
    worst = []
    for item in load_items(data):
        messages = grader.rubric.render(item.values(), grader.score_mode)
        worst.append((-(-sum(len(m["content"]) for m in messages) // 4) + 2 * 512) / 1e6)
    cap = 0.45 * sum(cost)
    # one call at a time: a call starts when what was spent plus its worst case fits, else it is refused
    spent, judged = 0.0, []
    for k in range(len(MANY)):
        if spent + worst[k] <= cap:
            spent, judged = spent + cost[k], [*judged, k]
    assert 0 < len(judged) < len(MANY)

    for concurrency in ("1", "4"):
        out = tmp_path / f"v{concurrency}.jsonl"
        args = ["-r", "factuality", "--prices", str(price), "--no-cache", "-o", str(out), "-c", concurrency]
        with LoopbackServer(latency_ms=20) as srv:
            res = score(srv.base_url, str(data), *args, "--max-cost", f"{cap:.10f}")
            sent = len(srv.requests)
        assert res.exit_code == 3, res.output
        got = rows(out)
        ok = [k for k, r in enumerate(got) if r["status"] == "ok"]
        total = sum(r["cost_usd"] for r in got)
        assert total <= cap  # never past the cap
        assert total > cap - max(worst)  # and it stopped less than one call's worst case below it
        assert sent == len(ok) and f"{len(MANY) - len(ok)} of {len(MANY)} items not judged" in res.output
        assert f"spent ${total:.4f}" in res.output
        assert all(got[k]["error"].startswith("budget reached") for k in range(len(MANY)) if k not in ok)
        if concurrency == "1":
            assert ok == judged
        else:
            assert len(ok) >= len(judged) - 1  # calls in flight together only wait for each other's reservations


def test_max_cost_keeps_and_caches_the_finished(tmp_path: Path, score: Callable[..., Run]) -> None:
    data = write(tmp_path / "d.jsonl", ITEMS)
    price = prices(tmp_path)
    out = tmp_path / "v.jsonl"
    common = ["-r", "factuality", "--prices", str(price), "--cache-dir", str(tmp_path / "cache"), "-o", str(out)]
    with LoopbackServer() as srv:
        res = score(srv.base_url, str(data), *common, "--max-cost", "0.0014", "-c", "1")  # room for two
        assert res.exit_code == 3, res.output
        first = rows(out)
        done = [r for r in first if r["status"] == "ok"]
        assert 0 < len(done) < len(ITEMS) and len(srv.requests) == len(done)
        # a larger budget judges the rest; the finished items come from the cache, free
        res = score(srv.base_url, str(data), *common, "--max-cost", "1")
        assert res.exit_code == 0, res.output
        assert len(srv.requests) == len(ITEMS)
    second = rows(out)
    assert all(r["status"] == "ok" for r in second)
    assert sum(r["cached"] for r in second) == len(done)


# -- repeats ------------------------------------------------------------------------------------------


def seed_dependent(request: dict[str, Any]) -> Reply | str:
    """A judge whose verdict on 'flaky' items follows the seed: 2 on even seeds, 4 on odd ones."""
    if "flaky" in prompt_text(request):
        return Reply(content=json.dumps({"reasoning": "r", "score": 2 + 2 * (int(request.get("seed", 0)) % 2)}))
    return judge_responder(request)


def test_repeats_give_the_mean_the_spread_and_the_flip_rate(tmp_path: Path, score: Callable[..., Run]) -> None:
    items = [{"id": f"i{i}", "input": f"q{i}" + (" flaky" if i < 2 else ""), "output": "o"} for i in range(4)]
    data = write(tmp_path / "d.jsonl", items)
    out = tmp_path / "v.jsonl"
    with LoopbackServer(responder=seed_dependent) as srv:
        res = score(srv.base_url, str(data), "-r", "factuality", "--repeats", "3", "--no-cache", "-o", str(out))
        seeds = sorted({r.get("seed") for r in srv.requests})
    assert res.exit_code == 0, res.output
    assert seeds == [0, 1, 2]
    verdicts = rows(out)
    assert len(verdicts) == 4  # one verdict per item
    flaky = verdicts[0]
    assert flaky["repeat_scores"] == [2.0, 4.0, 2.0]
    assert abs(flaky["score"] - 8 / 3) < 1e-9 and flaky["spread"] == 2.0 and flaky["flipped"] is True
    steady = verdicts[3]
    assert len(set(steady["repeat_scores"])) == 1 and steady["flipped"] is False and steady["spread"] == 0.0
    assert "repeats    3  flip rate 0.500  mean spread 1.000" in res.output


# -- both orders ----------------------------------------------------------------------------------------


def picky(request: dict[str, Any]) -> Reply | str:
    """A pairwise judge: on 'fair' items it picks the answer saying 'good'; on 'biased' ones always the first."""
    text = prompt_text(request)
    answers = text[text.index("[Answer A]") :]  # the instructions before it say "good" and "bad" too
    fair = "A" if answers.index("good") < answers.index("bad") else "B"
    verdict = "A" if "biased" in text else fair
    return Reply(content=json.dumps({"reasoning": "r", "verdict": verdict}))


def test_both_orders_resolve_inconsistency_to_a_tie_and_measure_position_bias(
    tmp_path: Path, score: Callable[..., Run]
) -> None:
    items = [
        {"id": "f1", "input": "fair one", "output": "good answer", "output_b": "bad answer"},
        {"id": "f2", "input": "fair two", "output": "bad answer", "output_b": "good answer"},
        {"id": "b1", "input": "biased one", "output": "good answer", "output_b": "bad answer"},
        {"id": "b2", "input": "biased two", "output": "bad answer", "output_b": "good answer"},
    ]
    data = write(tmp_path / "d.jsonl", items)
    out = tmp_path / "v.jsonl"
    with LoopbackServer(responder=picky) as srv:
        res = score(srv.base_url, str(data), "-r", "pairwise", "--both-orders", "--no-cache", "-o", str(out))
        assert len(srv.requests) == 8
    assert res.exit_code == 0, res.output
    by_id = {r["id"]: r for r in rows(out)}
    assert (by_id["f1"]["label"], by_id["f2"]["label"]) == ("A", "B")
    assert by_id["f1"]["orders"] == [["A", "B"]] and by_id["f1"]["consistent"] is True
    assert by_id["b1"]["label"] == "tie" and by_id["b1"]["consistent"] is False and by_id["b1"]["score"] == 0.5
    # 2 of 4 pairs consistent; 6 of 8 decisive verdicts pick the answer shown first
    assert "position consistency 0.500 over 4 pairs  P(first wins) 0.750" in res.output
    # P(longer wins), counted here: each order's pick, read back to the pair as given, against the lengths
    from scipy.stats import binomtest

    swap = {"A": "B", "B": "A"}
    longer = picks = 0
    for it in items:
        (g1, g2), la, lb = by_id[it["id"]]["orders"][0], len(it["output"]), len(it["output_b"])
        for pick in (g1, swap[g2]):
            picks += 1
            longer += (pick == "A") == (la > lb)
    # its 95% CI: the Wilson interval, as scipy computes it
    ci = binomtest(longer, picks).proportion_ci(method="wilson")
    assert (
        f"P(longer wins) {longer / picks:.3f} [{ci.low:.3f}, {ci.high:.3f}] over {picks} decisive picks" in res.output
    )
    assert longer / picks == 0.75  # the fair orders pick "good answer", one character longer than "bad answer"


def longer_is_better(request: dict[str, Any]) -> Reply | str:
    """A single-answer judge that scores by the answer's length: 1 + its length mod 5 (a ρ neither 0 nor 1)."""
    text = prompt_text(request)
    answer = text[text.rindex("ANSWER") :] if "ANSWER" in text else text
    return Reply(content=json.dumps({"reasoning": "r", "score": 1 + answer.count("x") % 5}))


def test_summary_gives_the_length_bias_of_a_score_run(tmp_path: Path, score: Callable[..., Run]) -> None:
    import numpy as np
    from scipy.stats import norm, spearmanr

    items = [{"id": f"i{i}", "input": "q", "output": "ANSWER " + "x" * (3 * i + i % 4)} for i in range(12)]
    data = write(tmp_path / "d.jsonl", items)
    out = tmp_path / "v.jsonl"
    with LoopbackServer(responder=longer_is_better) as srv:
        res = score(srv.base_url, str(data), "-r", "factuality", "--no-cache", "-o", str(out))
    assert res.exit_code == 0, res.output
    by_id = {r["id"]: r["score"] for r in rows(out)}
    rho = spearmanr([len(it["output"]) for it in items], [by_id[it["id"]] for it in items]).statistic
    assert 0.05 < abs(rho) < 0.95
    # its 95% CI: Fisher's z with the Bonett-Wright variance for Spearman, (1 + ρ²/2) / (n - 3)
    half = norm.ppf(0.975) * np.sqrt((1 + rho**2 / 2) / (12 - 3))
    lo, hi = np.tanh(np.arctanh(rho) - half), np.tanh(np.arctanh(rho) + half)
    assert f"Spearman ρ of score vs output length {rho:.3f} [{lo:.3f}, {hi:.3f}] over 12 items" in res.output


def test_both_orders_needs_a_pairwise_rubric(tmp_path: Path, score: Callable[..., Run]) -> None:
    data = write(tmp_path / "d.jsonl", ITEMS)
    with LoopbackServer() as srv:
        res = score(srv.base_url, str(data), "-r", "factuality", "--both-orders")
        assert srv.requests == []
    assert res.exit_code == 2 and "not pairwise" in res.output


# -- MT-Bench builds its graders like judge score --------------------------------------------------------


def test_mtbench_judge_takes_the_grader_options(tmp_path: Path) -> None:
    questions = write(tmp_path / "q.jsonl", [{"question_id": 1, "category": "writing", "turns": ["Write a haiku."]}])
    answers = tmp_path / "answers"
    answers.mkdir()
    write(answers / "m.jsonl", [{"question_id": 1, "model_id": "m", "choices": [{"index": 0, "turns": ["Leaves."]}]}])
    out = tmp_path / "j.jsonl"

    def run(url: str, *extra: str) -> Result:
        args = [
            "mtbench",
            "judge",
            "--questions",
            str(questions),
            "--answers",
            str(answers),
            "--judge",
            "openai/loopback",
            "--base-url",
            url,
            "--cache-dir",
            str(tmp_path / "cache"),
            "--out",
            str(out),
            *extra,
        ]
        return CliRunner().invoke(cli, args, env={"OPENAI_API_KEY": "k"})

    with LoopbackServer() as srv:
        assert run(srv.base_url).exit_code == 0
        assert "response_format" in srv.requests[-1]
        res = run(srv.base_url, "--no-structured-output")
        assert res.exit_code == 0, res.output
        assert len(srv.requests) == 2 and "response_format" not in srv.requests[-1]  # another request, not a hit
        assert run(srv.base_url, "--no-structured-output").exit_code == 0
        assert len(srv.requests) == 2  # served from the cache
        assert run(srv.base_url, "--no-structured-output", "--cache-namespace", "v2", "--keep-failed").exit_code == 0
        assert len(srv.requests) == 3  # another namespace: judged again
    assert rows(out)[0]["status"] == "ok"
