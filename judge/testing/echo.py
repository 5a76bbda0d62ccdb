"""A legacy ``/v1/completions`` handler for :class:`judge.testing.server.LoopbackServer` that answers as vLLM
does with ``echo`` and ``logprobs``: every prompt token with its log-probability under a real local
transformers model (None for the first), its character offset, and one greedy generated token.

``generated_only=True`` answers as llama.cpp's server does: the generated token's log-probability only, none
for the prompt -- what a client must refuse rather than read as a likelihood of 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class EchoLogprobs:
    """``LoopbackServer(completions=EchoLogprobs(model_dir))``."""

    def __init__(self, model_dir: str | Path, *, generated_only: bool = False) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(str(model_dir))
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
        self.generated_only = generated_only

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        prompts = request["prompt"] if isinstance(request["prompt"], list) else [request["prompt"]]
        choices = [self._choice(i, str(p)) for i, p in enumerate(prompts)]
        return {"id": "cmpl-echo", "object": "text_completion", "model": request.get("model"), "choices": choices}

    def _choice(self, index: int, text: str) -> dict[str, Any]:
        import torch

        enc = self.tok(text, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        with torch.no_grad():
            logits = self.model(input_ids=torch.tensor([ids])).logits[0].float()
        logp = torch.log_softmax(logits, dim=-1)
        token_logprobs: list[float | None] = [None] + [float(logp[k - 1, ids[k]]) for k in range(1, len(ids))]
        offsets = [int(a) for a, _ in enc["offset_mapping"]]
        nxt = int(torch.argmax(logp[-1]))
        tokens = [self.tok.decode([t]) for t in ids]
        generated = str(self.tok.decode([nxt]))
        if self.generated_only:
            tokens, token_logprobs, offsets = [], [], []
        logprobs = {
            "tokens": [*tokens, generated],
            "token_logprobs": [*token_logprobs, float(logp[-1, nxt])],
            "text_offset": [*offsets, len(text)],
            "top_logprobs": None,
        }
        return {"index": index, "text": text + generated, "logprobs": logprobs, "finish_reason": "length"}
