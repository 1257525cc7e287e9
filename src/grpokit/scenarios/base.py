"""The scenario interface: contexts with group ids, a reward for any batch of actions, ground truth."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["Contexts", "Scenario", "TensorContextSampler", "market", "market_values"]


@dataclass
class Contexts:
    """A batch of B decision contexts.

    ``obs: [B, obs_dim]`` features the policy sees; ``group: [B]`` integer group ids (cohort or
    preference group), used by group embeddings, P-GRPO and every per-group report;
    ``mask: [B, n_actions]`` optional eligibility of discrete actions; ``extra``: anything else a
    scenario needs to score actions (hidden ground truth, kept away from the policy).
    """

    obs: Tensor
    group: Tensor
    mask: Tensor | None = None
    extra: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.obs.shape[0]

    def index(self, idx: Tensor | slice) -> "Contexts":
        return Contexts(
            self.obs[idx],
            self.group[idx],
            None if self.mask is None else self.mask[idx],
            {k: v[idx] for k, v in self.extra.items()},
        )

    def to(self, device: torch.device | str) -> "Contexts":
        return Contexts(
            self.obs.to(device),
            self.group.to(device),
            None if self.mask is None else self.mask.to(device),
            {k: v.to(device) for k, v in self.extra.items()},
        )


def market(contexts: Contexts) -> Tensor:
    """The scenario's own group of each context ``[B]`` (long): the simulator's truth.

    ``extra["market"]`` when the run's cohorts were discovered
    (:class:`~grpokit.groups.scenario.CohortScenario` replaces ``group`` by the cohort of each
    customer and keeps the scenario's group there), else ``group``. A scenario looks up its
    per-group parameters (reference prices, elasticities, targets, spillover) by this, never by
    ``group``: clustering the customers does not move them to another market.
    """
    return contexts.extra.get("market", contexts.group).long()


def market_values(scenario: "Scenario", contexts: Contexts, actions: Tensor) -> dict:
    """``{"value", "per_group"}`` of one action per context, ``per_group`` over the scenario's own groups.

    value = mean_b E[r_b(a_b)]; per_group[g] = mean over {b : market_b = g} (None for an empty group).
    """
    expected = scenario.expected_reward(contexts, actions.unsqueeze(1))[:, 0].double()
    g = market(contexts).to(expected.device)
    n = torch.bincount(g, minlength=scenario.n_groups).double()
    s = torch.zeros_like(n).index_add_(0, g, expected)
    per = (s / n.clamp_min(1)).tolist()
    return {"value": float(expected.mean()),
            "per_group": {name: (per[i] if n[i] > 0 else None) for i, name in enumerate(scenario.group_names)}}


class Scenario(ABC):
    """A decision problem that produces contexts and scores any batch of actions.

    Subclasses set ``obs_dim``, ``n_groups``, ``group_names`` and ``action_spec`` (the head and
    its parameters, e.g. ``{"kind": "categorical", "n_actions": 8}``).
    """

    name: str
    obs_dim: int
    n_groups: int
    group_names: list[str]
    action_spec: dict
    #: the pydantic model of the scenario's parameters
    config_class: type

    def _on_device(self, names: tuple[str, ...], device, dtype: torch.dtype) -> tuple[Tensor, ...]:
        """The tensor attributes ``names`` converted to (device, dtype), cached per (names, device, dtype)."""
        cache = self.__dict__.setdefault("_tensor_cache", {})
        key = (names, torch.device(device), dtype)
        if key not in cache:
            cache[key] = tuple(getattr(self, n).to(device=device, dtype=dtype) for n in names)
        return cache[key]

    @classmethod
    def _config_from(cls, config, params: dict):
        """The scenario's config: the one given, or one built (and validated) from keyword parameters."""
        if config is None:
            return cls.config_class(**params)
        if params:
            raise ValueError(f"pass either a {cls.config_class.__name__} or keyword parameters, not both")
        return config

    @abstractmethod
    def sample_contexts(self, n: int, generator: torch.Generator) -> Contexts:
        """Draw n contexts (on the generator's device)."""

    @abstractmethod
    def reward(self, contexts: Contexts, actions: Tensor, generator: torch.Generator, step: int = 0) -> Tensor:
        """Sampled (noisy) rewards of ``actions: [B, G, *event]``: ``[B, G]``."""

    @abstractmethod
    def expected_reward(self, contexts: Contexts, actions: Tensor) -> Tensor:
        """Ground-truth expected reward of ``actions: [B, G, *event]``: ``[B, G]``."""

    def oracle_actions(self, contexts: Contexts) -> Tensor | None:
        """The best action per context ``[B, *event]``, when the scenario knows it (else None)."""
        return None


class TensorContextSampler:
    """Draws contexts uniformly with replacement from a fixed table (a dataset instead of a scenario).

    Each drawn context carries its table row in ``extra["row"]``, so a reward function can look up
    per-row quantities (e.g. an outcome model's predictions ``rhat[row, action]``).
    """

    def __init__(self, obs: Tensor, group: Tensor | None = None, mask: Tensor | None = None):
        if obs.ndim != 2 or obs.shape[0] == 0:
            raise ValueError(f"obs must be a non-empty [N, obs_dim] tensor, got shape {tuple(obs.shape)}")
        if not bool(torch.isfinite(obs).all()):
            row = int((~torch.isfinite(obs)).any(1).nonzero()[0])
            raise ValueError(f"obs row {row} contains NaN or inf")
        if group is not None and group.shape != (len(obs),):
            raise ValueError(f"group must have shape [{len(obs)}], got {tuple(group.shape)}")
        if mask is not None and (mask.ndim != 2 or mask.shape[0] != len(obs)):
            raise ValueError(f"mask must have shape [{len(obs)}, n_actions], got {tuple(mask.shape)}")
        self.contexts = Contexts(
            obs,
            torch.zeros(len(obs), dtype=torch.long, device=obs.device) if group is None else group.long(),
            mask,
            {"row": torch.arange(len(obs), device=obs.device)},
        )

    def sample_contexts(self, n: int, generator: torch.Generator) -> Contexts:
        idx = torch.randint(len(self.contexts), (n,), generator=generator, device=generator.device)
        return self.contexts.to(generator.device).index(idx)
