"""Greedy generation by a local causal LM: several prompts in one left-padded ``generate`` call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from judge.local.prompts import eos_token_ids


@dataclass
class Completion:
    """One prompt's completion: its text (cut before a stop string), the new tokens it took (through the
    end-of-sequence token, if one came) and why it ended (``stop`` or ``length``)."""

    text: str
    completion_tokens: int
    finish_reason: str


def greedy_generate(
    model: Any,
    tok: Any,
    prompts: Sequence[list[int]],
    *,
    max_tokens: int,
    stop: Sequence[str] = (),
    seed: int = 0,
) -> list[Completion]:
    """Greedy completions of the token-id ``prompts`` in one left-padded ``generate`` call (one prompt: no
    padding), each at most ``max_tokens`` new tokens, ending at an end-of-sequence token or before the
    first of the ``stop`` strings."""
    import torch

    device = next(model.parameters()).device
    width = max(len(ids) for ids in prompts)
    pad = tok.pad_token_id
    input_ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    attention = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, ids in enumerate(prompts):
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention[row, width - len(ids) :] = 1
    extra: dict[str, Any] = {"stop_strings": list(stop), "tokenizer": tok} if stop else {}
    with torch.inference_mode():
        torch.manual_seed(seed)
        out = model.generate(
            input_ids.to(device),
            attention_mask=attention.to(device),
            max_new_tokens=max_tokens,
            do_sample=False,
            pad_token_id=pad,
            **extra,
        )
    ends = eos_token_ids(model, tok)
    results = []
    for row in range(len(prompts)):
        new = out[row, width:].tolist()
        end = next((k for k, t in enumerate(new) if t in ends), None)
        finish = "stop" if end is not None else "length"
        new = new[: end + 1] if end is not None else new
        text = tok.decode(new, skip_special_tokens=True)
        for s in stop:
            cut = text.find(s)
            if cut >= 0:
                text, finish = text[:cut], "stop"
        results.append(Completion(text, len(new), finish))
    return results
