"""Multiple-choice benchmarks read from local files (never a hub download), for ``choice_accuracy``.

Three formats, told apart by what the path holds:

* **MMLU** (Hendrycks et al.): the release's folder (``test/``, ``dev/``, ``val/`` of headerless
  ``question,A,B,C,D,answer`` CSVs, one per subject), one split folder, or one CSV. The prompt is the
  standard one -- "The following are multiple choice questions (with answers) about {subject}.",
  up to ``shots`` exemplars from ``dev/``, the question with lettered options, "Answer:" -- and the
  choices are the letters " A" .. " D", as lm-evaluation-harness scores MMLU.
* **TruthfulQA** (``TruthfulQA.csv``, with a header): MC1 -- "Q: {question}\\nA:" followed by the
  best answer or one of the incorrect answers.
* **JSONL**: ``{id, question, choices: [...], answer: index or the correct choice's text, subject}``;
  the prompt is the question, each choice follows it after a space.

Every row is checked: a malformed one is a :class:`DataError` naming the file, the line and the field.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path

from judge.errors import ConfigError, DataError

LETTERS = ("A", "B", "C", "D")


@dataclass(frozen=True)
class Question:
    """One multiple-choice question: the prompt, the continuations to compare, and the correct one."""

    id: str
    subject: str
    context: str
    choices: tuple[str, ...]
    answer: int


def _mmlu_rows(path: Path) -> list[tuple[int, list[str]]]:
    """(line, row) of a headerless MMLU CSV (fields may hold newlines, so lines come from the reader)."""
    out = []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        while True:
            line = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                raise DataError(f"unreadable CSV row ({exc})", path=path, line=line) from None
            if not row:
                continue
            if len(row) != 6:
                raise DataError(
                    f"expected 6 fields (question, A, B, C, D, answer), got {len(row)}", path=path, line=line
                )
            if row[5].strip() not in LETTERS:
                raise DataError(
                    f"answer must be one of A, B, C, D, got {row[5]!r}", path=path, line=line, field="answer"
                )
            if not row[0].strip():
                raise DataError("empty question", path=path, line=line, field="question")
            out.append((line, row))
    return out


def _subject(path: Path) -> str:
    stem = path.stem
    for split in ("_test", "_dev", "_val"):
        stem = stem.removesuffix(split)
    return stem


def _mmlu_question(row: list[str]) -> str:
    options = "".join(f"\n{letter}. {text.strip()}" for letter, text in zip(LETTERS, row[1:5], strict=True))
    return f"{row[0].strip()}{options}\nAnswer:"


def load_mmlu(path: Path, *, split: str = "test", shots: int = 0) -> list[Question]:
    folder = path / split if (path / split).is_dir() else path
    files = sorted(folder.glob("*.csv")) if folder.is_dir() else [path]
    if not files:
        raise ConfigError(f"{path}: no MMLU CSV files (expected <subject>_{split}.csv)")
    dev_dir = (path if (path / "dev").is_dir() else folder.parent) / "dev"
    questions = []
    for f in files:
        subject = _subject(f)
        head = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
        if shots:
            dev = dev_dir / f"{subject}_dev.csv"
            if not dev.is_file():
                raise ConfigError(f"{path}: shots: {shots} needs {dev}")
            head += "".join(f"{_mmlu_question(r)} {r[5].strip()}\n\n" for _, r in _mmlu_rows(dev)[:shots])
        for k, (_, row) in enumerate(_mmlu_rows(f)):
            questions.append(
                Question(
                    f"{subject}/{k}",
                    subject,
                    head + _mmlu_question(row),
                    tuple(f" {x}" for x in LETTERS),
                    LETTERS.index(row[5].strip()),
                )
            )
    return questions


def load_truthfulqa(path: Path) -> list[Question]:
    questions = []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"Question", "Best Answer", "Incorrect Answers"} - set(reader.fieldnames or ())
        if missing:
            raise DataError(f"not a TruthfulQA CSV: no column {', '.join(sorted(missing))}", path=path, line=1)
        for k, row in enumerate(reader):
            line = reader.line_num
            question, best = (row.get("Question") or "").strip(), (row.get("Best Answer") or "").strip()
            wrong = [a.strip() for a in (row.get("Incorrect Answers") or "").split(";") if a.strip()]
            if not question:
                raise DataError("empty question", path=path, line=line, field="Question")
            if not best:
                raise DataError("empty best answer", path=path, line=line, field="Best Answer")
            if not wrong:
                raise DataError("no incorrect answers to choose from", path=path, line=line, field="Incorrect Answers")
            subject = (row.get("Category") or "all").strip() or "all"
            questions.append(
                Question(f"tqa/{k}", subject, f"Q: {question}\nA:", tuple(f" {a}" for a in [best, *wrong]), 0)
            )
    return questions


def load_jsonl(path: Path) -> list[Question]:
    questions = []
    with open(path, encoding="utf-8") as fh:
        for line, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            try:
                rec = json.loads(text)
            except (json.JSONDecodeError, RecursionError) as exc:
                raise DataError(f"not JSON ({type(exc).__name__})", path=path, line=line) from None
            if not isinstance(rec, dict):
                raise DataError("a line must be a JSON object", path=path, line=line)
            question, choices, answer = rec.get("question"), rec.get("choices"), rec.get("answer")
            if not isinstance(question, str) or not question.strip():
                raise DataError("missing question text", path=path, line=line, field="question")
            if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
                raise DataError(
                    "choices must be a list of at least two non-empty strings", path=path, line=line, field="choices"
                )
            if isinstance(answer, str) and answer in choices:
                answer = choices.index(answer)
            if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < len(choices):
                raise DataError(
                    f"answer must be a choice's index (0-{len(choices) - 1}) or its text",
                    path=path,
                    line=line,
                    field="answer",
                )
            ident = str(rec.get("id", line))
            questions.append(
                Question(ident, str(rec.get("subject", "all")), question, tuple(f" {c}" for c in choices), answer)
            )
    return questions


def load_benchmark(path: str | Path, *, split: str = "test", shots: int = 0) -> list[Question]:
    """Every question of a benchmark file or folder (MMLU, TruthfulQA or JSONL; see the module)."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"benchmark data {p} does not exist")
    if p.is_dir() or (p.suffix == ".csv" and not _has_header(p)):
        questions = load_mmlu(p, split=split, shots=shots)
    elif p.suffix == ".csv":
        questions = load_truthfulqa(p)
    elif p.suffix in (".jsonl", ".json"):
        questions = load_jsonl(p)
    else:
        raise ConfigError(f"benchmark data {p}: expected an MMLU folder or CSV, TruthfulQA.csv or a .jsonl file")
    if not questions:
        raise DataError("no questions", path=p)
    return questions


def _has_header(path: Path) -> bool:
    with open(path, newline="", encoding="utf-8") as fh:
        first = next(csv.reader(fh), [])
    return "Question" in first


def stratified(questions: list[Question], per_subject: int, seed: int = 0) -> list[Question]:
    """At most ``per_subject`` questions of each subject, drawn with ``seed``, in the original order."""
    by_subject: dict[str, list[int]] = {}
    for k, q in enumerate(questions):
        by_subject.setdefault(q.subject, []).append(k)
    rng = random.Random(seed)
    keep: set[int] = set()
    for members in by_subject.values():
        keep.update(members if len(members) <= per_subject else rng.sample(members, per_subject))
    return [q for k, q in enumerate(questions) if k in keep]
