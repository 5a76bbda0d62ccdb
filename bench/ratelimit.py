"""Adaptive vs fixed concurrency against a rate-limited loopback server (token buckets, 429 + Retry-After).

The loopback server answers after --latency-ms and enforces a request bucket and a token bucket
(``judge.testing.server.RateLimit``: each holds one second's worth and refills continuously;
tokens are the prompt's words, as its usage field counts them). Beyond them it answers 429 with the
wait in ``Retry-After`` / ``retry-after-ms``. Each scenario runs the same items twice, in the same
process one after the other: with the adaptive limiter (the runner's default) and with a fixed
semaphore of the same bound. Printed per run: items ok, wall time, goodput (ok verdicts/s), its
ratio to the rate the buckets allow over that wall time (burst included), and the share of
requests answered 429.

    python bench/ratelimit.py [--seconds 20] [--latency-ms 100] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import time

from judge.dataset import coerce_items
from judge.limiter import AdaptiveLimiter, FixedLimiter, Limiter
from judge.retry import RetryPolicy
from judge.runner import SLOW_START, build_grader, run_items, run_sync
from judge.testing.server import LoopbackServer, RateLimit, prompt_text

SCENARIOS = [
    # name, requests/s, tokens/min
    ("requests bind: 50 req/s, 1M tok/min", 50.0, 1_000_000.0),
    ("tokens bind: 50 req/s, 40k tok/min", 50.0, 40_000.0),
]


def items(n: int, tag: str) -> list[dict[str, str]]:
    return [{"id": f"{tag}{i}", "input": f"What is {i} + {i}? ({tag})", "output": str(2 * i)} for i in range(n)]


def one_run(name: str, rps: float, tpm: float, n: int, latency_ms: float, limiter: Limiter) -> dict[str, float]:
    bucket = RateLimit(requests_per_s=rps, tokens_per_min=tpm, burst_s=1.0)
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
        tokens = [len(prompt_text(r).split()) for r in srv.requests]
    ok = sum(v.status == "ok" for v in results)
    per_request_tokens = sum(tokens) / len(tokens)
    rate = min(rps, tpm / 60.0 / per_request_tokens)  # what the binding bucket allows per second
    allowed = min(bucket.capacity[0], bucket.capacity[1] / per_request_tokens) + rate * wall
    return {
        "ok": ok,
        "n": n,
        "wall": wall,
        "goodput": ok / wall,
        "rate": rate,
        "ratio": ok / allowed,
        "requests": len(srv.requests),
        "share_429": srv.rejected_429 / len(srv.requests),
        "final_limit": limiter.limit,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="Items per run: about this many seconds' worth.")
    ap.add_argument("--latency-ms", type=float, default=100.0)
    ap.add_argument("--concurrency", type=int, default=32)
    args = ap.parse_args()
    print(f"loopback server latency {args.latency_ms:g} ms, bound {args.concurrency} calls in flight, 6 attempts")
    header = f"{'scenario':38} {'limiter':8} {'ok/n':>9} {'wall s':>7} {'ok/s':>6} {'rate':>6} {'ratio':>6}"
    print(header + f" {'reqs':>5} {'429 %':>6} {'limit':>5}")
    for sc, (name, rps, tpm) in enumerate(SCENARIOS):
        words = 141  # the factuality prompt's length for these items, as the server counts tokens
        n = int(min(rps, tpm / 60 / words) * args.seconds)
        for kind in ("adaptive", "fixed"):
            lim: Limiter = (
                AdaptiveLimiter(args.concurrency, slow_start=SLOW_START)  # as the runner builds it
                if kind == "adaptive"
                else FixedLimiter(args.concurrency)
            )
            r = one_run(f"s{sc}{kind[0]}", rps, tpm, n, args.latency_ms, lim)
            print(
                f"{name:38} {kind:8} {r['ok']:>4}/{r['n']:<4} {r['wall']:7.2f} {r['goodput']:6.2f} {r['rate']:6.2f}"
                f" {r['ratio']:6.3f} {r['requests']:5d} {100 * r['share_429']:6.2f} {r['final_limit']:5.1f}"
            )


if __name__ == "__main__":
    main()
