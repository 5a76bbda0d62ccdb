"""Our perplexity vs the Hugging Face ``evaluate`` perplexity algorithm, on the same model object.

The reference is ``evaluate``'s ``perplexity`` metric (measurements/perplexity/perplexity.py)
reimplemented here: all texts tokenized at once with padding (so every batch is as wide as the
longest text), BOS prepended (``add_start_token``), each text truncated to ``max_length - 1``,
batches of 16 in input order, cross-entropy per next token masked by the attention mask, and
``exp(sum of losses / scored tokens)`` per text. Ours scores the same tokens (BOS + text, every text
token) with length-sorted, left-padded batches and logits only where needed.

Texts: SummEval system summaries plus some of their source articles (texts that fit the window),
and separately a rolling-window run over long texts. Prints tokens/s of both, their ratio and the
largest relative difference between the two sets of perplexities.

    python bench/perplexity.py [--n-summaries 96 --n-articles 8]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

DATA = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "summeval" / "summeval_flat.jsonl")


def reference_perplexity(  # type: ignore[no-untyped-def]
    model, tokenizer, texts: list[str], batch_size: int = 16, max_length: int = 2048, float64_loss: bool = False
) -> list[float]:
    """The ``evaluate`` perplexity metric's loop, on an already loaded model.

    ``float64_loss`` upcasts the logits before the cross-entropy: on CPU the metric's float32
    cross-entropy over the transposed (batch, vocab, time) logits is off by ~1e-4 relative.
    """
    import torch

    side = tokenizer.padding_side
    tokenizer.padding_side = "right"  # the metric assumes right padding (BOS goes in front of the batch)
    try:
        enc = tokenizer(
            texts,
            add_special_tokens=False,
            padding=True,
            truncation=True,
            max_length=max_length - 1,
            return_tensors="pt",
            return_attention_mask=True,
        )
    finally:
        tokenizer.padding_side = side
    encoded_texts, attn_masks = enc["input_ids"], enc["attention_mask"]
    loss_fct = torch.nn.CrossEntropyLoss(reduction="none")
    ppls: list[float] = []
    for start in range(0, len(encoded_texts), batch_size):
        encoded_batch = encoded_texts[start : start + batch_size]
        attn_mask = attn_masks[start : start + batch_size]
        bos = torch.tensor([[tokenizer.bos_token_id]] * encoded_batch.size(dim=0))
        encoded_batch = torch.cat([bos, encoded_batch], dim=1)
        attn_mask = torch.cat([torch.ones(bos.size(), dtype=torch.int64), attn_mask], dim=1)
        labels = encoded_batch
        with torch.no_grad():
            out_logits = model(encoded_batch, attention_mask=attn_mask).logits
        shift_logits = out_logits[..., :-1, :].contiguous()
        if float64_loss:
            shift_logits = shift_logits.double()
        shift_labels = labels[..., 1:].contiguous()
        shift_mask = attn_mask[..., 1:].contiguous()
        ppl = torch.exp((loss_fct(shift_logits.transpose(1, 2), shift_labels) * shift_mask).sum(1) / shift_mask.sum(1))
        ppls += ppl.tolist()
    return ppls


def exact_perplexity(model, tokenizer, texts: list[str]) -> list[float]:  # type: ignore[no-untyped-def]
    """One text at a time, no padding, log-softmax in float64: the yardstick for both implementations."""
    import torch

    out = []
    for text in texts:
        ids = torch.tensor([[tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"]]])
        with torch.inference_mode():
            logits = model(ids).logits[0, :-1].double()
        lp = torch.log_softmax(logits, -1).gather(-1, ids[0, 1:, None]).squeeze(-1)
        out.append(math.exp(-float(lp.mean())))
    return out


def load_texts(n_summaries: int, n_articles: int, seed: int = 0) -> tuple[list[str], list[str]]:
    with open(DATA) as fh:
        rows = [json.loads(line) for line in fh]
    rng = random.Random(seed)
    summaries = [r["summary"] for r in rng.sample(rows, n_summaries)]
    articles = list(dict.fromkeys(r["source"] for r in rows))
    return summaries, rng.sample(articles, n_articles)


def compare(name: str, model, tokenizer, texts: list[str], packed=None) -> None:  # type: ignore[no-untyped-def]
    from judge.local.lm import loglikelihoods, start_token_id

    n_tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    t0 = time.perf_counter()
    ref = reference_perplexity(model, tokenizer, texts)
    t_ref = time.perf_counter() - t0

    import math

    t0 = time.perf_counter()
    start = start_token_id(tokenizer)
    reqs = [([start, *tokenizer(t, add_special_tokens=False)["input_ids"]], 1) for t in texts]
    ours = [math.exp(-ll.logprob / ll.n_tokens) for ll in loglikelihoods(model, tokenizer, reqs, max_length=2048)]
    t_ours = time.perf_counter() - t0

    if packed is not None:  # what judge's perplexity runs: SmolLM2's 4-bit layers kept packed
        t0 = time.perf_counter()
        lls = loglikelihoods(packed, tokenizer, reqs, max_length=2048)
        t_packed = time.perf_counter() - t0
        same = sum(math.exp(-ll.logprob / ll.n_tokens) == o for ll, o in zip(lls, ours, strict=True))
    rel = max(abs(a - b) / abs(b) for a, b in zip(ours, ref, strict=True))
    k = min(len(texts), 16)
    exact = exact_perplexity(model, tokenizer, texts[:k])
    rel_ours = max(abs(a - b) / b for a, b in zip(ours[:k], exact, strict=True))
    rel_ref = max(abs(a - b) / b for a, b in zip(ref[:k], exact, strict=True))
    ref64 = reference_perplexity(model, tokenizer, texts[:k], float64_loss=True)
    rel_ref64 = max(abs(a - b) / b for a, b in zip(ours[:k], ref64, strict=True))
    print(f"[{name}] {len(texts)} texts, {n_tokens} tokens")
    print(f"  reference (evaluate algorithm): {t_ref:7.2f} s  {n_tokens / t_ref:8.1f} tokens/s")
    print(f"  ours (judge.baselines)        : {t_ours:7.2f} s  {n_tokens / t_ours:8.1f} tokens/s")
    print(f"  speed ratio ours/reference    : {t_ref / t_ours:.2f}x")
    if packed is not None:
        print(
            f"  ours, 4-bit layers packed     : {t_packed:7.2f} s  {n_tokens / t_packed:8.1f} tokens/s, ratio to"
            f" reference {t_ref / t_packed:.2f}x, to ours float32 {t_ours / t_packed:.2f}x;"
            f" {same}/{len(texts)} perplexities identical"
        )
    print(f"  max relative difference       : {rel:.2e}")
    print(f"  vs float64 one-by-one ({k} texts): ours {rel_ours:.2e}, reference {rel_ref:.2e}")
    print(f"  ours vs reference with its loss in float64 ({k} texts): {rel_ref64:.2e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--n-summaries", type=int, default=96)
    ap.add_argument("--n-articles", type=int, default=8)
    ap.add_argument("--long-texts", type=int, default=4, help="articles joined into long texts for rolling windows")
    args = ap.parse_args()

    import torch

    from judge.local.lm import loglikelihoods, start_token_id
    from judge.local.models import load_causal_lm

    # the packed copy first: asked for after the float32 one, the loader would hand that back
    packed, _ = load_causal_lm(args.model, "cpu", packed=True)
    model, tokenizer = load_causal_lm(args.model, "cpu")
    packed = packed if packed is not model else None
    print(f"model {args.model}, torch threads {torch.get_num_threads()}")
    summaries, articles = load_texts(args.n_summaries, args.n_articles)
    reference_perplexity(model, tokenizer, summaries[:4])  # warm-up: first calls pay one-off setup
    compare("summaries", model, tokenizer, summaries, packed)
    mixed = summaries + articles
    random.Random(1).shuffle(mixed)
    compare("summaries + articles, mixed lengths", model, tokenizer, mixed, packed)

    # rolling windows: long texts made of several articles, in 512-token windows with a 256 stride
    long_texts = [" ".join(articles[i : i + 4]) for i in range(0, min(len(articles), 4 * args.long_texts), 4)]
    start = start_token_id(tokenizer)
    reqs = [([start, *tokenizer(t, add_special_tokens=False)["input_ids"]], 1) for t in long_texts]
    n = sum(len(r[0]) - 1 for r in reqs)
    for max_length, stride in ((512, 256), (512, 511), (2048, 1024)):
        t0 = time.perf_counter()
        res = loglikelihoods(model, tokenizer, reqs, max_length=max_length, stride=stride)
        dt = time.perf_counter() - t0
        ppl = math.exp(-sum(r.logprob for r in res) / n)
        windows = sum(r.n_windows for r in res)
        print(
            f"[rolling] {len(reqs)} texts, {n} tokens, window {max_length} stride {stride}: {windows} windows, "
            f"{dt:.2f} s, {n / dt:.1f} tokens/s, corpus perplexity {ppl:.3f}"
        )


if __name__ == "__main__":
    main()
