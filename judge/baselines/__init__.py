"""Cheap, local, deterministic baselines beside the LLM judge.

If a baseline agrees with people about as well as the judge does, the judge may not be worth its
cost. Each function takes texts, records, a DataFrame or a data file and returns a
:class:`BaselineResult` with one record per item (``id`` plus scores) that joins with verdicts and
feeds ``judge calibrate --score-column``.

* :func:`perplexity` -- fluency under a causal LM (default: offline SmolLM2-135M).
* :func:`pmi` -- ``log p(output | source) - log p(output)``, a faithfulness / relevance signal.
* :func:`entailment` -- SummaC-ZS-style NLI entailment of the output by its context or reference.
* :func:`similarity` -- cosine similarity of sentence embeddings (default: offline all-MiniLM-L6-v2).

torch and transformers are imported only when a baseline runs.
"""

from judge.baselines._data import BaselineResult
from judge.baselines.entailment import entailment
from judge.baselines.perplexity import perplexity
from judge.baselines.pmi import pmi
from judge.baselines.similarity import similarity

__all__ = ["BaselineResult", "entailment", "perplexity", "pmi", "similarity"]
