"""In-process transformers causal LM as a judge (``local/<alias-or-path>``).

Greedy decoding is temperature 0. In logprob score mode the probability of every score string is
computed exactly (teacher forcing each candidate's tokens after the prompt), not read from a
top-k list. torch/transformers are imported lazily; one model per process, calls serialised.
"""

from __future__ import annotations

import asyncio
import math
import threading
from typing import Any

from judge.config import GenerateConfig, Message
from judge.errors import JudgeError, ProviderError
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

    def cache_identity(self) -> dict[str, Any]:
        from judge.localmodels import resolve_model

        return {"provider": self.name, "model": self.model, "resolved": str(resolve_model(self.model))}

    def _load(self) -> tuple[Any, Any]:
        if self._loaded is None:
            from judge.localmodels import load_causal_lm

            self._loaded = load_causal_lm(self.model, self.device)
        return self._loaded

    async def generate(self, messages: list[Message], config: GenerateConfig) -> ModelOutput:
        try:
            return await asyncio.to_thread(self._generate_sync, messages, config)
        except JudgeError:
            raise
        except (RuntimeError, ValueError, IndexError) as exc:  # torch: out of memory, bad input, ...
            raise ProviderError(f"local model failed: {type(exc).__name__}: {exc}") from exc

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
    """Exact log P(the answer is candidate | prompt).

    One forward pass over the prompt answers every single-token candidate (digits 1-9 on most
    tokenizers); multi-token candidates ("10" as "1","0") need one extra padded batch. A candidate
    whose tokens begin a longer one ("1" in "10") must also *end* there: its probability is
    multiplied by P(the next token is not a digit), read from the longer candidate's row.
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
        digits = _digit_token_ids(tok)
        for c, ids in cand_ids.items():
            row = next((i for i, d in enumerate(multi) if d != c and cand_ids[d][: len(ids)] == ids), None)
            if row is not None:  # c is a prefix of a longer score: the answer must stop after c
                p_digit = float(logp[row, n - 1 + len(ids)].exp()[digits].sum())
                out[c] += math.log(max(1.0 - p_digit, 1e-30))
    return {c: out[c] for c in candidates}


ASCII_DIGITS = frozenset("0123456789")  # not str.isdigit: byte-level alphabets hold "²", "³"
_DIGIT_IDS: dict[int, Any] = {}


def _digit_token_ids(tok: Any) -> Any:
    """Ids of the vocabulary tokens that start with a digit (after word-boundary markers), cached."""
    import torch

    key = id(tok)
    if key not in _DIGIT_IDS:
        ids = [i for t, i in tok.get_vocab().items() if t.lstrip("Ġ▁ ")[:1] in ASCII_DIGITS]
        _DIGIT_IDS[key] = torch.tensor(sorted(ids), dtype=torch.long)
    return _DIGIT_IDS[key]
