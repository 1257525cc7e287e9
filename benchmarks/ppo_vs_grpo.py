"""Stable-Baselines3 PPO against grpokit's GRPO / P-GRPO on the same preference scenario.

Both methods face the same problem: the preference scenario of ``grpokit.config.load_config(None,
overrides)`` (the package defaults unless ``--set`` changes them). GRPO trains on it directly
(batches of B contexts x G sampled actions); PPO sees it through
:class:`grpokit.scenarios.gym_env.ScenarioEnv`, a one-step contextual bandit built from the very
same scenario config.

Protocol (per method and seed):

* the training clock counts only training (sampling, scoring, updates); building the model and
  every evaluation are excluded;
* a *decision* is one scored action used for learning: GRPO scores ``batch_size x group_size``
  per step, PPO one per env step;
* every so often (every training step / PPO rollout at first, then each time the decision count
  grows by 5 %) the deterministic policy is evaluated on one fixed set of evaluation contexts
  (``--eval-size``, its own seed, shared by all methods and seeds) with the scenario's true
  expected reward (:func:`grpokit.evaluation.values.evaluate_actions`). PPO acts with
  ``model.predict(obs, deterministic=True)``, GRPO with ``Policy.act`` (the mode);
* a run stops after ``--budget-seconds`` of training clock (or ``--max-decisions``);
* reported: decisions and seconds until the value reaches 90 % of the oracle's, overall and for
  the worst group (= every group at >= 90 % of its own oracle value), both at the first crossing
  and "stably" (from that evaluation on, never below again), and the final values vs the oracle.

For the preference scenario the script also reports the *feature-only Bayes ceiling*: the value of
the best decision rule that sees only the features (posterior over groups from the Gaussian
prototypes x shares, then the action with the highest posterior-expected reward). When the
features reveal the group poorly this ceiling is below the per-group oracle, and no policy that
does not see the group can reach 90 % of the oracle for a minority group.

PPO hyperparameters (``PPO_PARAMS``), chosen for a one-step bandit: ``gamma`` is irrelevant because
every episode terminates after one step (SB3 then masks the bootstrap), so ``gamma=0`` and
``gae_lambda=1`` make the advantage simply ``r - V(x)``; 8 envs x ``n_steps=64`` = 512 decisions
per rollout (short rollouts = frequent updates, which matter more than long horizons here),
``batch_size=128``, ``n_epochs=4``, ``learning_rate=1e-3`` (better than the default 3e-4 in a short
check on this scenario; ``ent_coef=0.01`` was not better than 0), ``ent_coef=0``, the SB3 default
MlpPolicy (2 x 64 tanh, separate value net, advantage normalization), which matches grpokit's
default 2 x 64 tanh torso. GRPO uses the grpokit defaults of the config.

Threads: ``torch.set_num_threads(--threads)``, default 1. On the 2-core machine this was measured
to be ~3x faster for SB3 PPO than 2 threads (tiny per-step tensors) and equal for GRPO.

Usage::

    python benchmarks/ppo_vs_grpo.py --json ppo_vs_grpo.json            # default, < 10 min on 2 cores
    python benchmarks/ppo_vs_grpo.py --quick                             # < 1 min
    python benchmarks/ppo_vs_grpo.py --obs both --set scenario.feature_signal=3
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from grpokit.config import RunConfig, load_config
from grpokit.evaluation.values import evaluate_actions, evaluate_policy, oracle_values
from grpokit.runner import build_trainer
from grpokit.scenarios.base import Contexts, Scenario
from grpokit.scenarios.gym_env import ScenarioEnv
from grpokit.scenarios.preferences import PreferenceScenario
from grpokit.scenarios.registry import scenario_from_config

__all__ = [
    "PPO_PARAMS",
    "EvalSchedule",
    "feature_bayes_ceiling",
    "make_eval_contexts",
    "run_grpo",
    "run_ppo",
    "summarize_curve",
    "main",
]

#: SB3 PPO settings for the one-step bandit (see the module docstring for the reasons).
PPO_PARAMS = {
    "n_envs": 8,
    "n_steps": 64,
    "batch_size": 128,
    "n_epochs": 4,
    "learning_rate": 1e-3,
    "ent_coef": 0.0,
    "gamma": 0.0,
    "gae_lambda": 1.0,
    "clip_range": 0.2,
}
FRACTION = 0.9
EVAL_GROWTH = 1.05  #: evaluate again once the decision count grew by 5 % (and at least one unit)
GROUP_EMBEDDING_DIM = 8  #: GRPO's group embedding when the policy may see the group (--obs group)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- problem, evaluation set and references ---------------------------------------------------------


def build_run_config(
    overrides: list[str], *, seed: int, advantage: str | None = None, include_group: bool = False
) -> RunConfig:
    """The grpokit run config for one run: the user's overrides, then seed / device / advantage."""
    extra = [f"grpo.seed={seed}", 'grpo.device="cpu"']
    if advantage is not None:
        extra.append(f'grpo.advantage.name="{advantage}"')
    if include_group:
        extra.append(f"policy.group_embedding_dim={GROUP_EMBEDDING_DIM}")
    return load_config(None, list(overrides) + extra)


def make_eval_contexts(scenario: Scenario, n: int, seed: int) -> Contexts:
    """The fixed evaluation contexts (their own generator, independent of every training seed)."""
    return scenario.sample_contexts(n, torch.Generator().manual_seed(seed))


def feature_bayes_ceiling(scenario: Scenario, contexts: Contexts) -> dict | None:
    """Value of the best features-only decision rule on ``contexts`` (preference scenario only).

    p(group | x) ∝ share_p · N(x; feature_signal · c_p, I); action = argmax_a Σ_p p(p | x) E[r | p, a].
    Returns None for other scenarios (no closed form known here).
    """
    if not isinstance(scenario, PreferenceScenario):
        return None
    centers = scenario.config.feature_signal * scenario.prototypes.double()
    x = contexts.obs.double()
    loglik = -0.5 * ((x[:, None, :] - centers[None]) ** 2).sum(-1) + scenario.shares.double().log()[None]
    posterior = loglik.softmax(1)
    actions = (posterior @ scenario.mean_table.double()).argmax(1)
    result = evaluate_actions(scenario, contexts, actions)
    result["group_accuracy"] = float((posterior.argmax(1) == contexts.group).double().mean())
    return result


def ratios(result: dict, oracle: dict) -> tuple[float, dict[str, float | None]]:
    """(overall value / oracle, {group: value / oracle})."""
    per = {}
    for g, target in oracle["per_group"].items():
        v = result["per_group"].get(g)
        per[g] = None if v is None or not target else v / target
    return result["value"] / oracle["value"], per


class EvalSchedule:
    """When to evaluate: every ``unit`` decisions at first, then each time the count grew by 5 %."""

    def __init__(self, unit: int, growth: float = EVAL_GROWTH):
        self.unit = max(1, int(unit))
        self.growth = growth
        self.next = 0

    def due(self, decisions: int) -> bool:
        return decisions >= self.next

    def done(self, decisions: int) -> None:
        self.next = max(decisions + self.unit, math.ceil(decisions * self.growth))


def summarize_curve(curve: list[dict], oracle: dict, fraction: float = FRACTION) -> dict:
    """Decisions / seconds to ``fraction`` of the oracle (overall, worst group; first and stable) and final values.

    ``curve``: evaluations in order, each ``{"decisions", "seconds", "value", "per_group"}``.
    """
    overall = [r["value"] / oracle["value"] for r in curve]
    worst = []
    for r in curve:
        rs = [v for v in ratios(r, oracle)[1].values() if v is not None]
        worst.append(min(rs) if rs else float("nan"))

    def first(series):
        for i, v in enumerate(series):
            if v >= fraction:
                return i
        return None

    def stable(series):
        idx = None
        for i in range(len(series) - 1, -1, -1):
            if series[i] >= fraction:
                idx = i
            else:
                break
        return idx

    def at(i):
        return None if i is None else {"decisions": curve[i]["decisions"], "seconds": curve[i]["seconds"]}

    final = curve[-1]
    final_overall, final_groups = ratios(final, oracle)
    per_group_first = {}
    for g in oracle["per_group"]:
        series = [ratios(r, oracle)[1][g] or 0.0 for r in curve]
        per_group_first[g] = at(first(series))
    return {
        "to_90pct": {
            "overall": at(first(overall)),
            "overall_stable": at(stable(overall)),
            "worst_group": at(first(worst)),
            "worst_group_stable": at(stable(worst)),
            "per_group": per_group_first,
        },
        "final": {
            "decisions": final["decisions"],
            "seconds": final["seconds"],
            "value": final["value"],
            "per_group": final["per_group"],
            "ratio": final_overall,
            "ratio_per_group": final_groups,
            "worst_group_ratio": worst[-1],
        },
        "min_worst_group_ratio_after_first_90": (
            None if first(worst) is None else min(worst[first(worst):])
        ),
    }


# -- GRPO ---------------------------------------------------------------------------------------------


def run_grpo(
    overrides: list[str],
    advantage: str,
    seed: int,
    budget_seconds: float,
    eval_contexts: Contexts,
    *,
    include_group: bool = False,
    max_decisions: int | None = None,
) -> dict:
    """Train grpokit's GRPO trainer (advantage ``advantage``) under the protocol; returns the curve."""
    cfg = build_run_config(overrides, seed=seed, advantage=advantage, include_group=include_group)
    torch.manual_seed(seed)
    trainer = build_trainer(cfg)
    scenario = trainer.scenario
    per_step = cfg.grpo.batch_size * cfg.grpo.group_size
    schedule = EvalSchedule(per_step)
    curve: list[dict] = []
    train_seconds = 0.0

    def evaluate(decisions: int) -> None:
        result = evaluate_policy(trainer.policy, scenario, eval_contexts)
        curve.append({"decisions": decisions, "seconds": train_seconds, **result})
        schedule.done(decisions)

    evaluate(0)
    while True:
        t0 = time.perf_counter()
        trainer.train_step()
        train_seconds += time.perf_counter() - t0
        decisions = trainer.step * per_step
        stop = train_seconds >= budget_seconds or (max_decisions is not None and decisions >= max_decisions)
        if stop or schedule.due(decisions):
            evaluate(decisions)
        if stop:
            break
    return {
        "curve": curve,
        "steps": trainer.step,
        "decisions": trainer.step * per_step,
        "train_seconds": train_seconds,
        "decisions_per_second": trainer.step * per_step / train_seconds,
        "settings": {
            "advantage": cfg.grpo.advantage.model_dump(),
            "batch_size": cfg.grpo.batch_size,
            "group_size": cfg.grpo.group_size,
            "lr": cfg.grpo.lr,
            "num_iterations": cfg.grpo.num_iterations,
            "policy": cfg.policy.model_dump(),
        },
    }


# -- PPO ----------------------------------------------------------------------------------------------


def run_ppo(
    overrides: list[str],
    seed: int,
    budget_seconds: float,
    eval_contexts: Contexts,
    *,
    include_group: bool = False,
    max_decisions: int | None = None,
    params: dict | None = None,
) -> dict:
    """Train SB3 PPO on :class:`ScenarioEnv` over the same scenario config; returns the curve."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv

    p = {**PPO_PARAMS, **(params or {})}
    cfg = build_run_config(overrides, seed=seed)
    scenario = scenario_from_config(cfg.scenario)  # the evaluator's copy; each env builds its own
    venv = make_vec_env(
        lambda: ScenarioEnv(scenario_from_config(cfg.scenario), include_group=include_group),
        n_envs=p["n_envs"],
        seed=seed,
        vec_env_cls=DummyVecEnv,
    )
    eval_obs = venv.envs[0].unwrapped.observe(eval_contexts)
    model = PPO(
        "MlpPolicy",
        venv,
        n_steps=p["n_steps"],
        batch_size=p["batch_size"],
        n_epochs=p["n_epochs"],
        learning_rate=p["learning_rate"],
        ent_coef=p["ent_coef"],
        gamma=p["gamma"],
        gae_lambda=p["gae_lambda"],
        clip_range=p["clip_range"],
        seed=seed,
        device="cpu",
        verbose=0,
    )
    curve: list[dict] = []
    schedule = EvalSchedule(p["n_envs"] * p["n_steps"])
    clock = {"start": 0.0, "eval": 0.0}

    def train_seconds() -> float:
        return time.perf_counter() - clock["start"] - clock["eval"]

    class BudgetEval(BaseCallback):
        """At each rollout start (the policy has learned from ``num_timesteps`` decisions): evaluate
        when due (off the clock) and stop once the budget is spent."""

        stop = False

        def _on_rollout_start(self) -> None:
            seconds = train_seconds()
            decisions = self.model.num_timesteps
            over = seconds >= budget_seconds or (max_decisions is not None and decisions >= max_decisions)
            if over or schedule.due(decisions):
                t0 = time.perf_counter()
                actions, _ = self.model.predict(eval_obs, deterministic=True)
                result = evaluate_actions(scenario, eval_contexts, torch.as_tensor(actions).long())
                curve.append({"decisions": decisions, "seconds": seconds, **result})
                schedule.done(decisions)
                clock["eval"] += time.perf_counter() - t0
            if over:
                self.stop = True

        def _on_step(self) -> bool:
            return not self.stop

    callback = BudgetEval()
    clock["start"] = time.perf_counter()
    model.learn(total_timesteps=10**12, callback=callback)
    trained = curve[-1]["decisions"]
    seconds = curve[-1]["seconds"]
    venv.close()
    return {
        "curve": curve,
        "decisions": trained,
        "train_seconds": seconds,
        "decisions_per_second": trained / seconds if seconds > 0 else None,
        "settings": {**p, "policy": "MlpPolicy (SB3 default: 2x64 tanh, separate pi/vf nets)"},
    }


# -- the benchmark ------------------------------------------------------------------------------------


def _fmt_count(x) -> str:
    if x is None:
        return "-"
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e3:
        return f"{x / 1e3:.1f}k"
    return f"{x:.0f}"


def _median(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def aggregate(runs: list[dict]) -> dict:
    """Across seeds: medians of the to-90 % points over the seeds that reached them, mean final ratios."""
    out: dict = {"n_seeds": len(runs), "to_90pct": {}}
    for key in ("overall", "overall_stable", "worst_group", "worst_group_stable"):
        points = [r["summary"]["to_90pct"][key] for r in runs]
        reached = [pt for pt in points if pt is not None]
        out["to_90pct"][key] = {
            "reached": len(reached),
            "median_decisions": _median([pt["decisions"] for pt in reached]),
            "median_seconds": _median([pt["seconds"] for pt in reached]),
        }
    finals = [r["summary"]["final"] for r in runs]
    out["final_ratio_mean"] = float(np.mean([f["ratio"] for f in finals]))
    groups = finals[0]["ratio_per_group"].keys()
    out["final_ratio_per_group_mean"] = {
        g: (
            None
            if any(f["ratio_per_group"][g] is None for f in finals)
            else float(np.mean([f["ratio_per_group"][g] for f in finals]))
        )
        for g in groups
    }
    out["final_value_mean"] = float(np.mean([f["value"] for f in finals]))
    out["final_worst_group_ratio_min"] = float(min(f["worst_group_ratio"] for f in finals))
    out["decisions_mean"] = float(np.mean([r["decisions"] for r in runs]))
    out["decisions_per_second_mean"] = float(np.mean([r["decisions_per_second"] for r in runs]))
    return out


def format_table(blocks: dict, group_names: list[str]) -> str:
    """A plain-text table: one row per method (medians over seeds; n/N = seeds that reached 90 %)."""

    def point(a, key):
        p = a["to_90pct"][key]
        if p["reached"] == 0:
            return f"never (0/{a['n_seeds']})", "-"
        return f"{_fmt_count(p['median_decisions'])} ({p['reached']}/{a['n_seeds']})", f"{p['median_seconds']:.2f}"

    header = [
        "method",
        "dec→90% all",
        "s→90% all",
        "dec→90% worst",
        "s→90% worst",
        "dec→90% worst stable",
        "final/oracle",
        *[f"final {g}" for g in group_names],
        "decisions",
        "dec/s",
    ]
    rows = [header]
    for name, block in blocks.items():
        a = block["aggregate"]
        d_all, s_all = point(a, "overall")
        d_w, s_w = point(a, "worst_group")
        d_ws, _ = point(a, "worst_group_stable")
        per = a["final_ratio_per_group_mean"]
        rows.append(
            [
                name,
                d_all,
                s_all,
                d_w,
                s_w,
                d_ws,
                f"{a['final_ratio_mean']:.3f}",
                *[("-" if per[g] is None else f"{per[g]:.3f}") for g in group_names],
                _fmt_count(a["decisions_mean"]),
                _fmt_count(a["decisions_per_second_mean"]),
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--json", type=Path, default=None, help="write the full results (curves included) here")
    ap.add_argument("--seeds", type=int, default=None, help="number of training seeds 0..N-1 (default 3; --quick 1)")
    ap.add_argument("--budget-seconds", type=float, default=None, help="training clock per run (default 40; --quick 8)")
    ap.add_argument("--max-decisions", type=int, default=None, help="also stop a run after this many decisions")
    ap.add_argument("--quick", action="store_true", help="1 seed, 8 s per run: under a minute in all")
    ap.add_argument("--methods", default="ppo,grpo,pgrpo", help="comma list of ppo, grpo, pgrpo, dr_grpo, rank")
    ap.add_argument(
        "--obs",
        choices=["features", "group", "both"],
        default="features",
        help="what the policies see: the features only (grpokit default), features + group "
        "(PPO: one-hot appended; GRPO: a group embedding), or both settings",
    )
    ap.add_argument("--eval-size", type=int, default=4096, help="fixed evaluation contexts")
    ap.add_argument("--eval-seed", type=int, default=20_240_611)
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1, see the docstring)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="grpokit config override for both methods, e.g. scenario.feature_signal=3 (repeatable)")
    args = ap.parse_args(argv)
    if args.seeds is None:
        args.seeds = 1 if args.quick else 3
    if args.budget_seconds is None:
        args.budget_seconds = 8.0 if args.quick else 40.0
    if args.seeds < 1:
        ap.error("--seeds must be >= 1")
    if args.budget_seconds <= 0:
        ap.error("--budget-seconds must be > 0")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    known = {"ppo", "grpo", "pgrpo", "dr_grpo", "rank"}
    bad = [m for m in methods if m not in known]
    if bad or not methods:
        ap.error(f"unknown methods {bad}; choose from {sorted(known)}")
    args.methods = methods
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*Box observation space (minimum|maximum) value.*")
    if "ppo" in args.methods:
        try:
            import stable_baselines3  # noqa: F401
        except ImportError:
            raise SystemExit("PPO needs stable-baselines3: pip install 'grpokit[bench]' (or drop ppo from --methods)")

    base = build_run_config(args.overrides, seed=0)
    scenario = scenario_from_config(base.scenario)
    eval_contexts = make_eval_contexts(scenario, args.eval_size, args.eval_seed)
    oracle = oracle_values(scenario, eval_contexts)
    if oracle is None:
        raise SystemExit(f"scenario {scenario.name!r} has no oracle: the 90 %-of-oracle metrics need one")
    ceiling = feature_bayes_ceiling(scenario, eval_contexts)
    settings = {"features": [False], "group": [True], "both": [False, True]}[args.obs]

    blocks: dict[str, dict] = {}
    for include_group in settings:
        for method in args.methods:
            name = method + ("+group" if include_group else "")
            runs = []
            for seed in range(args.seeds):
                log(f"[{name}] seed {seed}: training for {args.budget_seconds:g} s ...")
                if method == "ppo":
                    run = run_ppo(args.overrides, seed, args.budget_seconds, eval_contexts,
                                  include_group=include_group, max_decisions=args.max_decisions)
                else:
                    run = run_grpo(args.overrides, method, seed, args.budget_seconds, eval_contexts,
                                   include_group=include_group, max_decisions=args.max_decisions)
                run["seed"] = seed
                run["summary"] = summarize_curve(run["curve"], oracle)
                s = run["summary"]
                log(
                    f"[{name}] seed {seed}: {run['decisions']} decisions in {run['train_seconds']:.1f} s; "
                    f"final/oracle {s['final']['ratio']:.3f}, worst group {s['final']['worst_group_ratio']:.3f}"
                )
                runs.append(run)
            blocks[name] = {
                "method": method,
                "sees_group": include_group,
                "aggregate": aggregate(runs),
                "runs": runs,
            }

    import importlib.metadata as md

    def version(pkg):
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return None

    result = {
        "command": " ".join([Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)]),
        "protocol": {
            "fraction": FRACTION,
            "budget_seconds": args.budget_seconds,
            "max_decisions": args.max_decisions,
            "seeds": list(range(args.seeds)),
            "eval_size": args.eval_size,
            "eval_seed": args.eval_seed,
            "eval_growth": EVAL_GROWTH,
            "torch_threads": torch.get_num_threads(),
            "clock": "training only; model construction and evaluations excluded",
            "decision": "one scored action used for learning (GRPO: batch_size*group_size per step; PPO: one per env step)",
        },
        "scenario": base.scenario.model_dump(mode="json"),
        "overrides": args.overrides,
        "oracle": oracle,
        "feature_bayes_ceiling": ceiling,
        "methods": blocks,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "grpokit": version("grpokit"),
            "stable_baselines3": version("stable-baselines3"),
            "gymnasium": version("gymnasium"),
        },
    }

    print(f"scenario: {json.dumps(result['scenario'])}")
    per_group = ", ".join(f"{g} {v:.4f}" for g, v in oracle["per_group"].items())
    print(f"oracle value {oracle['value']:.4f}; per group {per_group}")
    if ceiling is not None:
        print(
            "feature-only Bayes ceiling / oracle: "
            f"{ceiling['value'] / oracle['value']:.3f}; per group "
            + ", ".join(f"{g} {r:.3f}" for g, r in ratios(ceiling, oracle)[1].items() if r is not None)
            + f" (group identifiable from features: {ceiling['group_accuracy']:.1%})"
        )
    print(
        f"budget {args.budget_seconds:g} s of training per run, {args.seeds} seed(s), medians over seeds, "
        f"torch threads {torch.get_num_threads()}; worst = every group at >= 90 % of its oracle value"
    )
    print(format_table(blocks, scenario.group_names))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
