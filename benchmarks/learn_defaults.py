"""Which advantage should ``grpokit learn`` use by default on a sparse-profit log?

On the example log of examples/own_data/make_log.py (73 % of the rows earn 0 profit; the truth is
known), for each seed: one 30,000-row log, a 70/30 split, the FeatureEncoder and one cross-fitted
GBM outcome model on the training rows (shared by every arm), then GRPO with each advantage on
the same table. Scored on the held-out customers with the generator's *true* expected profit:
the policy's value, its share of the way from the best single offer to the oracle
((V − V_single) / (V_oracle − V_single)), and the largest decision share (1.0 = one offer for all).

    .venv/bin/python benchmarks/learn_defaults.py --seeds 0 1 2 --out runs/bench/learn_defaults.json

Arms: ``grpo`` (per-context std), ``dr_grpo`` (no std), ``rank``, ``pgrpo`` with the log's
region as preference groups, and ``pgrpo`` with one global group (a log without a group column).

``--setting marketing [--spillover S]``: the marketing scenario (examples/marketing.toml, profit
with 0.5 contact cost: most customers earn 0, the sparse-profit case of BENCHMARKS.md), its
simulated uniform A/B log of 20,000 decisions (seed s + 101, the one ``grpokit run --set
evaluation.train_on=logs`` learns from), the one learner of both paths
(:func:`grpokit.offline.workflow.fit_policy_on_log`), scored by the simulator's true value on
``--eval-size`` customers (seed s + 7): share of the oracle's lift over no offer. With spillover,
the arm ``+ interference`` adds the cohort exposure to the outcome model (peer credit).

    .venv/bin/python benchmarks/learn_defaults.py --setting marketing --seeds 0 1 2 3 4 --out runs/bench/ld_mk.json
    .venv/bin/python benchmarks/learn_defaults.py --setting marketing --spillover 0.3 --seeds 0 1 2 --out runs/bench/ld_mk_spill.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location("make_log", ROOT / "examples" / "own_data" / "make_log.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ARMS = {
    "grpo": ("grpo", False),
    "dr_grpo": ("dr_grpo", False),
    "rank": ("rank", False),
    "pgrpo (region groups)": ("pgrpo", True),
    "pgrpo (one group)": ("pgrpo", False),
}


def run(seeds: list[int], rows: int, steps: int, outcome_model: str) -> dict:
    from grpokit.config import AdvantageConfig, GRPOConfig
    from grpokit.offline.io import validate_log
    from grpokit.offline.learn import action_probabilities, learn_from_outcome_model
    from grpokit.offline.outcome import OutcomeModel
    from grpokit.offline.schema import LogSchema
    from grpokit.offline.workflow import _split, fit_encoder

    gen = _generator()
    schema = LogSchema(action="offer", actions=gen.OFFERS, reward="profit", pscore="propensity", group="region",
                       features=["region", "channel", "age", "tenure", "orders_90d", "avg_basket",
                                 "days_since_last_order", "is_member"])
    results: dict = {"rows": rows, "steps": steps, "outcome_model": outcome_model, "seeds": {}}
    for seed in seeds:
        df = gen.make_log(rows, seed)
        log = validate_log(df, schema)
        train, hold = _split(len(log), 0.3, seed)
        tr = log.subset(train)
        t0 = time.perf_counter()
        enc = fit_encoder(log, train)
        x_tr = enc.transform(tr.feature_frame())
        x_ho = enc.transform(log.subset(hold).feature_frame())
        model = OutcomeModel(log.n_actions, outcome_model, seed=seed).fit(x_tr, tr.action, tr.reward)
        table = model.predict_crossfit()
        t_model = time.perf_counter() - t0
        customers = df.iloc[hold].reset_index(drop=True)
        truth = gen.truth(customers)
        single, oracle = truth["best_single_value"], truth["oracle_value"]
        per = {"truth": truth, "outcome_model_seconds": t_model, "arms": {}}
        for arm, (name, groups) in ARMS.items():
            cfg = GRPOConfig(device="cpu", seed=seed, steps=steps, advantage=AdvantageConfig(name=name))
            g = tr.group if groups else (np.zeros(len(tr), dtype=np.int64) if name == "pgrpo" else None)
            n_groups = len(log.group_labels) if groups else 1
            t1 = time.perf_counter()
            policy, summary = learn_from_outcome_model(x_tr, table, cfg, group=g, n_groups=n_groups)
            probs = action_probabilities(policy, x_ho)
            value = gen.policy_value(customers, probs)
            share = np.bincount(probs.argmax(1), minlength=4) / len(probs)
            per["arms"][arm] = {
                "true_value": value,
                "gap_closed": (value - single) / (oracle - single),
                "share_of_oracle": value / oracle,
                "top_share": float(share.max()),
                "top_action": gen.OFFERS[int(share.argmax())],
                "last_entropy": summary["last_metrics"].get("entropy"),
                "last_frac_zero_std": summary["last_metrics"].get("frac_zero_std"),
                "seconds": time.perf_counter() - t1,
            }
            print(f"seed {seed} {arm:22s} true {value:.4f} (single {single:.4f}, oracle {oracle:.4f}) "
                  f"gap closed {per['arms'][arm]['gap_closed']:+.2f} top {per['arms'][arm]['top_action']} "
                  f"{100 * share.max():.0f} %", flush=True)
        results["seeds"][str(seed)] = per
    results["mean"] = {
        arm: {k: float(np.mean([results["seeds"][s]["arms"][arm][k] for s in results["seeds"]]))
              for k in ("true_value", "gap_closed", "share_of_oracle", "top_share")}
        for arm in ARMS
    }
    return results


MARKETING_ARMS = {
    "grpo": ("grpo", False),
    "dr_grpo": ("dr_grpo", False),
    "pgrpo (cohort groups)": ("pgrpo", False),
}


def run_marketing(seeds: list[int], spillover: float, eval_size: int, steps: int | None) -> dict:
    """Every arm through the one log learner on the marketing scenario; true values from the simulator."""
    import torch

    from grpokit.business import _simulated_log, evaluate_assignment
    from grpokit.config import load_config
    from grpokit.evaluation.population import population
    from grpokit.offline.learn import RawFeaturePolicy
    from grpokit.offline.workflow import fit_policy_on_log
    from grpokit.scenarios.registry import scenario_from_config

    arms = dict(MARKETING_ARMS)
    if spillover:
        arms["pgrpo + interference"] = ("pgrpo", True)
    results: dict = {"setting": "marketing", "spillover": spillover, "eval_size": eval_size, "seeds": {}}
    for seed in seeds:
        over = [f"grpo.seed={seed}", f"evaluation.seed={seed}", f"scenario.spillover={spillover}", "grpo.device=cpu"]
        if steps:
            over.append(f"grpo.steps={steps}")
        config = load_config(ROOT / "examples" / "marketing.toml", over)
        scenario = scenario_from_config(config.scenario)
        log = _simulated_log(scenario, config.evaluation)
        contexts = population(scenario, eval_size, seed + 7)
        t0 = time.perf_counter()
        v_none = evaluate_assignment(scenario, contexts, torch.zeros(eval_size, dtype=torch.long))["value"]
        v_oracle = evaluate_assignment(scenario, contexts, scenario.oracle_actions(contexts))["value"]
        per = {"no_offer": v_none, "oracle": v_oracle, "oracle_seconds": time.perf_counter() - t0, "arms": {}}
        for arm, (name, interference) in arms.items():
            adv = config.grpo.advantage.model_copy(update={"name": name})
            grpo = config.grpo.model_copy(update={"advantage": adv})
            t1 = time.perf_counter()
            fit = fit_policy_on_log(log, outcome_model="gbm", config=grpo, policy_config=config.policy, seed=seed,
                                    interference=interference)
            policy = RawFeaturePolicy(fit.policy, fit.encoder)
            acts = policy.act(contexts.obs, contexts.group)
            value = evaluate_assignment(scenario, contexts, acts)["value"]
            share = np.bincount(acts.numpy(), minlength=log.n_actions) / eval_size
            per["arms"][arm] = {"true_value": value, "lift_share": (value - v_none) / (v_oracle - v_none),
                                "share_of_oracle": value / v_oracle, "top_share": float(share.max()),
                                "offer_rate": float(1 - share[0]), "interference": fit.interference,
                                "seconds": time.perf_counter() - t1}
            print(f"seed {seed} spill {spillover} {arm:24s} true {value:.3f} (none {v_none:.3f}, oracle {v_oracle:.3f}) "
                  f"lift share {per['arms'][arm]['lift_share']:.3f} top {100 * share.max():.0f} %", flush=True)
        results["seeds"][str(seed)] = per
    results["summary"] = {}
    for arm in arms:
        xs = [results["seeds"][s]["arms"][arm]["lift_share"] for s in results["seeds"]]
        results["summary"][arm] = {"lift_share_mean": float(np.mean(xs)), "lift_share_sd": float(np.std(xs, ddof=1))
                                   if len(xs) > 1 else 0.0, "lift_share_min": float(min(xs)),
                                   "lift_share_max": float(max(xs)), "per_seed": xs,
                                   "true_value_mean": float(np.mean([results["seeds"][s]["arms"][arm]["true_value"]
                                                                     for s in results["seeds"]]))}
    return results


def own_data_table(res: dict, labels: dict | None = None) -> str:
    """The own-data table: per advantage the 5-seed means (``labels`` renames arms, e.g. to bold one)."""
    labels = labels or {}
    lines = ["| advantage | true profit / customer | gap closed (single -> oracle) | share of oracle | largest decision share |",
             "| --- | --- | --- | --- | --- |"]
    for arm, m in res["mean"].items():
        lines.append(f"| {labels.get(arm, arm)} | {m['true_value']:.3f} | {m['gap_closed']:+.2f} | "
                     f"{m['share_of_oracle']:.3f} | {100 * m['top_share']:.0f} % |")
    return "\n".join(lines)


def marketing_table(results: list[tuple[dict, dict]]) -> str:
    """The marketing table over one or more runs (``[(result, {arm: label})]``, e.g. spillover 0 and
    0.3): per arm the share of the oracle's lift over no offer, mean ± sd, range and per seed."""
    lines = ["| learner arm | spillover | mean ± sd | min - max | per seed |", "| --- | --- | --- | --- | --- |"]
    for res, labels in results:
        for arm, m in res["summary"].items():
            lines.append(f"| {labels.get(arm, arm)} | {res['spillover']:g} | {100 * m['lift_share_mean']:.1f} % ± "
                         f"{100 * m['lift_share_sd']:.1f} | {100 * m['lift_share_min']:.1f} - "
                         f"{100 * m['lift_share_max']:.1f} % | " + ", ".join(f"{100 * x:.1f}" for x in m["per_seed"]) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rows", type=int, default=30_000)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--outcome-model", default="gbm")
    ap.add_argument("--out", type=Path, default=Path("runs/bench/learn_defaults.json"))
    ap.add_argument("--setting", choices=["own_data", "marketing"], default="own_data")
    ap.add_argument("--spillover", type=float, default=0.0)
    ap.add_argument("--eval-size", type=int, default=5000)
    ap.add_argument("--marketing-steps", type=int, default=None, help="grpo.steps (default: the example's 400)")
    a = ap.parse_args()
    if a.setting == "marketing":
        res = run_marketing(a.seeds, a.spillover, a.eval_size, a.marketing_steps)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(res, indent=2))
        print("\nshare of the oracle's lift over no offer\n" + marketing_table([(res, {})]))
        print(f"written to {a.out}")
        return
    res = run(a.seeds, a.rows, a.steps, a.outcome_model)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=2))
    print("\n" + own_data_table(res))
    print(f"written to {a.out}")


if __name__ == "__main__":
    main()
