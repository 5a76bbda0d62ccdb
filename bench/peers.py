"""`judge` in the shared peer harness (../shared/bench-peers): same fake server, items and report.

Runs our judge on the harness's N items against its fault-injecting loopback server, so the
RESULT line can be read side by side with run_inspect.py / run_deepeval.py / run_ragas.py:

    python bench/peers.py 200 200 [--concurrency K] [--fault-rate 0.1 --faults 429,500,badjson]

Counts items scored, unscored (with a reason) and lost: an honest comparison under faults.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

PEERS = Path(__file__).resolve().parents[2] / "shared" / "bench-peers" / "peers"


def main() -> int:
    if not PEERS.is_dir():
        print(f"peer harness not found at {PEERS}; nothing to compare", file=sys.stderr)
        return 2
    sys.path.insert(0, str(PEERS))
    from _common import Clock, FakeServer, NetGuard, make_items, offline_env, parse_args, report

    offline_env()
    a = parse_args(sys.argv[1:])
    from judge.dataset import coerce_items
    from judge.retry import RetryPolicy
    from judge.runner import build_grader, run_items, run_sync

    guard = NetGuard()
    items = coerce_items(
        [
            {"id": str(it["id"]), "input": it["question"], "output": it["answer"], "reference": it["reference"]}
            for it in make_items(a.n)
        ]
    )
    concurrency = a.concurrency or 8
    with FakeServer(a.latency_ms, extra_args=["--fault-rate", str(a.fault_rate), "--faults", a.faults]) as srv:

        async def go():  # type: ignore[no-untyped-def]
            grader = build_grader(
                "factuality",
                "openai/gpt-4o-mini",
                base_url=srv.base_url,
                api_key="sk-fake-offline",
                cache=False,
                timeout=10,
                retry=RetryPolicy(max_attempts=6, initial_wait=0.25, max_wait=5),
            )
            try:
                return await run_items(grader, items, concurrency=concurrency)
            finally:
                await grader.provider.aclose()

        srv.reset()  # no warm-up: the peers get none either, so first-use costs count for everyone
        clk = Clock()
        results = run_sync(go())
        wall, cpu = clk.stop()
        stats = srv.stats()
    statuses = Counter(v.status for v in results)
    reasons = Counter((v.error or "").split(":")[0] for v in results if v.status == "unscored")
    report(
        "judge",
        a.n,
        a.latency_ms,
        wall,
        stats,
        statuses["ok"],
        guard,
        cpu=cpu,
        extra={
            "concurrency": concurrency,
            "unscored": statuses["unscored"],
            "lost": a.n - len(results),
            "unscored_reasons": dict(reasons),
        },
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
