"""The simulator's side of the loop: the (possibly drifting) world, and the truth about any policy.

Drift (``loop.drift = d`` per round, 0 = a fixed world): in round r (factor f = d · r) persuadables
respond less to discounts (discount_sensitivity × (1 − f)) and more to free shipping
(shipping_effect + 0.5 f), new customers respond more to discounts (× (1 + 2 f)) and less to free
shipping (× (1 − f)), sleeping dogs mind a contact less (contact_effect × (1 − f)), and contact and
shipping cost rise (× (1 + f)): the best offer moves for several segments.

Truth: with no spillover the expected profit of customer i under offer a is the table
R[i, a] (``expected_reward`` with each column a constant offer), so a policy serving
q(a | x_i) earns V = mean_i Σ_a q(a | x_i) R[i, a]; the oracle earns mean_i max_a R[i, a].
"""

from __future__ import annotations

import numpy as np
import torch

from grpokit.scenarios.marketing import MarketingConfig, MarketingScenario

__all__ = ["World"]


class World:
    """The marketing world of each round and its fixed evaluation customers."""

    def __init__(self, scenario: dict, *, drift: float = 0.0, eval_size: int = 20_000, seed: int = 0):
        self.base = MarketingConfig(**scenario)
        self.drift = float(drift)
        self.eval_size = int(eval_size)
        self.seed = int(seed)
        self._cache: dict[int, tuple] = {}

    def config_at(self, rnd: int) -> MarketingConfig:
        f = self.drift * rnd
        if f == 0:
            return self.base
        data = self.base.model_dump()
        for s in data["segments"]:
            if s["name"] == "persuadable":
                s["discount_sensitivity"] *= 1 - f
                s["shipping_effect"] = min(s["shipping_effect"] + 0.5 * f, 1.0)
            elif s["name"] == "new_customer":
                s["discount_sensitivity"] *= 1 + 2 * f
                s["shipping_effect"] *= 1 - f
            elif s["name"] == "sleeping_dog":
                s["contact_effect"] *= 1 - f
        data["contact_cost"] *= 1 + f
        data["shipping_cost"] *= 1 + f
        return MarketingConfig(**data)

    def scenario_at(self, rnd: int) -> MarketingScenario:
        return self._at(rnd)[0]

    def _at(self, rnd: int):
        if rnd not in self._cache:
            sc = MarketingScenario(self.config_at(rnd))
            gen = torch.Generator().manual_seed(self.seed * 1000 + 7)  # the same customers every round
            ctx = sc.sample_contexts(self.eval_size, gen)
            self._cache[rnd] = (sc, ctx, self.table(sc, ctx), self.spend_table(sc, ctx))
        return self._cache[rnd]

    @staticmethod
    def table(sc: MarketingScenario, ctx) -> np.ndarray:
        """``[B, A]`` expected profit of each offer for each customer (no spillover: exact)."""
        a = torch.arange(sc.n_offers).expand(len(ctx), -1)
        return sc.expected_reward(ctx, a).double().numpy()

    @staticmethod
    def spend_table(sc: MarketingScenario, ctx) -> np.ndarray:
        a = torch.arange(sc.n_offers).expand(len(ctx), -1)
        return sc.spend(ctx, a).double().numpy()

    def eval_contexts(self, rnd: int):
        return self._at(rnd)[1]

    def value(self, rnd: int, probs: np.ndarray) -> dict:
        """True value, spend and per-cohort values of a policy serving ``probs [B, A]`` on the eval customers."""
        sc, ctx, table, spend = self._at(rnd)
        per_unit = (probs * table).sum(1)
        best = table.max(1)
        group = ctx.group.numpy()
        oracle = float(best.mean())
        return {"value": float(per_unit.mean()), "oracle": oracle, "share_of_oracle": float(per_unit.mean() / oracle),
                "spend": float((probs * spend).sum(1).mean()),
                "per_cohort": {sc.group_names[g]: float(per_unit[group == g].mean()) for g in np.unique(group)}}
