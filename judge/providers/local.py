"""In-process transformers causal LM as a judge (``local/<alias-or-path>``).

Greedy decoding is temperature 0. In logprob score mode the probability of every score string is
computed exactly (teacher forcing each candidate's tokens after the prompt), not read from a
top-k list. torch/transformers are imported lazily; one model per process, calls serialised.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from judge.config import GenerateConfig, Message
from judge.errors import ProviderError
from judge.providers._base import ModelOutput, Provider, Usage


class LocalProvider(Provider):
    """A transformers causal LM in this process."""

    name = "local"
    supports_json_schema = False
    supports_logprobs = True
    default_score_mode = "logprob"

    def __init__(self, model: str = "smollm2", *, device: str | None = None) -> None:
        super().__init__(model)
        self.device = device
        self._lock = threading.Lock()
        self._loaded: tuple[Any, Any] | None = None

    def connection_key(self) -> str:
        return f"local:{self.model}"

    def cache_identity(self) -> dict[str, Any]:
        from judge.localmodels import resolve_model

        return {"provider": self.name, "model": self.model, "resolved": str(resolve_model(self.model))}

    def _load(self) -> tuple[Any, Any]:
        if self._loaded is None:
            from judge.localmodels import load_causal_lm

            self._loaded = load_causal_lm(self.model, self.device)
        return self._loaded

    async def generate(self, messages: list[Message], config: GenerateConfig) -> ModelOutput:
        return await asyncio.to_thread(self._generate_sync, messages, config)

    def _generate_sync(self, messages: list[Message], config: GenerateConfig) -> ModelOutput:
        import torch

        with self._lock:
            model, tok = self._load()
            prompt_ids = _chat_ids(tok, messages)
            device = next(model.parameters()).device
            input_ids = torch.tensor([prompt_ids], device=device)
            with torch.inference_mode():
                if config.score_candidates:
                    scores = _candidate_logprobs(model, tok, prompt_ids, config.score_candidates, device)
                    best = max(scores, key=lambda c: scores[c])
                    return ModelOutput(
                        text=best,
                        model=self.model,
                        usage=Usage(prompt_tokens=len(prompt_ids), completion_tokens=0),
                        score_logprobs=scores,
                    )
                if config.temperature != 0:
                    raise ProviderError("the local provider decodes greedily only (temperature 0)")
                torch.manual_seed(config.seed)
                out = model.generate(
                    input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    max_new_tokens=config.max_tokens,
                    do_sample=False,
                    pad_token_id=tok.pad_token_id,
                )
            new = out[0, len(prompt_ids) :].tolist()
            text = tok.decode(new, skip_special_tokens=True)
            finish = "stop" if new and new[-1] == tok.eos_token_id else "length"
            return ModelOutput(
                text=text,
                model=self.model,
                usage=Usage(prompt_tokens=len(prompt_ids), completion_tokens=len(new)),
                finish_reason=finish,
            )


def _chat_ids(tok: Any, messages: list[Message]) -> list[int]:
    if getattr(tok, "chat_template", None):
        ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):  # BatchEncoding in newer transformers
            ids = ids["input_ids"]
        return list(ids)
    # a base model without a chat template: plain concatenation
    text = "\n\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\n\nassistant:"
    return list(tok(text)["input_ids"])


def _candidate_logprobs(
    model: Any, tok: Any, prompt_ids: list[int], candidates: tuple[str, ...], device: Any
) -> dict[str, float]:
    """Exact log P(candidate | prompt), summed over the candidate's tokens.

    One forward pass over the prompt answers every single-token candidate (digits 1-9 on most
    tokenizers); only multi-token candidates ("10" as "1","0") need one extra padded batch.
    """
    import torch

    cand_ids = {c: tok(c, add_special_tokens=False)["input_ids"] for c in candidates}
    prompt = torch.tensor([prompt_ids], device=device)
    last = torch.log_softmax(model(prompt).logits[0, -1].float(), dim=-1)
    out = {c: float(last[ids[0]]) for c, ids in cand_ids.items() if len(ids) == 1}
    multi = [c for c, ids in cand_ids.items() if len(ids) > 1]
    if multi:
        width = max(len(cand_ids[c]) for c in multi)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        rows = [prompt_ids + cand_ids[c] + [pad] * (width - len(cand_ids[c])) for c in multi]
        logp = torch.log_softmax(model(torch.tensor(rows, device=device)).logits.float(), dim=-1)
        n = len(prompt_ids)
        for i, c in enumerate(multi):
            out[c] = sum(float(logp[i, n - 1 + j, t]) for j, t in enumerate(cand_ids[c]))
    return {c: out[c] for c in candidates}
