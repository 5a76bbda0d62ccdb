"""The metrics of ``judge eval``: one registry, :data:`METRICS`, name -> :class:`MetricSpec`.

Importing this package is cheap: sacrebleu, rouge-score, scikit-learn, torch and bert-score are
imported inside the metric functions.
"""

from __future__ import annotations

from judge.errors import ConfigError
from judge.metrics.base import Corpus, EvalInput, Figure, MetricResult, MetricSpec
from judge.metrics.classification import classification, screening
from judge.metrics.modelbased import bertscore, perplexity
from judge.metrics.modelown import LOSS_FIGURES, choice_accuracy, choice_figures, loss
from judge.metrics.reference import bleu, chrf, exact_match, rouge, self_bleu, token_f1

__all__ = ["METRICS", "Corpus", "EvalInput", "Figure", "MetricResult", "MetricSpec", "get_metric"]

_SPECS = [
    MetricSpec(
        "exact_match",
        (Figure("exact_match", "higher", 0.0, 1.0, "1 if the output matches a reference after SQuAD normalisation"),),
        exact_match,
        needs_reference=True,
        description="SQuAD exact match (lower-case, no punctuation or articles), best over references",
    ),
    MetricSpec(
        "token_f1",
        (Figure("token_f1", "higher", 0.0, 1.0, "SQuAD token-overlap F1"),),
        token_f1,
        needs_reference=True,
        description="SQuAD token F1 on normalised answers, best over references",
    ),
    MetricSpec(
        "bleu",
        (Figure("bleu", "higher", 0.0, 100.0, "sacrebleu BLEU: corpus BLEU; per item sentence BLEU"),),
        bleu,
        needs_reference=True,
        options=("tokenize", "lowercase"),
        description="sacrebleu BLEU (13a tokenizer by default); corpus score from summed n-gram statistics",
    ),
    MetricSpec(
        "chrf",
        (Figure("chrf", "higher", 0.0, 100.0, "sacrebleu chrF: corpus chrF; per item sentence chrF"),),
        chrf,
        needs_reference=True,
        options=("char_order", "word_order", "lowercase"),
        description="sacrebleu chrF2 (word_order 2 gives chrF++); corpus score from summed statistics",
    ),
    MetricSpec(
        "rouge",
        (
            Figure("rouge1", "higher", 0.0, 1.0, "ROUGE-1 F1"),
            Figure("rouge2", "higher", 0.0, 1.0, "ROUGE-2 F1"),
            Figure("rougeL", "higher", 0.0, 1.0, "ROUGE-L F1"),
        ),
        rouge,
        needs_reference=True,
        options=("use_stemmer",),
        description="rouge-score ROUGE-1/2/L F1 with Porter stemming, best reference per type",
    ),
    MetricSpec(
        "bertscore",
        (Figure("bertscore", "higher", -1.0, 1.0, "BERTScore F1 (no baseline rescaling)"),),
        bertscore,
        needs_reference=True,
        needs_local_model=True,
        options=("model", "num_layers", "idf", "batch_size", "device"),
        description="BERTScore F1 with bert-score on a local encoder (default all-MiniLM-L6-v2, last layer)",
    ),
    MetricSpec(
        "self_bleu",
        (Figure("self_bleu", "lower", 0.0, 100.0, "sentence BLEU of an output against the system's other outputs"),),
        self_bleu,
        options=("tokenize", "lowercase"),
        description="diversity: each output's BLEU against all other outputs of the system (lower = more diverse)",
    ),
    MetricSpec(
        "classification",
        (
            Figure("accuracy", "higher", 0.0, 1.0, "1 if the output label equals the gold label"),
            Figure("macro_f1", "higher", 0.0, 1.0, "macro-averaged F1 from the confusion matrix"),
            Figure("macro_precision", "higher", 0.0, 1.0, "macro-averaged precision"),
            Figure("macro_recall", "higher", 0.0, 1.0, "macro-averaged recall"),
            Figure("balanced_accuracy", "higher", 0.0, 1.0, "mean recall over the gold classes"),
            Figure("macro_specificity", "higher", 0.0, 1.0, "one-vs-rest specificity TN/(TN+FP), macro-averaged"),
            Figure("mcc", "higher", -1.0, 1.0, "Matthews correlation (multiclass, sklearn's)"),
        ),
        classification,
        needs_reference=True,
        description="labels vs the first reference (strip + casefold): accuracy, macro P/R/F1/specificity, "
        "balanced accuracy, Matthews correlation",
    ),
    MetricSpec(
        "screening",
        (
            Figure("sensitivity", "higher", 0.0, 1.0, "recall of the positive class: TP/(TP+FN)"),
            Figure("specificity", "higher", 0.0, 1.0, "share of non-positive items not labelled positive: TN/(TN+FP)"),
        ),
        screening,
        needs_reference=True,
        options=("positive",),
        description="a label task read one-vs-rest for the class named by 'positive': sensitivity and specificity",
    ),
    MetricSpec(
        "perplexity",
        (Figure("perplexity", "lower", 1.0, None, "per-token perplexity; a system's value is its corpus perplexity"),),
        perplexity,
        needs_local_model=True,
        options=("model", "batch_size", "device"),
        description="fluency: perplexity of each output under a local causal LM (default SmolLM2-135M)",
    ),
    MetricSpec(
        "loss",
        LOSS_FIGURES,
        loss,
        needs_reference=True,
        needs_local_model=True,
        needs_model=True,
        uses_outputs=False,
        options=("max_length", "batch_size", "concurrency"),
        description="the system model's own cross-entropy on the references given the inputs (validation loss)",
    ),
    MetricSpec(
        "choice_accuracy",
        choice_figures({}),
        choice_accuracy,
        needs_local_model=True,
        needs_model=True,
        uses_outputs=False,
        options=(
            "data",
            "name",
            "split",
            "shots",
            "limit_per_subject",
            "seed",
            "max_length",
            "batch_size",
            "concurrency",
        ),
        description="a multiple-choice benchmark (MMLU, TruthfulQA MC1, JSONL) by log-likelihood: acc and acc_norm",
        figures_for=choice_figures,
    ),
]

METRICS: dict[str, MetricSpec] = {spec.name: spec for spec in _SPECS}


def get_metric(name: str) -> MetricSpec:
    """The metric called ``name``; a :class:`ConfigError` naming the known metrics otherwise."""
    spec = METRICS.get(name)
    if spec is None:
        raise ConfigError(f"unknown metric '{name}' (known metrics: {', '.join(sorted(METRICS))})")
    return spec
