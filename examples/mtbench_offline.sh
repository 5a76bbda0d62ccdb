#!/usr/bin/env bash
# MT-Bench end to end, offline: SmolLM2 (local/smollm2) answers the four example questions and
# then judges them -- single grading and pairwise against a second "model" (the same model at
# another temperature setting would be identical under greedy decoding, so we compare it with a
# copy that answers with a system prompt). A 135M model is a smoke test, not a trustworthy judge:
# expect many unscored verdicts; they are counted, never scored 0. Every call is cached, so a
# second run is instant.
set -euo pipefail
cd "$(dirname "$0")/.."
JUDGE=${JUDGE:-.venv/bin/judge}
OUT=${OUT:-out/mtbench_example}
Q=examples/mtbench/question.jsonl
mkdir -p "$OUT/model_answer"

"$JUDGE" mtbench answer --questions "$Q" --model local/smollm2 --model-id smollm2 \
  --max-tokens 96 --out "$OUT/model_answer/smollm2.jsonl"
"$JUDGE" mtbench answer --questions "$Q" --model local/smollm2 --model-id smollm2-terse \
  --system "Answer in at most two sentences." --max-tokens 96 --out "$OUT/model_answer/smollm2-terse.jsonl"

"$JUDGE" mtbench judge --questions "$Q" --answers "$OUT/model_answer" --mode single \
  --judge local/smollm2 --max-tokens 96 --out "$OUT/judgments_single.jsonl"
"$JUDGE" mtbench judge --questions "$Q" --answers "$OUT/model_answer" --mode pairwise-all \
  --judge local/smollm2 --max-tokens 96 --out "$OUT/judgments_pair.jsonl"

"$JUDGE" mtbench show "$OUT/judgments_single.jsonl" --plot "$OUT/radar.png"
"$JUDGE" mtbench show "$OUT/judgments_pair.jsonl"
