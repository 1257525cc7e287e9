"""Summarize `grpokit run` seeds into the BENCHMARKS.md business tables.

    python benchmarks/business_table.py marketing runs/bench/mk_s0 runs/bench/mk_s1 runs/bench/mk_s2
    python benchmarks/business_table.py logs runs/bench/mk_logs_s0 runs/bench/mk_logs_s1 runs/bench/mk_logs_s2
    python benchmarks/business_table.py pilot runs/bench/mk_s0 runs/bench/mk_s1 runs/bench/mk_s2
    python benchmarks/business_table.py spillover runs/bench/mk_spill_s0 runs/bench/mk_spill_s1 runs/bench/mk_spill_s2

One markdown row per policy, best first: the true value per customer (mean ± sd over the runs: each
run is a training seed and an evaluation population), the share of the oracle's value, the share
of the oracle's lift over no offer and over the current policy (docs/business.md), and GRPO's
margin over the policy in every seed (so a claim that GRPO beats a method is checked per seed).
``logs`` adds the DR estimates on the held-out log and whether their 95 % intervals covered the
true value. ``spillover`` adds the offer rate to the sure things (mean over the runs). ``pilot`` gives one row per run: the pilot's design, its difference with its 95 % interval
(the randomization interval of the stratified design by default), the true effect it estimates,
whether the interval covers it and excludes 0, the MDE, and the older Welch design beside it. Every
figure is read from the runs' summary.json; nothing is typed by hand.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def _sd(xs: list[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def _mean(xs: list[float | None]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.mean(xs) if xs else None


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def table(kind: str, run_dirs: list[Path]) -> str:
    """The markdown table of ``kind`` ("marketing", "logs", "spillover" or "pilot") over the runs in ``run_dirs``."""
    if kind not in ("marketing", "logs", "spillover", "pilot"):
        raise SystemExit(f"unknown table {kind!r}: choose marketing, logs, spillover or pilot")
    runs = [json.loads((Path(d) / "summary.json").read_text()) for d in run_dirs]
    if kind == "pilot":
        return _pilot_table(runs)
    names = [n for n in runs[0]["policies"] if all(n in r["policies"] for r in runs)]
    current = (runs[0].get("lift_references") or {}).get("current") or "current"
    mean_value = {n: statistics.mean(r["policies"][n]["value"] for r in runs) for n in names}
    names.sort(key=lambda n: (n != "oracle", -mean_value[n]))
    names = names[1:] + names[:1]  # oracle last
    head = ["policy", f"value (mean ± sd, {len(runs)} seeds)" if len(runs) > 1 else "value (one run)", "share of oracle", "lift share vs no offer",
            f"lift share vs {current}"]
    if kind == "logs":
        head += ["DR estimate, held-out log (mean)", "DR 95 % CI covers the true value"]
    head += ["spend", *(["offer rate, sure things"] if kind == "spillover" else []), "grpo − this, per seed"]
    rows = []
    for n in names:
        p = [r["policies"][n] for r in runs]
        v = [b["value"] for b in p]
        row = [f"**{n}**" if n == "grpo" else n, f"{statistics.mean(v):.3f} ± {_sd(v):.3f}" if len(v) > 1 else f"{v[0]:.3f}",
               _pct(_mean([b.get("share_of_oracle") for b in p])),
               _pct(_mean([b.get("lift_share_vs_no_offer") for b in p])),
               _pct(_mean([b.get("lift_share_vs_current") for b in p]))]
        if kind == "logs":
            o = [b.get("off_policy") for b in p]
            if all(o):
                row.append(f"{statistics.mean(x['value'] for x in o):.3f}")
                row.append(f"{sum(x['ci_low'] <= b['value'] <= x['ci_high'] for x, b in zip(o, p))}/{len(o)}")
            else:
                row += ["–", "–"]
        spend = _mean([b.get("spend") for b in p])
        row.append("–" if spend is None else f"{spend:.2f}")
        if kind == "spillover":
            rate = _mean([b.get("offer_rate_sure_things") for b in p])
            row.append("–" if rate is None else f"{rate:.2f}")
        margins = [r["policies"]["grpo"]["value"] - b["value"] for r, b in zip(runs, p)]
        row.append("–" if n == "grpo" else ", ".join(f"{m:+.3f}" for m in margins)
                   + f" ({sum(m > 0 for m in margins)}/{len(margins)} above)")
        rows.append(row)
    keep = [j for j in range(len(head)) if any(r[j] != "–" for r in rows)]  # drop columns no policy has (pricing: no lift, no spend)
    lines = ["| " + " | ".join(head[j] for j in keep) + " |", "| " + " | ".join("---" for _ in keep) + " |"]
    lines += ["| " + " | ".join(r[j] for j in keep) + " |" for r in rows]
    return "\n".join(lines)


def _pilot_table(runs: list[dict]) -> str:
    """One row per run: the pilot's design, its estimate and 95 % interval, the true effect, the MDE,
    and the older coin-per-cohort Welch design on the same customers (``pilot.welch``) beside it."""
    def ci(p: dict) -> str:
        return f"{p['difference']:.2f} [{p['ci_low']:.2f}, {p['ci_high']:.2f}]"

    def yes(cond: bool) -> str:
        return "yes" if cond else "no"

    lines = ["| evaluation.seed | design | cohorts new / current | difference [95 % CI] | width | true effect "
             "| CI covers the true effect | CI excludes 0 | MDE (80 %) | older design: coin per cohort, Welch "
             "[95 % CI] | Welch width | Welch excludes 0 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in runs:
        p = r["pilot"]
        w = p.get("welch")
        mde = "–" if p.get("mde") is None else f"{p['mde']:.2f}"
        welch = (["–", "–", "–"] if not w else
                 [ci(w), f"{w['ci_high'] - w['ci_low']:.2f}", yes(w["ci_low"] > 0 or w["ci_high"] < 0)])
        cells = [str(r["seeds"]["evaluation.seed"]), p.get("design", "welch"), f"{p['cohorts_new']} / {p['cohorts_current']}",
                 ci(p), f"{p['ci_high'] - p['ci_low']:.2f}", f"{p['true_effect']:.2f}",
                 yes(p["ci_low"] <= p["true_effect"] <= p["ci_high"]), yes(p["ci_low"] > 0 or p["ci_high"] < 0), mde,
                 *welch]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        raise SystemExit(__doc__)
    print(table(argv[0], [Path(a) for a in argv[1:]]))


if __name__ == "__main__":
    main(sys.argv[1:])
