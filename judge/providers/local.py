"""In-process transformers causal LM as a judge (``local/<alias-or-path>``).

Greedy decoding is temperature 0. In logprob score mode the probability of every score string (or
pairwise label) is computed exactly (teacher forcing each candidate's tokens after the prompt), not
read from a top-k list. In that mode the KV cache of the prompt's beginning -- the rubric's system
prompt and instructions, the same for every item -- is kept and reused by the next prompt that
starts the same way. torch/transformers are imported lazily; one model per process, calls serialised.
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

    #: shortest common beginning (tokens) worth reusing from the previous prompt's KV cache
    MIN_SHARED_PREFIX = 32

    def __init__(self, model: str = "smollm2", *, device: str | None = None, prefix_reuse: bool = True) -> None:
        super().__init__(model)
        self.device = device
        self.prefix_reuse = prefix_reuse
        self._lock = threading.Lock()
        self._loaded: tuple[Any, Any] | None = None
        self._prefix: tuple[list[int], Any] | None = None  # token ids and their batch-1 KV cache

    def _prompt_state(self, model: Any, prompt_ids: list[int]) -> tuple[Any, Any]:
        """KV cache and last logits of ``prompt_ids``, starting from the kept prefix when it matches."""
        import copy

        from judge.baselines._lm import _crop, run_prefix

        if not self.prefix_reuse:
            return run_prefix(model, prompt_ids)
        n = 0
        if self._prefix is not None:
            kept, _ = self._prefix
            limit = min(len(kept), len(prompt_ids) - 1)  # at least one new token gives the last logits
            n = next((i for i in range(limit) if kept[i] != prompt_ids[i]), limit)
        if n < self.MIN_SHARED_PREFIX:  # a first prompt, or another rubric: keep this one whole
            cache, last = run_prefix(model, prompt_ids)
            self._prefix = (list(prompt_ids), copy.deepcopy(cache))
            return cache, last
        kept, kept_cache = self._prefix  # type: ignore[misc]
        if n < len(kept):  # keep only what prompts have in common (the rubric's part)
            _crop(kept_cache, n)
            self._prefix = (kept[:n], kept_cache)
        return run_prefix(model, prompt_ids, copy.deepcopy(kept_cache), n)
        self._tokenizer: Any = None  # the tokenizer alone, for count_tokens before any call

    def cache_identity(self) -> dict[str, Any]:
        from judge.localmodels import resolve_model

        return {"provider": self.name, "model": self.model, "resolved": str(resolve_model(self.model))}

    def count_tokens(self, messages: list[Message]) -> int | None:
        """Prompt tokens by this model's tokenizer and chat template (for ``--dry-run``; loads no weights)."""
        if self._loaded is not None:
            return len(_chat_ids(self._loaded[1], messages))
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            from judge.localmodels import resolve_model

            self._tokenizer = AutoTokenizer.from_pretrained(str(resolve_model(self.model)))
        return len(_chat_ids(self._tokenizer, messages))

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
                    state = self._prompt_state(model, prompt_ids)
                    scores = _candidate_logprobs(model, tok, prompt_ids, config.score_candidates, state)
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
    model: Any, tok: Any, prompt_ids: list[int], candidates: tuple[str, ...], state: tuple[Any, Any] | None = None
) -> dict[str, float]:
    """Exact log P(the answer is candidate | prompt).

    The prompt runs once: its last logits answer every single-token candidate (digits 1-9, A, B on
    most tokenizers), and multi-token candidates ("10" as "1","0") continue from its KV cache in one
    small batch. A candidate whose tokens begin a longer one ("1" in "10") must also *end* there: its
    probability is multiplied by P(the next token is not a digit), read from the longer candidate's row.
    """
    import torch

    from judge.baselines._lm import continue_batches, run_prefix

    cand_ids = {c: tok(c, add_special_tokens=False)["input_ids"] for c in candidates}
    multi = [c for c, ids in cand_ids.items() if len(ids) > 1]
    cache, last_logits = state if state is not None else run_prefix(model, prompt_ids)
    last = torch.log_softmax(last_logits, dim=-1)
    rows: dict[str, Any] = {}  # candidate -> log-probabilities after each of its tokens
    conts = [cand_ids[c] for c in multi]
    for batch, logits, _ in continue_batches(model, cache, len(prompt_ids), conts, max(1, len(conts))):
        logp = torch.log_softmax(logits, dim=-1)
        for r, k in enumerate(batch):
            rows[multi[k]] = logp[r]
    out = {c: float(last[ids[0]]) for c, ids in cand_ids.items() if len(ids) == 1}
    for c in multi:
        ids = cand_ids[c]
        out[c] = float(last[ids[0]]) + sum(float(rows[c][j - 1, t]) for j, t in enumerate(ids) if j > 0)
    digits = _digit_token_ids(tok)
    for c, ids in cand_ids.items():
        longer = next((d for d in multi if d != c and cand_ids[d][: len(ids)] == ids), None)
        if longer is not None:  # c is a prefix of a longer score: the answer must stop after c
            p_digit = float(rows[longer][len(ids) - 1].exp()[digits].sum())
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
