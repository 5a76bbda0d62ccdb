"""Reference metrics of ``judge eval``, each checked against an independent computation.

SQuAD EM/F1 against a re-implementation of the SQuAD v1.1 definitions written here; BLEU/chrF/
self-BLEU against sacrebleu's public functions; ROUGE against rouge-score; classification against
scikit-learn; BERTScore against ``bert_score.score``; perplexity against a direct forward pass.
"""

from __future__ import annotations

import json
import math
import re
import string
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from judge.errors import ConfigError
from judge.metrics import METRICS, EvalInput, get_metric, modelbased

from .conftest import SHARED_DATA


def make_input(outputs: list[str | None], refs: list[list[str] | None] | None = None) -> EvalInput:
    n = len(outputs)
    return EvalInput(
        ids=[f"i{k}" for k in range(n)],
        outputs=outputs,
        inputs=[""] * n,
        references=refs if refs is not None else [None] * n,
        contexts=[None] * n,
    )


# Realistic summary / reference pairs (a few with several references, of different counts).
OUTPUTS = [
    "Paul Merson was brought on with only seven minutes remaining in his team's 0-0 draw with Burnley.",
    "The Eiffel Tower is the most visited paid monument in the world.",
    "Scientists found that the new vaccine reduced infections by half in a large trial.",
    "The company said profits rose 12 per cent to 3.4 billion dollars in the last quarter.",
    "Heavy rain caused flooding across the north of the country on Sunday.",
    "The minister resigned after the report was published.",
    "A man was arrested after police found drugs in his car.",
    "The team won the cup for the third time in five years.",
    "Researchers say the coral reef is recovering faster than expected .",
    "Fans queued overnight to buy tickets for the final concert of the tour.",
]
REFS: list[list[str] | None] = [
    ["Andros Townsend was an 83rd minute sub in Tottenham's draw with Burnley.", "Merson criticised Townsend."],
    ["The Eiffel Tower is the world's most visited paid monument."],
    [
        "A large trial showed the new vaccine halved infections.",
        "Infections fell by half with the new vaccine, scientists said.",
        "The vaccine cut infections by 50 per cent.",
    ],
    ["Quarterly profits rose 12% to $3.4bn, the company said."],
    ["Flooding hit the north of the country after heavy rain on Sunday.", "Heavy rain brought floods."],
    ["The minister quit following publication of the report."],
    ["Police arrested a man after finding drugs in his car."],
    ["The team has won the cup three times in five years."],
    ["The coral reef is recovering more quickly than expected, researchers say."],
    ["Fans waited all night for tickets to the tour's last concert."],
]


def summeval_pairs(n: int = 80) -> tuple[list[str], list[list[str]]]:
    path = SHARED_DATA / "summeval" / "summeval_flat.jsonl"
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    outs, refs = [], []
    with path.open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            outs.append(row["summary"])
            refs.append([row["reference"]])
            if len(outs) == n:
                break
    return outs, refs


# --- registry --------------------------------------------------------------------------------------


def test_unknown_metric_names_the_known_ones() -> None:
    with pytest.raises(ConfigError) as exc:
        get_metric("blue")
    for name in ("bleu", "chrf", "rouge", "bertscore", "exact_match", "classification", "perplexity"):
        assert name in str(exc.value)


def test_registry_specs_are_consistent() -> None:
    for name, spec in METRICS.items():
        assert spec.name == name and spec.figures and spec.description
        assert get_metric(name) is spec
    assert METRICS["self_bleu"].figure("self_bleu").direction == "lower"
    assert METRICS["perplexity"].figure("perplexity").direction == "lower"
    assert METRICS["perplexity"].figure("perplexity").lo == 1.0
    assert not METRICS["self_bleu"].needs_reference and METRICS["bleu"].needs_reference
    assert METRICS["bertscore"].needs_local_model and METRICS["perplexity"].needs_local_model
    assert {"model", "num_layers", "idf", "batch_size"} <= set(METRICS["bertscore"].options)


@pytest.mark.parametrize("name", [n for n, spec in METRICS.items() if not spec.needs_local_model])
def test_every_figure_has_per_item_scores_within_its_range(name: str) -> None:
    spec = get_metric(name)
    outs: list[str | None] = [*OUTPUTS, "", None]  # "" is an (empty) answer, scored; None is no output
    options = {"positive": "x"} if "positive" in spec.options else {}  # screening needs its positive class
    res = spec.fn(make_input(outs, [*REFS, ["x"], ["y"]]), options)
    # self-BLEU compares the outputs' n-grams with each other: an empty one has none and is left out
    empty = "empty output" if name == "self_bleu" else None
    k = -2 if empty else -1  # the unscored tail
    assert len(res.errors) == len(outs) and res.errors[-2:] == [empty, "no output"]
    assert set(res.corpus) <= {f.name for f in spec.figures}
    for fig in spec.figures:  # the eval engine reads res.scores[figure] for every figure
        vals = res.scores[fig.name]
        assert vals.shape == (len(outs),) and np.isnan(vals[k:]).all() and np.isfinite(vals[:k]).all()
        assert fig.lo is None or (vals[:k] >= fig.lo).all()
        assert fig.hi is None or (vals[:k] <= fig.hi).all()
        if fig.name in res.corpus:
            c = res.corpus[fig.name]
            assert c.stats.shape[0] == len(outs) and not c.stats[k:].any()
            value = c.score(c.stats.sum(0))
            assert (fig.lo is None or value >= fig.lo) and (fig.hi is None or value <= fig.hi)


def test_importing_metrics_is_light() -> None:
    code = (
        "import sys, judge.metrics\n"
        "heavy = [m for m in ('torch', 'transformers', 'pandas', 'sklearn', 'sacrebleu', 'rouge_score', 'bert_score')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# --- exact match / token F1 vs the SQuAD v1.1 definitions ---------------------------------------


def squad_normalize(text: str) -> str:
    # Written from the SQuAD v1.1 definition: lower, strip punctuation, drop a/an/the, fix whitespace.
    no_punc = text.lower().translate(str.maketrans("", "", string.punctuation))
    no_articles = re.sub(r"\b(a|an|the)\b", " ", no_punc)
    return " ".join(no_articles.split())


def squad_em(prediction: str, truth: str) -> float:
    return 1.0 if squad_normalize(prediction) == squad_normalize(truth) else 0.0


def squad_f1(prediction: str, truth: str) -> float:
    pred, gold = squad_normalize(prediction).split(), squad_normalize(truth).split()
    overlap = sum((Counter(pred) & Counter(gold)).values())
    if overlap == 0:
        return 0.0
    p, r = overlap / len(pred), overlap / len(gold)
    return 2 * p * r / (p + r)


SQUAD_CASES: list[tuple[str | None, list[str] | None]] = [
    ("The Eiffel Tower!", ["eiffel tower"]),
    ("an apple a day", ["Apple, day."]),
    ("Theory of relativity", ["the theory of relativity"]),  # 'the' inside 'theory' stays
    ("the cat sat", ["a dog", "The cat   sat."]),  # second reference matches
    ("cat sat on mat", ["the cat sat on the mat", "dog"]),
    ("the", ["a"]),  # both normalise to nothing: EM 1, F1 0 (v1.1 has no empty special case)
    ("Denver Broncos", ["Denver Broncos", "The Denver Broncos", "Broncos"]),
    ("1,000 dollars", ["1000 dollars"]),
    ("New York City", ["new-york city"]),
    ("Broncos Broncos Broncos", ["Broncos"]),
    ("", ["anything"]),
    (None, ["anything"]),
    ("   ", ["anything"]),
    ("an answer", None),
    ("an answer", []),
    ("an answer", ["  "]),
]


@pytest.mark.parametrize(("metric", "ref_fn"), [("exact_match", squad_em), ("token_f1", squad_f1)])
def test_squad_metrics_match_the_official_definitions(metric: str, ref_fn) -> None:  # type: ignore[no-untyped-def]
    outs = [c[0] for c in SQUAD_CASES]
    refs = [c[1] for c in SQUAD_CASES]
    res = get_metric(metric).fn(make_input(outs, refs), {})
    got = res.scores[metric]
    for k, (out, rs) in enumerate(SQUAD_CASES):
        usable = [r for r in (rs or []) if r.strip()]
        if out is None or not usable:
            assert math.isnan(got[k]) and res.errors[k], (out, rs)
        else:  # an empty answer too: the official definitions score it (0 against any non-empty reference)
            assert got[k] == pytest.approx(max(ref_fn(out, r) for r in usable)), (out, rs)
            assert res.errors[k] is None
    assert res.errors[10] is None and res.errors[11] == "no output" and res.errors[13] == "no reference"
    assert got[10] == got[12] == 0.0
    assert got[5] == (1.0 if metric == "exact_match" else 0.0)


# --- BLEU / chrF vs sacrebleu ----------------------------------------------------------------------


def ref_streams(refs: list[list[str]]) -> list[list[str | None]]:
    k = max(len(r) for r in refs)
    return [[r[j] if j < len(r) else None for r in refs] for j in range(k)]


def _check_sacre(metric: str, outs: list[str], refs: list[list[str]], options: dict, seed: int = 0) -> None:
    import sacrebleu

    if metric == "bleu":
        corpus_fn = lambda h, r: sacrebleu.corpus_bleu(h, r, tokenize=options.get("tokenize", "13a")).score  # noqa: E731
        sentence_fn = lambda h, r: sacrebleu.sentence_bleu(h, r, tokenize=options.get("tokenize", "13a")).score  # noqa: E731
    else:
        corpus_fn = lambda h, r: sacrebleu.corpus_chrf(h, r, word_order=options.get("word_order", 0)).score  # noqa: E731
        sentence_fn = lambda h, r: sacrebleu.sentence_chrf(h, r, word_order=options.get("word_order", 0)).score  # noqa: E731

    res = get_metric(metric).fn(make_input(list(outs), [list(r) for r in refs]), options)
    corpus = res.corpus[metric]
    assert corpus.stats.shape[0] == len(outs)
    assert corpus.score(corpus.stats.sum(0)) == corpus_fn(outs, ref_streams(refs))
    for k in range(len(outs)):
        assert res.scores[metric][k] == pytest.approx(sentence_fn(outs[k], refs[k]), abs=1e-9)
    rng = np.random.default_rng(seed)
    for _ in range(3):  # a subset re-summed = sacrebleu on that subset
        sub = np.sort(rng.choice(len(outs), size=max(2, len(outs) // 2), replace=False))
        want = corpus_fn([outs[i] for i in sub], ref_streams([refs[i] for i in sub]))
        assert corpus.score(corpus.stats[sub].sum(0)) == want
    boot = rng.integers(0, len(outs), size=len(outs))  # with repeats, as the bootstrap draws
    want = corpus_fn([outs[i] for i in boot], ref_streams([refs[i] for i in boot]))
    assert corpus.score(corpus.stats[boot].sum(0)) == pytest.approx(want, abs=1e-9)


@pytest.mark.parametrize("metric", ["bleu", "chrf"])
def test_sacrebleu_corpus_from_summed_stats_multi_reference(metric: str) -> None:
    refs = [list(r) for r in REFS if r is not None]
    _check_sacre(metric, OUTPUTS, refs, {})
    res = get_metric(metric).fn(make_input(OUTPUTS, REFS), {})
    assert "nrefs:var" in res.settings["signature"]  # 1 to 3 references per item


def test_sacrebleu_options_reach_sacrebleu() -> None:
    refs = [list(r) for r in REFS if r is not None]
    _check_sacre("bleu", OUTPUTS, refs, {"tokenize": "char"})
    _check_sacre("chrf", OUTPUTS, refs, {"word_order": 2})
    assert "tok:char" in get_metric("bleu").fn(make_input(OUTPUTS, REFS), {"tokenize": "char"}).settings["signature"]
    assert "nw:2" in get_metric("chrf").fn(make_input(OUTPUTS, REFS), {"word_order": 2}).settings["signature"]
    with pytest.raises(ConfigError, match="13a"):
        get_metric("bleu").fn(make_input(OUTPUTS, REFS), {"tokenize": "nope"})


@pytest.mark.parametrize("metric", ["bleu", "chrf"])
def test_sacrebleu_on_summeval(metric: str) -> None:
    outs, refs = summeval_pairs(80)
    _check_sacre(metric, outs, refs, {}, seed=1)


@pytest.mark.parametrize("metric", ["bleu", "chrf"])
def test_unscored_items_are_nan_and_zero_stats(metric: str) -> None:
    import sacrebleu

    outs = [OUTPUTS[0], "", OUTPUTS[2], None, OUTPUTS[4]]
    refs = [REFS[0], REFS[1], None, REFS[3], ["", REFS[4][0]]]  # type: ignore[index]
    res = get_metric(metric).fn(make_input(outs, refs), {})
    assert res.errors == [None, None, "no reference", "no output", None]  # the empty answer is scored
    assert np.isnan(res.scores[metric][[2, 3]]).all() and not np.isnan(res.scores[metric][[0, 1, 4]]).any()
    assert res.scores[metric][1] == 0.0
    corpus = res.corpus[metric]
    assert not corpus.stats[[2, 3]].any()
    fn = sacrebleu.corpus_bleu if metric == "bleu" else sacrebleu.corpus_chrf
    hyps, wanted_refs = [OUTPUTS[0], "", OUTPUTS[4]], [REFS[0], REFS[1], [REFS[4][0]]]  # type: ignore[index]
    want = fn(hyps, ref_streams(wanted_refs)).score  # type: ignore[arg-type]
    assert corpus.score(corpus.stats.sum(0)) == want
    nothing = get_metric(metric).fn(make_input(["", None], [["a"], ["b"]]), {})
    assert nothing.scores[metric][0] == 0.0 and np.isnan(nothing.scores[metric][1])
    assert nothing.corpus[metric].stats.shape[0] == 2


# --- self-BLEU vs sacrebleu -------------------------------------------------------------------------


def test_self_bleu_equals_sentence_bleu_against_the_other_outputs() -> None:
    import sacrebleu

    outs = [*OUTPUTS, OUTPUTS[5], "The team won the cup.", "", "The minister resigned after the report."]
    res = get_metric("self_bleu").fn(make_input(outs), {})
    ok = [i for i, o in enumerate(outs) if o]
    for i in ok:
        want = sacrebleu.sentence_bleu(outs[i], [outs[j] for j in ok if j != i]).score
        assert res.scores["self_bleu"][i] == pytest.approx(want, abs=1e-9), outs[i]
    assert math.isnan(res.scores["self_bleu"][outs.index("")])
    assert res.scores["self_bleu"][5] == pytest.approx(100.0)  # an exact duplicate exists
    one = get_metric("self_bleu").fn(make_input(["only one", ""]), {})
    assert np.isnan(one.scores["self_bleu"]).all() and one.errors[0] == "no other output to compare with"


def test_self_bleu_on_summeval() -> None:
    import sacrebleu

    outs, _ = summeval_pairs(60)
    res = get_metric("self_bleu").fn(make_input(outs), {})
    for i in range(0, len(outs), 3):
        want = sacrebleu.sentence_bleu(outs[i], outs[:i] + outs[i + 1 :]).score
        assert res.scores["self_bleu"][i] == pytest.approx(want, abs=1e-9)


# --- ROUGE vs rouge-score ---------------------------------------------------------------------------


def test_rouge_matches_rouge_score_best_reference() -> None:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    outs: list[str | None] = [*OUTPUTS, ""]
    refs = [*REFS, ["x"]]
    res = get_metric("rouge").fn(make_input(outs, refs), {})
    for k, (out, rs) in enumerate(zip(OUTPUTS, REFS, strict=True)):
        assert rs is not None
        for t in ("rouge1", "rouge2", "rougeL"):
            want = max(scorer.score(r, out)[t].fmeasure for r in rs)
            assert res.scores[t][k] == pytest.approx(want, abs=1e-12)
    assert all(res.scores[t][-1] == scorer.score("x", "")[t].fmeasure == 0.0 for t in ("rouge1", "rouge2", "rougeL"))
    unstemmed = get_metric("rouge").fn(make_input(["cats running"], [["cat runs"]]), {"use_stemmer": False})
    assert unstemmed.scores["rouge1"][0] == 0.0
    stemmed = get_metric("rouge").fn(make_input(["cats running"], [["cat runs"]]), {})
    assert stemmed.scores["rouge1"][0] == pytest.approx(1.0)  # cats -> cat, running / runs -> run


# --- classification vs scikit-learn ----------------------------------------------------------------


def _sklearn_figures(y_true: list[str], y_pred: list[str], labels: list[str] | None = None) -> dict[str, float]:
    from sklearn import metrics as skm

    if labels is not None:  # the gold classes that occur in this sample
        labels = [c for c in labels if c in set(y_true) | set(y_pred)]
    present = labels if labels is not None else sorted(set(y_true) | set(y_pred))
    gold = set(y_true) if labels is None else set(labels)
    merged = [p if p in gold or labels is None else "(other)" for p in y_pred]  # non-gold labels: one class
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # predicted-only classes: sklearn warns for balanced accuracy
        mcm = skm.multilabel_confusion_matrix(y_true, y_pred, labels=present)
        tn, fp = mcm[:, 0, 0], mcm[:, 0, 1]
        return {
            "macro_specificity": float(np.mean([t / (t + f) if t + f else 0.0 for t, f in zip(tn, fp, strict=True)])),
            "mcc": skm.matthews_corrcoef(y_true, merged),
            "accuracy": skm.accuracy_score(y_true, y_pred),
            "macro_f1": skm.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0),
            "macro_precision": skm.precision_score(y_true, y_pred, labels=labels, average="macro", zero_division=0),
            "macro_recall": skm.recall_score(y_true, y_pred, labels=labels, average="macro", zero_division=0),
            "balanced_accuracy": skm.balanced_accuracy_score(y_true, y_pred),
        }


CORPUS_FIGS = ("macro_f1", "macro_precision", "macro_recall", "balanced_accuracy", "macro_specificity", "mcc")


def _labels(n: int, invalid: float, seed: int) -> tuple[list[str], list[str], list[str]]:
    """Gold labels, predictions (some wrong, a share ``invalid`` no gold label), and outputs as written."""
    rng = np.random.default_rng(seed)
    classes = ["Positive", "negative", "neutral", "mixed"]
    gold = [str(rng.choice(classes, p=[0.4, 0.3, 0.2, 0.1])) for _ in range(n)]
    pred = []
    for g in gold:
        u = rng.random()
        pred.append(g if u < 0.6 else "unsure" if u < 0.6 + invalid else str(rng.choice(classes)))
    outs = [f"  {p.upper()} " if k % 7 == 0 else p for k, p in enumerate(pred)]  # case and spaces differ
    return [g.casefold() for g in gold], [p.casefold() for p in pred], outs


def _check_resamples(res, gold: list[str], pred: list[str], skip: set[int], labels: list[str] | None) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(7)
    n = len(gold)
    draws = [rng.integers(0, n, size=m) for m in (n, 15, 6, 3)]  # with repeats; small ones miss classes
    for idx in draws:
        sub = [k for k in idx if k not in skip]
        want = _sklearn_figures([gold[k] for k in sub], [pred[k] for k in sub], labels)
        for fig in CORPUS_FIGS:
            corpus = res.corpus[fig]
            assert corpus.score(corpus.stats[idx].sum(0)) == pytest.approx(want[fig], abs=1e-12), (fig, len(idx))
    corpus = res.corpus["macro_f1"]  # vectorised: a (B, k) batch of sums gives the (B,) scores
    assert corpus.vectorised
    batch = np.stack([corpus.stats[idx].sum(0) for idx in draws])
    assert corpus.score(batch) == pytest.approx([corpus.score(row) for row in batch])


def test_classification_equals_sklearn_when_every_prediction_is_a_gold_label() -> None:
    from sklearn.metrics import confusion_matrix

    gold, pred, outs = _labels(120, invalid=0.0, seed=3)
    outs[5] = None  # type: ignore[call-overload]  # no output: unscored
    res = get_metric("classification").fn(make_input(outs, [[g.upper()] for g in gold]), {})
    assert math.isnan(res.scores["accuracy"][5]) and res.errors[5] == "no output"
    keep = [k for k in range(len(gold)) if k != 5]
    y_true, y_pred = [gold[k] for k in keep], [pred[k] for k in keep]
    want = _sklearn_figures(y_true, y_pred)  # plain sklearn: labels = the union
    assert np.nanmean(res.scores["accuracy"]) == pytest.approx(want["accuracy"])
    for fig in CORPUS_FIGS:
        c = res.corpus[fig]
        assert c.score(c.stats.sum(0)) == pytest.approx(want[fig], abs=1e-12), fig
        assert np.array_equal(np.isnan(res.scores[fig]), np.isnan(res.scores["accuracy"]))  # same items scored
    classes = res.details["classes"]
    assert classes == sorted(set(gold))
    cm = confusion_matrix(y_true, y_pred, labels=classes)
    assert res.details["confusion_matrix"] == cm.tolist()
    g = len(classes) + 1  # plus the "(other)" column, empty here
    summed = res.corpus["macro_f1"].stats.sum(0).reshape(g, g)
    assert summed[:-1, :-1].tolist() == cm.tolist() and not summed[-1].any() and not summed[:, -1].any()
    _check_resamples(res, gold, pred, {5}, None)


def test_classification_with_labels_outside_the_gold_classes() -> None:
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    gold, pred, outs = _labels(150, invalid=0.15, seed=4)
    res = get_metric("classification").fn(make_input(outs, [[g] for g in gold]), {})
    classes = sorted(set(gold))
    assert res.details["classes"] == classes and res.details["non_gold_labels"] == 1
    want = _sklearn_figures(gold, pred, classes)  # macro over the gold classes; 'unsure' is a miss
    for fig in CORPUS_FIGS:
        c = res.corpus[fig]
        assert c.score(c.stats.sum(0)) == pytest.approx(want[fig], abs=1e-12), fig
    labels = res.details["confusion_matrix_labels"]
    assert labels == [*classes, "unsure"]
    assert res.details["confusion_matrix"] == confusion_matrix(gold, pred, labels=labels).tolist()
    p, r, f, s = precision_recall_fscore_support(gold, pred, labels=labels, zero_division=0)
    for k, cls in enumerate(labels):
        got = res.details["per_class"][cls]
        assert (got["precision"], got["recall"], got["f1"], got["support"]) == pytest.approx((p[k], r[k], f[k], s[k]))
        negatives = [pr for g, pr in zip(gold, pred, strict=True) if g != cls]  # one-vs-rest, counted by hand
        assert got["specificity"] == pytest.approx(sum(pr != cls for pr in negatives) / len(negatives))
        assert got["sensitivity"] == got["recall"]
    _check_resamples(res, gold, pred, set(), classes)

    # another system on the same items: the same statistics layout, so rows of the two can be mixed
    other = get_metric("classification").fn(make_input(["maybe"] * len(gold), [[g] for g in gold]), {})
    assert other.corpus["macro_f1"].stats.shape == res.corpus["macro_f1"].stats.shape
    assert other.corpus["macro_f1"].score(other.corpus["macro_f1"].stats.sum(0)) == 0.0


def test_mcc_separates_a_flooding_screen_that_accuracy_and_recall_flatter() -> None:
    from sklearn.metrics import matthews_corrcoef

    gold = ["ill"] * 10 + ["well"] * 90
    flood = ["ill"] * 10 + ["ill"] * 40 + ["well"] * 50  # every ill case caught, 40 false alarms
    res = get_metric("classification").fn(make_input(flood, [[g] for g in gold]), {})
    c = res.corpus["mcc"]
    assert c.score(c.stats.sum(0)) == pytest.approx(matthews_corrcoef(gold, flood))
    spec = res.corpus["macro_specificity"]
    assert spec.score(spec.stats.sum(0)) == pytest.approx((1.0 + 50 / 90) / 2)  # ill: 90 negatives, 40 FP
    assert res.details["per_class"]["ill"]["specificity"] == pytest.approx(50 / 90)
    constant = get_metric("classification").fn(make_input(["well"] * 100, [[g] for g in gold]), {})
    c = constant.corpus["mcc"]
    assert c.score(c.stats.sum(0)) == matthews_corrcoef(gold, ["well"] * 100) == 0.0  # undefined -> 0, as sklearn


def test_screening_sensitivity_and_specificity_against_sklearn() -> None:
    from sklearn.metrics import confusion_matrix, recall_score

    gold, pred, outs = _labels(200, invalid=0.1, seed=9)
    refs = [[g] for g in gold]
    res = get_metric("screening").fn(make_input(outs, refs), {"positive": "Negative"})  # casefolded like labels
    assert res.settings["positive"] == "negative"
    y_true = [g == "negative" for g in gold]
    y_pred = [p == "negative" for p in pred]
    (tn, fp), _ = confusion_matrix(y_true, y_pred, labels=[False, True])
    rng = np.random.default_rng(1)
    for idx in [np.arange(len(gold)), *(rng.integers(0, len(gold), size=m) for m in (40, 8))]:
        t, pr = [y_true[k] for k in idx], [y_pred[k] for k in idx]
        (tn, fp), _ = confusion_matrix(t, pr, labels=[False, True])
        want = {"sensitivity": recall_score(t, pr, zero_division=0), "specificity": tn / (tn + fp) if tn + fp else 0.0}
        for fig, value in want.items():
            c = res.corpus[fig]
            assert c.score(c.stats[idx].sum(0)) == pytest.approx(value, abs=1e-12), (fig, len(idx))
            assert c.score(c.stats[idx].sum(0)[None, :])[0] == pytest.approx(value, abs=1e-12)
    with pytest.raises(ConfigError, match="needs option 'positive'"):
        get_metric("screening").fn(make_input(outs, refs), {})
    with pytest.raises(ConfigError, match="'sick', which is no item's gold label"):
        get_metric("screening").fn(make_input(outs, refs), {"positive": "sick"})


# --- BERTScore vs bert_score.score ------------------------------------------------------------------


@pytest.mark.slow
def test_bertscore_matches_bert_score_on_minilm() -> None:
    from bert_score import score

    from judge.local.models import minilm_path

    path = str(minilm_path())
    outs: list[str | None] = [*OUTPUTS[:6], ""]
    refs = [*REFS[:6], ["x"]]
    res = get_metric("bertscore").fn(make_input(outs, refs), {"device": "cpu"})
    assert res.settings["num_layers"] == 6 and res.settings["idf"] is False
    assert res.settings["model_name"] == "all-minilm-l6-v2" and res.settings["rescale_with_baseline"] is False
    # an empty answer is scored as bert-score defines it (utils.greedy_cos_idf: "Empty candidate sentence detected;
    # setting raw BERTscores to 0."; its own path to there fails on this transformers version, so not called here)
    assert res.errors[6] is None and res.scores["bertscore"][6] == 0.0
    _, _, f = score(OUTPUTS[:6], REFS[:6], model_type=path, num_layers=6, device="cpu", idf=False)
    assert res.scores["bertscore"][:6] == pytest.approx(f.numpy().tolist(), abs=1e-5)

    res_idf = get_metric("bertscore").fn(make_input(OUTPUTS, REFS), {"idf": True, "batch_size": 4, "device": "cpu"})
    _, _, f_idf = score(OUTPUTS, REFS, model_type=path, num_layers=6, device="cpu", idf=True, nthreads=0)
    assert res_idf.scores["bertscore"] == pytest.approx(f_idf.numpy().tolist(), abs=1e-5)
    # many small bert-score calls (a suite too big for one) give the same values, idf still from every reference
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(modelbased, "BERTSCORE_CHUNK_CHARS", 60)
        assert len(modelbased._chunks_sharing_references(list(zip(OUTPUTS, REFS, strict=True)), 60)) > 2
        chunked = get_metric("bertscore").fn(make_input(OUTPUTS, REFS), {"idf": True, "batch_size": 4, "device": "cpu"})
    assert chunked.scores["bertscore"] == pytest.approx(f_idf.numpy().tolist(), abs=1e-5)

    ref = "The cat is sleeping on the sofa."
    pair = get_metric("bertscore").fn(
        make_input(["A cat sleeps on the couch.", "Stock markets fell sharply on Monday."], [[ref], [ref]]),
        {"model": "minilm", "device": "cpu"},
    )
    para, unrelated = pair.scores["bertscore"]
    assert para > unrelated + 0.1


def test_bertscore_chunks_keep_references_together_within_the_budget() -> None:
    refs = [["r1"], ["r2 long reference"], ["r1"], ["r2 long reference"], ["r1"], ["r3"]]
    pairs = [(f"candidate {i}", r) for i, r in enumerate(refs)]
    chunks = modelbased._chunks_sharing_references(pairs, 40)
    assert sorted(i for c in chunks for i in c) == list(range(len(pairs)))  # each pair once
    for chunk in chunks:  # distinct text within the budget
        assert len(chunk) == 1 or sum(map(len, {t for i in chunk for t in (pairs[i][0], *pairs[i][1])})) <= 40
    assert [0, 2, 4] in chunks  # r1's pairs fit together: r1 is embedded once
    assert modelbased._chunks_sharing_references(pairs, 10**6) == [[0, 2, 4, 1, 3, 5]]
    assert modelbased._chunks_sharing_references([("x" * 50, ["y" * 50])], 10) == [[0]]  # too big alone: alone


def test_bertscore_rejects_a_missing_model_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        get_metric("bertscore").fn(make_input(["a"], [["b"]]), {"model": str(tmp_path / "nope")})


# --- perplexity ---------------------------------------------------------------------------------------


def test_perplexity_on_a_tiny_model_matches_a_direct_forward_pass(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from judge.testing.tiny import causal_lm

    model_dir = str(causal_lm(tmp_path / "lm"))
    texts: list[str | None] = ["the cat sat on the mat .", "", "she ran to the big red house in paris ."]
    res = get_metric("perplexity").fn(make_input(texts), {"model": model_dir, "device": "cpu"})
    assert res.errors == [None, "empty output", None] and math.isnan(res.scores["perplexity"][1])
    assert res.settings["model"] == model_dir

    tok = AutoTokenizer.from_pretrained(model_dir)
    lm = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    total_nll = total_tokens = 0.0
    for k in (0, 2):
        ids = [tok.bos_token_id, *tok(texts[k], add_special_tokens=False)["input_ids"]]
        with torch.inference_mode():
            logits = lm(torch.tensor([ids])).logits[0, :-1].double()
        nll = -torch.log_softmax(logits, -1).gather(-1, torch.tensor(ids[1:])[:, None]).mean().item()
        assert res.scores["perplexity"][k] == pytest.approx(math.exp(nll), rel=1e-4)
        total_nll += nll * (len(ids) - 1)
        total_tokens += len(ids) - 1
    assert (res.scores["perplexity"][[0, 2]] >= 1.0).all()
    # the system value is the corpus perplexity over all scored tokens, not a mean of perplexities
    corpus = res.corpus["perplexity"]
    value = corpus.score(corpus.stats.sum(axis=0, keepdims=True))[0]
    assert value == pytest.approx(math.exp(total_nll / total_tokens), rel=1e-4)


@pytest.mark.slow
def test_perplexity_on_smollm2_prefers_fluent_text() -> None:
    fluent = "The weather was lovely, so we went for a long walk in the park."
    scrambled = "Park the walk lovely in so weather for went a long we the was."
    res = get_metric("perplexity").fn(make_input([fluent, scrambled]), {})
    assert res.settings["model"] == "smollm2"
    assert res.scores["perplexity"][0] < res.scores["perplexity"][1]
