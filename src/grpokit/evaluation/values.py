"""True values of decisions in simulation: overall and per group.

value = mean_b E[r | x_b, a_b] over a fixed evaluation set of contexts;
per_group[p] = the same mean over the contexts of group p.
"""

from __future__ import annotations

import torch
from torch import Tensor

from grpokit.scenarios.base import Contexts, Scenario

__all__ = ["evaluate_actions", "evaluate_policy", "oracle_values", "steps_to_fraction"]


def evaluate_actions(scenario: Scenario, contexts: Contexts, actions: Tensor) -> dict:
    """``{"value": float, "per_group": {name: float}}`` of one action per context (``[B, *event]``)."""
    expected = scenario.expected_reward(contexts, actions.unsqueeze(1))[:, 0].double()
    group = contexts.group
    n = torch.zeros(scenario.n_groups, dtype=torch.float64, device=expected.device).index_add_(
        0, group, torch.ones_like(expected)
    )
    s = torch.zeros_like(n).index_add_(0, group, expected)
    per_group = (s / n.clamp_min(1)).tolist()
    counts = n.tolist()
    return {
        "value": float(expected.mean()),
        "per_group": {
            name: (per_group[p] if counts[p] > 0 else None) for p, name in enumerate(scenario.group_names)
        },
    }


@torch.no_grad()
def evaluate_policy(policy, scenario: Scenario, contexts: Contexts) -> dict:
    """True value of the policy's deterministic (production) decisions on ``contexts``."""
    was_training = policy.training
    policy.eval()
    actions = policy.act(contexts.obs, contexts.group, contexts.mask)
    policy.train(was_training)
    return evaluate_actions(scenario, contexts, actions)


def oracle_values(scenario: Scenario, contexts: Contexts) -> dict | None:
    """True value of the scenario's oracle decisions, or None if it has no oracle."""
    best = scenario.oracle_actions(contexts)
    return None if best is None else evaluate_actions(scenario, contexts, best)


def steps_to_fraction(history: list[tuple[int, float | None]], target: float | None, fraction: float = 0.9):
    """First step whose value reaches ``fraction · target`` (None if never, or no target)."""
    if target is None:
        return None
    for step, value in history:
        if value is not None and value >= fraction * target:
            return step
    return None
