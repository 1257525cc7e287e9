"""Summarize `grpokit fusion run` seeds into the BENCHMARKS.md tables.

    python benchmarks/fusion_table.py runs/bench/f5_s0 runs/bench/f5_s1 ...

Prints one markdown row per policy: true GPM and OPM (mean ± sd over the runs), the per-seed change
against ``static_tuned`` (paired: every policy of a run is evaluated on the same requests), how
many seeds are above it, and the chosen prior weights when the runs selected one.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def _fmt_pct(xs: list[float]) -> str:
    return ", ".join(f"{100 * x:+.2f} %" for x in xs)


def table(run_dirs: list[Path]) -> str:
    runs = [json.loads((d / "summary.json").read_text()) for d in run_dirs]
    names = list(runs[0]["policies"])
    lines = ["| policy | true GPM (mean ± sd) | true OPM (mean ± sd) | GPM vs static_tuned per seed (mean) "
             "| OPM vs static_tuned per seed (mean) | seeds above static_tuned (GPM / OPM) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name in names:
        gpm = [r["policies"][name]["true"]["gpm"] for r in runs if name in r["policies"]]
        opm = [r["policies"][name]["true"]["opm"] for r in runs if name in r["policies"]]
        dg = [r["policies"][name]["gpm_vs_static_tuned"] for r in runs if name in r["policies"]]
        do = [r["policies"][name]["opm_vs_static_tuned"] for r in runs if name in r["policies"]]
        sd = (lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0)
        lines.append(
            f"| {name} | {statistics.mean(gpm):.1f} ± {sd(gpm):.1f} | {statistics.mean(opm):.2f} ± {sd(opm):.2f} "
            f"| {_fmt_pct(dg)} ({100 * statistics.mean(dg):+.2f} %) | {_fmt_pct(do)} ({100 * statistics.mean(do):+.2f} %) "
            f"| {sum(x > 0 for x in dg)}/{len(dg)} / {sum(x > 0 for x in do)}/{len(do)} |"
        )
    chosen = [r.get("prior_weight_selection") for r in runs]
    if any(chosen):
        def static_choice(c):
            return "–" if c is None else f"{(c['static'] if 'static' in c else c)['chosen']:g}"

        lines.append("")
        lines.append("prior weight chosen per seed: GRADE " + ", ".join("–" if c is None else f"{c['chosen']:g}" for c in chosen)
                     + "; static weights " + ", ".join(static_choice(c) for c in chosen))
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python benchmarks/fusion_table.py RUN_DIR [RUN_DIR ...]")
    print(table([Path(p) for p in sys.argv[1:]]))
