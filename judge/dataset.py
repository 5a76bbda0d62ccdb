"""Items to judge: loading, column mapping, ids.

An item has ``id``, ``input``, ``output`` and optionally ``reference``, ``context`` (and
``output_b`` for pairwise rubrics); any other columns ride along in ``extra``. A missing id is
derived from the item's content, so it is the same on every run.
"""

from __future__ import annotations

import hashlib
import json
from array import array
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from judge.errors import DataError
from judge.io import Row, iter_rows, read_rows

FIELDS = ("input", "output", "reference", "context", "output_b")


class Item(BaseModel):
    """One thing to judge."""

    model_config = ConfigDict(extra="forbid")

    id: str
    input: str | None = None
    output: str | None = None
    reference: str | None = None
    context: str | None = None
    output_b: str | None = None
    extra: dict[str, Any] = Field(default_factory=dict)
    source: str | None = Field(None, description="file:line the item came from, for error messages")

    def error(self, message: str, field: str | None = None) -> DataError:
        """A :class:`DataError` pointing at the file and line this item came from."""
        path, line = _split_source(self.source)
        return DataError(message, path=path, line=line, field=field)

    def values(self) -> dict[str, Any]:
        """Template variables: the fields plus the extra columns."""
        vals: dict[str, Any] = dict(self.extra)
        vals.update({f: getattr(self, f) for f in FIELDS})
        vals["id"] = self.id
        return vals


def content_id(record: Mapping[str, Any]) -> str:
    """A deterministic id from an item's content fields."""
    blob = json.dumps({f: record.get(f) for f in FIELDS}, sort_keys=True, ensure_ascii=False, default=str)
    return "item-" + hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12]


def parse_mapping(pairs: Iterable[str]) -> dict[str, str]:
    """``["output=answer", "input=question"]`` -> ``{"output": "answer", "input": "question"}``."""
    mapping: dict[str, str] = {}
    for pair in pairs:
        target, sep, column = pair.partition("=")
        if not sep or not target.strip() or not column.strip():
            raise DataError(f"--map expects FIELD=COLUMN, got '{pair}'")
        target = target.strip()
        if target not in FIELDS and target != "id":
            raise DataError(f"--map: unknown field '{target}' (fields: id, {', '.join(FIELDS)})")
        mapping[target] = column.strip()
    return mapping


def id_text(value: Any) -> str:
    """An id as text, the same wherever ids are read (items, eval rows and groups, labels): a whole-number
    float (3.0, from a spreadsheet, Parquet or pandas) is the integer's text, "3"; anything else ``str(value)``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


Coerced = dict[str, list[str]]
"""What :func:`item_from_record` read as text that was not text: ``"FIELD: KIND"`` -> the ``file:line`` of each."""


def _text(value: Any, row: Row | None, field: str, coerced: Coerced | None = None) -> str | None:
    """``value`` as text. Numbers and JSON objects or lists are read as text on purpose (a QA answer 4, a
    list of references), and each is noted in ``coerced`` so the run can say how many there were; a
    whole-number float id (1.0, from Parquet or pandas) is the integer's text, "1", as calibrate matches it."""
    if value is None:
        return None
    if isinstance(value, float) and value != value:  # NaN from pandas
        return None
    if isinstance(value, str):
        return value
    noted = isinstance(value, float) if field == "id" else isinstance(value, int | float | bool | list | dict)
    if noted and coerced is not None:  # integer ids are ordinary; a float id (1.0) is worth a word
        kind = {dict: "JSON objects", list: "JSON lists", bool: "true/false"}.get(type(value), "numbers")
        coerced.setdefault(f"{field}: {kind}", []).append(f"{row.path}:{row.line}" if row else "?")
    if field == "id" and isinstance(value, float):
        return id_text(value)
    if isinstance(value, int | float | bool):
        return str(value)
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    err = f"expected text, got {type(value).__name__}"
    raise row.error(err, field) if row else DataError(err, field=field)


def coercion_note(coerced: Coerced) -> str | None:
    """One line saying which fields held values that were read as text, how many and where the first was."""
    if not coerced:
        return None
    parts = [
        f"{len(where)} '{key.split(': ')[0]}' value(s) that are {key.split(': ')[1]} (first at {where[0]})"
        for key, where in coerced.items()
    ]
    return "note: read as text: " + "; ".join(parts)


def item_from_record(
    record: Mapping[str, Any],
    mapping: Mapping[str, str] | None = None,
    row: Row | None = None,
    coerced: Coerced | None = None,
) -> Item:
    """Build an :class:`Item` from a dict, applying ``mapping`` (field -> column); values read as text that
    were not text are noted in ``coerced`` (see :func:`_text`)."""
    mapping = dict(mapping or {})
    used = set(mapping.values())
    values: dict[str, Any] = {}
    for field in ("id", *FIELDS):
        column = mapping.get(field, field)
        if field in mapping and column not in record:
            msg = f"column '{column}' (mapped to {field}) is missing; columns are: {', '.join(map(str, record))}"
            raise row.error(msg, column) if row else DataError(msg, field=column)
        values[field] = _text(record.get(column), row, column, coerced)
    extra = {k: v for k, v in record.items() if k not in used and k not in ("id", *FIELDS)}
    ident = values.pop("id") or content_id(values)
    source = f"{row.path}:{row.line}" if row else None
    return Item(id=ident, extra=extra, source=source, **values)


def load_items(path: str | Path, mapping: Mapping[str, str] | None = None) -> list[Item]:
    """Read items from JSONL / CSV / Parquet. Errors name the file, line and field."""
    items = [item_from_record(row.data, mapping, row) for row in read_rows(path)]
    if not items:
        raise DataError("no items in file", path=path)
    check_unique(items)
    return items


class ItemFile:
    """The items of a data file, read again from the file on each iteration instead of held in memory
    (``judge score`` on millions of items). :meth:`scan` reads it once up front to check every record
    and the ids, so a bad file fails before any model call, as :func:`load_items` does."""

    def __init__(self, path: str | Path, mapping: Mapping[str, str] | None = None) -> None:
        self.path = Path(path)
        self.mapping = dict(mapping or {})
        self._n: int | None = None
        self.coerced: Coerced = {}  # filled by scan(): the values read as text that were not text

    def __iter__(self) -> Iterator[Item]:
        for row in iter_rows(self.path):
            yield item_from_record(row.data, self.mapping, row)

    def _scan_items(self) -> Iterator[Item]:
        for row in iter_rows(self.path):
            yield item_from_record(row.data, self.mapping, row, self.coerced)

    def __len__(self) -> int:
        if self._n is None:
            self.scan()
        assert self._n is not None
        return self._n

    def scan(self) -> ItemFile:
        """Read every item once: bad records and repeated ids raise :class:`DataError` (as :func:`load_items`).

        Holds 8 bytes per item while it runs (a hash of each id); a repeated hash is confirmed with a
        second read, so two ids that merely share a hash are not an error."""
        digests = array("Q")
        self.coerced = {}
        for item in self._scan_items():
            digests.append(_id_digest(item.id))
        if not digests:
            raise DataError("no items in file", path=self.path)
        self._n = len(digests)
        repeated = _repeated(digests)
        del digests
        if repeated:
            check_unique(it for it in self if _id_digest(it.id) in repeated)
        return self


def _id_digest(ident: str) -> int:
    return int.from_bytes(hashlib.blake2b(ident.encode("utf-8"), digest_size=8).digest(), "little")


def _repeated(digests: array) -> set[int]:
    """The values that occur more than once in ``digests`` (sorted with numpy: 8 bytes an item more)."""
    import numpy as np

    s = np.sort(np.frombuffer(digests, dtype=np.uint64))
    return {int(x) for x in s[1:][s[1:] == s[:-1]]}


def stream_items(path: str | Path, mapping: Mapping[str, str] | None = None) -> ItemFile:
    """Items of a JSONL / CSV / Parquet file, checked like :func:`load_items` but read lazily (:class:`ItemFile`)."""
    return ItemFile(path, mapping).scan()


def coerce_items(data: Any, mapping: Mapping[str, str] | None = None) -> list[Item]:
    """Items from a list of dicts / Items, a pandas DataFrame, or a file path."""
    if isinstance(data, str | Path):
        return load_items(data, mapping)
    is_frame = hasattr(data, "to_dict") and hasattr(data, "columns")  # a DataFrame, without importing pandas
    records = data.to_dict(orient="records") if is_frame else list(data)
    items: list[Item] = []
    for i, rec in enumerate(records, start=1):
        if isinstance(rec, Item):
            items.append(rec)
        elif isinstance(rec, Mapping):
            items.append(item_from_record(rec, mapping, Row(dict(rec), "<items>", i)))
        else:
            raise DataError(f"item {i}: expected a dict, got {type(rec).__name__}")
    check_unique(items)
    return items


def check_unique(items: Iterable[Item]) -> None:
    """Raise on a repeated id: results are keyed by id, so duplicates would be silently merged."""
    seen: dict[str, str | None] = {}
    for item in items:
        if item.id in seen:
            raise item.error(f"duplicate id '{item.id}' (first seen at {seen[item.id] or 'an earlier item'})", "id")
        seen[item.id] = item.source


def _split_source(source: str | None) -> tuple[str | None, int | None]:
    if not source:
        return None, None
    path, _, line = source.rpartition(":")
    return (path, int(line)) if line.isdigit() else (source, None)
