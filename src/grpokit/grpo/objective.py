"""The GRPO objective: clipped surrogate + β · KL to a reference policy − entropy bonus."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["grpo_loss", "k3_kl"]


def k3_kl(logp: Tensor, logp_ref: Tensor) -> Tensor:
    """k3 estimator of KL(π || π_ref) on samples of π: exp(q) − q − 1 with q = log π_ref − log π.

    Unbiased, always >= 0, and lower-variance than −q (Schulman, "Approximating KL divergence").
    """
    q = logp_ref - logp
    return torch.expm1(q) - q


def grpo_loss(
    logp: Tensor,
    logp_old: Tensor,
    advantages: Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    logp_ref: Tensor | None = None,
    beta: float = 0.0,
    entropy: Tensor | None = None,
    ent_coef: float = 0.0,
    weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """L = −mean[min(ρ A, clip(ρ, 1 − clip_low, 1 + clip_high) A)] + β mean[k3] − c_H mean[H].

    ``logp, logp_old, advantages, logp_ref: [B, G]``; ρ = exp(logp − logp_old) is the importance
    ratio against the policy that sampled the actions; ``entropy: [B]``. At ρ = 1 the gradient
    is −mean[A ∇ log π] (REINFORCE with the group baseline folded into A).
    ``weights`` (same shape, optional): the means become weighted means Σ w·x / Σ w (the covering
    group's per-action weights, :mod:`grpokit.grpo.cover`).
    Returns the loss and detached metrics (clip fractions, KL, entropy, ratio).
    """
    if weights is None:
        avg = torch.mean
    else:
        total = weights.sum()

        def avg(x: Tensor) -> Tensor:
            return (weights * x).sum() / total

    ratio = torch.exp(logp - logp_old)
    clipped = ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    surrogate = torch.minimum(ratio * advantages, clipped * advantages)
    loss = -avg(surrogate)
    metrics: dict[str, Tensor] = {}
    with torch.no_grad():
        low = (ratio < 1.0 - clip_low) & (advantages < 0)
        high = (ratio > 1.0 + clip_high) & (advantages > 0)
        metrics["clip_frac_low"] = avg(low.float())
        metrics["clip_frac_high"] = avg(high.float())
        metrics["clip_frac"] = metrics["clip_frac_low"] + metrics["clip_frac_high"]
        metrics["ratio_mean"] = avg(ratio)
    if beta > 0.0:
        if logp_ref is None:
            raise ValueError("beta > 0 needs the reference policy's log-probs (logp_ref)")
        kl = avg(k3_kl(logp, logp_ref))
        loss = loss + beta * kl
        metrics["kl"] = kl.detach()
    if entropy is not None:
        ent = entropy.mean()
        metrics["entropy"] = ent.detach()
        if ent_coef != 0.0:
            loss = loss - ent_coef * ent
    return loss, metrics
