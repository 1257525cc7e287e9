"""A self-contained HTML report (no scripts, no external files): curves, values with CIs, cohorts,
who gets what, and the policy's explanation. Charts are inline SVG so the page opens anywhere.

Numbers carry 2-3 significant decimals (:func:`fmt_num`), shares are percentages (:func:`fmt_pct`),
intervals are written ``value [low, high]``; wide tables scroll inside the page instead of
overflowing it, and the per-cohort table puts the longer list (cohorts or policies) in the rows.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

from grpokit.atomic import atomic_write_text

__all__ = ["write_report", "line_chart_svg", "bar_chart_svg", "frontier_svg", "frontier_points", "frontier_html",
           "table_html", "fmt_num", "fmt_pct", "fmt_rel", "fmt_ci"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1240px;padding:0 1em;color:#222}
h1{font-size:1.6em} h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
.scroll{overflow-x:auto;max-width:100%} table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
td,th{border:1px solid #ccc;padding:.2em .4em;text-align:right;white-space:nowrap} th{background:#f3f3f3;white-space:normal;overflow-wrap:anywhere;min-width:4em}
td:first-child,th:first-child{text-align:left} .ci{color:#666;font-size:.85em} .best{font-weight:bold}
pre{background:#f7f7f7;padding:1em;overflow-x:auto} .note{color:#555;font-size:.9em}
.headline{background:#f4f8fc;border-left:4px solid #1f77b4;padding:.6em 1em;margin:1em 0}
.headline li{margin:.2em 0} svg{max-width:100%;height:auto}
"""

#: per-policy figures of the policy table: key -> (column title, kind: "num" or "pct")
_POLICY_COLUMNS = {
    "share_of_oracle": ("share of oracle", "pct"),
    "lift_share_vs_no_offer": ("share of the oracle's lift over no offer", "pct"),
    "lift_share_vs_current": ("share of the oracle's lift over the current policy", "pct"),
    "spend": ("spend", "num"),
    "offer_rate_sure_things": ("offer rate, sure things", "pct"),
    "lowest_cohort_improvement": ("lowest cohort gain vs random", "num"),
    "cohort_improvement_spread": ("cohort gain spread vs random", "num"),
    "lowest_cohort_improvement_vs_no_offer": ("lowest cohort gain vs no offer", "num"),
    "cohort_improvement_spread_vs_no_offer": ("cohort gain spread vs no offer", "num"),
    "lowest_cohort_improvement_vs_no_offer_market": ("lowest region × channel gain vs no offer", "num"),
    "untapped_gain": ("gain in persuadables + new customers, per customer", "num"),
}

_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def fmt_num(v) -> str:
    """2-3 significant decimals: 21.36, 0.0123, 152.1, 5,444; '–' for None."""
    if v is None:
        return "–"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return html.escape(str(v))
    if isinstance(v, int):
        return f"{v:,}"
    if not math.isfinite(v):
        return str(v)
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.1f}"
    if a >= 1 or a == 0:
        return f"{v:.2f}"
    decimals = min(6, 2 - math.floor(math.log10(a)))
    return f"{v:.{decimals}f}"


def fmt_pct(v) -> str:
    """A share as a percentage with one decimal: 0.978 -> '97.8 %'."""
    if v is None or not isinstance(v, (int, float)) or not math.isfinite(v):
        return "–" if v is None else str(v)
    return f"{100 * v:.1f} %"


def fmt_rel(v) -> str:
    """A relative change, signed, with two decimals: 0.01034 -> '+1.03 %'."""
    if v is None or not isinstance(v, (int, float)) or not math.isfinite(v):
        return "–" if v is None else str(v)
    return f"{100 * v:+.2f} %"


_FORMATS = {"pct": fmt_pct, "rel": fmt_rel}


def fmt_ci(low, high, kind: str = "num") -> str:
    """``[low, high]`` in the same format as the value."""
    if low is None or high is None:
        return ""
    f = _FORMATS.get(kind, fmt_num)
    return f"[{f(low)}, {f(high)}]"


def _cell(v, kind: str = "num") -> str:
    """A table cell's HTML: numbers formatted by kind; ``(value, low, high)`` as value with its interval below."""
    if isinstance(v, tuple):
        value, low, high = v
        main = _FORMATS.get(kind, fmt_num)(value)
        ci = fmt_ci(low, high, kind)
        return main + (f"<br><span class='ci'>{ci}</span>" if ci else "")
    if kind in _FORMATS:
        return _FORMATS[kind](v)
    if kind == "raw":
        return str(v)
    return fmt_num(v)


def table_html(header: list[str], rows: list[list], kinds: list[str] | None = None) -> str:
    """A scrollable table; ``kinds[j]`` formats column j ("num", "pct", "rel" for signed relative changes, or "raw")."""
    kinds = kinds or ["num"] * len(header)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c)) if j == 0 else _cell(c, kinds[j] if j < len(kinds) else 'num')}</td>"
                         for j, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<div class='scroll'><table><tr>{head}</tr>{body}</table></div>"


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

    sx, sy, out = _svg_axes(width, height, (pad_l, pad_r, pad_t, pad_b), (x0, x1, y0, y1), title, (x0, x1), "{:.0f}")
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


def bar_chart_svg(values: dict[str, tuple[float, float | None, float | None]], *, width=640, title="",
                  zero: bool = True) -> str:
    """Horizontal bars ``name -> (value, ci_low, ci_high)`` with CI whiskers (a line with end caps).

    ``zero``: bars start at 0 (values); False: the axis spans the values and intervals only, with a
    dashed line at 0 when it is in range (differences)."""
    if not values:
        return "<p class='note'>no data</p>"
    row_h, pad_l, pad_r = 24, 190, 150
    height = 30 + row_h * len(values)
    nums = [v for t in values.values() for v in t if v is not None and math.isfinite(v)]
    lo, hi = (min(0.0, *nums), max(0.0, *nums)) if zero else (min(nums), max(nums))
    if hi == lo:
        hi = lo + 1
    if not zero:
        span = hi - lo
        lo, hi = lo - 0.05 * span, hi + 0.05 * span

    def sx(x):
        return pad_l + (x - lo) / (hi - lo) * (width - pad_l - pad_r)

    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' viewBox='0 0 {width} {height}' role='img'>"]
    out.append(f"<text x='5' y='15' font-size='13'>{html.escape(title)}</text>")
    base = sx(0.0) if lo <= 0.0 <= hi else sx(lo)
    if not zero and lo <= 0.0 <= hi:
        out.append(f"<line x1='{base:.1f}' y1='22' x2='{base:.1f}' y2='{height}' stroke='#888' stroke-dasharray='3,3'/>")
    for i, (name, (v, low, high)) in enumerate(values.items()):
        y = 25 + i * row_h
        colour = _COLOURS[i % len(_COLOURS)]
        out.append(f"<text x='{pad_l - 6}' y='{y + 14}' font-size='11' text-anchor='end'>{html.escape(name)}</text>")
        x_a, x_b = sorted((base, sx(v)))
        out.append(f"<rect x='{x_a:.1f}' y='{y + 3}' width='{max(x_b - x_a, 1):.1f}' height='{row_h - 8}' fill='{colour}' opacity='.6'/>")
        label = fmt_num(v)
        if low is not None and high is not None and math.isfinite(low) and math.isfinite(high):
            mid = y + row_h / 2
            out.append(f"<line class='ci' x1='{sx(low):.1f}' y1='{mid:.1f}' x2='{sx(high):.1f}' y2='{mid:.1f}' stroke='#000' stroke-width='1.5'/>")
            for xc in (sx(low), sx(high)):
                out.append(f"<line x1='{xc:.1f}' y1='{mid - 5:.1f}' x2='{xc:.1f}' y2='{mid + 5:.1f}' stroke='#000' stroke-width='1.5'/>")
            label += f" {fmt_ci(low, high)}"
        right = max(x_b, sx(high) if high is not None and math.isfinite(high) else x_b)
        out.append(f"<text x='{right + 5:.1f}' y='{y + 14}' font-size='10'>{html.escape(label)}</text>")
    out.append("</svg>")
    return "".join(out)


def frontier_points(policies: dict, x_key: str = "lowest_cohort_improvement_vs_no_offer") -> list[dict]:
    """One frontier point per policy of a run summary that has both figures: ``{label, x, y, kind}``
    with x = its lowest cohort gain over no offer (min_c V_c − V_c^none), y = its value per unit;
    ``kind`` is "objective" for grpo, "reference" for oracle / no_offer, "baseline" otherwise."""
    out = []
    for name, p in policies.items():
        x, y = p.get(x_key), p.get("value")
        if x is None or y is None:
            continue
        kind = "objective" if name.startswith("grpo") else "reference" if name in ("oracle", "no_offer") else "baseline"
        out.append({"label": name, "x": float(x), "y": float(y), "kind": kind})
    return out


def frontier_svg(points: list[dict], *, width=760, height=420, title="",
                 xlabel="lowest cohort gain over no offer (per customer)", ylabel="profit per customer") -> str:
    """Scatter of profit against lowest-cohort gain: ``points`` are ``{label, x, y, kind, series?,
    x_err?, y_err?}``; "objective" points are dots coloured by ``series`` (a dotted line joins the
    points of a series that no other point of it beats on both axes: its frontier), "baseline"
    points are black squares, "reference" points (oracle, no offer) grey diamonds; ``*_err``: a
    whisker of ± that much (e.g. the spread over seeds)."""
    good = [p for p in points if p.get("x") is not None and p.get("y") is not None
            and math.isfinite(p["x"]) and math.isfinite(p["y"])]
    if not good:
        return "<p class='note'>no data</p>"
    xs = [v for p in good for v in (p["x"] - (p.get("x_err") or 0), p["x"] + (p.get("x_err") or 0))]
    ys = [v for p in good for v in (p["y"] - (p.get("y_err") or 0), p["y"] + (p.get("y_err") or 0))]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    dx, dy = (x1 - x0) or 1.0, (y1 - y0) or 1.0
    x0, x1, y0, y1 = x0 - 0.05 * dx, x1 + 0.05 * dx, y0 - 0.05 * dy, y1 + 0.05 * dy
    pad_l, pad_r, pad_t, pad_b = 60, 170, 25, 40

    sx, sy, out = _svg_axes(width, height, (pad_l, pad_r, pad_t, pad_b), (x0, x1, y0, y1), title,
                            (x0, (x0 + x1) / 2, x1), "{:.3g}")
    if x0 < 0 < x1:
        out.append(f"<line x1='{sx(0):.1f}' y1='{pad_t}' x2='{sx(0):.1f}' y2='{height - pad_b}' stroke='#bbb' stroke-dasharray='3,3'/>")
    out.append(f"<text x='{(pad_l + width - pad_r) / 2}' y='{height - 8}' font-size='11' text-anchor='middle'>{html.escape(xlabel)}</text>")
    out.append(f"<text x='12' y='{(pad_t + height - pad_b) / 2}' font-size='11' text-anchor='middle' "
               f"transform='rotate(-90 12 {(pad_t + height - pad_b) / 2})'>{html.escape(ylabel)}</text>")
    series = list(dict.fromkeys(p.get("series", "") for p in good if p.get("kind", "objective") == "objective"))
    colour = {name: _COLOURS[i % len(_COLOURS)] for i, name in enumerate(series)}
    for name in series:  # the series' own frontier: points no other point of the series beats on both axes
        pts = [p for p in good if p.get("kind", "objective") == "objective" and p.get("series", "") == name]
        front = sorted((p for p in pts if not any(q["x"] >= p["x"] and q["y"] >= p["y"] and (q["x"], q["y"]) != (p["x"], p["y"])
                                                   for q in pts)), key=lambda p: p["x"])
        if len(front) > 1:
            path = " ".join(f"{sx(p['x']):.1f},{sy(p['y']):.1f}" for p in front)
            out.append(f"<polyline fill='none' stroke='{colour[name]}' stroke-width='1.2' stroke-dasharray='2,3' points='{path}'/>")
    marks = [(sx(p["x"]), sy(p["y"])) for p in good]
    places = _place_labels([str(p.get("label", "")) for p in good], marks, (pad_l, pad_t, width - pad_r + 160, height - pad_b))
    for p, (lx, ly, anchor) in zip(good, places):
        cx, cy, kind = sx(p["x"]), sy(p["y"]), p.get("kind", "objective")
        c = colour.get(p.get("series", ""), "#000") if kind == "objective" else ("#000" if kind == "baseline" else "#888")
        if p.get("x_err"):
            out.append(f"<line x1='{sx(p['x'] - p['x_err']):.1f}' y1='{cy:.1f}' x2='{sx(p['x'] + p['x_err']):.1f}' y2='{cy:.1f}' stroke='{c}' opacity='.6'/>")
        if p.get("y_err"):
            out.append(f"<line x1='{cx:.1f}' y1='{sy(p['y'] - p['y_err']):.1f}' x2='{cx:.1f}' y2='{sy(p['y'] + p['y_err']):.1f}' stroke='{c}' opacity='.6'/>")
        if kind == "objective":
            out.append(f"<circle class='objective' cx='{cx:.1f}' cy='{cy:.1f}' r='4' fill='{c}'/>")
        elif kind == "baseline":
            out.append(f"<rect class='baseline' x='{cx - 4:.1f}' y='{cy - 4:.1f}' width='8' height='8' fill='{c}'/>")
        else:
            out.append(f"<polygon class='reference' points='{cx:.1f},{cy - 5:.1f} {cx + 5:.1f},{cy:.1f} {cx:.1f},{cy + 5:.1f} "
                       f"{cx - 5:.1f},{cy:.1f}' fill='{c}'/>")
        if abs(ly - (cy - 5)) > 12:  # moved away from its mark to avoid another label: a leader line
            out.append(f"<line x1='{cx:.1f}' y1='{cy:.1f}' x2='{lx:.1f}' y2='{ly - 3:.1f}' stroke='{c}' stroke-width='0.5' opacity='.5'/>")
        out.append(f"<text x='{lx:.1f}' y='{ly:.1f}' font-size='9' fill='{c}'{anchor}>{html.escape(str(p.get('label', '')))}</text>")
    for i, name in enumerate(series):
        if name:
            out.append(f"<text x='{width - pad_r + 10}' y='{pad_t + 14 * i + 10}' font-size='11' fill='{colour[name]}'>● {html.escape(name)}</text>")
    k = len([s_ for s_ in series if s_])
    out.append(f"<text x='{width - pad_r + 10}' y='{pad_t + 14 * k + 10}' font-size='11'>■ baseline</text>")
    out.append(f"<text x='{width - pad_r + 10}' y='{pad_t + 14 * k + 24}' font-size='11' fill='#888'>◆ oracle / no offer</text>")
    out.append("</svg>")
    return "".join(out)


def _place_labels(labels: list[str], marks: list[tuple[float, float]], bounds: tuple[float, float, float, float],
                  char_w: float = 5.0, line_h: float = 10.0) -> list[tuple[float, float, str]]:
    """Deterministic positions ``(x, y, text-anchor attribute)`` of 9-px labels beside their marks, none
    over another: greedily, in the order of the marks (top to bottom, then left to right), the first
    candidate (right of the mark above it, below it, left of it, then further up or down in 10-px
    steps) whose box (``char_w`` per character × ``line_h``) meets no placed box and no other mark;
    the one with the least overlap where every candidate overlaps."""
    left, top, right, bottom = bounds
    order = sorted(range(len(labels)), key=lambda i: (round(marks[i][1], 1), round(marks[i][0], 1), i))
    placed: list[tuple[float, float, float, float]] = []
    out: list[tuple[float, float, str] | None] = [None] * len(labels)

    def overlap(a, b) -> float:
        w = min(a[2], b[2]) - max(a[0], b[0])
        h = min(a[3], b[3]) - max(a[1], b[1])
        return w * h if w > 0 and h > 0 else 0.0

    for i in order:
        cx, cy = marks[i]
        w = char_w * max(len(labels[i]), 1)
        candidates = []
        for k in range(0, 7):  # above the mark, below it, then a line further up / down each time
            for dy in (-5.0 - k * line_h, 9.0 + k * line_h):
                candidates.append((cx + 6.0, cy + dy, ""))
                candidates.append((cx - 6.0, cy + dy, " text-anchor='end'"))
        best, best_cost = None, None
        for x, y, anchor in candidates:
            x_left = x - w if anchor else x
            box = (x_left, y - line_h + 2.0, x_left + w, y + 2.0)
            off = max(0.0, left - box[0]) + max(0.0, box[2] - right) + max(0.0, top - box[1]) + max(0.0, box[3] - bottom)
            cost = sum(overlap(box, b) for b in placed) + sum(
                overlap(box, (mx - 4.0, my - 4.0, mx + 4.0, my + 4.0)) for j, (mx, my) in enumerate(marks) if j != i) + 100.0 * off
            if cost == 0.0:
                best = (x, y, anchor, box)
                break
            if best_cost is None or cost < best_cost:
                best, best_cost = (x, y, anchor, box), cost
        x, y, anchor, box = best
        placed.append(box)
        out[i] = (x, y, anchor)
    return out  # type: ignore[return-value]


def frontier_html(frontier: dict) -> str:
    """A frontier block: ``{"points": [...]}`` (:func:`frontier_svg`), optionally ``title``, ``note``
    and ``table`` = ``{"header", "rows", "kinds"}`` (:func:`table_html`)."""
    parts = []
    if frontier.get("note"):
        parts.append(f"<p class='note'>{html.escape(frontier['note'])}</p>")
    parts.append(frontier_svg(frontier.get("points") or [], title=frontier.get("title", "profit against the lowest cohort gain")))
    t = frontier.get("table")
    if t:
        parts.append(table_html(t["header"], t["rows"], t.get("kinds")))
    return "".join(parts)


def _cohort_table(policies: dict, groups: list[str], cohort_label: str) -> str:
    """Value per cohort and policy with its interval; the longer of the two lists goes in the rows."""
    def cell(p: dict, g: str):
        v = (p.get("per_group") or {}).get(g)
        ci = (p.get("per_group_ci") or {}).get(g)
        return (v, ci[0], ci[1]) if (v is not None and ci) else v

    names = list(policies)
    if len(names) > len(groups):  # policies in rows, cohorts in columns
        return table_html(["policy", *groups], [[n, *[cell(policies[n], g) for g in groups]] for n in names])
    return table_html([cohort_label, *names], [[g, *[cell(policies[n], g) for n in names]] for g in groups])


def write_report(
    path: str | Path,
    *,
    title: str,
    summary: dict,
    curves: dict[str, list[tuple[float, float]]] | None = None,
    assignment: dict[str, dict[str, float]] | None = None,
    explanation: dict | None = None,
    notes: list[str] | None = None,
    headline: list[str] | None = None,
    value_label: str = "value per decision",
    cohort_label: str = "cohort",
    sections: list[tuple[str, str]] | None = None,
) -> Path:
    """Write the report page.

    ``summary["policies"][name]`` holds ``value`` (optionally ``ci_low``/``ci_high`` and
    ``ci_kind``), ``per_group`` (optionally ``per_group_ci``: cohort -> [low, high]), optionally
    ``vs_current`` (``{policy, difference, ci_low, ci_high}``) and ``off_policy`` (DR estimate
    with CI), and the figures of ``_POLICY_COLUMNS``; ``curves``: named (step, value) series;
    ``assignment``: cohort -> action -> share of the cohort given that action; ``explanation``:
    :func:`grpokit.evaluation.explain.explain_policy`'s output; ``headline``: lines shown first;
    ``sections``: extra ``(title, html)`` blocks after the value tables.
    """
    policies = summary.get("policies", {})
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    if headline:
        parts.append("<div class='headline'><ul>" + "".join(f"<li>{html.escape(h)}</li>" for h in headline) + "</ul></div>")
    for n in notes or []:
        parts.append(f"<p class='note'>{html.escape(n)}</p>")
    if policies:
        _policy_parts(parts, policies, value_label)
    frontier = summary.get("frontier") or ({"points": frontier_points(policies)} if policies else None)
    if frontier and frontier.get("points"):
        parts.append("<h2>Profit and fairness: the frontier</h2>")
        if not summary.get("frontier"):
            parts.append("<p class='note'>each policy's value per unit against its lowest cohort gain over sending no "
                         "offer (min over cohorts of V_c − V_c(no offer)); up and to the right is better on both</p>")
        parts.append(frontier_html(frontier))
    groups = list(dict.fromkeys(g for p in policies.values() for g in (p.get("per_group") or {})))
    if groups:
        ci_note = " (95 % intervals below the values)" if any(p.get("per_group_ci") for p in policies.values()) else ""
        parts.append(f"<h2>Value per {html.escape(cohort_label)}</h2><p class='note'>{html.escape(value_label)}{ci_note}</p>")
        parts.append(_cohort_table(policies, groups, cohort_label))
    for sec_title, body in sections or []:
        parts.append(f"<h2>{html.escape(sec_title)}</h2>{body}")
    if curves and any(curves.values()):
        parts.append("<h2>Training</h2>")
        parts.append(line_chart_svg(curves, title="training curves", width=760))
    if assignment:
        actions = list(dict.fromkeys(a for shares in assignment.values() for a in shares))
        parts.append("<h2>Who gets which decision</h2><p class='note'>share of each cohort given each decision by the trained policy</p>")
        parts.append(table_html(["cohort", *actions], [[c, *[shares.get(a, 0.0) for a in actions]] for c, shares in assignment.items()],
                                ["raw", *[("num" if a == "mean decision" else "pct") for a in actions]]))
    if explanation:
        parts.append("<h2>How the policy decides</h2>")
        parts.append(
            f"<p>A decision tree of depth {explanation.get('depth')} ({explanation.get('n_leaves')} leaves) fitted to the "
            f"policy's decisions reproduces {100 * explanation['fidelity']:.1f} % of them on held-out customers (fidelity).</p>"
        )
        parts.append(f"<pre>{html.escape(explanation['rules'])}</pre>")
    parts.append("</body></html>")
    return atomic_write_text(path, "".join(parts))


def _policy_parts(parts: list[str], policies: dict, value_label: str) -> None:
    """The value bars, the differences with the current policy and the policy table, appended to ``parts``."""
    parts.append("<h2>Value per policy</h2>")
    bars = {name: (float(p["value"]), p.get("ci_low"), p.get("ci_high")) for name, p in policies.items()
            if p.get("value") is not None}
    kinds = sorted({p["ci_kind"] for p in policies.values() if p.get("ci_kind")})
    has_ci = any(p.get("ci_low") is not None for p in policies.values())
    caption = (f"{value_label}; whiskers: {'; '.join(kinds) or '95 % confidence intervals'}" if has_ci
               else f"{value_label} (no intervals estimated)")
    parts.append(bar_chart_svg(bars, title=caption, width=760))
    diffs = {name: (p["vs_current"]["difference"], p["vs_current"]["ci_low"], p["vs_current"]["ci_high"])
             for name, p in policies.items() if p.get("vs_current")}
    if diffs:
        ref = next(iter(policies[n]["vs_current"]["policy"] for n in diffs))
        parts.append(bar_chart_svg(diffs, title=f"difference with the current policy ({ref}) on the same units, 95 % paired CI",
                                   width=760, zero=False))
    shown = [k for k in _POLICY_COLUMNS if any(p.get(k) is not None for p in policies.values())]
    has_diff, has_dr = bool(diffs), any(p.get("off_policy") for p in policies.values())
    header = ["policy", "value [95 % CI]" if has_ci else "value"]
    header += [f"vs {ref} [95 % CI]"] if has_diff else []
    header += ["DR estimate, held-out log [95 % CI]"] if has_dr else []
    header += [_POLICY_COLUMNS[k][0] for k in shown]
    col_kinds = ["raw", "num"] + (["num"] if has_diff else []) + (["num"] if has_dr else []) + [_POLICY_COLUMNS[k][1] for k in shown]
    rows = []
    for name, p in policies.items():
        row = [name, (p.get("value"), p.get("ci_low"), p.get("ci_high"))]
        if has_diff:
            d = p.get("vs_current")
            row.append((d["difference"], d["ci_low"], d["ci_high"]) if d else None)
        if has_dr:
            o = p.get("off_policy")
            row.append((o["value"], o["ci_low"], o["ci_high"]) if o else None)
        rows.append(row + [p.get(k) for k in shown])
    parts.append(table_html(header, rows, col_kinds))


def _svg_axes(width, height, pads, box, title, xticks, xfmt):
    """An SVG's opening, title, both axes and their ticks; returns the scales (data -> pixels) and the parts."""
    pad_l, pad_r, pad_t, pad_b = pads
    x0, x1, y0, y1 = box

    def sx(x):
        return pad_l + (x - x0) / (x1 - x0) * (width - pad_l - pad_r)

    def sy(y):
        return height - pad_b - (y - y0) / (y1 - y0) * (height - pad_t - pad_b)

    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' viewBox='0 0 {width} {height}' role='img'>"]
    out.append(f"<text x='{pad_l}' y='15' font-size='13'>{html.escape(title)}</text>")
    out.append(f"<line x1='{pad_l}' y1='{height - pad_b}' x2='{width - pad_r}' y2='{height - pad_b}' stroke='#999'/>")
    out.append(f"<line x1='{pad_l}' y1='{pad_t}' x2='{pad_l}' y2='{height - pad_b}' stroke='#999'/>")
    for y in (y0, (y0 + y1) / 2, y1):
        out.append(f"<text x='{pad_l - 5}' y='{sy(y) + 4:.1f}' font-size='10' text-anchor='end'>{y:.3g}</text>")
    for x in xticks:
        out.append(f"<text x='{sx(x):.1f}' y='{height - pad_b + 14}' font-size='10' text-anchor='middle'>{xfmt.format(x)}</text>")
    return sx, sy, out
