"""Reading and writing row files: JSONL, CSV and (with pyarrow) Parquet.

Rows come back with the line they came from, so every later error can name the file, line and field.
Writes go to a temporary file next to the target and are renamed into place, so nothing is ever
half written; :class:`JsonlAppender` streams results as they finish and fsyncs on close.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import tempfile
from array import array
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from judge.errors import DataError

SUPPORTED = (".jsonl", ".json", ".csv", ".parquet")
MAX_DEPTH = 100
"""Deepest nesting of lists and objects a JSON input may hold: deeper is refused with the file and line, never
left to end in a RecursionError somewhere downstream (json itself gives up near 1000 levels)."""


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
    return list(iter_rows(path))


def iter_rows(path: str | Path) -> Iterator[Row]:
    """The records of a data file one at a time, as :func:`read_rows` gives them, without holding the file:
    JSONL and CSV are read line by line, Parquet one row group at a time (a JSON list is read whole).

    The file is checked when iteration starts; a bad record raises :class:`DataError` when reached.
    """
    p = Path(path)
    if not p.exists():
        raise DataError("file not found", path=p)
    if p.is_dir():
        raise DataError("is a directory, expected a .jsonl, .csv or .parquet file", path=p)
    suffix = p.suffix.lower()
    if suffix == ".jsonl" or suffix == ".ndjson":
        return _read_jsonl(p)
    if suffix == ".json":
        return iter(_read_json(p))
    if suffix == ".csv" or suffix == ".tsv":
        return _read_csv(p, delimiter="\t" if suffix == ".tsv" else ",")
    if suffix == ".parquet":
        return _read_parquet(p)
    raise DataError(f"unsupported file type '{suffix}' (use one of {', '.join(SUPPORTED)})", path=p)


def parse_json(text: str, path: str | Path, line: int | None = None) -> Any:
    """``json.loads`` for an input file: invalid JSON, and nesting deeper than :data:`MAX_DEPTH`, are a
    :class:`DataError` naming ``path`` and the line (``line``, for one line of a JSONL file; else the
    error's line in ``text``) and, for a too-deep object, its top-level field."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        where = line if line is not None else exc.lineno
        column = f" at column {exc.colno}" if line is not None else ""
        raise DataError(f"invalid JSON ({exc.msg}{column})", path=path, line=where) from None
    except RecursionError:
        raise DataError(f"nested more than {MAX_DEPTH} levels deep", path=path, line=line) from None
    deep = _too_deep(obj)
    if deep is not None:
        raise DataError(f"nested more than {MAX_DEPTH} levels deep", path=path, line=line, field=deep or None)
    return obj


def _too_deep(obj: Any) -> str | None:
    """None when ``obj`` nests at most :data:`MAX_DEPTH` levels; else the top-level key holding the deepest
    part ("" when ``obj`` is not an object). Iterative: no recursion to run out of."""
    stack: list[tuple[Any, int, str]] = [(obj, 0, "")]
    while stack:
        value, depth, top = stack.pop()
        if depth > MAX_DEPTH:
            return top
        if isinstance(value, dict):
            stack.extend(
                (v, depth + 1, top if depth else str(k)) for k, v in value.items() if isinstance(v, dict | list)
            )
        elif isinstance(value, list):
            stack.extend((v, depth + 1, top) for v in value if isinstance(v, dict | list))
    return None


MAX_YAML_CHARS = 1_000_000
"""Largest YAML text (a suite, a rubric's front matter) read: configuration, not data."""
MAX_YAML_NODES = 100_000
"""Most nodes a YAML document may stand for with its aliases expanded: a "billion laughs" bomb of a few
hundred bytes stands for billions, and everything that walks the result (validation, key lines) would."""


class YamlLimitError(yaml.MarkedYAMLError):
    """A YAML text past one of :func:`load_yaml`'s bounds (size, nesting, aliases), at the line it was found."""


def load_yaml(text: str, loader: type | None = None) -> tuple[Any, Any]:
    """The one way the project reads YAML: ``(value, node)`` of a single document, read with ``loader``
    (a ``yaml.SafeLoader`` subclass; default SafeLoader), the node for line lookups (None when empty).

    Bounded before anything is built: the text's size (:data:`MAX_YAML_CHARS`), nesting
    (:data:`MAX_DEPTH`, checked on the parser's events, which need no recursion) and the size with
    aliases expanded (:data:`MAX_YAML_NODES`). Each limit is a :class:`YamlLimitError` (a ``yaml.YAMLError``)
    with the line it was found at, so callers report it as any other YAML error."""
    loader = loader or yaml.SafeLoader

    def limit(problem: str, mark: Any = None) -> YamlLimitError:
        return YamlLimitError(problem=problem, problem_mark=mark or yaml.Mark("<yaml>", 0, 0, 0, None, None))

    if len(text) > MAX_YAML_CHARS:
        raise limit(f"{len(text):,} characters, more than the {MAX_YAML_CHARS:,} a configuration file may hold")
    depth = 0
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise limit(f"nested more than {MAX_DEPTH} levels deep", event.start_mark)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    reader = loader(text)
    try:
        node = reader.get_single_node()
        if node is None:
            return None, None
        expanded, stack = 0, [node]
        while stack:  # the node graph as a walk would see it: every alias followed again
            current = stack.pop()
            expanded += 1
            if expanded > MAX_YAML_NODES:
                raise limit(
                    f"aliases expand to more than {MAX_YAML_NODES:,} values (an alias bomb?)", current.start_mark
                )
            if isinstance(current, yaml.MappingNode):
                stack.extend(part for pair in current.value for part in pair)
            elif isinstance(current, yaml.SequenceNode):
                stack.extend(current.value)
        value = reader.construct_document(node)
    finally:
        reader.dispose()
    return value, node


def _read_jsonl(p: Path) -> Iterator[Row]:
    # split on "\n" only: str.splitlines() would also split inside strings holding U+2028 and friends
    for lineno, text in enumerate(_text_lines(p), start=1):
        if not text.strip():
            continue
        obj = parse_json(text, p, lineno)
        if not isinstance(obj, dict):
            raise DataError(f"expected a JSON object, got {type(obj).__name__}", path=p, line=lineno)
        yield Row(obj, str(p), lineno)


def _text_lines(p: Path) -> Iterator[str]:
    """The file's lines (split on "\\n" only, endings kept) as UTF-8 text, read one at a time; a
    byte-order mark is dropped. Errors as :func:`_read_text`'s, raised at the line they are on."""
    with p.open("rb") as fh:
        utf16 = _utf16_hint(fh.read(4096))
        if utf16:
            raise DataError(
                f"{utf16}: the file must be UTF-8; re-save it as UTF-8 (iconv -f utf-16 -t utf-8 IN > OUT)", path=p
            )
        fh.seek(0)
        for lineno, raw in enumerate(fh, start=1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                bad = raw[exc.start : exc.start + 1].hex()
                raise DataError(
                    f"not UTF-8 text (byte 0x{bad}): the file must be UTF-8; re-save it as UTF-8 "
                    "(from latin-1: iconv -f latin1 -t utf-8 IN > OUT)",
                    path=p,
                    line=lineno,
                ) from None


def _read_text(p: Path) -> str:
    """The file as text: UTF-8, with or without a byte-order mark (Excel and Notepad write one)."""
    raw = p.read_bytes()
    utf16 = _utf16_hint(raw)
    if utf16:
        raise DataError(
            f"{utf16}: the file must be UTF-8; re-save it as UTF-8 (iconv -f utf-16 -t utf-8 IN > OUT)", path=p
        )
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


def _utf16_hint(raw: bytes) -> str | None:
    """Say how the bytes look like UTF-16 (a byte-order mark, or NULs in every other byte), else None."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "UTF-16 text (byte-order mark)"
    head = raw[:4096]
    # ASCII written as UTF-16 has a NUL in every other byte; UTF-8 text never contains NUL
    if len(head) >= 4 and (head[1::2].count(0) > 0.4 * len(head[1::2]) or head[0::2].count(0) > 0.4 * len(head[0::2])):
        return "UTF-16 text (NUL bytes between the characters)"
    return None


def _read_json(p: Path) -> list[Row]:
    obj = parse_json(_read_text(p), p)
    if not isinstance(obj, list):
        raise DataError("expected a JSON list of objects (or use .jsonl)", path=p)
    rows = []
    for i, item in enumerate(obj, start=1):
        if not isinstance(item, dict):
            raise DataError(f"record {i}: expected an object, got {type(item).__name__}", path=p)
        rows.append(Row(item, str(p), i))
    return rows


def _read_csv(p: Path, delimiter: str) -> Iterator[Row]:
    reader = csv.DictReader(_text_lines(p), delimiter=delimiter)
    if reader.fieldnames is None:
        return
    for record in reader:
        # reader.line_num is the physical line the record ended on (1 = header)
        if None in record:
            raise DataError("more values than header columns", path=p, line=reader.line_num)
        yield Row({k: v for k, v in record.items() if k is not None}, str(p), reader.line_num)


def _read_parquet(p: Path) -> Iterator[Row]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError("reading Parquet needs pyarrow: pip install 'judge[parquet]'", path=p) from None
    try:
        batches = pq.ParquetFile(p).iter_batches()
    except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ... for a file that is not Parquet
        raise DataError(f"not a readable Parquet file ({exc})", path=p) from None
    return _parquet_rows(p, batches)


def _parquet_rows(p: Path, batches: Iterator[Any]) -> Iterator[Row]:
    line = 0
    while True:
        try:
            batch = next(batches, None)
        except Exception as exc:  # noqa: BLE001 - a damaged row group
            raise DataError(f"not a readable Parquet file ({exc})", path=p, line=line + 1) from None
        if batch is None:
            return
        for rec in batch.to_pylist():
            line += 1
            yield Row(rec, str(p), line)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: never half written."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        _chmod_default(fd)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _chmod_default(fd: int) -> None:
    """Give a file mkstemp created (0600) the mode an ordinary open() would: 0666 less the umask."""
    if not hasattr(os, "fchmod"):
        return
    mask = os.umask(0)
    os.umask(mask)
    os.fchmod(fd, 0o666 & ~mask)


def check_output_path(path: str | Path, option: str = "--out", inputs: Iterable[str | Path | None] = ()) -> Path:
    """Fail now, before any model call is paid for, if ``path`` cannot be written as a file.

    Catches an output that is one of the run's ``inputs`` (see :func:`check_not_an_input`), a folder given
    as the file, a parent that is a file, and a folder that cannot be written (read-only, no permission):
    each is a :class:`DataError` naming the path and the option.
    """
    p = Path(path)
    check_not_an_input(p, option, inputs)
    if p.is_dir():
        raise DataError(f"{option} is a folder; give a file name, e.g. {p / 'verdicts.jsonl'}", path=p)
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise DataError(f"{option} cannot be created: {parent} is a file, not a folder", path=p)
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".probe", dir=parent)
    except OSError as exc:
        raise DataError(f"{option} cannot be written: folder {parent}: {exc.strerror or exc}", path=p) from None
    os.close(fd)
    Path(probe).unlink(missing_ok=True)
    if p.exists() and not os.access(p, os.W_OK):
        raise DataError(f"{option} exists and is read-only", path=p)
    return p


def check_not_an_input(path: str | Path, option: str, inputs: Iterable[str | Path | None]) -> None:
    """Refuse (:class:`DataError`) an output that would overwrite an input of the run: ``path`` resolves
    (symlinks and ``..`` followed) to one of ``inputs``, or is the same file under another name (a hard
    link). An input folder stands for the files in it (an MT-Bench answers folder, say). None is skipped."""
    out = Path(path)
    target = out.resolve()
    for given in inputs:
        if given is None:
            continue
        src = Path(given)
        files = [f for f in src.iterdir() if f.is_file()] if src.is_dir() else [src]
        for f in files:
            same = f.resolve() == target or (f.exists() and out.exists() and os.path.samefile(f, out))
            if same:
                raise DataError(
                    f"{option} is an input of this run ({f}): writing it would overwrite that input; "
                    "choose another output path",
                    path=out,
                )


class OutputLock:
    """``<path>.lock``, held while a run writes ``path``: a second run on the same output stops at once.

    The lock is an ``flock`` on the lock file, so the kernel releases it when the holder dies (kill -9
    included): a leftover lock file never blocks a rerun. Where ``fcntl`` is missing (Windows) it is a no-op.
    """

    def __init__(self, path: str | Path, option: str = "--out") -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.option = option
        self._fh: Any = None

    def acquire(self) -> OutputLock:
        try:
            import fcntl
        except ImportError:
            return self
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            fh = self.lock_path.open("a+", encoding="utf-8")
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.seek(0)
                holder = fh.read().strip() or "another process"
                fh.close()
                raise DataError(
                    f"another run is writing this {self.option} (lock {self.lock_path} held by {holder}); "
                    "wait for it or choose another output",
                    path=self.path,
                ) from None
            # the holder before us may have removed the file after we opened it: lock the file that is there
            if self.lock_path.exists() and os.path.samestat(os.fstat(fh.fileno()), os.stat(self.lock_path)):
                fh.seek(0)
                fh.truncate()
                fh.write(f"pid {os.getpid()}\n")
                fh.flush()
                self._fh = fh
                return self
            fh.close()
        raise DataError(f"could not take the lock {self.lock_path}", path=self.path)

    def release(self) -> None:
        if self._fh is None:
            return
        self.lock_path.unlink(missing_ok=True)
        self._fh.close()  # closing drops the flock
        self._fh = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.release()


def json_safe(value: Any) -> Any:
    """JSON-safe: NaN and infinities become null, numpy scalars and arrays become Python numbers and lists."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    np = sys.modules.get("numpy")  # a numpy value implies numpy is loaded: never import it here (judge.io is light)
    if np is not None:
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, np.ndarray):
            return json_safe(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_jsonl(path: str | Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Write records as JSON lines, atomically."""
    atomic_write_text(path, "".join(json.dumps(dict(r), ensure_ascii=False) + "\n" for r in records))


class _PartialFile:
    """A file written as ``<path>.partial`` while results arrive, put in place only when finished, so a
    reader never mistakes an interrupted run's output for a finished one; the partial file stays."""

    def __init__(self, path: str | Path, mode: str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self._fh: Any = self.partial.open(mode) if "b" in mode else self.partial.open(mode, encoding="utf-8")

    def _sync_close(self) -> bool:
        """Flush, fsync and close the partial file; False if it was closed already."""
        if self._fh.closed:
            return False
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        return True

    def abort(self) -> None:
        """Stop writing and keep the partial file (what finished) where it is."""
        if not self._fh.closed:
            self._fh.close()

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        """Finished: the file is put in place; interrupted or failed: the partial file stays."""
        if exc_type is None:
            self.close()
        else:
            self.abort()


class JsonlAppender(_PartialFile):
    """Streams JSON lines into a file as results arrive (``<path>.partial``, renamed on :meth:`close`)."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path, "w")

    def write(self, record: Mapping[str, Any]) -> None:
        self._fh.write(json.dumps(dict(record), ensure_ascii=False) + "\n")
        self._fh.flush()

    def close(self) -> None:
        """Finish the file: fsync and move it into place."""
        if self._sync_close():
            os.replace(self.partial, self.path)


class OrderedJsonlWriter(_PartialFile):
    """Streams the records of ``n`` numbered jobs to ``<path>.partial`` as they finish, in any order, and
    on :meth:`close` writes ``path`` in job order, atomically, without holding the records in memory.

    The partial file holds the finished records (one JSON line each, in finishing order), so after a
    crash it is what finished; the writer keeps only each record's offset and length (12 bytes a job).
    :meth:`close` copies the lines into a temporary file in job order (long runs of lines that finished
    in order are copied in one read), fsyncs it, renames it to ``path`` and removes the partial file.
    """

    COPY_CHUNK = 1 << 20
    """Most bytes read from the partial file at once when copying lines that are adjacent there."""

    def __init__(self, path: str | Path, n: int) -> None:
        super().__init__(path, "wb")
        self._offsets = array("q", [-1]) * n
        self._lengths = array("I", [0]) * n
        self._end = 0

    def write(self, index: int, record: Mapping[str, Any]) -> None:
        """Record job ``index``'s result (once per job)."""
        line = (json.dumps(dict(record), ensure_ascii=False) + "\n").encode("utf-8")
        self._fh.write(line)
        self._fh.flush()
        self._offsets[index] = self._end
        self._lengths[index] = len(line)
        self._end += len(line)

    def close(self) -> None:
        """Write ``path`` in job order (jobs without a record left out) and remove the partial file."""
        if not self._sync_close():
            return
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            _chmod_default(fd)
            src = os.open(self.partial, os.O_RDONLY)
            try:
                with os.fdopen(fd, "wb", buffering=self.COPY_CHUNK) as out:
                    for start, size in self._runs():
                        out.write(os.pread(src, size, start))
                    out.flush()
                    os.fsync(out.fileno())
            finally:
                os.close(src)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.partial.unlink(missing_ok=True)

    def _runs(self) -> Iterator[tuple[int, int]]:
        """(offset, size) reads that give the records in job order: adjacent lines merged."""
        start = size = 0
        for off, length in zip(self._offsets, self._lengths, strict=True):
            if off < 0:
                continue
            if size and off == start + size and size + length <= self.COPY_CHUNK:
                size += length
                continue
            if size:
                yield start, size
            start, size = off, length
        if size:
            yield start, size


def package_versions(*names: str) -> dict[str, str]:
    """Installed versions of ``names`` (absent ones left out), for the provenance of results and reports."""
    from importlib import metadata

    out: dict[str, str] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out

