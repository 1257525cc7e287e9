"""Advantage estimators: rewards ``[B, G]`` (B contexts, G sampled actions each) to advantages.

Each estimator is a callable ``est(rewards [B, G], group_ids [B] | None) -> (adv [B, G], metrics)``
with ``state_dict`` / ``load_state_dict`` (empty for the stateless ones), so that the trainer
checkpoints them uniformly.

Zero-variance groups: when the G rewards of a context are all equal (|max − min| <= ``zero_tol``)
the concurrent group carries no ranking information. ``grpo``, ``dr_grpo`` and ``rank`` give those
contexts advantage exactly 0 (no gradient, no drift of the policy from them); ``pgrpo`` still gives
them a signal from its history baseline once the preference group has ``min_history`` rewards.
Their share is reported as ``frac_zero_std``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "grpo_advantages",
    "rank_advantages",
    "GRPOAdvantage",
    "RankAdvantage",
    "PGRPOAdvantage",
    "make_advantage",
    "merge_moments",
    "ADVANTAGES",
]

Scale = Literal["group", "batch", "none"]


def _check_rewards(rewards: Tensor) -> None:
    if rewards.ndim != 2:
        raise ValueError(f"rewards must have shape [B, G], got {tuple(rewards.shape)}")
    if rewards.shape[1] < 2:
        raise ValueError(f"group-relative advantages need G >= 2 samples per context, got G={rewards.shape[1]}")
    if not bool(torch.isfinite(rewards).all()):
        bad = (~torch.isfinite(rewards)).nonzero()[0].tolist()
        raise ValueError(f"reward at [context {bad[0]}, sample {bad[1]}] is {rewards[bad[0], bad[1]].item()}")


def zero_variance(rewards: Tensor, zero_tol: float = 1e-8) -> Tensor:
    """``[B]`` bool: the G rewards of context b are all equal (up to ``zero_tol``)."""
    lo, hi = torch.aminmax(rewards, dim=1)
    return (hi - lo) <= zero_tol


def grpo_advantages(rewards: Tensor, scale: Scale = "group", eps: float = 1e-6) -> Tensor:
    """A_bi = (r_bi − mean_i r_bi) / (s + eps).

    ``scale="group"``: s = std_i r_bi, the unbiased std of context b's G rewards (GRPO, as in TRL);
    ``scale="batch"``: s = the unbiased std of all B·G rewards (mean still per context);
    ``scale="none"``: s = 1 − eps, i.e. A = r − mean (Dr. GRPO, no std division).
    """
    _check_rewards(rewards)
    centered = rewards - rewards.mean(1, keepdim=True)
    if scale == "group":
        # two-pass unbiased std, written out: torch.std over a short last dim is ~10x slower on CPU
        std = (centered.square().sum(1, keepdim=True) / (rewards.shape[1] - 1)).sqrt()
        return centered / (std + eps)
    if scale == "batch":
        return centered / (rewards.std() + eps)
    if scale == "none":
        return centered
    raise ValueError(f"unknown scale {scale!r}; choose group, batch or none")


def rank_advantages(rewards: Tensor) -> Tensor:
    """A_bi = rank_bi / (G − 1) − 1/2: the centered percentile rank within the G samples.

    rank_bi = #{j: r_bj < r_bi} + (#{j: r_bj = r_bi} − 1) / 2 (ties share their mean rank), so A lies
    in [−1/2, 1/2], sums to 0 over each group, and ignores the rewards' scale and outliers.
    """
    _check_rewards(rewards)
    g = rewards.shape[1]
    r_i, r_j = rewards.unsqueeze(2), rewards.unsqueeze(1)
    less = (r_j < r_i).sum(2).to(rewards.dtype)
    equal = (r_j == r_i).sum(2).to(rewards.dtype)
    rank = less + (equal - 1) / 2
    return rank / (g - 1) - 0.5


class _Stateless:
    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} has no state, got keys {sorted(state)}")


class GRPOAdvantage(_Stateless):
    """GRPO / Dr. GRPO advantages (:func:`grpo_advantages`) with the zero-variance count."""

    def __init__(self, scale: Scale = "group", eps: float = 1e-6, zero_tol: float = 1e-8):
        if scale not in ("group", "batch", "none"):
            raise ValueError(f"unknown scale {scale!r}; choose group, batch or none")
        self.scale, self.eps, self.zero_tol = scale, eps, zero_tol

    def __call__(self, rewards: Tensor, group_ids: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        adv = grpo_advantages(rewards, self.scale, self.eps)
        zero = zero_variance(rewards, self.zero_tol)
        adv = adv.masked_fill(zero.unsqueeze(1), 0.0)
        return adv, {"frac_zero_std": zero.float().mean()}


class RankAdvantage(_Stateless):
    """Centered percentile-rank advantages (:func:`rank_advantages`)."""

    def __init__(self, zero_tol: float = 1e-8):
        self.zero_tol = zero_tol

    def __call__(self, rewards: Tensor, group_ids: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        adv = rank_advantages(rewards)  # validates the rewards first
        zero = zero_variance(rewards, self.zero_tol)
        adv = adv.masked_fill(zero.unsqueeze(1), 0.0)
        return adv, {"frac_zero_std": zero.float().mean()}


def merge_moments(n_a: Tensor, mean_a: Tensor, m2_a: Tensor, n_b: Tensor, mean_b: Tensor, m2_b: Tensor):
    """Chan et al.'s parallel merge of two sets' (count, mean, M2), elementwise per group:
    n = n_a + n_b, δ = mean_b − mean_a, mean = mean_a + δ n_b / n, M2 = M2_a + M2_b + δ² n_a n_b / n
    (groups with n_b = 0 keep a's mean and M2). Used by P-GRPO's history and to merge workers' batches."""
    n_new = n_a + n_b
    delta = mean_b - mean_a
    safe = n_new.clamp_min(1e-300)
    mean = torch.where(n_b > 0, mean_a + delta * n_b / safe, mean_a)
    m2 = torch.where(n_b > 0, m2_a + m2_b + delta**2 * n_a * n_b / safe, m2_a)
    return n_new, mean, m2


class PGRPOAdvantage:
    """P-GRPO (arXiv 2603.10009): normalize against each preference group's reward history.

    For preference group p the estimator keeps a running weight n_p, mean μ_p and sum of squared
    deviations M2_p of every reward seen so far (Welford/Chan batch merge), σ_p = sqrt(M2_p / n_p).
    A_bi = (r_bi − μ_p) / (σ_p + eps) with p = group of context b, using the statistics from *before*
    the current batch; then the batch's rewards are merged in. With ``decay`` γ < 1 the old
    statistics are multiplied by γ before each merge (n ← γ n, M2 ← γ M2): a batch k updates old
    counts by γ^k, for preference groups whose reward levels drift. Until n_p >= ``min_history``
    the contexts of group p fall back to GRPO (group scaling).
    """

    def __init__(
        self,
        n_groups: int,
        min_history: int = 32,
        decay: float = 1.0,
        eps: float = 1e-6,
        zero_tol: float = 1e-8,
        device: torch.device | str = "cpu",
    ):
        if n_groups < 1:
            raise ValueError(f"P-GRPO needs n_groups >= 1 preference groups, got {n_groups}")
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"decay must be in (0, 1], got {decay}")
        if min_history < 2:
            raise ValueError(f"min_history must be >= 2, got {min_history}")
        self.n_groups, self.min_history, self.decay, self.eps, self.zero_tol = (
            n_groups,
            min_history,
            decay,
            eps,
            zero_tol,
        )
        self.count = torch.zeros(n_groups, dtype=torch.float64, device=device)
        self.mean = torch.zeros(n_groups, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(n_groups, dtype=torch.float64, device=device)

    # -- statistics -------------------------------------------------------------------------

    @property
    def std(self) -> Tensor:
        """σ_p = sqrt(M2_p / n_p) (population std of the weighted history); 0 where n_p = 0."""
        return torch.where(self.count > 0, (self.m2 / self.count.clamp_min(1e-300)).sqrt(), torch.zeros_like(self.m2))

    def batch_moments(self, rewards: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per group p of one batch: (n_p, mean_p, M2_p) of its rewards (float64, ``[n_groups]`` each)."""
        r = rewards.detach().to(self.mean.dtype)
        g = group_ids.to(self.mean.device).long()
        n_b = torch.zeros_like(self.count).index_add_(0, g, torch.full_like(r[:, 0], r.shape[1]))
        sum_b = torch.zeros_like(self.mean).index_add_(0, g, r.sum(1))
        mean_b = torch.where(n_b > 0, sum_b / n_b.clamp_min(1), torch.zeros_like(sum_b))
        m2_b = torch.zeros_like(self.m2).index_add_(0, g, ((r - mean_b[g].unsqueeze(1)) ** 2).sum(1))
        return n_b, mean_b, m2_b

    def merge(self, n_b: Tensor, mean_b: Tensor, m2_b: Tensor) -> None:
        """Merge a batch's moments into the (decayed) history: n ← γn + n_b, then :func:`merge_moments`."""
        self.count, self.mean, self.m2 = merge_moments(self.count * self.decay, self.mean, self.m2 * self.decay,
                                                       n_b, mean_b, m2_b)

    def update(self, rewards: Tensor, group_ids: Tensor) -> None:
        """Merge a batch into the history: Chan et al.'s parallel update per group."""
        self.merge(*self.batch_moments(rewards, group_ids))

    # -- estimator --------------------------------------------------------------------------

    def __call__(self, rewards: Tensor, group_ids: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        _check_rewards(rewards)
        if group_ids is None:
            raise ValueError("pgrpo needs the preference group id of every context (group_ids [B])")
        if group_ids.shape != rewards.shape[:1]:
            raise ValueError(f"group_ids must have shape [{rewards.shape[0]}], got {tuple(group_ids.shape)}")
        g = group_ids.long()
        if bool(((g < 0) | (g >= self.n_groups)).any()):
            bad = g[(g < 0) | (g >= self.n_groups)][0].item()
            raise ValueError(f"group id {bad} outside 0..{self.n_groups - 1}")
        g = g.to(self.mean.device)
        mu = self.mean[g].to(rewards.dtype).unsqueeze(1)
        sigma = self.std[g].to(rewards.dtype).unsqueeze(1)
        ready = (self.count[g] >= self.min_history).to(rewards.device)
        hist = (rewards - mu.to(rewards.device)) / (sigma.to(rewards.device) + self.eps)
        zero = zero_variance(rewards, self.zero_tol)
        fallback = grpo_advantages(rewards, "group", self.eps).masked_fill(zero.unsqueeze(1), 0.0)
        adv = torch.where(ready.unsqueeze(1), hist, fallback)
        self.update(rewards, group_ids)
        return adv, {"frac_zero_std": zero.float().mean(), "frac_history": ready.float().mean()}

    def state_dict(self) -> dict:
        return {"count": self.count.clone(), "mean": self.mean.clone(), "m2": self.m2.clone()}

    def load_state_dict(self, state: dict) -> None:
        for key in ("count", "mean", "m2"):
            if key not in state:
                raise ValueError(f"P-GRPO state is missing {key!r}")
            value = state[key].to(self.mean.device, torch.float64)
            if value.shape != (self.n_groups,):
                raise ValueError(f"P-GRPO state {key!r} has shape {tuple(value.shape)}, expected ({self.n_groups},)")
            setattr(self, key, value.clone())


ADVANTAGES = ("grpo", "dr_grpo", "rank", "pgrpo")


def make_advantage(
    name: str,
    *,
    scale: Scale = "group",
    n_groups: int = 1,
    min_history: int = 32,
    decay: float = 1.0,
    eps: float = 1e-6,
    device: torch.device | str = "cpu",
):
    """Build an estimator by name: ``grpo`` (with ``scale``), ``dr_grpo`` (= grpo, scale none),
    ``rank`` or ``pgrpo``."""
    if name == "grpo":
        return GRPOAdvantage(scale, eps)
    if name == "dr_grpo":
        return GRPOAdvantage("none", eps)
    if name == "rank":
        return RankAdvantage()
    if name == "pgrpo":
        return PGRPOAdvantage(n_groups, min_history, decay, eps, device=device)
    raise ValueError(f"unknown advantage {name!r}; choose one of {list(ADVANTAGES)}")
