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


# -- continuous actions: pricing (a price multiplier) and allocation (budget shares) ---------------


class CohortedScenario:
    """A pricing or allocation scenario whose ``Contexts.group`` is an observable cohort.

    The loop pilots whole cohorts, and these scenarios have only their 3 (hidden) segments, seen
    through noisy indicators. The cohort here is a function of the features the service sees:
    c = (argmax of the segment indicators, a second observable in 4 bins) — pricing: the season
    quadrant (signs of sin θ and cos θ), allocation: the budget's quartile — 3 × 4 = 12 cohorts named
    ``"<segment>/<bin>"``. The true segment stays in ``extra["segment"]`` and is put back in ``group``
    before the base scenario scores anything (demand and targets depend on it).
    """

    def __init__(self, base):
        self.base = base
        self.name = base.name
        ng = base.n_groups
        seg = list(base.group_names)
        if base.name == "pricing":
            self.feature_names = [f"signal_{g}" for g in seg] + ["competitor_z", "season_sin", "season_cos"]
            bins = ["winter", "spring", "summer", "autumn"]
            self.action_names = ["multiplier"]
        elif base.name == "allocation":
            c = base.config
            self.feature_names = ([f"signal_{g}" for g in seg] + [f"condition_{j}" for j in range(c.n_conditions)]
                                  + ["budget_scaled"])
            bins = ["budget_q1", "budget_q2", "budget_q3", "budget_q4"]
            self.action_names = list(c.channel_names) + (["reserve"] if getattr(c, "reserve", False) else [])
        else:  # pragma: no cover - the config refuses other scenarios
            raise ValueError(f"no cohorts for scenario {base.name!r}")
        self._ng = ng
        self.group_names = [f"{s}/{b}" for s in seg for b in bins]
        self.n_groups = len(self.group_names)
        self.obs_dim = base.obs_dim
        self.action_spec = dict(base.action_spec)

    def cohort_of(self, obs: torch.Tensor) -> torch.Tensor:
        """``[n]`` cohort codes from observed features ``obs [n, d]`` (class doc)."""
        seg = obs[:, : self._ng].argmax(1)
        if self.name == "pricing":
            s, c = obs[:, self._ng + 1], obs[:, self._ng + 2]
            b = (s < 0).long() * 2 + (c < 0).long()
        else:
            b = ((obs[:, -1] + 1) / 2 * 4).floor().clamp(0, 3).long()
        return seg * 4 + b

    def _true(self, ctx):
        from grpokit.scenarios.base import Contexts

        return Contexts(ctx.obs, ctx.extra["segment"], ctx.mask, ctx.extra)

    def sample_contexts(self, n: int, generator: torch.Generator):
        from grpokit.scenarios.base import Contexts

        ctx = self.base.sample_contexts(n, generator)
        extra = dict(ctx.extra)
        extra["segment"] = ctx.group
        return Contexts(ctx.obs, self.cohort_of(ctx.obs), ctx.mask, extra)

    def reward(self, contexts, actions, generator, step: int = 0):
        return self.base.reward(self._true(contexts), actions, generator, step)

    def expected_reward(self, contexts, actions):
        return self.base.expected_reward(self._true(contexts), actions)

    def oracle_actions(self, contexts):
        return self.base.oracle_actions(self._true(contexts))

    def best_fixed_action(self, seed: int) -> torch.Tensor:
        """The business's best single price / split (the simulator's truth on a seeded sample)."""
        if self.name == "pricing":
            return torch.tensor(float(self.base.best_fixed_price(seed=seed)))
        return self.base.best_fixed_split(seed=seed).double()

    def reference_action(self) -> torch.Tensor:
        """The business's current rule: the list price (multiplier 1) / the equal split."""
        if self.name == "pricing":
            return torch.tensor(1.0)
        k = len(self.action_names)
        return torch.full((k,), 1.0 / k, dtype=torch.float64)


class ContinuousWorld:
    """The pricing or allocation world and the truth about any continuous policy.

    Truth: a policy served as q(· | x) earns V = mean_i E_{a ~ q(·|x_i)} R(x_i, a) over ``eval_size``
    fixed customers, with R the scenario's closed-form expected reward; the expectation is a
    Monte-Carlo mean over ``truth_samples`` draws of q per customer (common random numbers: the
    same seed for every policy, so differences between policies are sharper than each value).
    The oracle earns mean_i R(x_i, a*(x_i)) with the scenario's exact oracle action. No drift.
    """

    def __init__(self, scenario: dict, *, eval_size: int = 20_000, seed: int = 0, truth_samples: int = 64):
        from grpokit.scenarios.registry import make_scenario

        params = dict(scenario)
        self.base = make_scenario(params.pop("name"), **params)
        self.sc = CohortedScenario(self.base)
        self.eval_size, self.seed, self.truth_samples = int(eval_size), int(seed), int(truth_samples)
        gen = torch.Generator().manual_seed(self.seed * 1000 + 7)
        self.ctx = self.sc.sample_contexts(self.eval_size, gen)
        with torch.no_grad():
            oracle = self.sc.expected_reward(self.ctx, self.sc.oracle_actions(self.ctx).double().unsqueeze(1))
        self.oracle_unit = oracle[:, 0].double().numpy()

    def scenario_at(self, rnd: int):
        return self.sc

    def eval_contexts(self, rnd: int):
        return self.ctx

    def unit_values(self, ctx, sample_fn) -> np.ndarray:
        """``[n]``: E_{a~q} R(x_i, a) by the mean over ``sample_fn(obs, S) -> [n, S(, K)]`` draws."""
        a = torch.as_tensor(sample_fn(ctx.obs.double().numpy(), self.truth_samples))
        with torch.no_grad():
            r = self.sc.expected_reward(ctx, a.double())
        return r.double().numpy().mean(1)

    def value(self, rnd: int, unit: np.ndarray) -> dict:
        """True value and per-cohort values of a policy whose per-customer values are ``unit [n]``."""
        group = self.ctx.group.numpy()
        oracle = float(self.oracle_unit.mean())
        return {"value": float(unit.mean()), "oracle": oracle, "share_of_oracle": float(unit.mean() / oracle),
                "spend": None,
                "per_cohort": {self.sc.group_names[g]: float(unit[group == g].mean()) for g in np.unique(group)}}
