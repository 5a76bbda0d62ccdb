"""Inputs and outputs shared by the baselines: texts in, one record per item out.

Every baseline accepts a list of strings, a list of dicts, a pandas DataFrame or a data file, and
returns a :class:`BaselineResult` whose records carry the item ``id`` so they join with verdicts.
Ids, ``--map`` renames and file reading come from :mod:`judge.dataset`, so baselines and the judge
agree on them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from judge.dataset import FIELDS, coerce_items
from judge.errors import DataError


@dataclass
class BaselineResult:
    """Per-item scores of one baseline, plus corpus-level figures.

    ``records`` hold ``id`` and the score fields; an item that could not be scored has its scores
    set to ``None`` and a ``reason``.
    """

    baseline: str
    model: str
    score_field: str
    records: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)

    def scores(self) -> list[float | None]:
        """The main score of each item, in input order (``None`` where unscored)."""
        return [r.get(self.score_field) for r in self.records]

    def to_pandas(self) -> Any:
        """The records as a DataFrame indexed like the input."""
        import pandas as pd

        return pd.DataFrame.from_records(self.records)


def is_text_list(data: Any) -> bool:
    """True for a plain list/tuple of strings (or ``None``s), as opposed to records or a DataFrame."""
    if isinstance(data, str | Path | Mapping) or hasattr(data, "columns"):
        return False
    return isinstance(data, Sequence) and all(x is None or isinstance(x, str) for x in data)


def _check_field(name: str, option: str) -> None:
    if name not in FIELDS:
        raise DataError(f"{option}: unknown field '{name}' (fields: {', '.join(FIELDS)})")


def columns(
    data: Any,
    fields: Sequence[str],
    *,
    texts: Mapping[str, Sequence[str | None] | None] | None = None,
    mapping: Mapping[str, str] | None = None,
    ids: Sequence[str] | None = None,
) -> tuple[list[str], dict[str, list[str | None]]]:
    """Pull ``fields`` out of ``data``: returns the item ids and one list of texts per field.

    ``data`` is a list of strings (taken as the first field; the other fields must come through
    ``texts``), or records / a DataFrame / a file path (fields read from the items, ``texts``
    overriding a field with given strings).
    """
    texts = dict(texts or {})
    if is_text_list(data):
        first = list(data)
        n = len(first)
        out: dict[str, list[str | None]] = {fields[0]: first}
        for f in fields[1:]:
            given = texts.get(f)
            if given is None:
                raise DataError(f"a list of texts was given: pass the '{f}' texts too (or pass records with '{f}')")
            out[f] = list(given)
        item_ids = [str(i) for i in range(n)] if ids is None else [str(i) for i in ids]
    else:
        for f in fields:
            _check_field(f, "field")
        items = coerce_items(data, mapping)
        n = len(items)
        out = {}
        for f in fields:
            given = texts.get(f)
            out[f] = list(given) if given is not None else [getattr(it, f) for it in items]
        item_ids = [it.id for it in items] if ids is None else [str(i) for i in ids]
        for f in fields:
            if texts.get(f) is None and all(v is None for v in out[f]):
                raise DataError(f"no item has the field '{f}': rename a column with --map {f}=COLUMN")
    for f, vals in out.items():
        if len(vals) != n:
            raise DataError(f"{len(vals)} '{f}' texts for {n} items: the lists must have the same length")
    if len(item_ids) != n:
        raise DataError(f"{len(item_ids)} ids for {n} items")
    return item_ids, out


def empty_reason(text: str | None, what: str) -> str | None:
    """Why ``text`` cannot be scored (missing or blank), or ``None`` if it can."""
    if text is None:
        return f"no {what}"
    if not text.strip():
        return f"empty {what}"
    return None
