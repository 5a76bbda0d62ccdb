"""Report kind ``eval``: a ``judge eval`` run (results.json, with the scores.jsonl and review.jsonl beside it):
the verdict and headline first, then the metrics with their deltas, the forest plot, distributions, the
review queues, the length bias and checkpoint sweeps.

The run is read by its files' contract only: judge.eval (above the report; ``judge eval --report`` calls it)
is never imported here.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from judge.report import svg
from judge.report.section import (
    Items,
    ReportKind,
    Review,
    Section,
    Table,
    add_length_bias,
    cell,
    clip,
    num,
    review_texts,
)
from judge.textfmt import fmt, fmt_ci, fmt_p, labelled_estimates, ppi_summary


def detect(data: Any) -> bool:
    """A ``judge eval`` results.json: a JSON object with ``deltas`` and ``systems``."""
    return isinstance(data, dict) and "deltas" in data and "systems" in data


def _records(path: Path) -> list[dict[str, Any]]:
    from judge.io import read_rows

    return [r.data for r in read_rows(path)] if path.exists() else []


def load(results: dict[str, Any], source: str, items: Items = None) -> Section:
    """The section of the results.json read from ``source``, with the scores.jsonl and review.jsonl beside it
    (when there); ``items`` is not used."""
    folder = Path(source).parent
    return html(results, _records(folder / "scores.jsonl"), _records(folder / "review.jsonl"), str(folder))


def from_object(source: Any) -> Section | None:
    """A ``judge.eval.run.EvalResult`` (told by its fields) or a results dict."""
    if hasattr(source, "deltas") and hasattr(source, "to_dict"):
        from judge.io import json_safe

        scores, review = json_safe(source.scores), json_safe(source.review)
        return html(source.to_dict(), scores, review, "judge.evaluate()")
    if isinstance(source, dict) and "deltas" in source:
        return html(source, [], [], "dict")
    return None


def _output_lengths(results: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Each system's output length per item id, read from the files named in the provenance (when still there)."""
    from judge.io import read_rows

    files = results.get("provenance", {}).get("data_files", {})
    systems = results.get("suite", {}).get("systems", {})
    out: dict[str, dict[str, int]] = {}
    for name, spec in systems.items():
        spec = spec if isinstance(spec, dict) else {"file": spec}
        entry = files.get(f"system:{name}") or (files.get("data") if not spec.get("file") else None)
        if not entry or not Path(entry["path"]).exists():
            continue
        column, id_col = spec.get("column") or "output", spec.get("id_column") or "id"
        lengths = {}
        for row in read_rows(entry["path"]):
            text = row.data.get(column)
            if isinstance(text, str):
                lengths[str(row.data.get(id_col))] = len(text)
        out[name] = lengths
    return out


def not_applicable_error(error: Any) -> bool:
    """Whether a per-item error says the metric does not apply (no reference to compare with), rather than
    that scoring failed: ``"not applicable: ..."`` (model metrics) or ``"no reference"`` (reference metrics)."""
    if not isinstance(error, str):
        return False
    e = error.strip().lower()
    return e.startswith("not applicable") or "no reference" in e


def _settings(value: Any, limit: int = 400) -> str:
    """A metric's settings as ``key: value`` pairs (nested keys dotted) for the provenance table: no JSON."""
    flat: list[str] = []

    def walk(prefix: str, v: Any) -> None:
        if isinstance(v, dict) and v:
            for k, x in v.items():
                walk(f"{prefix}.{k}" if prefix else str(k), x)
        else:
            shown = ", ".join(fmt(x) for x in v) if isinstance(v, list | tuple) else fmt(v)
            flat.append(f"{prefix}: {shown}" if prefix else shown)

    walk("", value)
    return clip("; ".join(flat), limit)


def _significance(d: dict[str, Any], better: int) -> int:
    """+1 when a delta's CI lies wholly on the better side of 0 (``better``: +1 higher is better, -1 lower),
    -1 when wholly on the worse side, 0 when it holds 0 or is undefined."""
    lo, hi = num(d.get("ci_low")), num(d.get("ci_high"))
    if lo is None or hi is None:
        return 0
    if lo > 0:
        return better
    if hi < 0:
        return -better
    return 0


def _eval_headline(results: dict[str, Any], names: list[str]) -> tuple[Table | None, str, str]:
    """The answer a reader wants first, per system: how many metrics are significantly better or worse than the
    baseline (the delta's 95% CI excludes 0, read in each metric's direction), its gates, and its worst
    significant regression (the largest drop as a share of the metric's range when known)."""
    systems: dict[str, Any] = results.get("systems", {})
    deltas: dict[str, dict[str, Any]] = results.get("deltas", {})
    figures: dict[str, Any] = results.get("provenance", {}).get("figures", {})
    baseline = results.get("baseline")
    gates: list[dict[str, Any]] = results.get("gates") or []
    order = [x for x in systems if x != baseline] + [baseline] + [
        str(g.get("system")) for g in gates if g.get("system") not in systems
    ]
    rows = []
    for name in dict.fromkeys(order):
        better: list[str] = []
        worse: list[str] = []
        worst: tuple[float, str, dict[str, Any]] | None = None
        own: dict[str, Any] = (deltas.get(name) if name is not None else None) or {}  # this system's deltas
        for m in names if own else []:
            d = own.get(m) or {}
            fig = figures.get(m, {})
            sign = 1 if fig.get("direction", "higher") == "higher" else -1
            sig = _significance(d, sign)
            (better if sig > 0 else worse if sig < 0 else []).append(m)
            if sig < 0:
                lo_hi = fig.get("range") or [None, None]
                span = (lo_hi[1] - lo_hi[0]) if None not in lo_hi and lo_hi[1] != lo_hi[0] else 1.0
                drop = sign * float(d["value"]) / span if num(d.get("value")) is not None else 0.0
                if worst is None or drop < worst[0]:
                    worst = (drop, m, d)
        mine = [g for g in gates if str(g.get("system")) == str(name)]
        failed = [g for g in mine if not g.get("passed")]
        if not mine:
            gate_cell = "no gates"
        elif failed:
            gate_cell = f"FAIL ({len(failed)} of {len(mine)}: " + ", ".join(
                f"{g.get('metric')} {g.get('rule')}" for g in failed
            ) + ")"
        else:
            gate_cell = f"PASS ({len(mine)} of {len(mine)})"
        if name == baseline:
            if not mine:
                continue
            counts, worst_cell = ["baseline", "baseline"], "-"
        else:
            n = sum(1 for m in names if own.get(m) is not None)
            counts = [
                f"{len(xs)} of {n}" + (f": {', '.join(xs[:4])}{' …' if len(xs) > 4 else ''}" if xs else "")
                for xs in (better, worse)
            ]
            if worst is None:
                worst_cell = "none"
            else:
                d = worst[2]
                worst_cell = f"{worst[1]}: Δ {fmt_ci(d.get('value'), d.get('ci_low'), d.get('ci_high'), 3)}"
        rows.append([str(name), *counts, gate_cell, worst_cell])
    if not rows:
        return None, "", ""
    table = Table(
        f"At a glance: each system vs the baseline ({baseline}); significant = the paired delta's 95% CI excludes 0",
        ["system", "improved", "regressed", "gates", "worst regression [95% CI]"],
        rows,
    )
    failed_all = [g for g in gates if not g.get("passed")]
    if not gates:
        return table, "No gates set: nothing decides pass or fail.", ""
    if failed_all:
        return table, f"FAIL: {len(failed_all)} of {len(gates)} gates fail.", "fail"
    return table, f"PASS: all {len(gates)} gates pass.", "pass"


def _provenance(results: dict[str, Any]) -> list[tuple[str, str]]:
    """Suite, run time, systems, items, bootstrap settings, data files (with hashes), metric settings, versions."""
    suite, prov = results.get("suite", {}), results.get("provenance", {})
    boot = prov.get("bootstrap", {})
    return [
        ("suite", str(suite.get("name"))),
        ("created", str(prov.get("created"))),
        ("systems", ", ".join(results.get("systems", {})) + f" (baseline: {results.get('baseline')})"),
        ("items", str(prov.get("n_items"))),
        (
            "bootstrap",
            f"{boot.get('resamples')} resamples, {boot.get('permutations')} permutations, "
            f"seed {boot.get('seed')}, {boot.get('ci')} {boot.get('level')}",
        ),
        *[
            (f"file {role}", f"{v.get('path')} (sha256 {str(v.get('sha256'))[:12]})")
            for role, v in prov.get("data_files", {}).items()
        ],
        *[(f"metric {name}", _settings(v)) for name, v in prov.get("metrics", {}).items() if v],
        ("versions", ", ".join(f"{k} {v}" for k, v in prov.get("versions", {}).items())),
    ]


def _metrics_table(results: dict[str, Any], names: list[str]) -> tuple[Table, list[dict[str, Any]]]:
    """Each metric's value per system and delta per system against the baseline, with the forest plot's rows."""
    baseline = results.get("baseline")
    systems: dict[str, dict[str, Any]] = results.get("systems", {})
    deltas: dict[str, dict[str, Any]] = results.get("deltas", {})
    figures: dict[str, Any] = results.get("provenance", {}).get("figures", {})
    others = [x for x in systems if x != baseline]
    headers = ["metric", "better", *systems, *(f"Δ {o} [95% CI]" for o in others), *(f"p ({o})" for o in others)]
    rows, forest_rows = [], []
    for m in names:
        fig = figures.get(m, {})
        lo_hi = fig.get("range") or [None, None]
        digits = 2 if lo_hi[1] is None or lo_hi[1] > 10 else 3
        row = [m, "↑" if fig.get("direction", "higher") == "higher" else "↓"]
        row += [
            fmt_ci(systems[x][m].get("value"), systems[x][m].get("ci_low"), systems[x][m].get("ci_high"), digits)
            for x in systems
        ]
        row += [
            fmt_ci(deltas[o][m].get("value"), deltas[o][m].get("ci_low"), deltas[o][m].get("ci_high"), digits)
            for o in others
        ]
        row += [fmt_p(deltas[o][m].get("p_value")) for o in others]
        rows.append(row)
        span = (lo_hi[1] - lo_hi[0]) if None not in lo_hi else None
        for o in others:
            d = deltas[o][m]
            forest_rows.append(
                {
                    "name": f"{m} ({o})" if len(others) > 1 else m,
                    "value": d.get("value"),
                    "lo": d.get("ci_low"),
                    "hi": d.get("ci_high"),
                    "span": span,
                    "better": 1 if fig.get("direction", "higher") == "higher" else -1,
                }
            )
    table = Table("Metrics: value [95% CI] per system; Δ = system minus baseline (paired)", headers, rows)
    return table, forest_rows


def _ppi_table(results: dict[str, Any]) -> Table | None:
    """The human-scale (prediction-powered) estimates of a run with labels; None without any."""
    ppi_rows = []
    for name, ppi in labelled_estimates(results.get("systems", {}), results.get("deltas", {})):
        how, est, worth = ppi_summary(ppi)
        ppi_rows.append([name, *(fmt_ci(e["value"], e["ci_low"], e["ci_high"], 3) for _, e in est), f"{how}; {worth}"])
    if not ppi_rows:
        return None
    return Table(
        "Human-scale estimates from the labels (95% CIs)",
        ["value", "prediction-powered (PPI++)", "labelled only", "judge only", "how"],
        ppi_rows,
    )


def _distributions(s: Section, scores: list[dict[str, Any]]) -> None:
    """One histogram of per-item scores per metric (systems side by side), and the counts of items not
    applicable or unscored."""
    per_metric: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    unscored: Counter[tuple[Any, Any]] = Counter()
    not_applicable: Counter[tuple[Any, Any]] = Counter()
    for r in scores:
        v = num(r.get("score"))
        if v is None:
            key = (r.get("system"), r.get("metric"))
            (not_applicable if not_applicable_error(r.get("error")) else unscored)[key] += 1
        else:
            per_metric[str(r["metric"])][str(r["system"])].append(v)
    for m, per_system in per_metric.items():
        domain = svg.robust_range([v for vs in per_system.values() for v in vs])
        how = "share of items per bin of the per-item score, one colour per system (bars side by side)"
        if domain is not None:
            how += (
                f"; clipped to the 1st–99th percentile ({fmt(domain[0], 3)}–{fmt(domain[1], 3)}) so that a few "
                "outliers do not flatten it: values beyond are counted in the end bins"
            )
        s.plots.append((f"{m}: {how}", svg.histogram(per_system, f"{m} distribution", domain=domain)))
    if not_applicable:
        s.notes.append(
            "not applicable (no reference): "
            + ", ".join(f"{k[0]}/{k[1]}: {v}" for k, v in sorted(not_applicable.items(), key=str))
        )
    if unscored:
        s.notes.append("unscored: " + ", ".join(f"{k[0]}/{k[1]}: {v}" for k, v in sorted(unscored.items(), key=str)))


def _reviews(s: Section, review: list[dict[str, Any]]) -> None:
    """The review queues the run wrote: the lowest-scoring items and the largest differences vs the baseline."""
    for kind, title in (("lowest", "Lowest-scoring items"), ("largest_difference", "Largest differences vs baseline")):
        recs = [r for r in review if r.get("kind") == kind]
        if not recs:
            continue
        cols = ["id", "system", "metric", "score"] + (["Δ", "better"] if kind == "largest_difference" else [])
        out = []
        for r in recs:
            cells = [
                (str(r.get("id")), str(r.get("id"))),
                (str(r.get("system")), ""),
                (str(r.get("metric")), ""),
                cell(r.get("score")),
            ]
            if kind == "largest_difference":
                cells += [cell(r.get("delta")), ("yes" if r.get("better") else "no", "")]
            out.append(
                {
                    "id": str(r.get("id")),
                    "cells": cells,
                    "texts": review_texts(r),
                    "cls": "" if kind == "lowest" or r.get("better") else "worse",
                }
            )
        s.reviews.append(Review(f"{title} ({len(out)})", cols, out))


def _length_grid(s: Section, results: dict[str, Any], scores: list[dict[str, Any]]) -> None:
    """Each metric's score against the systems' output lengths (when their files are still on this disk)."""
    lengths = _output_lengths(results)
    if lengths:
        groups: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
        for r in scores:
            v, n = num(r.get("score")), lengths.get(str(r.get("system")), {}).get(str(r.get("id")))
            if v is not None and n is not None:
                groups[(str(r["metric"]), str(r["system"]))].append((float(n), v))
        add_length_bias(s, groups, "each metric")
    else:
        s.notes.append("length bias: the systems' output files named in the provenance are not on this disk")


def html(
    results: dict[str, Any], scores: list[dict[str, Any]], review: list[dict[str, Any]], source: str
) -> Section:
    """A ``judge eval`` run: results.json, scores.jsonl and review.jsonl."""
    suite = results.get("suite", {})
    baseline = results.get("baseline")
    systems: dict[str, dict[str, Any]] = results.get("systems", {})
    s = Section("eval", f"judge eval: {suite.get('name') or source}", source)
    s.provenance = _provenance(results)
    s.fold_provenance = True
    s.warnings = [str(w) for w in results.get("warnings") or []]
    names = list(next(iter(systems.values()), {}))
    table, forest_rows = _metrics_table(results, names)
    s.tables.append(table)
    ppi = _ppi_table(results)
    if ppi is not None:
        s.tables.append(ppi)
    if forest_rows:
        s.plots.append(
            (
                f"Deltas vs {baseline} with 95% CIs, drawn so that right is better for every metric: a dot is green "
                "(better) or red (worse) only when its CI excludes 0, grey otherwise",
                svg.forest(forest_rows, "forest plot of deltas"),
            )
        )
    s.gates = [
        {**g, "value_shown": fmt(g.get("value"), 4), "threshold_shown": fmt(g.get("threshold"), 4)}
        for g in results.get("gates", [])
    ]
    s.headline, s.verdict, s.verdict_cls = _eval_headline(results, names)
    _distributions(s, scores)
    _reviews(s, review)
    _length_grid(s, results, scores)
    sweep_plots(s, results)
    return s


def sweep_plots(section: Section, results: dict[str, Any]) -> None:
    """Checkpoint sweeps: each metric against the training step with its CI band, the baseline as a dashed
    line, the best checkpoint ringed; training against validation loss; overfitting and forgetting flags."""
    systems: dict[str, dict[str, Any]] = results.get("systems", {})
    figures: dict[str, Any] = results.get("provenance", {}).get("figures", {})
    baseline = results.get("baseline")
    for name, sw in (results.get("sweeps") or {}).items():
        steps = [st if st is not None else k for k, st in enumerate(sw.get("steps", []))]
        members = sw.get("systems", [])
        rows = []
        for metric, best in (sw.get("best") or {}).items():
            pts = [
                (float(st), *(systems[m][metric].get(k) for k in ("value", "ci_low", "ci_high")))
                for st, m in zip(steps, members, strict=False)
            ]
            ref = (systems.get(baseline, {}) if baseline is not None else {}).get(metric, {})
            reference = None
            if ref.get("value") is not None:
                reference = (f"{baseline} (baseline)", ref["value"], ref.get("ci_low"), ref.get("ci_high"))
            mark = None
            if best in members:
                k = members.index(best)
                if pts[k][1] is not None:
                    mark = (pts[k][0], pts[k][1])
            higher = figures.get(metric, {}).get("direction", "higher") == "higher"
            direction = "higher is better" if higher else "lower is better"
            section.plots.append(
                (
                    f"{name}: {metric} by training step with 95% CI bands ({direction}); dashed: {baseline}; "
                    f"ringed: the best checkpoint ({best})",
                    svg.curves(
                        {name: pts}, f"{metric} by step", xlabel="step", ylabel=metric, reference=reference, mark=mark
                    ),
                )
            )
            rows.append([metric, str(best), *[fmt(systems[m][metric].get("value"), 4) for m in members]])
        section.tables.append(
            Table(f"Sweep {name}: value per checkpoint (best per metric)", ["metric", "best", *members], rows)
        )
        val, train = sw.get("val_loss"), sw.get("train_loss")
        if val and train:
            section.plots.append(
                (
                    f"{name}: training loss (on the suite's train split) and validation loss by step; a widening gap "
                    "is overfitting",
                    svg.curves(
                        {"validation": [(float(st), v, None, None) for st, v in zip(steps, val, strict=False)],
                         "training": [(float(st), v, None, None) for st, v in zip(steps, train, strict=False)]},
                        f"{name} training vs validation loss",
                        xlabel="step",
                        ylabel="loss (nats/token)",
                    ),
                )
            )
        if sw.get("overfitting_from"):
            section.warnings.append(
                f"{name}: validation loss rises from {sw['overfitting_from']} while training loss still falls "
                "(overfitting)"
            )
        for f in sw.get("forgetting") or []:
            section.warnings.append(
                f"{name}: {f['metric']} fell past its gate at {f['system']} (delta {fmt(f.get('delta'), 3)}): "
                "forgetting"
            )


KIND = ReportKind("eval", detect, load, from_object)
