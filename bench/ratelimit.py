"""Adaptive vs fixed concurrency vs inspect-ai against a rate-limited loopback server (token buckets, 429).

The loopback server answers after --latency-ms and enforces a request bucket and a token bucket
(``judge.testing.server.RateLimit``: each holds one second's worth and refills continuously;
tokens are the prompt's words, as its usage field counts them). Beyond them it answers 429 with the
wait in ``Retry-After`` / ``retry-after-ms``; every answer carries OpenAI's ``x-ratelimit-*`` headers
unless a row says "no headers" (as vLLM or llama.cpp behind a proxy would). Each scenario runs the same
items, in the same process one after the other (a fresh server, full buckets, per row): the adaptive
limiter as the runner builds it (with and without the headers), fixed semaphores of several sizes, and
inspect-ai at its defaults (``model_graded_qa`` from a separate virtualenv, ``--inspect-python``;
the row is skipped, saying so, where that python is missing). Printed per run: items ok and lost,
wall time, goodput (ok verdicts/s), its ratio to what the binding bucket allows over that wall time
(burst included), and the share of requests answered 429.

    python bench/ratelimit.py [--seconds 12] [--latency-ms 100] [--concurrency 32] [--fixed 4,16,32]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from judge.dataset import coerce_items
from judge.limiter import AdaptiveLimiter, FixedLimiter, Limiter
from judge.retry import RetryPolicy
from judge.runner import SLOW_START, build_grader, run_items, run_sync
from judge.testing.server import LoopbackServer, RateLimit, Reply, judge_responder, prompt_text

INSPECT_PYTHON = Path.home() / "peer-venvs" / "main" / "bin" / "python"
INSPECT_SCRIPT = Path(__file__).with_name("ratelimit_inspect.py")

SCENARIOS = [
    # name, requests/s, tokens/min
    ("requests bind: 50 req/s, 1M tok/min", 50.0, 1_000_000.0),
    ("tokens bind: 50 req/s, 40k tok/min", 50.0, 40_000.0),
]


def items(n: int, tag: str) -> list[dict[str, str]]:
    return [{"id": f"{tag}{i}", "input": f"What is {i} + {i}? ({tag})", "output": str(2 * i)} for i in range(n)]


def responder(request: dict[str, Any]) -> Reply:
    """The loopback judge, and ``GRADE: C`` for inspect-ai's model_graded_qa prompt."""
    return Reply("GRADE: C") if "GRADE: " in prompt_text(request) else judge_responder(request)


def summary(
    srv: LoopbackServer, bucket: RateLimit, rps: float, tpm: float, ok: int, n: int, wall: float
) -> dict[str, float]:
    tokens = [len(prompt_text(r).split()) for r in srv.requests]
    per_request_tokens = sum(tokens) / max(1, len(tokens))
    rate = min(rps, tpm / 60.0 / per_request_tokens)  # what the binding bucket allows per second
    allowed = min(bucket.capacity[0], bucket.capacity[1] / per_request_tokens) + rate * wall
    return {
        "ok": ok,
        "lost": n - ok,
        "n": n,
        "wall": wall,
        "goodput": ok / wall,
        "rate": rate,
        "ratio": ok / allowed,
        "requests": len(srv.requests),
        "share_429": srv.rejected_429 / max(1, len(srv.requests)),
    }


def one_run(
    name: str, rps: float, tpm: float, n: int, latency_ms: float, limiter: Limiter, headers: bool = True
) -> dict[str, float]:
    bucket = RateLimit(requests_per_s=rps, tokens_per_min=tpm, burst_s=1.0, headers=headers)
    with LoopbackServer(latency_ms=latency_ms, rate_limit=bucket, max_seconds=600) as srv:
        grader = build_grader("factuality", "openai/bench-judge", base_url=srv.base_url, api_key="x", cache=False)
        grader.retry = RetryPolicy(max_attempts=6)

        async def go():
            try:
                return await run_items(grader, coerce_items(items(n, name)), limiter=limiter)
            finally:
                await grader.provider.aclose()

        start = time.perf_counter()
        results = run_sync(go())
        wall = time.perf_counter() - start
        return summary(srv, bucket, rps, tpm, sum(v.status == "ok" for v in results), n, wall)


def inspect_run(name: str, rps: float, tpm: float, n: int, latency_ms: float, python: Path) -> dict[str, float]:
    """inspect-ai at its defaults, in a subprocess with its own virtualenv, against the same kind of server."""
    bucket = RateLimit(requests_per_s=rps, tokens_per_min=tpm, burst_s=1.0)
    with LoopbackServer(responder, latency_ms=latency_ms, rate_limit=bucket, max_seconds=900) as srv:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "VIRTUAL_ENV"))}
        proc = subprocess.run(
            [str(python), str(INSPECT_SCRIPT), srv.base_url, str(n), name],
            capture_output=True,
            text=True,
            timeout=900,
            env=env,
            check=False,
        )
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode or not lines:
            raise RuntimeError(f"inspect-ai run failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
        out = json.loads(lines[-1])
        return summary(srv, bucket, rps, tpm, int(out["scored"]), n, float(out["wall"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=12.0, help="Items per run: about this many seconds' worth.")
    ap.add_argument("--latency-ms", type=float, default=100.0)
    ap.add_argument("--concurrency", type=int, default=32, help="The adaptive limiter's bound.")
    ap.add_argument("--fixed", default="4,16,32", help="Fixed limiter sizes to compare, comma-separated.")
    ap.add_argument("--inspect-python", type=Path, default=INSPECT_PYTHON, help="A python with inspect-ai.")
    args = ap.parse_args()
    fixed = [int(k) for k in args.fixed.split(",") if k]
    has_inspect = args.inspect_python.exists()
    print(f"loopback server latency {args.latency_ms:g} ms, adaptive bound {args.concurrency} calls, 6 attempts")
    if not has_inspect:
        print(
            f"inspect-ai row skipped: no {args.inspect_python} (python3 -m venv ~/peer-venvs/main && "
            "~/peer-venvs/main/bin/pip install inspect-ai==0.3.285)",
            file=sys.stderr,
        )
    header = f"{'scenario':36} {'runner':22} {'ok':>4} {'lost':>4} {'wall s':>7} {'ok/s':>6} {'rate':>6} {'ratio':>6}"
    print(header + f" {'reqs':>5} {'429 %':>6}")
    for sc, (name, rps, tpm) in enumerate(SCENARIOS):
        words = 141  # the factuality prompt's length for these items, as the server counts tokens
        n = int(min(rps, tpm / 60 / words) * args.seconds)
        runs: list[tuple[str, Any]] = [
            ("adaptive", lambda: AdaptiveLimiter(args.concurrency, slow_start=SLOW_START)),  # as the runner builds it
            ("adaptive, no headers", lambda: AdaptiveLimiter(args.concurrency, slow_start=SLOW_START)),
            *((f"fixed {k}", lambda k=k: FixedLimiter(k)) for k in fixed),
        ]
        for i, (label, make) in enumerate(runs):
            r = one_run(f"s{sc}r{i}", rps, tpm, n, args.latency_ms, make(), headers="no headers" not in label)
            print_row(name, label, r)
        if has_inspect:
            print_row(
                name, "inspect-ai (defaults)", inspect_run(f"s{sc}i", rps, tpm, n, args.latency_ms, args.inspect_python)
            )
        else:
            print(f"{name:36} {'inspect-ai (defaults)':22} skipped: {args.inspect_python} not found")


def print_row(name: str, label: str, r: dict[str, float]) -> None:
    print(
        f"{name:36} {label:22} {r['ok']:>4} {r['lost']:>4} {r['wall']:7.2f} {r['goodput']:6.2f} {r['rate']:6.2f}"
        f" {r['ratio']:6.3f} {r['requests']:5d} {100 * r['share_429']:6.2f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
