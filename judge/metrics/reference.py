"""Text-overlap metrics: exact match, token F1 (SQuAD), BLEU and chrF (sacrebleu), ROUGE, self-BLEU.

Conventions shared by every metric in :mod:`judge.metrics`:

* An empty (or blank) output is a real answer and is scored like any other: EM 0, F1 0, BLEU, chrF and
  ROUGE with no matches, BERTScore as bert-score defines it. Dropping it would flatter a system that
  answers nothing on hard items. Only an item whose output is missing (null: the generation failed) or,
  for a reference metric, that has no non-blank reference, is unscored: NaN in every per-item figure,
  with the reason in ``errors``. It is never counted as 0. (Self-BLEU, which compares outputs' n-grams,
  leaves blank outputs out: they have none.)
* A corpus figure's ``stats`` row of an unscored item is all zeros, so a corpus score is always the
  score of the *scored* items (the same items the per-item figures average over).
* Multiple references per item are a list of strings; blank ones are dropped.

sacrebleu and rouge-score are imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import bisect
import re
import string
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from judge.errors import ConfigError
from judge.metrics.base import Corpus, EvalInput, MetricResult

# --- shared helpers --------------------------------------------------------------------------------


def clean_refs(refs: Sequence[str | None] | str | None) -> list[str]:
    """An item's usable references: a list of its non-blank strings (a bare string is one reference)."""
    if refs is None:
        return []
    if isinstance(refs, str):
        refs = [refs]
    return [r for r in refs if isinstance(r, str) and r.strip()]


def output_reason(output: str | None, *, blank_scores: bool = True) -> str | None:
    """Why an output cannot be scored (missing; blank too unless ``blank_scores``), or ``None`` if it can."""
    if output is None:
        return "no output"
    if not isinstance(output, str):
        return f"output is a {type(output).__name__}, not text"
    if not blank_scores and not output.strip():
        return "empty output"
    return None


def prepare(data: EvalInput, *, needs_reference: bool) -> tuple[list[str | None], list[list[str]]]:
    """Per item: the reason it is unscored (or ``None``), and its cleaned references."""
    errors: list[str | None] = []
    refs: list[list[str]] = []
    n = len(data.outputs)
    if len(data.references) != n and needs_reference:
        raise ConfigError(f"{len(data.references)} reference lists for {n} outputs")
    for i, out in enumerate(data.outputs):
        r = clean_refs(data.references[i]) if i < len(data.references) else []
        reason = output_reason(out)
        if reason is None and needs_reference and not r:
            reason = "no reference"
        errors.append(reason)
        refs.append(r)
    return errors, refs


def scored_text(output: str | None) -> str:
    """An output that :func:`prepare` left scored (its reason ``None``): text, by construction."""
    assert isinstance(output, str), "prepare() marks a missing or non-text output unscored"
    return output


def nan_scores(n: int, *names: str) -> dict[str, np.ndarray]:
    return {name: np.full(n, np.nan, dtype=float) for name in names}


def bool_option(options: dict[str, Any], key: str, default: bool) -> bool:
    value = options.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"option '{key}' must be true or false, not {value!r}")
    return value


def int_option(options: dict[str, Any], key: str, default: int | None, lo: int = 0) -> int | None:
    value = options.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ConfigError(f"option '{key}' must be an integer >= {lo}, not {value!r}")
    return value


# --- exact match / token F1 (SQuAD v1.1 definitions) -------------------------------------------

_PUNCT = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    """SQuAD v1.1 answer normalisation: lower-case, drop punctuation, drop articles, collapse whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _em(pred: str, ref: str) -> float:
    return float(normalize_answer(pred) == normalize_answer(ref))


def _f1(pred: str, ref: str) -> float:
    p, r = normalize_answer(pred).split(), normalize_answer(ref).split()
    same = sum((Counter(p) & Counter(r)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(r)
    return 2 * precision * recall / (precision + recall)


def _per_item(data: EvalInput, figure: str, fn: Any) -> MetricResult:
    errors, refs = prepare(data, needs_reference=True)
    scores = nan_scores(len(data.outputs), figure)
    for i, out in enumerate(data.outputs):
        if errors[i] is None:
            scores[figure][i] = max(fn(out, r) for r in refs[i])
    return MetricResult(scores, errors, settings={"normalisation": "squad-v1.1"})


def exact_match(data: EvalInput, options: dict[str, Any]) -> MetricResult:
    """1 if the output equals a reference after SQuAD normalisation, else 0 (max over references)."""
    return _per_item(data, "exact_match", _em)


def token_f1(data: EvalInput, options: dict[str, Any]) -> MetricResult:
    """SQuAD token-overlap F1 of the normalised output against each reference, the best one."""
    return _per_item(data, "token_f1", _f1)


# --- BLEU / chrF (sacrebleu) ---------------------------------------------------------------------


class SacreCorpusScore:
    """``score(stats_sum)`` of a sacrebleu metric: its own ``_compute_score_from_stats``, as a float."""

    def __init__(self, metric: Any) -> None:
        self.metric = metric

    def __call__(self, stats_sum: np.ndarray) -> float:
        # sacrebleu's statistics are integer counts; summed floats are rounded back so that
        # ``int(...)`` inside sacrebleu never truncates 2.9999999 to 2
        counts = [int(round(float(x))) for x in np.asarray(stats_sum).ravel()]
        return float(self.metric._compute_score_from_stats(counts).score)


def reference_streams(refs: Sequence[list[str]]) -> list[list[str | None]]:
    """sacrebleu's reference layout (one stream per reference position), padded with ``None``.

    sacrebleu accepts ``None`` for a missing reference of a segment (its ``_cache_references``
    drops them), so items may have different numbers of references; the signature then says
    ``nrefs:var``.
    """
    k = max((len(r) for r in refs), default=0)
    return [[r[j] if j < len(r) else None for r in refs] for j in range(k)]


def _sacre(
    data: EvalInput,
    figure: str,
    corpus_metric: Any,
    sentence_metric: Any,
) -> MetricResult:
    errors, refs = prepare(data, needs_reference=True)
    n = len(data.outputs)
    scored = [i for i in range(n) if errors[i] is None]
    scores = nan_scores(n, figure)
    stats_rows: list[list[int]] = []
    if scored:
        hyps = [data.outputs[i] for i in scored]
        streams = reference_streams([refs[i] for i in scored])
        stats_rows = corpus_metric._extract_corpus_statistics(hyps, streams)
        for i, row in zip(scored, stats_rows, strict=True):
            scores[figure][i] = sentence_metric._compute_score_from_stats(row).score
    width = len(stats_rows[0]) if stats_rows else _stats_width(corpus_metric)
    stats = np.zeros((n, width), dtype=float)
    for i, row in zip(scored, stats_rows, strict=True):
        stats[i] = row
    # the signature's nrefs is known once references were cached (-1 = variable, shown "var")
    num_refs = getattr(corpus_metric, "num_refs", 0)
    corpus_metric.num_refs = sentence_metric.num_refs = num_refs
    settings = {"signature": str(corpus_metric.get_signature())}
    if sentence_metric is not corpus_metric:
        settings["sentence_signature"] = str(sentence_metric.get_signature())
    return MetricResult(
        scores, errors, corpus={figure: Corpus(stats, SacreCorpusScore(corpus_metric))}, settings=settings
    )


def _stats_width(metric: Any) -> int:
    if hasattr(metric, "max_ngram_order"):
        return 2 + 2 * int(metric.max_ngram_order)
    return 3 * int(metric.order)


def make_bleu(options: dict[str, Any], *, effective_order: bool = False) -> Any:
    from sacrebleu.metrics import BLEU
    from sacrebleu.metrics.bleu import _TOKENIZERS

    tokenize = options.get("tokenize")
    if tokenize is not None and tokenize not in _TOKENIZERS:
        raise ConfigError(f"bleu: unknown tokenize '{tokenize}' (sacrebleu knows: {', '.join(_TOKENIZERS)})")
    try:
        return BLEU(
            tokenize=tokenize,
            lowercase=bool_option(options, "lowercase", False),
            effective_order=effective_order,
        )
    except ImportError as exc:  # mecab / sentencepiece tokenizers need extra packages
        raise ConfigError(f"bleu: tokenizer '{tokenize}' needs a package that is not installed ({exc})") from None


def bleu(data: EvalInput, options: dict[str, Any]) -> MetricResult:
    """sacrebleu BLEU: per-item sentence BLEU (effective order, as ``sentence_bleu``) and corpus BLEU stats."""
    corpus_metric = make_bleu(options)
    sentence_metric = make_bleu(options, effective_order=True)
    return _sacre(data, "bleu", corpus_metric, sentence_metric)


def chrf(data: EvalInput, options: dict[str, Any]) -> MetricResult:
    """sacrebleu chrF (chrF2 by default; ``word_order: 2`` gives chrF++): per-item and corpus stats."""
    from sacrebleu.metrics import CHRF

    metric = CHRF(
        char_order=int_option(options, "char_order", CHRF.CHAR_ORDER, lo=1),  # type: ignore[arg-type]
        word_order=int_option(options, "word_order", CHRF.WORD_ORDER),  # type: ignore[arg-type]
        lowercase=bool_option(options, "lowercase", False),
    )
    return _sacre(data, "chrf", metric, metric)


# --- ROUGE ------------------------------------------------------------------------------------------

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


class _RougeTokenizer:
    """rouge-score's default tokenizer with each word's Porter stem computed once, not once per occurrence.

    The tokens are rouge-score's own (``rouge_score.tokenize.tokenize`` with this object as its stemmer);
    nltk's ``PorterStemmer.stem`` is a pure function of the word, so memoising it changes nothing.
    """

    def __init__(self, use_stemmer: bool) -> None:
        from nltk.stem import porter

        self._stemmer = porter.PorterStemmer() if use_stemmer else None
        self._stems: dict[str, str] = {}

    def stem(self, word: str) -> str:
        s = self._stems.get(word)
        if s is None:
            assert self._stemmer is not None
            s = self._stems[word] = self._stemmer.stem(word)
        return s

    def tokenize(self, text: str) -> list[str]:
        from rouge_score import tokenize

        return tokenize.tokenize(text, self if self._stemmer is not None else None)


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists, bit-parallel (Allison-Dix / Hyyrö).

    The same integer as the last cell of rouge-score's O(len(a) * len(b)) table, in len(b) big-integer
    steps: bit i of ``v`` is 0 where row i of the table's current column gained a match.
    """
    masks: dict[str, int] = {}
    for i, tok in enumerate(a):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for tok in b:
        m = masks.get(tok)
        if m:
            u = v & m
            v = ((v + u) | (v - u)) & full
    return len(a) - v.bit_count()


def _rouge_l(target: list[str], prediction: list[str]) -> Any:
    """rouge-score's ``_score_lcs``, with the LCS length from :func:`lcs_length`."""
    from rouge_score import scoring

    if not target or not prediction:
        return scoring.Score(precision=0, recall=0, fmeasure=0)
    lcs = lcs_length(target, prediction)
    precision, recall = lcs / len(prediction), lcs / len(target)
    return scoring.Score(precision=precision, recall=recall, fmeasure=scoring.fmeasure(precision, recall))


def rouge(data: EvalInput, options: dict[str, Any]) -> MetricResult:
    """rouge-score F1 of ROUGE-1/2/L (Porter stemmer on), best reference per type (``score_multi``).

    The numbers are rouge-score's ``RougeScorer.score_multi``: its tokens and n-gram scoring
    (``_create_ngrams``, ``_score_ngrams``), the first reference with the largest F1 per type. Two
    things are done faster: stems are memoised per word, and ROUGE-L's LCS length is computed
    bit-parallel instead of by the quadratic table (the same integer); the prediction's tokens and
    n-grams are built once for all references.
    """
    from rouge_score.rouge_scorer import _create_ngrams, _score_ngrams

    use_stemmer = bool_option(options, "use_stemmer", True)
    tokenizer = _RougeTokenizer(use_stemmer)
    errors, refs = prepare(data, needs_reference=True)
    scores = nan_scores(len(data.outputs), *ROUGE_TYPES)
    for i, out in enumerate(data.outputs):
        if errors[i] is not None:
            continue
        pred = tokenizer.tokenize(scored_text(out))
        pred_grams = (_create_ngrams(pred, 1), _create_ngrams(pred, 2))
        best = [-1.0, -1.0, -1.0]
        for ref in refs[i]:
            target = tokenizer.tokenize(ref)
            got = (
                _score_ngrams(_create_ngrams(target, 1), pred_grams[0]).fmeasure,
                _score_ngrams(_create_ngrams(target, 2), pred_grams[1]).fmeasure,
                _rouge_l(target, pred).fmeasure,
            )
            best = [max(b, g) for b, g in zip(best, got, strict=True)]
        for t, value in zip(ROUGE_TYPES, best, strict=True):
            scores[t][i] = value
    return MetricResult(
        scores,
        errors,
        settings={"rouge_types": list(ROUGE_TYPES), "use_stemmer": use_stemmer, "measure": "fmeasure"},
    )


# --- self-BLEU ------------------------------------------------------------------------------------


def self_bleu(data: EvalInput, options: dict[str, Any]) -> MetricResult:
    """Diversity: sentence BLEU of each output against all the system's *other* outputs as references.

    Exactly ``sacrebleu.sentence_bleu(out_i, [out_j for j != i])`` for every item, computed in
    linear time instead of quadratic: BLEU's multi-reference n-gram counts are a max over the
    references, so for each n-gram it suffices to know its largest count, which output holds it,
    and the second largest count (the max once that output is left out). No sampling is needed at
    any corpus size. Lower is more diverse. Blank outputs are unscored and are not references.
    """
    from sacrebleu.metrics.helpers import extract_all_word_ngrams

    metric = make_bleu(options, effective_order=True)
    order = metric.max_ngram_order
    n = len(data.outputs)
    errors: list[str | None] = [output_reason(o, blank_scores=False) for o in data.outputs]
    scored = [i for i in range(n) if errors[i] is None]
    scores = nan_scores(n, "self_bleu")
    metric.num_refs = max(len(scored) - 1, 0)  # for the signature
    if len(scored) < 2:
        for i in scored:
            errors[i] = "no other output to compare with"
        return MetricResult(scores, errors, settings={"signature": str(metric.get_signature())})

    grams: dict[int, Counter] = {}
    lengths: dict[int, int] = {}
    top: dict[tuple[str, ...], list[Any]] = {}  # n-gram -> [best count, its owner, second best count]
    for i in scored:
        g, length = extract_all_word_ngrams(metric._preprocess_segment(data.outputs[i]), 1, order)
        grams[i], lengths[i] = g, length
        for gram, c in g.items():
            t = top.get(gram)
            if t is None:
                top[gram] = [c, i, 0]
            elif c > t[0]:
                t[2], t[0], t[1] = t[0], c, i
            elif c > t[2]:
                t[2] = c
    length_counts = Counter(lengths.values())
    distinct = sorted(length_counts)

    for i in scored:
        h = lengths[i]
        if length_counts[h] > 1:
            ref_len = h
        else:  # closest other length, the shorter one on a tie (sacrebleu's rule)
            k = bisect.bisect_left(distinct, h)
            near = distinct[max(k - 1, 0) : k] + distinct[k + 1 : k + 2]  # neighbours, not h itself
            ref_len = min(near, key=lambda length: (abs(length - h), length))
        correct = [0] * order
        for gram, c in grams[i].items():
            t = top[gram]
            best_other = t[2] if t[1] == i else t[0]
            correct[len(gram) - 1] += c if c < best_other else best_other
        total = [max(h - k, 0) for k in range(order)]  # every n-gram of the output: h - n + 1 of order n
        scores["self_bleu"][i] = metric._compute_score_from_stats([h, ref_len, *correct, *total]).score
    return MetricResult(
        scores,
        errors,
        settings={"signature": str(metric.get_signature()), "references": "all other outputs"},
    )
