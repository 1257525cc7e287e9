"""GRPO vs Dr. GRPO vs rank vs P-GRPO on the heterogeneous-preference scenario, same seeds.

For each method and seed, train from the same config (only ``grpo.advantage.name`` and
``grpo.seed`` change) and record the true value per preference group, the oracle, and the first
evaluation step at which each group reached 90 % of its oracle value.
"""

from __future__ import annotations

import statistics
import time

from grpokit.config import load_config
from grpokit.runner import build_trainer

__all__ = ["METHODS", "run_preferences"]

METHODS = ("grpo", "dr_grpo", "rank", "pgrpo")


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def run_preferences(
    methods: tuple[str, ...] | list[str] = METHODS,
    seeds: tuple[int, ...] | list[int] = (0, 1, 2),
    config_path=None,
    overrides: list[str] | None = None,
    on_result=None,
) -> dict:
    """Train every method on every seed; one summary block per method (means over seeds, with stds)."""
    base = load_config(config_path, overrides)
    out: dict = {"config": base.model_dump(mode="json"), "seeds": list(seeds), "methods": {}}
    for method in methods:
        runs = []
        for seed in seeds:
            cfg = base.model_copy(deep=True)
            cfg.grpo.advantage.name = method
            cfg.grpo.seed = seed
            trainer = build_trainer(cfg)
            t0 = time.perf_counter()
            summary = trainer.train()
            summary["seconds"] = time.perf_counter() - t0
            runs.append(summary)
            if on_result is not None:
                on_result(method, seed, summary)
        groups = list(runs[0]["oracle"]["per_group"])
        values = [r["policies"][method]["value"] for r in runs]
        v_mean, v_std = _mean_std(values)
        per_group, per_group_std, steps = {}, {}, {}
        for g in groups:
            per_group[g], per_group_std[g] = _mean_std([r["policies"][method]["per_group"][g] for r in runs])
        for key in ["overall", *groups]:
            hits = [r["steps_to_90pct"][key] for r in runs]
            reached = [h for h in hits if h is not None]
            # median over seeds, None when any seed never reached it within the budget
            steps[key] = statistics.median(reached) if len(reached) == len(hits) else None
        out["methods"][method] = {
            "policies": {
                method: {
                    "value": v_mean,
                    "value_std": v_std,
                    "per_group": per_group,
                    "per_group_std": per_group_std,
                    "per_seed": values,
                }
            },
            "oracle": {
                "value": statistics.fmean(r["oracle"]["value"] for r in runs),
                "per_group": {g: statistics.fmean(r["oracle"]["per_group"][g] for r in runs) for g in groups},
            },
            "steps_to_90pct": steps,
            "steps_to_90pct_per_seed": {key: [r["steps_to_90pct"][key] for r in runs] for key in steps},
            "seconds_mean": statistics.fmean(r["seconds"] for r in runs),
        }
    return out
