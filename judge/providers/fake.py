"""A scripted provider for examples, demos and unit tests (product code, not a mock).

``fake/<name>`` answers from a script: a list of completions served in order (cycled), or a
function of the messages. ``fake/echo-score`` answers a JSON verdict whose score is derived from a
hash of the prompt, so it is deterministic without a script.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import deque
from collections.abc import Callable, Sequence

from judge.config import GenerateConfig, Message
from judge.errors import ProviderError
from judge.providers._base import ModelOutput, Provider, Usage

Script = Sequence[str | BaseException] | Callable[[list[Message], GenerateConfig], str]


class FakeProvider(Provider):
    """Answers from a script; counts its calls (``n_calls``) and keeps the last ``KEEP_CALLS`` (``calls``)."""

    KEEP_CALLS = 1000
    """Calls kept for inspection: all of them would grow with a million-item run."""

    name = "fake"
    supports_json_schema = True
    supports_logprobs = True

    def __init__(self, model: str = "echo-score", script: Script | None = None) -> None:
        super().__init__(model)
        self.script = script
        self.calls: deque[list[Message]] = deque(maxlen=self.KEEP_CALLS)
        self.n_calls = 0

    async def generate(self, messages: list[Message], config: GenerateConfig) -> ModelOutput:
        self.calls.append(messages)
        self.n_calls += 1
        text = self._answer(messages, config)
        prompt_tokens = sum(len(m["content"].split()) for m in messages)
        out = ModelOutput(
            text=text,
            model=self.model,
            usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=len(text.split())),
        )
        if config.score_candidates:
            # a peaked distribution around the hashed score, so logprob mode has something to weigh
            centre = _hashed_score(messages, config.score_candidates)
            out.score_logprobs = {
                c: -abs(float(c) - float(centre))
                - math.log(sum(math.exp(-abs(float(x) - float(centre))) for x in config.score_candidates))
                for c in config.score_candidates
            }
        return out

    def _answer(self, messages: list[Message], config: GenerateConfig) -> str:
        if callable(self.script):
            return self.script(messages, config)
        if self.script:
            item = self.script[(self.n_calls - 1) % len(self.script)]
            if isinstance(item, BaseException):
                raise item
            return item
        if self.model == "echo-score" or self.script is None:
            if '"opinions"' in messages[-1]["content"]:  # an opinions rubric (toxicity, bias): 0-2 opinions
                n = int(_hashed_score(messages, "012"))
                flags = [int(_hashed_score([*messages, {"role": "user", "content": str(i)}], "0001")) for i in range(n)]
                opinions = [
                    {"opinion": f"scripted opinion {i + 1}", "verdict": "yes" if f else "no", "reason": "fake provider"}
                    for i, f in enumerate(flags)
                ]
                return json.dumps({"opinions": opinions, "reasoning": "scripted verdict (fake provider)"})
            scale = config.score_candidates or _scale_from_schema(config) or tuple(str(i) for i in range(1, 6))
            return json.dumps(
                {"reasoning": "scripted verdict (fake provider)", "score": int(_hashed_score(messages, scale))}
            )
        raise ProviderError(f"fake provider '{self.model}' has no script")


def _hashed_score(messages: list[Message], candidates: Sequence[str]) -> str:
    digest = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).digest()
    return candidates[digest[0] % len(candidates)]


def _scale_from_schema(config: GenerateConfig) -> tuple[str, ...] | None:
    schema = config.json_schema or {}
    score = schema.get("properties", {}).get("score", {})
    lo, hi = score.get("minimum"), score.get("maximum")
    if isinstance(lo, int | float) and isinstance(hi, int | float):
        return tuple(str(i) for i in range(int(lo), int(hi) + 1))
    return None
