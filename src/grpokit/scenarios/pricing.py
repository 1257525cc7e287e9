"""Dynamic pricing with customer segments and a competitor: a price multiplier in [low, high].

The decision is a multiplier m ∈ [low, high] on a list price ``base_price`` (action_spec
``{"kind": "beta", "low": low, "high": high}``), so the offered price is p = m · base_price.

Customers come in groups g (default: price-sensitive *students*, *regulars*, *business*) with
shares s_g. Group g has a reference price ref_g, an own-price elasticity e_g ≥ 0, a competitor
sensitivity c_g ≥ 0 and a base purchase logit α_g. Each context also has

* a competitor price comp = base_price · competitor_mean · exp(competitor_spread · z), z ~ N(0, 1);
* a season phase θ ~ U[0, 2π), which shifts demand by seasonality · sin θ.

The purchase probability is logistic in the log price relative to the group's reference price and
to the competitor's price::

    logit q(m) = α_g + seasonality · sin θ − e_g · log(p / ref_g) − c_g · log(p / comp)

and the reward is the margin: ``reward`` = Bernoulli(q(m)) · (p − unit_cost) (one sampled purchase
decision per action), ``expected_reward`` = q(m) · (p − unit_cost) in closed form. Actions are
clamped to [low, high] before scoring (a production system cannot quote outside the bounds).

Features the policy sees (``obs_dim = n_groups + 3``): the group one-hot plus N(0, feature_noise²)
noise (a noisy segment signal), z (the standardized log competitor price), sin θ and cos θ (cos θ
does not move demand: a distractor). The true group, competitor price and demand shift are kept in
``Contexts.group`` / ``extra``, away from the policy.

Oracle (exact): with u = log m, log(q · (p − c)) is strictly concave in u on p > c (log σ is
concave and the logit is linear in u; log(b·eᵘ − c) is concave for c ≥ 0), so the expected margin
is unimodal and its derivative in u, ``−(e_g + c_g)(1 − q) + p / (p − c)``, is decreasing.
:meth:`PricingScenario.oracle_actions` bisects that derivative in float64 over
[max(low, cost/base), high] for 100 iterations (the bracket shrinks below float64 resolution;
a boundary optimum is reached when the derivative keeps one sign). The tests check it against a
2001-point grid.

Group-relative components (``reward_components``; empty by default: ``reward`` is the margin
alone, one number per decision). With ``m_ref`` the reference multiplier named by
``improvement_reference`` (``"list_price"``: m = 1.0, quoting the list price, the "no action" price;
a number: one fixed multiplier for everyone, the current price rule; a list: one multiplier per
group, the current segment prices) and the *same* uniform number u of the purchase draw (a paired
draw: the customer who buys at p_ref = m_ref · base_price also buys at any lower price)::

    profit_bi                 = [u_bi < q(m_bi)] · (m_bi · base_price − unit_cost)   (the sampled margin)
    improvement_bi            = profit_bi − [u_bi < q(m_ref)] · (m_ref · base_price − unit_cost)
    relative_to_cohort_median = improvement_bi − median{improvement_jk : group_j = group_b}
    cohort_percentile_rank    = (#{improvement_jk < improvement_bi} + #{... = improvement_bi} / 2) / n_c

the median and the mid-ranks pooled over the B_c·G sampled decisions of cohort c
(``Contexts.group``) in the batch (:func:`grpokit.rewards.components.group_relative_components`).
With any component named (the list must keep ``profit``, the outcome pilots observe; weight it 0
to train on the rest alone), ``reward`` returns ``{name: [B, G]}`` for those named; weigh them with
``grpo.reward_weights`` (a missing weight is 1). ``expected_reward`` stays the margin.

Baseline: :meth:`PricingScenario.best_fixed_price` is the single multiplier maximizing the mean
expected margin over a seeded sample of contexts (a grid over [low, high], refined around the
best grid point).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import Tensor

from grpokit.rewards.components import GROUP_RELATIVE, check_component_names, group_relative_components
from grpokit.scenarios.base import Contexts, Scenario, market, market_values

__all__ = ["PricingConfig", "PricingScenario", "PRICING_COMPONENTS"]

#: the reward components the pricing scenario can return (``reward_components``)
PRICING_COMPONENTS = ("profit", *GROUP_RELATIVE)


class PricingConfig(BaseModel):
    """Every parameter of the pricing scenario (validated; unknown keys are errors).

    Per-group lists (``group_names``, ``shares``, ``reference_prices``, ``elasticities``,
    ``competitor_sensitivities``, ``intercepts``) must all have n_groups entries.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: Literal["pricing"] = "pricing"
    group_names: list[str] = Field(default_factory=lambda: ["students", "regulars", "business"])
    shares: list[float] = Field(default_factory=lambda: [0.35, 0.45, 0.20])
    reference_prices: list[float] = Field(default_factory=lambda: [8.0, 11.0, 18.0])
    elasticities: list[float] = Field(default_factory=lambda: [3.0, 2.0, 2.0])
    competitor_sensitivities: list[float] = Field(default_factory=lambda: [3.0, 1.5, 0.5])
    intercepts: list[float] = Field(default_factory=lambda: [0.5, 0.5, 0.0])
    base_price: float = Field(10.0, gt=0)  #: list price; the offered price is multiplier · base_price
    unit_cost: float = Field(6.0, ge=0)
    low: float = Field(0.6, gt=0)  #: smallest multiplier
    high: float = Field(2.5, gt=0)  #: largest multiplier
    competitor_mean: float = Field(1.0, gt=0)  #: median competitor price / base_price
    competitor_spread: float = Field(0.2, ge=0)  #: log-sd of the competitor price across contexts
    seasonality: float = Field(0.5, ge=0)  #: amplitude of the seasonal purchase-logit shift
    feature_noise: float = Field(0.3, ge=0)  #: sd of the noise on the group indicators
    seed: int = 0  #: seeds the context sample of the fixed-price baseline
    #: named components reward() returns (profit = the margin, improvement, relative_to_cohort_median,
    #: cohort_percentile_rank); empty: the margin as one number
    reward_components: list[str] = Field(default_factory=list)
    #: what "improvement" is measured against: "list_price" (m = 1.0), one multiplier (the current
    #: price rule) or one multiplier per group (the current segment prices)
    improvement_reference: str | float | list[float] = "list_price"

    def component_names(self) -> list[str]:
        """The names reward() returns ([]: a single number)."""
        return list(self.reward_components)

    def reference_multipliers(self) -> list[float]:
        """m_ref per group (the improvement reference as one multiplier per group)."""
        ref, p = self.improvement_reference, len(self.shares)
        if ref == "list_price":
            return [1.0] * p
        return [float(ref)] * p if isinstance(ref, (int, float)) else [float(v) for v in ref]

    @field_validator("improvement_reference", mode="before")
    @classmethod
    def _no_bool(cls, v):
        if isinstance(v, bool) or (isinstance(v, list) and any(isinstance(x, bool) for x in v)):
            raise ValueError(f"scenario.improvement_reference must be \"list_price\" or multipliers, got {v!r}")
        return v

    @model_validator(mode="after")
    def _check(self) -> "PricingConfig":
        check_component_names(self.reward_components, PRICING_COMPONENTS, "scenario.reward_components")
        if self.reward_components and "profit" not in self.reward_components:
            raise ValueError(f"scenario.reward_components {self.reward_components} must include 'profit', the outcome "
                             "pilots and the gym environment observe (weight it 0 in grpo.reward_weights to train on "
                             "the other parts alone)")
        ref = self.improvement_reference
        if isinstance(ref, str) and ref != "list_price":
            raise ValueError(f"scenario.improvement_reference {ref!r} is not \"list_price\", a multiplier in "
                             f"[low, high] = [{self.low}, {self.high}] or a list of one multiplier per group")
        if isinstance(ref, list) and len(ref) != len(self.shares):
            raise ValueError(f"scenario.improvement_reference has {len(ref)} multipliers, expected one per group "
                             f"({len(self.shares)}, as in shares)")
        if not isinstance(ref, str) or any(n in GROUP_RELATIVE for n in self.reward_components):
            out = [m for m in self.reference_multipliers() if not self.low <= m <= self.high]
            if out:
                what = "the list price multiplier 1.0" if isinstance(ref, str) else f"{out}"
                raise ValueError(f"scenario.improvement_reference = {ref!r}: {what} is outside [low, high] = "
                                 f"[{self.low}, {self.high}]; quote a reference the scenario can price")
        p = len(self.shares)
        if p < 1:
            raise ValueError("scenario.shares needs at least one group")
        for key in ("group_names", "reference_prices", "elasticities", "competitor_sensitivities", "intercepts"):
            n = len(getattr(self, key))
            if n != p:
                raise ValueError(f"scenario.{key} has {n} entries, expected one per group ({p}, as in shares)")
        if len(set(self.group_names)) != p:
            raise ValueError(f"scenario.group_names must be distinct, got {self.group_names}")
        if any(s <= 0 for s in self.shares) or abs(sum(self.shares) - 1.0) > 1e-6:
            raise ValueError(f"scenario.shares must be positive and sum to 1, got {self.shares}")
        if any(r <= 0 for r in self.reference_prices):
            raise ValueError(f"scenario.reference_prices must be > 0, got {self.reference_prices}")
        if any(e < 0 for e in self.elasticities):
            raise ValueError(f"scenario.elasticities must be >= 0, got {self.elasticities}")
        if any(c < 0 for c in self.competitor_sensitivities):
            raise ValueError(f"scenario.competitor_sensitivities must be >= 0, got {self.competitor_sensitivities}")
        if not self.low < self.high:
            raise ValueError(f"scenario.low must be < scenario.high, got low={self.low}, high={self.high}")
        if self.unit_cost >= self.high * self.base_price:
            raise ValueError(
                f"scenario.unit_cost = {self.unit_cost} is not below the highest price high · base_price = "
                f"{self.high * self.base_price}: no price in [low, high] makes a margin"
            )
        return self


class PricingScenario(Scenario):
    """Segment- and competitor-dependent demand; the reward is the margin of one offer; knows its oracle."""

    name = "pricing"
    config_class = PricingConfig

    def __init__(self, config: PricingConfig | None = None, **params):
        config = self._config_from(config, params)
        self.config = c = config
        self.n_groups = len(c.shares)
        self.group_names = list(c.group_names)
        self.obs_dim = self.n_groups + 3
        self.low, self.high = float(c.low), float(c.high)
        self.action_spec = {"kind": "beta", "low": self.low, "high": self.high}
        self.shares = torch.tensor(c.shares, dtype=torch.float64)
        self.log_ref = torch.tensor(c.reference_prices, dtype=torch.float64).log()
        self.elasticities = torch.tensor(c.elasticities, dtype=torch.float64)
        self.competitor_sensitivities = torch.tensor(c.competitor_sensitivities, dtype=torch.float64)
        self.intercepts = torch.tensor(c.intercepts, dtype=torch.float64)

    # -- tables -------------------------------------------------------------------------------

    def _tables(self, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, ...]:
        return self._on_device(("shares", "log_ref", "elasticities", "competitor_sensitivities", "intercepts"), device, dtype)

    # -- contexts -----------------------------------------------------------------------------

    def sample_contexts(self, n: int, generator: torch.Generator) -> Contexts:
        c = self.config
        device = generator.device
        shares = self._tables(device, torch.float32)[0]
        group = torch.multinomial(shares, n, replacement=True, generator=generator)
        indicators = torch.nn.functional.one_hot(group, self.n_groups).float()
        indicators = indicators + c.feature_noise * torch.randn(n, self.n_groups, generator=generator, device=device)
        z = torch.randn(n, generator=generator, device=device)
        theta = 2 * math.pi * torch.rand(n, generator=generator, device=device)
        competitor = c.base_price * c.competitor_mean * torch.exp(c.competitor_spread * z)
        obs = torch.cat([indicators, z[:, None], theta.sin()[:, None], theta.cos()[:, None]], dim=1)
        extra = {"competitor_price": competitor, "demand_shift": c.seasonality * theta.sin()}
        return Contexts(obs=obs, group=group, extra=extra)

    # -- demand and margins -------------------------------------------------------------------

    def _logit_parts(self, contexts: Contexts, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """``(offset [B, 1], slope [B, 1])`` with logit q = offset − slope · log p."""
        device = contexts.group.device
        _, log_ref, elast, comp_sens, intercept = self._tables(device, dtype)
        g = market(contexts)  # the customer's own segment, also under discovered cohorts
        log_comp = contexts.extra["competitor_price"].to(dtype).log()
        shift = contexts.extra["demand_shift"].to(dtype)
        offset = intercept[g] + shift + elast[g] * log_ref[g] + comp_sens[g] * log_comp
        slope = elast[g] + comp_sens[g]
        return offset[:, None], slope[:, None]

    def purchase_probability(self, contexts: Contexts, actions: Tensor) -> Tensor:
        """q(m): the purchase probability of each multiplier ``actions: [B, G]`` (clamped to [low, high])."""
        m = actions.clamp(self.low, self.high)
        offset, slope = self._logit_parts(contexts, m.dtype)
        return torch.sigmoid(offset - slope * torch.log(m * self.config.base_price))

    def expected_reward(self, contexts: Contexts, actions: Tensor) -> Tensor:
        m = actions.clamp(self.low, self.high)
        margin = m * self.config.base_price - self.config.unit_cost
        return self.purchase_probability(contexts, m) * margin

    def reward(self, contexts: Contexts, actions: Tensor, generator: torch.Generator, step: int = 0):
        """Sampled margin ``[B, G]``, or ``{name: [B, G]}`` for the named ``reward_components`` (module doc)."""
        c = self.config
        m = actions.clamp(self.low, self.high)
        q = self.purchase_probability(contexts, m)
        u = torch.rand(q.shape, generator=generator, device=q.device, dtype=q.dtype)
        margin = (u < q).to(q.dtype) * (m * c.base_price - c.unit_cost)
        if not c.reward_components:
            return margin
        out = {"profit": margin}
        if any(n in GROUP_RELATIVE for n in c.reward_components):
            ref = torch.tensor(c.reference_multipliers(), dtype=q.dtype, device=q.device)
            segment = market(contexts)  # the scenario's own groups
            m_ref = ref[segment][:, None].expand_as(m)
            q_ref = self.purchase_probability(contexts, m_ref)
            margin_ref = (u < q_ref).to(q.dtype) * (m_ref * c.base_price - c.unit_cost)
            out.update(group_relative_components(margin - margin_ref, contexts.group, self.n_groups,
                                                 c.reward_components))
        return {k: out[k] for k in c.reward_components}

    # -- ground truth -------------------------------------------------------------------------

    def true_value(self, contexts: Contexts, assignment: Tensor) -> dict:
        """Mean expected margin of one multiplier per context, and per segment (:func:`market_values`)."""
        return market_values(self, contexts, assignment)

    def oracle_actions(self, contexts: Contexts, iterations: int = 100) -> Tensor:
        """The margin-maximizing multiplier per context ``[B]`` (bisection on the concave log-margin)."""
        c = self.config
        offset, slope = self._logit_parts(contexts, torch.float64)
        offset, slope = offset[:, 0], slope[:, 0]
        log_b = math.log(c.base_price)
        u_lo = max(math.log(c.low), math.log(c.unit_cost / c.base_price) if c.unit_cost > 0 else -math.inf)
        lo = torch.full_like(offset, u_lo)
        hi = torch.full_like(offset, math.log(c.high))
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            log_p = mid + log_b
            q = torch.sigmoid(offset - slope * log_p)
            p = log_p.exp()
            # d/du log(q (p − c)) = −slope (1 − q) + p / (p − c)  (decreasing in u)
            up = -slope * (1 - q) * (p - c.unit_cost) + p > 0
            lo = torch.where(up, mid, lo)
            hi = torch.where(up, hi, mid)
        m = (0.5 * (lo + hi)).exp().clamp(c.low, c.high)
        return m.to(contexts.obs.dtype)

    # -- baselines ----------------------------------------------------------------------------

    def baseline_contexts(self, n_contexts: int = 20_000, seed: int | None = None) -> Contexts:
        """A seeded CPU sample of contexts for baselines (``seed`` defaults to ``config.seed``)."""
        seed = self.config.seed if seed is None else seed
        return self.sample_contexts(n_contexts, torch.Generator().manual_seed(seed + 7_919))

    def fixed_price_value(self, multiplier: float, contexts: Contexts | None = None) -> float:
        """Mean expected margin of quoting ``multiplier`` in every context (default: the baseline sample)."""
        contexts = self.baseline_contexts() if contexts is None else contexts
        m = torch.full((len(contexts), 1), float(multiplier), dtype=torch.float64, device=contexts.group.device)
        return float(self.expected_reward(contexts, m).mean())

    def best_fixed_price(
        self, n_contexts: int = 20_000, grid_size: int = 2001, seed: int | None = None, contexts: Contexts | None = None
    ) -> float:
        """The single multiplier maximizing the mean expected margin over a seeded context sample.

        Grid search over ``grid_size`` points of [low, high], then a second 201-point grid over the
        two cells around the best point (resolution (high − low) / (grid_size − 1) / 100).
        """
        contexts = self.baseline_contexts(n_contexts, seed) if contexts is None else contexts
        device = contexts.group.device

        def mean_margin(grid: Tensor) -> Tensor:
            out = []
            for chunk in grid.split(128):
                m = chunk.expand(len(contexts), -1)
                out.append(self.expected_reward(contexts, m).mean(0))
            return torch.cat(out)

        grid = torch.linspace(self.low, self.high, grid_size, dtype=torch.float64, device=device)
        best = int(mean_margin(grid).argmax())
        step = (self.high - self.low) / (grid_size - 1)
        m0 = float(grid[best])
        lo, hi = max(self.low, m0 - step), min(self.high, m0 + step)
        fine = torch.linspace(lo, hi, 201, dtype=torch.float64, device=device)
        return float(fine[int(mean_margin(fine).argmax())])
