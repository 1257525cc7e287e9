"""GRADE's composite reward on fixed requests, and choosing the prior's weight by held-out feedback.

The composite reward of a weight vector is ``R = a · posterior + λ · prior + c · rules`` (weights
``grpo.reward_weights``). The *posterior* (observed feedback on the re-ranked list) is unbiased for
the business outcome but sparse; the *prior* (the multi-task model's predicted utility of the list)
is dense but biased wherever that model is miscalibrated, and a policy that trusts it learns to
exploit the bias (reward hacking). λ trades variance for bias, and the right λ depends on how
miscalibrated the model is, which nobody knows beforehand.

:func:`select_prior_weight` measures it: for each λ of a grid it tunes one static weight vector on
the composite with that λ (black-box search on the tuning requests), then scores each tuned vector
by the *unbiased part* of the reward alone, ``a · posterior + c · rules``, on held-out requests (one
set of feedback draws shared by all λ: common random numbers, so the comparison is paired), and
keeps the λ with the best held-out score. The static vector is a proxy for the policy: the prior's
bias pulls a personalized policy in the same direction as it pulls a static one.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
from torch import Tensor

__all__ = ["PriorWeightSelection", "composite_objective", "select_prior_weight"]


def composite_objective(scenario, contexts, reward_weights: dict, seed: int) -> Callable[[Tensor], Tensor]:
    """``objective(W [M, K]) -> [M]``: mean composite reward of M static weight vectors on ``contexts``.

    Every call draws the feedback with the same seeded generator (common random numbers across
    candidates), so two candidates are compared on the same simulated users.
    """

    def objective(w: Tensor) -> Tensor:
        return _per_request(scenario, contexts, w, reward_weights, seed).mean(0)

    return objective


def _per_request(scenario, contexts, w: Tensor, reward_weights: dict, seed: int) -> Tensor:
    """``[B, M]`` composite reward of each request under each of the weight vectors ``w [M, K]``."""
    gen = torch.Generator().manual_seed(seed)
    actions = w.float().unsqueeze(0).expand(len(contexts), -1, -1)
    parts = scenario.reward(contexts, actions, gen)
    return sum(reward_weights.get(name, 1.0) * r for name, r in parts.items()).double()


class PriorWeightSelection(NamedTuple):
    """The chosen prior weight and the evidence: per λ, the tuned static weights, their held-out
    score (``a · posterior + c · rules`` per request, mean) and the paired standard error of its
    difference from the chosen λ's score."""

    weight: float
    weights: dict[float, Tensor]
    scores: dict[float, float]
    se_vs_chosen: dict[float, float]

    def as_dict(self) -> dict:
        return {
            "chosen": self.weight,
            "grid": list(self.scores),
            "holdout_score": {str(lam): s for lam, s in self.scores.items()},
            "se_vs_chosen": {str(lam): s for lam, s in self.se_vs_chosen.items()},
            "static_weights": {str(lam): [float(x) for x in w] for lam, w in self.weights.items()},
        }


def select_prior_weight(
    scenario,
    tune_contexts,
    holdout_contexts,
    reward_weights: dict,
    grid: list[float],
    *,
    method: str = "cma",
    budget: int = 300,
    seed: int = 0,
) -> PriorWeightSelection:
    """Choose the prior's weight λ from ``grid`` by the held-out unbiased reward of static weights tuned with it.

    ``reward_weights`` gives the posterior's and the rules' weights (its ``prior`` entry is
    replaced by each λ). Ties go to the first λ of the grid with the best score.
    """
    from grpokit.ranking.tuning import tune_static_weights

    if not grid:
        raise ValueError("the prior-weight grid is empty: give at least one weight (e.g. [0.0, 0.3, 1.0])")
    for lam in grid:
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not math.isfinite(lam) or lam < 0:
            raise ValueError(f"prior weights must be finite numbers >= 0, got {lam!r} in {list(grid)}")
    if len(set(grid)) != len(grid):
        raise ValueError(f"the prior-weight grid has repeated values: {list(grid)}")
    unbiased = {**reward_weights, "prior": 0.0}
    tuned: dict[float, Tensor] = {}
    for lam in grid:
        obj = composite_objective(scenario, tune_contexts, {**reward_weights, "prior": float(lam)}, seed)
        tuned[float(lam)] = tune_static_weights(obj, scenario.n_tasks, method=method, budget=budget, seed=seed).best_weights
    stacked = torch.stack([tuned[float(lam)] for lam in grid])
    per_req = _per_request(scenario, holdout_contexts, stacked, unbiased, seed + 1)  # [B, len(grid)]
    means = per_req.mean(0)
    best = int(means.argmax())
    n = per_req.shape[0]
    diff_se = (per_req - per_req[:, best : best + 1]).std(0) / math.sqrt(n)
    return PriorWeightSelection(
        weight=float(grid[best]),
        weights=tuned,
        scores={float(lam): float(means[i]) for i, lam in enumerate(grid)},
        se_vs_chosen={float(lam): float(diff_se[i]) for i, lam in enumerate(grid)},
    )
