"""Reading and writing row files: JSONL, CSV and (with pyarrow) Parquet.

Rows come back with the line they came from, so every later error can name the file, line and field.
Writes go to a temporary file next to the target and are renamed into place, so nothing is ever
half written; :class:`JsonlAppender` streams results as they finish and fsyncs on close.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from judge.errors import DataError

SUPPORTED = (".jsonl", ".json", ".csv", ".parquet")


@dataclass(frozen=True)
class Row:
    """One record of a data file and where it came from."""

    data: dict[str, Any]
    path: str
    line: int

    def error(self, message: str, field: str | None = None) -> DataError:
        """Build a :class:`DataError` that points at this row."""
        return DataError(message, path=self.path, line=self.line, field=field)


def read_rows(path: str | Path) -> list[Row]:
    """Read every record of a JSONL, JSON (list), CSV or Parquet file.

    Raises :class:`DataError` naming the file and line for unreadable records.
    """
    p = Path(path)
    if not p.exists():
        raise DataError("file not found", path=p)
    if p.is_dir():
        raise DataError("is a directory, expected a .jsonl, .csv or .parquet file", path=p)
    suffix = p.suffix.lower()
    if suffix == ".jsonl" or suffix == ".ndjson":
        return list(_read_jsonl(p))
    if suffix == ".json":
        return _read_json(p)
    if suffix == ".csv" or suffix == ".tsv":
        return list(_read_csv(p, delimiter="\t" if suffix == ".tsv" else ","))
    if suffix == ".parquet":
        return _read_parquet(p)
    raise DataError(f"unsupported file type '{suffix}' (use one of {', '.join(SUPPORTED)})", path=p)


def _read_jsonl(p: Path) -> Iterator[Row]:
    # split on "\n" only: str.splitlines() would also split inside strings holding U+2028 and friends
    for lineno, text in enumerate(_read_text(p).split("\n"), start=1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"invalid JSON ({exc.msg} at column {exc.colno})", path=p, line=lineno) from None
        if not isinstance(obj, dict):
            raise DataError(f"expected a JSON object, got {type(obj).__name__}", path=p, line=lineno)
        yield Row(obj, str(p), lineno)


def _read_text(p: Path) -> str:
    """The file as text: UTF-8, with or without a byte-order mark (Excel and Notepad write one)."""
    raw = p.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        bad = raw[exc.start : exc.start + 1].hex()
        raise DataError(
            f"not UTF-8 text (byte 0x{bad}): the file must be UTF-8; re-save it as UTF-8 "
            "(from latin-1: iconv -f latin1 -t utf-8 IN > OUT)",
            path=p,
            line=line,
        ) from None


def _read_json(p: Path) -> list[Row]:
    try:
        obj = json.loads(_read_text(p))
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON ({exc.msg})", path=p, line=exc.lineno) from None
    if not isinstance(obj, list):
        raise DataError("expected a JSON list of objects (or use .jsonl)", path=p)
    rows = []
    for i, item in enumerate(obj, start=1):
        if not isinstance(item, dict):
            raise DataError(f"record {i}: expected an object, got {type(item).__name__}", path=p)
        rows.append(Row(item, str(p), i))
    return rows


def _read_csv(p: Path, delimiter: str) -> Iterator[Row]:
    reader = csv.DictReader(io.StringIO(_read_text(p), newline=""), delimiter=delimiter)
    if reader.fieldnames is None:
        return
    for record in reader:
        # reader.line_num is the physical line the record ended on (1 = header)
        if None in record:
            raise DataError("more values than header columns", path=p, line=reader.line_num)
        yield Row({k: v for k, v in record.items() if k is not None}, str(p), reader.line_num)


def _read_parquet(p: Path) -> list[Row]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError("reading Parquet needs pyarrow: pip install 'judge[parquet]'", path=p) from None
    table = pq.read_table(p)
    return [Row(rec, str(p), i) for i, rec in enumerate(table.to_pylist(), start=1)]


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: never half written."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl(path: str | Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Write records as JSON lines, atomically."""
    atomic_write_text(path, "".join(json.dumps(dict(r), ensure_ascii=False) + "\n" for r in records))


class JsonlAppender:
    """Streams JSON lines into a file as results arrive.

    Writes into ``<path>.partial`` and renames it to ``path`` on :meth:`close`, so a reader never
    mistakes an interrupted run's output for a finished one; the partial file stays for inspection.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self._fh = self.partial.open("w", encoding="utf-8")

    def write(self, record: Mapping[str, Any]) -> None:
        self._fh.write(json.dumps(dict(record), ensure_ascii=False) + "\n")
        self._fh.flush()

    def close(self) -> None:
        """Finish the file: fsync and move it into place."""
        if self._fh.closed:
            return
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(self.partial, self.path)

    def abort(self) -> None:
        """Stop writing without moving the partial file into place."""
        if not self._fh.closed:
            self._fh.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
