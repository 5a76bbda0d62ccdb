"""Our client against a server nobody here wrote: llama.cpp (llama-cpp-python's OpenAI-compatible server).

The server is built from PyPI sources once (``judge.testing.llamacpp``; a few minutes on two cores,
then reused from ``~/.cache/judge/interop``) and serves the SmolLM2-135M-Instruct GGUF that
``local/smollm2`` also loads, so the logprob scores of the two are independent computations of the
same model's probabilities (llama.cpp's Q4_1 kernels vs transformers' dequantised float32) and must
rank the items alike. A failed build fails these tests: it is never a skip.

Each test runs the real CLI in a subprocess and reads its exit code, stderr and output file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from judge.testing import llamacpp
from judge.verdict import unscored_cause
from tests.conftest import EXAMPLES, shared_data

pytestmark = pytest.mark.slow

QA = EXAMPLES / "qa.jsonl"
FALLBACK = "rejects response_format json_schema (HTTP 500: "


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[llamacpp.LlamaCppServer]:
    started = time.monotonic()
    root = llamacpp.build()
    built = time.monotonic() - started
    log = tmp_path_factory.mktemp("llamacpp") / "server.log"
    # n_ctx 8192 (SmolLM2's trained length): MT-Bench prompts with two answers run past 2048 tokens;
    # the lifetime bounds a server whose test process hung (the fixture stops it long before)
    with llamacpp.LlamaCppServer(root, llamacpp.smollm2_gguf(), n_ctx=8192, lifetime_s=1800, log_path=log) as srv:
        print(f"\nllama-cpp-python {llamacpp.VERSION} at {srv.base_url}: build/reuse {built:.0f} s", file=sys.stderr)
        yield srv
        proc = srv.proc
    assert proc is not None and proc.poll() is not None, "the server outlived its fixture"


def judge_cli(args: list[str], tmp_path: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "JUDGE_SCORE_"))}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", JUDGE_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("JUDGE_MODEL", None)
    return subprocess.run(
        [sys.executable, "-m", "judge", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check_exit(proc: subprocess.CompletedProcess[str], transport: list[str]) -> None:
    """0 when no item is unscored for a transport reason; 3 (saying so) when one is."""
    expected = 3 if transport else 0
    assert proc.returncode == expected, f"exit {proc.returncode}, expected {expected}\n{proc.stderr[-3000:]}"


def is_transport(error: str | None) -> bool:
    """Whether an unscored item's error is a transport cause (the exit code's rule, judge.verdict)."""
    return unscored_cause(error) == "transport"


def summarise(name: str, rows: list[dict[str, Any]], key: str = "status") -> str:
    reasons = Counter((r.get("error") or "")[:90] for r in rows if r.get(key) != "ok")
    return f"{name}: {sum(r.get(key) == 'ok' for r in rows)}/{len(rows)} scored; unscored: {dict(reasons)}"


def score_qa(
    server: llamacpp.LlamaCppServer, tmp_path: Path, mode: str
) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    out = tmp_path / f"{mode}.jsonl"
    proc = judge_cli(
        ["score", str(QA), "-r", "factuality", "-j", "openai/local", "--base-url", server.base_url,
         "--score-mode", mode, "-o", str(out), "--concurrency", "4", "--timeout", "300", "--no-progress"],
        tmp_path,
    )  # fmt: skip
    assert out.exists(), f"exit {proc.returncode}: no output\n{proc.stderr[-3000:]}\n{server.log_tail()}"
    return proc, read_jsonl(out)


def test_text_mode_falls_back_from_json_schema_once_and_scores_every_item(server, tmp_path: Path) -> None:
    proc, rows = score_qa(server, tmp_path, "text")
    print(summarise("text", rows), file=sys.stderr)
    ids = [json.loads(line)["id"] for line in QA.read_text().splitlines() if line.strip()]
    assert sorted(r["id"] for r in rows) == sorted(ids)  # no item lost, none doubled
    # llama-cpp-python refuses json_schema with HTTP 500; the client says so once (whatever the
    # concurrency) and goes on with {"type": "json_object", "schema": ...}, which llama.cpp turns
    # into a grammar: the verdict is valid JSON on the scale, so every item scores
    assert proc.stderr.count(FALLBACK) == 1, proc.stderr[-3000:]
    assert "Input should be 'text' or 'json_object'" in proc.stderr
    assert "judging with a JSON object with the schema instead" in proc.stderr
    transport = [r["error"] for r in rows if r["status"] != "ok" and is_transport(r["error"])]
    check_exit(proc, transport)
    assert not transport, transport
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == len(rows), summarise("text", rows)
    for r in ok:
        assert r["score"] in (1, 2, 3, 4, 5)
        verdict = json.loads(r["raw"])  # grammar-constrained: the raw completion is the JSON verdict
        assert verdict["score"] == r["score"] and isinstance(verdict["reasoning"], str)
        assert r["prompt_tokens"] > 0 and r["completion_tokens"] > 0


def test_logprob_mode_ranks_items_like_the_in_process_local_judge(server, tmp_path: Path) -> None:
    from scipy.stats import spearmanr

    from judge import score

    proc, rows = score_qa(server, tmp_path, "logprob")
    print(summarise("logprob", rows), file=sys.stderr)
    transport = [r["error"] for r in rows if r["status"] != "ok" and is_transport(r["error"])]
    check_exit(proc, transport)
    assert FALLBACK not in proc.stderr  # logprob calls send no response_format
    assert len(rows) == 22 and all(r["status"] == "ok" for r in rows), summarise("logprob", rows)
    for r in rows:
        probs = r["score_probs"]
        assert (
            set(probs) <= {"1", "2", "3", "4", "5"} and abs(sum(probs.values()) - 1) < 1e-4
        )  # written rounded to 6 places
        assert 1 <= r["score"] <= 5

    local = {v.id: v for v in score(QA, "factuality", "local/smollm2", score_mode="logprob", cache=False)}
    assert all(v.status == "ok" for v in local.values())
    ids = sorted(r["id"] for r in rows)
    server_scores = {r["id"]: r["score"] for r in rows}
    rho = spearmanr([server_scores[i] for i in ids], [local[i].score for i in ids]).statistic
    gap = max(abs(server_scores[i] - local[i].score) for i in ids)
    print(f"logprob: llama.cpp vs in-process local/smollm2: Spearman {rho:.3f}, max |diff| {gap:.3f}", file=sys.stderr)
    # the same weights through two implementations (Q4_1 kernels, fp32 dequantised): the same ranking
    assert rho >= 0.9, (rho, [(i, server_scores[i], local[i].score) for i in ids])
    assert gap < 0.5


@pytest.mark.parametrize("mode", ["text", "logprob"])
def test_mtbench_judges_one_pair_in_both_orders(server, tmp_path: Path, mode: str) -> None:
    mt = shared_data("mt_bench")
    pairs = tmp_path / "pairs.jsonl"
    # question 134 (extraction, short answers, no reference needed), GPT-4 vs LLaMA-13B, turn 1
    pairs.write_text(json.dumps({"question_id": 134, "model_1": "gpt-4", "model_2": "llama-13b", "turn": 1}) + "\n")
    out = tmp_path / "judged.jsonl"
    proc = judge_cli(
        ["mtbench", "judge", "--questions", str(mt / "question.jsonl"),
         "--answers", str(mt / "model_answer" / "gpt-4.jsonl"),
         "--answers", str(mt / "model_answer" / "llama-13b.jsonl"),
         "--mode", "pairwise-all", "--pairs", str(pairs), "--judge", "openai/local", "--base-url", server.base_url,
         "--score-mode", mode, "--max-tokens", "256", "--concurrency", "2", "--out", str(out)],
        tmp_path,
    )  # fmt: skip
    assert out.exists(), f"exit {proc.returncode}\n{proc.stderr[-3000:]}\n{server.log_tail()}"
    rows = read_jsonl(out)
    print(summarise(f"mtbench {mode}", rows), file=sys.stderr)
    assert [(r["question_id"], r["model_1"], r["model_2"], r["turn"]) for r in rows] == [(134, "gpt-4", "llama-13b", 1)]
    (row,) = rows
    transport = [row["error"]] if row["status"] != "ok" and is_transport(row["error"]) else []
    check_exit(proc, transport)
    assert row["status"] == "ok", row["error"]
    assert row["winner"] in ("model_1", "model_2", "tie")
    assert row["g1_winner"] in ("model_1", "model_2", "tie") and row["g2_winner"] in ("model_1", "model_2", "tie")
    # game 1 shows model_1 first, game 2 model_2 first: both prompts carry both answers, swapped
    assert row["g1_user_prompt"] != row["g2_user_prompt"]
    if mode == "text":
        assert proc.stderr.count(FALLBACK) == 1, proc.stderr[-3000:]
        assert row["g1_judgment"] and row["g2_judgment"]
    else:
        assert FALLBACK not in proc.stderr
