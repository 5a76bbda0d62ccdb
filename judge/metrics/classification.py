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
Macro specificity is the one-vs-rest specificity TN / (TN + FP) of each of those classes, averaged
(sklearn's ``multilabel_confusion_matrix`` per class). Matthews correlation is sklearn's multiclass
``matthews_corrcoef`` with every non-gold prediction read as the one label "(other)" (0 where it is
undefined, as sklearn returns).

``screening`` reads the same matrix one-vs-rest for the class named by its ``positive`` option:
sensitivity (the positive class's recall, named as screening tasks name it) and specificity (the
share of non-positive items not predicted positive), both 0 where undefined (``zero_division=0``).

The per-item values of the macro figures are the item's correctness (0/1, NaN when unscored): they
say which items are scored and who wins an item in a paired comparison; the figure's value always
comes from the corpus statistics.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from judge.errors import ConfigError
from judge.metrics.base import Corpus, EvalInput, MetricResult
from judge.metrics.reference import prepare, scored_text
from judge.stats import balanced_accuracy, macro_f1, safe_div

CORPUS_FIGURES = ("macro_f1", "macro_precision", "macro_recall", "balanced_accuracy", "macro_specificity", "mcc")
SCREENING_FIGURES = ("sensitivity", "specificity")


def normalize_label(label: str) -> str:
    return label.strip().casefold()


def confusion_figures(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Macro figures of one (C, C) confusion matrix or a (B, C, C) batch: each a scalar array or (B,)."""
    cm = np.asarray(cm, dtype=float)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    support = cm.sum(axis=-1)  # gold count per class
    predicted = cm.sum(axis=-2)
    present = (support + predicted) > 0
    present[..., -1] = False  # the "(other)" column of non-gold predictions is not a class
    precision = safe_div(tp, predicted)
    recall = safe_div(tp, support)
    n_present = present.sum(axis=-1)

    def mean_over(values: np.ndarray, mask: np.ndarray, count: np.ndarray) -> np.ndarray:
        return safe_div((values * mask).sum(axis=-1), count)

    total = support.sum(axis=-1)
    negatives = total[..., None] - support  # per class: the items whose gold label is another class
    specificity = safe_div(negatives - (predicted - tp), negatives)  # TN / (TN + FP), one-vs-rest
    # Matthews correlation, sklearn's multiclass form: (c s - t.p) / sqrt((s^2 - p.p)(s^2 - t.t))
    cov_tp = tp.sum(axis=-1) * total - (support * predicted).sum(axis=-1)
    cov_pp = total**2 - (predicted**2).sum(axis=-1)
    cov_tt = total**2 - (support**2).sum(axis=-1)
    mcc = safe_div(cov_tp, np.sqrt(cov_pp * cov_tt))

    nan_if_empty = np.where(n_present > 0, 0.0, np.nan)
    return {
        "macro_precision": mean_over(precision, present, n_present) + nan_if_empty,
        "macro_recall": mean_over(recall, present, n_present) + nan_if_empty,
        "macro_f1": macro_f1(cm, classes=np.arange(cm.shape[-1]) < cm.shape[-1] - 1),  # not the "(other)" column
        "balanced_accuracy": balanced_accuracy(cm),
        "macro_specificity": mean_over(specificity, present, n_present) + nan_if_empty,
        "mcc": mcc + np.where(total > 0, 0.0, np.nan),
        "recall": recall,  # per class, (..., C): the screening figures pick the positive class
        "specificity": specificity,
        "total": total,
    }


class ConfusionScore:
    """``score(stats_sum)`` for one figure: reshape the summed one-hot cells to a matrix.

    With ``positive`` (a class index) the figure is that class's one-vs-rest sensitivity or specificity.
    """

    def __init__(self, n_classes: int, figure: str, positive: int | None = None) -> None:
        self.n_classes = n_classes
        self.figure = figure
        self.positive = positive

    def _pick(self, cm: np.ndarray) -> np.ndarray:
        figs = confusion_figures(cm)
        if self.positive is None:
            return figs[self.figure]
        per_class = figs["recall" if self.figure == "sensitivity" else "specificity"]
        return per_class[..., self.positive] + np.where(figs["total"] > 0, 0.0, np.nan)

    def __call__(self, stats_sum: np.ndarray) -> Any:
        s = np.asarray(stats_sum, dtype=float)
        c = self.n_classes
        if s.ndim == 1:
            return float(self._pick(s.reshape(c, c)))
        return self._pick(s.reshape(-1, c, c))


@dataclass
class _Confusion:
    """Every item's confusion-matrix cell as a one-hot row, and who is scored."""

    gold_classes: list[str]
    classes: list[str]  # the gold classes, then the "(other)" column
    stats: np.ndarray  # (n, C*C)
    correct: np.ndarray  # (n,) 0/1, NaN when unscored
    errors: list[str | None]
    gold: list[str]  # of the scored items, in item order
    pred: list[str]


def _confusion(data: EvalInput) -> _Confusion:
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
    pred = {i: normalize_label(scored_text(data.outputs[i])) for i in scored}
    correct = np.full(n, np.nan, dtype=float)
    stats = np.zeros((n, c * c), dtype=float)
    for i in scored:
        correct[i] = float(gold[i] == pred[i])
        stats[i, index[gold[i]] * c + index.get(pred[i], c - 1)] = 1.0
    return _Confusion(
        gold_classes, classes, stats, correct, errors, [gold[i] for i in scored], [pred[i] for i in scored]
    )


_SETTINGS = {"label_normalisation": "strip+casefold", "gold": "first reference", "zero_division": 0}


def classification(data: EvalInput, options: dict[str, Any]) -> MetricResult:
    """Accuracy per item; macro F1 / precision / recall / specificity, balanced accuracy and MCC over the corpus."""
    cf = _confusion(data)
    c = len(cf.classes)
    scores = {"accuracy": cf.correct}
    scores.update({f: cf.correct.copy() for f in CORPUS_FIGURES})
    corpus = {f: Corpus(cf.stats, ConfusionScore(c, f), vectorised=True) for f in CORPUS_FIGURES}
    details: dict[str, Any] = {"classes": cf.gold_classes}
    if cf.gold:
        details.update(_sklearn_details(cf.gold, cf.pred, cf.gold_classes))
    settings = _SETTINGS | {"macro_over": "gold classes present", "mcc_labels": "gold classes + one '(other)'"}
    return MetricResult(scores, cf.errors, corpus=corpus, settings=settings, details=details)


def screening(data: EvalInput, options: dict[str, Any]) -> MetricResult:
    """Sensitivity and specificity of the ``positive`` class, one-vs-rest; per item, the label's correctness."""
    positive = options.get("positive")
    if not isinstance(positive, str) or not positive.strip():
        raise ConfigError("metric 'screening' needs option 'positive': the gold label of the positive class")
    cf = _confusion(data)
    label = normalize_label(positive)
    if label not in cf.gold_classes:
        raise ConfigError(
            f"metric 'screening': option 'positive' is {positive!r}, which is no item's gold label "
            f"(gold labels: {', '.join(map(repr, cf.gold_classes))})"
        )
    k = cf.gold_classes.index(label)
    c = len(cf.classes)
    scores = {f: cf.correct.copy() for f in SCREENING_FIGURES}
    corpus = {f: Corpus(cf.stats, ConfusionScore(c, f, positive=k), vectorised=True) for f in SCREENING_FIGURES}
    details: dict[str, Any] = {"classes": cf.gold_classes, "positive": label}
    if cf.gold:
        details.update(_sklearn_details(cf.gold, cf.pred, cf.gold_classes))
    return MetricResult(scores, cf.errors, corpus=corpus, settings=_SETTINGS | {"positive": label}, details=details)


def _sklearn_details(y_true: list[str], y_pred: list[str], gold_classes: list[str]) -> dict[str, Any]:
    """Per-class figures and the confusion matrix by scikit-learn, invalid predicted labels included."""
    from sklearn.metrics import confusion_matrix, multilabel_confusion_matrix, precision_recall_fscore_support

    labels = [*gold_classes, *sorted(set(y_pred) - set(gold_classes))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # classes only predicted, never gold: sklearn warns, we report 0
        p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
        cm = confusion_matrix(y_true, y_pred, labels=labels)
    (tn, fp), _ = multilabel_confusion_matrix(y_true, y_pred, labels=labels).transpose(1, 2, 0)
    spec = np.divide(tn, tn + fp, out=np.zeros(len(labels)), where=(tn + fp) > 0)
    return {
        "per_class": {
            cls: {
                "precision": float(p[k]),
                "recall": float(r[k]),
                "sensitivity": float(r[k]),  # = recall, one-vs-rest, as screening tasks name it
                "specificity": float(spec[k]),
                "f1": float(f[k]),
                "support": int(s[k]),
            }
            for k, cls in enumerate(labels)
        },
        "confusion_matrix": cm.tolist(),
        "confusion_matrix_labels": labels,
        "confusion_matrix_axes": "rows = gold, columns = predicted, in 'confusion_matrix_labels' order",
        "non_gold_labels": len(labels) - len(gold_classes),  # distinct predicted labels that are no gold label
    }
