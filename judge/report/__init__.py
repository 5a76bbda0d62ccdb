"""Reports people look at: one self-contained HTML file for any result this project writes.

    >>> import judge
    >>> html = judge.report("runs/eval-suite", "qa.verdicts.jsonl", out="report.html")

Inputs (one section each): a ``judge score`` verdict JSONL, a ``judge eval`` output folder (or its
``results.json``), a ``judge calibrate --json`` file, an MT-Bench judgment JSONL; in Python also an
``EvalResult``, a ``CalibrationReport``, or a list of verdicts. The page holds inline SVG plots (drawn
here, no matplotlib), inline CSS and a small inline script, and a Content-Security-Policy that lets
nothing load from outside; every model text goes through Jinja2's autoescaping.

The module is callable: ``judge.report(...)`` is :func:`build`. Text renderers stay beside their
result types (``calibration.report.render_text``, ``judge.mtbench.results.render``,
``judge.eval.render``); all of them share :mod:`judge.textfmt`.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import sys
import types
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from judge.errors import DataError
from judge.io import package_versions, parse_json

if TYPE_CHECKING:
    from judge.report.eval import Section

__all__ = ["build", "load_section", "render_html"]


def _jsonl(path: Path) -> list[dict[str, Any]]:
    from judge.io import read_rows

    return [r.data for r in read_rows(path)]


def _detect_rows(rows: list[dict[str, Any]], source: str, items: str | Path | None) -> Section:
    from judge.report import eval as sections

    if not rows:
        raise DataError("nothing to report: the file holds no records", path=source)
    first = rows[0]
    if "question_id" in first and ("model" in first or "model_1" in first):
        singles = [r for r in rows if "model" in r and "score" in r]
        pairs = [r for r in rows if "model_1" in r and "model_2" in r]
        return sections.mtbench_section(singles, pairs, source)
    if "rubric_hash" in first and "status" in first and "score" in first:
        return sections.verdicts_section(rows, source, items)
    raise DataError(
        "not a result this report knows: expected judge score verdicts (rubric_hash, status, score) or MT-Bench "
        "judgments (question_id, model or model_1/model_2)",
        path=source,
    )


def load_section(source: Any, *, items: str | Path | None = None) -> Section:
    """The report section of one input (a path or a result object); the kind is told by its fields."""
    from judge.report import eval as sections

    if isinstance(source, str | Path):
        path = Path(source)
        if path.is_dir():
            if not (path / "results.json").exists():
                raise DataError("a folder given to report must be a `judge eval` output (results.json)", path=path)
            path = path / "results.json"
        if not path.exists():
            raise DataError("no such file or folder", path=path)
        if path.suffix == ".json":
            data = parse_json(path.read_text(encoding="utf-8"), path)
            if isinstance(data, dict) and "deltas" in data and "systems" in data:
                folder = path.parent
                scores = _jsonl(folder / "scores.jsonl") if (folder / "scores.jsonl").exists() else []
                review = _jsonl(folder / "review.jsonl") if (folder / "review.jsonl").exists() else []
                return sections.eval_section(data, scores, review, str(folder))
            if isinstance(data, dict) and "label_type" in data and "metrics" in data:
                return sections.calibration_section(data, str(path))
            if isinstance(data, list):
                return _detect_rows([d for d in data if isinstance(d, dict)], str(path), items)
            raise DataError("not a judge eval results.json nor a judge calibrate --json report", path=path)
        return _detect_rows(_jsonl(path), str(path), items)
    if hasattr(source, "deltas") and hasattr(source, "to_dict"):  # judge.eval.run.EvalResult
        from judge.io import json_safe

        scores, review = json_safe(source.scores), json_safe(source.review)
        return sections.eval_section(source.to_dict(), scores, review, "judge.evaluate()")
    if hasattr(source, "label_type") and hasattr(source, "to_dict"):  # calibration.report.CalibrationReport
        return sections.calibration_section(source.to_dict(), "calibration.calibrate()")
    if isinstance(source, dict):
        if "deltas" in source:
            return sections.eval_section(source, [], [], "dict")
        if "label_type" in source:
            return sections.calibration_section(source, "dict")
    if isinstance(source, Iterable):
        rows = [r.model_dump(mode="json") if hasattr(r, "model_dump") else dict(r) for r in source]
        return _detect_rows(rows, "verdicts", items)
    raise DataError(f"cannot make a report from a {type(source).__name__}")


SCRIPT = """
document.querySelectorAll('table.review').forEach(function (table) {
  var body = table.tBodies[0];
  table.querySelectorAll('th[data-col]').forEach(function (th) {
    th.addEventListener('click', function () {
      var col = +th.dataset.col, asc = th.dataset.dir !== 'asc';
      th.dataset.dir = asc ? 'asc' : 'desc';
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[col].dataset.sort, y = b.cells[col].dataset.sort;
        var nx = parseFloat(x), ny = parseFloat(y);
        var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
  var input = table.parentNode.querySelector('input.filter');
  if (input) {
    input.addEventListener('input', function () {
      var q = input.value.toLowerCase(), shown = 0;
      Array.prototype.forEach.call(body.rows, function (r) {
        var hit = !q || r.textContent.toLowerCase().indexOf(q) !== -1;
        r.hidden = !hit; shown += hit;
      });
      table.parentNode.querySelector('.count').textContent = shown + ' shown';
    });
  }
});
""".strip()


def render_html(sections: list[Section], *, title: str = "judge report") -> str:
    """The page: one template, autoescaped; a CSP that allows only this page's own style and script."""
    from jinja2 import Environment, PackageLoader, select_autoescape
    from markupsafe import Markup

    env = Environment(
        loader=PackageLoader("judge.report", "templates"),
        autoescape=select_autoescape(["html", "j2"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode("utf-8")).digest()).decode("ascii")
    template = env.get_template("report.html.j2")
    return template.render(
        title=title,
        sections=sections,
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        versions={"python": sys.version.split()[0], **package_versions("judge", "jinja2", "numpy", "scipy")},
        script=Markup(SCRIPT),  # noqa: S704 -- our own constant, not data
        script_hash=f"sha256-{digest}",
        svg=Markup,  # plots are built by judge.report.svg, which escapes every text it places
    )


def build(
    *inputs: Any,
    out: str | Path | None = None,
    items: str | Path | None = None,
    title: str | None = None,
) -> str:
    """Build one HTML report from one or more results (paths or objects); write it to ``out`` when given.

    ``items``: the data file given to ``judge score``, whose texts are shown next to the verdicts and used
    for the length-bias plot. Returns the HTML.
    """
    if not inputs:
        raise DataError("nothing to report: give at least one result")
    sections = [load_section(x, items=items) for x in inputs]
    kinds = Counter(s.kind for s in sections)  # one name per kind: "verdicts (2)", never "verdicts, verdicts"
    default = "judge report: " + ", ".join(k if n == 1 else f"{k} ({n})" for k, n in kinds.items())
    html = render_html(sections, title=title or default)
    if out is not None:
        from judge.io import atomic_write_text

        atomic_write_text(out, html)
    return html


class _CallableModule(types.ModuleType):
    """``judge.report(...)`` calls :func:`build` while ``judge.report`` stays this package."""

    def __call__(self, *inputs: Any, **kw: Any) -> str:
        return build(*inputs, **kw)


sys.modules[__name__].__class__ = _CallableModule
