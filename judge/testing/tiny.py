"""Tiny random transformers models built on the spot, for mechanics tests (no download, ~1 s).

They are real models -- real tokenizers, real forward passes -- with random weights, so tests can
check plumbing (exact probabilities, batching, windows) without a model hub.
"""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    'Score: 1 2 3 4 5 6 7 8 9 . Respond with a JSON object: {"reasoning": "x", "score": 4}',
    "Question? Answer! The capital of France is Paris; the answer is right or wrong.",
]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer(path: str | Path, vocab_size: int = 400) -> None:
    """A byte-level BPE tokenizer trained on a few sentences, with a ChatML chat template.

    Digits are never merged, so "10" is two tokens: multi-token scores get exercised.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token="<|endoftext|>"
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(path))


def tiny_causal_lm(path: str | Path, *, seed: int = 0, max_positions: int = 512) -> Path:
    """Save a tiny random Llama causal LM and its tokenizer into ``path``; returns ``path``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    p = Path(path)
    build_tokenizer(p)
    tok = PreTrainedTokenizerFast.from_pretrained(str(p))
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).save_pretrained(str(p))
    return p
