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
keeps the λ with the best held-out score. :func:`holdout_scores` scores any candidates the same way;
``grpokit fusion run`` (``fusion.prior_weight_select = "policy"``) uses it to choose among GRADE
policies trained with each λ, because a per-request policy exploits the prior's bias more precisely
than one static vector can: the static choice is only a proxy for it.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
from torch import Tensor

__all__ = ["PriorWeightSelection", "composite_objective", "holdout_scores", "paired_se", "rule_penalty", "rule_penalty_from", "select_prior_weight"]


def rule_penalty(weights: Tensor, *, floors: Tensor, default: Tensor, floor_penalty: float = 10.0,
                 default_penalty: float = 2.0, default_tolerance: float = 0.3, onehot_penalty: float = 10.0,
                 onehot_threshold: float = 0.9) -> Tensor:
    """The (≤ 0) format penalty of weight vectors ``[..., K]``, computed on the clipped, renormalized weights:

    −(floor_penalty · Σ_k max(0, floor_k − w_k) + default_penalty · max(0, TV(w, default) − default_tolerance)
    + onehot_penalty · max(0, max_k w_k − onehot_threshold)), with TV = ½‖w − default‖₁ (all-zero w → uniform).
    """
    w = weights.float().clamp_min(0)
    total = w.sum(-1, keepdim=True)
    w = torch.where(total > 0, w / total.clamp_min(1e-30), torch.full_like(w, 1.0 / w.shape[-1]))
    floor = (floors.to(w.device, w.dtype) - w).clamp_min(0).sum(-1)
    tv = 0.5 * (w - default.to(w.device, w.dtype)).abs().sum(-1)
    far = (tv - default_tolerance).clamp_min(0)
    onehot = (w.max(-1).values - onehot_threshold).clamp_min(0)
    return -(floor_penalty * floor + default_penalty * far + onehot_penalty * onehot)


def rule_penalty_from(config, weights: Tensor, floors: Tensor, default: Tensor) -> Tensor:
    """:func:`rule_penalty` with the penalties read from a scenario config's ``rule_*`` fields."""
    return rule_penalty(weights, floors=floors, default=default, floor_penalty=config.rule_floor_penalty,
                        default_penalty=config.rule_default_penalty, default_tolerance=config.rule_default_tolerance,
                        onehot_penalty=config.rule_onehot_penalty, onehot_threshold=config.rule_onehot_threshold)


def composite_objective(scenario, contexts, reward_weights: dict, seed: int) -> Callable[[Tensor], Tensor]:
    """``objective(W [M, K]) -> [M]``: mean composite reward of M static weight vectors on ``contexts``.

    Every call draws the feedback with the same seeded generator (common random numbers across
    candidates), so two candidates are compared on the same simulated users.
    """

    def objective(w: Tensor) -> Tensor:
        return _per_request(scenario, contexts, w, reward_weights, seed).mean(0)

    return objective


def _per_request(scenario, contexts, w: Tensor, reward_weights: dict, seed: int) -> Tensor:
    """``[B, M]`` composite reward of each request under each of the weight vectors ``w``: ``[M, K]``
    (one vector per column, the same for every request) or ``[B, M, K]`` (per request)."""
    gen = torch.Generator().manual_seed(seed)
    actions = w.float().unsqueeze(0).expand(len(contexts), -1, -1) if w.ndim == 2 else w.float()
    parts = scenario.reward(contexts, actions, gen)
    return sum(reward_weights.get(name, 1.0) * r for name, r in parts.items()).double()


def holdout_scores(scenario, contexts, weights: Tensor, reward_weights: dict, seed: int) -> tuple[Tensor, Tensor]:
    """Mean *unbiased* reward (``a · posterior + c · rules``: the prior left out) of M candidate policies
    on held-out requests, and the per-request values ``[B, M]``.

    ``weights`` is ``[M, K]`` (static vectors) or ``[B, M, K]`` (each candidate's weights per request).
    All candidates read the same feedback draws (shared per candidate item), so differences are paired.
    """
    per_req = _per_request(scenario, contexts, weights, {**reward_weights, "prior": 0.0}, seed)
    return per_req.mean(0), per_req


def paired_se(per_req: Tensor, ref: int) -> Tensor:
    """Standard errors ``[M]`` of each column's mean minus column ``ref``'s mean (paired over rows)."""
    return (per_req - per_req[:, ref : ref + 1]).std(0) / math.sqrt(per_req.shape[0])


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
            "holdout_score": {f"{lam:g}": s for lam, s in self.scores.items()},
            "se_vs_chosen": {f"{lam:g}": s for lam, s in self.se_vs_chosen.items()},
            "static_weights": {f"{lam:g}": [float(x) for x in w] for lam, w in self.weights.items()},
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
    tuned: dict[float, Tensor] = {}
    for lam in grid:
        obj = composite_objective(scenario, tune_contexts, {**reward_weights, "prior": float(lam)}, seed)
        tuned[float(lam)] = tune_static_weights(obj, scenario.n_tasks, method=method, budget=budget, seed=seed).best_weights
    stacked = torch.stack([tuned[float(lam)] for lam in grid])
    means, per_req = holdout_scores(scenario, holdout_contexts, stacked, reward_weights, seed + 1)
    best = int(means.argmax())
    diff_se = paired_se(per_req, best)
    return PriorWeightSelection(
        weight=float(grid[best]),
        weights=tuned,
        scores={float(lam): float(means[i]) for i, lam in enumerate(grid)},
        se_vs_chosen={float(lam): float(diff_se[i]) for i, lam in enumerate(grid)},
    )
