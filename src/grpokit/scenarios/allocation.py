"""Budget allocation across K channels (or teams) with diminishing returns and per-group targets.

The decision is a split w on the simplex (action_spec ``{"kind": "dirichlet", "n_components": K}``):
channel k gets x_k = w_k · budget. Contexts belong to groups g (markets/regions, shares s_g) and
carry a budget ~ U[budget_min, budget_max] and market conditions z ~ N(0, I_d) (d =
``n_conditions``) that change which channel is most productive::

    a_k(context) = a_{g,k} · exp(condition_strength · (W z)_k)

with a_{g,k} the group's channel productivity and W a fixed [K, d] loading matrix (entries
N(0, 1/d), drawn from ``seed``). Channel returns have diminishing returns in spend, with
saturation scales s_k:

* ``response = "exp"``: R_k = a_k · (1 − exp(−x_k / s_k)) (saturates at a_k; first-unit return a_k/s_k);
* ``response = "log"``: R_k = a_k · log(1 + x_k / s_k) (unbounded, first-unit return a_k/s_k).

Group-relative targets: group g expects at least T_{g,k} from channel k (default
T_{g,k} = target_fraction · a_{g,k}, a share of the group's own channel potential; or the matrix
``targets``). Every unit of shortfall costs ``penalty`` (λ)::

    expected reward = Σ_k R_k − λ · Σ_k max(0, T_{g,k} − R_k)

``reward`` adds N(0, noise_std²) noise to that total (or, with ``reward_components = True``,
returns ``{"revenue": Σ_k R_k + noise, "target_penalty": −λ Σ_k max(0, T − R_k)}``, whose sum is
the total). Actions are clipped at 0 and renormalized to sum to 1 before scoring.

Named components (``reward_components`` a list instead of true/false): any of ``reward`` (the total
above, with noise), ``revenue``, ``target_penalty`` and the group-relative components. With w_ref the
split named by ``improvement_reference`` (``"equal_split"``: w = 1/K, the "no decision" split and
the default; ``"none"``: spend nothing; or a list: the current split, K shares, or K+1 with the
reserve) and the same noise draw on both (a paired draw, so the noise cancels)::

    improvement_bi            = reward_bi − reward_b(w_ref) = E[reward | w_bi] − E[reward | w_ref]
    relative_to_cohort_median = improvement_bi − median{improvement_jk : group_j = group_b}
    cohort_percentile_rank    = (#{improvement_jk < improvement_bi} + #{... = improvement_bi} / 2) / n_c

pooled over the B_c·G sampled decisions of cohort c (``Contexts.group``) in the batch
(:func:`grpokit.rewards.components.group_relative_components`). Weigh them with
``grpo.reward_weights`` (a missing weight is 1, so ``reward`` next to ``revenue`` and
``target_penalty`` counts the total twice unless one side gets weight 0). A list must keep
``reward`` (the outcome pilots observe; weight it 0 to train on the rest alone), unless it is
revenue and target_penalty alone.

Features the policy sees (``obs_dim = n_groups + n_conditions + 1``): the group one-hot plus
N(0, feature_noise²) noise, z, and the budget scaled to [−1, 1].

Oracle (exact water-filling): each channel's objective h_k(x) = R_k(x) − λ max(0, T_k − R_k(x)) is
concave and increasing with slope (1 + λ) R_k'(x) below the target and R_k'(x) above it. By the KKT
conditions the optimum spends x_k(ν) = max(0, min(R'⁻¹(ν / (1 + λ)), max(x_T, R'⁻¹(ν)))) for a
multiplier ν (x_T: the spend reaching the target), which is continuous and nonincreasing in ν;
:meth:`AllocationScenario.oracle_actions` bisects log ν (float64, 100 iterations) until
Σ_k x_k(ν) = budget. The tests check it against a brute-force simplex grid for K = 3.

Spend and a budget that binds (``reserve = True``): the split gets a K+1-th share w_res that is
kept (spends and returns nothing), so the spend of a decision is ``budget · (1 − w_res)``
(:meth:`AllocationScenario.spend`) and a Lagrange-constrained trainer (``grpo.budget``) can spend
less than the whole budget. With ``mean_spend_cap = S`` the oracle maximizes the mean reward
subject to mean spend <= S: the KKT conditions give every context the water-filling spends
x_k(max(μ, ν_i)), where ν_i exhausts context i's own budget and μ >= 0 is one price of money
common to all contexts, found by bisection until the mean spend equals S (or μ = 0 when the
cap does not bind). Without ``reserve`` the spend is always the whole budget.

Baselines: :meth:`AllocationScenario.equal_split` (the value of w = 1/K everywhere) and
:meth:`AllocationScenario.best_fixed_split` (the single split maximizing the mean expected reward
over a seeded context sample, by exponentiated-gradient ascent on that concave mean).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

from grpokit.rewards.components import GROUP_RELATIVE, check_component_names, group_relative_components
from grpokit.scenarios.base import Contexts, Scenario, market, market_values

__all__ = ["AllocationConfig", "AllocationScenario", "ALLOCATION_COMPONENTS"]

#: the reward components the allocation scenario can return (``reward_components`` as a list)
ALLOCATION_COMPONENTS = ("reward", "revenue", "target_penalty", *GROUP_RELATIVE)


class AllocationConfig(BaseModel):
    """Every parameter of the allocation scenario (validated; unknown keys are errors).

    ``channel_names`` sets K; ``group_names`` and ``shares`` set the groups. ``productivity``
    ([n_groups][K], a_{g,k}), ``saturation`` ([K], s_k) and ``targets`` ([n_groups][K]) are drawn
    or derived when left out: a_{g,k} = productivity_scale · exp(productivity_spread · N(0, 1)),
    s_k = saturation_scale · exp(saturation_spread · N(0, 1)) (both from ``seed``),
    T_{g,k} = target_fraction · a_{g,k}.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: Literal["allocation"] = "allocation"
    channel_names: list[str] = Field(default_factory=lambda: ["search", "social", "display", "email"])
    group_names: list[str] = Field(default_factory=lambda: ["north", "south", "west"])
    shares: list[float] = Field(default_factory=lambda: [0.5, 0.3, 0.2])
    response: Literal["exp", "log"] = "exp"
    productivity: list[list[float]] | None = None
    productivity_scale: float = Field(50.0, gt=0)
    productivity_spread: float = Field(0.5, ge=0)
    saturation: list[float] | None = None
    saturation_scale: float = Field(30.0, gt=0)
    saturation_spread: float = Field(0.5, ge=0)
    budget_min: float = Field(50.0, gt=0)
    budget_max: float = Field(150.0, gt=0)
    n_conditions: int = Field(3, ge=0)  #: market-condition features z
    condition_strength: float = Field(0.5, ge=0)  #: how strongly z moves channel productivity
    targets: list[list[float]] | None = None
    target_fraction: float = Field(0.3, ge=0)
    penalty: float = Field(1.0, ge=0)  #: λ: cost per unit of target shortfall
    noise_std: float = Field(2.0, ge=0)  #: sd of the Gaussian noise on the sampled reward
    feature_noise: float = Field(0.3, ge=0)  #: sd of the noise on the group indicators
    #: true: reward() returns {"revenue", "target_penalty"} instead of the total; or a list of component
    #: names (reward, revenue, target_penalty, improvement, relative_to_cohort_median, cohort_percentile_rank)
    reward_components: bool | list[str] = False
    #: what "improvement" is measured against: "equal_split", "none" (no spend) or a split (the current one)
    improvement_reference: str | list[float] = "equal_split"
    reserve: bool = False  #: add a K+1-th share kept unspent, so spend = budget · (1 − w_reserve) can bind
    mean_spend_cap: float | None = Field(None, gt=0)  #: the oracle's cap on the mean spend per context (needs reserve)
    seed: int = 0

    def component_names(self) -> list[str]:
        """The names reward() returns ([]: a single number)."""
        if isinstance(self.reward_components, bool):
            return ["revenue", "target_penalty"] if self.reward_components else []
        return list(self.reward_components)

    def reference_split(self) -> list[float]:
        """w_ref over the K channels (+ the reserve share when ``reserve``)."""
        k, ref = len(self.channel_names), self.improvement_reference
        if ref == "equal_split":
            w = [1.0 / k] * k
        elif ref == "none":
            w = [0.0] * k
        else:
            w = [float(v) for v in ref][:k]
        if self.reserve:
            w = w + [max(0.0, 1.0 - sum(w))]
        return w

    @model_validator(mode="after")
    def _check(self) -> "AllocationConfig":
        if not isinstance(self.reward_components, bool):
            check_component_names(self.reward_components, ALLOCATION_COMPONENTS, "scenario.reward_components")
            if not self.reward_components:
                raise ValueError("scenario.reward_components is an empty list; use false for the total as one number")
            if "reward" not in self.reward_components and not (
                    set(self.reward_components) == {"revenue", "target_penalty"}):
                raise ValueError(f"scenario.reward_components {self.reward_components} must include 'reward', the total "
                                 "that pilots and the gym environment observe (weight it 0 in grpo.reward_weights to "
                                 "train on the other parts alone), or be revenue and target_penalty alone")
        ref, k = self.improvement_reference, len(self.channel_names)
        if isinstance(ref, str) and ref not in ("equal_split", "none"):
            raise ValueError(f"scenario.improvement_reference {ref!r} is not \"equal_split\", \"none\" or a split "
                             f"(a list of {k} shares, or {k + 1} with the reserve)")
        if isinstance(ref, list):
            sizes = (k, k + 1) if self.reserve else (k,)
            if len(ref) not in sizes:
                raise ValueError(f"scenario.improvement_reference has {len(ref)} shares, expected "
                                 f"{' or '.join(map(str, sizes))} (one per channel{', plus the reserve' if self.reserve else ''})")
            if any(v < 0 for v in ref) or abs(sum(ref) - 1.0) > 1e-6:
                raise ValueError(f"scenario.improvement_reference shares must be >= 0 and sum to 1, got {ref}")
        k, p = len(self.channel_names), len(self.shares)
        if k < 2:
            raise ValueError(f"scenario.channel_names needs at least 2 channels, got {self.channel_names}")
        if len(set(self.channel_names)) != k:
            raise ValueError(f"scenario.channel_names must be distinct, got {self.channel_names}")
        if p < 1:
            raise ValueError("scenario.shares needs at least one group")
        if len(self.group_names) != p:
            raise ValueError(
                f"scenario.group_names has {len(self.group_names)} entries, expected one per group ({p}, as in shares)"
            )
        if len(set(self.group_names)) != p:
            raise ValueError(f"scenario.group_names must be distinct, got {self.group_names}")
        if any(s <= 0 for s in self.shares) or abs(sum(self.shares) - 1.0) > 1e-6:
            raise ValueError(f"scenario.shares must be positive and sum to 1, got {self.shares}")
        for key, positive in (("productivity", True), ("targets", False)):
            table = getattr(self, key)
            if table is None:
                continue
            if len(table) != p or any(len(row) != k for row in table):
                raise ValueError(f"scenario.{key} must be a [n_groups = {p}][n_channels = {k}] table")
            if any((v <= 0) if positive else (v < 0) for row in table for v in row):
                raise ValueError(f"scenario.{key} must be {'> 0' if positive else '>= 0'}, got {table}")
        if self.saturation is not None:
            if len(self.saturation) != k:
                raise ValueError(f"scenario.saturation has {len(self.saturation)} entries, expected n_channels = {k}")
            if any(s <= 0 for s in self.saturation):
                raise ValueError(f"scenario.saturation must be > 0, got {self.saturation}")
        if self.mean_spend_cap is not None and not self.reserve:
            raise ValueError("scenario.mean_spend_cap needs scenario.reserve = true (without a reserve share every "
                             "decision spends its whole budget)")
        if self.budget_max < self.budget_min:
            raise ValueError(
                f"scenario.budget_max must be >= scenario.budget_min, got {self.budget_min} > {self.budget_max}"
            )
        return self


class AllocationScenario(Scenario):
    """Split a budget across channels with diminishing returns and target penalties; knows its oracle."""

    name = "allocation"
    config_class = AllocationConfig

    def __init__(self, config: AllocationConfig | None = None, **params):
        config = self._config_from(config, params)
        self.config = c = config
        self.n_channels = k = len(c.channel_names)
        self.channel_names = list(c.channel_names)
        self.n_groups = p = len(c.shares)
        self.group_names = list(c.group_names)
        self.obs_dim = p + c.n_conditions + 1
        self.action_spec = {"kind": "dirichlet", "n_components": k + int(c.reserve)}
        if c.reserve:
            self.channel_names = self.channel_names + ["reserve"]
        gen = torch.Generator().manual_seed(c.seed)
        f64 = torch.float64
        draw_a = torch.randn(p, k, generator=gen, dtype=f64)
        draw_s = torch.randn(k, generator=gen, dtype=f64)
        loadings = torch.randn(k, c.n_conditions, generator=gen, dtype=f64) / math.sqrt(max(1, c.n_conditions))
        if c.productivity is None:
            self.productivity = c.productivity_scale * torch.exp(c.productivity_spread * draw_a)
        else:
            self.productivity = torch.tensor(c.productivity, dtype=f64)
        if c.saturation is None:
            self.saturation = c.saturation_scale * torch.exp(c.saturation_spread * draw_s)
        else:
            self.saturation = torch.tensor(c.saturation, dtype=f64)
        if c.targets is None:
            self.targets = c.target_fraction * self.productivity
        else:
            self.targets = torch.tensor(c.targets, dtype=f64)
        self.loadings = loadings  # W: [K, d]
        self.shares = torch.tensor(c.shares, dtype=f64)

    def _tables(self, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, ...]:
        return self._on_device(("shares", "productivity", "saturation", "targets", "loadings"), device, dtype)

    # -- contexts -----------------------------------------------------------------------------

    def sample_contexts(self, n: int, generator: torch.Generator) -> Contexts:
        c = self.config
        device = generator.device
        shares, productivity, _, _, loadings = self._tables(device, torch.float32)
        group = torch.multinomial(shares, n, replacement=True, generator=generator)
        indicators = torch.nn.functional.one_hot(group, self.n_groups).float()
        indicators = indicators + c.feature_noise * torch.randn(n, self.n_groups, generator=generator, device=device)
        z = torch.randn(n, c.n_conditions, generator=generator, device=device)
        u = torch.rand(n, generator=generator, device=device)
        budget = c.budget_min + (c.budget_max - c.budget_min) * u
        a = productivity[group] * torch.exp(c.condition_strength * (z @ loadings.T))
        budget_feature = 2 * u - 1 if c.budget_max > c.budget_min else torch.zeros_like(u)
        obs = torch.cat([indicators, z, budget_feature[:, None]], dim=1)
        return Contexts(obs=obs, group=group, extra={"productivity": a, "budget": budget})

    # -- returns ------------------------------------------------------------------------------

    def _shares(self, actions: Tensor) -> Tensor:
        """Channel shares ``[..., K]`` of splits ``[..., K (+1 reserve)]`` (clipped at 0, renormalized)."""
        w = actions.clamp_min(0)
        w = w / w.sum(-1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
        return w[..., : self.n_channels]

    def spend(self, contexts: Contexts, actions: Tensor) -> Tensor:
        """Money spent by splits ``actions: [B, G, K(+1)]``: budget · Σ_k w_k, ``[B, G]`` (the reserve is kept)."""
        return self._shares(actions).sum(-1) * contexts.extra["budget"].to(actions.dtype)[:, None]

    def channel_returns(self, contexts: Contexts, actions: Tensor) -> Tensor:
        """R_k of splits ``actions: [B, G, K(+1)]``: ``[B, G, K]`` (splits clipped at 0, renormalized)."""
        w = self._shares(actions)
        _, _, sat, _, _ = self._tables(w.device, w.dtype)
        a = contexts.extra["productivity"].to(w.dtype)[:, None, :]
        x = w * contexts.extra["budget"].to(w.dtype)[:, None, None]
        if self.config.response == "exp":
            return a * -torch.expm1(-x / sat)
        return a * torch.log1p(x / sat)

    def _parts(self, contexts: Contexts, actions: Tensor) -> tuple[Tensor, Tensor]:
        """``(revenue [B, G], shortfall penalty λ Σ max(0, T − R) [B, G])``."""
        r = self.channel_returns(contexts, actions)
        targets = self._tables(r.device, r.dtype)[3][market(contexts)][:, None, :]  # the own group's targets
        return r.sum(-1), self.config.penalty * (targets - r).clamp_min(0).sum(-1)

    def expected_reward(self, contexts: Contexts, actions: Tensor) -> Tensor:
        revenue, penalty = self._parts(contexts, actions)
        return revenue - penalty

    def reward(self, contexts: Contexts, actions: Tensor, generator: torch.Generator, step: int = 0):
        revenue, penalty = self._parts(contexts, actions)
        expected = revenue - penalty
        if self.config.noise_std > 0:
            noise = torch.randn(revenue.shape, generator=generator, device=revenue.device, dtype=revenue.dtype)
            revenue = revenue + self.config.noise_std * noise
        names = self.config.component_names()
        if not names:
            return revenue - penalty
        out = {"reward": revenue - penalty, "revenue": revenue, "target_penalty": -penalty}
        if any(n in GROUP_RELATIVE for n in names):
            w_ref = torch.tensor(self.config.reference_split(), dtype=revenue.dtype, device=revenue.device)
            ref_rev, ref_pen = self._parts(contexts, w_ref.expand(len(contexts), 1, -1))  # [B, 1]
            # paired draw: the reference gets the same noise, so the difference is the expected one
            out.update(group_relative_components(expected - (ref_rev - ref_pen), contexts.group,
                                                 self.n_groups, names))
        return {k: out[k] for k in names}

    # -- ground truth -------------------------------------------------------------------------

    def true_value(self, contexts: Contexts, assignment: Tensor) -> dict:
        """Mean expected reward of one split per context, and per group (:func:`market_values`)."""
        return market_values(self, contexts, assignment)

    def _spend(self, log_nu: Tensor, a: Tensor, sat: Tensor, x_target: Tensor) -> Tensor:
        """x_k(ν) = max(0, min(R'⁻¹(ν / (1 + λ)), max(x_T, R'⁻¹(ν)))) for ``log_nu: [N, 1]``: ``[N, K]``."""
        lam = self.config.penalty
        if self.config.response == "exp":  # R' = (a/s) e^{−x/s}:  R'⁻¹(ν) = s · log(a / (s ν))
            base = sat * (a.log() - sat.log() - log_nu)
            below, above = base + sat * math.log1p(lam), base
        else:  # R' = a / (s + x):  R'⁻¹(ν) = a / ν − s
            inv = a * torch.exp(-log_nu)
            below, above = (1 + lam) * inv - sat, inv - sat
        return torch.minimum(below, torch.maximum(x_target, above)).clamp_min(0)

    def oracle_actions(self, contexts: Contexts, iterations: int = 100) -> Tensor:
        """The reward-maximizing split per context ``[B, K]`` (exact water-filling, see the module doc)."""
        f64 = torch.float64
        _, _, sat, targets, _ = self._tables(contexts.group.device, f64)
        a = contexts.extra["productivity"].to(f64)
        budget = contexts.extra["budget"].to(f64)[:, None]
        t = targets[market(contexts)]
        # spend reaching the target (inf when the target is out of reach)
        if self.config.response == "exp":
            ratio = t / a
            x_target = torch.where(ratio < 1, -sat * torch.log1p(-ratio.clamp(max=1 - 1e-16)), torch.inf)
        else:
            x_target = sat * torch.expm1(t / a)
        lam = self.config.penalty
        # bracket: no spend at ν = max_k (1+λ) a_k/s_k; one channel alone spends the budget at ν_lo
        hi = (math.log1p(lam) + a.log() - sat.log()).amax(-1, keepdim=True)
        if self.config.response == "exp":
            lo = (a.log() - sat.log() - budget / sat).amax(-1, keepdim=True)
        else:
            lo = (a.log() - (sat + budget).log()).amax(-1, keepdim=True)
        hi0 = hi.clone()
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            over = self._spend(mid, a, sat, x_target).sum(-1, keepdim=True) > budget
            lo = torch.where(over, mid, lo)  # spending too much: raise ν
            hi = torch.where(over, hi, mid)
        log_nu = 0.5 * (lo + hi)  # [B, 1]: the price that exhausts each context's own budget
        cap = self.config.mean_spend_cap
        self.oracle_info = {"mu": 0.0}
        if cap is not None and float(budget.mean()) > cap:
            # one price of money μ for all contexts: x_i = x(max(μ, ν_i)), mean spend decreasing in μ
            m_lo, m_hi = float(log_nu.min()), float(hi0.max())
            for _ in range(iterations):
                m = 0.5 * (m_lo + m_hi)
                spent = self._spend(log_nu.clamp_min(m), a, sat, x_target).sum(-1).mean()
                m_lo, m_hi = (m, m_hi) if float(spent) > cap else (m_lo, m)
            log_nu = log_nu.clamp_min(m_hi)
            self.oracle_info = {"mu": math.exp(m_hi)}
        x = self._spend(log_nu, a, sat, x_target)
        if not self.config.reserve:
            return (x / x.sum(-1, keepdim=True)).to(contexts.obs.dtype)
        w = x / budget  # spends <= the budget, up to the bisection's float error
        w = w / w.sum(-1, keepdim=True).clamp_min(1.0)
        w = torch.cat([w, (1.0 - w.sum(-1, keepdim=True)).clamp_min(0.0)], -1)
        return w.to(contexts.obs.dtype)

    # -- baselines ----------------------------------------------------------------------------

    def baseline_contexts(self, n_contexts: int = 20_000, seed: int | None = None) -> Contexts:
        """A seeded CPU sample of contexts for baselines (``seed`` defaults to ``config.seed``)."""
        seed = self.config.seed if seed is None else seed
        return self.sample_contexts(n_contexts, torch.Generator().manual_seed(seed + 7_919))

    def fixed_split_value(self, split, contexts: Contexts | None = None) -> float:
        """Mean expected reward of using ``split`` ([K]) in every context (default: the baseline sample)."""
        contexts = self.baseline_contexts() if contexts is None else contexts
        w = torch.as_tensor(split, dtype=torch.float64, device=contexts.group.device)
        return float(self.expected_reward(contexts, w.expand(len(contexts), 1, -1)).mean())

    def equal_split(self, contexts: Contexts | None = None) -> float:
        """Mean expected reward of the equal split w = 1/K (default: the baseline sample)."""
        return self.fixed_split_value(torch.full((self.n_channels,), 1.0 / self.n_channels), contexts)

    def best_fixed_split(
        self, n_contexts: int = 20_000, iterations: int = 400, seed: int | None = None, contexts: Contexts | None = None
    ) -> Tensor:
        """The single split maximizing the mean expected reward over a seeded context sample ``[K]``.

        Exponentiated-gradient ascent on the (concave) mean, step 1/√(t+1) on the centred gradient
        scaled by its largest entry; the best iterate is returned.
        """
        contexts = self.baseline_contexts(n_contexts, seed) if contexts is None else contexts
        k = self.n_channels
        f64 = torch.float64
        _, _, sat, targets, _ = self._tables(contexts.group.device, f64)
        a = contexts.extra["productivity"].to(f64)
        budget = contexts.extra["budget"].to(f64)[:, None]
        t = targets[market(contexts)]
        w = torch.full((k,), 1.0 / k, dtype=f64, device=a.device)
        best_w, best_v = w.clone(), -math.inf
        for it in range(iterations):
            x = w * budget
            if self.config.response == "exp":
                r, slope = a * -torch.expm1(-x / sat), (a / sat) * torch.exp(-x / sat)
            else:
                r, slope = a * torch.log1p(x / sat), a / (sat + x)
            value = float((r.sum(-1) - self.config.penalty * (t - r).clamp_min(0).sum(-1)).mean())
            if value > best_v:
                best_v, best_w = value, w.clone()
            # d/dw_k of the mean reward: budget · R_k'(x_k) · (1 + λ [R_k < T_k])
            grad = (budget * slope * (1 + self.config.penalty * (r < t))).mean(0)
            grad = grad - (w * grad).sum()
            w = w * torch.exp(grad / grad.abs().max().clamp_min(1e-12) / math.sqrt(it + 1))
            w = w / w.sum()
        if self.config.reserve:  # the whole budget on the channels: the reserve returns nothing
            best_w = torch.cat([best_w, best_w.new_zeros(1)])
        return best_w.to(torch.float32)
