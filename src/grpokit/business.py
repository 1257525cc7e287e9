"""The product's main job: train a policy on a business scenario, compare it with the baselines a
data scientist would use, per cohort, run a cluster-randomized pilot, and write a report.

``grpokit run CONFIG --out RUN_DIR`` calls :func:`run_business`. Everything is scored on the
scenario's ground truth (``scenario.true_value`` when the scenario has one, e.g. with spillover,
else the expected reward of each unit's decision) on one fixed evaluation population.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from grpokit.atomic import atomic_write_json
from grpokit.config import RunConfig, config_to_toml
from grpokit.evaluation.values import evaluate_actions
from grpokit.runner import build_trainer
from grpokit.scenarios.base import Contexts, Scenario
from grpokit.scenarios.registry import scenario_from_config

__all__ = ["run_business", "evaluate_assignment", "cluster_pilot"]


def evaluate_assignment(scenario: Scenario, contexts: Contexts, actions: torch.Tensor) -> dict:
    """True value of one decision per unit: the scenario's own ``true_value`` (joint effects such as
    spillover included) when it has one, else the mean expected reward overall and per group."""
    if hasattr(scenario, "true_value"):
        return scenario.true_value(contexts, actions)
    return evaluate_actions(scenario, contexts, actions)


def _baseline_assignments(scenario: Scenario, contexts: Contexts, cfg) -> dict[str, torch.Tensor]:
    """The baselines that apply to this scenario, each as one decision per evaluation unit."""
    out: dict[str, torch.Tensor] = {}
    n = len(contexts)
    kind = scenario.action_spec["kind"]
    if kind == "categorical" and hasattr(scenario, "simulate_log"):
        from grpokit.baselines import make_baseline
        from grpokit.offline.io import read_log

        df = scenario.simulate_log(cfg.log_size, cfg.log_policy, seed=cfg.seed + 101)
        log = read_log(df, scenario.log_schema())
        x_eval = contexts.obs.double().cpu().numpy()
        for name in cfg.baselines:
            b = make_baseline(name, scenario.action_spec["n_actions"], control=0, seed=cfg.seed)
            b.fit(log.features, log.action, log.reward)
            out[name] = torch.as_tensor(b.decide(x_eval), dtype=torch.long)
    elif kind == "beta" and hasattr(scenario, "best_fixed_price"):
        out["best_fixed_price"] = torch.full((n,), float(scenario.best_fixed_price(seed=cfg.seed + 101)))
    elif kind == "dirichlet":
        k = scenario.action_spec["n_components"]
        out["equal_split"] = torch.full((n, k), 1.0 / k)
        if hasattr(scenario, "best_fixed_split"):
            out["best_fixed_split"] = scenario.best_fixed_split(seed=cfg.seed + 101).float().expand(n, k).clone()
    return out


def cluster_pilot(
    scenario: Scenario,
    contexts: Contexts,
    new: torch.Tensor,
    current: torch.Tensor,
    *,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict:
    """A pilot that randomizes whole cohorts: each cohort gets the new policy or the current one.

    Units' outcomes are sampled from the scenario under the joint assignment (so spillover stays
    inside a cohort and does not contaminate the comparison); the effect is the difference of the
    arms' mean cohort outcomes, with a Welch t interval over cohorts (the cohort is the unit of
    randomization). Also reports the true effect it estimates: the mean over cohorts of the cohort's
    expected value under the new policy minus under the current one (spillover acts within cohorts,
    so each cohort's value depends only on its own arm).
    """
    from scipy import stats

    gen = torch.Generator().manual_seed(seed)
    cohorts = torch.unique(contexts.group)
    if len(cohorts) < 4:
        raise ValueError(f"a cluster pilot needs at least 4 cohorts, the population has {len(cohorts)}")
    for _ in range(100):
        treat_cohort = torch.rand(len(cohorts), generator=gen) < 0.5
        if 2 <= int(treat_cohort.sum()) <= len(cohorts) - 2:
            break
    treated_units = treat_cohort[torch.searchsorted(cohorts, contexts.group)]
    assignment = torch.where(treated_units.unsqueeze(-1) if new.ndim > 1 else treated_units, new, current)
    sampled = scenario.reward(contexts, assignment.unsqueeze(1), gen)
    outcome = (sampled["profit"] if isinstance(sampled, dict) and "profit" in sampled else sampled)
    if isinstance(outcome, dict):
        outcome = sum(outcome.values())
    outcome = outcome[:, 0].double()
    # the estimand: the mean over cohorts of (cohort value if all on the new policy − if all on the current one)
    exp_new = scenario.expected_reward(contexts, new.unsqueeze(1))[:, 0].double()
    exp_cur = scenario.expected_reward(contexts, current.unsqueeze(1))[:, 0].double()
    means, effects = [], []
    for c in cohorts:
        rows = contexts.group == c
        means.append(float(outcome[rows].mean()))
        effects.append(float(exp_new[rows].mean() - exp_cur[rows].mean()))
    means = np.array(means)
    t, ctl = means[treat_cohort.numpy()], means[~treat_cohort.numpy()]
    diff = float(t.mean() - ctl.mean())
    se = math.sqrt(t.var(ddof=1) / len(t) + ctl.var(ddof=1) / len(ctl))
    dof = se**4 / ((t.var(ddof=1) / len(t)) ** 2 / (len(t) - 1) + (ctl.var(ddof=1) / len(ctl)) ** 2 / (len(ctl) - 1))
    q = float(stats.t.ppf(1 - alpha / 2, dof)) if math.isfinite(dof) and dof > 0 else float("nan")
    return {
        "cohorts_new": int(treat_cohort.sum()),
        "cohorts_current": int((~treat_cohort).sum()),
        "units": len(contexts),
        "difference": diff,
        "ci_low": diff - q * se,
        "ci_high": diff + q * se,
        "true_effect": float(np.mean(effects)),
        "alpha": alpha,
    }


def _assignment_table(scenario: Scenario, contexts: Contexts, actions: torch.Tensor) -> dict[str, dict[str, float]]:
    """Cohort -> decision -> share (categorical), or cohort -> mean decision (continuous)."""
    table: dict[str, dict[str, float]] = {}
    names = getattr(scenario, "action_names", None)
    for g, gname in enumerate(scenario.group_names):
        rows = contexts.group == g
        if not bool(rows.any()):
            continue
        a = actions[rows]
        if scenario.action_spec["kind"] == "categorical":
            counts = torch.bincount(a.long(), minlength=scenario.action_spec["n_actions"]).double() / len(a)
            table[gname] = {(names[i] if names else str(i)): float(v) for i, v in enumerate(counts)}
        elif a.ndim == 1:
            table[gname] = {"mean decision": float(a.double().mean())}
        else:
            comp = getattr(scenario, "channel_names", None) or [f"share {k}" for k in range(a.shape[1])]
            table[gname] = {str(comp[k]): float(v) for k, v in enumerate(a.double().mean(0))}
    return table


def _fairness(policies: dict, reference: str | None) -> None:
    """Per policy: the lowest cohort improvement over ``reference`` and the spread between cohorts."""
    if reference is None or reference not in policies:
        return
    ref = policies[reference].get("per_group") or {}
    for block in policies.values():
        pg = block.get("per_group") or {}
        diffs = [pg[g] - ref[g] for g in pg if pg.get(g) is not None and ref.get(g) is not None]
        if diffs:
            block["lowest_cohort_improvement"] = float(min(diffs))
            block["cohort_improvement_spread"] = float(max(diffs) - min(diffs))
            block["fairness_reference"] = reference


def _baseline_names(scenario: Scenario, cfg) -> list[str]:
    """Names of the baselines :func:`_baseline_assignments` produces for this scenario."""
    kind = scenario.action_spec["kind"]
    if kind == "categorical" and hasattr(scenario, "simulate_log"):
        return list(cfg.baselines)
    if kind == "beta" and hasattr(scenario, "best_fixed_price"):
        return ["best_fixed_price"]
    if kind == "dirichlet":
        return ["equal_split"] + (["best_fixed_split"] if hasattr(scenario, "best_fixed_split") else [])
    return []


def _check_evaluation_config(scenario: Scenario, config: RunConfig) -> None:
    """Reject settings that could only fail after training, naming the key."""
    cfg = config.evaluation
    if cfg.train_on == "logs":
        if not hasattr(scenario, "simulate_log"):
            raise ValueError(f"evaluation.train_on = 'logs' needs a scenario that simulates logs; {scenario.name!r} does not")
        if config.grpo.budget is not None:
            raise ValueError("grpo.budget is not supported with evaluation.train_on = 'logs' yet: learning from logs "
                             "has no spend model; train on the simulation, or drop the budget")
    if cfg.pilot and scenario.n_groups >= 4:
        names = _baseline_names(scenario, cfg)
        if cfg.current_policy not in names:
            raise ValueError(f"evaluation.current_policy = {cfg.current_policy!r}: the pilot's current policy must be "
                             f"one of this scenario's baselines {names}")


def run_business(config: RunConfig, out_dir: str | Path, *, progress: bool = False, store: str | Path | None = None) -> dict:
    """Train, evaluate against the baselines and the oracle, pilot, report. Returns ``summary.json``'s content."""
    from grpokit.evaluation.explain import explain_policy
    from grpokit.evaluation.report import write_report

    cfg = config.evaluation
    out = Path(out_dir)
    if (out / "summary.json").exists():
        raise FileExistsError(f"{out} already holds a run: choose another --out")
    scenario = scenario_from_config(config.scenario)
    _check_evaluation_config(scenario, config)  # fail before any training
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.toml").write_text(config_to_toml(config))
    (out / "metrics.jsonl").write_text("")
    t0 = time.perf_counter()
    trainer = None
    if cfg.train_on == "logs":
        policy, train_summary = _learn_from_simulated_log(scenario, config)
    else:
        trainer = build_trainer(config, out, progress)
        trainer.summary_file = "train_summary.json"  # summary.json is this pipeline's, written last
        train_summary = trainer.train()
        policy = trainer.policy
        scenario = trainer.scenario
    train_seconds = time.perf_counter() - t0

    eval_gen = torch.Generator().manual_seed(cfg.seed + 7)
    contexts = scenario.sample_contexts(cfg.eval_size, eval_gen)
    with torch.no_grad():
        policy_cpu = policy.to("cpu").eval()
        grpo_actions = policy_cpu.act(contexts.obs, contexts.group, contexts.mask)
    assignments: dict[str, torch.Tensor] = {"grpo": grpo_actions}

    extra_seconds = {}
    if cfg.compare_ignore_spillover and cfg.train_on == "simulation" and getattr(scenario.config, "spillover", 0):
        blind = config.model_copy(deep=True)
        blind.scenario.spillover = 0.0
        t1 = time.perf_counter()
        blind_trainer = build_trainer(blind, None, False)
        blind_trainer.train()
        extra_seconds["grpo_ignoring_spillover"] = time.perf_counter() - t1
        with torch.no_grad():
            assignments["grpo_ignoring_spillover"] = blind_trainer.policy.to("cpu").act(
                contexts.obs, contexts.group, contexts.mask
            )
    assignments.update(_baseline_assignments(scenario, contexts, cfg))
    oracle = scenario.oracle_actions(contexts)
    if oracle is not None:
        assignments["oracle"] = oracle

    policies = {name: evaluate_assignment(scenario, contexts, a) for name, a in assignments.items()}
    for name, block in policies.items():
        if "oracle" in policies and policies["oracle"]["value"]:
            block["share_of_oracle"] = block["value"] / policies["oracle"]["value"]
        rates = block.get("offer_rate_by_segment") or {}
        for key in ("sure_things", "sure_thing"):
            if key in rates:
                block["offer_rate_sure_things"] = rates[key]
    reference = "random" if "random" in policies else next((n for n in policies if n not in ("grpo", "oracle")), None)
    _fairness(policies, reference)
    if cfg.train_on == "logs":
        _off_policy_values(scenario, config, policies, {k: v for k, v in assignments.items() if k != "oracle"}, policy)

    summary: dict = {
        "scenario": scenario.name,
        "train_seconds": train_seconds,
        "extra_train_seconds": extra_seconds,
        "steps": train_summary["steps"],
        "decisions": train_summary["decisions"],
        "eval_units": cfg.eval_size,
        "oracle_kind": getattr(scenario, "oracle_kind", "exact"),
        "policies": policies,
    }
    if trainer is not None and trainer.budget is not None:
        summary["budget"] = {"budget": config.grpo.budget, "lambda": trainer.budget.value,
                             "train_spend": trainer._last_metrics.get("budget/spend")}
    if cfg.pilot and scenario.n_groups >= 4:
        current = assignments.get(cfg.current_policy)
        if current is None:
            raise ValueError(f"evaluation.current_policy = {cfg.current_policy!r} is not among {sorted(assignments)}")
        pilot_gen = torch.Generator().manual_seed(cfg.seed + 11)
        pilot_ctx = scenario.sample_contexts(cfg.pilot_size, pilot_gen)
        with torch.no_grad():
            new = policy_cpu.act(pilot_ctx.obs, pilot_ctx.group, pilot_ctx.mask)
        cur = _decide_like(cfg.current_policy, assignments, scenario, pilot_ctx, cfg)
        summary["pilot"] = cluster_pilot(scenario, pilot_ctx, new, cur, seed=cfg.seed + 13)
        summary["pilot"]["current_policy"] = cfg.current_policy

    explanation = None
    if scenario.action_spec["kind"] == "categorical":
        names = getattr(scenario, "feature_names", None) or [f"x{j}" for j in range(scenario.obs_dim)]
        explanation = explain_policy(contexts.obs.double().numpy(), grpo_actions.numpy(), names,
                                     getattr(scenario, "action_names", None), max_depth=cfg.tree_depth, seed=cfg.seed)
        summary["explanation"] = {"fidelity": explanation["fidelity"], "depth": explanation["depth"]}
    summary["assignment"] = _assignment_table(scenario, contexts, grpo_actions)

    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    curves = {"training reward": [(r["step"], r["reward_mean"]) for r in rows if "reward_mean" in r],
              "true value (eval)": [(r["step"], r["eval/value"]) for r in rows if "eval/value" in r]}
    notes = [f"scenario {scenario.name}; {summary['steps']} steps, {summary['decisions']:,} scored decisions, "
             f"{train_seconds:.1f} s of training; values are true expected values per unit on {cfg.eval_size:,} units"]
    if "pilot" in summary:
        p = summary["pilot"]
        notes.append(f"pilot: {p['cohorts_new']} cohorts on the new policy vs {p['cohorts_current']} on "
                     f"{p['current_policy']}: difference {p['difference']:.4f} [{p['ci_low']:.4f}, {p['ci_high']:.4f}]")
    write_report(out / "report.html", title=f"grpokit run: {scenario.name}", summary=summary, curves=curves,
                 assignment=summary["assignment"], explanation=explanation, notes=notes)
    summary["report"] = str(out / "report.html")
    atomic_write_json(out / "summary.json", summary)
    return summary


def _learn_from_simulated_log(scenario: Scenario, config: RunConfig):
    """Learn from logs, as a business without a simulator would: a cross-fitted outcome model on the
    A/B log (the one the baselines see) scores the G actions GRPO samples per logged context."""
    from grpokit.offline.io import read_log
    from grpokit.offline.learn import learn_from_outcome_model
    from grpokit.offline.outcome import OutcomeModel

    cfg = config.evaluation
    log = read_log(scenario.simulate_log(cfg.log_size, cfg.log_policy, seed=cfg.seed + 101), scenario.log_schema())
    model = OutcomeModel(log.n_actions, "gbm", seed=cfg.seed).fit(log.features, log.action, log.reward)
    policy, summary = learn_from_outcome_model(
        log.features, model.predict_crossfit(), config.grpo, config.policy,
        group=log.group, n_groups=scenario.n_groups,
    )
    return policy, summary


def _off_policy_values(scenario: Scenario, config: RunConfig, policies: dict, assignments: dict, policy) -> None:
    """What a business without a simulator would report: DR estimates with CIs on a held-out A/B log.

    Stored as ``policies.<name>.off_policy.{value, ci_low, ci_high}`` next to the simulator's ground
    truth ``value``. Spillover violates the no-interference assumption of off-policy estimators,
    so with spillover the estimates are biased: compare them with ``value``.
    """
    from grpokit.baselines import make_baseline
    from grpokit.offline.estimators import estimate_value
    from grpokit.offline.io import read_log
    from grpokit.offline.outcome import OutcomeModel

    cfg = config.evaluation
    train = read_log(scenario.simulate_log(cfg.log_size, cfg.log_policy, seed=cfg.seed + 101), scenario.log_schema())
    test = read_log(scenario.simulate_log(cfg.log_size, cfg.log_policy, seed=cfg.seed + 202), scenario.log_schema())
    n_actions = test.n_actions
    reward_hat = OutcomeModel(n_actions, "gbm", seed=cfg.seed).fit(test.features, test.action, test.reward).predict_crossfit()
    x = torch.as_tensor(test.features, dtype=torch.float32)
    g = torch.tensor(test.group, dtype=torch.long) if test.group is not None else None
    decisions: dict[str, np.ndarray] = {}
    with torch.no_grad():
        decisions["grpo"] = policy.act(x, g).numpy()
    for name in assignments:
        if name in ("grpo", "grpo_ignoring_spillover"):
            continue
        b = make_baseline(name, n_actions, control=0, seed=cfg.seed).fit(train.features, train.action, train.reward)
        decisions[name] = b.decide(test.features)
    for name, d in decisions.items():
        target = np.zeros((len(d), n_actions))
        target[np.arange(len(d)), d] = 1.0
        res = estimate_value("dr", reward=test.reward, action=test.action, pscore=test.pscore, target_probs=target,
                             reward_hat=reward_hat, seed=cfg.seed)
        policies[name]["off_policy"] = {"estimator": "dr", "value": res.value, "ci_low": res.ci_low,
                                        "ci_high": res.ci_high, "log_size": len(test)}


def _decide_like(name: str, assignments: dict, scenario: Scenario, contexts: Contexts, cfg) -> torch.Tensor:
    """The current policy's decisions on new units (refit baselines decide per unit; constants repeat)."""
    if name in ("grpo", "oracle"):
        raise ValueError(f"the current policy of a pilot cannot be {name!r}")
    fresh = _baseline_assignments(scenario, contexts, cfg)
    if name not in fresh:
        raise ValueError(f"unknown current policy {name!r}; choose one of {sorted(fresh)}")
    return fresh[name]
