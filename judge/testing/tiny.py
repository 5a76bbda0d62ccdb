"""Tiny random transformers models built on the spot, for mechanics tests (no download, ~1 s).

They are real models -- real tokenizers, real forward passes -- with random weights, so tests can
check plumbing (exact probabilities, batching, windows) without a model hub.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def tiny_causal_lm(path: str | Path, *, seed: int = 0, max_positions: int = 512, hidden_size: int = 32) -> Path:
    """Save a tiny random Llama chat model (byte-level BPE, ChatML template) into ``path``; returns ``path``."""
    from transformers import PreTrainedTokenizerFast

    p = Path(path)
    build_tokenizer(p)
    return _save_llama(p, PreTrainedTokenizerFast.from_pretrained(str(p)), max_positions, seed, hidden_size)


def _save_llama(path: Path, tok: Any, max_positions: int, seed: int, hidden_size: int = 32) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


# --- word-level models: one token per word, for exact window and chunk arithmetic in baseline tests

WORDS = (  # noqa: SIM905 -- a sentence reads better than 35 quoted words
    "the a cat dog sat ran on under mat rug house park is was big small red blue and but it he she they "
    "paris france capital city of in to . , ! ?"
).split()


def tokenizer(pair_template: bool = False) -> Any:
    """A word-level fast tokenizer over WORDS, with BOS/EOS/PAD (and [CLS]/[SEP] templates for BERT)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "<s>", "</s>", "[CLS]", "[SEP]"]
    vocab = {tok: i for i, tok in enumerate(specials + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if pair_template:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=tok,
            unk_token="[UNK]",
            pad_token="[PAD]",
            cls_token="[CLS]",
            sep_token="[SEP]",
            model_max_length=64,
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        bos_token="<s>",
        eos_token="</s>",
        model_max_length=64,
    )


def causal_lm(path: Path, max_positions: int = 64) -> Path:
    """A 2-layer random Llama with the word-level tokenizer (one token per word), saved to ``path``."""
    return _save_llama(Path(path), tokenizer(), max_positions, seed=0)


def nli_model(path: Path, id2label: dict[int, str] | None = None) -> Path:
    """A 2-layer random BERT sequence classifier with NLI labels, saved to ``path``."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    tok = tokenizer(pair_template=True)
    labels = id2label or {0: "entailment", 1: "neutral", 2: "contradiction"}
    config = BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=64,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
        pad_token_id=tok.pad_token_id,
    )
    BertForSequenceClassification(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def sentence_transformer(path: Path, max_seq_length: int = 16) -> Path:
    """A tiny random BERT with mean pooling as a sentence-transformers folder, saved to ``path``."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    tok = tokenizer(pair_template=True)
    base = path.parent / (path.name + "-base")
    config = BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=64,
        pad_token_id=tok.pad_token_id,
    )
    BertModel(config).save_pretrained(base)
    tok.save_pretrained(base)
    encoder = Transformer(str(base), max_seq_length=max_seq_length)
    st = SentenceTransformer(modules=[encoder, Pooling(32, pooling_mode="mean")], device="cpu")
    st.save(str(path))
    return path
