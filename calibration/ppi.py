"""The prediction-powered estimate in ``judge calibrate``: which items are labelled, on which scale, in which
strata and groups. The estimator itself is :mod:`judge.ppi`."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from judge.errors import DataError
from judge.ppi import MIN_LABELS, PPIResult, ppi_mean
from judge.verdict import PAIRWISE_SCORE  # A 1, B 0, tie 0.5: pairwise verdicts' own numbers

if TYPE_CHECKING:
    import pandas as pd

    from calibration.core import _Joined


# ------------------------------------------------------------------------------------------ judge calibrate

# what the human-scale mean is, per label type; pairwise labels count model A's wins, a tie as half
ESTIMANDS = {
    "ordinal": "mean human label",
    "binary": "share of positive human labels",
    "pairwise": "human win rate of A (a tie counts 1/2)",
}
PPI_MODES = ("auto", "on", "off")


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
                out[k] = PAIRWISE_SCORE[label]
    return out


def human_scale(values: pd.Series, kind: str) -> np.ndarray:
    """Labels or judge verdicts as numbers whose mean is the estimand: pairwise A/B/tie as 1/0/0.5."""
    if kind == "pairwise":
        return np.array([PAIRWISE_SCORE[v] for v in values], dtype=float)
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
    if mode == "auto" and group is not None and group not in scores.columns:
        return None  # the unlabelled items have no group: no estimate rather than a wrong interval
    if joined.unmatched:
        raise DataError(
            f"{len(joined.unmatched)} labelled id(s) are not among the judge's items, so the labels are not a "
            f"sample of the judged pool: {', '.join(joined.unmatched[:20])}"
            + (", …" if len(joined.unmatched) > 20 else "")
            + " (remove them, or pass --ppi off for the agreement statistics alone)",
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
