"""Shared-prefix KV reuse for ``log p(output | source)`` and PMI: one source, many outputs.

SummEval has 16 system summaries per CNN/DM article. Scoring ``log p(summary | article)`` for each
runs the article 16 times; with prefix reuse the article runs once and its KV cache serves every
summary. Both ways use the same loaded model, batch size and windows; prints seconds, the ratio and
the largest difference between the two sets of values (per token within 1e-4).

    python bench/prefix_reuse.py [--articles 1 --rounds 2 --model smollm2 --threads 1 --skip-judge]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict
from pathlib import Path

DATA = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "summeval" / "summeval_flat.jsonl")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=DATA)
    ap.add_argument("--articles", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--judge-items", type=int, default=20, help="items of examples/qa.jsonl for the judge part")
    ap.add_argument("--skip-pmi", action="store_true", help="only the judge part")
    ap.add_argument("--skip-judge", action="store_true", help="only the log p / PMI part")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's); 1 is steadier on a shared CPU")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from judge.local.lm import loglikelihoods, start_token_id
    from judge.local.models import load_causal_lm

    by_doc: dict[str, list[dict[str, str]]] = defaultdict(list)
    with open(args.data) as f:
        for line in f:
            row = json.loads(line)
            by_doc[row["doc_id"]].append(row)
    docs = [rows for rows in by_doc.values() if len(rows) >= 16][: args.articles]
    sources = [r["source"] for rows in docs for r in rows[:16]]
    outputs = [r["summary"] for rows in docs for r in rows[:16]]

    model, tok = load_causal_lm(args.model, "cpu")
    print(f"load average at the start: {os.getloadavg()}")
    if not args.skip_judge:
        judge_part(args.model, args.judge_items, args.rounds)
    if args.skip_pmi:
        return
    start = start_token_id(tok)
    requests = []
    for src, out in zip(sources, outputs, strict=True):
        prefix = [start, *tok(src + "\n", add_special_tokens=False)["input_ids"]]
        requests.append((prefix + tok(out, add_special_tokens=False)["input_ids"], len(prefix)))
    n_src = sum(r[1] for r in requests) / len(requests)
    n_out = sum(len(r[0]) - r[1] for r in requests) / len(requests)
    print(
        f"{len(docs)} articles x 16 summaries; mean {n_src:.0f} source + {n_out:.0f} summary tokens; "
        f"torch threads {torch.get_num_threads()}"
    )
    uncond = [([start, *ids[n:]], 1) for ids, n in requests]  # PMI's other term: log p(summary)
    loglikelihoods(model, tok, requests[:2], max_length=2048, share_prefixes=False)  # warm up

    def timed(reqs: list[tuple[list[int], int]], share: bool) -> tuple[float, list[float]]:
        t0 = time.perf_counter()
        res = loglikelihoods(model, tok, reqs, max_length=2048, batch_size=args.batch_size, share_prefixes=share)
        return time.perf_counter() - t0, [r.logprob for r in res]

    # interleaved rounds, best of each: the CPU is shared, so single timings are noisy
    plain, shared = [], []
    for _ in range(args.rounds):
        plain.append(timed(requests, False))
        shared.append(timed(requests, True))
    t_plain, v_plain = min(plain)
    t_shared, v_shared = min(shared)
    t_uncond = min(timed(uncond, True)[0] for _ in range(args.rounds))
    lengths = [len(ids) - n for ids, n in requests]
    diff = max(abs(a - b) for a, b in zip(v_plain, v_shared, strict=True))
    per_token = max(abs(a - b) / k for a, b, k in zip(v_plain, v_shared, lengths, strict=True))
    print(
        f"log p(summary | article): unshared {t_plain:.2f} s, shared prefix {t_shared:.2f} s, "
        f"speedup {t_plain / t_shared:.1f}x; max |diff| {diff:.1e} nats per summary, {per_token:.1e} per token"
    )
    print(
        f"PMI (+ log p(summary), {t_uncond:.2f} s either way): unshared {t_plain + t_uncond:.2f} s, "
        f"shared prefix {t_shared + t_uncond:.2f} s, speedup {(t_plain + t_uncond) / (t_shared + t_uncond):.1f}x"
    )
    print(f"all rounds (s): unshared {[round(t, 2) for t, _ in plain]}, shared {[round(t, 2) for t, _ in shared]}")
    print(f"per-round ratios: {[round(p / s, 2) for (p, _), (s, _) in zip(plain, shared, strict=True)]}")
    print(f"load average at the end: {os.getloadavg()}")


def judge_part(model: str, n_items: int, rounds: int) -> None:
    """The local judge in logprob mode: without prefix reuse (one call at a time), with it (one call at
    a time), and with it and concurrent calls batched (the provider's default batch size)."""
    import asyncio

    from judge import load_rubric
    from judge.config import GenerateConfig
    from judge.local.prompts import chat_ids
    from judge.providers.local import LocalProvider

    path = Path(__file__).resolve().parents[1] / "examples" / "qa.jsonl"
    items = [json.loads(line) for line in path.open()][:n_items]
    for name, candidates in (("helpfulness", tuple(str(i) for i in range(1, 11))), ("pairwise", ("A", "B", "tie"))):
        rubric = load_rubric(name)
        prompts = [rubric.render({**it, "output_b": it["reference"]}, "logprob") for it in items]
        config = GenerateConfig(score_candidates=candidates)
        providers = {
            "plain": LocalProvider(model, prefix_reuse=False, batch_size=1),
            "reuse": LocalProvider(model, batch_size=1),
            "reuse+batch": LocalProvider(model),
        }

        async def run(provider: LocalProvider, prompts: list = prompts, config: GenerateConfig = config) -> list:
            if provider.batch_size == 1:
                return [await provider.generate(p, config) for p in prompts]
            return list(await asyncio.gather(*(provider.generate(p, config) for p in prompts)))

        asyncio.run(run(providers["plain"]))  # warm up
        times: dict[str, list[float]] = {k: [] for k in providers}
        values: dict[str, list[dict[str, float]]] = {}
        for _ in range(rounds):
            for key, provider in providers.items():
                provider.clear_prefix_cache()  # each round starts cold, like a new run
                t0 = time.perf_counter()
                outs = asyncio.run(run(provider))
                times[key].append(time.perf_counter() - t0)
                values[key] = [o.score_logprobs or {} for o in outs]
        diff = max(
            abs(x[c] - y[c])
            for k in ("reuse", "reuse+batch")
            for x, y in zip(values["plain"], values[k], strict=True)
            for c in x
        )
        _, tok = providers["plain"]._load()
        encoded = [chat_ids(tok, p) for p in prompts]
        mean_len = sum(map(len, encoded)) / len(encoded)
        shared = next((n for n in range(min(map(len, encoded))) if len({e[n] for e in encoded}) > 1), 0)
        tp, tr, tb = (min(times[k]) for k in providers)
        print(
            f"judge {name} (logprob, {len(items)} items, {mean_len:.0f} prompt tokens, "
            f"{shared} shared by all): without reuse {tp:.2f} s, with {tr:.2f} s ({tp / tr:.1f}x), "
            f"with reuse + batch {providers['reuse+batch'].batch_size} {tb:.2f} s ({tp / tb:.1f}x); "
            f"max |diff| {diff:.1e}"
        )
        rounds_s = {k: [round(t, 2) for t in v] for k, v in times.items()}
        print(f"  all rounds (s): {rounds_s}; load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
