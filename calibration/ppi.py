"""Prediction-powered inference: many judge scores and a few human labels, one estimate of the *human* mean.

The judge scored every item of a pool; people labelled a subset. The judge-only mean carries the judge's
bias, and the labelled-only mean wastes the judge. PPI++ (Angelopoulos, Duchi & Zrnic 2023, "PPI++:
Efficient Prediction-Powered Inference") combines them::

    theta = lam * mean(f over unlabelled items) + mean(y - lam * f over labelled items)

which is unbiased for the human mean whatever the judge ``f`` is (the labelled items correct its bias), with
a normal 95 % interval from ``var = lam**2 var(f) / M + var(y - lam f) / n`` (``M`` unlabelled items, ``n``
labelled). ``lam`` is power-tuned: ``cov(y, f) / ((1 + n / M) var(f))`` clipped to 0..1, so the interval
is never wider than the labels-only one in the limit (``lam = 0`` *is* the labels-only estimate). The
conventions (the covariance over the labelled items with 1/n, var(f) over all items with 1/(N-1), standard
deviations with 1/n, the normal quantile) are those of the authors' ``ppi-python`` package, which the
tests compare against.

Extensions, all in one estimator (:func:`ppi_mean`):

* **strata**: labels drawn per stratum of the pool (``judge label plan``) -- each stratum gets its own
  PPI estimate, weighted by its share of the pool; one ``lam`` minimises the total variance;
* **groups**: items sharing an article or prompt are not independent: the variance is cluster-robust,
  summing each group's influence (labelled and unlabelled items of one group together) before squaring;
* **paired deltas** (:func:`ppi_delta`): the PPI estimate of ``mean(y_a - y_b)`` from ``f_a - f_b``, labels
  for both systems on the same subset of items;
* **another scale** (:func:`cross_fit_isotonic`): the judge's score mapped to the human scale through an
  isotonic fit on the labels, cross-fitted (each labelled item is mapped by a fit that did not see it; the
  unlabelled items by the average of the fold fits -- cross-prediction-powered inference, Zrnic & Candès
  2024), so the labels that fit the map do not also correct it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, Field

from judge.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

    from calibration.core import _Joined

# PPI's interval needs a variance of the labelled residuals; below this many labels (per estimate) the
# power tuning and the isotonic map are noise, so we refuse rather than print a meaningless interval
MIN_LABELS = 10
# and at least this many labels in each stratum (a variance needs two)
MIN_PER_STRATUM = 2
Z95 = 1.959963984540054
MAPS = ("identity", "isotonic")


class Estimate(BaseModel):
    """A mean with its standard error and normal 95 % interval."""

    value: float
    se: float
    ci_low: float
    ci_high: float


class PPIResult(BaseModel):
    """The human-scale mean three ways, side by side, and what the judge scores were worth."""

    ppi: Estimate = Field(description="Prediction-powered (PPI++) estimate: judge scores corrected by the labels.")
    labelled_only: Estimate = Field(description="The labelled items' human mean alone.")
    judge_only: Estimate = Field(description="The judge's mean over every item (its bias included).")
    lam: float = Field(description="Power-tuning weight of the judge scores (0 = labels only, 1 = plain PPI).")
    n_labelled: int
    n_unlabelled: int
    n_strata: int = 1
    n_groups: int | None = Field(None, description="Clusters of the cluster-robust variance (None: items).")
    effective_labels: float = Field(
        description="How many labels alone would give the PPI interval's width: n * (se labelled-only / se PPI)^2."
    )
    mapping: str = Field("identity", description="How judge scores were put on the human scale.")


@dataclass(frozen=True)
class _Part:
    """One stratum: labelled y and f, unlabelled f, their groups, and the stratum's share of the pool."""

    y: np.ndarray
    f: np.ndarray
    fu: np.ndarray
    g: np.ndarray | None
    gu: np.ndarray | None
    w: float


def _estimate(value: float, se: float) -> Estimate:
    return Estimate(value=float(value), se=float(se), ci_low=float(value - Z95 * se), ci_high=float(value + Z95 * se))


def _se(contrib: list[np.ndarray], groups: list[np.ndarray] | None) -> float:
    """Standard error of a sum of centred per-item influences: squared per item, or per group when grouped
    (cluster-robust, with the G/(G-1) small-sample factor)."""
    a = np.concatenate(contrib)
    if groups is None:
        return float(np.sqrt(np.sum(a**2)))
    codes = np.unique(np.concatenate(groups), return_inverse=True)[1].ravel()
    sums = np.bincount(codes, weights=a)
    n_groups = len(sums)
    factor = n_groups / (n_groups - 1) if n_groups > 1 else 1.0
    return float(np.sqrt(factor * np.sum(sums**2)))


def _tuned_lambda(parts: list[_Part]) -> float:
    """The lam minimising the (stratified) PPI variance, clipped to 0..1."""
    num = den = 0.0
    for p in parts:
        n, m = len(p.y), len(p.fu)
        if m == 0:
            continue  # a stratum labelled in full: its estimate is its labels, whatever lam
        cov = float(np.mean((p.y - p.y.mean()) * (p.f - p.f.mean())))
        var_f = float(np.var(np.concatenate([p.f, p.fu]), ddof=1))
        num += p.w**2 * cov / n
        den += p.w**2 * var_f * (1 / n + 1 / m)
    if den <= 0:
        return 0.0
    return float(np.clip(num / den, 0.0, 1.0))


def _check(y: np.ndarray, f: np.ndarray, fu: np.ndarray, what: str) -> None:
    if len(y) != len(f):
        raise ValueError(f"{what}: {len(y)} labels but {len(f)} judge scores on the labelled items")
    for name, arr in (("labels", y), ("judge scores", f), ("unlabelled judge scores", fu)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{what}: {name} must be finite numbers")


def ppi_mean(
    y: np.ndarray,
    f: np.ndarray,
    f_unlabelled: np.ndarray,
    *,
    lam: float | None = None,
    strata: np.ndarray | None = None,
    strata_unlabelled: np.ndarray | None = None,
    groups: np.ndarray | None = None,
    groups_unlabelled: np.ndarray | None = None,
    mapping: str = "identity",
    seed: int = 0,
    min_labels: int = MIN_LABELS,
) -> PPIResult:
    """The PPI++ estimate of the human mean, beside the labelled-only and judge-only estimates.

    ``y``, ``f``: human value and judge score of the labelled items; ``f_unlabelled``: judge scores of the
    rest of the pool. ``strata``/``strata_unlabelled``: each item's sampling stratum (labels drawn per
    stratum); ``groups``/``groups_unlabelled``: each item's cluster. ``lam`` fixes the power-tuning weight
    (None: tuned). ``mapping="isotonic"`` first puts the judge scores on the human scale with
    :func:`cross_fit_isotonic` (folds drawn from ``seed``, whole groups with ``groups``); the judge-only
    estimate is then the mean of the mapped scores. Raises :class:`DataError` with fewer than ``min_labels``
    labels or a stratum with fewer than two.
    """
    y, f, fu = (np.asarray(a, dtype=float) for a in (y, f, f_unlabelled))
    _check(y, f, fu, "ppi_mean")
    if len(y) < min_labels:
        raise DataError(
            f"prediction-powered estimates need at least {min_labels} labelled items with a judge score "
            f"(the interval needs the variance of the labels' corrections); got {len(y)}"
        )
    if mapping not in MAPS:
        raise ValueError(f"mapping must be one of {', '.join(MAPS)}, not {mapping!r}")
    if mapping == "isotonic":
        f, fu = cross_fit_isotonic(f, y, fu, groups=groups, seed=seed)
    grouped = groups is not None or groups_unlabelled is not None
    g = None if groups is None else np.asarray(groups).astype(str)
    gu = None if groups_unlabelled is None else np.asarray(groups_unlabelled).astype(str)
    if grouped and (g is None or gu is None or len(g) != len(y) or len(gu) != len(fu)):
        raise ValueError("groups must be given for the labelled and the unlabelled items alike")
    if strata is None:
        parts = [_Part(y, f, fu, g, gu, 1.0)]
    else:
        s = np.asarray(strata).astype(str)
        su = np.asarray(strata_unlabelled if strata_unlabelled is not None else []).astype(str)
        if len(s) != len(y) or len(su) != len(fu):
            raise ValueError("strata must be given for the labelled and the unlabelled items alike")
        total = len(y) + len(fu)
        parts = []
        for h in sorted(set(s) | set(su)):
            lab, unl = s == h, su == h
            if lab.sum() < MIN_PER_STRATUM:
                raise DataError(
                    f"stratum '{h}' has {int(lab.sum())} labelled item(s); each stratum needs at least "
                    f"{MIN_PER_STRATUM} for its variance"
                )
            parts.append(
                _Part(
                    y[lab],
                    f[lab],
                    fu[unl],
                    None if g is None else g[lab],
                    None if gu is None else gu[unl],
                    float((lab.sum() + unl.sum()) / total),
                )
            )
    lam_used = _tuned_lambda(parts) if lam is None else float(lam)

    value = lab_value = 0.0
    ppi_terms: list[np.ndarray] = []
    lab_terms: list[np.ndarray] = []
    groups_ppi: list[np.ndarray] = []
    groups_lab: list[np.ndarray] = []
    for p in parts:
        n, m = len(p.y), len(p.fu)
        lam_h = lam_used if m > 0 else 0.0
        resid = p.y - lam_h * p.f
        value += p.w * ((lam_h * p.fu.mean() if m else 0.0) + resid.mean())
        lab_value += p.w * p.y.mean()
        ppi_terms += [p.w * (resid - resid.mean()) / n]
        lab_terms += [p.w * (p.y - p.y.mean()) / n]
        if m:
            ppi_terms += [p.w * lam_h * (p.fu - p.fu.mean()) / m]
        if p.g is not None and p.gu is not None:
            groups_ppi += [p.g, p.gu] if m else [p.g]
            groups_lab += [p.g]
    se_ppi = _se(ppi_terms, groups_ppi if grouped else None)
    se_lab = _se(lab_terms, groups_lab if grouped else None)

    f_all = np.concatenate([f, fu])
    judge_groups = [np.concatenate([g, gu])] if g is not None and gu is not None else None
    se_judge = _se([(f_all - f_all.mean()) / len(f_all)], judge_groups)
    n_groups = len(set(np.concatenate([g, gu]))) if g is not None and gu is not None else None
    effective = len(y) * (se_lab / se_ppi) ** 2 if se_ppi > 0 else float("inf")
    return PPIResult(
        ppi=_estimate(value, se_ppi),
        labelled_only=_estimate(lab_value, se_lab),
        judge_only=_estimate(float(f_all.mean()), se_judge),
        lam=lam_used,
        n_labelled=len(y),
        n_unlabelled=len(fu),
        n_strata=len(parts),
        n_groups=n_groups,
        effective_labels=float(effective),
        mapping=mapping,
    )


def ppi_delta(
    y_a: np.ndarray,
    y_b: np.ndarray,
    f_a: np.ndarray,
    f_b: np.ndarray,
    fu_a: np.ndarray,
    fu_b: np.ndarray,
    **kwargs: object,
) -> PPIResult:
    """PPI for the paired difference of two systems' human means on the same items.

    ``y_a``/``y_b``: human values of both systems' outputs on the labelled items, ``f_a``/``f_b`` the judge's on
    the same items, ``fu_a``/``fu_b`` the judge's on the unlabelled items (same order for both systems). The
    per-item difference is one variable, so the labels correct the judge's *relative* bias, and the paired
    design cancels what the items share. Keyword arguments as for :func:`ppi_mean`.
    """
    arrays = [np.asarray(a, dtype=float) for a in (y_a, y_b, f_a, f_b, fu_a, fu_b)]
    if len(arrays[0]) != len(arrays[1]) or len(arrays[2]) != len(arrays[3]) or len(arrays[4]) != len(arrays[5]):
        raise ValueError("ppi_delta: both systems need values on the same items")
    return ppi_mean(arrays[0] - arrays[1], arrays[2] - arrays[3], arrays[4] - arrays[5], **kwargs)  # type: ignore[arg-type]


def cross_fit_isotonic(
    f: np.ndarray,
    y: np.ndarray,
    f_unlabelled: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    n_splits: int = 5,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Judge scores mapped to the human scale by isotonic fits, cross-fitted.

    Returns ``(mapped labelled, mapped unlabelled)``: each labelled item is mapped by the fit on the other
    folds, each unlabelled item by the mean of the fold fits. With ``groups`` the folds keep groups whole,
    so no group both fits a map and is corrected by it.
    """
    from sklearn.isotonic import IsotonicRegression
    from sklearn.model_selection import GroupKFold, KFold

    f, y, fu = (np.asarray(a, dtype=float) for a in (f, y, f_unlabelled))
    if groups is not None:
        k = min(n_splits, len(set(np.asarray(groups).astype(str))))
        if k < 2:
            raise DataError("the isotonic map needs labelled items in at least 2 groups to cross-fit")
        folds = GroupKFold(k).split(f, y, np.asarray(groups).astype(str))
    else:
        k = max(2, min(n_splits, len(f) // 2))
        folds = KFold(k, shuffle=True, random_state=seed).split(f)
    mapped = np.empty(len(f))
    unl = np.zeros(len(fu))
    for train, test in folds:
        model = IsotonicRegression(out_of_bounds="clip").fit(f[train], y[train])
        mapped[test] = model.predict(f[test])
        unl += model.predict(fu) / k if len(fu) else 0.0
    return mapped, unl


# ------------------------------------------------------------------------------------------ judge calibrate

# what the human-scale mean is, per label type; pairwise labels count model A's wins, a tie as half
ESTIMANDS = {
    "ordinal": "mean human label",
    "binary": "share of positive human labels",
    "pairwise": "human win rate of A (a tie counts 1/2)",
}
PPI_MODES = ("auto", "on", "off")
_PAIRWISE_VALUE = {"A": 1.0, "B": 0.0, "tie": 0.5}


class PPISection(PPIResult):
    """PPI as ``judge calibrate`` reports it: the estimate, and what it estimates."""

    estimand: str = Field(description="What the human-scale mean is (a mean label, a share, a win rate).")


def numeric_verdicts(values: pd.Series) -> np.ndarray:
    """Judge verdicts as numbers on the human scale: numbers as they are, pairwise labels A/B/tie as 1/0/0.5,
    unscored as NaN."""
    from calibration.labels import normalise_pairwise

    out = np.full(len(values), np.nan)
    for k, v in enumerate(values):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            continue
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            label = normalise_pairwise(v)
            if label is not None:
                out[k] = _PAIRWISE_VALUE[label]
    return out


def human_scale(values: pd.Series, kind: str) -> np.ndarray:
    """Labels or judge verdicts as numbers whose mean is the estimand: pairwise A/B/tie as 1/0/0.5."""
    if kind == "pairwise":
        return np.array([_PAIRWISE_VALUE[v] for v in values], dtype=float)
    return np.asarray(values.to_numpy(), dtype=float)


def ppi_section(
    scores: pd.DataFrame,
    joined: _Joined,
    kind: str,
    group: str | None,
    *,
    mode: str = "auto",
    mapping: str = "auto",
    seed: int = 0,
    labels_source: str | None = None,
    plan: tuple[str, list[dict[str, Any]]] | None = None,
) -> PPISection | None:
    """The prediction-powered estimate for ``judge calibrate``: labelled = the compared items, unlabelled = the
    judge's scored items nobody labelled. None when ``mode`` is off, the labels are nominal, or (``auto``) the
    judge scored fewer than :data:`MIN_LABELS` unlabelled items. ``plan``: the path and rows of a ``judge label
    plan`` file: the labels were drawn per stratum, so the estimate is the stratified one."""
    from calibration.labels import judge_values

    if mode not in PPI_MODES:
        raise ValueError(f"ppi must be one of {', '.join(PPI_MODES)}, not {mode!r}")
    if plan is not None and mode == "auto":
        mode = "on"  # labels drawn by a plan are there to correct the judge
    if mode == "off":
        return None
    if kind not in ESTIMANDS:
        if mode == "on":
            raise DataError(f"prediction-powered estimates need numeric labels (ordinal, binary, pairwise), not {kind}")
        return None
    scored = scores[scores["score"].notna()]
    labelled = set(joined.labels["id"])
    pool = [str(i) for i in scored["id"] if i not in labelled]
    if mode == "auto" and len(pool) < MIN_LABELS:
        return None
    if joined.unmatched:
        raise DataError(
            f"{len(joined.unmatched)} labelled id(s) are not among the judge's items, so the labels are not a "
            f"sample of the judged pool: {', '.join(joined.unmatched[:20])}"
            + (", …" if len(joined.unmatched) > 20 else ""),
            path=labels_source,
            field="id",
        )
    values, _ = judge_values(scored.set_index("id")["score"], kind)
    compared = list(joined.compared)
    strata = strata_u = None
    if plan is not None:
        strata, strata_u = _plan_strata(scored, compared, pool, plan, labels_source)
    y = human_scale(joined.human_raw, kind)
    f = human_scale(values.loc[compared], kind)
    fu = human_scale(values.loc[pool], kind)
    if mapping == "auto":
        continuous = kind == "binary" and not set(np.unique(np.concatenate([f, fu]))) <= {0.0, 1.0}
        mapping = "isotonic" if continuous else "identity"
    g = gu = None
    if group is not None:
        if group not in scores.columns:
            raise DataError(
                f"the group column '{group}' must be in the judge results for the prediction-powered estimate "
                "(the unlabelled items need their groups too)",
                field=group,
            )
        of = scores.set_index("id")[group].astype(str)
        g, gu = of.loc[compared].to_numpy(), of.loc[pool].to_numpy()
    result = ppi_mean(
        y, f, fu, groups=g, groups_unlabelled=gu, strata=strata, strata_unlabelled=strata_u, mapping=mapping, seed=seed
    )
    return PPISection(**result.model_dump(), estimand=ESTIMANDS[kind])


def _plan_strata(
    scored: pd.DataFrame,
    compared: list[str],
    pool: list[str],
    plan: tuple[str, list[dict[str, Any]]],
    labels: str | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Every labelled and unlabelled item's stratum under a ``judge label plan`` file's rule, after checking that
    the labels come from the plan and the plan from these verdicts."""
    from calibration.plan import assign, strata_from_plan, uncertainty

    path, rows = plan
    on, edges = strata_from_plan(rows, path)
    planned = {str(r.get("id")) for r in rows}
    stray = [i for i in compared if i not in planned]
    if stray:
        raise DataError(
            f"{len(stray)} labelled item(s) are not in the plan, so the plan's sampling weights do not cover them: "
            + ", ".join(stray[:20])
            + (", …" if len(stray) > 20 else ""),
            path=labels,
            field="id",
        )
    by_id = scored.set_index("id")
    if on == "uncertainty":
        var = np.array([uncertainty(r) if uncertainty(r) is not None else np.nan for r in scored.to_dict("records")])
    elif on == "score":
        var = numeric_verdicts(scored["score"])
    else:
        var = np.zeros(len(scored))
    if np.isnan(var).any():
        raise DataError(f"the plan stratifies on the judge's {on}, which some scored items lack", path=path)
    stratum = dict(zip(by_id.index.astype(str), assign(var, edges), strict=True))
    recorded = {int(r["stratum"]): int(r["stratum_size"]) for r in rows if "stratum" in r and "stratum_size" in r}
    counts = Counter(stratum.values())
    for h, size in recorded.items():
        if counts.get(h, 0) != size:
            raise DataError(
                f"stratum {h} of the plan held {size} items, these verdicts put {counts.get(h, 0)} in it: "
                "the plan was drawn from other verdicts",
                path=path,
                field="stratum_size",
            )
    return np.array([stratum[i] for i in compared]), np.array([stratum[i] for i in pool])
