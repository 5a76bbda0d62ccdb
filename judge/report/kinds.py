"""The kinds of result a report reads, in the order they are told apart: one module each.

Each module (:mod:`judge.report.eval`, :mod:`~judge.report.calibration`, :mod:`~judge.report.mtbench`,
:mod:`~judge.report.verdicts`) holds its ``detect``, ``load`` and ``html`` (the section builder), and
``from_object`` or ``text`` where it has them, and declares them as one :class:`ReportKind`. A new kind is a
new module and one line here. Text reports of eval runs and calibrations stay with their result types
(``judge.eval.render``, ``calibration.report.render_text``): those packages sit above this one.
"""

from __future__ import annotations

from judge.report import calibration, eval, mtbench, verdicts
from judge.report.section import ReportKind

KINDS: tuple[ReportKind, ...] = (eval.KIND, calibration.KIND, mtbench.KIND, verdicts.KIND)
"""Every report kind; the first whose ``detect`` accepts a file's contents reads it."""
