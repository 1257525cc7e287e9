"""The budgeted marketing policy over seeds, against two budget-constrained references.

    python benchmarks/budget_seeds.py --preset example --seeds 0 1 2 3 4 [--set grpo.budget_spend=blend ...]
    python benchmarks/budget_seeds.py --preset test --seeds 0 1 2 3 4
    python benchmarks/budget_seeds.py --preset example --set grpo.group_sampling=cover --set grpo.ent_coef=0.05 --set grpo.steps=1600

For each ``grpo.seed`` it trains the policy (``build_trainer``, as ``grpokit run`` does) and scores
its deployed (mode) decisions on a seeded population against

* ``oracle``: the scenario's budget-constrained oracle (``oracle_actions`` under
  ``scenario.budget_per_customer``; it sees the latent segment, base probability and basket), the
  issue's reference;
* ``bayes``: the best budget-constrained policy of the *observed* features, the argmax of
  E[profit | x, a] − λ·E[spend | x, a] with the smallest λ whose true mean spend is within budget.
  E[· | x, a] is exact under the simulator's generative model: the segment posterior
  π(s | x) ∝ share_s · P(channel | s) · P(region | s) · Π_j N(x_j; profile_sj, σ²) ·
  N(x_mon; μ_s, τ² + σ²), the basket's lognormal posterior given x_mon and s, and E[p | s, a] over the
  base probability's clipped normal (p and the basket are independent given s). No policy of x can
  beat it in expectation (up to the Lagrangian's integrality on a finite population);
  oracle − bayes is the information the features hide, bayes − grpo is what the learner loses.

Presets: ``example`` = the issue's command (examples/marketing.toml, budget 1.0, the run's
evaluation population: 20 000 customers, seed evaluation.seed + 7); ``test`` = tests/test_budget.py's
marketing settings (feature noise 0.1, ent_coef 0.01, 512 eval, scored on 100 000 customers, seed 5);
``nobudget`` = the config as given (no budget unless it sets one), scored as ``example`` against the
unconstrained oracle and Bayes policy.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import torch

from grpokit.config import load_config
from grpokit.runner import build_trainer
from grpokit.scenarios.marketing import MarketingScenario

PRESETS = {
    "example": {"over": ["scenario.budget_per_customer=1.0", "grpo.budget=1.0"], "n": 20_000, "seed": 7},
    "nobudget": {"over": [], "n": 20_000, "seed": 7},
    "test": {"over": ["grpo.steps=400", "grpo.budget=1.0", "grpo.ent_coef=0.01", "scenario.feature_noise=0.1",
                      "grpo.eval_size=512", "grpo.eval_every=100", "scenario.budget_per_customer=1.0"],
             "n": 100_000, "seed": 5},
}


def posterior_tables(sc: MarketingScenario, ctx, n_mc: int = 400_000) -> tuple[torch.Tensor, torch.Tensor]:
    """E[profit | x, a] and E[spend | x, a], ``[B, A]`` each, from the observed features only."""
    c = sc.config
    t = sc._tables(torch.device("cpu"), torch.float64)
    obs = ctx.obs.double()
    sig2 = max(c.feature_noise, 1e-6) ** 2
    nch = sc.n_channels
    ch = obs[:, 4:4 + nch].argmax(1)
    rg = obs[:, 4 + nch:].argmax(1)
    logp = t["shares"].log()[None] + t["channel_probs"].log()[:, ch].T + t["region_probs"].log()[:, rg].T
    prof = t["profiles"]  # [S, 3]: recency, frequency, tenure
    for j, col in ((0, 0), (1, 1), (2, 3)):
        logp = logp - 0.5 * (obs[:, col:col + 1] - prof[None, :, j]) ** 2 / sig2
    # monetary: u = log(m / ref) / L with log m ~ N(log bm − s²/2, s²) given s; x = u + noise
    L, s = c.monetary_log_scale, c.basket_spread
    mu = (torch.log(t["basket_means"] / c.monetary_ref) - 0.5 * s**2) / L  # [S]
    v0 = (s / L) ** 2
    x = obs[:, 2:3]
    logp = logp - 0.5 * (x - mu[None]) ** 2 / (v0 + sig2) - 0.5 * math.log(v0 + sig2)
    post = torch.softmax(logp, 1)  # [B, S]
    vp = 1.0 / (1.0 / v0 + 1.0 / sig2)
    mp = vp * (mu[None] / v0 + x / sig2)  # [B, S]
    e_m = c.monetary_ref * torch.exp(L * mp + 0.5 * L**2 * vp)  # E[m | s, x]
    z = torch.randn(n_mc, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    base = (t["base_probs"][:, None] + c.base_prob_spread * z[None]).clamp(0, 1)  # [S, n]
    e_p = (base[:, None, :] + t["response"][:, :, None]).clamp(0, 1).mean(-1)  # [S, A]
    d, f, k = t["discount"], t["free_shipping"], t["contact"]
    unit = e_m[:, :, None] * (c.gross_margin - d) - c.shipping_cost * f  # [B, S, A]
    profit = (post[:, :, None] * (e_p[None] * unit - c.contact_cost * k)).sum(1)
    money = e_m[:, :, None] * d + c.shipping_cost * f
    spend = (post[:, :, None] * (c.contact_cost * k + e_p[None] * money)).sum(1)
    return profit, spend


def bayes_constrained(sc: MarketingScenario, ctx, budget: float | None) -> torch.Tensor:
    profit, spend = posterior_tables(sc, ctx)
    if budget is None:
        return profit.argmax(1)
    if sc.config.spillover != 0:
        raise ValueError("the Bayes reference assumes spillover = 0 (each customer's spend is its own)")
    true_spend = lambda a: sc.true_value(ctx, a)["spend"]  # noqa: E731
    a_hi, lam = sc._lagrangian_argmax(profit, spend, true_spend, budget)
    if lam in (0.0, math.inf):
        return a_hi
    # the Lagrangian's integrality gap: customers with (nearly) the same posterior switch at the same λ,
    # so the spend jumps there (at low feature noise every persuadable moves from 20 % to 10 % off at
    # once). Fill the budget left at λ+ with the λ− choices, best Δprofit / Δspend first.
    a_lo = (profit - (lam * (1 - 1e-6)) * spend).argmax(1)
    idx = torch.arange(len(a_hi))
    moved = (a_lo != a_hi).nonzero()[:, 0]
    if len(moved) == 0:
        return a_hi
    dp = profit[moved, a_lo[moved]] - profit[moved, a_hi[moved]]
    ds = spend[moved, a_lo[moved]] - spend[moved, a_hi[moved]]
    order = moved[torch.argsort(-(dp / ds.clamp_min(1e-12)))]
    _, tspend = sc._no_spill_tables(ctx)  # the true per-customer spend, to judge feasibility as the oracle does
    room = budget * len(a_hi) - float(tspend[idx, a_hi].sum())
    extra = (tspend[order, a_lo[order]] - tspend[order, a_hi[order]]).cumsum(0)
    k = int((extra <= room).sum())
    out = a_hi.clone()
    out[order[:k]] = a_lo[order[:k]]
    return out


def one_seed(preset: dict, seed: int, extra: list[str], config: str) -> dict:
    cfg = load_config(config, preset["over"] + extra + [f"grpo.seed={seed}"])
    t0 = time.perf_counter()
    trainer = build_trainer(cfg)
    trainer.train()
    secs = time.perf_counter() - t0
    sc = MarketingScenario(cfg.scenario)
    ctx = sc.sample_contexts(preset["n"], torch.Generator().manual_seed(preset["seed"]))
    with torch.no_grad():
        got = sc.true_value(ctx, trainer.policy.to("cpu").eval().act(ctx.obs, ctx.group))
    oracle = sc.true_value(ctx, sc.oracle_actions(ctx))
    bayes = sc.true_value(ctx, bayes_constrained(sc, ctx, cfg.scenario.budget_per_customer))
    b = cfg.grpo.budget
    hist = trainer.budget.history if trainer.budget is not None else []
    return {"seed": seed, "value": got["value"], "spend": got["spend"], "oracle": oracle["value"],
            "oracle_spend": oracle["spend"], "bayes": bayes["value"], "bayes_spend": bayes["spend"],
            "share_oracle": got["value"] / oracle["value"], "share_bayes": got["value"] / bayes["value"],
            "bayes_share_oracle": bayes["value"] / oracle["value"],
            "spend_over_budget": None if b is None else got["spend"] / b - 1,
            "lambda_end": hist[-1] if hist else None, "train_s": secs,
            "offer_mix": got["offer_mix"], "offer_rate_by_segment": got["offer_rate_by_segment"],
            "calibration_offset": (trainer.budget_calibration or {}).get("offset")}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="example")
    ap.add_argument("--config", default="examples/marketing.toml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--set", dest="sets", action="append", default=[], help="extra KEY=VALUE overrides")
    ap.add_argument("--json", help="write the rows to this file")
    args = ap.parse_args(argv)
    preset = PRESETS[args.preset]
    rows = []
    print(f"preset {args.preset}, overrides {preset['over'] + args.sets}", flush=True)
    print("seed  value   spend/b-1  oracle  bayes   grpo/oracle  grpo/bayes  bayes/oracle  lambda  train_s", flush=True)
    for s in args.seeds:
        r = one_seed(preset, s, args.sets, args.config)
        rows.append(r)
        sob = r["spend_over_budget"]
        print(f"{s:4d}  {r['value']:.3f}  {'-' if sob is None else f'{100 * sob:+.2f} %':>9}  {r['oracle']:.3f}  "
              f"{r['bayes']:.3f}  {r['share_oracle']:.4f}       {r['share_bayes']:.4f}      {r['bayes_share_oracle']:.4f}"
              f"        {r['lambda_end'] if r['lambda_end'] is None else round(r['lambda_end'], 3)}  {r['train_s']:.1f}",
              flush=True)
    so = [r["share_oracle"] for r in rows]
    sb = [r["share_bayes"] for r in rows]
    print(f"grpo/oracle mean {sum(so) / len(so):.4f} (min {min(so):.4f}; {sum(x >= 0.98 for x in so)}/{len(so)} "
          f">= 0.98); grpo/bayes mean {sum(sb) / len(sb):.4f} (min {min(sb):.4f})", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"preset": args.preset, "overrides": preset["over"] + args.sets, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    sys.exit(main())
