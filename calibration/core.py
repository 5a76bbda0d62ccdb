"""Calibrating a judge against human labels: join, compare, bootstrap, ceiling, fits, review list.

The join is explicit about coverage. Of the judge's items, some are unscored (status ``unscored`` or no
score) and some have no human label; both are counted, listed by id and warned about, and the statistics
are computed on the rest (``n_compared``). Labelled ids that match no judge item are listed too.

The human-human ceiling: for every item with two or more annotators, each annotator's label is compared
with the consensus of the *other* annotators (leave-one-out). The (annotator, others' consensus) pairs
are pooled over all annotators and items into one sample and the same statistics are computed on it; the
bootstrap resamples items (with all their pairs), as for the judge. Note the judge is compared with the
consensus of *all* annotators, which is a slightly less noisy target than the leave-one-out consensus,
so the ceiling is, if anything, a little conservative.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from calibration.agreement import (
    Design,
    build_design,
    confusion,
    encode_auc_cells,
    encode_cells,
    point_estimates,
)
from calibration.bootstrap import bootstrap, jackknife, percentile_ci
from calibration.fit import ThresholdFit, fit_isotonic, fit_threshold, reliability_curve
from calibration.labels import (
    PAIRWISE_CLASSES,
    TEXT_COLUMNS,
    consensus,
    judge_values,
    validate_labels,
    validate_scores,
)
from calibration.ppi import ppi_section
from calibration.report import MAX_POINTS, CalibrationReport, ClassStats, Confusion, Disagreement, LevelStats, Stat
from judge.errors import ConfigError, DataError
from judge.progress import progress_bar
from judge.stats import CI_METHODS, bca_ci, group_codes, resolve_ci_method

MIN_ITEMS = 10
RECOMMENDED_ITEMS = 100
HEADLINE = {"ordinal": "kappa_quadratic", "binary": "cohen_kappa", "nominal": "cohen_kappa", "pairwise": "cohen_kappa"}
# judge files whose items group without being told: MT-Bench judgments (two turns, many model pairs per question)
AUTO_GROUP_COLUMNS = ("question_id",)


def calibrate(
    judge_scores: pd.DataFrame | pd.Series,
    human_labels: pd.DataFrame | pd.Series,
    *,
    label_type: str | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    scale: tuple[float, float] | None = None,
    threshold: float | None = None,
    threshold_metric: str = "f1",
    by: str | None = None,
    n_disagreements: int = 15,
    min_items: int = MIN_ITEMS,
    judge_source: str | None = None,
    labels_source: str | None = None,
    ci_method: str = "auto",
    group: str | None = None,
    ppi: str = "auto",
    ppi_map: str = "auto",
    plan: tuple[str, list[dict[str, Any]]] | None = None,
    levels: tuple[str, ...] = (),
    system: str | None = None,
    progress: bool = False,
) -> CalibrationReport:
    """Measure how well judge scores agree with human labels.

    Args:
        judge_scores: a Series of scores indexed by item id (NaN/None = unscored), or a frame with ``id``,
            ``score`` and optionally ``status`` and text columns (as :func:`calibration.load_judge_scores` returns).
            Pairwise scores may be ``"A"``/``"B"``/``"tie"`` in any common spelling.
        human_labels: a Series of labels indexed by item id (one annotator), or a frame with ``id``, ``label``
            and optionally ``annotator`` (several rows per id = several annotators).
        label_type: ``ordinal``, ``binary``, ``pairwise`` or ``nominal``; guessed from the labels when None.
        n_boot: bootstrap resamples for the 95 % CIs (0 = no CIs).
        seed: seed of the bootstrap and cross-validation splits.
        scale: (min, max) of the rubric; labels outside it are an error, judge scores outside it a warning.
        threshold: for binary labels and a continuous judge score: ``score >= threshold`` is positive. When
            None, out-of-fold predictions of the cross-validated threshold fit are used (and said so).
        threshold_metric: what the threshold fit maximises, ``f1`` or ``kappa``.
        by: a column of the judge frame (or the labels frame); the same report is added per group.
        n_disagreements: how many of the largest disagreements to list for review.
        min_items: fewer compared items than this is an error (groups below it are skipped with a warning).
        judge_source, labels_source: file names used in messages.
        ci_method: ``percentile``, ``bca`` (bias-corrected and accelerated) or ``auto`` (BCa below
            :data:`judge.stats.BCA_BELOW` resampling units, percentile above); the report says which was used.
        group: a column of the judge frame (or the labels frame) whose items are not independent (the same
            question, article or prompt): the bootstrap resamples whole groups (cluster bootstrap). MT-Bench
            judgments (a ``question_id`` column) group by question unless a group is given; ``group="id"``
            resamples items.
        ppi: ``auto`` (when the judge scored at least ``judge.ppi.MIN_LABELS`` unlabelled items), ``on`` or
            ``off``: the prediction-powered estimate of the human-scale mean (:mod:`judge.ppi`), beside
            the labelled-only and judge-only ones, in ``report.ppi``. With it, labels for ids the judge did not
            score are an error (they are not a sample of the judged pool).
        ppi_map: how judge scores go on the human scale for PPI: ``identity``, ``isotonic`` (cross-fitted), or
            ``auto`` (isotonic for binary labels against a continuous judge score, else identity).
        plan: ``(path, rows)`` of the ``judge label plan`` file the labelled items were drawn by: PPI is then
            stratified as the plan was, with the plan's strata recomputed for every judged item.
        levels: ``summary`` (per-document correlations over ``group``'s documents, averaged) and/or ``system``
            (correlation of the per-``system`` means), added to ``report.levels`` (:mod:`calibration.levels`).
        system: the column naming each item's system, for the system level.
        progress: a bar on stderr over the stages (:data:`STAGES`, again per ``by`` group), named as they run.

    Raises:
        DataError: the files do not join, too few items, labels of the wrong type or scale.
    """
    if threshold_metric not in ("f1", "kappa"):
        raise ConfigError(f"threshold metric must be 'f1' or 'kappa', not '{threshold_metric}'")
    if n_boot < 0:
        raise ConfigError("--bootstrap must be 0 or more")
    if ci_method not in CI_METHODS:
        raise ConfigError(f"--ci-method must be one of {', '.join(CI_METHODS)}, not '{ci_method}'")
    scores = judge_scores if _validated(judge_scores) else validate_scores(judge_scores, path=judge_source)
    if _validated(human_labels) and label_type in (None, human_labels.attrs.get("label_type")):
        labels, kind = human_labels, str(human_labels.attrs["label_type"])
    else:
        labels, kind = validate_labels(human_labels, label_type=label_type, scale=scale, path=labels_source)
    common = (  # the settings of the whole set's calibration and of each --by group's
        *(n_boot, seed, scale, threshold, threshold_metric, n_disagreements, min_items),
        *(judge_source, labels_source, ci_method, group, ppi, ppi_map),
    )
    with progress_bar(len(STAGES), "calibrate", progress, unit="stage") as bar:
        stages = _Stages(bar)
        report = _calibrate_one(scores, labels, kind, *common, plan, levels, system, stage=stages)
        stages.finish()
        if by is not None:
            report.groups = _by_group(scores, labels, kind, by, *common, report, bar)
        bar.set_description("calibrate done")
    return report


STAGES = ("agreement bootstrap", "human ceiling", "fits and review", "levels", "PPI")
"""The stages of one calibration, as the progress bar names them."""


class _Stages:
    """The progress of one calibration on ``bar``: ``stage(name)`` counts the stage before as done and names
    the next; :meth:`finish` counts the rest (all of them for a ``--by`` group skipped for want of items)."""

    def __init__(self, bar: Any, prefix: str = "") -> None:
        self.bar, self.prefix, self.counted, self.running = bar, prefix, 0, False

    def __call__(self, name: str) -> None:
        if self.running:
            self.bar.update(1)
            self.counted += 1
        self.running = True
        self.bar.set_description(f"calibrate {self.prefix}{name}")

    def finish(self) -> None:
        self.bar.update(len(STAGES) - self.counted)
        self.counted, self.running = len(STAGES), False


def _validated(frame: Any) -> bool:
    return isinstance(frame, pd.DataFrame) and bool(frame.attrs.get("validated"))


def _by_group(
    scores: pd.DataFrame,
    labels: pd.DataFrame,
    kind: str,
    by: str,
    *args: Any,
) -> dict[str, CalibrationReport]:
    *rest, parent, bar = args
    (n_boot, seed, scale, threshold, threshold_metric, n_dis, min_items, jsrc, lsrc, ci_method, group, ppi, ppi_map) = (
        rest
    )
    if by in scores.columns:
        groups = scores[by].map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
        key = dict(zip(scores["id"], groups, strict=True))
    elif by in labels.columns:
        key = dict(zip(labels["id"], labels[by].astype(str), strict=True))
    else:
        have = ", ".join(c for c in scores.columns if c not in ("line", "score", "status"))
        raise DataError(f"no column '{by}' to group by in the judge results (columns: {have})", path=jsrc, field=by)
    out: dict[str, CalibrationReport] = {}
    names = sorted(set(key.values()))
    bar.total = (bar.total or 0) + len(STAGES) * len(names)
    bar.refresh()
    for name in names:
        stage = _Stages(bar, f"{by}={name}: ")
        ids = {i for i, g in key.items() if g == name}
        sub_scores = scores[scores["id"].isin(ids)]
        sub_labels = labels[labels["id"].isin(ids)]
        try:
            out[name] = _calibrate_one(
                sub_scores,
                sub_labels,
                kind,
                n_boot,
                seed,
                scale,
                threshold,
                threshold_metric,
                n_dis,
                min_items,
                jsrc,
                lsrc,
                ci_method,
                group,
                ppi,
                ppi_map,
                stage=stage,
            )
        except DataError as exc:
            parent.warnings.append(f"group {by}={name!r} skipped: {exc}")
        stage.finish()
    return out


def _encode(values: pd.Series, kind: str, classes: list[str]) -> np.ndarray:
    if kind in ("pairwise", "nominal"):
        index = {c: i for i, c in enumerate(classes)}
        return np.array([index[v] for v in values], dtype=float)
    return np.asarray(values.to_numpy(), dtype=float)


def _ids(values: list[str], limit: int = 10) -> str:
    shown = ", ".join(values[:limit])
    return shown + (f", … ({len(values)} in all)" if len(values) > limit else "")


class _Joined(NamedTuple):
    """Judge scores joined with the human consensus, and what the join left out."""

    judge_ids: list[str]
    n_scored: int
    unscored_ids: list[str]
    missing_label_ids: list[str]
    unmatched: list[str]
    tied: list[str]
    labels: pd.DataFrame  # the labels of judge items only
    compared: list[str]  # ids with both a judge score and a human consensus, in judge order
    human_raw: pd.Series
    judge_raw: pd.Series


def _calibrate_one(
    scores: pd.DataFrame,
    labels: pd.DataFrame,
    kind: str,
    n_boot: int,
    seed: int,
    scale: tuple[float, float] | None,
    threshold: float | None,
    threshold_metric: str,
    n_disagreements: int,
    min_items: int,
    judge_source: str | None,
    labels_source: str | None,
    ci_method: str = "auto",
    group: str | None = None,
    ppi: str = "off",
    ppi_map: str = "auto",
    plan: tuple[str, list[dict[str, Any]]] | None = None,
    levels: tuple[str, ...] = (),
    system: str | None = None,
    stage: Callable[[str], None] = lambda name: None,
) -> CalibrationReport:
    warns: list[str] = []
    joined = _join(scores, labels, kind, min_items, judge_source, labels_source, warns)
    labels, compared, human_raw, judge_raw = joined.labels, joined.compared, joined.human_raw, joined.judge_raw
    group, group_of = _groups(scores, labels, compared, group, judge_source)
    units, n_units = (None, len(compared)) if group_of is None else group_codes([group_of[i] for i in compared])
    method = resolve_ci_method(ci_method, n_units)
    classes = _classes(kind, human_raw, judge_raw, labels)
    y = _encode(human_raw, kind, classes)
    p, judge_cont, thr_fit = _judge_side(
        kind, y, judge_raw, classes, threshold, threshold_metric, seed, labels_source, warns
    )
    if scale is not None and kind in ("ordinal", "binary"):
        outside = [i for i, v in zip(compared, judge_raw, strict=True) if not scale[0] <= float(v) <= scale[1]]
        if outside:
            warns.append(
                f"{len(outside)} judge scores are outside the scale {scale[0]:g}..{scale[1]:g}: {_ids(outside)}"
            )
    design = _design(kind, y, p, judge_cont, classes, warns)

    stage(STAGES[0])
    metrics = _stats(design, y, p, judge_cont, n_boot, seed, units=units, n_units=n_units, ci_method=method)
    stage(STAGES[1])
    ceiling, ceiling_pairs = _ceiling(labels, kind, classes, compared, design, n_boot, seed, method, group_of)
    n_annotators = int(labels["annotator"].nunique())
    if ceiling is None and n_annotators > 1:
        warns.append("no item has two or more annotators, so there is no human-human ceiling")
    elif ceiling is None:
        warns.append(
            "one label per item (a single annotator), so there is no human-human ceiling: it compares each "
            "annotator with the others on the same item; label some items twice to get one"
        )
    ci_width = {
        k: (s.ci_high - s.ci_low) if s.ci_low is not None and s.ci_high is not None else None
        for k, s in metrics.items()
    }
    n = len(compared)
    if n < RECOMMENDED_ITEMS:
        head = HEADLINE[kind] if HEADLINE[kind] in metrics else next(iter(metrics))
        width = ci_width.get(head)
        warns.append(
            f"only {n} labelled items compared: validate a judge on 100–200; the 95% CI of {head} is "
            f"{'undefined' if width is None else f'{width:.3f} wide'}"
        )

    report = CalibrationReport(
        n_items=len(joined.judge_ids),
        n_scored=joined.n_scored,
        n_unscored=len(joined.unscored_ids),
        n_missing_label=len(joined.missing_label_ids),
        label_type=kind,
        metrics=metrics,
        human_ceiling=ceiling,
        warnings=warns,
        n_compared=n,
        n_annotators=n_annotators,
        n_boot=n_boot,
        seed=seed,
        ci_width=ci_width,
        unscored_ids=joined.unscored_ids,
        missing_label_ids=joined.missing_label_ids,
        unmatched_label_ids=joined.unmatched,
        consensus_tie_ids=joined.tied,
        ceiling_method="leave-one-out: each annotator vs the others' consensus, pairs pooled" if ceiling else None,
        ceiling_pairs=ceiling_pairs,
        ci_method=method if n_boot > 0 else None,
        group=group,
        n_groups=n_units if group is not None else None,
    )
    stage(STAGES[2])
    if design.common:
        mat = confusion(design, y, p)
        report.confusion = Confusion(labels=list(design.class_names), matrix=mat.tolist())
        if kind != "ordinal":
            report.per_class = _per_class(design, mat)
    if kind == "pairwise":
        report.tie_rate = {"judge": float(np.mean(p == 2)), "human": float(np.mean(y == 2))}
    report.threshold = thr_fit
    if kind in ("ordinal", "binary"):
        x = judge_cont if judge_cont is not None else p
        report.isotonic = fit_isotonic(x, y, seed=seed)
        n_points = min(len(x), MAX_POINTS)
        keep = np.unique(np.linspace(0, len(x) - 1, n_points).astype(int)) if len(x) else np.zeros(0, dtype=int)
        report.points = [(float(x[i]), float(y[i])) for i in keep]
    if kind == "binary" and judge_cont is not None:
        report.reliability = reliability_curve(judge_cont, y, scale=scale)
    report.disagreements = _disagreements(
        scores, labels, compared, kind, classes, y, p, judge_cont, human_raw, judge_raw, n_disagreements
    )
    stage(STAGES[3])
    report.levels = _levels(
        scores,
        labels,
        compared,
        kind,
        y,
        judge_cont if judge_cont is not None else p,
        group_of,
        levels,
        system,
        n_boot,
        seed,
        judge_source,
    )
    stage(STAGES[4])
    report.ppi = ppi_section(
        scores, joined, kind, group, mode=ppi, mapping=ppi_map, seed=seed, labels_source=labels_source, plan=plan
    )
    return report


def _join(
    scores: pd.DataFrame,
    labels: pd.DataFrame,
    kind: str,
    min_items: int,
    judge_source: str | None,
    labels_source: str | None,
    warns: list[str],
) -> _Joined:
    """Join judge scores with the human consensus; coverage gaps become warnings, too few items an error."""
    judge_ids = list(scores["id"])
    judge_set = set(judge_ids)
    scored = scores[scores["score"].notna()]
    scored_set = set(scored["id"])
    unscored_ids = [i for i in judge_ids if i not in scored_set]
    labelled = set(labels["id"])
    missing_label_ids = [i for i in judge_ids if i not in labelled]
    unmatched = sorted(labelled - judge_set)
    if not judge_set & labelled:
        raise DataError(
            f"no judge item has a human label: judge ids look like {_ids(judge_ids, 3)}, label ids like "
            f"{_ids(sorted(labelled), 3)}; check --id-column",
            path=labels_source,
        )
    labels = labels[labels["id"].isin(judge_set)]
    gold, tied = consensus(labels, kind)
    jvals, bad = judge_values(scored.set_index("id")["score"], kind)
    if bad:
        raise DataError(
            f"{len(bad)} judge scores cannot be read as {kind} verdicts (ids {_ids(bad, 5)}); "
            "pick the right --label-type or --score-column",
            path=judge_source,
        )
    judged, golden = set(jvals.index), set(gold.index)
    compared = [i for i in judge_ids if i in judged and i in golden]
    if kind == "nominal" and compared and not set(jvals.loc[compared]) & set(gold.loc[compared]):
        # e.g. labels "good"/"bad" against scores 1-5: every item would disagree, and kappa 0 would look like a result
        raise DataError(
            f"the judge's classes ({_ids(sorted(map(str, set(jvals))), 5)}) and the human labels' "
            f"({_ids(sorted(map(str, set(gold))), 5)}) share no value, so no item can agree; map the labels "
            "to the judge's scale, or choose --label-type / --score-column",
            path=labels_source,
        )
    n = len(compared)
    if n < min_items:
        raise DataError(
            f"only {n} items have both a judge score and a human label; at least {min_items} are needed "
            f"(aim for 100–200)",
            path=labels_source,
        )
    if unscored_ids:
        warns.append(
            f"{len(unscored_ids)} judge items are unscored and left out of the statistics: {_ids(unscored_ids)}"
        )
    if missing_label_ids:
        warns.append(f"{len(missing_label_ids)} judge items have no human label: {_ids(missing_label_ids)}")
    if unmatched:
        warns.append(f"{len(unmatched)} labelled ids match no judge item: {_ids(unmatched)}")
    if tied:
        what = "counted as 'tie'" if kind == "pairwise" else "left out (no unique majority)"
        warns.append(f"{len(tied)} items have a tied human majority, {what}: {_ids(tied)}")
    return _Joined(
        judge_ids,
        len(scored),
        unscored_ids,
        missing_label_ids,
        unmatched,
        tied,
        labels,
        compared,
        gold.loc[compared],
        jvals.loc[compared],
    )


def _judge_side(
    kind: str,
    y: np.ndarray,
    judge_raw: pd.Series,
    classes: list[str],
    threshold: float | None,
    threshold_metric: str,
    seed: int,
    labels_source: str | None,
    warns: list[str],
) -> tuple[np.ndarray, np.ndarray | None, ThresholdFit | None]:
    """The judge's encoded verdicts, its continuous score (binary labels, non-0/1 scores) and threshold fit."""
    if kind != "binary":
        return _encode(judge_raw, kind, classes), None, None
    p_raw = judge_raw.to_numpy(dtype=float)
    if set(np.unique(p_raw)) <= {0.0, 1.0}:
        return p_raw, None, None
    fitted = fit_threshold(y, p_raw, criterion=threshold_metric, seed=seed)
    thr_fit = fitted[0] if fitted else None
    if threshold is not None:
        return (p_raw >= threshold).astype(float), p_raw, thr_fit
    if fitted is None:
        raise DataError("binary labels need at least 2 items of each class to fit a threshold", path=labels_source)
    warns.append(
        "judge scores are not 0/1: accuracy, κ and F1 use out-of-fold predictions of the "
        f"cross-validated threshold (≈ {fitted[0].threshold:g}); pass --threshold to fix one"
    )
    return fitted[1], p_raw, thr_fit


def _design(
    kind: str, y: np.ndarray, p: np.ndarray, judge_cont: np.ndarray | None, classes: list[str], warns: list[str]
) -> Design:
    """The grids and statistics to compare on, with a warning where some statistics cannot apply."""
    design = build_design(kind, y, p, judge_cont)
    if kind == "nominal":
        y_grid = np.arange(len(classes), dtype=float)
        design = Design(kind, design.metrics, y_grid, y_grid, True, "nominal", classes)
    if kind == "ordinal" and not design.common:
        warns.append(
            f"judge scores take {len(np.unique(p))} distinct values: exact agreement, κ and ordinal α need a "
            "discrete scale, so only MAE, within-1, interval α and correlations are reported"
        )
    reason = _constant_side(y, p)
    if reason:
        warns.append(f"{reason}: κ, correlations and AUC are undefined (null in the report)")
    return design


CHANCE_CORRECTED = ("cohen_kappa", "kappa_linear", "kappa_quadratic", "spearman", "kendall_tau", "pearson", "roc_auc")
"""Statistics that compare each side's variation with the other's: undefined when one side does not vary (κ
would be 0 whatever the other side says, correlations divide by zero, AUC needs both classes)."""


def _constant_side(y: np.ndarray, p: np.ndarray) -> str | None:
    """Why the chance-corrected statistics are undefined on these labels ``y`` and verdicts ``p``, or None."""
    if len(np.unique(y)) < 2:
        return "the human labels hold a single class/value"
    if len(np.unique(p)) < 2:
        return "the judge gave every item the same verdict"
    return None


def _classes(kind: str, human: pd.Series, judge: pd.Series, labels: pd.DataFrame) -> list[str]:
    if kind == "pairwise":
        return list(PAIRWISE_CLASSES)
    if kind == "nominal":
        return sorted({*map(str, labels["label"]), *map(str, judge)})
    return []


def _stats(
    design: Design,
    y: np.ndarray,
    p: np.ndarray,
    judge_cont: np.ndarray | None,
    n_boot: int,
    seed: int,
    units: np.ndarray | None = None,
    n_units: int | None = None,
    ci_method: str = "percentile",
) -> dict[str, Stat]:
    points = point_estimates(design, y, p, judge_cont)
    reps: dict[str, np.ndarray] = {}
    jack: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if n_boot > 0:
        auc_cells = encode_auc_cells(design, y, judge_cont) if judge_cont is not None else None
        cells = encode_cells(design, y, p)
        reps = bootstrap(design, cells, units=units, n_units=n_units, auc_cells=auc_cells, n_boot=n_boot, seed=seed)
        if ci_method == "bca":
            jack = jackknife(design, cells, units=units, n_units=n_units, auc_cells=auc_cells)
    out: dict[str, Stat] = {}
    constant = _constant_side(y, p)
    for name in design.metrics:
        value = points[name]
        if not np.isfinite(value) or (constant and name in CHANCE_CORRECTED):
            why = constant or "no value on these data (a class or a side without variation)"
            out[name] = Stat(value=None, ci_low=None, ci_high=None, undefined=why)
            continue
        if name not in reps:
            lo, hi = None, None
        elif name in jack:
            lo, hi = bca_ci(reps[name], value, jack[name][0], weights=jack[name][1])
        else:
            lo, hi = percentile_ci(reps[name])
        out[name] = Stat(value=None if not np.isfinite(value) else value, ci_low=lo, ci_high=hi)
    return out


def _groups(
    scores: pd.DataFrame, labels: pd.DataFrame, compared: list[str], group: str | None, judge_source: str | None
) -> tuple[str | None, dict[str, str] | None]:
    """The grouping column (given, or MT-Bench's question id) and each compared item's group (None: items)."""
    if group is None:
        group = next((c for c in AUTO_GROUP_COLUMNS if c in scores.columns), None)
        if group is None:
            return None, None
    if group == "id":
        return None, None
    if group in scores.columns:
        values = scores.set_index("id")[group]
    elif group in labels.columns:
        values = labels.drop_duplicates("id").set_index("id")[group]
    else:
        have = ", ".join(c for c in scores.columns if c not in ("line", "score", "status"))
        raise DataError(
            f"no column '{group}' to group the bootstrap by in the judge results (columns: {have})",
            path=judge_source,
            field=group,
        )
    values = values.reindex(compared)
    missing = [i for i, v in values.items() if v is None or (isinstance(v, float) and np.isnan(v))]
    if missing:
        raise DataError(
            f"{len(missing)} compared items have no '{group}' to group them by: {_ids(missing)}",
            path=judge_source,
            field=group,
        )
    return group, {str(i): str(v) for i, v in values.items()}


def _levels(
    scores: pd.DataFrame,
    labels: pd.DataFrame,
    compared: list[str],
    kind: str,
    y: np.ndarray,
    judge: np.ndarray,
    group_of: dict[str, str] | None,
    levels: tuple[str, ...],
    system: str | None,
    n_boot: int,
    seed: int,
    judge_source: str | None,
) -> list[LevelStats]:
    """The summary- and system-level correlations asked for (numeric labels only)."""
    from calibration.levels import LEVELS, summary_level, system_level

    wanted = [lv for lv in levels if lv != "item"]
    for lv in wanted:
        if lv not in LEVELS:
            raise ConfigError(f"--level must be one of {', '.join(LEVELS)}, not '{lv}'")
    if not wanted:
        return []
    if kind not in ("ordinal", "binary"):
        raise ConfigError(f"--level summary/system correlates numeric scores: not for {kind} labels")
    out = []
    boot = max(n_boot, 0)
    if "summary" in wanted:
        if group_of is None:
            raise ConfigError("--level summary needs --group COLUMN: the source document of each item")
        docs = np.array([group_of[i] for i in compared])
        out.append(summary_level(judge, y, docs, n_boot=boot, seed=seed, unit="documents"))
    if "system" in wanted:
        if system is None:
            raise ConfigError("--level system needs --system COLUMN: the system that wrote each item")
        if system in scores.columns:
            values = scores.set_index("id")[system]
        elif system in labels.columns:
            values = labels.drop_duplicates("id").set_index("id")[system]
        else:
            raise DataError(f"no column '{system}' for --system in the judge results", path=judge_source, field=system)
        names = values.reindex(compared)
        missing = [i for i, v in names.items() if v is None or (isinstance(v, float) and np.isnan(v))]
        if missing:
            raise DataError(
                f"{len(missing)} compared items have no '{system}': {_ids(missing)}", path=judge_source, field=system
            )
        out.append(system_level(judge, y, names.astype(str).to_numpy(), n_boot=boot, seed=seed, unit="systems"))
    return out


def _ceiling(
    labels: pd.DataFrame,
    kind: str,
    classes: list[str],
    compared: list[str],
    judge_design: Design,
    n_boot: int,
    seed: int,
    ci_method: str = "percentile",
    group_of: dict[str, str] | None = None,
) -> tuple[dict[str, Stat] | None, int]:
    multi = labels.groupby("id")["annotator"].transform("size") >= 2
    sub = labels[multi]
    if sub.empty:
        return None, 0
    ann_vals: list[Any] = []
    others_vals: list[Any] = []
    units: list[int] = []
    unit_ids: list[str] = []
    for unit, (item, group) in enumerate(sub.groupby("id", sort=True)["label"]):
        unit_ids.append(str(item))
        values = list(group)
        for j, own in enumerate(values):
            rest = values[:j] + values[j + 1 :]
            target = _consensus_of(rest, kind)
            if target is None:
                continue
            ann_vals.append(own)
            others_vals.append(target)
            units.append(unit)
    if len(units) < 2:
        return None, 0
    if kind in ("pairwise", "nominal"):
        index = {c: i for i, c in enumerate(classes)}
        y = np.array([index[v] for v in others_vals], dtype=float)
        p = np.array([index[v] for v in ann_vals], dtype=float)
        grid = np.arange(len(classes), dtype=float)
        base = build_design(kind, y, p)
        design = Design(kind, base.metrics, grid, grid, True, "nominal", classes)
    else:
        y = np.array(others_vals, dtype=float)
        p = np.array(ann_vals, dtype=float)
        design = build_design(kind, y, p)
    unit_arr = np.array(units)
    if group_of is not None:  # cluster bootstrap: the ceiling's items resample with their groups, too
        # an item labelled by people but never judged has no group of its own; it stays its own unit
        codes, _ = group_codes([group_of.get(i, f"item:{i}") for i in unit_ids])
        unit_arr = codes[unit_arr]
    stats = _stats(
        design, y, p, None, n_boot, seed, units=unit_arr, n_units=int(unit_arr.max()) + 1, ci_method=ci_method
    )
    empty = Stat(value=None, ci_low=None, ci_high=None)
    return {name: stats.get(name, empty) for name in judge_design.metrics}, len(units)


def _consensus_of(values: list[Any], kind: str) -> Any:
    if kind == "ordinal":
        return float(np.median(values))
    counts = Counter(values).most_common()
    if len(counts) > 1 and counts[0][1] == counts[1][1]:
        return "tie" if kind == "pairwise" else None
    return counts[0][0]


def _per_class(design: Design, mat: np.ndarray) -> dict[str, ClassStats]:
    out: dict[str, ClassStats] = {}
    for i, name in enumerate(design.class_names):
        tp, support, predicted = mat[i, i], mat[i].sum(), mat[:, i].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * tp / (support + predicted) if support + predicted else 0.0
        out[name] = ClassStats(precision=float(precision), recall=float(recall), f1=float(f1), support=int(support))
    return out


def _disagreements(
    scores: pd.DataFrame,
    labels: pd.DataFrame,
    compared: list[str],
    kind: str,
    classes: list[str],
    y: np.ndarray,
    p: np.ndarray,
    judge_cont: np.ndarray | None,
    human_raw: pd.Series,
    judge_raw: pd.Series,
    limit: int,
) -> list[Disagreement]:
    if limit <= 0:
        return []
    if kind == "pairwise":
        gap = np.where(y == p, 0.0, np.where((y == 2) | (p == 2), 1.0, 2.0))
    elif kind == "nominal":
        gap = (y != p).astype(float)
    elif kind == "binary" and judge_cont is not None:
        gap = np.where(y != p, np.abs(y - judge_cont), 0.0)
    else:
        gap = np.abs(y - p)
    per_item = {str(k): g for k, g in labels.groupby("id")}
    # how sure the humans were: the share of annotators who gave the consensus label
    gold = dict(zip(compared, human_raw, strict=True))
    agree = (labels["label"] == labels["id"].map(gold)).groupby(labels["id"]).mean()
    sure = agree.reindex(compared).fillna(0.0).to_numpy(dtype=float)
    order = np.lexsort((-sure, -gap))
    rows = scores.set_index("id")
    text_cols = [c for c in TEXT_COLUMNS if c in rows.columns]
    out: list[Disagreement] = []
    for k in order[:limit]:
        if gap[k] <= 0:
            break
        item = compared[k]
        annot = per_item[item]
        texts = {}
        for col in text_cols:
            value = rows.at[item, col]
            if isinstance(value, str) and value:
                texts[col] = value if len(value) <= 2000 else value[:2000] + "…"
        out.append(
            Disagreement(
                id=item,
                judge=_plain(judge_raw.iloc[k]),
                human=_plain(human_raw.iloc[k]),
                annotator_labels={str(a): _plain(v) for a, v in zip(annot["annotator"], annot["label"], strict=True)},
                gap=float(gap[k]),
                texts=texts,
            )
        )
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value
