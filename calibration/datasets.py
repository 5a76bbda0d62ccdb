"""Loaders for public human-label sets, each returning judge-ready items and labels in calibration's shape.

Every loader returns ``(items, labels)``: ``items`` is a frame with an ``id`` column plus the texts a judge
needs (and, where the set has one, a reference judge's verdict in ``score``); ``labels`` is a frame with
``id``, ``annotator``, ``label`` that :func:`calibration.calibrate` accepts as is.

llmbar MT-Bench adapter (:func:`load_llmbar_mtbench`, :func:`join_mtbench_judgments`)
-------------------------------------------------------------------------------------
LLMBar's ``Processed/MT-Bench/dataset.json`` holds 200 MT-Bench *turn-1* pairs with expert majority
labels (ties removed): ``{input, output_1, output_2, label: 1|2}`` and no question ids or model names.
Field mapping:

========================  =================================================================
pair ``id``               ``"llmbar-mtbench-NNN"``, NNN = the record's position (000..199)
``question_id``           the MT-Bench question whose ``turns[0]`` equals ``input`` exactly
``question``              ``input``
``output_1``/``output_2``  the two answers the experts compared (turn 1)
``model_1``/``model_2``   the MT-Bench model whose pre-generated turn-1 answer to that question
                          equals the output exactly; None when no pre-generated answer matches
                          (gpt-4/claude-v1 answers were regenerated since, and vicuna-13b-v1.2
                          is not in the set), so about a third of the pairs are fully named
label                     ``1`` -> ``"A"`` (output_1 better), ``2`` -> ``"B"``
========================  =================================================================

Two ways to calibrate a pairwise judge against it:

1. Judge the 200 items themselves (question, output_1 as A, output_2 as B) and write verdicts keyed
   by ``id``; every pair counts.
2. Given MT-Bench judgments ``{question_id, model_1, model_2, winner: model_1|model_2|tie}`` on the
   pre-generated answers, :func:`join_mtbench_judgments` matches each to the pairs whose two models
   are named, in either order (swapping the winner when the order is reversed). Only the named pairs
   can be joined.

``judge calibrate --adapter llmbar-mtbench --human .../Processed/MT-Bench/dataset.json --judge J.jsonl``
does either, depending on whether ``J.jsonl`` has an ``id`` column.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from calibration.labels import normalise_pairwise
from judge.errors import DataError
from judge.io import read_rows

LLMBAR_MTBENCH_PREFIX = "llmbar-mtbench-"


def _read_json_list(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        raise DataError("file not found", path=path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON ({exc.msg})", path=path, line=exc.lineno) from None
    if not isinstance(data, list):
        raise DataError("expected a JSON list of records", path=path)
    return data


def load_llmfao(directory: str | Path, judge: str = "gpt4") -> tuple[pd.DataFrame, pd.DataFrame]:
    """LLMFAO: the GPT judge's verdict per pair (``score`` = A/B/tie) and every crowd worker's label.

    ``left`` -> ``"A"`` (model_x), ``right`` -> ``"B"`` (model_y), ``tie`` -> ``"tie"``; pair ``id`` as in the files.
    """
    root = Path(directory)
    gpt = pd.read_csv(root / f"{judge}-crowd-comparisons.csv", dtype={"id": str})
    crowd = pd.read_csv(root / "crowd-comparisons.csv", dtype={"id": str, "worker": str})
    items = gpt.rename(columns={"winner": "judge_winner"})
    items["score"] = items["judge_winner"].map(normalise_pairwise)
    labels = pd.DataFrame(
        {"id": crowd["id"], "annotator": crowd["worker"], "label": crowd["winner"].map(normalise_pairwise)}
    )
    return items, labels


def load_pandalm(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """PandaLM testset-v1: items (instruction, input, response1 as A, response2 as B) and 3 annotators' labels.

    ``1`` -> ``"A"``, ``2`` -> ``"B"``, ``0`` -> ``"tie"``; ``id`` is ``idx``.
    """
    records = _read_json_list(Path(path))
    items = pd.DataFrame(
        [{k: r[k] for k in ("idx", "cmp_key", "instruction", "input", "response1", "response2")} for r in records]
    ).rename(columns={"idx": "id"})
    items["id"] = items["id"].astype(str)
    labels = pd.DataFrame(
        [
            {"id": str(r["idx"]), "annotator": f"annotator{k}", "label": normalise_pairwise(r[f"annotator{k}"])}
            for r in records
            for k in (1, 2, 3)
        ]
    )
    return items, labels


def load_summeval(path: str | Path, dimension: str = "coherence") -> tuple[pd.DataFrame, pd.DataFrame]:
    """SummEval (flat JSONL): one item per (doc, system) summary; the label is the experts' mean 1–5 score.

    ``id`` is ``"<doc_id>/<system_id>"``; the other three dimensions stay on the items as candidate scores.
    """
    rows = read_rows(path)
    items = pd.DataFrame([r.data for r in rows])
    if dimension not in items.columns:
        raise DataError(f"no '{dimension}' column", path=path, field=dimension)
    items.insert(0, "id", items["doc_id"] + "/" + items["system_id"])
    labels = pd.DataFrame({"id": items["id"], "annotator": "experts", "label": items[dimension].astype(float)})
    return items, labels


def load_llmbar_mtbench(path: str | Path, mtbench_dir: str | Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """LLMBar's MT-Bench subset as judge-ready pairs and expert labels (field mapping in the module docstring).

    ``mtbench_dir`` (with ``question.jsonl`` and ``model_answer/``) recovers question ids and model names;
    by default it is looked for at ``<llmbar>/../mt_bench`` next to the ``llmbar`` folder.
    """
    file = Path(path)
    records = _read_json_list(file)
    if mtbench_dir is None:
        mtbench_dir = file.resolve().parents[2].parent / "mt_bench"
    questions, answers = _mtbench_index(Path(mtbench_dir))
    items: list[dict[str, Any]] = []
    labels: list[dict[str, Any]] = []
    for i, r in enumerate(records, start=1):
        for key in ("input", "output_1", "output_2", "label"):
            if key not in r:
                raise DataError(f"record {i} has no '{key}'", path=file, field=key)
        pair_id = f"{LLMBAR_MTBENCH_PREFIX}{i - 1:03d}"
        qid = questions.get(r["input"])
        items.append(
            {
                "id": pair_id,
                "question_id": qid,
                "question": r["input"],
                "output_1": r["output_1"],
                "output_2": r["output_2"],
                "model_1": answers.get((qid, r["output_1"].strip())),
                "model_2": answers.get((qid, r["output_2"].strip())),
            }
        )
        label = {1: "A", 2: "B"}.get(r["label"])
        if label is None:
            raise DataError(f"record {i}: label {r['label']!r} is not 1 or 2", path=file, field="label")
        labels.append({"id": pair_id, "annotator": "experts", "label": label})
    return pd.DataFrame(items), pd.DataFrame(labels)


def _mtbench_index(directory: Path) -> tuple[dict[str, int], dict[tuple[int | None, str], str]]:
    questions: dict[str, int] = {}
    answers: dict[tuple[int | None, str], str] = {}
    qfile = directory / "question.jsonl"
    if not qfile.exists():
        return questions, answers
    for row in read_rows(qfile):
        questions[row.data["turns"][0]] = int(row.data["question_id"])
    for afile in sorted((directory / "model_answer").glob("*.jsonl")):
        for row in read_rows(afile):
            text = row.data["choices"][0]["turns"][0].strip()
            answers[(int(row.data["question_id"]), text)] = afile.stem
    return questions, answers


def join_mtbench_judgments(judgments: pd.DataFrame, items: pd.DataFrame, *, source: str | None = None) -> pd.DataFrame:
    """Map MT-Bench pairwise judgments onto LLMBar pair ids: a frame with ``id`` and ``score`` (A/B/tie).

    ``judgments`` needs ``question_id``, ``model_1``, ``model_2``, ``winner`` (``model_1``/``model_2``/``tie``;
    ``A``/``B`` also accepted). A judgment of (m2, m1) joins a pair (m1, m2) with the winner swapped.
    Judgments that match no named pair are dropped; pairs with no judgment are missing (and reported so).
    """
    for col in ("question_id", "model_1", "model_2", "winner"):
        if col not in judgments.columns:
            raise DataError(f"MT-Bench judgments need a '{col}' column", path=source, field=col)
    lookup: dict[tuple[int, str, str], str] = {}
    for qid, m1, m2, winner in zip(
        judgments["question_id"], judgments["model_1"], judgments["model_2"], judgments["winner"], strict=True
    ):
        verdict = normalise_pairwise(winner)
        if verdict is None:
            lookup[(int(qid), str(m1), str(m2))] = "?"
            continue
        lookup[(int(qid), str(m1), str(m2))] = verdict
        lookup.setdefault((int(qid), str(m2), str(m1)), {"A": "B", "B": "A"}.get(verdict, verdict))
    rows = []
    for r in items.itertuples():
        if r.question_id is None or pd.isna(r.question_id) or r.model_1 is None or r.model_2 is None:
            continue
        verdict = lookup.get((int(r.question_id), str(r.model_1), str(r.model_2)))
        if verdict is not None:
            rows.append({"id": r.id, "score": None if verdict == "?" else verdict})
    return pd.DataFrame(rows, columns=["id", "score"])
