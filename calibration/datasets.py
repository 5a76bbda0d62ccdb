"""Loaders for public human-label sets, each returning judge-ready items and labels in calibration's shape.

Every loader returns ``(items, labels)``: ``items`` is a frame with an ``id`` column plus the texts a judge
needs (and, where the set has one, a reference judge's verdict in ``score``); ``labels`` is a frame with
``id``, ``annotator``, ``label`` that :func:`calibration.calibrate` accepts as is.

LLMBar's MT-Bench expert labels have no loader here: ``judge mtbench llmbar`` turns them into MT-Bench
pairwise judgment lines (``judge.mtbench.llmbar``), which ``judge calibrate`` reads directly (see its
``--help``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from calibration.labels import normalise_pairwise
from judge.errors import DataError
from judge.io import parse_json, read_rows


def _read_json_list(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        raise DataError("file not found", path=path)
    data = parse_json(path.read_text(encoding="utf-8"), path)
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
