"""A content-addressed SQLite cache of judge calls.

The key is a hash of everything that changes a call's output -- provider identity, model,
messages, generation config (temperature, seed, ...), rubric hash and score mode -- so a rerun
costs nothing, an interrupted run resumes where it stopped, and editing a rubric invalidates
exactly the calls it affects.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

SCHEMA = [
    # append-only migrations: index = user_version after applying
    "CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, value TEXT NOT NULL, created REAL NOT NULL)",
    # judge.batch: the batches submitted from this cache and the call keys each carries (for resuming)
    "CREATE TABLE IF NOT EXISTS batches (id TEXT PRIMARY KEY, status TEXT NOT NULL, provider TEXT NOT NULL,"
    " created REAL NOT NULL, n_lines INTEGER NOT NULL, info TEXT NOT NULL, done INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS batch_calls (key TEXT NOT NULL, batch TEXT NOT NULL, PRIMARY KEY (key, batch))",
]


def default_cache_dir() -> Path:
    """``$JUDGE_CACHE_DIR`` or ``~/.cache/judge``."""
    return Path(os.environ.get("JUDGE_CACHE_DIR") or Path.home() / ".cache" / "judge")


def cache_key(**parts: Any) -> str:
    """sha256 of the canonical JSON of ``parts``."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class Cache:
    """Key -> JSON value store in one SQLite file (WAL mode; safe across processes)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        for i, stmt in enumerate(SCHEMA[version:], start=version + 1):
            self._conn.execute(stmt)
            self._conn.execute(f"PRAGMA user_version={i}")
        self.hits = 0
        self.misses = 0

    @classmethod
    def in_dir(cls, directory: str | Path | None = None) -> Cache:
        return cls(Path(directory or default_cache_dir()) / "calls.sqlite")

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute("SELECT value FROM calls WHERE key = ?", (key,)).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return json.loads(row[0])

    def put(self, key: str, value: dict[str, Any]) -> None:
        blob = json.dumps(value, ensure_ascii=False)
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO calls (key, value, created) VALUES (?, ?, ?)", (key, blob, time.time())
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()
