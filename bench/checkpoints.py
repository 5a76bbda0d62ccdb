"""From checkpoints to verdict: the model-side work of ``judge eval`` against plain library loops, in one run.

Three comparisons on SmolLM2-135M-Instruct (the embedded model), same model object, same settings:

1. **Generation**: our path (the local provider's left-padded batches of 8, longest prompts first, fed by
   ``judge.generation.generate_outputs``) against a plain ``transformers`` ``generate`` loop, one prompt at a
   time; greedy, the same ``max_new_tokens``; items/s and how many outputs are identical.
2. **Loss**: ``judge eval``'s ``loss`` (rolling-window-capable, length-sorted, left-padded batches) against
   a plain batched ``model(input_ids, labels=...)`` loop over the same token ids (batches of 8 in input
   order, right padding); tokens/s and the largest difference in per-item loss.
3. **Multiple choice (MMLU)**: our ``choice_accuracy`` scoring (each question's prompt run once, its
   choices continued on the prompt's cache) against lm-evaluation-harness's request shape (one forward
   per choice, context + choice); questions/s and agreement of the chosen answers.

Prompts: TruthfulQA questions (examples/finetune_local/val.jsonl); MMLU: ``--per-subject`` questions of each
of the 57 subjects from ../shared/data/mmlu (zero-shot).

    python bench/checkpoints.py [--n 32 --max-new-tokens 48 --per-subject 1 --threads 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MMLU = ROOT.parent / "shared" / "data" / "mmlu"


def plain_generate(model, tok, prompts: list[str], max_new_tokens: int) -> list[str]:  # type: ignore[no-untyped-def]
    import torch

    out = []
    for p in prompts:
        ids = tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, return_tensors="pt")
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        with torch.inference_mode():
            gen = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
            )
        out.append(tok.decode(gen[0, ids.shape[1] :], skip_special_tokens=True))
    return out


def plain_loss(model, requests: list[tuple[list[int], int]], batch_size: int = 8) -> list[float]:  # type: ignore[no-untyped-def]
    import torch

    losses = []
    for i in range(0, len(requests), batch_size):
        batch = requests[i : i + batch_size]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        labels = torch.full((len(batch), width), -100)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, (seq, first) in enumerate(batch):
            ids[r, : len(seq)] = torch.tensor(seq)
            labels[r, first : len(seq)] = torch.tensor(seq[first:])
            mask[r, : len(seq)] = 1
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
        # per-row mean cross-entropy over the row's labelled tokens (what model(labels=...) averages per batch)
        lp = torch.nn.functional.cross_entropy(
            logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=-100, reduction="none"
        )
        for r, (seq, first) in enumerate(batch):
            losses.append(float(lp[r].sum() / (len(seq) - first)))
    return losses


def plain_choices(model, tok, questions) -> list[int]:  # type: ignore[no-untyped-def]
    import torch

    picks = []
    for q in questions:
        head = tok(q.context)["input_ids"]
        scores = []
        for c in q.choices:
            tail = tok(c, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([head + tail])
            with torch.inference_mode():
                logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
            scores.append(sum(float(logp[len(head) - 1 + k, t]) for k, t in enumerate(tail)))
        picks.append(max(range(len(scores)), key=scores.__getitem__))
    return picks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--per-subject", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from judge.benchmarks import load_benchmark, stratified
    from judge.generation import GenerateSettings, generate_outputs
    from judge.local.lm import answer_requests, choice_requests, loglikelihoods, model_max_length
    from judge.local.models import load_causal_lm, smollm2_path
    from judge.providers.local import LocalProvider

    torch.set_num_threads(args.threads)
    path = str(smollm2_path())
    model, tok = load_causal_lm(path)
    rows = [json.loads(x) for x in (ROOT / "examples" / "finetune_local" / "val.jsonl").read_text().splitlines()]
    rows = (rows * (args.n // len(rows) + 1))[: args.n]
    prompts = [r["input"] for r in rows]

    # 1. generation
    settings = GenerateSettings(max_new_tokens=args.max_new_tokens)
    provider = LocalProvider(path, generate_batch_size=8)
    plain_generate(model, tok, prompts[:2], 4)  # warm-up
    t = time.perf_counter()
    ours = asyncio.run(generate_outputs(provider, [str(i) for i in range(len(prompts))], prompts, settings, cache=None))
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    ref = plain_generate(model, tok, prompts, args.max_new_tokens)
    t_ref = time.perf_counter() - t
    same = sum(o["output"] == r for o, r in zip(ours, ref, strict=True))
    print(
        f"generation, {len(prompts)} prompts, greedy, {args.max_new_tokens} new tokens max: "
        f"ours {len(prompts) / t_ours:.2f} items/s, "
        f"plain generate one at a time {len(prompts) / t_ref:.2f} items/s: {t_ref / t_ours:.2f}x; "
        f"identical outputs {same}/{len(prompts)}"
    )

    # 2. loss on the references
    requests = answer_requests(tok, [[{"role": "user", "content": p}] for p in prompts], [r["reference"] for r in rows])
    n_tok = sum(len(ids) - first for ids, first in requests)
    max_len = model_max_length(model, tok, None)
    t = time.perf_counter()
    lls = loglikelihoods(model, tok, requests, max_length=max_len, batch_size=8)
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    ref_loss = plain_loss(model, requests)
    t_ref = time.perf_counter() - t
    diff = max(abs(-ll.logprob / ll.n_tokens - r) for ll, r in zip(lls, ref_loss, strict=True))
    print(
        f"loss, {len(requests)} answers ({n_tok} scored tokens): ours {n_tok / t_ours:.0f} tokens/s, plain batched "
        f"model(labels=...) {n_tok / t_ref:.0f} tokens/s: {t_ref / t_ours:.2f}x; "
        f"largest per-item difference {diff:.2e} nats"
    )

    # 3. MMLU
    questions = stratified(load_benchmark(MMLU), args.per_subject, seed=0)
    reqs, owner = choice_requests(tok, [q.context for q in questions], [q.choices for q in questions])
    t = time.perf_counter()
    lls = loglikelihoods(model, tok, reqs, max_length=max_len, batch_size=16)
    t_ours = time.perf_counter() - t
    per_q: list[list[float]] = [[] for _ in questions]
    for q, ll in zip(owner, lls, strict=True):
        per_q[q].append(ll.logprob)
    ours_pick = [max(range(len(v)), key=v.__getitem__) for v in per_q]
    t = time.perf_counter()
    ref_pick = plain_choices(model, tok, questions)
    t_ref = time.perf_counter() - t
    agree = sum(a == b for a, b in zip(ours_pick, ref_pick, strict=True))
    print(
        f"MMLU, {len(questions)} questions x 4 choices: ours {len(questions) / t_ours:.2f} questions/s, "
        f"one forward per choice {len(questions) / t_ref:.2f} questions/s: {t_ref / t_ours:.2f}x; "
        f"same answer chosen {agree}/{len(questions)}"
    )


if __name__ == "__main__":
    main()
