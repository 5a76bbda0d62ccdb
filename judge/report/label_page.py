"""The labelling page of ``judge label page``: one self-contained HTML file, no server, no network.

One item at a time (input, context, reference, output; pairwise: both answers side by side, left/right
order drawn from a seed and recorded), the rubric's scale and anchors as buttons, keyboard shortcuts,
progress, a note per item. ``blind`` leaves the judge's verdict and reasoning out of the page entirely.
Labels live in the browser's localStorage under a key derived from the plan, so a reload loses nothing;
"Export" downloads ``labels.csv`` (``id, annotator, label, seconds, order, note``), which ``judge
calibrate --human`` reads as it is (pairwise labels in the plan's A/B terms, whatever side they were shown on).

Safety as in the report: the items travel as JSON inside a non-executed ``<script type="application/json">``
with ``<``, ``>`` and ``&`` escaped, the page script writes every text with ``textContent`` (never
``innerHTML``), and a Content-Security-Policy allows only the page's own style and (hashed) script.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
from typing import Any

from judge.errors import DataError, RubricError

TEXT_FIELDS = ("input", "context", "reference", "output", "output_b")

SCRIPT = r"""
(function () {
  var data = JSON.parse(document.getElementById('items').textContent);
  var items = data.items, choices = data.choices, key = 'judge-label:' + data.key;
  var state = JSON.parse(localStorage.getItem(key) || 'null') || {annotator: data.annotator, labels: {}, pos: 0};
  var shownAt = Date.now();
  function save() { localStorage.setItem(key, JSON.stringify(state)); }
  function el(id) { return document.getElementById(id); }
  function current() { return items[state.pos]; }
  function done() { return items.filter(function (it) { return state.labels[it.id]; }).length; }
  function block(title, text) {
    var box = document.createElement('div'); box.className = 'field';
    var h = document.createElement('h3'); h.textContent = title; box.appendChild(h);
    var pre = document.createElement('pre'); pre.className = 'text'; pre.textContent = text; box.appendChild(pre);
    return box;
  }
  function render() {
    var it = current(), body = el('item');
    body.textContent = '';
    el('item-id').textContent = it.id;
    el('progress').textContent = done() + ' of ' + items.length + ' labelled · item ' + (state.pos + 1);
    ['input', 'context', 'reference'].forEach(function (f) { if (it[f]) body.appendChild(block(f, it[f])); });
    if (data.pairwise) {
      var row = document.createElement('div'); row.className = 'pair';
      row.appendChild(block('left answer (key 1 or a)', it.order === 'AB' ? it.output : it.output_b));
      row.appendChild(block('right answer (key 2 or b)', it.order === 'AB' ? it.output_b : it.output));
      body.appendChild(row);
    } else if (it.output) {
      body.appendChild(block('output', it.output));
    }
    if (!data.blind && it.judge !== undefined && it.judge !== null) {
      body.appendChild(block('judge: ' + it.judge, it.reasoning || ''));
    }
    var got = state.labels[it.id];
    document.querySelectorAll('button.choice').forEach(function (b) {
      b.classList.toggle('chosen', !!got && got.shown === b.dataset.value);
    });
    el('note').value = got ? got.note || '' : '';
    el('annotator').value = state.annotator || '';
    shownAt = Date.now();
  }
  function choose(shown) {
    var it = current(), label = shown;
    if (data.pairwise && shown !== 'tie') {
      var left = shown === 'left';
      label = (left === (it.order === 'AB')) ? 'A' : 'B';
    }
    var before = state.labels[it.id];
    var seconds = (before ? before.seconds : 0) + (Date.now() - shownAt) / 1000;
    state.labels[it.id] = {label: label, shown: shown, seconds: Math.round(seconds * 10) / 10,
                           note: el('note').value, order: it.order || ''};
    save();
    if (state.pos < items.length - 1) state.pos += 1;
    save(); render();
  }
  function move(step) { state.pos = Math.min(items.length - 1, Math.max(0, state.pos + step)); save(); render(); }
  function csvCell(v) {
    var s = String(v === undefined || v === null ? '' : v);
    return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }
  function csv() {
    var lines = ['id,annotator,label,seconds,order,note'];
    items.forEach(function (it) {
      var got = state.labels[it.id];
      if (got) lines.push([it.id, state.annotator || 'anonymous', got.label, got.seconds, got.order, got.note]
        .map(csvCell).join(','));
    });
    return lines.join('\r\n') + '\r\n';
  }
  el('export').addEventListener('click', function () {
    var text = csv();
    el('csv').value = text;
    var a = document.createElement('a');
    a.href = URL.createObjectURL(new Blob([text], {type: 'text/csv'}));
    a.download = 'labels.csv';
    document.body.appendChild(a); a.click(); a.remove();
  });
  el('annotator').addEventListener('input', function () { state.annotator = el('annotator').value; save(); });
  el('note').addEventListener('input', function () {
    var got = state.labels[current().id];
    if (got) { got.note = el('note').value; save(); }
  });
  el('prev').addEventListener('click', function () { move(-1); });
  el('next').addEventListener('click', function () { move(1); });
  document.querySelectorAll('button.choice').forEach(function (b) {
    b.addEventListener('click', function () { choose(b.dataset.value); });
  });
  document.addEventListener('keydown', function (e) {
    if (e.target && (e.target.tagName === 'INPUT' || e.target.tagName === 'TEXTAREA')) return;
    if (e.key === 'n' || e.key === 'ArrowRight') { move(1); return; }
    if (e.key === 'p' || e.key === 'ArrowLeft') { move(-1); return; }
    for (var i = 0; i < choices.length; i++) {
      if (choices[i].keys.indexOf(e.key) >= 0) { choose(choices[i].value); return; }
    }
  });
  render();
})();
"""

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; margin: 0; background: #f6f7f9; }
header.page { background: #26364a; color: #fff; padding: 14px 28px; }
header.page h1 { margin: 0; font-size: 20px; } header.page p { margin: 4px 0 0; color: #c9d3df; font-size: 12px; }
main { background: #fff; margin: 18px 28px; padding: 14px 22px 22px; border-radius: 6px;
       box-shadow: 0 1px 3px rgba(0,0,0,.08); }
h3 { margin: 12px 0 4px; font-size: 14px; color: #26364a; }
pre.text { white-space: pre-wrap; word-break: break-word; background: #f7f7f4; border: 1px solid #e6e4dc;
           padding: 6px 8px; margin: 2px 0 6px; max-height: 360px; overflow: auto; font-size: 13px; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 14px; }
.bar { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; margin: 10px 0; }
button { font: inherit; padding: 5px 12px; border: 1px solid #b9c2cc; border-radius: 4px; background: #f0f2f5;
         cursor: pointer; }
button.choice.chosen { background: #26364a; color: #fff; }
.hint, #progress { color: #666; font-size: 12.5px; }
textarea#note { width: 100%; height: 3em; } textarea#csv { width: 100%; height: 6em; font-size: 12px; }
"""


def _scale(rows: list[dict[str, Any]], rubric: str | None) -> tuple[bool, list[dict[str, Any]], str]:
    """Whether the labels are pairwise, the buttons (value, caption, keys) and the rubric's id."""
    from judge.rubric import load_rubric

    names = {str(r["rubric"]) for r in rows if r.get("rubric")}
    name = rubric or (names.pop() if len(names) == 1 else None)
    if name is None:
        raise RubricError(
            "no rubric to take the scale from: the plan names "
            + ("none" if not names else f"several ({', '.join(sorted(names))})")
            + "; pass --rubric"
        )
    spec = load_rubric(name).spec
    if spec.kind_info.compares_pair:
        return (
            True,
            [
                {"value": "left", "caption": "left is better", "keys": ["1", "a"]},
                {"value": "right", "caption": "right is better", "keys": ["2", "b"]},
                {"value": "tie", "caption": "tie", "keys": ["3", "t"]},
            ],
            spec.id,
        )
    if spec.scale is None:
        raise RubricError(f"rubric '{spec.id}' has no scale to label on")
    points = list(range(spec.scale.min, spec.scale.max + 1))
    buttons = []
    for k in points:
        keys = [str(k)] if 0 <= k <= 9 and len(points) <= 10 else []
        anchor = spec.scale.anchors.get(k)
        buttons.append({"value": str(k), "caption": f"{k}" + (f" — {anchor}" if anchor else ""), "keys": keys})
    return False, buttons, spec.id


def render_label_page(
    rows: list[dict[str, Any]],
    *,
    source: str,
    blind: bool = False,
    rubric: str | None = None,
    annotator: str = "",
    seed: int = 0,
) -> str:
    """The page's HTML for the plan rows (each with ``id`` and the texts; ``_line``: its line in ``source``)."""
    from jinja2 import Environment, PackageLoader, select_autoescape
    from markupsafe import Markup

    pairwise, choices, rubric_id = _scale(rows, rubric)
    rng = random.Random(seed)
    items: list[dict[str, Any]] = []
    seen: set[str] = set()
    for r in rows:
        line = r.get("_line")
        if r.get("id") in (None, ""):
            raise DataError("a plan row has no id", path=source, line=line, field="id")
        item_id = str(r["id"])
        if item_id in seen:
            raise DataError(f"item '{item_id}' is planned twice", path=source, line=line, field="id")
        seen.add(item_id)
        if pairwise and not (r.get("output") and r.get("output_b")):
            raise DataError(
                f"pairwise item '{item_id}' needs both answers (output and output_b); plan with --items",
                path=source,
                line=line,
                field="output_b" if r.get("output") else "output",
            )
        item: dict[str, Any] = {"id": item_id, **{f: str(r[f]) for f in TEXT_FIELDS if r.get(f) not in (None, "")}}
        if not blind:
            item["judge"] = r.get("judge")
            item["reasoning"] = r.get("reasoning") or ""
        if pairwise:
            item["order"] = "AB" if rng.random() < 0.5 else "BA"
        items.append(item)
    key = hashlib.sha256(json.dumps([i["id"] for i in items] + [rubric_id]).encode()).hexdigest()[:16]
    payload = {"items": items, "choices": choices, "pairwise": pairwise, "blind": blind, "key": key}
    payload["annotator"] = annotator
    # a JSON island: no "<", ">" or "&" can close the script element or open another one
    blob = (
        json.dumps(payload, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    )
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode("utf-8")).digest()).decode("ascii")
    env = Environment(
        loader=PackageLoader("judge.report", "templates"),
        autoescape=select_autoescape(["html", "j2"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("label.html.j2").render(
        title=f"label: {rubric_id}",
        source=source,
        n_items=len(items),
        blind=blind,
        choices=choices,
        style=Markup(STYLE),  # noqa: S704 -- our own constant
        data=Markup(blob),  # noqa: S704 -- JSON with <, > and & escaped above
        script=Markup(SCRIPT),  # noqa: S704 -- our own constant
        script_hash=f"sha256-{digest}",
    )
