"""Cohort pilots simulated on a scenario's ground truth (benchmarks, ``grpokit run``'s pilot, tests).

A pilot here is what a business would run: a pre-period in which every cohort is served by the
current policy (its cohort means are the covariate and the stratification key), then a pilot period
in which the design's treated cohorts get the new policy. Outcomes are sampled from the scenario
under the joint assignment (so spillover stays inside a cohort); the outcome is the ``profit``
component when the reward has components (allocation's total is ``reward``). The estimand (the
``true_effect``) is the mean over the pilot's cohorts of

    (cohort's mean expected value under the new policy − under the current one) on the pilot's units.

:func:`simulate_cohort_pilot`: the design that can decide (stratified or paired on the pre-period,
ANCOVA over cohorts, randomization interval; :mod:`grpokit.pilot.analysis`), with its power figure.
:func:`simulate_welch_pilot`: the older design, a fair coin per cohort (redrawn until each arm has
two cohorts) and the plain difference of arm means with a Welch t interval over cohorts, no
pre-period; kept to compare against.
"""

from __future__ import annotations

import numpy as np
import torch

from grpokit.pilot.analysis import analyze_cohorts, cluster_robust_difference, welch_difference
from grpokit.pilot.design import plan_pilot
from grpokit.pilot.power import power_plan, variance_components

__all__ = ["sampled_outcome", "cohort_stats", "true_cohort_effect", "simulate_cohort_pilot", "simulate_welch_pilot"]


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


def true_cohort_effect(scenario, contexts, new: torch.Tensor, current: torch.Tensor) -> float:
    """The estimand: mean over cohorts c of mean_{i in c} (E[r_i | new_i] − E[r_i | current_i])."""
    group = contexts.group.cpu().numpy()
    exp_new = scenario.expected_reward(contexts, new.unsqueeze(1))[:, 0].double().cpu().numpy()
    exp_cur = scenario.expected_reward(contexts, current.unsqueeze(1))[:, 0].double().cpu().numpy()
    return float(np.mean([exp_new[group == c].mean() - exp_cur[group == c].mean() for c in np.unique(group)]))


def _joint(treated_units: torch.Tensor, new: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """Each unit's decision: ``new`` where its cohort is treated, else ``current``."""
    return torch.where(treated_units.unsqueeze(-1) if new.ndim > 1 else treated_units, new, current)


def simulate_cohort_pilot(scenario, pre_contexts, pre_current: torch.Tensor, contexts, new: torch.Tensor,
                          current: torch.Tensor, *, design: str = "strata", stratum_size: int = 4, seed: int = 0,
                          alpha: float = 0.05, effect: float | None = None) -> dict:
    """Pre-period on ``pre_contexts`` (all on ``pre_current``), then the designed pilot on ``contexts``.

    Seeds: ``seed`` draws the outcomes (pre-period, then pilot), ``seed + 1`` the design's
    assignment, ``seed + 2`` the randomization draws when the design has too many assignments to list.
    """
    gen = torch.Generator().manual_seed(seed)
    cohorts = np.unique(contexts.group.cpu().numpy())
    names = [scenario.group_names[int(c)] for c in cohorts]
    pre_group = pre_contexts.group.cpu().numpy()
    pre_y = sampled_outcome(scenario, pre_contexts, pre_current, gen)
    x, n_pre, v_pre = cohort_stats(pre_y, pre_group, cohorts)
    thin = [names[i] for i in np.flatnonzero(n_pre < 2)]
    if thin:
        raise ValueError(f"cohort(s) {thin} have fewer than 2 units in the pre-period ({len(pre_contexts)} units): "
                         "a stratified pilot needs each cohort's pre-period mean and variance")
    plan = plan_pilot(names, x, n_pre, design=design, stratum_size=stratum_size, seed=seed + 1, alpha=alpha)
    treated = np.asarray(plan.treated)
    group = contexts.group.cpu().numpy()
    unit_treated = treated[np.searchsorted(cohorts, group)]
    y_unit = sampled_outcome(scenario, contexts, _joint(torch.as_tensor(unit_treated), new, current), gen)
    y, n_post, _ = cohort_stats(y_unit, group, cohorts)
    result = analyze_cohorts(y, treated, x, strata=plan.strata, design=design, alpha=alpha, seed=seed + 2)
    result["unit_level"] = cluster_robust_difference(y_unit, unit_treated, group, alpha)
    comp = variance_components(x, n_pre, v_pre)
    if len(cohorts) >= 5:
        result["power"] = power_plan(comp, cohorts=len(cohorts), decisions=len(contexts), effect=effect, alpha=alpha)
    else:
        result["power"] = {"note": "no power figure below 5 cohorts", **comp}
    result.update({"true_effect": true_cohort_effect(scenario, contexts, new, current), "units": len(contexts),
                   "pre_units": len(pre_contexts), "cohorts": names, "strata": plan.strata,
                   "treated_cohorts": plan.treated_cohorts, "cohort_means": y.tolist(), "pre_means": x.tolist(),
                   "cohort_units": n_post.tolist()})
    return result


def simulate_welch_pilot(scenario, contexts, new: torch.Tensor, current: torch.Tensor, *, seed: int = 0,
                         alpha: float = 0.05) -> dict:
    """The older design on ``contexts``: a coin per cohort, Welch over the arms' cohort means (module doc).

    ``seed`` draws the coins (redrawn, at most 100 times, until each arm has >= 2 cohorts), then the outcomes.
    """
    gen = torch.Generator().manual_seed(seed)
    cohorts = torch.unique(contexts.group)
    if len(cohorts) < 4:
        raise ValueError(f"a cluster pilot needs at least 4 cohorts, the population has {len(cohorts)}")
    for _ in range(100):
        treat_cohort = torch.rand(len(cohorts), generator=gen) < 0.5
        if 2 <= int(treat_cohort.sum()) <= len(cohorts) - 2:
            break
    else:
        raise RuntimeError(f"100 coin draws over {len(cohorts)} cohorts never gave each arm 2 cohorts")
    treated_units = treat_cohort[torch.searchsorted(cohorts, contexts.group)]
    y_unit = sampled_outcome(scenario, contexts, _joint(treated_units, new, current), gen)
    group, c = contexts.group.cpu().numpy(), cohorts.cpu().numpy()
    means, _, _ = cohort_stats(y_unit, group, c)
    t = treat_cohort.cpu().numpy()
    w = welch_difference(means, t, alpha)
    names = getattr(scenario, "group_names", None)
    return {"cohorts_new": int(t.sum()), "cohorts_current": int((~t).sum()), "units": len(contexts),
            "difference": w["estimate"], "ci_low": w["ci_low"], "ci_high": w["ci_high"], "se": w["se"],
            "dof": w["dof"], "true_effect": true_cohort_effect(scenario, contexts, new, current), "alpha": alpha,
            "treated_cohorts": [str(names[int(k)]) if names else str(int(k)) for k in c[t]]}
