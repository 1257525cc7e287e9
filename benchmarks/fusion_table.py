"""Summarize `grpokit fusion run` seeds into the BENCHMARKS.md tables.

    python benchmarks/fusion_table.py runs/bench/f5_s0 runs/bench/f5_s1 ...
    python benchmarks/fusion_table.py --choice "GMV, miscalibration 2" runs/bench/k5_s0 ... -- "GMV, miscalibration 4" runs/bench/kh5_s0 ...

Prints one markdown row per policy: true GPM and OPM (mean ± sd over the runs), the per-seed change
against ``static_tuned`` (paired: every policy of a run is evaluated on the same requests), how
many seeds are above it, and the chosen prior weights when the runs selected one.

``--choice``: is the held-out choice of the prior weight λ right? Every candidate GRADE of a run
(``RUN_DIR/prior_weight_<λ>/checkpoint.pt``, trained with ``fusion.prior_weight_grid``) scored on
the truth afterwards, on the run's own evaluation requests: true GPM / static_tuned's − 1 per λ
(the truly best in bold) and the λ the run chose. The chosen candidate's figure must equal the
run's ``grade`` row; the script stops if it does not.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def _fmt_pct(xs: list[float]) -> str:
    return ", ".join(f"{100 * x:+.2f} %" for x in xs)


def _row(label: str, gpm, opm, dg, do) -> str:
    sd = (lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0)
    return (f"| {label} | {statistics.mean(gpm):.1f} ± {sd(gpm):.1f} | {statistics.mean(opm):.2f} ± {sd(opm):.2f} "
            f"| {_fmt_pct(dg)} ({100 * statistics.mean(dg):+.2f} %) | {_fmt_pct(do)} ({100 * statistics.mean(do):+.2f} %) "
            f"| {sum(x > 0 for x in dg)}/{len(dg)} / {sum(x > 0 for x in do)}/{len(do)} |")


def table(run_dirs: list[Path], extra: list[tuple[str, list[Path], str]] | None = None) -> str:
    """``extra``: rows ``(label, other run dirs, policy)``: that policy of the other runs (one per run of
    ``run_dirs``, same seeds and evaluation requests) against the static_tuned of ``run_dirs``."""
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
        lines.append(_row(name, gpm, opm, dg, do))
    for label, dirs, name in extra or []:
        others = [json.loads((Path(d) / "summary.json").read_text()) for d in dirs]
        if len(others) != len(runs):
            raise SystemExit(f"row {label!r}: {len(others)} runs for {len(runs)} base runs")
        gpm, opm, dg, do = [], [], [], []
        for d, r, o in zip(dirs, runs, others):
            # the same evaluation requests: the untuned default weights score the same
            if o["policies"]["static_default"]["true"] != r["policies"]["static_default"]["true"]:
                raise SystemExit(f"{d}: its evaluation requests differ from the base run's (static_default differs)")
            p, base = o["policies"][name]["true"], r["policies"]["static_tuned"]["true"]
            gpm.append(p["gpm"]), opm.append(p["opm"]), dg.append(p["gpm"] / base["gpm"] - 1.0), do.append(p["opm"] / base["opm"] - 1.0)
        lines.append(_row(label, gpm, opm, dg, do))
    chosen = [r.get("prior_weight_selection") for r in runs]
    if any(chosen):
        def static_choice(c):
            return "–" if c is None else f"{(c['static'] if 'static' in c else c)['chosen']:g}"

        lines.append("")
        lines.append("prior weight chosen per seed: GRADE " + ", ".join("–" if c is None else f"{c['chosen']:g}" for c in chosen)
                     + "; static weights " + ", ".join(static_choice(c) for c in chosen))
    return "\n".join(lines)


def candidate_gpm(run_dir: Path) -> tuple[dict[float, float], float]:
    """λ -> true GPM of the GRADE trained with prior weight λ, relative to the run's static_tuned; and the chosen λ."""
    import torch

    from grpokit.config import load_config
    from grpokit.grpo.trainer import load_checkpoint
    from grpokit.ranking.grade import _mean_weights
    from grpokit.runner import build_policy
    from grpokit.scenarios.registry import scenario_from_config

    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    sel = summary.get("prior_weight_selection") or {}
    if not (sel.get("policy") or {}).get("holdout_score"):
        raise SystemExit(f"{run_dir}: no per-λ GRADE policies (the run needs fusion.prior_weight_grid and prior_weight_select = 'policy')")
    config = load_config(run_dir / "config.toml")
    fc = config.fusion
    scenario = scenario_from_config(config.scenario)
    contexts = scenario.sample_contexts(fc.eval_size, torch.Generator().manual_seed(fc.seed + 97))  # as run_fusion's evaluation
    base = summary["policies"]["static_tuned"]["true"]["gpm"]
    out = {}
    for lam in fc.prior_weight_grid:
        policy = build_policy(config, scenario)
        policy.load_state_dict(load_checkpoint(run_dir / f"prior_weight_{lam:g}" / "checkpoint.pt")["policy"])
        w = _mean_weights(policy, contexts.obs, contexts.group)
        out[float(lam)] = scenario.true_metrics(contexts, w)["gpm"] / base - 1.0
    chosen = float(sel["chosen"])
    if abs(out[chosen] - summary["policies"]["grade"]["gpm_vs_static_tuned"]) > 1e-9:
        raise SystemExit(f"{run_dir}: the chosen λ = {chosen:g} candidate scores {out[chosen]:+.6f}, the run's grade "
                         f"{summary['policies']['grade']['gpm_vs_static_tuned']:+.6f}: not the same evaluation")
    return out, chosen


def choice_table(groups: list[tuple[str, list[Path]]]) -> str:
    """The held-out-choice table: one row per run (seed), true GPM vs static_tuned per λ, the truly best in bold."""
    rows, grid = [], None
    for label, dirs in groups:
        for i, d in enumerate(dirs):
            scores, chosen = candidate_gpm(d)
            grid = grid or list(scores)
            if list(scores) != grid:
                raise SystemExit(f"{d}: prior-weight grid {list(scores)} differs from {grid}")
            from grpokit.config import load_config

            seed = load_config(Path(d) / "config.toml").fusion.seed
            best = max(scores, key=scores.get)
            cells = [(f"**{100 * v:+.2f} %**" if lam == best else f"{100 * v:+.2f} %") for lam, v in scores.items()]
            rows.append((f"| {label} | " if i == 0 else "| | ") + f"{seed} | " + " | ".join(cells) + f" | {chosen:g} |")
    head = "| run | seed | " + " | ".join(f"λ = {lam:g}" for lam in grid) + " | chosen |"
    return "\n".join([head, "| " + " | ".join(["---"] * (len(grid) + 3)) + " |", *rows])


def _choice_args(args: list[str]) -> list[tuple[str, list[Path]]]:
    groups, cur = [], None
    for a in args:
        if a == "--":
            cur = None
        elif cur is None:
            cur = (a, [])
            groups.append(cur)
        else:
            cur[1].append(Path(a))
    if not groups or any(not dirs for _, dirs in groups):
        sys.exit('usage: python benchmarks/fusion_table.py --choice LABEL RUN_DIR [RUN_DIR ...] [-- LABEL RUN_DIR ...]')
    return groups


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python benchmarks/fusion_table.py RUN_DIR [RUN_DIR ...]  |  --choice LABEL RUN_DIR ... [-- LABEL RUN_DIR ...]")
    if sys.argv[1] == "--choice":
        print(choice_table(_choice_args(sys.argv[2:])))
    else:
        print(table([Path(p) for p in sys.argv[1:]]))
