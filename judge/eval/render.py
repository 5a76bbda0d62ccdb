"""The text summary ``judge eval`` prints: one row per metric, each system's value with its CI, the
paired delta of every system against the baseline, and the gates."""

from __future__ import annotations

from typing import TYPE_CHECKING

from judge.eval.labels import render_labels
from judge.textfmt import fmt, fmt_ci, fmt_p, format_table

if TYPE_CHECKING:
    from judge.eval.run import EvalResult


def render_table(result: EvalResult) -> str:
    systems = list(result.systems)
    others = [s for s in systems if s != result.baseline]
    headers = ["metric", "better", "n scored"] + systems
    for s in others:
        headers += [f"Δ {s} [95% CI]", "p", "W/L/T"]
    rows = []
    for name, fig in result.figures.items():
        digits = 2 if fig.hi is None or fig.hi > 10 else 3
        counts = {result.systems[s][name]["n"] for s in systems}
        row: list[str] = [name, "↑" if fig.direction == "higher" else "↓"]
        ns = [str(result.systems[s][name]["n"]) for s in systems]
        row.append(ns[0] if len(counts) == 1 else "/".join(ns))
        for s in systems:
            v = result.systems[s][name]
            row.append(fmt_ci(v["value"], v["ci_low"], v["ci_high"], digits))
        for s in others:
            d = result.deltas[s][name]
            sign = "+" if (d["value"] or 0) > 0 else ""
            row += [
                sign + fmt_ci(d["value"], d["ci_low"], d["ci_high"], digits),
                fmt_p(d["p_value"]),
                f"{d['wins']}/{d['losses']}/{d['ties']}",
            ]
        rows.append(row)
    n = result.provenance.get("n_items")
    method = (result.provenance.get("bootstrap") or {}).get("ci") or "percentile"
    lines = [
        f"{n} items; baseline: {result.baseline}; values with 95% bootstrap CIs ({method}); Δ = system minus baseline "
        "on the items both scored (paired bootstrap CI, approximate-randomization p); W/L/T = items better/worse/tied",
        "",
    ]
    lines.append(format_table(headers, rows))
    lines += render_labels(result.systems, result.deltas)
    if result.gates:
        lines.append("")
        for g in result.gates:
            mark = "PASS" if g["passed"] else "FAIL"
            lines.append(
                f"{mark}  gate {g['metric']}{' (PPI)' if g.get('estimate') == 'ppi' else ''} {g['rule']} "
                f"{fmt(g['threshold'])} on {g['system']}: "
                f"value {fmt(g['value'])}"
            )
        failed = sum(not g["passed"] for g in result.gates)
        lines.append(f"{len(result.gates) - failed} of {len(result.gates)} gates passed")
    for name, sw in result.sweeps.items():
        lines.append("")
        steps = ", ".join(str(s) for s in sw["steps"])
        lines.append(f"sweep {name} ({sw['pattern']}): {len(sw['systems'])} checkpoints, steps {steps}")
        best = "; ".join(f"{metric} {system}" for metric, system in sw["best"].items() if system)
        lines.append(f"  best checkpoint per metric: {best}")
        if sw.get("val_loss") and sw.get("train_loss"):
            curve = zip(sw["steps"], sw["train_loss"], sw["val_loss"], strict=True)
            pairs = ", ".join(f"{st}: {fmt(t, 3)} / {fmt(v, 3)}" for st, t, v in curve)
            lines.append(f"  training / validation loss by step: {pairs}")
        if sw.get("overfitting_from"):
            lines.append(f"  overfitting: validation loss rises from {sw['overfitting_from']}, training loss falls")
        for f in sw.get("forgetting") or []:
            lines.append(f"  forgetting: {f['metric']} fell past its gate at {f['system']} (delta {fmt(f['delta'])})")
    return "\n".join(lines)
