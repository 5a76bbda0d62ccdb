"""Validate a judge against human labels: agreement with bootstrap CIs, the human ceiling, coverage, fits.

Typical use::

    from calibration import calibrate, load_judge_scores, load_human_labels, render_text

    scores = load_judge_scores("qa.verdicts.jsonl")
    labels, label_type = load_human_labels("labels.csv", label_type="ordinal", scale=(1, 5))
    report = calibrate(scores, labels, n_boot=2000, seed=0)
    print(render_text(report))
    report.to_dict()  # the JSON contract: n_items, n_scored, ..., metrics, human_ceiling, warnings
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from calibration.core import calibrate
    from calibration.fit import IsotonicFit, ThresholdFit, fit_isotonic, fit_threshold
    from calibration.labels import LABEL_TYPES, load_human_labels, load_judge_scores, normalise_pairwise
    from calibration.report import CalibrationReport, Stat, render_text

# public name -> module; imported on first use so that `judge calibrate --help` stays cheap
_EXPORTS = {
    "calibrate": "calibration.core",
    "IsotonicFit": "calibration.fit",
    "ThresholdFit": "calibration.fit",
    "fit_isotonic": "calibration.fit",
    "fit_threshold": "calibration.fit",
    "LABEL_TYPES": "calibration.labels",
    "load_human_labels": "calibration.labels",
    "load_judge_scores": "calibration.labels",
    "normalise_pairwise": "calibration.labels",
    "CalibrationReport": "calibration.report",
    "Stat": "calibration.report",
    "render_text": "calibration.report",
}

__all__ = [
    "LABEL_TYPES",
    "CalibrationReport",
    "IsotonicFit",
    "Stat",
    "ThresholdFit",
    "calibrate",
    "fit_isotonic",
    "fit_threshold",
    "load_human_labels",
    "load_judge_scores",
    "normalise_pairwise",
    "render_text",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'calibration' has no attribute '{name}'")
    return getattr(importlib.import_module(module), name)
