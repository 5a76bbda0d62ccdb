"""Prompts as a local model sees them: chat messages rendered to token ids, and the ends of turns."""

from __future__ import annotations

from typing import Any


def chat_ids(tok: Any, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of a chat prompt as ``transformers`` renders it (``apply_chat_template`` with the
    generation prompt); a final assistant message is continued, not closed; a model without a chat
    template gets ``role: content`` paragraphs."""
    if messages and messages[-1]["role"] == "assistant":  # a prefill: continue that message
        return list(tok(chat_text(tok, messages), add_special_tokens=False)["input_ids"])
    if getattr(tok, "chat_template", None):
        ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):  # BatchEncoding in newer transformers
            ids = ids["input_ids"]
        return list(ids)
    # a base model without a chat template: plain concatenation
    text = "\n\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\n\nassistant:"
    return list(tok(text)["input_ids"])


def chat_text(tok: Any, messages: list[dict[str, str]]) -> str:
    """The prompt text of ``messages`` whose last one, from the assistant, is continued (not closed)."""
    if getattr(tok, "chat_template", None):
        return str(tok.apply_chat_template(messages, tokenize=False, continue_final_message=True))
    text = "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)
    return (tok.bos_token or "") + text


def raw_prompt_text(messages: list[dict[str, str]]) -> str:
    """The prompt of ``chat_template: none``: the messages' contents as plain paragraphs, no roles."""
    return "\n\n".join(m["content"] for m in messages)


def prompt_ids(tok: Any, messages: list[dict[str, str]], chat_template: bool | None = None) -> list[int]:
    """The prompt's token ids: the chat template (default), or with ``chat_template=False`` the raw text
    (the tokenizer's own special tokens, e.g. BOS, added as it adds them)."""
    if chat_template is False:
        return list(tok(raw_prompt_text(messages))["input_ids"])
    return chat_ids(tok, messages)


def eos_token_ids(model: Any, tok: Any) -> set[int]:
    """Every token id that ends a completion: the generation config's eos ids and the tokenizer's."""
    ids: set[int] = set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (configured, tok.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    return ids


_SENTINEL = "\u2063judge-answer\u2063"


def end_of_turn(tok: Any) -> str:
    """What the chat template writes after an assistant message's text (ChatML: ``<|im_end|>\\n``), so an
    answer's scored tokens end as supervised fine-tuning trains them; "" without a template."""
    if not getattr(tok, "chat_template", None):
        return ""
    user = [{"role": "user", "content": "q"}]
    prompt = str(tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True))
    full = str(tok.apply_chat_template([*user, {"role": "assistant", "content": _SENTINEL}], tokenize=False))
    head = prompt + _SENTINEL
    return full[len(head) :] if full.startswith(head) else ""
