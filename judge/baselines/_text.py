"""Splitting text into sentences and into pieces that fit a model, without dropping any of it."""

from __future__ import annotations

import re
from typing import Any

# a sentence ends at . ! ? (optionally followed by closing quotes/brackets) before whitespace, or at a newline
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n+")


def sentences(text: str) -> list[str]:
    """Split ``text`` into sentences with a punctuation rule (good enough for news / summaries)."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def _encode(tokenizer: Any, text: str) -> tuple[int, list[tuple[int, int]]]:
    """Token count and character offsets of ``text``, without special tokens and without truncation.

    ``verbose=False``: do not warn that a long text exceeds the model's length -- it is about to be split.
    (The Rust backend is not used directly: its tokenizer.json may carry a silent truncation setting.)
    """
    out = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, truncation=False, verbose=False)
    return len(out["input_ids"]), list(out["offset_mapping"])


def n_tokens(tokenizer: Any, text: str) -> int:
    """Number of tokens of ``text`` without special tokens."""
    return _encode(tokenizer, text)[0]


def split_to_fit(tokenizer: Any, text: str, budget: int) -> list[str]:
    """Cut ``text`` into consecutive pieces of at most ``budget`` tokens, at token boundaries.

    Uses the fast tokenizer's character offsets, so the pieces are slices of the original text.
    """
    _, offsets = _encode(tokenizer, text)
    if len(offsets) <= budget:
        return [text]
    pieces = []
    for i in range(0, len(offsets), budget):
        begin = offsets[i][0]
        end = offsets[i + budget][0] if i + budget < len(offsets) else len(text)
        piece = text[begin:end].strip()
        if piece:
            pieces.append(piece)
    return pieces


def pack(tokenizer: Any, parts: list[str], budget: int) -> list[str]:
    """Join consecutive ``parts`` into chunks of at most ``budget`` tokens; split a part too long alone."""
    chunks: list[str] = []
    current: list[str] = []
    used = 0
    for part in parts:
        for piece in split_to_fit(tokenizer, part, budget):
            size = n_tokens(tokenizer, piece)
            if current and used + size > budget:
                chunks.append(" ".join(current))
                current, used = [], 0
            current.append(piece)
            used += size
    if current:
        chunks.append(" ".join(current))
    return chunks
