"""Tiny random models built on the spot, for testing local-model mechanics offline (helpers, no tests)."""

from __future__ import annotations

from pathlib import Path

WORDS = (  # noqa: SIM905 -- a sentence reads better than 35 quoted words
    "the a cat dog sat ran on under mat rug house park is was big small red blue and but it he she they "
    "paris france capital city of in to . , ! ?"
).split()


def tokenizer(pair_template: bool = False):  # type: ignore[no-untyped-def]
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
    """A 2-layer random Llama with the word-level tokenizer, saved to ``path``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


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
