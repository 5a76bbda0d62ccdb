"""Reports people look at: one self-contained HTML file for any result this project writes.

    >>> import judge
    >>> html = judge.report("runs/eval-suite", "qa.verdicts.jsonl", out="report.html")

Inputs (one section each): a ``judge score`` verdict JSONL, a ``judge eval`` output folder (or its
``results.json``), a ``judge calibrate --json`` file, an MT-Bench judgment JSONL; in Python also an
``EvalResult``, a ``CalibrationReport``, or a list of verdicts. The page holds inline SVG plots (drawn
here, no matplotlib), inline CSS and a small inline script, and a Content-Security-Policy that lets
nothing load from outside; every model text goes through Jinja2's autoescaping.

The module is callable: ``judge.report(...)`` is :func:`build`. Each kind of result is one module here,
listed in :mod:`judge.report.kinds`; :mod:`judge.report.section` holds what they share. Text renderers stay
beside their result types (``calibration.report.render_text``, ``judge.mtbench.results.render``,
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
    from judge.report.section import Section

__all__ = ["build", "load_section", "render_html"]


def _contents(path: Path) -> Any:
    """What a result file holds: a .json file's value (a list keeps its objects only), else its records."""
    if path.suffix == ".json":
        data = parse_json(path.read_text(encoding="utf-8"), path)
        return [d for d in data if isinstance(d, dict)] if isinstance(data, list) else data
    from judge.io import read_rows

    return [r.data for r in read_rows(path)]


def _unknown(data: Any, source: str | Path) -> DataError:
    """The error for contents no kind detects: worded for a JSON object or for records."""
    if not isinstance(data, list):
        return DataError("not a judge eval results.json nor a judge calibrate --json report", path=source)
    if not data:
        return DataError("nothing to report: the file holds no records", path=source)
    return DataError(
        "not a result this report knows: expected judge score verdicts (rubric_hash, status, score) or MT-Bench "
        "judgments (question_id, model or model_1/model_2)",
        path=source,
    )


def _section_of(data: Any, source: str, items: str | Path | None) -> Section:
    """The section of a result's contents by the first kind that detects them."""
    from judge.report.kinds import KINDS

    for kind in KINDS:
        if kind.detect(data):
            return kind.load(data, source, items)
    raise _unknown(data, source)


def _result_file(path: Path) -> Path:
    """The file to read for a path given to the report: a `judge eval` output folder means its results.json."""
    if path.is_dir():
        if not (path / "results.json").exists():
            raise DataError("a folder given to report must be a `judge eval` output (results.json)", path=path)
        path = path / "results.json"
    if not path.exists():
        raise DataError("no such file or folder", path=path)
    return path


def load_section(source: Any, *, items: str | Path | None = None) -> Section:
    """The report section of one input (a path or a result object); the kind is told by its fields (see
    :mod:`judge.report.kinds`)."""
    from judge.report.kinds import KINDS

    if isinstance(source, str | Path):
        path = _result_file(Path(source))
        return _section_of(_contents(path), str(path), items)
    for kind in KINDS:
        section = kind.from_object(source) if kind.from_object is not None else None
        if section is not None:
            return section
    if isinstance(source, Iterable):
        rows = [r.model_dump(mode="json") if hasattr(r, "model_dump") else dict(r) for r in source]
        return _section_of(rows, "verdicts", items)
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
