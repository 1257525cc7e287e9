"""``report.html`` of a loop run: the timeline of versions, true value vs oracle, every interval beside the truth."""

from __future__ import annotations

import html
from pathlib import Path

__all__ = ["write_loop_report"]


def _f(v, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _ci(block: dict | None, lo: str = "ci_low", hi: str = "ci_high", est: str = "value") -> str:
    if not block:
        return "–"
    return f"{_f(block.get(est))} [{_f(block.get(lo))}, {_f(block.get(hi))}]"


def _svg(series: dict[str, list[tuple[float, float]]], width: int = 640, height: int = 240) -> str:
    pts = [p for s in series.values() for p in s if p[1] is not None]
    if not pts:
        return ""
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    pad = 40
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]

    def xy(x, y):
        return (pad + (x - x0) / (x1 - x0) * (width - 2 * pad), height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad))

    parts = [f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
             f'<text x="4" y="{pad - 10}" font-size="11">{y1:.2f}</text>',
             f'<text x="4" y="{height - pad}" font-size="11">{y0:.2f}</text>']
    for i, (name, s) in enumerate(series.items()):
        c = colors[i % len(colors)]
        line = " ".join(f"{a:.1f},{b:.1f}" for a, b in (xy(x, y) for x, y in s if y is not None))
        parts.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="{line}"/>')
        parts.append(f'<text x="{width - 200}" y="{16 + 14 * i}" font-size="12" fill="{c}">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def write_loop_report(path: str | Path, summary: dict) -> None:
    rounds = summary["rounds"]
    series = {"live (true value)": [(r["round"], r["true_value"]) for r in rounds],
              "oracle": [(r["round"], r["oracle_value"]) for r in rounds]}
    if any("frozen_value" in r for r in rounds):
        series["frozen first promotion"] = [(r["round"], r.get("frozen_value")) for r in rounds]
    series["start policy, never changed"] = [(r["round"], r.get("start_value")) for r in rounds]
    rows = []
    for r in rounds:
        g, p = r.get("gate") or {}, r.get("pilot")
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in (
            r["round"], r.get("live_label"), r["live_version"], _f(r["true_value"]), _f(r["share_of_oracle"]),
            _f(r.get("spend")), _ci(g.get("candidate_value")), _f(g.get("true_candidate_value")),
            _ci(g.get("improvement")), _f(g.get("true_improvement")),
            _ci(p, est="estimate") if p else "–", _f(p["true_effect"]) if p else "–",
            p.get("decisions", "–") if p else "–",
            _f(r["decision"]["z"]) if r.get("decision") else "–", r.get("verdict"))) + "</tr>")
    head = ("round", "live", "version", "true value", "share of oracle", "spend", "candidate DR [95 % CI]",
            "candidate true", "DR improvement [CI]", "true improvement", "pilot effect [CI]", "pilot true effect",
            "pilot decisions", "combined z (promote > 1.96)", "verdict")
    cohort_names = sorted(rounds[0]["per_cohort_true"]) if rounds else []
    crow = "".join("<tr><td>" + html.escape(c) + "</td>" + "".join(f"<td>{_f(r['per_cohort_true'][c])}</td>"
                                                                for r in rounds) + "</tr>" for c in cohort_names)
    f = summary["final"]
    cov = summary["coverage"]
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>grpokit loop</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:3px 6px;font-size:13px}}</style>
</head><body><h1>grpokit loop: {html.escape(summary['scenario'])} (seed {summary['seed']})</h1>
<p>Final live policy {html.escape(f['live_label'])} ({html.escape(f['live_version'])}): true value {_f(f['true_value'])},
{_f(f['share_of_oracle'])} of the oracle ({_f(f['oracle_value'])}). {summary['promotions']} promotions,
{summary['rollbacks']} rollbacks, promoted-but-worse rounds: {summary['promoted_worse'] or 'none'}.
Intervals covering the truth: {cov['covered']} of {cov['intervals']}. Wall time {summary['wall_seconds']:.0f} s.</p>
<p>True values are the simulator's expected profit per customer of what was served (exploration included) on a fixed
set of {len(rounds) and 'evaluation'} customers; everything else is what the business saw in the served log.</p>
<h2>True value per round</h2>{_svg(series)}
<h2>Rounds</h2><table><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr>{''.join(rows)}</table>
<h2>True value per cohort (live policy)</h2><table><tr><th>cohort</th>{''.join(f'<th>round {r["round"]}</th>' for r in rounds)}</tr>{crow}</table>
</body></html>"""
    Path(path).write_text(doc)
