"""Build this example's data from MT-Bench (../shared/data/mt_bench): the first turn of each of the 80
questions, answered by llama-13b (the base) and vicuna-13b-v1.3 (its fine-tune), with GPT-4's reference
answer where MT-Bench has one (math, reasoning, coding: 30 questions).

    python examples/finetune/prepare.py [--data ../shared/data/mt_bench]

The files it writes are committed, so the example runs without ../shared.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=HERE.parents[1].parent / "shared" / "data" / "mt_bench")
    args = ap.parse_args()
    questions = read_jsonl(args.data / "question.jsonl")
    ref_rows = read_jsonl(args.data / "reference_answer" / "gpt-4.jsonl")
    refs = {r["question_id"]: r["choices"][0]["turns"][0] for r in ref_rows}
    items = []
    for q in questions:
        item = {"id": f"q{q['question_id']}", "input": q["turns"][0], "category": q["category"]}
        if q["question_id"] in refs:
            item["reference"] = refs[q["question_id"]]
        items.append(item)
    write_jsonl(HERE / "items.jsonl", items)
    for model, name in (("llama-13b", "base"), ("vicuna-13b-v1.3", "tuned")):
        answers = read_jsonl(args.data / "model_answer" / f"{model}.jsonl")
        rows = [{"id": f"q{a['question_id']}", "output": a["choices"][0]["turns"][0], "model": model} for a in answers]
        write_jsonl(HERE / f"{name}.jsonl", rows)
    # a small slice for the judge-rubric suite: the first question of each category
    seen: dict[str, int] = {}
    slice_ = []
    for item in items:
        if seen.get(item["category"], 0) < 1:
            seen[item["category"]] = seen.get(item["category"], 0) + 1
            slice_.append(item)
    write_jsonl(HERE / "items_slice.jsonl", slice_)
    keep = {item["id"] for item in slice_}
    for name in ("base", "tuned"):
        rows = [r for r in read_jsonl(HERE / f"{name}.jsonl") if r["id"] in keep]
        write_jsonl(HERE / f"{name}_slice.jsonl", rows)
    print(f"{len(items)} items ({len(refs)} with a reference), slice of {len(slice_)}")


if __name__ == "__main__":
    main()
