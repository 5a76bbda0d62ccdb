"""What a metric is: one :class:`MetricSpec` per metric, registered in one table (:mod:`judge.metrics`).

A metric scores the outputs of one system against the items' references (or inputs, or nothing).
It returns a :class:`MetricResult` with one score per item for each figure it reports (NaN where the
item could not be scored, with the reason), and -- for corpus metrics such as BLEU and chrF, whose
corpus score is not the mean of sentence scores -- per-item sufficient statistics plus a function
that turns their sum into the corpus score. ``judge eval`` bootstraps by resampling items: item
metrics average the resampled scores, corpus metrics re-sum the resampled statistics.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Direction = Literal["higher", "lower"]


@dataclass(frozen=True)
class Figure:
    """One reported number of a metric (ROUGE reports three: rouge1, rouge2, rougeL)."""

    name: str
    direction: Direction = "higher"
    lo: float | None = None  # the range of a per-item (and corpus) value, None = unbounded
    hi: float | None = None
    description: str = ""


@dataclass
class Corpus:
    """A corpus-level figure: per-item sufficient statistics and how their column sums become a score.

    ``score(stats_sum)`` takes the (k,) sum of ``stats`` over a set of items and returns the corpus
    score; it may also take a (B, k) batch and return (B,) when ``vectorised`` is true.
    """

    stats: np.ndarray  # (n_items, k)
    score: Callable[[np.ndarray], float]
    vectorised: bool = False


@dataclass
class MetricResult:
    """What a metric computed for one system's outputs on all items."""

    scores: dict[str, np.ndarray]  # figure name -> (n_items,) float, NaN where unscored
    errors: list[str | None]  # per item: why it is unscored (None when scored)
    corpus: dict[str, Corpus] = field(default_factory=dict)  # figure name -> corpus statistics
    settings: dict[str, Any] = field(default_factory=dict)  # provenance: signature, model, layer, ...
    details: dict[str, Any] = field(default_factory=dict)  # extra per-system output (confusion matrix)
    #: the units the scores are over when they are not the suite's items (a benchmark's questions)
    ids: list[str] | None = None


@dataclass(frozen=True)
class EvalInput:
    """The texts one metric call sees: a system's outputs on the items, in item order."""

    ids: Sequence[str]
    outputs: Sequence[str | None]  # None: no output (the generation failed), unscored; "" is an answer
    inputs: Sequence[str]
    references: Sequence[list[str] | None]  # each item's references (None when it has none)
    contexts: Sequence[str | None]
    #: the system's own model (:class:`judge.eval.models.SystemModel`) when the system is a model
    model: Any = None
    #: the suite's training split (inputs, first references), for the loss metric
    train: tuple[Sequence[str], Sequence[str]] | None = None


MetricFn = Callable[[EvalInput, dict[str, Any]], MetricResult]


@dataclass(frozen=True)
class MetricSpec:
    """A metric: its name, the figures it reports, what it needs, and the function that computes it.

    ``options`` names the suite-file keys the metric accepts (e.g. ``model`` for BERTScore); the
    suite rejects others before anything runs.
    """

    name: str
    figures: tuple[Figure, ...]
    fn: MetricFn
    needs_reference: bool = False
    needs_local_model: bool = False  # loads a local model in this process: freed when the metric is done
    options: tuple[str, ...] = ()
    description: str = ""
    #: needs each system's own model (``model:`` or ``sweep:`` systems), not only its outputs
    needs_model: bool = False
    #: scores the systems' outputs (False: a model-only metric, for which no outputs are generated)
    uses_outputs: bool = True
    #: the figures, when they depend on the options (a benchmark's ``name``)
    figures_for: Callable[[dict[str, Any]], tuple[Figure, ...]] | None = None

    def figure(self, name: str) -> Figure:
        for f in self.figures:
            if f.name == name:
                return f
        raise KeyError(name)
