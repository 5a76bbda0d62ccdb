"""Scattered faults vs a real rate limit: does a flaky server (random 429/500 answers with no rate-limit
headers) slow the adaptive limiter down as a rate limit would?

One process, one run per row against a fresh loopback server (``--latency-ms`` per answer): the same
``--items`` items at ``--concurrency`` with the limiter the runner builds, fault-free, then with a share of
the answers replaced at random (seeded) by faults: 429 or 500 with no ``x-ratelimit-*`` headers and no
Retry-After (a flaky proxy), and 429 with ``Retry-After: 1`` alone. Printed per row: wall time, its ratio
to the fault-free row's, items ok and lost, requests sent, mean calls in flight (sum of latencies / wall).
The goal (issue 22): scattered faults cost at most 1.5x the fault-free wall time.

    python bench/faults.py [--items 200] [--latency-ms 200] [--concurrency 32] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import threading
import time
from typing import Any

from judge.dataset import coerce_items
from judge.retry import RetryPolicy
from judge.runner import build_grader, run_items, run_sync
from judge.testing.server import LoopbackServer, Reply, judge_responder

ROWS = [
    # name, share of answers that are faults, the faults, Retry-After seconds on a 429 (None: none)
    ("fault-free", 0.0, (), None),
    ("20 % random 429/500, no headers", 0.2, ("429", "500"), None),
    ("5 % random 429, Retry-After: 1", 0.05, ("429",), 1),
]


def faulty(share: float, faults: tuple[str, ...], retry_after: int | None, seed: int) -> Any:
    rng, lock = random.Random(seed), threading.Lock()

    def respond(request: dict[str, Any]) -> Reply | str:
        with lock:
            draw, pick = rng.random(), rng.choice(faults) if faults else None
        if pick is not None and draw < share:
            if pick == "429":
                headers = {"Retry-After": str(retry_after)} if retry_after else {}
                return Reply(content='{"error": {"message": "injected 429"}}', status=429, headers=headers)
            return pick
        return judge_responder(request)

    return respond


def one_run(n: int, latency_ms: float, concurrency: int, share: float, faults: tuple, retry_after: Any, seed: int):
    with LoopbackServer(faulty(share, faults, retry_after, seed), latency_ms=latency_ms, max_seconds=600) as srv:
        grader = build_grader("factuality", "openai/bench-judge", base_url=srv.base_url, api_key="x", cache=False)
        grader.retry = RetryPolicy(max_attempts=8)
        rows = [{"id": f"i{i}", "input": f"What is {i} + {i}?", "output": str(2 * i)} for i in range(n)]

        async def go() -> list:
            try:
                return await run_items(grader, coerce_items(rows), concurrency=concurrency)
            finally:
                await grader.provider.aclose()

        start = time.perf_counter()
        results = run_sync(go())
        wall = time.perf_counter() - start
    ok = sum(v.status == "ok" for v in results)
    return {"wall": wall, "ok": ok, "lost": n - ok, "requests": len(srv.requests)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--latency-ms", type=float, default=200.0)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"{'scenario':<34}{'wall s':>8}{'x clean':>9}{'ok':>6}{'lost':>6}{'reqs':>6}{'in flight':>11}")
    clean = None
    for name, share, faults, retry_after in ROWS:
        r = one_run(args.items, args.latency_ms, args.concurrency, share, faults, retry_after, args.seed)
        clean = clean or r["wall"]
        in_flight = r["requests"] * args.latency_ms / 1000 / r["wall"]
        print(
            f"{name:<34}{r['wall']:>8.2f}{r['wall'] / clean:>9.2f}{r['ok']:>6}{r['lost']:>6}{r['requests']:>6}"
            f"{in_flight:>11.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
