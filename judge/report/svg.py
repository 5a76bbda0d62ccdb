"""Plots as inline SVG strings, drawn without matplotlib so a report needs no extra and no network.

Every text that reaches the SVG (metric, system and model names come from user files) is escaped
here; the functions return markup that the template inserts as is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from judge.textfmt import fmt

PALETTE = ["#3b6ea8", "#d9822b", "#3f9a5b", "#b5433b", "#7d5ba6", "#8c6d4f", "#c65f9f", "#6f7378"]
FONT = 'font-family="system-ui, sans-serif" font-size="11"'


def color(i: int) -> str:
    """The i-th series colour (cycled)."""
    return PALETTE[i % len(PALETTE)]


def _svg(width: int, height: int, body: list[str], label: str) -> str:
    return (
        f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}" {FONT}>'
        f"<title>{escape(label)}</title>{''.join(body)}</svg>"
    )


def _text(x: float, y: float, s: Any, anchor: str = "start", extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" {extra}>{escape(str(s))}</text>'


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering [lo, hi]."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _span(values: Sequence[float]) -> tuple[float, float]:
    """The range of ``values``, widened by 1 on each side when they are all equal (an axis needs a length)."""
    lo, hi = min(values), max(values)
    return (lo - 1, hi + 1) if hi == lo else (lo, hi)


def _frame(
    x: tuple[float, float],
    y: tuple[float, float],
    size: tuple[int, int],
    margins: tuple[int, int, int, int],
    labels: tuple[str, str],
    *,
    y_digits: int = 2,
    xlabel_y: float | None = None,
) -> tuple[Any, Any, list[str]]:
    """The axes of an x-y plot: (sx, sy, body) -- data-to-pixel maps, and the box, ticks and axis labels."""
    (x0, x1), (y0, y1), (width, height), (left, right, top, bottom) = x, y, size, margins
    pw, ph = width - left - right, height - top - bottom

    def sx(v: float) -> float:
        return left + (v - x0) / (x1 - x0) * pw

    def sy(v: float) -> float:
        return top + ph - (v - y0) / (y1 - y0) * ph

    body = [f'<rect class="box" x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#ccc"/>']
    for t in _ticks(x0, x1, 5):
        body.append(_text(sx(t), top + ph + 14, fmt(float(t), 2), "middle", 'fill="#666"'))
    for t in _ticks(y0, y1, 4):
        body.append(_text(left - 4, sy(t) + 4, fmt(float(t), y_digits), "end", 'fill="#666"'))
    body.append(_text(left + pw / 2, height - 4 if xlabel_y is None else xlabel_y, labels[0], "middle"))
    body.append(_text(12, top + ph / 2, labels[1], "middle", f'transform="rotate(-90 12 {top + ph / 2})"'))
    return sx, sy, body


def _quantile(ordered: Sequence[float], q: float) -> float:
    """The q-quantile of sorted values, interpolated linearly between order statistics (numpy's default)."""
    pos = q * (len(ordered) - 1)
    k = int(pos)
    return ordered[k] + (ordered[min(k + 1, len(ordered) - 1)] - ordered[k]) * (pos - k)


def robust_range(values: Sequence[float], factor: float = 4.0) -> tuple[float, float] | None:
    """The 1st–99th percentile range of ``values`` when a few outliers stretch the full range more than
    ``factor`` times wider than it (a histogram over the full range would squeeze the rest into a bin or two);
    None when the full range is fine."""
    if len(values) < 20:
        return None
    ordered = sorted(values)
    lo, hi = _quantile(ordered, 0.01), _quantile(ordered, 0.99)
    if hi <= lo or ordered[-1] - ordered[0] <= factor * (hi - lo):
        return None
    return lo, hi


def _bins(
    values: Sequence[float], domain: tuple[float, float] | None, bins: int
) -> tuple[list[float], tuple[float, float], bool, int]:
    """A histogram's shared bin edges: one bin per value when every value in range is a whole number (a score
    scale), else ``bins`` equal ones over the range (``domain``, or the data's). Also the range, whether it is
    such an integer scale, and how many values lie outside ``domain`` (they go in the end bins)."""
    lo, hi = domain if domain is not None else (min(values), max(values))
    outside = sum(v < lo or v > hi for v in values) if domain is not None else 0
    inside = [v for v in values if lo <= v <= hi]
    integral = all(float(v).is_integer() for v in inside) and float(lo).is_integer() and hi - lo <= 40
    integral = integral and float(hi).is_integer() and bool(inside)
    if integral:
        return [lo - 0.5 + i for i in range(int(hi - lo) + 2)], (lo, hi), True, outside
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    return [lo + (hi - lo) * i / bins for i in range(bins + 1)], (lo, hi), False, outside


def _shares(series: Mapping[str, Sequence[float]], edges: list[float]) -> dict[str, list[float]]:
    """Each series' share of its values per bin (values beyond the edges in the end bins), so that series
    with different counts compare."""
    nb = len(edges) - 1
    counts: dict[str, list[float]] = {}
    for name, vs in series.items():
        c = [0.0] * nb
        for v in vs:
            k = min(nb - 1, max(0, int((v - edges[0]) / (edges[-1] - edges[0]) * nb)))
            c[k] += 1
        total = sum(c) or 1.0
        counts[name] = [x / total for x in c]
    return counts


def histogram(
    series: Mapping[str, Sequence[float]],
    label: str,
    bins: int = 20,
    width: int = 420,
    *,
    domain: tuple[float, float] | None = None,
    colors: dict[str, str] | None = None,
) -> str:
    """Overlaid histograms (one outline per series) on shared bins; integer scores get one bin per value.

    ``domain``: the x-axis range (a rubric's scale, or a clipped range from :func:`robust_range`) instead of
    the data's; values outside it are counted in the end bins, and the plot says how many. ``colors``: a
    colour per series name (so a model keeps its colour across plots); else the palette in order.
    """
    values = [v for vs in series.values() for v in vs]
    height, left, right, top, bottom = 190, 40, 10, 22, 28
    if not values:
        return _svg(width, 60, [_text(10, 30, "no scored items")], label)
    edges, (lo, hi), integral, outside = _bins(values, domain, bins)
    nb = len(edges) - 1
    counts = _shares(series, edges)
    ymax = max(max(c) for c in counts.values()) or 1.0
    pw, ph = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (x - edges[0]) / (edges[-1] - edges[0]) * pw

    def sy(y: float) -> float:
        return top + ph - y / ymax * ph

    body = [f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#888"/>']
    for t in _ticks(0, ymax, 4):
        body.append(_text(left - 4, sy(t) + 4, f"{t:.0%}", "end", 'fill="#666"'))
    xt = [lo + i for i in range(int(hi - lo) + 1)] if integral and hi - lo <= 12 else _ticks(edges[0], edges[-1], 6)
    for t in xt:
        body.append(_text(sx(t), top + ph + 14, fmt(float(t), 2), "middle", 'class="xtick" fill="#666"'))
    n_series = len(counts)
    bw = pw / nb / max(1, n_series)
    for i, (name, c) in enumerate(counts.items()):
        fill = (colors or {}).get(name) or color(i)
        for k, share in enumerate(c):
            if share:
                x = sx(edges[k]) + i * bw
                body.append(
                    f'<rect x="{x:.1f}" y="{sy(share):.1f}" width="{max(bw - 1, 1):.1f}" '
                    f'height="{top + ph - sy(share):.1f}" fill="{fill}" fill-opacity="0.8">'
                    f"<title>{escape(name)}: {share:.1%}</title></rect>"
                )
        body.append(
            f'<rect class="legend" x="{left + 4 + i * 110}" y="4" width="10" height="10" fill="{fill}">'
            f"<title>{escape(name)}</title></rect>"
        )
        body.append(_text(left + 18 + i * 110, 13, name[:16]))
    if outside:
        body.append(
            _text(
                left + pw,
                top + 10,
                f"{outside} value{'s' * (outside > 1)} outside, in the end bins",
                "end",
                'class="clipped" fill="#b5433b"',
            )
        )
    return _svg(width, height, body, label)


def forest(rows: Sequence[dict[str, Any]], label: str, width: int = 640) -> str:
    """A forest plot: one row per (metric, system) with its delta and CI, drawn as a share of the metric's range.

    Each row dict has ``name``, ``value``, ``lo``, ``hi``, ``span`` (the metric's range width, or None:
    then the row's own largest absolute value scales it) and ``better`` (+1 when higher is better, -1 when
    lower is). Deltas are drawn so that right is always better.
    """
    row_h, top, left, right = 26, 24, 190, 150
    height = top + row_h * len(rows) + 24
    pw = width - left - right
    scaled = []
    for r in rows:
        vals = [r[k] for k in ("value", "lo", "hi") if r.get(k) is not None]
        span = r.get("span") or (max((abs(v) for v in vals), default=1.0) or 1.0)
        sign = r.get("better", 1)
        scaled.append([None if r.get(k) is None else sign * r[k] / span for k in ("value", "lo", "hi")])
    ext = max([abs(v) for s in scaled for v in s if v is not None] + [0.01]) * 1.1

    def sx(x: float) -> float:
        return left + (x + ext) / (2 * ext) * pw

    zero = sx(0)
    body = [
        f'<line x1="{zero:.1f}" y1="{top - 6}" x2="{zero:.1f}" y2="{height - 20}" stroke="#999" '
        'stroke-dasharray="3,3"/>',
        _text(left, top - 10, "← worse than baseline", "start", 'fill="#666"'),
        _text(left + pw, top - 10, "better →", "end", 'fill="#666"'),
    ]
    for i, (r, (v, lo, hi)) in enumerate(zip(rows, scaled, strict=True)):
        y = top + i * row_h + row_h / 2
        body.append(_text(left - 8, y + 4, r["name"], "end"))
        shown = "-" if r.get("value") is None else fmt(r["value"], 3)
        if r.get("lo") is not None:
            shown += f" [{fmt(r['lo'], 3)}, {fmt(r['hi'], 3)}]"
        body.append(_text(left + pw + 8, y + 4, shown, "start", 'fill="#333"'))
        if lo is not None and hi is not None:
            a, b = sorted((lo, hi))
            body.append(f'<line x1="{sx(a):.1f}" y1="{y:.1f}" x2="{sx(b):.1f}" y2="{y:.1f}" stroke="#333"/>')
        if v is not None:
            sig = lo is not None and hi is not None and (min(lo, hi) > 0 or max(lo, hi) < 0)
            fill = ("#3f9a5b" if v > 0 else "#b5433b") if sig else "#777"
            body.append(f'<circle cx="{sx(v):.1f}" cy="{y:.1f}" r="4.5" fill="{fill}"/>')
    body.append(_text(left + pw / 2, height - 6, "delta as a share of the metric's range", "middle", 'fill="#666"'))
    return _svg(width, height, body, label)


def heatmap(labels: Sequence[str], matrix: Sequence[Sequence[int]], label: str) -> str:
    """A confusion-matrix heatmap: rows human, columns judge, counts in the cells."""
    n = len(labels)
    cell = max(26, min(48, 360 // max(n, 1)))
    left, top = 70, 40
    width, height = left + cell * n + 20, top + cell * n + 30
    vmax = max((c for row in matrix for c in row), default=0) or 1
    body = [
        _text(left + cell * n / 2, 12, "judge →", "middle", 'fill="#666"'),
        _text(
            12, top + cell * n / 2, "human ↓", "middle", f'fill="#666" transform="rotate(-90 12 {top + cell * n / 2})"'
        ),
    ]
    for j, name in enumerate(labels):
        body.append(_text(left + j * cell + cell / 2, top - 6, name[:8], "middle"))
        body.append(_text(left - 6, top + j * cell + cell / 2 + 4, name[:10], "end"))
    for i, row in enumerate(matrix):
        for j, c in enumerate(row):
            share = c / vmax
            body.append(
                f'<rect x="{left + j * cell}" y="{top + i * cell}" width="{cell - 1}" height="{cell - 1}" '
                f'fill="rgb({int(255 - 196 * share)},{int(255 - 145 * share)},{int(255 - 87 * share)})">'
                f"<title>human {escape(labels[i])}, judge {escape(labels[j])}: {c}</title></rect>"
            )
            body.append(
                _text(
                    left + j * cell + cell / 2,
                    top + i * cell + cell / 2 + 4,
                    c,
                    "middle",
                    'fill="#fff"' if share > 0.6 else 'fill="#222"',
                )
            )
    return _svg(width, height, body, label)


def scatter(
    points: Sequence[tuple[float, float]],
    label: str,
    *,
    xlabel: str,
    ylabel: str,
    line: Sequence[tuple[float, float]] | None = None,
    width: int = 420,
    height: int = 260,
) -> str:
    """Points (already jittered where wanted) with an optional fitted line drawn over them."""
    left, right, top, bottom = 48, 12, 12, 36
    if not points:
        return _svg(width, 60, [_text(10, 30, "no points")], label)
    xs = [p[0] for p in points] + [p[0] for p in line or []]
    ys = [p[1] for p in points] + [p[1] for p in line or []]
    (x0, x1), (y0, y1) = _span(xs), _span(ys)
    # a margin inside the box, so that a dot at the extremes is drawn whole within it
    dx, dy = (x1 - x0) * 0.04, (y1 - y0) * 0.04
    x0, x1, y0, y1 = x0 - dx, x1 + dx, y0 - dy, y1 + dy
    sx, sy, body = _frame((x0, x1), (y0, y1), (width, height), (left, right, top, bottom), (xlabel, ylabel))
    body.append('<g fill="#3b6ea8" fill-opacity="0.35">')
    body.extend(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.2"/>' for x, y in points)
    body.append("</g>")
    if line:
        path = " ".join(f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for i, (x, y) in enumerate(line))
        body.append(f'<path d="{path}" fill="none" stroke="#d9822b" stroke-width="2"/>')
    return _svg(width, height, body, label)


def radar(
    categories: Sequence[str],
    series: dict[str, Sequence[float | None]],
    label: str,
    vmax: float = 10,
    *,
    colors: dict[str, str] | None = None,
) -> str:
    """MT-Bench's radar plot: mean score per category, one polygon per model; a missing value is a gap.
    ``colors``: a colour per model (shared with the other plots); else the palette in order."""
    size, r = 420, 140
    cx, cy = size / 2 + 40, size / 2
    n = max(len(categories), 1)

    def pt(k: int, v: float) -> tuple[float, float]:
        a = -math.pi / 2 + 2 * math.pi * k / n
        return cx + r * v / vmax * math.cos(a), cy + r * v / vmax * math.sin(a)

    body = []
    for ring in (2, 4, 6, 8, 10):
        ring_pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in (pt(k, ring) for k in range(n)))
        body.append(f'<polygon points="{ring_pts}" fill="none" stroke="#ddd"/>')
    for k, c in enumerate(categories):
        x, y = pt(k, vmax * 1.13)
        body.append(f'<line x1="{cx}" y1="{cy}" x2="{pt(k, vmax)[0]:.1f}" y2="{pt(k, vmax)[1]:.1f}" stroke="#ddd"/>')
        body.append(_text(x, y + 4, c, "middle"))
    for i, (name, vals) in enumerate(series.items()):
        c = (colors or {}).get(name) or color(i)
        pts = [pt(k, v) for k, v in enumerate(vals) if v is not None]
        if pts:
            body.append(
                f'<polygon points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in pts)}" fill="{c}" '
                f'fill-opacity="0.12" stroke="{c}" stroke-width="2"><title>{escape(name)}</title></polygon>'
            )
        body.append(
            f'<rect class="legend" x="6" y="{8 + i * 16}" width="10" height="10" fill="{c}">'
            f"<title>{escape(name)}</title></rect>"
        )
        body.append(_text(20, 17 + i * 16, name[:24]))
    return _svg(size + 80, size, body, label)


def reliability(bins: Sequence[dict[str, Any]], label: str, *, xlabel: str, width: int = 420, height: int = 300) -> str:
    """A reliability diagram: per bin the mean judge score (0–1) against the share of positive human labels,
    with its 95% interval as an error bar, the point's area growing with the bin's count (written beside it),
    and the diagonal of perfect calibration.

    Each bin dict has ``mean_score``, ``share_positive``, ``ci_low``, ``ci_high`` and ``n``.
    """
    left, right, top, bottom = 48, 14, 12, 38
    pw, ph = width - left - right, height - top - bottom
    if not bins:
        return _svg(width, 60, [_text(10, 30, "no binned items")], label)

    def sx(x: float) -> float:
        return left + x * pw

    def sy(y: float) -> float:
        return top + ph - y * ph

    body = [
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#ccc"/>',
        f'<line class="diagonal" x1="{sx(0):.1f}" y1="{sy(0):.1f}" x2="{sx(1):.1f}" y2="{sy(1):.1f}" '
        'stroke="#999" stroke-dasharray="4,3"/>',
    ]
    for t in _ticks(0, 1, 5):
        body.append(_text(sx(t), top + ph + 14, fmt(float(t), 2), "middle", 'fill="#666"'))
        body.append(_text(left - 4, sy(t) + 4, fmt(float(t), 2), "end", 'fill="#666"'))
    body.append(_text(left + pw / 2, height - 4, xlabel, "middle"))
    body.append(
        _text(12, top + ph / 2, "share positive (human)", "middle", f'transform="rotate(-90 12 {top + ph / 2})"')
    )
    nmax = max(int(b["n"]) for b in bins) or 1
    pts = []
    for b in bins:
        x, y = sx(float(b["mean_score"])), sy(float(b["share_positive"]))
        pts.append(f"{x:.1f},{y:.1f}")
        body.append(
            f'<line class="errorbar" x1="{x:.1f}" y1="{sy(float(b["ci_low"])):.1f}" x2="{x:.1f}" '
            f'y2="{sy(float(b["ci_high"])):.1f}" stroke="#333"/>'
        )
    body.append(f'<polyline points="{" ".join(pts)}" fill="none" stroke="{color(0)}" stroke-opacity="0.5"/>')
    for b in bins:
        x, y = sx(float(b["mean_score"])), sy(float(b["share_positive"]))
        r = 2.5 + 5.5 * math.sqrt(int(b["n"]) / nmax)
        tip = (
            f"mean score {fmt(float(b['mean_score']), 3)}, share positive {fmt(float(b['share_positive']), 3)} "
            f"[{fmt(float(b['ci_low']), 3)}, {fmt(float(b['ci_high']), 3)}], n = {int(b['n'])}"
        )
        body.append(
            f'<circle class="bin" cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}" fill="{color(0)}" fill-opacity="0.8">'
            f"<title>{escape(tip)}</title></circle>"
        )
        body.append(_text(x + r + 2, y - 3, f"n={int(b['n'])}", "start", 'fill="#444" font-size="9"'))
    return _svg(width, height, body, label)


def curves(
    series: dict[str, Sequence[tuple[float, float | None, float | None, float | None]]],
    label: str,
    *,
    xlabel: str,
    ylabel: str,
    reference: tuple[str, float, float | None, float | None] | None = None,
    mark: tuple[float, float] | None = None,
    width: int = 460,
    height: int = 260,
) -> str:
    """Lines of (x, value, ci_low, ci_high) with shaded CI bands; ``reference`` = (name, value, lo, hi) is
    drawn as a dashed horizontal line with its band (the baseline); ``mark`` rings one point (the best)."""
    left, right, top, bottom = 52, 12, 12, 50
    pts = [(x, v, lo, hi) for s in series.values() for x, v, lo, hi in s if v is not None]
    if not pts:
        return _svg(width, 60, [_text(10, 30, "no values")], label)
    xs = [p[0] for p in pts]
    ys = [y for p in pts for y in p[1:] if y is not None]
    if reference is not None:
        ys += [y for y in reference[1:] if y is not None]
    (x0, x1), (y0, y1) = _span(xs), _span(ys)
    pad = (y1 - y0) * 0.05
    y0, y1 = y0 - pad, y1 + pad
    pw, ph = width - left - right, height - top - bottom
    sx, sy, body = _frame(
        (x0, x1),
        (y0, y1),
        (width, height),
        (left, right, top, bottom),
        (xlabel, ylabel),
        y_digits=3,
        xlabel_y=top + ph + 30,
    )
    if reference is not None:
        name, v, lo, hi = reference
        if lo is not None and hi is not None:
            body.append(
                f'<rect x="{left}" y="{sy(hi):.1f}" width="{pw}" height="{max(sy(lo) - sy(hi), 0.5):.1f}" '
                'fill="#888" fill-opacity="0.12"/>'
            )
        body.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{sy(v):.1f}" y2="{sy(v):.1f}" '
            'stroke="#888" stroke-dasharray="4 3"/>'
        )
    legend = [(reference[0], "#888")] if reference is not None else []
    for i, (name, s) in enumerate(series.items()):
        c = color(i)
        legend.append((name, c))
        band = [(x, lo, hi) for x, _, lo, hi in s if lo is not None and hi is not None]
        if len(band) > 1:
            upper = " ".join(f"{sx(x):.1f},{sy(hi):.1f}" for x, _, hi in band)
            lower = " ".join(f"{sx(x):.1f},{sy(lo):.1f}" for x, lo, _ in reversed(band))
            body.append(f'<polygon points="{upper} {lower}" fill="{c}" fill-opacity="0.15"/>')
        line = [(x, v) for x, v, _, _ in s if v is not None]
        path = " ".join(f"{'M' if k == 0 else 'L'}{sx(x):.1f},{sy(v):.1f}" for k, (x, v) in enumerate(line))
        body.append(f'<path d="{path}" fill="none" stroke="{c}" stroke-width="2"/>')
        body.extend(f'<circle cx="{sx(x):.1f}" cy="{sy(v):.1f}" r="3" fill="{c}"/>' for x, v in line)
    if mark is not None:
        body.append(
            f'<circle cx="{sx(mark[0]):.1f}" cy="{sy(mark[1]):.1f}" r="7" '
            'fill="none" stroke="#222" stroke-width="1.5"/>'
        )
    for k, (name, c) in enumerate(legend):
        x = left + k * 130
        body.append(f'<rect x="{x}" y="{height - 14}" width="10" height="10" fill="{c}"/>')
        body.append(_text(x + 14, height - 5, name))
    return _svg(width, height, body, label)
