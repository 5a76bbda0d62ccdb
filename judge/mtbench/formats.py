"""FastChat ``llm_judge`` file formats, read with file/line/field errors and written back unchanged in form.

* ``question.jsonl``: ``{question_id, category, turns: [str, ...], reference?: [str, ...]}`` -- any number
  of turns (FastChat's MT-Bench has two).
* ``model_answer/<model>.jsonl`` and ``reference_answer/<model>.jsonl``:
  ``{question_id, answer_id, model_id, choices: [{index: 0, turns: [str, ...]}], tstamp}``.
  The model is the record's ``model_id`` (the file's stem when a record has none).
* ``judge_prompts.jsonl``: ``{name, type, system_prompt, prompt_template, output_format, ...}``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from judge.errors import DataError
from judge.io import Row, read_rows

QuestionId = int | str


@dataclass(frozen=True)
class Question:
    """One multi-turn question."""

    question_id: QuestionId
    category: str
    turns: list[str]
    reference: list[str] | None = None
    source: str = ""

    @property
    def n_turns(self) -> int:
        return len(self.turns)


@dataclass(frozen=True)
class Answer:
    """One model's answers to every turn of one question."""

    model: str
    question_id: QuestionId
    turns: list[str]
    answer_id: str = ""
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JudgePrompt:
    """A FastChat judge prompt (``judge_prompts.jsonl`` record)."""

    name: str
    type: str  # "single" | "pairwise"
    system_prompt: str
    prompt_template: str
    output_format: str
    source: str = ""

    @property
    def hash(self) -> str:
        """Content hash of the prompt, recorded as ``rubric_hash`` in judgments made with it."""
        blob = json.dumps([self.name, self.system_prompt, self.prompt_template], ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _where(row: Row) -> str:
    return f"{row.path}:{row.line}"


def _qid(row: Row) -> QuestionId:
    value = row.data.get("question_id")
    if isinstance(value, bool) or not isinstance(value, int | str) or (isinstance(value, str) and not value.strip()):
        raise row.error(f"expected an integer or string question id, got {value!r}", "question_id")
    return value


def _text_list(row: Row, value: Any, name: str, *, allow_empty: bool = False) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise row.error(f"expected a list of strings, got {type(value).__name__}", name)
    if not value and not allow_empty:
        raise row.error("has no turns (a question needs at least one)", name)
    return list(value)


def read_questions(path: str | Path) -> list[Question]:
    """Read a FastChat ``question.jsonl``. Zero turns or a repeated id is a :class:`DataError`."""
    questions: list[Question] = []
    seen: dict[QuestionId, str] = {}
    for row in read_rows(path):
        qid = _qid(row)
        if qid in seen:
            raise row.error(f"duplicate question id {qid!r} (first at {seen[qid]})", "question_id")
        seen[qid] = _where(row)
        category = row.data.get("category", "general")
        if not isinstance(category, str) or not category.strip():
            raise row.error(f"expected a category name, got {category!r}", "category")
        turns = _text_list(row, row.data.get("turns"), "turns")
        ref = row.data.get("reference")
        reference = _text_list(row, ref, "reference", allow_empty=True) if ref is not None else None
        questions.append(Question(qid, category, turns, reference or None, _where(row)))
    if not questions:
        raise DataError("no questions in file", path=path)
    return questions


def _answer_turns(row: Row) -> list[str]:
    choices = row.data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise row.error("expected a non-empty list of {index, turns} objects", "choices")
    return _text_list(row, choices[0].get("turns"), "choices[0].turns")


def answer_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand directories into their ``*.jsonl`` files (sorted); keep files as given."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.glob("*.jsonl"))
            if not found:
                raise DataError("directory holds no .jsonl answer files", path=p)
            files.extend(found)
        elif p.exists():
            files.append(p)
        else:
            raise DataError("answer file not found", path=p)
    return files


def read_answers(paths: Iterable[str | Path]) -> dict[str, dict[QuestionId, Answer]]:
    """Read FastChat ``model_answer`` files: model -> question id -> :class:`Answer`.

    A model appearing in two files, or answering one question twice, is a :class:`DataError`.
    """
    by_model: dict[str, dict[QuestionId, Answer]] = {}
    model_file: dict[str, str] = {}
    for path in answer_files(paths):
        for row in read_rows(path):
            qid = _qid(row)
            model = row.data.get("model_id") or Path(row.path).stem
            if not isinstance(model, str):
                raise row.error(f"expected a model name, got {model!r}", "model_id")
            first_file = model_file.setdefault(model, row.path)
            if first_file != row.path:
                raise row.error(f"duplicate model id '{model}': also in {first_file}; rename one", "model_id")
            answers = by_model.setdefault(model, {})
            if qid in answers:
                raise row.error(
                    f"model '{model}' answers question {qid!r} twice (first at {answers[qid].source})", "question_id"
                )
            extra = {k: v for k, v in row.data.items() if k not in ("question_id", "answer_id", "model_id", "choices")}
            answer_id = str(row.data.get("answer_id", ""))
            answers[qid] = Answer(model, qid, _answer_turns(row), answer_id, _where(row), extra)
    return by_model


def read_references(paths: Iterable[str | Path]) -> dict[QuestionId, Answer]:
    """Read FastChat ``reference_answer`` files (same format as model answers): question id -> answer."""
    refs: dict[QuestionId, Answer] = {}
    for answers in read_answers(paths).values():
        for qid, ans in answers.items():
            refs.setdefault(qid, ans)
    return refs


def read_judge_prompts(path: str | Path) -> dict[str, JudgePrompt]:
    """Read a FastChat ``judge_prompts.jsonl``: name -> :class:`JudgePrompt`."""
    prompts: dict[str, JudgePrompt] = {}
    for row in read_rows(path):
        values: dict[str, str] = {}
        for key in ("name", "type", "system_prompt", "prompt_template", "output_format"):
            v = row.data.get(key)
            if not isinstance(v, str) or (key != "system_prompt" and not v.strip()):
                raise row.error(f"expected text, got {v!r}", key)
            values[key] = v
        if values["type"] not in ("single", "pairwise"):
            raise row.error(f"type must be 'single' or 'pairwise', got {values['type']!r}", "type")
        prompts[values["name"]] = JudgePrompt(**values, source=_where(row))
    return prompts


def check_answers(questions: Sequence[Question], answers: dict[str, dict[QuestionId, Answer]]) -> None:
    """Every answer must be for a known question and have exactly as many turns as the question."""
    by_id = {q.question_id: q for q in questions}
    for model_answers in answers.values():
        for ans in model_answers.values():
            path, _, line = ans.source.rpartition(":")
            q = by_id.get(ans.question_id)
            if q is None:
                raise DataError(
                    f"model '{ans.model}' answers question {ans.question_id!r}, which the question file lacks"
                    ' (ids must match in type too: 81 is not "81")',
                    path=path,
                    line=int(line),
                    field="question_id",
                )
            if len(ans.turns) != q.n_turns:
                raise DataError(
                    f"model '{ans.model}' gives {len(ans.turns)} turn(s) for question {q.question_id!r}, "
                    f"which has {q.n_turns} ({q.source})",
                    path=path,
                    line=int(line),
                    field="choices[0].turns",
                )


def answer_record(model: str, question_id: QuestionId, turns: list[str], tstamp: float, **extra: Any) -> dict[str, Any]:
    """A FastChat ``model_answer`` record; ``answer_id`` is derived from the content, so reruns agree."""
    blob = json.dumps([model, question_id, turns], ensure_ascii=False)
    return {
        "question_id": question_id,
        "answer_id": hashlib.sha256(blob.encode("utf-8")).hexdigest()[:22],
        "model_id": model,
        "choices": [{"index": 0, "turns": turns}],
        "tstamp": tstamp,
        **extra,
    }
