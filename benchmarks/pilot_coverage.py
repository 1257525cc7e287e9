"""Coverage and width of the cohort pilot's 95 % interval on the marketing scenario (12 cohorts).

For each seed S: train the default example's GRPO policy (examples/marketing.toml, grpo.seed = S),
fit the best-single-offer baseline on a 20,000-decision uniform A/B log (as ``grpokit run`` does),
then run P pilots, each on fresh customers: a pre-period of 20,000 decisions all on best single
offer, then 20,000 pilot decisions. On the SAME pilot customers and decisions, two designs:

* new: cohorts stratified on the pre-period cohort mean (strata of 4), half of each treated;
  ANCOVA over cohorts on the pre-period mean, exact randomization-inference interval
  (``grpokit.pilot.simulate.simulate_cohort_pilot``, what ``grpokit run``'s pilot runs); its OLS t
  interval and the unit-level cluster-robust difference are reported beside it;
* the older design: ``grpokit.pilot.simulate.simulate_welch_pilot`` (Bernoulli coin per cohort, Welch
  over cohorts; ``grpokit.business.cluster_pilot`` and ``evaluation.pilot_design = "welch"``).

Coverage = share of pilots whose interval contains the true effect (the simulator's mean over
cohorts of expected value new − current on the pilot's customers); separation = share whose
interval lies above 0.

    python benchmarks/pilot_coverage.py --seeds 5 --pilots 40 --out runs/bench/pilot_coverage.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from grpokit.baselines import make_baseline
from grpokit.config import load_config
from grpokit.offline.io import read_log
from grpokit.pilot.simulate import simulate_cohort_pilot, simulate_welch_pilot
from grpokit.runner import build_trainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="examples/marketing.toml")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--pilots", type=int, default=40, help="pilots per seed")
    ap.add_argument("--size", type=int, default=20_000, help="pilot decisions")
    ap.add_argument("--pre-size", type=int, default=20_000, help="pre-period decisions")
    ap.add_argument("--design", default="strata", choices=["strata", "pairs", "complete"])
    ap.add_argument("--out", default="runs/bench/pilot_coverage.json")
    args = ap.parse_args()
    rows, per_seed = [], []
    t_start = time.perf_counter()
    for seed in range(args.seeds):
        cfg = load_config(args.config, [f"grpo.seed={seed}", f"evaluation.seed={seed}", "grpo.device=cpu"])
        t0 = time.perf_counter()
        trainer = build_trainer(cfg, None, False)
        trainer.train()
        train_s = time.perf_counter() - t0
        policy = trainer.policy.to("cpu").eval()
        sc = trainer.scenario
        log = read_log(sc.simulate_log(cfg.evaluation.log_size, "uniform", seed=seed + 101), sc.log_schema())
        best = make_baseline("best_single", sc.n_offers, control=0, seed=seed).fit(log.features, log.action,
                                                                                   log.reward)

        def current(ctx):
            return torch.as_tensor(best.decide(ctx.obs.double().numpy()), dtype=torch.long)

        seps = []
        for j in range(args.pilots):
            gen = torch.Generator().manual_seed(10_000 * seed + j)
            pre, ctx = sc.sample_contexts(args.pre_size, gen), sc.sample_contexts(args.size, gen)
            with torch.no_grad():
                new = policy.act(ctx.obs, ctx.group, ctx.mask)
            cur = current(ctx)
            r = simulate_cohort_pilot(sc, pre, current(pre), ctx, new, cur, design=args.design,
                                      seed=10_000 * seed + j)
            w = simulate_welch_pilot(sc, ctx, new, cur, seed=10_000 * seed + j)
            row = {"seed": seed, "pilot": j, "true": r["true_effect"], "new": [r["ci_low"], r["ci_high"]],
                   "estimate": r["estimate"], "t": [r["ci_t"]["ci_low"], r["ci_t"]["ci_high"]],
                   "unit": [r["unit_level"]["ci_low"], r["unit_level"]["ci_high"]],
                   "welch": [w["ci_low"], w["ci_high"]], "welch_true": w["true_effect"], "mde": r["power"]["mde"],
                   "mde_unadjusted": r["power"]["mde_unadjusted"]}
            rows.append(row)
            seps.append(row["new"][0] > 0)
        first = rows[-args.pilots]
        per_seed.append({"seed": seed, "train_seconds": train_s, "first_pilot": first["new"],
                         "first_true": first["true"], "first_separates": first["new"][0] > 0,
                         "separation_rate": float(np.mean(seps))})
        print(json.dumps(per_seed[-1]), flush=True)
    truth = np.array([r["true"] for r in rows])

    def block(key):
        ci = np.array([r[key] for r in rows])
        return {"coverage": float(np.mean((ci[:, 0] <= truth) & (truth <= ci[:, 1]))),
                "mean_width": float(np.mean(ci[:, 1] - ci[:, 0])), "separates": float(np.mean(ci[:, 0] > 0))}

    table = {k: block(k) for k in ("new", "t", "unit", "welch")}
    est = np.array([r["estimate"] for r in rows])
    summary = {"pilots": len(rows), "design": args.design, "table": table,
               "width_ratio_new_vs_welch": table["new"]["mean_width"] / table["welch"]["mean_width"],
               "mean_true_effect": float(truth.mean()), "sd_estimate_minus_true": float(np.std(est - truth)),
               "mean_mde": float(np.mean([r["mde"] for r in rows])),
               "mean_mde_unadjusted": float(np.mean([r["mde_unadjusted"] for r in rows])),
               "per_seed": per_seed, "wall_seconds": time.perf_counter() - t_start, "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1))
    print("| interval | coverage | mean width | separates from 0 |\n| --- | --- | --- | --- |")
    names = {"new": "stratified + ANCOVA, randomization interval", "t": "same, OLS t interval (9 dof)",
             "unit": "unit-level difference, CR1 by cohort", "welch": "older design: coin per cohort, Welch"}
    for k, v in table.items():
        print(f"| {names[k]} | {v['coverage']:.3f} | {v['mean_width']:.2f} | {v['separates']:.3f} |")
    print(f"width ratio new / Welch: {summary['width_ratio_new_vs_welch']:.3f}; mean true effect "
          f"{summary['mean_true_effect']:.3f}; sd(estimate - truth) {summary['sd_estimate_minus_true']:.3f}; "
          f"predicted MDE (80 %) {summary['mean_mde']:.2f} (unadjusted {summary['mean_mde_unadjusted']:.2f}); "
          f"{summary['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
