"""Label outputs against gold labels: per-item accuracy, and macro figures from a confusion matrix.

Labels are compared after ``strip()`` + ``casefold()``; the gold label is an item's first reference.

The classes are the gold labels of *all* items that have a reference (sorted), plus one last
"(other)" column for predicted labels that are no gold label. That layout depends on the references
only, so it is the same for every system of a run: ``judge eval``'s paired permutation test mixes
two systems' statistics rows, which needs one layout. Each scored item's corpus statistics are a
one-hot (C*C,) vector marking its confusion-matrix cell (row = gold, column = predicted), so
summing any set of items gives that set's confusion matrix, and the macro figures of a resample
are computed from its own matrix.

The macro figures are scikit-learn's with ``zero_division=0`` and ``labels`` = the gold classes
present in the summed matrix (gold or predicted at least once): precision / recall / F1 per class,
averaged. Predictions outside the gold classes count as misses (false negatives of the true class)
but are not classes of their own in the average -- sklearn without ``labels`` would add each
distinct invalid label as a class with F1 0; when every prediction is a gold label the two agree.
Balanced accuracy is the mean recall over the classes with gold support, exactly as sklearn's.

The per-item values of the macro figures are the item's correctness (0/1, NaN when unscored): they
say which items are scored and who wins an item in a paired comparison; the figure's value always
comes from the corpus statistics.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from judge.metrics.base import Corpus, EvalInput, MetricResult
from judge.metrics.reference import prepare

CORPUS_FIGURES = ("macro_f1", "macro_precision", "macro_recall", "balanced_accuracy")


def normalize_label(label: str) -> str:
    return label.strip().casefold()


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.zeros(np.broadcast(num, den).shape, dtype=float)
    np.divide(num, den, out=out, where=den > 0)
    return out


def confusion_figures(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Macro figures of one (C, C) confusion matrix or a (B, C, C) batch: each a scalar array or (B,)."""
    cm = np.asarray(cm, dtype=float)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    support = cm.sum(axis=-1)  # gold count per class
    predicted = cm.sum(axis=-2)
    present = (support + predicted) > 0
    present[..., -1] = False  # the "(other)" column of non-gold predictions is not a class
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * tp, support + predicted)  # = 2PR/(P+R), and 0 where tp = 0
    n_present = present.sum(axis=-1)
    has_support = support > 0
    n_support = has_support.sum(axis=-1)

    def mean_over(values: np.ndarray, mask: np.ndarray, count: np.ndarray) -> np.ndarray:
        return _safe_div((values * mask).sum(axis=-1), count)

    nan_if_empty = np.where(n_present > 0, 0.0, np.nan)
    return {
        "macro_precision": mean_over(precision, present, n_present) + nan_if_empty,
        "macro_recall": mean_over(recall, present, n_present) + nan_if_empty,
        "macro_f1": mean_over(f1, present, n_present) + nan_if_empty,
        "balanced_accuracy": mean_over(recall, has_support, n_support) + np.where(n_support > 0, 0.0, np.nan),
    }


class ConfusionScore:
    """``score(stats_sum)`` for one macro figure: reshape the summed one-hot cells to a matrix."""

    def __init__(self, n_classes: int, figure: str) -> None:
        self.n_classes = n_classes
        self.figure = figure

    def __call__(self, stats_sum: np.ndarray) -> Any:
        s = np.asarray(stats_sum, dtype=float)
        c = self.n_classes
        if s.ndim == 1:
            return float(confusion_figures(s.reshape(c, c))[self.figure])
        return confusion_figures(s.reshape(-1, c, c))[self.figure]


def classification(data: EvalInput, options: dict[str, Any]) -> MetricResult:
    """Accuracy per item; macro F1 / precision / recall and balanced accuracy over the corpus."""
    errors, refs = prepare(data, needs_reference=True)
    n = len(data.outputs)
    gold_classes = sorted({normalize_label(r[0]) for r in refs if r})
    other = "(other)"
    while other in gold_classes:
        other += "_"
    classes = [*gold_classes, other]
    index = {c: k for k, c in enumerate(classes)}
    c = len(classes)
    scored = [i for i in range(n) if errors[i] is None]
    gold = {i: normalize_label(refs[i][0]) for i in scored}
    pred = {i: normalize_label(data.outputs[i]) for i in scored}
    correct = np.full(n, np.nan, dtype=float)
    stats = np.zeros((n, c * c), dtype=float)
    for i in scored:
        correct[i] = float(gold[i] == pred[i])
        stats[i, index[gold[i]] * c + index.get(pred[i], c - 1)] = 1.0
    scores = {"accuracy": correct}
    scores.update({f: correct.copy() for f in CORPUS_FIGURES})
    corpus = {f: Corpus(stats, ConfusionScore(c, f), vectorised=True) for f in CORPUS_FIGURES}
    details: dict[str, Any] = {"classes": gold_classes}
    if scored:
        details.update(_sklearn_details([gold[i] for i in scored], [pred[i] for i in scored], gold_classes))
    return MetricResult(
        scores,
        errors,
        corpus=corpus,
        settings={
            "label_normalisation": "strip+casefold",
            "gold": "first reference",
            "zero_division": 0,
            "macro_over": "gold classes present",
        },
        details=details,
    )


def _sklearn_details(y_true: list[str], y_pred: list[str], gold_classes: list[str]) -> dict[str, Any]:
    """Per-class figures and the confusion matrix by scikit-learn, invalid predicted labels included."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    labels = [*gold_classes, *sorted(set(y_pred) - set(gold_classes))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # classes only predicted, never gold: sklearn warns, we report 0
        p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
        cm = confusion_matrix(y_true, y_pred, labels=labels)
    return {
        "per_class": {
            cls: {"precision": float(p[k]), "recall": float(r[k]), "f1": float(f[k]), "support": int(s[k])}
            for k, cls in enumerate(labels)
        },
        "confusion_matrix": cm.tolist(),
        "confusion_matrix_labels": labels,
        "confusion_matrix_axes": "rows = gold, columns = predicted, in 'confusion_matrix_labels' order",
        "non_gold_labels": len(labels) - len(gold_classes),  # distinct predicted labels that are no gold label
    }
