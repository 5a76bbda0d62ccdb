"""Plain-text formatting shared by every text report (calibrate, mtbench show, eval): one way to print a
number, an interval and a table."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

_USERINFO = re.compile(r"^([A-Za-z][\w+.-]*://)[^/?#@]*@")
_SECRET_PARAM = re.compile(
    r"([?&;][^=&;#]*(?:key|token|secret|passw|pwd|sig|auth|credential|session)[^=&;#]*=)[^&;#]*", re.IGNORECASE
)


def redact_url(url: str | None) -> str | None:
    """``url`` fit to record or print: the userinfo (``user:key@``) and the values of query parameters that
    name a secret (``api_key``, ``token``, ``sig`` ...) become ``***``. Text, not parsing: a URL too broken to
    parse is redacted all the same."""
    if not url:
        return url
    return _SECRET_PARAM.sub(r"\1***", _USERINFO.sub(r"\1***@", url))


def redact_url_fields(obj: Any, key: str = "base_url") -> Any:
    """A copy of a JSON-like ``obj`` with every string under ``key`` (at any depth) passed through
    :func:`redact_url`."""
    if isinstance(obj, dict):
        return {
            k: redact_url(v) if k == key and isinstance(v, str) else redact_url_fields(v, key) for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [redact_url_fields(v, key) for v in obj]
    return obj


def fmt(value: Any, digits: int = 3, *, trim: bool = True) -> str:
    """A number as short as it can be read (4, 2.765); None as '-'; NaN as 'nan'; anything else as is.

    ``trim=False`` keeps a float's trailing zeros (7.50), for tables whose columns line up on the point.
    """
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return "nan"
        if not trim:
            return f"{value:.{digits}f}"
        return f"{value:.{digits}f}".rstrip("0").rstrip(".") if digits else f"{value:.0f}"
    return str(value)


def fmt_p(p: float | None) -> str:
    """A p-value: three decimals, '<0.001' below that (a resampled p is never exactly 0)."""
    if p is None:
        return "-"
    return "<0.001" if p < 0.001 else fmt(p, 3)


def fmt_ci(value: Any, lo: Any, hi: Any, digits: int = 3) -> str:
    """``value [lo, hi]``, or just the value when the interval is undefined."""
    if lo is None or hi is None:
        return fmt(value, digits)
    return f"{fmt(value, digits)} [{fmt(lo, digits)}, {fmt(hi, digits)}]"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 2, *, trim: bool = True) -> str:
    """A plain-text table, first column left-aligned, the rest right-aligned."""
    cells = [list(headers)] + [[c if isinstance(c, str) else fmt(c, digits, trim=trim) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for j, r in enumerate(cells):
        lines.append("  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def ppi_summary(ppi: dict[str, Any]) -> tuple[str, list[tuple[str, dict[str, Any]]], str]:
    """A prediction-powered estimate (``judge.ppi.PPIResult`` as a dict) for text and HTML reports alike:
    how it was computed, its three rows (PPI, labelled only, judge only) and what the judge scores were worth."""
    how = f"{ppi['n_labelled']} labelled + {ppi['n_unlabelled']} judge-only items"
    if ppi.get("n_groups") is not None:
        how += f", cluster-robust over {ppi['n_groups']} groups"
    if ppi.get("n_strata", 1) > 1:
        how += f", {ppi['n_strata']} sampling strata"
    if ppi.get("mapping", "identity") != "identity":
        how += f", judge mapped by a cross-fitted {ppi['mapping']} fit"
    rows = [
        (f"prediction-powered (PPI++, λ {ppi['lam']:.2f})", ppi["ppi"]),
        ("labelled only", ppi["labelled_only"]),
        ("judge only", ppi["judge_only"]),
    ]
    worth = (
        f"your {ppi['n_labelled']} labels + {ppi['n_unlabelled']} judge scores are worth "
        f"~{ppi['effective_labels']:.0f} labels"
    )
    return how, rows, worth


def labelled_estimates(
    systems: dict[str, dict[str, dict[str, Any]]], deltas: dict[str, dict[str, dict[str, Any]]]
) -> list[tuple[str, dict[str, Any]]]:
    """Every prediction-powered estimate of a run (results.json's ``systems`` and ``deltas``), named as the text
    and HTML reports show them: ``metric on system`` or ``Δ metric on system``."""
    out = []
    for prefix, table in (("", systems), ("Δ ", deltas)):
        for system, per in table.items():
            out += [(f"{prefix}{metric} on {system}", v["ppi"]) for metric, v in per.items() if v.get("ppi")]
    return out
