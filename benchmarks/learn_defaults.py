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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rows", type=int, default=30_000)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--outcome-model", default="gbm")
    ap.add_argument("--out", type=Path, default=Path("runs/bench/learn_defaults.json"))
    a = ap.parse_args()
    res = run(a.seeds, a.rows, a.steps, a.outcome_model)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=2))
    print("\n| advantage | true profit / customer | gap closed (single -> oracle) | share of oracle | largest decision share |")
    print("| --- | --- | --- | --- | --- |")
    for arm, m in res["mean"].items():
        print(f"| {arm} | {m['true_value']:.3f} | {m['gap_closed']:+.2f} | {m['share_of_oracle']:.3f} | "
              f"{100 * m['top_share']:.0f} % |")
    print(f"written to {a.out}")


if __name__ == "__main__":
    main()
