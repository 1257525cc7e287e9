"""The report of ``grpokit learn`` and ``grpokit evaluate``: one self-contained HTML page a manager reads.

It opens with the headline -- "new policy: +X per customer (+Y %) vs the current policy, 95 % CI
[a, b]: PROMOTE / HOLD / inconclusive" in the schema's ``reward_unit`` -- then the learned policy
next to the best single action and the current one, the decision mix overall and per group, the
per-group verdicts with their intervals drawn, the uplift (Qini) curve and the explanation tree
in raw feature units. Charts are inline SVG (the helpers of :mod:`grpokit.evaluation.report`).

Verdict words: PROMOTE when the improvement's interval lies above the margin; HOLD when it lies
below 0 (the new policy is worse) or above 0 but not above the margin; *inconclusive* when the
interval covers 0 (the data cannot tell).
"""

from __future__ import annotations

import html
import math
from pathlib import Path

from grpokit.atomic import atomic_write_text
from grpokit.evaluation.report import _CSS, bar_chart_svg, line_chart_svg

__all__ = ["write_offline_report", "headline", "verdict_word"]

_EXTRA_CSS = """
.headline{font-size:1.25em;padding:.8em 1em;border-radius:6px;margin:1em 0}
.promote{background:#e5f5e0;border:1px solid #31a354} .hold{background:#fde0dd;border:1px solid #c51b8a}
.inconclusive{background:#fff7bc;border:1px solid #d95f0e} .warn{background:#fff7bc;padding:.5em 1em;border-left:4px solid #d95f0e}
"""


def _num(v, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:,.{digits}f}"


def _signed(v, digits: int = 2) -> str:
    return "–" if v is None or not math.isfinite(float(v)) else f"{v:+,.{digits}f}"


def _pct(v, digits: int = 1) -> str:
    return "–" if v is None else f"{100 * v:.{digits}f} %"


def verdict_word(ci_low: float, ci_high: float, margin: float = 0.0) -> str:
    """PROMOTE (interval above the margin), HOLD (below 0, or above 0 but not the margin), inconclusive."""
    if ci_low > margin:
        return "PROMOTE"
    if ci_high < 0 or ci_low > 0:
        return "HOLD"
    return "inconclusive"


def _unit(summary: dict) -> str:
    return summary.get("reward_unit") or f"{summary.get('reward') or 'reward'} per decision"


def headline(improvement: dict, current: dict, unit: str, margin: float = 0.0, alpha: float = 0.05) -> tuple[str, str]:
    """``(text, verdict)``: the sentence a manager reads first."""
    v, lo, hi = improvement["value"], improvement["ci_low"], improvement["ci_high"]
    base = current.get("value")
    rel = f" ({_signed(100 * v / abs(base), 1)} %)" if base not in (None, 0) else ""
    word = verdict_word(lo, hi, margin)
    level = int(round(100 * (1 - alpha)))
    text = (f"New policy: {_signed(v)} {unit}{rel} vs the current policy, {level} % CI "
            f"[{_signed(lo)}, {_signed(hi)}]: {word}")
    return text, word


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<div class='scroll'><table><tr>{head}</tr>{body}</table></div>"


def _mix_table(mix: dict, per_group: dict | None, logged: dict | None) -> str:
    actions = list(mix)
    rows = []
    if logged:
        rows.append(["current policy (logged)", *[_pct(logged.get(a, 0.0)) for a in actions]])
    rows.append(["new policy, everyone", *[_pct(mix[a]) for a in actions]])
    for g, m in (per_group or {}).items():
        rows.append([f"new policy, {g}", *[_pct(m.get(a, 0.0)) for a in actions]])
    return _table(["who", *actions], rows)


def _group_section(per_group: dict, unit: str, margin: float) -> list[str]:
    usable = {g: r for g, r in per_group.items() if "improvement" in r}
    if not usable:
        return []
    parts = ["<h2>Per group</h2>"]
    bars = {g: (r["improvement"]["value"], r["improvement"]["ci_low"], r["improvement"]["ci_high"])
            for g, r in usable.items()}
    parts.append(bar_chart_svg(bars, title=f"improvement vs current ({unit}); lines: 95 % confidence intervals"))
    rows = []
    for g, r in per_group.items():
        if "improvement" not in r:
            rows.append([g, f"{r['n_rows']:,}", "–", "–", "–", r.get("skipped", "")])
            continue
        imp = r["improvement"]
        rows.append([g, f"{r['n_rows']:,}", _num(r["current"]["value"]), _num(r["candidate"]["value"]),
                     f"{_signed(imp['value'])} [{_signed(imp['ci_low'])}, {_signed(imp['ci_high'])}]",
                     verdict_word(imp["ci_low"], imp["ci_high"], margin)])
    parts.append(_table(["group", "rows", "current", "new", "improvement [95 % CI]", "verdict"], rows))
    return parts


def _uplift_section(curve: dict | None, unit: str) -> list[str]:
    if not curve:
        return []
    xs = [100 * f for f in curve["fraction"]]
    series = {"new policy, best-first": list(zip(xs, curve["gain"])), "random order": list(zip(xs, curve["random"]))}
    return ["<h2>Uplift (Qini) curve</h2>",
            "<p class='note'>Switch the customers the outcome model expects to gain most first: the gain per customer "
            f"of the whole base ({html.escape(unit)}) when the top x % get the new decision and the rest keep the current one "
            "(doubly robust estimate). The straight line is what switching customers in random order gives.</p>",
            line_chart_svg(series, title=f"cumulative gain ({unit})", xlabel="% of customers switched (best first)")]


def _explanation_section(expl: dict | None) -> list[str]:
    if not expl:
        return []
    return ["<h2>How the policy decides</h2>",
            f"<p>A decision tree of depth {expl.get('depth')} ({expl.get('n_leaves')} leaves), in the features' own units, "
            f"reproduces {100 * expl['fidelity']:.1f} % of the policy's decisions on held-out customers.</p>",
            f"<pre>{html.escape(expl['rules'])}</pre>"]


def write_offline_report(path: str | Path, summary: dict, *, kind: str = "learn",
                         curves: dict[str, list[tuple[float, float]]] | None = None) -> Path:
    """Write the page for a ``learn`` summary (``kind="learn"``) or an ``evaluate`` result (``"evaluate"``)."""
    unit = _unit(summary)
    title = "grpokit learn: a policy from your log" if kind == "learn" else "grpokit evaluate: the deployment gate"
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_CSS}{_EXTRA_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    if kind == "learn":
        hold = summary.get("holdout")
        gate = hold["gate"] if hold else None
        alpha = hold["alpha"] if hold else 0.05
        margin = 0.0
    else:
        gate, hold, alpha, margin = summary, None, summary.get("alpha", 0.05), summary.get("margin", 0.0)
    if gate is not None:
        text, word = headline(gate["improvement"], gate["current"], unit, margin, alpha)
        parts.append(f"<div class='headline {word.lower()}'><b>{html.escape(text)}</b></div>")
        n = summary.get("n_holdout") if kind == "learn" else summary.get("n_rows")
        parts.append(f"<p class='note'>{gate['method']} off-policy estimate on {n:,} "
                     f"{'held-out ' if kind == 'learn' else ''}logged decisions the policy never saw"
                     + (f"; the served rule: ε = {summary['served_rule']['epsilon']} ({summary['served_rule']['mode']})"
                        if summary.get("served_rule") else "") + ".</p>")
    else:
        parts.append("<p class='note'>no held-out rows (holdout = 0): only in-sample outcome-model values.</p>")
    if summary.get("verdict_line"):
        parts.append(f"<p><b>{html.escape(summary['verdict_line'][0].upper() + summary['verdict_line'][1:])}</b></p>")
    deg = summary.get("degeneration") or {}
    if deg.get("warning"):
        parts.append(f"<p class='warn'>warning: {html.escape(deg['warning'])}</p>")
    if summary.get("off_policy_assumption"):
        parts.append(f"<p class='note'>Assumption: {html.escape(summary['off_policy_assumption'])}.</p>")
    if hold:
        parts.append("<h2>New policy, best single action, current policy</h2>")
        vals = {"new policy": hold["learned"], f"everyone {hold['best_single']['action']}": hold["best_single"],
                "current (logged)": hold["logging"]}
        parts.append(bar_chart_svg({k: (v["value"], v["ci_low"], v["ci_high"]) for k, v in vals.items()},
                                   title=f"value ({unit}); lines: 95 % confidence intervals"))
        rows = [[k, _num(v["value"]), f"[{_num(v['ci_low'])}, {_num(v['ci_high'])}]"] for k, v in vals.items()]
        d = hold["learned_minus_best_single"]
        rows.append([f"new − everyone {hold['best_single']['action']}", _signed(d["value"]),
                     f"[{_signed(d['ci_low'])}, {_signed(d['ci_high'])}]"])
        parts.append(_table(["policy", f"value ({unit})", "95 % CI"], rows))
    elif kind == "evaluate":
        parts.append("<h2>Values</h2>")
        vals = {"new policy": summary["candidate"], "current (logged)": summary["current"]}
        parts.append(bar_chart_svg({k: (v["value"], v["ci_low"], v["ci_high"]) for k, v in vals.items()},
                                   title=f"value ({unit}); lines: 95 % confidence intervals"))
    if summary.get("decision_mix"):
        parts.append("<h2>Who gets which decision</h2><p class='note'>expected share of customers given each decision</p>")
        parts.append(_mix_table(summary["decision_mix"], summary.get("decision_mix_per_group"), summary.get("logged_mix")))
    per_group = (hold or {}).get("per_group") if kind == "learn" else summary.get("per_group")
    parts += _group_section(per_group or {}, unit, margin)
    parts += _uplift_section(summary.get("uplift_curve"), unit)
    parts += _explanation_section(summary.get("explanation"))
    if curves:
        parts.append("<h2>Training</h2>")
        for key, pts in curves.items():
            parts.append(line_chart_svg({key: pts}, title=key, height=180))
    if summary.get("roles"):
        parts.append("<h2>Columns</h2>")
        parts.append(_table(["column", "role", "kind", "why"],
                            [[r["column"], r["role"], r["kind"], r["reason"]] for r in summary["roles"]]))
    parts.append("</body></html>")
    return atomic_write_text(path, "".join(parts))
