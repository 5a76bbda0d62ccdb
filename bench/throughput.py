"""Judge throughput against a loopback OpenAI-compatible server with a fixed latency.

The server runs in a separate process, so this process's CPU time is the client's alone.
Prints, for each concurrency C: items/s, the ratio to the bound C / latency, CPU ms per item for
the whole client (SDK, HTTP, asyncio, cache off), per-item latency p50/p99, and, at the end, CPU
ms per item for render + parse alone. Each row runs about --seconds of steady state.

    python bench/throughput.py [--items 3200] [--seconds 20] [--latency-ms 200] [--concurrency 1 8 32]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from judge import load_rubric
from judge.dataset import coerce_items
from judge.runner import build_grader, run_items, run_sync
from judge.verdict import parse_verdict


def start_server(latency_ms: float) -> tuple[subprocess.Popen, str]:
    port_file = Path(tempfile.mkdtemp()) / "port"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "judge.testing.server",
            "--port-file",
            str(port_file),
            "--latency-ms",
            str(latency_ms),
            "--max-seconds",
            "600",
        ],
    )
    for _ in range(200):
        if port_file.exists() and port_file.read_text():
            return proc, f"http://127.0.0.1:{port_file.read_text()}/v1"
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("loopback server did not start")


def render_parse_cpu_ms(items, n_rounds: int = 5) -> float:
    rubric = load_rubric("factuality")
    completion = '{"reasoning": "The answer matches the reference on the main point.", "score": 4}'
    start = time.process_time()
    for _ in range(n_rounds):
        for item in items:
            rubric.render(item.values(), "text")
            parse_verdict(completion, rubric)
    return (time.process_time() - start) * 1000 / (n_rounds * len(items))


async def one_run(base_url: str, items, concurrency: int):
    grader = build_grader("factuality", "openai/bench-judge", base_url=base_url, api_key="x", cache=False)
    try:
        return await run_items(grader, items, concurrency=concurrency)
    finally:
        await grader.provider.aclose()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=3200)
    ap.add_argument("--seconds", type=float, default=20.0, help="Target duration of each row (sets its item count).")
    ap.add_argument("--latency-ms", type=float, default=200.0)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    args = ap.parse_args()

    items = coerce_items(
        [
            {
                "id": f"i{i}",
                "input": f"What is {i} times 3? Explain briefly.",
                "output": f"It is {3 * i}.",
                "reference": str(3 * i),
            }
            for i in range(args.items)
        ]
    )
    proc, base_url = start_server(args.latency_ms)
    try:
        run_sync(one_run(base_url, items[:16], 8))  # warm-up: the SDK imports its types on first use
        print(f"loopback server latency {args.latency_ms:.0f} ms, {args.items} items, cache off")
        head = f"{'C':>4} {'items':>6} {'wall s':>8} {'items/s':>9} {'bound':>7} {'ratio':>6} {'CPU ms/item':>12}"
        print(head + f" {'p50 ms':>7} {'p99 ms':>7}")
        for c in args.concurrency:
            n = min(args.items, max(20, int(c * 1000 / args.latency_ms * args.seconds)))  # steady state
            cpu0, t0 = time.process_time(), time.perf_counter()
            results = run_sync(one_run(base_url, items[:n], c))
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            assert all(v.status == "ok" for v in results), "bench run had unscored items"
            rate, bound = n / wall, c * 1000 / args.latency_ms
            lat = sorted(v.latency_ms for v in results)
            p50, p99 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(0.99 * len(lat)))]
            row = f"{c:>4} {n:>6} {wall:>8.2f} {rate:>9.2f} {bound:>7.1f} {rate / bound:>6.3f} {cpu * 1000 / n:>12.2f}"
            print(row + f" {p50:>7.1f} {p99:>7.1f}")
        print(f"render + parse alone: {render_parse_cpu_ms(items[:200]):.3f} CPU ms/item")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
