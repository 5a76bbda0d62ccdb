"""Client memory and CPU per item as a ``judge score`` run grows: 10 k, 100 k, 1 M items.

Each size runs ``python -m judge score`` in its own process, on a synthetic JSONL file, with a fresh
cache folder. The parent reads that process's own rusage (``os.wait4``): peak RSS (``ru_maxrss``, the
kernel's high-water mark of the resident set) and CPU (user + system). Also printed: the cache file
per item, the wall time, and the marginal figures between two sizes (what one more item costs, the
start-up of Python and the imports left out).

Judges: ``fake/echo-score`` (in-process, no network: the client alone) and, with ``--server``, the
loopback OpenAI-compatible server (``python -m judge.testing.server`` in its own process, not counted).

    python bench/memory.py                         # 10k and 100k with fake/echo-score
    python bench/memory.py --sizes 10000 100000 1000000
    python bench/memory.py --sizes 10000 --server  # against the loopback server
    python bench/memory.py --code /tmp/old         # time another copy of the package (DIR/judge/...)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUTPUT = (
    "The capital of France is Paris, which has been the seat of the national government for most of its history; "
    "it lies on the Seine and had about 2.1 million inhabitants at the last census (item {i})."
)


def write_items(path: Path, n: int) -> int:
    """A synthetic JSONL file of ``n`` distinct QA items (~420 bytes a line); returns its size in bytes."""
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            rec = {
                "id": f"i{i}",
                "input": f"Question {i}: what is the capital of France, and how many people live there?",
                "output": OUTPUT.format(i=i),
                "reference": f"Paris (item {i})",
            }
            fh.write(json.dumps(rec) + "\n")
    return path.stat().st_size


def run_score(data: Path, workdir: Path, judge: list[str], code: str | None, env_extra: dict[str, str]) -> dict:
    """One ``judge score`` process; its peak RSS and CPU from its own rusage."""
    env = {**os.environ, **env_extra}
    if code:
        env["PYTHONPATH"] = code + os.pathsep + env.get("PYTHONPATH", "")
    out, cache = workdir / "verdicts.jsonl", workdir / "cache"
    cmd = [sys.executable, "-m", "judge", "score", str(data), "-r", "factuality", *judge]
    cmd += ["--out", str(out), "--cache-dir", str(cache), "--no-progress", "--concurrency", "16"]
    wall = time.perf_counter()
    # cwd=workdir: `python -m` puts the working folder first on sys.path; keep this checkout off it for --code
    with (workdir / "stdout").open("w+b") as so, (workdir / "stderr").open("w+b") as se:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=so, stderr=se)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (Popen.wait would reap it first)
        proc.returncode = os.waitstatus_to_exitcode(status)
        so.seek(0)
        se.seek(0)
        stdout, stderr = so.read(), se.read()
    wall = time.perf_counter() - wall
    if proc.returncode != 0:
        raise SystemExit(f"judge score exited {proc.returncode}:\n{stdout.decode()}\n{stderr.decode()}")
    db = cache / "calls.sqlite"
    cache_bytes = sum(p.stat().st_size for p in cache.glob("calls.sqlite*")) if db.exists() else 0
    lines = sum(1 for _ in out.open("rb"))
    return {
        "rss_mb": usage.ru_maxrss / 1024,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "wall_s": wall,
        "cache_bytes": cache_bytes,
        "out_lines": lines,
        "summary": stdout.decode().strip().splitlines()[1:3],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--server", action="store_true", help="Judge against the loopback server instead of fake/.")
    ap.add_argument("--code", default=None, help="Put DIR first on PYTHONPATH (DIR/judge: another copy).")
    ap.add_argument("--tmp", default=None, help="Folder for the data, outputs and caches (default: a temp dir).")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as d:
        server = None
        env_extra: dict[str, str] = {}
        judge = ["-j", "fake/echo-score"]
        if args.server:
            port_file = Path(d) / "port"
            server = subprocess.Popen(
                [sys.executable, "-m", "judge.testing.server", "--port-file", str(port_file), "--max-seconds", "7200"]
            )
            while not port_file.exists() or not port_file.read_text():
                time.sleep(0.05)
            judge = ["-j", "openai/gpt-4o-mini", "--base-url", f"http://127.0.0.1:{port_file.read_text()}/v1"]
            env_extra["OPENAI_API_KEY"] = "k"
        try:
            for n in args.sizes:
                work = Path(d) / f"n{n}"
                work.mkdir()
                data = work / "items.jsonl"
                size = write_items(data, n)
                r = run_score(data, work, judge, args.code, env_extra)
                assert r["out_lines"] == n, (r["out_lines"], n)
                r.update(n=n, data_bytes=size)
                rows.append(r)
                print(
                    f"{n:>9,} items  peak RSS {r['rss_mb']:7.1f} MB  CPU {r['cpu_s']:8.1f} s "
                    f"({r['cpu_s'] / n * 1000:.3f} ms/item)  wall {r['wall_s']:8.1f} s  "
                    f"cache {r['cache_bytes'] / n:.0f} B/item  data {size / n:.0f} B/item",
                    flush=True,
                )
                for p in work.iterdir():  # keep the disk use to one size at a time
                    if p.is_dir():
                        for q in p.iterdir():
                            q.unlink()
                        p.rmdir()
                    else:
                        p.unlink()
        finally:
            if server is not None:
                server.terminate()
                server.wait()
    for a, b in zip(rows, rows[1:], strict=False):
        dn = b["n"] - a["n"]
        print(
            f"{a['n']:,} -> {b['n']:,}: peak RSS {b['rss_mb'] - a['rss_mb']:+.1f} MB "
            f"({(b['rss_mb'] - a['rss_mb']) * 1024 * 1024 / dn:.0f} B per added item), "
            f"marginal CPU {(b['cpu_s'] - a['cpu_s']) / dn * 1000:.3f} ms/item"
        )
    print("judge:", " ".join(judge), "| code:", args.code or "this checkout", "| python", sys.version.split()[0])


if __name__ == "__main__":
    main()
