"""Covering groups: every eligible action once in each context's group, the rest sampled.

With a small discrete action set (K <= G) a sampled group of G actions leaves an action the policy
gives ~1 % unscored in most contexts, so its reward is never compared again. ``group_sampling =
"cover"`` puts each eligible action once in every group (columns 0..K−1), samples the other G − K
from π_old, and turns the group's advantages into a per-action estimate

    Â_a = mean_{j: a_j = a} A_j,       Ā = Σ_a π_old(a) Â_a,       A^cov_a = Â_a − Ā,

with the objective L = −mean_b Σ_a w_a · min(ρ_a A^cov_a, clip(ρ_a) A^cov_a) over *all* K actions
and the weights w_a = (1 − ε) π_old(a) + ε / K' (K' eligible actions, ε = ``grpo.cover_floor``).

* ε = 0: the exact expected-reward policy gradient (the all-action estimator): at ρ = 1,
  ∇L = −Σ_a ∇π(a) Â_a, and E[Â_a | x] = E[A | x, a] makes it unbiased; the sampled group's
  estimator has the same expectation, not the same variance.
* ε > 0: the baseline is Ā = Σ_a w_a Â_a and ∂L/∂logit_k = −w_k A^cov_k: every logit moves by at
  least ε/K' times its advantage, so an action the policy has pushed to ~0 keeps its own signal
  (the exact gradient's π_k A_k vanishes with π_k). ε = 1 moves each logit by its advantage alone
  (the softmax's natural gradient in the tabular case). Not the gradient of the expected reward
  for ε > 0, but an ascent direction that stops only at each context's argmax.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["cover_actions", "per_action_mean", "cover_advantages", "cover_weights"]


def cover_actions(probs: Tensor, group_size: int, mask: Tensor | None = None) -> Tensor:
    """``[B, G]`` actions: column a < K is action a (a sample from ``probs`` where a is ineligible),
    columns K..G−1 are samples from ``probs`` ``[B, K]``."""
    b, k = probs.shape
    if group_size < k:
        raise ValueError(f"grpo.group_sampling = 'cover' needs grpo.group_size >= the number of actions "
                         f"({k}), got group_size = {group_size}")
    drawn = torch.multinomial(probs, group_size, replacement=True)
    fixed = torch.arange(k, device=probs.device).expand(b, k)
    if mask is not None:
        fixed = torch.where(mask, fixed, drawn[:, :k])
    return torch.cat([fixed, drawn[:, k:]], dim=1)


def per_action_mean(values: Tensor, actions: Tensor, n_actions: int) -> tuple[Tensor, Tensor]:
    """(mean of ``values [B, G]`` over the samples of each action, their counts), ``[B, K]`` each;
    0 where an action has no sample."""
    onehot = torch.nn.functional.one_hot(actions.long(), n_actions).to(values.dtype)  # [B, G, K]
    counts = onehot.sum(1)
    sums = (values.unsqueeze(2) * onehot).sum(1)
    return sums / counts.clamp_min(1), counts


def cover_weights(probs_old: Tensor, actions: Tensor, floor: float = 0.0) -> Tensor:
    """w = (1 − ε) π_old + ε / K' on the actions of the group (``[B, K]``, rows sum to 1)."""
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"grpo.cover_floor must lie in [0, 1], got {floor}")
    if floor == 0.0:
        return probs_old
    _, counts = per_action_mean(torch.zeros_like(actions, dtype=probs_old.dtype), actions, probs_old.shape[1])
    seen = (counts > 0).to(probs_old.dtype)
    return (1.0 - floor) * probs_old + floor * seen / seen.sum(1, keepdim=True)


def cover_advantages(adv: Tensor, actions: Tensor, weights: Tensor) -> Tensor:
    """A^cov = Â − Σ_a w_a Â_a ``[B, K]`` from a covering group's advantages ``[B, G]`` (module
    docstring); 0 for actions without a sample (ineligible ones)."""
    mean, counts = per_action_mean(adv, actions, weights.shape[1])
    base = (weights * mean).sum(1, keepdim=True)
    return torch.where(counts > 0, mean - base, torch.zeros_like(mean))
