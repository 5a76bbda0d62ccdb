"""Batch-mode client cost: N items through ``--batch`` against the loopback server in its own process.

The server (``python -m judge.testing.server --batch-seconds S``) answers a batch S seconds after it
is created; the client process is timed from submission to verdicts in hand (wall and CPU), then
again for a rerun served entirely from the cache. Printed: wall, client CPU per item, peak RSS,
cache bytes per item, and the summary's batch vs synchronous cost line.

    python bench/batch_mode.py [--items 10000] [--batch-seconds 1]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from judge import score
from judge.batch import BatchSettings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--batch-seconds", type=float, default=1.0)
    args = ap.parse_args()
    items = [
        {"id": f"i{i}", "input": f"Question {i}: what is {i} + {i}?", "output": str(2 * i), "reference": str(2 * i)}
        for i in range(args.items)
    ]
    with tempfile.TemporaryDirectory() as d:
        port_file = Path(d) / "port"
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "judge.testing.server",
                "--port-file",
                str(port_file),
                "--max-seconds",
                "900",
                "--batch-seconds",
                str(args.batch_seconds),
            ]  # fmt: skip
        )
        try:
            while not port_file.exists() or not port_file.read_text():
                time.sleep(0.05)
            kw = {
                "base_url": f"http://127.0.0.1:{port_file.read_text()}/v1",
                "api_key": "k",
                "cache": d,
                "batch": BatchSettings(poll_interval=0.2),
            }
            runs = []
            for _ in range(2):  # the second run is served from the cache
                wall, cpu = time.perf_counter(), time.process_time()
                results = score(items, "factuality", "openai/gpt-4o-mini", **kw)
                runs.append((time.perf_counter() - wall, time.process_time() - cpu, results))
        finally:
            server.terminate()
            server.wait()
        (w1, c1, r1), (w2, c2, _) = runs
        n = len(items)
        print(f"items {n}, ok {sum(v.status == 'ok' for v in r1)}")
        print(f"batch run     wall {w1:.2f} s   client CPU {c1:.2f} s ({c1 / n * 1000:.2f} ms/item)")
        print(f"cached rerun  wall {w2:.2f} s   client CPU {c2:.2f} s")
        print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; "
              f"cache {os.path.getsize(Path(d) / 'calls.sqlite') / n:.0f} B/item")  # fmt: skip
        print(r1.batch_report.line())


if __name__ == "__main__":
    main()
