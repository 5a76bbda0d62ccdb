"""Loading and validating judge scores and human labels.

Both sides end up as plain pandas frames keyed by a string ``id``:

* judge scores: one row per item, columns ``id``, ``score`` (float, or ``"A"``/``"B"``/``"tie"`` for
  pairwise; NaN/None when unscored), ``status`` (``"ok"`` | ``"unscored"``), ``line`` and any text
  columns the results file carries (kept for the disagreement review);
* human labels: one row per (id, annotator), columns ``id``, ``annotator``, ``label``, ``line``.

Every problem in a file is raised as :class:`judge.errors.DataError` naming the file, line and field.
Pairwise labels in the many spellings found in the wild (``A``/``B``/``tie``, ``model_1``/``model_2``,
``left``/``right``, PandaLM's ``1``/``2``/``0``, FastChat's ``C`` for a tie) are normalised to
``"A"``, ``"B"``, ``"tie"``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from judge.dataset import id_text
from judge.errors import ConfigError, DataError
from judge.io import Row, read_rows

LabelType = Literal["ordinal", "binary", "pairwise", "nominal"]
LABEL_TYPES: tuple[str, ...] = ("ordinal", "binary", "pairwise", "nominal")
PAIRWISE_CLASSES: tuple[str, str, str] = ("A", "B", "tie")

# spelling -> canonical pairwise label; keys are lower-cased and stripped
_PAIRWISE_SPELLINGS: dict[str, str] = {
    **dict.fromkeys(["a", "model_a", "model_1", "1", "left", "response1", "output_1", "[[a]]", "first"], "A"),
    **dict.fromkeys(["b", "model_b", "model_2", "2", "right", "response2", "output_2", "[[b]]", "second"], "B"),
    **dict.fromkeys(
        ["tie", "c", "[[c]]", "0", "draw", "equal", "same", "tie (bothbad)", "tie (inconsistent)", "both", "neither"],
        "tie",
    ),
}
_BINARY_SPELLINGS: dict[str, float] = {
    **dict.fromkeys(["1", "1.0", "true", "yes", "pass", "passed", "correct", "positive", "y", "t"], 1.0),
    **dict.fromkeys(["0", "0.0", "false", "no", "fail", "failed", "incorrect", "negative", "n", "f"], 0.0),
}
# columns worth showing next to a disagreement, in display order
TEXT_COLUMNS: tuple[str, ...] = (
    "question",
    "instruction",
    "prompt",
    "input",
    "context",
    "reference",
    "output",
    "answer",
    "response",
    "output_1",
    "output_2",
    "answer_a",
    "answer_b",
    "response1",
    "response2",
    "reasoning",
)


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in ("", "null", "none", "nan", "na")


def normalise_pairwise(value: Any) -> str | None:
    """Map a pairwise verdict in any common spelling to ``"A"``, ``"B"`` or ``"tie"`` (``None`` if unknown)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return _PAIRWISE_SPELLINGS.get(str(value).strip().lower())


def _to_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    try:
        out = float(str(value).strip())
    except ValueError:
        return None
    return out if math.isfinite(out) else None


def parse_label(value: Any, label_type: str) -> float | str | None:
    """Parse one human label for ``label_type``; ``None`` means it cannot be read as that type."""
    if label_type == "pairwise":
        return normalise_pairwise(value)
    if label_type == "nominal":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return str(value).strip()
    if label_type == "binary":
        if isinstance(value, bool):
            return float(value)
        return _BINARY_SPELLINGS.get(str(value).strip().lower())
    return _to_float(value)


def infer_label_type(values: Sequence[Any]) -> str:
    """Guess the label type from the raw values: pairwise, binary, ordinal (numeric) or nominal."""
    present = [v for v in values if not _is_missing(v)]
    if not present:
        return "nominal"
    texts = {str(v).strip().lower() for v in present}
    if texts <= {"a", "b", "tie", "c", "model_a", "model_b", "model_1", "model_2", "left", "right"}:
        return "pairwise"
    numbers = [_to_float(v) for v in present]
    if all(n is not None for n in numbers):
        return "binary" if set(numbers) <= {0.0, 1.0} else "ordinal"
    if all(parse_label(v, "binary") is not None for v in present):
        return "binary"
    return "nominal"


def check_label_type(label_type: str) -> str:
    """Raise :class:`ConfigError` unless ``label_type`` is one of :data:`LABEL_TYPES`."""
    if label_type not in LABEL_TYPES:
        raise ConfigError(f"unknown label type '{label_type}': use one of {', '.join(LABEL_TYPES)}")
    return label_type


def _where(path: str | None, line: int | None) -> dict[str, Any]:
    return {"path": path, "line": line}


def _rows_frame(rows: list[Row]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records([r.data for r in rows])
    frame["line"] = [r.line for r in rows]
    return frame


MTBENCH_PAIR_KEY = ("question_id", "model_1", "model_2")


def _with_mtbench_ids(frame: pd.DataFrame, id_column: str) -> pd.DataFrame:
    """Give MT-Bench pairwise judgment files (``judge mtbench judge``, FastChat ``model_judgment``, and the
    LLMBar labels from ``judge mtbench llmbar``) an id: ``question_id:model_1:model_2:turn``.

    Both files must list each pair in the same order, as ``judge mtbench judge --pairs LABELS`` does.
    """
    if id_column in frame.columns or not set(MTBENCH_PAIR_KEY) <= set(frame.columns):
        return frame
    turn = frame["turn"] if "turn" in frame.columns else pd.Series(1, index=frame.index)
    frame = frame.copy()
    frame[id_column] = [
        f"{_id_str(q)}:{m1}:{m2}:t{_id_str(t)}"
        for q, m1, m2, t in zip(frame["question_id"], frame["model_1"], frame["model_2"], turn, strict=True)
    ]
    return frame


def _require_column(frame: pd.DataFrame, column: str, path: str, what: str, option: str) -> None:
    if column not in frame.columns:
        have = ", ".join(str(c) for c in frame.columns if c != "line")
        raise DataError(f"no '{column}' column for the {what} (columns: {have}); choose one with {option}", path=path)


# --------------------------------------------------------------------------------------------- labels


def load_human_labels(
    path: str | Path,
    *,
    label_column: str = "label",
    id_column: str = "id",
    annotator_column: str = "annotator",
    label_type: str | None = None,
    scale: tuple[float, float] | None = None,
    keep: Sequence[str] = (),
) -> tuple[pd.DataFrame, str]:
    """Read a CSV/JSONL of human labels; returns ``(labels, label_type)``.

    Several rows for one id are several annotators. Without an annotator column each row of an id is
    its own anonymous annotator (``"#1"``, ``"#2"``, ...), so duplicates cannot be detected. Columns
    named in ``keep`` (a ``--group`` or ``--by`` column kept with the labels) come along where present.
    """
    rows = read_rows(path)
    if not rows:
        raise DataError("the label file has no rows", path=path)
    frame = _with_mtbench_ids(_rows_frame(rows), id_column)
    src = str(path)
    if label_column not in frame.columns and "winner" in frame.columns:
        label_column = "winner"  # pairwise labels written as judgments (judge mtbench llmbar)
    _require_column(frame, id_column, src, "item ids", "--id-column")
    _require_column(frame, label_column, src, "human labels", "--label-column")
    annotators = frame[annotator_column] if annotator_column in frame.columns else None
    labels = pd.DataFrame(
        {
            "id": frame[id_column].map(_id_str),
            "annotator": annotators.map(_id_str) if annotators is not None else None,
            "label": frame[label_column],
            "line": frame["line"],
        }
    )
    for col in keep:
        if col in frame.columns and col not in labels.columns:
            labels[col] = frame[col].map(lambda v: "" if _is_missing(v) else str(v))
    return validate_labels(labels, label_type=label_type, scale=scale, path=src, label_field=label_column)


_INTEGER_AS_FLOAT = re.compile(r"^-?\d+\.0+$")


def _id_str(value: Any) -> str:
    """An id as text; integer-valued floats (``0.0`` from a spreadsheet, 3.0 from pandas) read as ``0``, ``3``."""
    if _is_missing(value):
        return ""
    text = id_text(value).strip()
    return text.split(".")[0] if _INTEGER_AS_FLOAT.match(text) else text


def validate_labels(
    labels: pd.DataFrame | pd.Series,
    *,
    label_type: str | None = None,
    scale: tuple[float, float] | None = None,
    path: str | None = None,
    label_field: str = "label",
) -> tuple[pd.DataFrame, str]:
    """Check and normalise human labels given as a frame (``id``, ``label``, optional ``annotator``) or a Series.

    A Series is read as one annotator, indexed by item id. Returns the clean frame and the label type.
    """
    if isinstance(labels, pd.Series):
        labels = pd.DataFrame({"id": labels.index, "label": labels.to_numpy()})
    frame = labels.copy()
    for col in ("id", "label"):
        if col not in frame.columns:
            raise DataError(f"human labels need an '{col}' column", path=path)
    if "line" not in frame.columns:
        frame["line"] = None
    frame["id"] = frame["id"].map(_id_str)
    # a blank cell is an item someone did not label (or a row with no annotator in a file that names
    # them): skipped and counted, not an error and not a label
    has_annotators = "annotator" in frame.columns and not frame["annotator"].map(_is_missing).all()
    blank = frame["label"].map(_is_missing)
    if has_annotators:
        blank |= frame["annotator"].map(_is_missing)
    skipped = [int(x) if x is not None and not pd.isna(x) else None for x in frame.loc[blank, "line"]]
    frame = frame[~blank].copy()
    if frame.empty:
        raise DataError("every label row has a blank label or annotator", path=path, field=label_field)
    if not has_annotators:
        frame["annotator"] = "#" + (frame.groupby("id").cumcount() + 1).astype(str)
    else:
        frame["annotator"] = frame["annotator"].map(_id_str)
    raw = list(frame["label"])
    kind = check_label_type(label_type) if label_type else infer_label_type(raw)

    parsed: list[Any] = []
    for value, item_id, line in zip(raw, frame["id"], frame["line"], strict=True):
        line_no = int(line) if line is not None and not pd.isna(line) else None
        if item_id == "":
            raise DataError("empty item id", **_where(path, line_no), field="id")
        if _is_missing(value):
            raise DataError(f"missing label for item '{item_id}'", **_where(path, line_no), field=label_field)
        out = parse_label(value, kind)
        if out is None:
            expected = {
                "pairwise": "A, B or tie (or model_1/model_2, left/right, 1/2/0)",
                "binary": "0/1, true/false, yes/no or pass/fail",
            }.get(kind, "a number")
            raise DataError(
                f"label {value!r} for item '{item_id}' is not {kind}: expected {expected}",
                **_where(path, line_no),
                field=label_field,
            )
        if scale is not None and isinstance(out, float) and not (scale[0] <= out <= scale[1]):
            raise DataError(
                f"label {value!r} for item '{item_id}' is outside the scale {scale[0]:g}..{scale[1]:g}",
                **_where(path, line_no),
                field=label_field,
            )
        parsed.append(out)
    frame["label"] = pd.Series(parsed, index=frame.index, dtype=object if kind in ("pairwise", "nominal") else float)

    dup = frame.duplicated(["id", "annotator"], keep=False)
    if dup.any():
        first = frame[dup].iloc[0]
        lines = [int(x) for x in frame[dup & (frame["id"] == first["id"])]["line"] if x is not None and not pd.isna(x)]
        raise DataError(
            f"item '{first['id']}' is labelled twice by annotator '{first['annotator']}'"
            + (f" (lines {', '.join(map(str, lines))})" if lines else "")
            + "; keep one row per (id, annotator)",
            **_where(path, lines[-1] if lines else None),
            field="annotator",
        )
    extra = [c for c in frame.columns if c not in ("id", "annotator", "label", "line")]
    out = frame[["id", "annotator", "label", "line", *extra]].reset_index(drop=True)
    out.attrs.update(validated=True, label_type=kind, skipped_blank_lines=skipped)
    return out, kind


def consensus(labels: pd.DataFrame, label_type: str) -> tuple[pd.Series, list[str]]:
    """The human consensus per item and the ids whose majority was tied.

    Ordinal: the median of the annotators' labels (it may fall half-way between two values).
    Binary/nominal: the majority label; items without a unique majority are left out (returned as ties).
    Pairwise: the majority label; a split with no unique majority counts as ``"tie"``.
    """
    if label_type == "ordinal":
        return labels.groupby("id", sort=False)["label"].median(), []
    out: dict[str, Any] = {}
    tied: list[str] = []
    for item_id, group in labels.groupby("id", sort=False)["label"]:
        counts = group.value_counts()
        top = counts[counts == counts.iloc[0]]
        if len(top) == 1:
            out[str(item_id)] = top.index[0]
        else:
            tied.append(str(item_id))
            if label_type == "pairwise":
                out[str(item_id)] = "tie"
    dtype = object if label_type in ("pairwise", "nominal") else float
    return pd.Series(out, dtype=dtype), tied


# --------------------------------------------------------------------------------------------- judge


def load_judge_scores(
    path: str | Path,
    *,
    score_column: str = "score",
    id_column: str = "id",
) -> pd.DataFrame:
    """Read verdict JSONL from ``judge score`` (or any CSV/JSONL with an id and a score column).

    An item counts as unscored when its ``status`` is ``"unscored"`` or its score is empty. For pairwise
    judgments the score may be ``"A"``/``"B"``/``"tie"``; without a score column a ``winner`` column is used.
    """
    rows = read_rows(path)
    if not rows:
        raise DataError("the judge results file has no rows", path=path)
    frame = _with_mtbench_ids(_rows_frame(rows), id_column)
    src = str(path)
    _require_column(frame, id_column, src, "item ids", "--id-column")
    column = score_column
    if column not in frame.columns and "winner" in frame.columns:
        column = "winner"
    _require_column(frame, column, src, "judge scores", "--score-column")
    out = pd.DataFrame({"id": frame[id_column].map(_id_str), "score": frame[column], "line": frame["line"]})
    out["status"] = frame["status"].fillna("ok").astype(str) if "status" in frame.columns else "ok"
    for col in TEXT_COLUMNS:
        if col in frame.columns:
            out[col] = frame[col]
    for col in frame.columns:
        if col not in out.columns and col not in ("raw", "error", "line", id_column, column):
            out[col] = frame[col]
    return validate_scores(out, path=src, score_field=column)


def validate_scores(
    scores: pd.DataFrame | pd.Series, *, path: str | None = None, score_field: str = "score"
) -> pd.DataFrame:
    """Check judge scores given as a frame (``id``, ``score``, optional ``status``) or a Series indexed by id.

    Empty scores and ``status == "unscored"`` both mark an item unscored (``score`` becomes None). An id
    that appears more than once with numeric scores (repeats, one line each) is averaged over its scored
    rows; ``attrs["averaged_repeats"]`` says how many ids and rows, so the caller can say so.
    """
    if isinstance(scores, pd.Series):
        scores = pd.DataFrame({"id": scores.index, "score": scores.to_numpy()})
    frame = scores.copy()
    for col in ("id", "score"):
        if col not in frame.columns:
            raise DataError(f"judge scores need an '{col}' column", path=path)
    if "line" not in frame.columns:
        frame["line"] = None
    if "status" not in frame.columns:
        frame["status"] = "ok"
    frame["id"] = frame["id"].map(_id_str)
    frame["status"] = frame["status"].fillna("ok").astype(str)
    values: list[Any] = []
    for item_id, value, status, line in zip(frame["id"], frame["score"], frame["status"], frame["line"], strict=True):
        line_no = int(line) if line is not None and not pd.isna(line) else None
        if item_id == "":
            raise DataError("empty item id", **_where(path, line_no), field="id")
        if status not in ("ok", "unscored"):
            raise DataError(
                f"status {status!r} is neither 'ok' nor 'unscored'", **_where(path, line_no), field="status"
            )
        if status == "unscored" or _is_missing(value):
            values.append(None)
            continue
        number = _to_float(value)
        if number is None and normalise_pairwise(value) is None:
            raise DataError(
                f"score {value!r} for item '{item_id}' is neither a number nor a pairwise verdict (A/B/tie)",
                **_where(path, line_no),
                field=score_field,
            )
        values.append(value if number is None or isinstance(value, str) else number)
    frame["score"] = pd.Series(values, index=frame.index, dtype=object)
    frame.loc[frame["score"].isna(), "status"] = "unscored"
    dup = frame.duplicated("id", keep=False)
    averaged: dict[str, int] = {}
    if dup.any() and all(v is None or _to_float(v) is not None for v in frame.loc[dup, "score"]):
        # repeated numeric verdicts of one item (runs concatenated, one line per repeat): their mean
        frame, averaged = _average_repeats(frame)
        dup = frame.duplicated("id", keep=False)
    if dup.any():
        first_id = frame.loc[dup, "id"].iloc[0]
        lines = [int(x) for x in frame.loc[frame["id"] == first_id, "line"] if x is not None and not pd.isna(x)]
        raise DataError(
            f"item '{first_id}' appears more than once in the judge results"
            + (f" (lines {', '.join(map(str, lines))})" if lines else "")
            + "; numeric repeats are averaged, but verdicts like A/B/tie cannot be: keep one per id",
            **_where(path, lines[-1] if lines else None),
            field="id",
        )
    out = frame.reset_index(drop=True)
    out.attrs["validated"] = True
    out.attrs["averaged_repeats"] = averaged
    return out


def _average_repeats(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """One row per id: the mean of its scored rows (unscored when none scored), the other columns from its
    first row; and how many ids and rows were averaged, for the note the CLI prints."""
    counts = frame["id"].value_counts()
    repeated = counts[counts > 1]
    rows = []
    for _, group in frame.groupby("id", sort=False):
        row = group.iloc[0].copy()
        scored = [float(_to_float(v) or 0.0) for v in group["score"] if v is not None]
        row["score"] = sum(scored) / len(scored) if scored else None
        row["status"] = "ok" if scored else "unscored"
        rows.append(row)
    out = pd.DataFrame(rows).reset_index(drop=True)
    out["score"] = pd.Series([None if _is_missing(v) else v for v in out["score"]], dtype=object)
    return out, {"ids": int(len(repeated)), "rows": int(repeated.sum())}


def judge_values(scores: pd.Series, label_type: str) -> tuple[pd.Series, list[str]]:
    """Convert scored judge values to the label type's representation; returns values and ids that did not fit."""
    bad: list[str] = []
    out: dict[str, Any] = {}
    for item_id, value in scores.items():
        if label_type == "pairwise":
            parsed: Any = normalise_pairwise(value)
        elif label_type == "nominal":
            parsed = parse_label(value, "nominal")
        else:
            parsed = _to_float(value)
        if parsed is None:
            bad.append(str(item_id))
        else:
            out[str(item_id)] = parsed
    dtype = object if label_type in ("pairwise", "nominal") else float
    return pd.Series(out, dtype=dtype), bad


def as_float_array(values: pd.Series) -> np.ndarray:
    """The values as a float numpy array."""
    return np.asarray(values.to_numpy(), dtype=float)
