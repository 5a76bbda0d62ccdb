"""LLMBar's processed MT-Bench subset (expert pairwise labels) as MT-Bench files.

LLMBar's ``Processed/MT-Bench/dataset.json`` is a list of ``{input, output_1, output_2, label: 1|2}``
with no question ids or model names. The mapping:

* ``question_id``: the MT-Bench question whose turn-1 text equals ``input`` (all 200 are turn-1
  questions); ``turn`` is 1.
* ``model_1`` / ``model_2``: the name of the pre-generated model whose turn-1 answer equals
  ``output_1`` / ``output_2`` exactly (when answers are given), else ``llmbar-<sha256(text)[:8]>``
  -- the texts people judged are not always the published answers.
* ``winner``: ``model_1`` for label 1, ``model_2`` for label 2 (LLMBar removed ties).

Written: ``question.jsonl`` (those questions, turn 1 only), ``model_answer/llmbar.jsonl`` (every
answer text once, under its model id) and ``labels.jsonl`` -- pairwise judgments lines with the
human verdict (``judge: ["human", "llmbar-expert-majority"]``). Run ``judge mtbench judge --pairs
labels.jsonl`` on the first two and join the result to the labels by (question_id, model_1, model_2, turn).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from judge.errors import DataError
from judge.io import parse_json, write_jsonl
from judge.mtbench.formats import Answer, Question, QuestionId, answer_record

HUMAN_JUDGE = ["human", "llmbar-expert-majority"]


def _read_records(path: Path) -> list[Any]:
    """The dataset's records: a JSON list, else a :class:`DataError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read LLMBar dataset: {exc}", path=path) from None
    records = parse_json(text, path)
    if not isinstance(records, list):
        raise DataError("expected a JSON list of {input, output_1, output_2, label}", path=path)
    return records


def _answer_names(
    rec: dict[str, Any],
    qid: QuestionId,
    known: dict[tuple[QuestionId, str], str],
    texts: dict[tuple[QuestionId, str], str],
    counts: dict[str, int],
) -> list[str]:
    """The model names of a record's two answers: the published model's whose answer is the same text, else
    ``llmbar-<hash>``; each text is kept under its (question, name) in ``texts``."""
    names = []
    for key in ("output_1", "output_2"):
        text = str(rec.get(key, ""))
        name = known.get((qid, text.strip()))
        if name is None:
            name = "llmbar-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
        else:
            counts["matched_answers"] += 1
        texts[(qid, name)] = text
        names.append(name)
    return names


def _label(
    q: Question, names: list[str], label: int, texts: dict[tuple[QuestionId, str], str], source: str
) -> dict[str, Any]:
    """The human verdict on one pair as a pairwise judgment line (both orders agree: LLMBar removed ties)."""
    winner = "model_1" if label == 1 else "model_2"
    return {
        "question_id": q.question_id,
        "model_1": names[0],
        "model_2": names[1],
        "g1_winner": winner,
        "g2_winner": winner,
        "winner": winner,
        "consistent": True,
        "judge": HUMAN_JUDGE,
        "turn": 1,
        "status": "ok",
        "category": q.category,
        "answer_1_chars": len(texts[(q.question_id, names[0])]),
        "answer_2_chars": len(texts[(q.question_id, names[1])]),
        "source": source,
    }


def _write(
    out: Path,
    used_questions: dict[QuestionId, Question],
    texts: dict[tuple[QuestionId, str], str],
    labels: list[dict[str, Any]],
) -> None:
    """question.jsonl (turn 1 of the questions used), model_answer/llmbar.jsonl and labels.jsonl."""
    write_jsonl(
        out / "question.jsonl",
        [
            {
                "question_id": q.question_id,
                "category": q.category,
                "turns": q.turns[:1],
                **({"reference": q.reference[:1]} if q.reference else {}),
            }
            for q in sorted(used_questions.values(), key=lambda q: str(q.question_id))
        ],
    )
    write_jsonl(
        out / "model_answer" / "llmbar.jsonl",
        [
            answer_record(model, qid, [text], 0.0)
            for (qid, model), text in sorted(texts.items(), key=str)
            if qid in used_questions
        ],
    )
    write_jsonl(out / "labels.jsonl", labels)


def convert_llmbar(
    dataset: str | Path,
    questions: list[Question],
    out_dir: str | Path,
    known_answers: dict[str, dict[QuestionId, Answer]] | None = None,
) -> dict[str, int]:
    """Write the three files into ``out_dir``; returns counts (pairs, questions, answers, matched, skipped)."""
    path = Path(dataset)
    records = _read_records(path)
    by_text = {q.turns[0].strip(): q for q in questions}
    known: dict[tuple[QuestionId, str], str] = {}
    for model, answers in sorted((known_answers or {}).items()):
        for qid, ans in answers.items():
            known.setdefault((qid, ans.turns[0].strip()), model)

    used_questions: dict[QuestionId, Question] = {}
    texts: dict[tuple[QuestionId, str], str] = {}  # (qid, model) -> answer text
    labels: list[dict[str, Any]] = []
    seen: set[tuple[QuestionId, str, str]] = set()
    counts = {"pairs": 0, "matched_answers": 0, "skipped": 0}
    for i, rec in enumerate(records, start=1):
        if not isinstance(rec, dict) or rec.get("label") not in (1, 2):
            msg = f"record {i}: expected input, output_1, output_2 and label 1 or 2"
            raise DataError(msg, path=path, field="label")
        q = by_text.get(str(rec.get("input", "")).strip())
        if q is None:
            counts["skipped"] += 1
            continue
        names = _answer_names(rec, q.question_id, known, texts, counts)
        key3 = (q.question_id, names[0], names[1])
        if names[0] == names[1] or key3 in seen:
            counts["skipped"] += 1
            continue
        seen.add(key3)
        used_questions[q.question_id] = q
        labels.append(_label(q, names, rec["label"], texts, f"{path}#{i}"))
    counts["pairs"] = len(labels)
    _write(Path(out_dir), used_questions, texts, labels)
    counts["questions"] = len(used_questions)
    counts["answers"] = sum(1 for qid, _ in texts if qid in used_questions)
    return counts
