"""The heterogeneous-preference scenario: preference groups of unequal size with different best
actions, reward scales and noise (the setting of P-GRPO, arXiv 2603.10009).

Structure (fixed by ``seed``): group p has a share s_p, a best action a*_p and a relative reward
table u_p[a] with u_p[a*_p] = 1 and u_p[a] ~ U[0, other_max] for the other actions. A context of
group p has features x = feature_signal · c_p + N(0, I), c_p a random unit prototype, so
``feature_signal`` sets how much the features reveal the group.

Rewards of action a for a context of group p:
* ``gaussian`` (dense): r = scale_p · u_p[a] + level_p(t) + noise_p · N(0, 1);
* ``bernoulli`` (binary, sparse when scale_p is small): r ~ Bernoulli(scale_p · u_p[a]), and
  level_p(t) is added to the 0/1 outcome.
level_p(t) = drift_p · t / 1000 moves a group's reward level during training (t = training step);
it shifts every action equally, so it changes what a reward normalizer sees but not the best
action, and values are reported at the drift-free level.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

from grpokit.scenarios.base import Contexts, Scenario

__all__ = ["PreferenceConfig", "PreferenceScenario"]


class PreferenceConfig(BaseModel):
    """Every parameter of the preference scenario (validated; unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["preferences"] = "preferences"
    n_groups: int = Field(3, ge=1)
    shares: list[float] = Field(default_factory=lambda: [0.8, 0.15, 0.05])
    group_names: list[str] | None = None
    n_actions: int = Field(8, ge=2)
    obs_dim: int = Field(8, ge=1)
    feature_signal: float = Field(6.0, ge=0.0)
    reward: Literal["gaussian", "bernoulli"] = "bernoulli"
    scales: list[float] = Field(default_factory=lambda: [0.5, 0.1, 0.03])
    noise: list[float] = Field(default_factory=lambda: [0.0, 0.0, 0.0])
    other_max: float = Field(0.5, ge=0.0, lt=1.0)
    drift: list[float] = Field(default_factory=lambda: [0.0, 0.0, 0.0])
    best_actions: list[int] | None = None
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> "PreferenceConfig":
        p = self.n_groups
        for key in ("shares", "scales", "noise", "drift"):
            value = getattr(self, key)
            if len(value) != p:
                raise ValueError(f"scenario.{key} has {len(value)} entries, expected n_groups = {p}")
        if self.group_names is not None and len(self.group_names) != p:
            raise ValueError(f"scenario.group_names has {len(self.group_names)} entries, expected n_groups = {p}")
        if any(s <= 0 for s in self.shares) or abs(sum(self.shares) - 1.0) > 1e-6:
            raise ValueError(f"scenario.shares must be positive and sum to 1, got {self.shares}")
        if any(s <= 0 for s in self.scales):
            raise ValueError(f"scenario.scales must be positive, got {self.scales}")
        if self.reward == "bernoulli" and any(s > 1 for s in self.scales):
            raise ValueError(f"bernoulli rewards need scales in (0, 1] (success probabilities), got {self.scales}")
        if any(s < 0 for s in self.noise):
            raise ValueError(f"scenario.noise must be >= 0, got {self.noise}")
        if self.best_actions is not None:
            if len(self.best_actions) != p:
                raise ValueError(f"scenario.best_actions has {len(self.best_actions)} entries, expected {p}")
            bad = [a for a in self.best_actions if not 0 <= a < self.n_actions]
            if bad:
                raise ValueError(f"scenario.best_actions {bad} outside 0..{self.n_actions - 1}")
        return self


class PreferenceScenario(Scenario):
    """Preference groups with different best actions, scales and noise; knows its oracle."""

    name = "preferences"
    config_class = PreferenceConfig

    def __init__(self, config: PreferenceConfig | None = None, **params):
        config = self._config_from(config, params)
        self.config = c = config
        self.obs_dim = c.obs_dim
        self.n_groups = c.n_groups
        self.n_actions = c.n_actions
        self.group_names = c.group_names or [f"g{p}" for p in range(c.n_groups)]
        self.action_spec = {"kind": "categorical", "n_actions": c.n_actions}
        gen = torch.Generator().manual_seed(c.seed)
        if c.best_actions is not None:
            best = torch.tensor(c.best_actions)
        elif c.n_actions >= c.n_groups:
            best = torch.randperm(c.n_actions, generator=gen)[: c.n_groups]
        else:
            best = torch.randint(c.n_actions, (c.n_groups,), generator=gen)
        rel = torch.rand(c.n_groups, c.n_actions, generator=gen) * c.other_max
        rel[torch.arange(c.n_groups), best] = 1.0
        proto = torch.randn(c.n_groups, c.obs_dim, generator=gen)
        proto = proto / proto.norm(dim=1, keepdim=True).clamp_min(1e-12)
        self.best_actions = best
        self.relative = rel  # u_p[a]
        self.prototypes = proto
        self.scales = torch.tensor(c.scales)
        self.mean_table = self.scales.unsqueeze(1) * rel  # E[r | p, a] (drift-free): [P, A]
        self.noise = torch.tensor(c.noise)
        self.drift = torch.tensor(c.drift)
        self.shares = torch.tensor(c.shares)
        self._device_cache: dict[torch.device, tuple[Tensor, ...]] = {}

    def _tables(self, device: torch.device) -> tuple[Tensor, ...]:
        if device not in self._device_cache:
            self._device_cache[device] = tuple(
                t.to(device) for t in (self.mean_table, self.noise, self.drift, self.shares, self.prototypes)
            )
        return self._device_cache[device]

    def sample_contexts(self, n: int, generator: torch.Generator) -> Contexts:
        device = generator.device
        _, _, _, shares, proto = self._tables(device)
        group = torch.multinomial(shares, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.obs_dim, generator=generator, device=device)
        obs = self.config.feature_signal * proto[group] + noise
        return Contexts(obs=obs, group=group)

    def expected_reward(self, contexts: Contexts, actions: Tensor) -> Tensor:
        table = self._tables(actions.device)[0]
        return table[contexts.group.unsqueeze(1), actions.long()]

    def reward(self, contexts: Contexts, actions: Tensor, generator: torch.Generator, step: int = 0) -> Tensor:
        table, noise, drift, _, _ = self._tables(actions.device)
        g = contexts.group.unsqueeze(1)
        mean = table[g, actions.long()]
        if self.config.reward == "bernoulli":
            u = torch.rand(mean.shape, generator=generator, device=mean.device)
            r = (u < mean).to(mean.dtype)
        else:
            r = mean + noise[g] * torch.randn(mean.shape, generator=generator, device=mean.device)
        if bool(self.drift.any()):
            r = r + drift[g] * (step / 1000.0)
        return r

    def oracle_actions(self, contexts: Contexts) -> Tensor:
        return self.best_actions.to(contexts.group.device)[contexts.group]
