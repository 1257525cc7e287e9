"""Continuous-action policies from a log: their served densities, samples, and GRPO on an outcome model.

A continuous policy π (Beta head on [low, high], Dirichlet head on the K-simplex) is served as the
mixture q = (1 − ε) π + ε u with u uniform (:func:`grpokit.policy.deployed.served_log_density`).
:func:`served_log_density_of` gives log q_π(a_i | x_i) at given actions and :func:`sample_served`
draws S actions per context from q_π (seeded), the two things the continuous estimators
(:mod:`grpokit.offline.continuous`) need of a target. :func:`learn_continuous` trains a policy on
logged contexts with GRPO, the reward of a sampled action a_bg being the outcome model's
m(x_b, a_bg) (:class:`~grpokit.offline.continuous.ContinuousOutcomeModel`):
A_bg = (m(x_b, a_bg) − mean_g m(x_b, a_bg)) / std_g(...), the cohorts as (P-)GRPO groups.
"""

from __future__ import annotations

import numpy as np
import torch

from grpokit.config import GRPOConfig, PolicyConfig
from grpokit.policy.deployed import served_log_density
from grpokit.policy.heads import BetaHead, DirichletHead, PolicyHead
from grpokit.policy.network import MLPTorso, Policy

__all__ = ["served_log_density_of", "sample_served", "learn_continuous", "make_continuous_head"]


@torch.no_grad()
def _dist(policy: Policy, x: np.ndarray, group: np.ndarray | None = None):
    policy.eval()
    g = None if group is None else torch.as_tensor(np.asarray(group), dtype=torch.long)
    return policy(torch.as_tensor(np.asarray(x, dtype=np.float32)), g)


def served_log_density_of(policy: Policy, x: np.ndarray, actions: np.ndarray, epsilon: float,
                          group: np.ndarray | None = None) -> np.ndarray:
    """``[n]``: log q(a_i | x_i), q = (1 − ε) π + ε u, at ``actions [n]`` (Beta) or ``[n, K]`` (Dirichlet)."""
    return served_log_density(_dist(policy, x, group), policy.head, actions, epsilon)


@torch.no_grad()
def sample_served(policy: Policy, x: np.ndarray, n_samples: int, epsilon: float, seed: int,
                  group: np.ndarray | None = None) -> np.ndarray:
    """``[n, S]`` (Beta) or ``[n, S, K]`` (Dirichlet): S draws per context from q = (1 − ε) π + ε u."""
    dist = _dist(policy, x, group)
    head = policy.head
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        a, _ = dist.sample(n_samples)
        a = a.double().numpy()
        n = len(a)
        explore = torch.rand(n, n_samples).numpy() < epsilon
        if isinstance(head, BetaHead):
            u = torch.rand(n, n_samples, dtype=torch.float64).numpy()
            return np.where(explore, head.low + (head.high - head.low) * u, a)
        e = -np.log(1.0 - torch.rand(n, n_samples, a.shape[-1], dtype=torch.float64).numpy())
        flat = np.clip(e / e.sum(-1, keepdims=True), 1e-6, None)
        flat = flat / flat.sum(-1, keepdims=True)
        return np.where(explore[..., None], flat, a)


def make_continuous_head(action_spec: dict, head_params: dict | None = None) -> PolicyHead:
    """The head a scenario's ``action_spec`` needs (beta: [low, high]; dirichlet: K components)."""
    spec = dict(action_spec)
    kind = spec.pop("kind")
    params = {**spec, **{k: v for k, v in (head_params or {}).items() if v is not None}}
    if kind == "beta":
        return BetaHead(**params)
    if kind == "dirichlet":
        return DirichletHead(**params)
    raise ValueError(f"a continuous loop needs a beta or dirichlet action spec, got {kind!r}")


def learn_continuous(features: np.ndarray, model, head: PolicyHead, config: GRPOConfig,
                     policy_config: PolicyConfig | None = None, *, group: np.ndarray | None = None,
                     n_groups: int | None = None, progress: bool = False) -> tuple[Policy, dict]:
    """Train ``Policy(MLP, head)`` on logged contexts ``features [n, d]`` with reward m(x_b, a_bg) from ``model``
    (a fitted :class:`~grpokit.offline.continuous.ContinuousOutcomeModel`; its all-rows model scores the
    G sampled actions of each context). Returns the policy and the trainer's summary."""
    from grpokit.grpo.trainer import GRPOTrainer, resolve_device
    from grpokit.scenarios.base import TensorContextSampler

    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2:
        raise ValueError(f"features must be [n, d], got shape {features.shape}")
    policy_config = policy_config or PolicyConfig()
    torch.manual_seed(config.seed)
    g = None if group is None else torch.tensor(np.asarray(group), dtype=torch.long)
    n_groups = n_groups or (int(g.max()) + 1 if g is not None else 1)
    torso = MLPTorso(features.shape[1], policy_config.hidden, policy_config.activation, n_groups=n_groups,
                     group_embedding_dim=policy_config.group_embedding_dim)
    policy = Policy(torso, head)
    device = resolve_device(config.device)
    x64 = features.astype(np.float64)
    sampler = TensorContextSampler(torch.as_tensor(features, device=device), None if g is None else g.to(device))

    def reward(contexts, actions):
        rows = contexts.extra["row"].cpu().numpy()
        a = actions.detach().double().cpu().numpy()
        r = model.predict(x64[rows], a)  # [B, G]
        return torch.as_tensor(r, dtype=torch.float32, device=actions.device)

    trainer = GRPOTrainer(policy, reward, config, context_sampler=sampler, n_groups=n_groups, progress=progress)
    summary = trainer.train()
    return trainer.policy.cpu(), summary

