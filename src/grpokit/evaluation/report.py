"""A self-contained HTML report (no scripts, no external files): curves, values with CIs, cohorts,
who gets what, and the policy's explanation. Charts are inline SVG so the page opens anywhere.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

from grpokit.atomic import atomic_write_text

__all__ = ["write_report", "line_chart_svg", "bar_chart_svg"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:960px;color:#222}
h1{font-size:1.6em} h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
.scroll{overflow-x:auto} table{border-collapse:collapse;margin:.5em 0} td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}
pre{background:#f7f7f7;padding:1em;overflow-x:auto} .note{color:#555;font-size:.9em}
"""

#: extra per-policy figures shown in the policy table, with their column titles
_POLICY_COLUMNS = {
    "share_of_oracle": "share of oracle",
    "spend": "spend",
    "offer_rate_sure_things": "offer rate, sure things",
    "lowest_cohort_improvement": "lowest cohort gain",
    "cohort_improvement_spread": "cohort gain spread",
}

_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:,.4f}" if abs(v) < 1000 else f"{v:,.0f}"
    return html.escape(str(v))


def line_chart_svg(series: dict[str, list[tuple[float, float]]], *, width=640, height=260, title="", xlabel="step") -> str:
    """Inline SVG with one polyline per named series of (x, y) points."""
    pts = [p for s in series.values() for p in s if p[1] is not None and math.isfinite(p[1])]
    if not pts:
        return "<p class='note'>no data</p>"
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y1 = y0 + 1
    pad_l, pad_r, pad_t, pad_b = 60, 120, 25, 35

    def sx(x):
        return pad_l + (x - x0) / (x1 - x0) * (width - pad_l - pad_r)

    def sy(y):
        return height - pad_b - (y - y0) / (y1 - y0) * (height - pad_t - pad_b)

    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img'>"]
    out.append(f"<text x='{pad_l}' y='15' font-size='13'>{html.escape(title)}</text>")
    out.append(f"<line x1='{pad_l}' y1='{height - pad_b}' x2='{width - pad_r}' y2='{height - pad_b}' stroke='#999'/>")
    out.append(f"<line x1='{pad_l}' y1='{pad_t}' x2='{pad_l}' y2='{height - pad_b}' stroke='#999'/>")
    for y in (y0, (y0 + y1) / 2, y1):
        out.append(f"<text x='{pad_l - 5}' y='{sy(y) + 4:.1f}' font-size='10' text-anchor='end'>{y:.4g}</text>")
    for x in (x0, x1):
        out.append(f"<text x='{sx(x):.1f}' y='{height - pad_b + 14}' font-size='10' text-anchor='middle'>{x:.0f}</text>")
    out.append(f"<text x='{(pad_l + width - pad_r) / 2}' y='{height - 5}' font-size='11' text-anchor='middle'>{xlabel}</text>")
    for i, (name, s) in enumerate(series.items()):
        good = [(x, y) for x, y in s if y is not None and math.isfinite(y)]
        if not good:
            continue
        colour = _COLOURS[i % len(_COLOURS)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in good)
        out.append(f"<polyline fill='none' stroke='{colour}' stroke-width='1.8' points='{path}'/>")
        out.append(f"<text x='{width - pad_r + 8}' y='{pad_t + 14 * i + 10}' font-size='11' fill='{colour}'>{html.escape(name)}</text>")
    out.append("</svg>")
    return "".join(out)


def bar_chart_svg(values: dict[str, tuple[float, float | None, float | None]], *, width=640, title="") -> str:
    """Horizontal bars ``name -> (value, ci_low, ci_high)`` with CI whiskers."""
    if not values:
        return "<p class='note'>no data</p>"
    row_h, pad_l, pad_r = 24, 130, 90
    height = 30 + row_h * len(values)
    nums = [v for t in values.values() for v in t if v is not None and math.isfinite(v)]
    lo, hi = min(0.0, *nums), max(0.0, *nums)
    if hi == lo:
        hi = lo + 1

    def sx(x):
        return pad_l + (x - lo) / (hi - lo) * (width - pad_l - pad_r)

    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img'>"]
    out.append(f"<text x='5' y='15' font-size='13'>{html.escape(title)}</text>")
    for i, (name, (v, low, high)) in enumerate(values.items()):
        y = 25 + i * row_h
        colour = _COLOURS[i % len(_COLOURS)]
        out.append(f"<text x='{pad_l - 6}' y='{y + 14}' font-size='11' text-anchor='end'>{html.escape(name)}</text>")
        x_a, x_b = sorted((sx(0.0), sx(v)))
        out.append(f"<rect x='{x_a:.1f}' y='{y + 3}' width='{max(x_b - x_a, 1):.1f}' height='{row_h - 8}' fill='{colour}' opacity='.75'/>")
        if low is not None and high is not None:
            out.append(f"<line x1='{sx(low):.1f}' y1='{y + row_h / 2:.1f}' x2='{sx(high):.1f}' y2='{y + row_h / 2:.1f}' stroke='#000' stroke-width='1.5'/>")
        out.append(f"<text x='{max(x_b, sx(high) if high is not None else x_b) + 5:.1f}' y='{y + 14}' font-size='10'>{v:.4g}</text>")
    out.append("</svg>")
    return "".join(out)


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<div class='scroll'><table><tr>{head}</tr>{body}</table></div>"


def write_report(
    path: str | Path,
    *,
    title: str,
    summary: dict,
    curves: dict[str, list[tuple[float, float]]] | None = None,
    assignment: dict[str, dict[str, float]] | None = None,
    explanation: dict | None = None,
    notes: list[str] | None = None,
) -> Path:
    """Write the report page.

    ``summary["policies"][name]`` holds ``value`` (optionally ``ci_low``/``ci_high``) and
    ``per_group``; ``curves``: named (step, value) series; ``assignment``: cohort -> action -> share
    of the cohort given that action; ``explanation``: :func:`grpokit.evaluation.explain.explain_policy`'s output.
    """
    policies = summary.get("policies", {})
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    for n in notes or []:
        parts.append(f"<p class='note'>{html.escape(n)}</p>")
    parts.append("<h2>Value per policy</h2>")
    bars = {
        name: (float(p["value"]), p.get("ci_low"), p.get("ci_high"))
        for name, p in policies.items()
        if p.get("value") is not None
    }
    parts.append(bar_chart_svg(bars, title="value per decision (lines: confidence intervals where estimated)"))
    has_ci = any(p.get("ci_low") is not None for p in policies.values())
    shown = [k for k in _POLICY_COLUMNS if any(k in p for p in policies.values())]
    header = ["policy", "value", *(["ci low", "ci high"] if has_ci else []), *[_POLICY_COLUMNS[k] for k in shown]]
    rows = [
        [name, p.get("value"), *([p.get("ci_low"), p.get("ci_high")] if has_ci else []), *[p.get(k) for k in shown]]
        for name, p in policies.items()
    ]
    parts.append(_table(header, rows))
    groups = list(dict.fromkeys(g for p in policies.values() for g in (p.get("per_group") or {})))
    if groups:
        parts.append("<h2>Value per cohort</h2>")
        parts.append(_table(["cohort", *policies], [[g, *[(p.get("per_group") or {}).get(g) for p in policies.values()]] for g in groups]))
    if curves:
        parts.append("<h2>Training</h2>")
        parts.append(line_chart_svg(curves, title="training curves"))
    if assignment:
        actions = list(dict.fromkeys(a for shares in assignment.values() for a in shares))
        parts.append("<h2>Who gets which decision</h2><p class='note'>share of each cohort given each decision by the trained policy</p>")
        parts.append(_table(["cohort", *actions], [[c, *[shares.get(a, 0.0) for a in actions]] for c, shares in assignment.items()]))
    if explanation:
        parts.append("<h2>How the policy decides</h2>")
        parts.append(
            f"<p>A decision tree of depth {explanation.get('depth')} ({explanation.get('n_leaves')} leaves) fitted to the "
            f"policy's decisions reproduces {100 * explanation['fidelity']:.1f} % of them on held-out customers (fidelity).</p>"
        )
        parts.append(f"<pre>{html.escape(explanation['rules'])}</pre>")
    parts.append("</body></html>")
    return atomic_write_text(path, "".join(parts))
