"""Cohort pilots simulated on a scenario's ground truth (for benchmarks and ``grpokit run``'s pilot).

A pilot here is what a business would run: a pre-period in which every cohort is served by the
current policy (its cohort means are the covariate and the stratification key), then a pilot period
in which the design's treated cohorts get the new policy. Outcomes are sampled from the scenario
(the ``profit`` component when the reward has components); the true effect is the mean over cohorts
of (cohort's expected value under the new policy − under the current one) on the pilot's customers,
as in :func:`grpokit.business.cluster_pilot`.
"""

from __future__ import annotations

import numpy as np
import torch

from grpokit.loop.pilot_analysis import analyze_cohorts, cluster_robust_difference
from grpokit.loop.pilot_design import plan_pilot
from grpokit.loop.pilot_power import power_plan, variance_components

__all__ = ["sampled_outcome", "cohort_stats", "simulate_cohort_pilot"]


def sampled_outcome(scenario, contexts, actions: torch.Tensor, gen: torch.Generator) -> np.ndarray:
    """One sampled outcome per unit ``[B]`` of the joint assignment ``actions [B, *event]``."""
    sampled = scenario.reward(contexts, actions.unsqueeze(1), gen)
    if isinstance(sampled, dict):
        key = next((k for k in ("profit", "reward") if k in sampled), None)  # allocation's total is "reward"
        sampled = sampled[key] if key is not None else sum(sampled.values())
    return sampled[:, 0].double().cpu().numpy()


def cohort_stats(values: np.ndarray, cohort: np.ndarray, cohorts: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per cohort in ``cohorts``: mean, count and variance (ddof 1) of ``values``."""
    mean, n, var = [], [], []
    for c in cohorts:
        v = values[cohort == c]
        mean.append(v.mean() if len(v) else np.nan)
        n.append(len(v))
        var.append(v.var(ddof=1) if len(v) > 1 else np.nan)
    return np.array(mean), np.array(n), np.array(var)


def simulate_cohort_pilot(scenario, pre_contexts, pre_current: torch.Tensor, contexts, new: torch.Tensor,
                          current: torch.Tensor, *, design: str = "strata", stratum_size: int = 4, seed: int = 0,
                          alpha: float = 0.05, effect: float | None = None) -> dict:
    """Pre-period on ``pre_contexts`` (all on ``pre_current``), then the designed pilot on ``contexts``."""
    gen = torch.Generator().manual_seed(seed)
    cohorts = np.unique(contexts.group.cpu().numpy())
    names = [scenario.group_names[int(c)] for c in cohorts]
    pre_group = pre_contexts.group.cpu().numpy()
    pre_y = sampled_outcome(scenario, pre_contexts, pre_current, gen)
    x, n_pre, v_pre = cohort_stats(pre_y, pre_group, cohorts)
    plan = plan_pilot(names, x, n_pre, design=design, stratum_size=stratum_size, seed=seed + 1, alpha=alpha)
    treated = np.asarray(plan.treated)
    group = contexts.group.cpu().numpy()
    unit_treated = treated[np.searchsorted(cohorts, group)]
    mask = torch.as_tensor(unit_treated)
    assignment = torch.where(mask.unsqueeze(-1) if new.ndim > 1 else mask, new, current)
    y_unit = sampled_outcome(scenario, contexts, assignment, gen)
    y, n_post, _ = cohort_stats(y_unit, group, cohorts)
    exp_new = scenario.expected_reward(contexts, new.unsqueeze(1))[:, 0].double().cpu().numpy()
    exp_cur = scenario.expected_reward(contexts, current.unsqueeze(1))[:, 0].double().cpu().numpy()
    true_effect = float(np.mean([exp_new[group == c].mean() - exp_cur[group == c].mean() for c in cohorts]))
    result = analyze_cohorts(y, treated, x, strata=plan.strata, design=design, alpha=alpha, seed=seed + 2)
    result["unit_level"] = cluster_robust_difference(y_unit, unit_treated, group, alpha)
    comp = variance_components(x, n_pre, v_pre)
    result["power"] = power_plan(comp, cohorts=len(cohorts), decisions=len(contexts), effect=effect, alpha=alpha)
    result.update({"true_effect": true_effect, "units": len(contexts), "pre_units": len(pre_contexts),
                   "treated_cohorts": plan.treated_cohorts, "cohort_means": y.tolist(), "pre_means": x.tolist()})
    return result
