"""Build this example's data from TruthfulQA (../shared/data/truthfulqa/TruthfulQA.csv, Apache-2.0):
each question with its best answer as the reference, split by question into training and validation.

    python examples/finetune_local/prepare.py [--data ../shared/data/truthfulqa/TruthfulQA.csv]

The files it writes are committed, so the example runs without ../shared: ``train.jsonl`` (what the
model is tuned on), ``train_eval.jsonl`` (a slice of it, for the training-loss curve) and
``val.jsonl`` (held out: validation loss, task metrics and the judge rubric).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
N_VAL = 60
N_TRAIN_EVAL = 40


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=HERE.parents[2] / "shared" / "data" / "truthfulqa" / "TruthfulQA.csv")
    args = ap.parse_args()
    with open(args.data, newline="", encoding="utf-8") as fh:
        rows = [
            {
                "id": f"tqa{k}",
                "input": r["Question"].strip(),
                "reference": r["Best Answer"].strip(),
                "category": r["Category"],
            }
            for k, r in enumerate(csv.DictReader(fh))
        ]
    random.Random(0).shuffle(rows)
    val, train = rows[:N_VAL], rows[N_VAL:]
    write_jsonl(HERE / "val.jsonl", val)
    write_jsonl(HERE / "train.jsonl", train)
    write_jsonl(HERE / "train_eval.jsonl", train[:N_TRAIN_EVAL])
    print(f"wrote {len(train)} training and {len(val)} validation items to {HERE}")


if __name__ == "__main__":
    main()
