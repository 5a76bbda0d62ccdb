"""Judge throughput against a loopback OpenAI-compatible server with a fixed latency.

The server runs in a separate process, so this process's CPU time is the client's alone.
Prints, for each concurrency C: items/s, the ratio to the bound C / latency, CPU ms per item for
the whole client (SDK, HTTP, asyncio, cache off), per-item latency p50/p99, and, at the end, CPU
ms per item for render + parse alone. Each row runs about --seconds of steady state.

``--code DIR`` runs the rows with another copy of the package (DIR/judge, e.g. an older commit's
``git archive REV judge rubrics``), each row in its own process with DIR first on PYTHONPATH.
``--compare DIR`` runs every row with DIR's code and with this checkout's, alternately
(old, new, new, old, ... so a drift in the machine's load weighs on both alike), ``--rounds`` times
each, every run in its own process against the same server; it prints each run, then per C the
medians and the ratios new / old of items/s and of CPU ms per item.

    python bench/throughput.py [--items 3200] [--seconds 20] [--latency-ms 200] [--concurrency 1 8 32]
    python bench/throughput.py --code /tmp/old              # the rows with another copy of judge
    python bench/throughput.py --compare /tmp/old --seconds 8 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from judge import load_rubric
from judge.dataset import coerce_items
from judge.runner import build_grader, run_items, run_sync
from judge.verdict import parse_verdict

CHECKOUT = Path(__file__).resolve().parent.parent


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
            "3600",
        ],
    )
    for _ in range(200):
        if port_file.exists() and port_file.read_text():
            return proc, f"http://127.0.0.1:{port_file.read_text()}/v1"
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("loopback server did not start")


def make_items(n: int) -> list[Any]:
    return coerce_items(
        [
            {
                "id": f"i{i}",
                "input": f"What is {i} times 3? Explain briefly.",
                "output": f"It is {3 * i}.",
                "reference": str(3 * i),
            }
            for i in range(n)
        ]
    )


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


def row_size(c: int, args: argparse.Namespace) -> int:
    """Items for about ``--seconds`` of steady state at concurrency ``c``."""
    return min(args.items, max(20, int(c * 1000 / args.latency_ms * args.seconds)))


def measure(base_url: str, items: list[Any], c: int, latency_ms: float) -> dict[str, float]:
    """One row in this process: ``items`` at concurrency ``c``, timed after the imports and the warm-up."""
    n = len(items)
    cpu0, t0 = time.process_time(), time.perf_counter()
    results = run_sync(one_run(base_url, items, c))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    assert all(v.status == "ok" for v in results), "bench run had unscored items"
    lat = sorted(v.latency_ms for v in results)
    return {
        "c": c,
        "n": n,
        "wall": wall,
        "rate": n / wall,
        "bound": c * 1000 / latency_ms,
        "cpu_ms": cpu * 1000 / n,
        "p50": lat[len(lat) // 2],
        "p99": lat[min(len(lat) - 1, int(0.99 * len(lat)))],
    }


def warm_up(base_url: str, items: list[Any]) -> None:
    run_sync(one_run(base_url, items[:16], 8))  # the SDK imports its types on first use


def in_child(code: Path, base_url: str, c: int, n: int, args: argparse.Namespace) -> dict[str, Any]:
    """One row in a fresh process whose ``judge`` is ``code``/judge (checked: it prints where it came from)."""
    code = code.resolve()  # the child runs in a temp folder
    env = {**os.environ, "PYTHONPATH": str(code) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, __file__, "--row", str(c), "--row-items", str(n), "--base-url", base_url]
    cmd += ["--latency-ms", str(args.latency_ms)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    if proc.returncode != 0:
        raise SystemExit(f"row C={c} with {code} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    if Path(row["judge"]).resolve() != (code / "judge").resolve():
        raise SystemExit(f"the row meant for {code}/judge ran {row['judge']}")
    return row


def format_row(r: dict[str, Any], label: str = "") -> str:
    line = f"{r['c']:>4} {r['n']:>6} {r['wall']:>8.2f} {r['rate']:>9.2f} {r['bound']:>7.1f} "
    line += f"{r['rate'] / r['bound']:>6.3f} {r['cpu_ms']:>12.2f} {r['p50']:>7.1f} {r['p99']:>7.1f}"
    return f"{label:<5}{line}" if label else line


HEAD = f"{'C':>4} {'items':>6} {'wall s':>8} {'items/s':>9} {'bound':>7} {'ratio':>6} {'CPU ms/item':>12}"
HEAD += f" {'p50 ms':>7} {'p99 ms':>7}"


def compare(base_url: str, old: Path, args: argparse.Namespace) -> None:
    """Each row with ``old``'s code and this checkout's, alternately; medians and new / old ratios."""
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    print(f"{'code':<5}{HEAD}  (old = {old}, new = {CHECKOUT})", flush=True)
    for c in args.concurrency:
        n = row_size(c, args)
        for r in range(args.rounds):
            order = [("old", old), ("new", CHECKOUT)]
            for label, code in order if r % 2 == 0 else order[::-1]:
                row = in_child(code, base_url, c, n, args)
                runs.setdefault((label, c), []).append(row)
                print(format_row(row, label), flush=True)
    print(f"\nmedians of {args.rounds} runs each [min-max]; ratio = new / old")
    head = f"{'C':>4} {'old items/s':>19} {'new items/s':>19} {'ratio':>6}"
    print(head + f"  {'old CPU ms/item':>17} {'new CPU ms/item':>17} {'ratio':>6}")
    for c in args.concurrency:
        line = f"{c:>4}"
        for key, width, fmt in (("rate", 19, ".1f"), ("cpu_ms", 17, ".2f")):
            med = {}
            for label in ("old", "new"):
                vals = [row[key] for row in runs[(label, c)]]
                med[label] = statistics.median(vals)
                line += " " + f"{med[label]:{fmt}} [{min(vals):{fmt}}-{max(vals):{fmt}}]".rjust(width)
            line += f" {med['new'] / med['old']:>6.3f} "
        print(line.rstrip())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=3200)
    ap.add_argument("--seconds", type=float, default=20.0, help="Target duration of each row (sets its item count).")
    ap.add_argument("--latency-ms", type=float, default=200.0)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--code", type=Path, default=None, metavar="DIR", help="Run the rows with DIR/judge, each alone.")
    ap.add_argument(
        "--compare", type=Path, default=None, metavar="DIR", help="Run each row with DIR/judge and this checkout's."
    )
    ap.add_argument("--rounds", type=int, default=3, help="With --compare: runs of each row per copy.")
    ap.add_argument("--row", type=int, default=None, help=argparse.SUPPRESS)  # one row in this process, as JSON
    ap.add_argument("--row-items", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--base-url", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.row is not None:  # a child of --code / --compare
        items = make_items(args.row_items)
        warm_up(args.base_url, items)
        row = measure(args.base_url, items, args.row, args.latency_ms)
        import judge

        print(json.dumps({**row, "judge": str(Path(judge.__file__).parent)}))
        return

    items = make_items(args.items)
    proc, base_url = start_server(args.latency_ms)
    try:
        print(f"loopback server latency {args.latency_ms:.0f} ms, {args.items} items, cache off")
        if args.compare is not None:
            compare(base_url, args.compare, args)
            return
        if args.code is None:
            warm_up(base_url, items)
        else:
            print(f"code: {args.code}/judge, each row in its own process")
        print(HEAD)
        for c in args.concurrency:
            n = row_size(c, args)
            if args.code is None:
                row = measure(base_url, items[:n], c, args.latency_ms)
            else:
                row = in_child(args.code, base_url, c, n, args)
            print(format_row(row))
        if args.code is None:
            print(f"render + parse alone: {render_parse_cpu_ms(items[:200]):.3f} CPU ms/item")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
