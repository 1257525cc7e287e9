"""The product's main job: train a policy on a business scenario, compare it with the baselines a
data scientist would use, per cohort, run a cluster-randomized pilot, and write a report.

``grpokit run CONFIG --out RUN_DIR`` calls :func:`run_business`. Everything is scored on the
scenario's ground truth (``scenario.true_value`` when the scenario has one, e.g. with spillover,
else the expected reward of each unit's decision) on one fixed evaluation population.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from grpokit.atomic import atomic_write_json
from grpokit.config import RunConfig, config_to_toml
from grpokit.environment import environment_info
from grpokit.evaluation.values import evaluate_actions
from grpokit.rewards.components import GROUP_RELATIVE
from grpokit.runner import build_trainer
from grpokit.scenarios.base import Contexts, Scenario
from grpokit.scenarios.registry import scenario_from_config

__all__ = ["run_business", "evaluate_assignment", "cluster_pilot", "cohort_pilot", "PILOT_DESIGNS"]


def evaluate_assignment(scenario: Scenario, contexts: Contexts, actions: torch.Tensor) -> dict:
    """True value of one decision per unit: the scenario's own ``true_value`` (joint effects such as
    spillover included) when it has one, else the mean expected reward overall and per group."""
    if hasattr(scenario, "true_value"):
        return scenario.true_value(contexts, actions)
    return evaluate_actions(scenario, contexts, actions)


def _fit_baselines(scenario: Scenario, cfg, log=None) -> dict:
    """The baselines that apply to this scenario, fitted once: name -> decide(features ``[n, d]``
    numpy) -> decisions ``[n]`` (or ``[n, k]``). ``log``: the A/B log the learned baselines are fitted
    on (:class:`LoggedDecisions`; default: simulated with seed ``evaluation.seed + 101``)."""
    out: dict = {}
    kind = scenario.action_spec["kind"]
    if kind == "categorical" and hasattr(scenario, "simulate_log"):
        from grpokit.baselines import make_baseline

        log = log if log is not None else _simulated_log(scenario, cfg)
        out["no_offer"] = lambda x: torch.zeros(len(x), dtype=torch.long)  # the control: action 0 for everyone
        for name in cfg.baselines:
            b = make_baseline(name, scenario.action_spec["n_actions"], control=0, seed=cfg.seed)
            b.fit(log.features, log.action, log.reward)
            out[name] = lambda x, b=b: torch.as_tensor(b.decide(np.asarray(x, dtype=np.float64)), dtype=torch.long)
    elif kind == "beta" and hasattr(scenario, "best_fixed_price"):
        price = float(scenario.best_fixed_price(seed=cfg.seed + 101))
        out["best_fixed_price"] = lambda x: torch.full((len(x),), price)
    elif kind == "dirichlet":
        k = scenario.action_spec["n_components"]
        out["equal_split"] = lambda x: torch.full((len(x), k), 1.0 / k)
        if hasattr(scenario, "best_fixed_split"):
            split = scenario.best_fixed_split(seed=cfg.seed + 101).float()
            out["best_fixed_split"] = lambda x: split.expand(len(x), k).clone()
    return out


def _baseline_assignments(scenario: Scenario, contexts: Contexts, cfg, log=None) -> dict[str, torch.Tensor]:
    """The baselines that apply to this scenario, each as one decision per evaluation unit."""
    x = contexts.obs.double().cpu().numpy()
    return {name: decide(x) for name, decide in _fit_baselines(scenario, cfg, log).items()}


def _simulated_log(scenario: Scenario, cfg, offset: int = 101):
    """The simulated A/B log of ``evaluation.log_size`` decisions, seed ``evaluation.seed + offset``."""
    from grpokit.offline.io import read_log

    return _cohort_log(scenario, read_log(scenario.simulate_log(cfg.log_size, cfg.log_policy, seed=cfg.seed + offset),
                                          _log_schema(scenario)))


def _cohorts_note(block: dict, contexts: Contexts) -> str:
    """The report's line on discovered cohorts: method, k and how it was chosen, features, each cohort's share."""
    model = block["model"]
    share = torch.bincount(contexts.group.long().cpu(), minlength=block["n_cohorts"]).double() / len(contexts.group)
    how = (f"k chosen by {model['criterion']} over {sorted(int(k) for k in model['scores'])}"
           if model.get("criterion") and model.get("scores") else "k fixed")
    return (f"cohorts: {block['n_cohorts']} discovered by {block['method']} ({how}) on "
            + ", ".join(model["features"]) + "; the per-cohort tables, P-GRPO groups and pilot clusters use them; "
            + "shares of the evaluation population: "
            + ", ".join(f"{n} {100 * float(v):.1f} %" for n, v in zip(block["names"], share)))


def _save_run_policy(path: Path, policy, scenario: Scenario, contexts: Contexts) -> str | None:
    """``policy.pt`` of a categorical run on named, unmasked features (``grpokit score``, ``evaluate``
    and ``serve`` read it): identity encoder on the scenario's features, action and cohort labels,
    and the discovered cohort model when [cohorts] found one (a row without ``cohort`` is then
    assigned as in training). None (nothing written) for other runs."""
    from grpokit.policy.io import save_policy
    from grpokit.policy.network import Policy

    names = getattr(scenario, "feature_names", None)
    if (type(policy) is not Policy or scenario.action_spec["kind"] != "categorical" or not names
            or contexts.mask is not None):
        return None
    actions = getattr(scenario, "action_names", None) or range(scenario.action_spec["n_actions"])
    groups = getattr(scenario, "group_names", None) or range(scenario.n_groups)
    meta = {"feature_names": list(names), "action_labels": [str(a) for a in actions],
            "group_labels": [str(g) for g in groups], "scenario": scenario.name,
            "trained_by": "grpokit run"}
    if getattr(scenario, "cohort_model", None) is not None:
        meta["cohort_model"] = scenario.cohort_model
    return str(save_policy(policy, path, meta))


def _cohort_log(scenario: Scenario, log):
    """``log`` with its group column = the run's discovered cohorts ([cohorts] kmeans | gmm: the
    scenario's cohort model assigns every row from its features), else unchanged."""
    model = getattr(scenario, "cohort_model", None)
    if model is None:
        return log
    from grpokit.groups.logs import regroup_log

    return regroup_log(log, model)


def _log_schema(scenario: Scenario):
    """The scenario's log schema with its feature columns named (no other column is ever a feature)."""
    schema = scenario.log_schema()
    names = getattr(scenario, "feature_names", None)
    return schema.model_copy(update={"features": list(names)}) if names else schema


def read_ab_log(scenario: Scenario, source):
    """An external A/B log for ``grpokit run --log FILE`` (parquet/CSV path or DataFrame), in the
    scenario's log schema (the columns ``grpokit scenario simulate`` writes: the feature columns,
    ``group``, ``action``, ``reward``, ``pscore``; ``decision_id`` optional). Actions and cohorts may
    be codes or names (``"10% off"``, ``"north/web"``). Returns :class:`LoggedDecisions`."""
    import pandas as pd

    from grpokit.evaluation.decisions import action_codes
    from grpokit.offline.io import read_log

    if not hasattr(scenario, "simulate_log"):
        raise ValueError(f"--log: scenario {scenario.name!r} does not learn from A/B logs")
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise ValueError(f"--log: {path} does not exist")
        if path.suffix not in (".parquet", ".csv"):
            raise ValueError(f"--log: {path.name} must be .parquet or .csv")
        df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    else:
        df = source.copy()
    features = list(getattr(scenario, "feature_names", []) or [])
    missing = [c for c in [*features, "action", "reward", "pscore"] if c not in df.columns]
    if missing:
        raise ValueError(f"--log: the log has no column(s) {missing} that scenario {scenario.name!r} needs "
                         f"(grpokit scenario simulate writes them); its columns: {list(df.columns)[:20]}")
    ids = df["decision_id"].to_numpy() if "decision_id" in df.columns else None
    names = getattr(scenario, "action_names", None)
    df["action"] = action_codes(df["action"].to_numpy(), names, scenario.action_spec["n_actions"], ids=ids)
    if "group" in df.columns:
        df["group"] = action_codes(df["group"].to_numpy(), list(scenario.group_names), scenario.n_groups,
                                   ids=ids, column="group")
    return read_log(df, _log_schema(scenario))


def cluster_pilot(
    scenario: Scenario,
    contexts: Contexts,
    new: torch.Tensor,
    current: torch.Tensor,
    *,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict:
    """The older pilot design, kept for comparison: a fair coin per cohort (redrawn until each arm has
    two cohorts), no pre-period, and the difference of the arms' mean cohort outcomes with a Welch t
    interval over cohorts (:func:`grpokit.pilot.simulate.simulate_welch_pilot`). ``true_effect``: the
    mean over cohorts of (cohort's expected value under the new policy − under the current one).
    """
    from grpokit.pilot.simulate import simulate_welch_pilot

    return simulate_welch_pilot(scenario, contexts, new, current, seed=seed, alpha=alpha)


PILOT_DESIGNS = ("strata", "pairs", "complete", "welch")


def cohort_pilot(
    scenario: Scenario,
    pre_contexts: Contexts | None,
    pre_current: torch.Tensor | None,
    contexts: Contexts,
    new: torch.Tensor,
    current: torch.Tensor,
    *,
    design: str = "strata",
    seed: int = 0,
    alpha: float = 0.05,
) -> dict:
    """``grpokit run``'s pilot (``summary.pilot``): a pre-period with every cohort on the current policy
    (``pre_contexts``, decided by ``pre_current``), cohorts stratified in 4s (or paired) on their
    pre-period mean with half of each stratum on the new policy, and the effect over cohorts

        tau_hat from y_c = a + tau T_c + b (x_c − mean x) + e_c   (ANCOVA / CUPED over cohorts),

    with the exact randomization-inference interval (:mod:`grpokit.pilot.analysis`). ``difference``,
    ``ci_low``, ``ci_high`` are that estimate and interval; ``welch`` holds the older design
    (:func:`cluster_pilot`) run on the same pilot units for comparison; ``mde`` the minimal
    detectable effect (80 % power) from the pre-period. ``design = "welch"``: the older design only
    (no pre-period needed). ``seed`` draws the outcomes (``+1`` the assignment, ``+2`` the
    randomization draws when the design has too many assignments to list; the Welch comparison uses
    ``seed`` for its coins and outcomes).
    """
    from grpokit.pilot.simulate import simulate_cohort_pilot

    if design not in PILOT_DESIGNS:
        raise ValueError(f"evaluation.pilot_design = {design!r}: choose one of {PILOT_DESIGNS}")
    welch = cluster_pilot(scenario, contexts, new, current, seed=seed, alpha=alpha)
    welch_block = {k: welch[k] for k in ("difference", "ci_low", "ci_high", "cohorts_new", "cohorts_current",
                                         "treated_cohorts", "true_effect")}
    welch_block["design"] = "coin per cohort, Welch t interval over cohorts"
    if design == "welch":
        return {**welch, "design": "welch", "interval": "welch", "adjusted": False, "estimate": welch["difference"],
                "welch": welch_block}
    if pre_contexts is None or pre_current is None:
        raise ValueError(f"pilot design {design!r} needs a pre-period (pre_contexts and pre_current)")
    r = simulate_cohort_pilot(scenario, pre_contexts, pre_current, contexts, new, current, design=design,
                              seed=seed, alpha=alpha)
    ri = r["randomization"]
    interval, why = "randomization", ("exact randomization inference over the design's assignments: its level "
                                      "comes from the randomization actually run, with no normality assumption "
                                      "that a dozen cohorts cannot check")
    lo, hi = r["ci_low"], r["ci_high"]
    if not (math.isfinite(lo) and math.isfinite(hi)):  # too few assignments to reject any effect far out
        interval, lo, hi = "t", r["ci_t"]["ci_low"], r["ci_t"]["ci_high"]
        why = (f"the design has only {ri['n_assignments']} assignments, too few for the randomization test to reject "
               f"any effect at alpha = {alpha:g} on one side, so the randomization interval is unbounded: "
               f"the small-sample OLS t interval ({r['ci_t']['dof']} dof, normal cohort residuals assumed) is reported "
               "instead; more cohorts make the randomization interval finite")
    return {
        "design": design,
        "interval": interval,
        "interval_why": why,
        "adjusted": True,
        "cohorts_new": r["cohorts_treated"],
        "cohorts_current": r["cohorts_control"],
        "units": r["units"],
        "pre_units": r["pre_units"],
        "estimate": r["estimate"],
        "difference": r["estimate"],
        "ci_low": lo,
        "ci_high": hi,
        "randomization_ci": [r["ci_low"], r["ci_high"]],
        "p_value": r["p_value"],
        "true_effect": r["true_effect"],
        "alpha": alpha,
        "n_assignments": ri["n_assignments"],
        "exact": ri["exact"],
        "ci_t": {k: r["ci_t"][k] for k in ("estimate", "se", "dof", "ci_low", "ci_high")},
        "unit_level": {k: r["unit_level"][k] for k in ("estimate", "se", "dof", "ci_low", "ci_high")},
        "mde": r["power"].get("mde"),
        "mde_unadjusted": r["power"].get("mde_unadjusted"),
        "power": r["power"],
        "cohorts": r["cohorts"],
        "strata": r["strata"],
        "treated_cohorts": r["treated_cohorts"],
        "pre_means": r["pre_means"],
        "cohort_means": r["cohort_means"],
        "welch": welch_block,
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


def _fairness(policies: dict, reference: str | None, suffix: str = "", key: str = "per_group") -> None:
    """Per policy: the lowest cohort improvement over ``reference`` (min_c V_c − V_c^ref) and the
    spread between cohorts (max − min), as ``lowest_cohort_improvement{suffix}`` and
    ``cohort_improvement_spread{suffix}``; ``key``: which per-cohort values (``per_group``, ``per_market``)."""
    if reference is None or reference not in policies:
        return
    ref = policies[reference].get(key) or {}
    for block in policies.values():
        pg = block.get(key) or {}
        diffs = [pg[g] - ref[g] for g in pg if pg.get(g) is not None and ref.get(g) is not None]
        if diffs:
            block[f"lowest_cohort_improvement{suffix}"] = float(min(diffs))
            block[f"cohort_improvement_spread{suffix}"] = float(max(diffs) - min(diffs))
            block[f"fairness_reference{suffix}"] = reference


#: the segments a campaign aimed at active shoppers leaves untapped (the seed's "high-potential" ones)
UNTAPPED_SEGMENTS = ("persuadable", "new_customer")


def _segment_gains(scenario: Scenario, contexts: Contexts, policies: dict, reference: str = "no_offer") -> dict | None:
    """Per policy: ``segment_gain_vs_no_offer.<segment>`` = V_s − V_s^ref (mean per customer of the
    segment) and ``untapped_gain`` = Σ_{s ∈ UNTAPPED_SEGMENTS} share_s · (V_s − V_s^ref), the value per
    customer of the whole base that the policy adds in persuadables and new customers. Returns the
    segments' shares of the evaluation population (None for scenarios without latent segments)."""
    names = list(getattr(scenario, "segment_names", None) or [])
    if reference not in policies or not names or "segment" not in contexts.extra:
        return None
    seg = contexts.extra["segment"].long().cpu()
    share = (torch.bincount(seg, minlength=len(names)).double() / len(seg)).tolist()
    ref = policies[reference].get("per_segment") or {}
    untapped = [s for s in UNTAPPED_SEGMENTS if s in names]
    for block in policies.values():
        ps = block.get("per_segment") or {}
        gains = {s: ps[s] - ref[s] for s in names if ps.get(s) is not None and ref.get(s) is not None}
        if gains:
            block["segment_gain_vs_no_offer"] = gains
        if untapped and all(s in gains for s in untapped):
            block["untapped_gain"] = float(sum(share[names.index(s)] * gains[s] for s in untapped))
    return {"shares": dict(zip(names, share)), "untapped": untapped}


def _baseline_names(scenario: Scenario, cfg) -> list[str]:
    """Names of the baselines :func:`_baseline_assignments` produces for this scenario."""
    kind = scenario.action_spec["kind"]
    if kind == "categorical" and hasattr(scenario, "simulate_log"):
        return ["no_offer", *cfg.baselines]
    if kind == "beta" and hasattr(scenario, "best_fixed_price"):
        return ["best_fixed_price"]
    if kind == "dirichlet":
        return ["equal_split"] + (["best_fixed_split"] if hasattr(scenario, "best_fixed_split") else [])
    return []


def _pilot_current_policy(scenario: Scenario, cfg) -> str:
    """The pilot's control arm: ``evaluation.current_policy``, where "best_single" (the default: one
    decision for everyone, the best one) is the scenario's own best single decision for continuous
    decisions (``best_fixed_price``, ``best_fixed_split``), whose baselines go by those names."""
    kind = scenario.action_spec["kind"]
    own = {"beta": "best_fixed_price", "dirichlet": "best_fixed_split"}.get(kind)
    if cfg.current_policy == "best_single" and own in _baseline_names(scenario, cfg):
        return own
    return cfg.current_policy


def _check_evaluation_config(scenario: Scenario, config: RunConfig) -> None:
    """Reject settings that could only fail after training, naming the key."""
    cfg = config.evaluation
    if cfg.train_on == "logs":
        if not hasattr(scenario, "simulate_log"):
            raise ValueError(f"evaluation.train_on = 'logs' needs a scenario that simulates logs; {scenario.name!r} does not")
        if config.grpo.budget is not None:
            raise ValueError("grpo.budget is not supported with evaluation.train_on = 'logs' yet: learning from logs "
                             "has no spend model; train on the simulation, or drop the budget")
    discovered_k = config.cohorts.k if config.cohorts.method != "column" else 0  # "auto" may choose k >= 4
    if cfg.pilot and (scenario.n_groups >= 4 or discovered_k == "auto" or discovered_k >= 4):
        names = _baseline_names(scenario, cfg)
        if _pilot_current_policy(scenario, cfg) not in names:
            raise ValueError(f"evaluation.current_policy = {cfg.current_policy!r}: the pilot's current policy must be "
                             f"one of this scenario's baselines {names}")


def run_seeds(config: RunConfig) -> dict:
    """Every seed a run uses, derived from ``evaluation.seed`` (s) and ``grpo.seed``: written into
    ``summary.json`` so that any figure can be recomputed (docs/business.md, "Seeds")."""
    s = config.evaluation.seed
    return {"evaluation.seed": s, "grpo.seed": config.grpo.seed, "ab_log": s + 101, "population": s + 7,
            "pilot_population": s + 11, "pilot_pre_population": s + 17, "pilot_assignment": s + 13,
            "held_out_log": s + 202, "baselines": s}


def run_business(config: RunConfig, out_dir: str | Path, *, progress: bool = False, store: str | Path | None = None,
                 log=None) -> dict:
    """Train, evaluate against the baselines and the oracle, pilot, report. Returns ``summary.json``'s content.

    ``log``: an external A/B log (path or DataFrame, see :func:`read_ab_log`) the learned
    baselines (and with ``evaluation.train_on = "logs"`` GRPO too) are fitted on, instead of the
    simulated one: every tool can then be trained on the same file.
    """
    from grpokit.evaluation.decisions import write_decisions
    from grpokit.evaluation.explain import explain_policy
    from grpokit.evaluation.population import population, population_info
    from grpokit.evaluation.report import write_report

    cfg = config.evaluation
    out = Path(out_dir)
    if (out / "summary.json").exists():
        raise FileExistsError(f"{out} already holds a run: choose another --out")
    scenario = scenario_from_config(config.scenario)
    _check_evaluation_config(scenario, config)  # fail before any training
    seeds = run_seeds(config)
    ab_log, log_info = None, None
    if log is not None:
        ab_log = read_ab_log(scenario, log)  # fail before any training
        log_info = {"source": str(log) if isinstance(log, (str, Path)) else "DataFrame", "rows": len(ab_log.action)}
    elif hasattr(scenario, "simulate_log") and scenario.action_spec["kind"] == "categorical":
        log_info = {"source": "simulated", "rows": cfg.log_size, "policy": cfg.log_policy, "seed": seeds["ab_log"]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.toml").write_text(config_to_toml(config))
    (out / "metrics.jsonl").write_text("")
    t0 = time.perf_counter()
    trainer = None
    if cfg.train_on == "logs":
        from grpokit.groups.scenario import with_cohorts

        scenario = with_cohorts(scenario, config.cohorts)  # [cohorts]: the same cohorts as a simulation run's
        train_dir = out / "training"  # the log learner's metrics.jsonl and checkpoint, fresh for every run
        if train_dir.exists():
            foreign = sorted(p.name for p in train_dir.iterdir()
                             if p.name not in _TRAINING_FILES and not (p.name.startswith(".") and p.name.endswith(".tmp")))
            if foreign or not train_dir.is_dir():
                raise ValueError(f"{train_dir} holds files a log-trained run does not write ({', '.join(foreign[:5])}"
                                 f"{', ...' if len(foreign) > 5 else ''}): move them or choose another --out")
            shutil.rmtree(train_dir)
        policy, train_summary = _learn_from_simulated_log(scenario, config, ab_log, out_dir=train_dir)
        if (train_dir / "metrics.jsonl").exists():  # the run's metrics.jsonl: the learner's steps (reward/<name> too)
            (out / "metrics.jsonl").write_text((train_dir / "metrics.jsonl").read_text())
    else:
        trainer = build_trainer(config, out, progress)
        trainer.summary_file = "train_summary.json"  # summary.json is this pipeline's, written last
        train_summary = trainer.train()
        policy = trainer.policy
        scenario = trainer.scenario
    train_seconds = time.perf_counter() - t0

    contexts = population(scenario, cfg.eval_size, seeds["population"])
    pop = population_info(contexts, seeds["population"])
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
    deciders = _fit_baselines(scenario, cfg, ab_log)
    x_eval = contexts.obs.double().cpu().numpy()
    assignments.update({name: decide(x_eval) for name, decide in deciders.items()})
    oracle = scenario.oracle_actions(contexts)
    if oracle is not None:
        assignments["oracle"] = oracle

    policies = {name: evaluate_assignment(scenario, contexts, a) for name, a in assignments.items()}
    current_name = cfg.current_policy if cfg.current_policy in policies else None
    for name, block in policies.items():
        if "oracle" in policies and policies["oracle"]["value"]:
            block["share_of_oracle"] = block["value"] / policies["oracle"]["value"]
        rates = block.get("offer_rate_by_segment") or {}
        for key in ("sure_things", "sure_thing"):
            if key in rates:
                block["offer_rate_sure_things"] = rates[key]
    lift_shares(policies, current=current_name)
    _sampling_intervals(scenario, contexts, assignments, policies, current_name)
    reference = "random" if "random" in policies else next((n for n in policies if n not in ("grpo", "oracle")), None)
    _fairness(policies, reference)
    if getattr(scenario, "cohort_model", None) is not None and hasattr(scenario.base, "true_value"):
        for name, a in assignments.items():  # discovered cohorts: also judge on the scenario's own cohorts
            policies[name]["per_market"] = scenario.base.true_value(contexts, a)["per_group"]
    _fairness(policies, "no_offer", "_vs_no_offer")  # each cohort's gain over sending nothing
    _fairness(policies, "no_offer", "_vs_no_offer_market", key="per_market")
    segments = _segment_gains(scenario, contexts, policies)
    if cfg.train_on == "logs":
        _off_policy_values(scenario, config, policies, deciders, policy, ab_log)

    summary: dict = {
        "scenario": scenario.name,
        "train_seconds": train_seconds,
        "extra_train_seconds": extra_seconds,
        "steps": train_summary["steps"],
        "decisions": train_summary["decisions"],
        "eval_units": cfg.eval_size,
        "oracle_kind": getattr(scenario, "oracle_kind", "exact"),
        "seeds": seeds,
        "population": {**pop, "command": f"grpokit scenario evaluate CONFIG --n {pop['n']} --seed {pop['seed']}"},
        "ab_log": log_info,
        "lift_references": {"no_offer": "no_offer" if "no_offer" in policies else None, "current": current_name},
        "policies": policies,
        "environment": environment_info(),
    }
    if segments is not None:
        summary["segments"] = segments
    if cfg.train_on == "logs":
        summary["learner"] = train_summary.get("learner")
        summary["off_policy_assumption"] = _interference_note(scenario)
    if getattr(scenario, "cohort_model", None) is not None:  # [cohorts]: discovered cohorts are the groups
        summary["cohorts"] = {"method": config.cohorts.method, "n_cohorts": scenario.n_groups,
                              "names": scenario.group_names, "model": scenario.cohort_model}
    if trainer is not None and trainer.budget is not None:
        hist, spends = trainer.budget.history, trainer.budget.spend_history
        every = max(1, len(hist) // 50)  # the multiplier's path, at most ~50 points (metrics.jsonl has every step)
        summary["budget"] = {"budget": config.grpo.budget, "lambda": trainer.budget.value,
                             "train_spend": trainer._last_metrics.get("budget/spend"),
                             "deployed_spend_tracked": trainer._last_metrics.get("budget/deployed_spend"),
                             "lambda_path": [[i + 1, hist[i]] for i in range(0, len(hist), every)],
                             "tracked_spend_path": [[i + 1, spends[i]] for i in range(0, len(spends), every)],
                             "spend_tracked": config.grpo.budget_spend,
                             # the deployed spend's final calibration (offset μ on its own held-out batch)
                             "calibration": trainer.budget_calibration}
        if hasattr(scenario, "spend") and grpo_actions.ndim <= 2:
            eval_spend = scenario.spend(contexts, grpo_actions.unsqueeze(1))
            summary["budget"]["eval_spend"] = float(eval_spend.double().mean())
            summary["budget"]["eval_spend_over_budget"] = summary["budget"]["eval_spend"] / config.grpo.budget
    if cfg.pilot and scenario.n_groups >= 4:
        current_policy = _pilot_current_policy(scenario, cfg)
        current = assignments.get(current_policy)
        if current is None:
            raise ValueError(f"evaluation.current_policy = {cfg.current_policy!r} is not among {sorted(assignments)}")
        pilot_ctx = population(scenario, cfg.pilot_size, seeds["pilot_population"])
        with torch.no_grad():
            new = policy_cpu.act(pilot_ctx.obs, pilot_ctx.group, pilot_ctx.mask)
        cur = _decide_like(current_policy, deciders, pilot_ctx)
        pre_ctx = pre_cur = None
        if cfg.pilot_design != "welch":  # the pre-period: pilot_size units, all on the current policy
            pre_ctx = population(scenario, cfg.pilot_size, seeds["pilot_pre_population"])
            pre_cur = _decide_like(current_policy, deciders, pre_ctx)
        summary["pilot"] = cohort_pilot(scenario, pre_ctx, pre_cur, pilot_ctx, new, cur, design=cfg.pilot_design,
                                        seed=seeds["pilot_assignment"])
        summary["pilot"]["current_policy"] = current_policy
        summary["pilot"]["seeds"] = {k: seeds[k] for k in ("pilot_population", "pilot_pre_population",
                                                             "pilot_assignment")}

    explanation = None
    if scenario.action_spec["kind"] == "categorical":
        names = getattr(scenario, "feature_names", None) or [f"x{j}" for j in range(scenario.obs_dim)]
        explanation = explain_policy(contexts.obs.double().numpy(), grpo_actions.numpy(), names,
                                     getattr(scenario, "action_names", None), max_depth=cfg.tree_depth, seed=cfg.seed)
        summary["explanation"] = {"fidelity": explanation["fidelity"], "depth": explanation["depth"]}
    summary["assignment"] = _assignment_table(scenario, contexts, grpo_actions)
    summary["policy_path"] = _save_run_policy(out / "policy.pt", policy_cpu, scenario, contexts)
    if scenario.action_spec["kind"] in ("categorical", "beta"):  # scoreable by `grpokit scenario evaluate`
        names = getattr(scenario, "action_names", None) if scenario.action_spec["kind"] == "categorical" else None
        for name, a in assignments.items():
            write_decisions(out / "decisions" / f"{name}.parquet", a.cpu().numpy(), population=pop,
                            action_names=names, policy=name, seeds=seeds)
        summary["decision_files"] = str(out / "decisions")

    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    curves = {"training reward": [(r["step"], r["reward_mean"]) for r in rows if "reward_mean" in r],
              "true value (eval)": [(r["step"], r["eval/value"]) for r in rows if "eval/value" in r]}
    notes = [f"scenario {scenario.name}; {summary['steps']} steps, {summary['decisions']:,} scored decisions, "
             f"{train_seconds:.1f} s of training; values are true expected values per unit on {cfg.eval_size:,} units"]
    notes.append(f"evaluation population: {pop['n']:,} units, seed {pop['seed']}, fingerprint {pop['fingerprint']} "
                 f"({summary['population']['command']}); seeds: " + ", ".join(f"{k} {v}" for k, v in seeds.items()))
    if log_info:
        notes.append("baselines fitted on " + (f"the A/B log {log_info['source']} ({log_info['rows']:,} rows)"
                     if log_info["source"] != "simulated" else
                     f"a simulated {log_info['policy']} A/B log of {log_info['rows']:,} decisions (seed {log_info['seed']})"))
    if summary.get("cohorts"):
        notes.append(_cohorts_note(summary["cohorts"], contexts))
    if summary.get("off_policy_assumption", {}).get("broken"):
        notes.append(summary["off_policy_assumption"]["text"])
    dropped = (summary.get("learner") or {}).get("dropped_components")
    if dropped:
        notes.append(f"learned from the log without the reward components {dropped} (a log's reward is the unit's own "
                     "profit: a unit-randomized log does not identify a peer effect; it is 0 at spillover 0)")
    sections = [("Budget", _budget_section(summary["budget"], rows))] if summary.get("budget") else None
    write_report(out / "report.html", title=f"grpokit run: {scenario.name}", summary=summary, curves=curves,
                 assignment=summary["assignment"], explanation=explanation, notes=notes, sections=sections,
                 headline=business_headline(summary), value_label="true expected value per unit")
    summary["report"] = str(out / "report.html")
    atomic_write_json(out / "summary.json", summary)
    return summary


def _budget_section(budget: dict, rows: list[dict]) -> str:
    """The report's budget section: the allowed and evaluated spend, the calibration, and two charts
    from ``metrics.jsonl``: the multiplier λ per step and the tracked spend against the budget."""
    import html as _html

    from grpokit.evaluation.report import fmt_num, line_chart_svg

    b = budget["budget"]
    text = [f"allowed spend per unit {fmt_num(b)}"]
    if budget.get("eval_spend") is not None:
        text.append(f"spend of the trained policy on the evaluation population {fmt_num(budget['eval_spend'])} "
                    f"({budget['eval_spend'] / b - 1:+.1%} vs the budget)" if b else "")
    cal = budget.get("calibration") or {}
    if cal.get("offset") is not None:
        text.append(f"final calibration on {cal.get('size', 0):,} held-out units: output offset {cal['offset']:+.3f}, "
                    f"spend {fmt_num(cal.get('spend_before'))} → {fmt_num(cal.get('spend'))}")
    if budget.get("lambda") is not None:
        text.append(f"multiplier λ at the end {fmt_num(budget['lambda'])} (reward = profit − λ·spend; "
                    f"the trainer tracks the {budget.get('spend_tracked', 'sampled')} spend)")
    parts = ["<p class='note'>" + "; ".join(_html.escape(t) for t in text if t) + "</p>"]
    lam = [(r["step"], r["budget/lambda"]) for r in rows if "budget/lambda" in r]
    if lam:
        parts.append(line_chart_svg({"multiplier λ": lam}, title="the multiplier's path", width=760, height=200))
    spend = {name: [(r["step"], r[key]) for r in rows if key in r]
             for name, key in (("spend (tracked)", "budget/spend"),
                               ("spend (deployed, before the calibration)", "budget/deployed_spend"))}
    spend = {k: v for k, v in spend.items() if v}
    if spend:
        steps = [p[0] for v in spend.values() for p in v]
        spend["budget"] = [(min(steps), b), (max(steps), b)]
        parts.append(line_chart_svg(spend, title="spend per unit against the budget", width=760, height=200))
    return "".join(parts)


def business_headline(summary: dict, policy: str = "grpo") -> list[str]:
    """The lines a manager reads first: the new policy's value with its interval and shares, its
    difference with the current policy, and the pilot's verdict."""
    from grpokit.evaluation.report import fmt_ci, fmt_num, fmt_pct

    p = summary["policies"].get(policy)
    if p is None:
        return []
    lines = [f"{policy}: {fmt_num(p['value'])} per unit {fmt_ci(p.get('ci_low'), p.get('ci_high'))}".rstrip()]
    shares = []
    if p.get("share_of_oracle") is not None:
        shares.append(f"{fmt_pct(p['share_of_oracle'])} of the oracle's value")
    if p.get("lift_share_vs_no_offer") is not None:
        shares.append(f"{fmt_pct(p['lift_share_vs_no_offer'])} of the oracle's lift over no offer")
    ref = (summary.get("lift_references") or {}).get("current")
    if p.get("lift_share_vs_current") is not None:
        shares.append(f"{fmt_pct(p['lift_share_vs_current'])} of its lift over the current policy ({ref})")
    if shares:
        lines[0] += ": " + ", ".join(shares)
    d = p.get("vs_current")
    if d:
        base = summary["policies"][d["policy"]]["value"]
        rel = f" ({d['difference'] / base:+.1%})" if base else ""
        verdict = ("better" if d["ci_low"] > 0 else "worse" if d["ci_high"] < 0 else "not distinguishable")
        lines.append(f"vs the current policy ({d['policy']}): {d['difference']:+.2f} per unit{rel}, 95 % CI "
                     f"{fmt_ci(d['ci_low'], d['ci_high'])} on the same units: {verdict}")
    assumption = summary.get("off_policy_assumption") or {}
    if assumption.get("broken"):
        lines.append(assumption["text"])
    pl = summary.get("pilot")
    if pl:
        lines += pilot_lines(pl)
    return lines


def pilot_lines(pl: dict) -> list[str]:
    """The report's pilot lines: the design's estimate with its interval, verdict and true effect, the
    power figure, and the older Welch design on the same units beside it."""
    from grpokit.evaluation.report import fmt_ci, fmt_num

    def verdict(lo, hi):
        return "separates from 0" if (lo > 0 or hi < 0) else "inconclusive (the interval covers 0)"

    if pl.get("design", "welch") == "welch":
        return [f"cohort pilot (coin per cohort: {pl['cohorts_new']} cohorts new vs {pl['cohorts_current']} on "
                f"{pl['current_policy']}): difference {fmt_num(pl['difference'])} {fmt_ci(pl['ci_low'], pl['ci_high'])} "
                f"(Welch over cohorts), {verdict(pl['ci_low'], pl['ci_high'])}; true effect {fmt_num(pl['true_effect'])}"]
    kind = {"strata": "cohorts stratified in 4s", "pairs": "cohorts paired", "complete": "cohorts completely randomized"}
    lines = [f"cohort pilot ({kind.get(pl['design'], pl['design'])} on a {pl['pre_units']:,}-customer pre-period: "
             f"{pl['cohorts_new']} new vs {pl['cohorts_current']} on {pl['current_policy']}, {pl['units']:,} customers): "
             f"effect {fmt_num(pl['difference'])} {fmt_ci(pl['ci_low'], pl['ci_high'])} (adjusted on the pre-period, "
             f"{'randomization' if pl.get('interval') == 'randomization' else 'small-sample t'} interval), "
             f"{verdict(pl['ci_low'], pl['ci_high'])}; true effect {fmt_num(pl['true_effect'])}"]
    if pl.get("interval") == "t":
        lines.append(pl["interval_why"])
    extra = []
    if pl.get("mde") is not None:
        extra.append(f"minimal detectable effect (80 % power) {fmt_num(pl['mde'])}")
    w = pl.get("welch")
    if w:
        extra.append(f"the older design (coin per cohort, Welch) on the same customers: {fmt_num(w['difference'])} "
                     f"{fmt_ci(w['ci_low'], w['ci_high'])}, {verdict(w['ci_low'], w['ci_high'])}")
    if extra:
        lines.append("; ".join(extra))
    return lines


def _interference_note(scenario: Scenario) -> dict:
    """Whether the off-policy estimates (and the log-trained policy) rest on no interference
    (SUTVA: a unit's outcome depends on its own decision only), and whether the scenario breaks it."""
    spill = float(getattr(getattr(scenario, "config", None), "spillover", 0) or 0)
    if spill == 0:
        return {"spillover": 0.0, "broken": False, "text": "no interference in this scenario (spillover 0): "
                "the off-policy estimates' no-interference assumption holds"}
    return {"spillover": spill, "broken": True,
            "text": f"caution: spillover = {spill:g} breaks the no-interference assumption of the off-policy (DR) "
                    "estimates and of the outcome model the policy was learned on (a unit's outcome also depends on "
                    "its cohort's treatment): the DR values are biased; trust the simulator's true values or a "
                    "cohort-randomized pilot"}


#: what a log-trained run writes in OUT/training (the learner's trainer): removed before the next run there
_TRAINING_FILES = ("metrics.jsonl", "checkpoint.pt", "summary.json")
#: a scenario's reward components in the log learner's terms (the A/B log's reward is the profit)
LOG_COMPONENTS = {"profit": "reward", **{name: name for name in GROUP_RELATIVE}}
#: components a log learner leaves out: a unit-randomized log does not identify a peer effect (0 at spillover 0)
LOG_DROPPED = ("peer_effect",)


def log_reward_spec(scenario_config, weights: dict, log_labels=None, action_names=None) -> dict:
    """The scenario's objective as the log learner's (:func:`grpokit.offline.workflow.fit_policy_on_log`).

    ``profit`` → ``reward`` (r̂, the outcome model's predicted profit); ``improvement``,
    ``relative_to_cohort_median`` and ``cohort_percentile_rank`` keep their names and formulas, with
    the improvement measured from r̂ against ``scenario.improvement_reference`` (an action, e.g.
    "none", resolved by :func:`log_reference`); ``peer_effect`` is left out (``dropped``). Returns
    ``{"components", "weights", "reference", "reference_action", "dropped"}``; ``components`` is None
    when the objective is r̂ alone. Raises a ValueError naming a component no log reward can give
    (revenue, cost, spend, ...)."""
    names = getattr(scenario_config, "reward_components", None) or ["profit"]
    if isinstance(names, str) or not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"scenario.reward_components {names!r} is not a list of component names")
    names = list(names)
    dropped = [n for n in names if n in LOG_DROPPED]
    bad = [n for n in names if n not in LOG_COMPONENTS and n not in LOG_DROPPED]
    if bad:
        raise ValueError(f"scenario.reward_components {bad} cannot be learned from a log (its reward is the profit): "
                         f"a log learner (grpokit learn, or grpokit run with evaluation.train_on = \"logs\") learns "
                         f"from {sorted(LOG_COMPONENTS)}; remove them")
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise ValueError(f"grpo.reward_weights: unknown component{'s' if len(unknown) > 1 else ''} {unknown}; "
                         f"the scenario's reward components are {names}")
    mapped = [LOG_COMPONENTS[n] for n in names if n in LOG_COMPONENTS]
    if not mapped:
        raise ValueError(f"scenario.reward_components {names}: nothing a log can give (add \"profit\")")
    w = {LOG_COMPONENTS[k]: v for k, v in weights.items() if k in LOG_COMPONENTS}
    if mapped == ["reward"]:  # r̂ as one number: the learner's plain path
        return {"components": None, "weights": {}, "reference": "control", "reference_action": None, "dropped": dropped}
    action = str(getattr(scenario_config, "improvement_reference", "control"))
    return {"components": mapped, "weights": w, "dropped": dropped, "reference_action": action,
            "reference": log_reference(action, scenario_config, log_labels, action_names)}


def log_reference(reference: str, scenario_config=None, log_labels=None, action_names=None) -> str:
    """``reference`` as the log learner takes it: "control" / "logged" / a label of the log as given; a
    scenario's action name (``action_names``, default its offers' names) becomes that action's label
    in the log (``log_labels``; a coded log: its code, e.g. "10% off" → "2")."""
    reference = str(reference)
    names = [str(a) for a in (action_names if action_names is not None
                              else [o.name for o in getattr(scenario_config, "offers", None) or []])]
    labels = [str(a) for a in log_labels] if log_labels is not None else None
    if labels is not None and reference not in labels and reference in names and len(names) == len(labels):
        return labels[names.index(reference)]
    return reference


def names_scenario_objective(scenario_config, weights: dict) -> bool:
    """Whether ``weights`` (with ``scenario_config``) describe a scenario's objective rather than the log
    learner's: some weight names a scenario-only component (profit, peer_effect, ...), or the
    scenario names group-relative components and every weight is one of its components."""
    from grpokit.offline.learn import LEARN_COMPONENTS

    names = getattr(scenario_config, "reward_components", None)
    if not isinstance(names, (list, tuple)):
        return bool(set(weights) - set(LEARN_COMPONENTS))
    if set(weights) - set(LEARN_COMPONENTS):
        return True
    return any(n in GROUP_RELATIVE for n in names) and set(weights) <= set(names)


def _learn_from_simulated_log(scenario: Scenario, config: RunConfig, log=None, out_dir=None):
    """Learn from logs, as a business without a simulator would, with ``grpokit learn``'s own learner
    (:func:`grpokit.offline.workflow.fit_policy_on_log`: encoder, cross-fitted GBM outcome model,
    the same default advantage and checks) on the A/B log the baselines see (``log``, default the
    simulated one). Returns a policy deciding from raw contexts and the trainer's summary
    (with the learner's degeneration check and interference diagnostics); ``out_dir``: where the
    learner's trainer writes ``metrics.jsonl`` and its checkpoint."""
    from grpokit.offline.learn import RawFeaturePolicy, action_probabilities
    from grpokit.offline.workflow import DEFAULT_ADVANTAGE, _embedded, degeneration, fit_policy_on_log

    cfg = config.evaluation
    log = _cohort_log(scenario, log) if log is not None else _simulated_log(scenario, cfg)
    # no cohort-exposure feature: on a unit-randomized log its peer credit is unidentified and hurt
    # (benchmarks/learn_defaults.py --spillover 0.3: 41 % ± 37 of the oracle's lift vs 68 % without)
    grpo = config.grpo
    if cfg.logs_advantage != "config":  # one path with grpokit learn: its default advantage, unless told
        name = DEFAULT_ADVANTAGE if cfg.logs_advantage == "learn" else cfg.logs_advantage
        grpo = grpo.model_copy(update={"advantage": grpo.advantage.model_copy(update={"name": name})})
    spec = log_reward_spec(getattr(scenario, "config", None), dict(grpo.reward_weights),
                           log_labels=log.action_labels or range(log.n_actions),
                           action_names=getattr(scenario, "action_names", None))
    grpo = grpo.model_copy(update={"reward_weights": spec["weights"]})
    fit = fit_policy_on_log(log, outcome_model="gbm", config=grpo, policy_config=config.policy,
                            seed=cfg.seed, out_dir=out_dir, reward_components=spec["components"],
                            improvement_reference=spec["reference"])
    labels = list(getattr(scenario, "action_names", None) or range(log.n_actions))
    summary = dict(fit.summary)
    summary["learner"] = {"path": "grpokit.offline.workflow.fit_policy_on_log", "advantage": fit.config.advantage.name,
                          "degeneration": degeneration(action_probabilities(fit.policy, fit.x, _embedded(fit.policy, log)),
                                                       fit.summary["last_metrics"],
                                                       [str(a) for a in labels]),
                          "interference": fit.interference,
                          "reward_components": spec["components"] or ["reward"], "reward_weights": spec["weights"],
                          "improvement_reference": spec["reference"] if spec["components"] else None,
                          "improvement_reference_action": spec["reference_action"],
                          "dropped_components": spec["dropped"]}
    return RawFeaturePolicy(fit.policy, fit.encoder), summary


def _off_policy_values(scenario: Scenario, config: RunConfig, policies: dict, deciders: dict, policy, train=None) -> None:
    """What a business without a simulator would report: DR estimates with CIs on a held-out A/B log.

    Stored as ``policies.<name>.off_policy.{value, ci_low, ci_high}`` next to the simulator's ground
    truth ``value``. Spillover violates the no-interference assumption of off-policy estimators,
    so with spillover the estimates are biased: compare them with ``value``.
    """
    from grpokit.offline.estimators import estimate_value
    from grpokit.offline.outcome import OutcomeModel

    cfg = config.evaluation
    test = _simulated_log(scenario, cfg, offset=202)
    n_actions = test.n_actions
    reward_hat = OutcomeModel(n_actions, "gbm", seed=cfg.seed).fit(test.features, test.action, test.reward).predict_crossfit()
    x = torch.as_tensor(test.features, dtype=torch.float32)
    g = torch.tensor(test.group, dtype=torch.long) if test.group is not None else None
    decisions: dict[str, np.ndarray] = {}
    with torch.no_grad():
        decisions["grpo"] = policy.act(x, g).numpy()
    for name, decide in deciders.items():  # fitted once, on the training log
        decisions[name] = decide(test.features).numpy()
    for name, d in decisions.items():
        target = np.zeros((len(d), n_actions))
        target[np.arange(len(d)), d] = 1.0
        res = estimate_value("dr", reward=test.reward, action=test.action, pscore=test.pscore, target_probs=target,
                             reward_hat=reward_hat, seed=cfg.seed)
        policies[name]["off_policy"] = {"estimator": "dr", "value": res.value, "ci_low": res.ci_low,
                                        "ci_high": res.ci_high, "log_size": len(test)}


def _decide_like(name: str, deciders: dict, contexts: Contexts) -> torch.Tensor:
    """The current policy's decisions on new units (the fitted baselines decide per unit; constants repeat)."""
    if name in ("grpo", "oracle"):
        raise ValueError(f"the current policy of a pilot cannot be {name!r}")
    if name not in deciders:
        raise ValueError(f"unknown current policy {name!r}; choose one of {sorted(deciders)}")
    return deciders[name](contexts.obs.double().cpu().numpy())


def lift_shares(policies: dict, *, current: str | None = None, no_offer: str = "no_offer", oracle: str = "oracle") -> None:
    """Share of the oracle's lift over a reference that each policy captures, in place:

    ``lift_share_vs_no_offer`` = (V − V_no_offer) / (V_oracle − V_no_offer) and ``lift_share_vs_current``
    = (V − V_current) / (V_oracle − V_current); None when the reference or the oracle is missing or
    the oracle does not beat the reference. 1 = the oracle's lift, 0 = no better than the reference,
    < 0 = worse than it.
    """
    if oracle not in policies:
        return
    top = policies[oracle]["value"]
    for key, ref in (("lift_share_vs_no_offer", no_offer), ("lift_share_vs_current", current)):
        if ref is None or ref not in policies:
            continue
        base = policies[ref]["value"]
        for block in policies.values():
            block[key] = (block["value"] - base) / (top - base) if top - base > 1e-12 else None


def _sampling_intervals(scenario: Scenario, contexts: Contexts, assignments: dict, policies: dict,
                        current: str | None, z: float = 1.959964) -> None:
    """95 % normal intervals for the value of the customer base the evaluation units are drawn from:
    value ± z · sd(per-unit expected value) / √n, overall and per cohort (``per_group_ci``), and the
    paired difference with the current policy (``vs_current``). Skipped where a policy's per-unit
    expected values do not average to its value (joint effects that are not per unit)."""
    units: dict[str, torch.Tensor] = {}
    for name, a in assignments.items():
        if a.ndim > 1 and scenario.action_spec["kind"] != "dirichlet":
            continue
        with torch.no_grad():
            v = scenario.expected_reward(contexts, a.unsqueeze(1))[:, 0].double().cpu()
        value = policies[name]["value"]
        if abs(float(v.mean()) - value) > 1e-4 * max(1.0, abs(value)):
            continue
        units[name] = v
    group = contexts.group.cpu()
    for name, v in units.items():
        block = policies[name]
        se = float(v.std()) / math.sqrt(len(v)) if len(v) > 1 else float("nan")
        block["ci_low"], block["ci_high"] = block["value"] - z * se, block["value"] + z * se
        block["ci_kind"] = "95 % normal interval over the evaluation units (population sampling)"
        per = {}
        for g, gname in enumerate(scenario.group_names):
            rows = v[group == g]
            if len(rows) > 1:
                m, s_ = float(rows.mean()), float(rows.std()) / math.sqrt(len(rows))
                per[gname] = [m - z * s_, m + z * s_]
        block["per_group_ci"] = per
        if current in units and name != current:
            dse = float((v - units[current]).std()) / math.sqrt(len(v))
            diff = block["value"] - policies[current]["value"]  # exact; the per-unit values give its se
            block["vs_current"] = {"policy": current, "difference": diff, "ci_low": diff - z * dse, "ci_high": diff + z * dse}
