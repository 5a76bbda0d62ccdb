"""The OpenAI adapter through real HTTP against the loopback server: verdicts, faults, cache."""

from __future__ import annotations

import json
import math
import threading
import time

import pytest

from judge import score
from judge.errors import ClientRequestError
from judge.retry import RetryPolicy
from judge.testing.server import LoopbackServer, Reply, judge_responder, prompt_text

FAST_RETRY = RetryPolicy(max_attempts=4, initial_wait=0.01, max_wait=0.05)
ITEMS = [
    {"id": f"i{i}", "input": f"What is {i} + {i}?", "output": str(2 * i), "reference": str(2 * i)} for i in range(6)
]


def run(srv: LoopbackServer, items=ITEMS, **kw):
    kw.setdefault("cache", False)
    kw.setdefault("retry", FAST_RETRY)
    return score(items, "factuality", "openai/judge-model", base_url=srv.base_url, api_key="k", **kw)


def test_json_verdicts_request_shape_and_contract() -> None:
    with LoopbackServer() as srv:
        results = run(srv)
    assert [v.id for v in results] == [it["id"] for it in ITEMS]
    assert all(v.status == "ok" and 1 <= v.score <= 5 for v in results)
    req = srv.requests[0]
    # temperature 0, a fixed seed, structured output with the rubric's scale, SDK retries off
    assert req["temperature"] == 0 and req["seed"] == 0 and req["model"] == "judge-model"
    schema = req["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["score"] == {"type": "integer", "minimum": 1, "maximum": 5}
    assert len(srv.requests) == len(ITEMS)
    v = results[0].model_dump()
    contract = [
        "id",
        "rubric",
        "rubric_hash",
        "judge_model",
        "score_mode",
        "score",
        "status",
        "reasoning",
        "error",
        "raw",
        "prompt_tokens",
        "completion_tokens",
        "cost_usd",
        "latency_ms",
        "cached",
        "temperature",
        "seed",
    ]
    assert set(contract) <= set(v)
    assert v["judge_model"] == "openai/judge-model" and v["rubric"] == "factuality" and v["cached"] is False
    assert v["cost_usd"] is None  # unknown model: cost is unknown, not 0
    assert json.loads(v["raw"])["score"] == v["score"]


def test_text_verdicts_without_structured_output_bind_to_last_score() -> None:
    script = [Reply("I considered a score of 2 but the answer is right.\nScore: 5")] * 2
    with LoopbackServer(script=script) as srv:
        results = score(
            ITEMS[:2],
            "factuality",
            "openai/m",
            base_url=srv.base_url,
            api_key="k",
            cache=False,
            structured_output=False,
        )
    assert "response_format" not in srv.requests[0]
    assert [v.score for v in results] == [5.0, 5.0]


def test_logprob_mode_weights_score_tokens() -> None:
    lp = {"4": -0.2231435513, "5": -1.6094379124, "3": -3.0, "x": -0.5}  # 0.8, 0.2, small; 'x' ignored
    with LoopbackServer(script=[Reply("4", logprobs=[lp])]) as srv:
        results = run(srv, ITEMS[:1], score_mode="logprob")
    v = results[0]
    assert srv.requests[0]["logprobs"] is True and srv.requests[0]["top_logprobs"] == 20
    p3 = 2.718281828**-3.0
    total = 0.8 + 0.2 + p3
    assert v.score == pytest.approx((4 * 0.8 + 5 * 0.2 + 3 * p3) / total, rel=1e-6)
    assert set(v.score_probs) == {"3", "4", "5"}


def test_logprob_mode_splits_multi_token_scores_or_refuses() -> None:
    # the server's tokenizer writes "10" as "1" + "0": the second position splits P("1") exactly
    ten = Reply("10", logprobs=[{"1": -0.05, "9": -3.2}, {"0": -0.01, ".": -4.6}])
    # the judge chose "9", so nothing tells how much of P("1") = 0.3 belongs to "10": refuse, do not guess
    ambiguous = Reply("9", logprobs=[{"9": -0.36, "1": -1.2}, {".": -0.1}])
    with LoopbackServer(script=[ten, ambiguous]) as srv:
        a, b = score(
            ITEMS[:2],
            "helpfulness",
            "openai/m",
            base_url=srv.base_url,
            api_key="k",
            cache=False,
            score_mode="logprob",
            concurrency=1,
        )
    p1, p9, p0 = math.exp(-0.05), math.exp(-3.2), math.exp(-0.01)
    probs = {"10": p1 * p0, "1": p1 * (1 - p0), "9": p9}
    total = sum(probs.values())
    assert a.status == "ok" and a.score == pytest.approx(sum(int(k) * v for k, v in probs.items()) / total)
    assert a.score > 9.5
    assert b.status == "unscored" and b.score is None and "cannot tell '1' from '10'" in b.error


def test_logprob_mode_says_so_when_server_returns_no_logprobs() -> None:
    with LoopbackServer(script=[Reply("4", logprobs=None)]) as srv:
        v = run(srv, ITEMS[:1], score_mode="logprob")[0]
    assert v.status == "unscored" and v.score is None and "no logprobs" in v.error
    assert len(srv.requests) == 1  # no silent fall back to a text verdict


def test_faults_are_retried_and_no_item_is_lost() -> None:
    # one of each fault, then healthy answers; hang is cut by the timeout and retried. Faults are
    # tied to items (never more than two per item, under its four attempts), not to arrival order,
    # so how the workers happen to be scheduled cannot make one item draw them all.
    faults = ["429", "500", "503", "badjson", "hang", "reset", "nochoices"]
    per_item = {f"What is {i} + {i}?": faults[i :: len(ITEMS)] for i in range(len(ITEMS))}
    lock = threading.Lock()

    def responder(req):
        text = prompt_text(req)
        (question,) = [q for q in per_item if q in text]
        with lock:
            pending = per_item[question]
            return pending.pop(0) if pending else judge_responder(req)

    with LoopbackServer(responder=responder, max_seconds=60) as srv:
        results = run(srv, concurrency=3, timeout=1.0)
    assert len(results) == len(ITEMS) and [v.id for v in results] == [i["id"] for i in ITEMS]
    assert all(v.status == "ok" for v in results), [v.error for v in results]
    served_faults = [s for s in srv.statuses if s != 200]
    assert sorted(served_faults) == sorted(faults)  # every fault was met and got past
    assert srv.statuses.count(200) >= len(ITEMS)  # more only if a slow answer timed out on a busy machine


def test_retry_after_is_honoured() -> None:
    with LoopbackServer(script=["429"], retry_after="1") as srv:
        start = time.perf_counter()
        v = run(srv, ITEMS[:1], retry=RetryPolicy(max_attempts=3, initial_wait=0.0, max_wait=5))[0]
        elapsed = time.perf_counter() - start
    assert v.status == "ok"
    assert elapsed >= 0.95  # waited the server's Retry-After, not the 0 s backoff


def per_item(faults: dict[int, list[str]]):
    """A responder that serves item i's faults (in order) to the requests for item i, then judges:
    faults tied to items, not to arrival order, so scheduling cannot move them between items."""
    pending = {f"What is {i} + {i}?": list(f) for i, f in faults.items()}
    lock = threading.Lock()

    def responder(req):
        text = prompt_text(req)
        with lock:
            for question, left in pending.items():
                if question in text and left:
                    return left.pop(0)
        return judge_responder(req)

    return responder


def test_persistent_faults_end_unscored_with_reason() -> None:
    with LoopbackServer(responder=per_item({0: ["500"] * 4, 1: ["400"]})) as srv:
        results = run(srv, ITEMS[:2], concurrency=1)
    a, b = results
    assert a.status == "unscored" and a.score is None and "ServerError after 4 attempts" in a.error
    assert b.status == "unscored" and "request rejected" in b.error and "HTTP 400" in b.error
    assert len(srv.requests) == 5  # 400 is not retried


def test_garbage_judge_is_reasked_then_unscored_never_zero() -> None:
    garbage = Reply("I refuse to grade this. Also 17/20 would be my mark.")
    with LoopbackServer(responder=lambda req: garbage) as srv:
        results = run(srv, ITEMS[:3], concurrency=1)
    for v in results:
        assert v.status == "unscored" and v.score is None
        assert "unparseable verdict" in v.error and "17/20 is on another scale" in v.error and "2 re-asks" in v.error
        assert v.raw == garbage.content and v.attempts == 3
    # the re-ask carries the error back to the judge
    reask = next(r["messages"] for r in srv.requests if len(r["messages"]) > 2)
    assert reask[-2]["role"] == "assistant" and "could not be read" in reask[-1]["content"]
    assert len(srv.requests) == 9


def test_reask_recovers() -> None:
    with LoopbackServer(script=[Reply("no idea"), Reply('{"reasoning": "ok", "score": 4}')]) as srv:
        v = run(srv, ITEMS[:1])[0]
    assert v.status == "ok" and v.score == 4 and v.attempts == 2 and v.error is None


def test_auth_failure_stops_the_run(tmp_path) -> None:
    out = tmp_path / "v.jsonl"
    with LoopbackServer(script=["401"] * 20) as srv, pytest.raises(ClientRequestError, match="HTTP 401"):
        run(srv, out=out)
    assert not out.exists()  # a failed run never leaves a file that looks finished
    assert (tmp_path / "v.jsonl.partial").exists()


def test_cache_second_run_makes_no_requests_and_is_identical(tmp_path) -> None:
    cache = tmp_path / "cache"
    with LoopbackServer() as srv:
        first = run(srv, cache=cache)
        n = len(srv.requests)
        second = run(srv, cache=cache)
        assert len(srv.requests) == n == len(ITEMS)
        # a changed seed is a different call
        run(srv, ITEMS[:1], cache=cache, seed=1)
        assert len(srv.requests) == n + 1
    strip = ("cached", "latency_ms", "cost_usd")  # what this run did, not what the judge said
    assert [v.model_dump(exclude=set(strip)) for v in first] == [v.model_dump(exclude=set(strip)) for v in second]
    assert all(v.cached for v in second) and not any(v.cached for v in first)
    assert all(v.cost_usd == 0.0 for v in second)  # a rerun costs nothing (first run: unknown price, None)


def test_concurrency_is_bounded() -> None:
    items = [{"input": f"q{i}", "output": "a"} for i in range(20)]
    with LoopbackServer(latency_ms=50) as srv:
        run(srv, items, concurrency=4)
    assert 2 <= srv.max_in_flight <= 4


def test_interrupted_run_resumes_from_cache(tmp_path) -> None:
    cache, out = tmp_path / "cache", tmp_path / "v.jsonl"
    # the server dies for good (401 here) after three answers: the run stops ...
    script: list[Reply | str] = [Reply('{"reasoning": "r", "score": 3}')] * 3 + ["401"] * 10
    with LoopbackServer(script=script) as srv, pytest.raises(ClientRequestError):
        port = srv.port
        run(srv, cache=cache, out=out, concurrency=1)
    partial = (tmp_path / "v.jsonl.partial").read_text().splitlines()
    assert [json.loads(line)["id"] for line in partial] == ["i0", "i1", "i2"]  # finished items were streamed
    # ... and the rerun (the same server, restarted) asks only for what is missing
    with LoopbackServer(port=port) as srv:
        results = run(srv, cache=cache, out=out, concurrency=1)
    assert len(srv.requests) == len(ITEMS) - 3
    assert [v.cached for v in results] == [True] * 3 + [False] * (len(ITEMS) - 3)
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [i["id"] for i in ITEMS]


def test_malformed_completions_are_retried_not_fatal() -> None:
    good = Reply('{"reasoning": "r", "score": 2}')
    broken = [
        Reply("", body={"choices": [None]}),
        Reply("", body={"choices": [{"message": "not an object"}]}),
        Reply("", body={"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": "n/a"}}),
        Reply("", body=[1, 2, 3]),
    ]
    with LoopbackServer(script=[*broken, good]) as srv:
        v = run(srv, ITEMS[:1], retry=RetryPolicy(max_attempts=6, initial_wait=0.0, max_wait=0.01))[0]
    assert v.status == "ok" and v.score == 2 and len(srv.requests) == 5


def test_a_provider_bug_is_one_unscored_item_not_a_dead_run() -> None:
    from judge.providers.fake import FakeProvider

    def script(messages, config):
        if "boom" in messages[-1]["content"]:
            raise ValueError("provider bug")
        return '{"reasoning": "r", "score": 3}'

    items = [{"id": "a", "input": "q", "output": "boom"}, {"id": "b", "input": "q", "output": "fine"}]
    a, b = score(items, "factuality", FakeProvider("scripted", script=script), cache=False)
    assert a.status == "unscored" and a.error == "internal error: ValueError: provider bug"
    assert b.status == "ok" and b.score == 3


def test_server_without_structured_output_falls_back_to_text_parser() -> None:
    def responder(req):
        if "response_format" in req:
            return Reply("response_format json_schema is not supported", status=400)
        return Reply("The answer is right.\nScore: 5")

    with LoopbackServer(responder=responder) as srv:
        results = run(srv, ITEMS[:3], concurrency=1)
    assert [v.score for v in results] == [5.0, 5.0, 5.0]
    formats = [(r.get("response_format") or {}).get("type") for r in srv.requests]
    assert formats == ["json_schema", "json_object", None, None, None]  # each form tried once, then text


def test_cache_keys_the_model_not_the_url_spelling(tmp_path) -> None:
    cache = tmp_path / "cache"
    with LoopbackServer(responder=lambda r: Reply('{"reasoning": "A", "score": 4}')) as a:
        first = run(a, ITEMS[:2], cache=cache)
    # the same model on a restarted server, on another port, spelled "localhost": served from the cache
    with LoopbackServer(responder=lambda r: Reply('{"reasoning": "B", "score": 1}')) as b:
        second = score(
            ITEMS[:2], "factuality", "openai/judge-model", base_url=f"http://localhost:{b.port}/v1/", cache=cache
        )
        assert len(b.requests) == 0
        # another namespace is another judge: asked again
        third = run(b, ITEMS[:2], cache=cache, cache_namespace="server-b")
        assert len(b.requests) == 2
    assert [v.score for v in first] == [v.score for v in second] == [4.0, 4.0] and all(v.cached for v in second)
    assert [v.score for v in third] == [1.0, 1.0] and not any(v.cached for v in third)


def test_cache_keys_the_structured_output_form(tmp_path) -> None:
    cache = tmp_path / "cache"
    with LoopbackServer() as srv:
        run(srv, ITEMS[:2], cache=cache)
        text = run(srv, ITEMS[:2], cache=cache, structured_output=False)
        assert len(srv.requests) == 4 and not any(v.cached for v in text)
        assert "response_format" not in srv.requests[-1]
        again = run(srv, ITEMS[:2], cache=cache, structured_output=False)
        assert len(srv.requests) == 4 and all(v.cached for v in again)


def test_unscored_reason_counts_real_attempts() -> None:
    with LoopbackServer(script=["500", "500", "500"]) as srv:
        v = run(srv, ITEMS[:1], retry=RetryPolicy(max_attempts=3, initial_wait=0.0, max_wait=0.01))[0]
    assert v.error.startswith("ServerError after 3 attempts")
