"""Learning to rank for fusion weights: LambdaLoss and GRADE's stage-1 (supervised) pre-training.

GRADE (arXiv 2510.07919) first fits the policy's *mean* fusion weights to logged relevance
with a differentiable ranking loss, then fine-tunes the full stochastic policy with GRPO. This
module supplies that first stage:

* :func:`lambda_loss`: the NDCG-weighted pairwise logistic loss of the LambdaLoss framework
  (Wang, Li, Golbandi, Bendersky, Najork, CIKM 2018), vectorized over ``[B, N, N]`` pairs;
* :func:`delta_ndcg`: the pair weights |ΔNDCG_ij| it uses (public so they can be inspected);
* :func:`ndcg`: NDCG(@k) of the ranking induced by scores, for monitoring;
* :func:`pretrain_fusion_policy`: minimizes ``lambda_loss(fuse(scores, policy mean weights))``.

Conventions: ``fused, relevance, mask: [B, N]``; ``mask`` (bool) marks real candidates of
requests padded to N. Gains are ``2^rel − 1``, the discount of rank r (1-based) is
``1 / log2(r + 1)``, optionally truncated to 0 beyond rank ``k``, and DCG is normalized by the
ideal DCG(@k) of the same request. The current ranking sorts the (detached) scores in
descending order; ties keep the lower index first (as :func:`grpokit.ranking.fusion.rerank`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from grpokit.ranking.fusion import FUSIONS, fuse

__all__ = ["LAMBDA_WEIGHTINGS", "delta_ndcg", "lambda_loss", "ndcg", "pretrain_fusion_policy"]

#: pair weightings of :func:`lambda_loss`
LAMBDA_WEIGHTINGS = ("lambdarank", "ndcg_loss2")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _check_inputs(fused: Tensor, relevance: Tensor, mask: Tensor | None, k: int | None) -> Tensor:
    """Validate shapes/values; return the bool mask (all True when None)."""
    if fused.ndim != 2:
        raise ValueError(f"fused scores must be [B, N], got shape {tuple(fused.shape)}")
    if relevance.shape != fused.shape:
        raise ValueError(
            f"relevance must have the shape of fused scores {tuple(fused.shape)}, got {tuple(relevance.shape)}"
        )
    if mask is None:
        mask = torch.ones(fused.shape, dtype=torch.bool, device=fused.device)
    else:
        if mask.shape != fused.shape:
            raise ValueError(f"mask must have the shape of fused scores {tuple(fused.shape)}, got {tuple(mask.shape)}")
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor (True = real candidate), got dtype {mask.dtype}")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ValueError(f"k must be a positive integer or None, got {k!r}")
    rel = relevance.detach()
    if not bool(torch.isfinite(rel[mask]).all()):
        raise ValueError("relevance has non-finite values on real (unpadded) candidates")
    if bool((rel[mask] < 0).any()):
        raise ValueError("relevance must be >= 0 (gains are 2^rel - 1)")
    if not bool(torch.isfinite(fused.detach()[mask]).all()):
        raise ValueError("fused scores have non-finite values on real (unpadded) candidates")
    return mask


def _ranks(fused: Tensor, mask: Tensor) -> Tensor:
    """1-based rank ``[B, N]`` of each candidate when sorting by score (descending, stable);
    real candidates come first, padded ones after them."""
    s = fused.detach()
    order = torch.argsort(s, dim=-1, descending=True, stable=True)
    # second stable sort: real candidates before padded ones, keeping the score order
    pad_in_order = (~mask).gather(-1, order).to(torch.int8)
    order = order.gather(-1, torch.argsort(pad_in_order, dim=-1, stable=True))
    n = fused.shape[-1]
    pos = torch.arange(1, n + 1, device=fused.device).expand_as(order)
    return torch.empty_like(order).scatter_(-1, order, pos)


def _discount(rank: Tensor, k: int | None, dtype: torch.dtype) -> Tensor:
    """1 / log2(rank + 1), zero beyond rank k."""
    d = 1.0 / torch.log2(rank.to(dtype) + 1.0)
    if k is not None:
        d = d.masked_fill(rank > k, 0.0)
    return d


def _gains_and_idcg(relevance: Tensor, mask: Tensor, k: int | None, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Gains ``2^rel − 1`` (0 on padding) ``[B, N]`` and ideal DCG(@k) ``[B]``."""
    rel = torch.where(mask, relevance.detach().to(dtype), torch.zeros((), dtype=dtype, device=relevance.device))
    gains = torch.exp2(rel) - 1.0
    ideal = torch.sort(gains, dim=-1, descending=True).values
    n = gains.shape[-1]
    ranks = torch.arange(1, n + 1, device=gains.device)
    idcg = (ideal * _discount(ranks, k, dtype)).sum(-1)
    return gains, idcg


# --------------------------------------------------------------------------------------------
# metrics and pair weights
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def ndcg(fused: Tensor, relevance: Tensor, mask: Tensor | None = None, k: int | None = None) -> Tensor:
    """NDCG(@k) ``[B]`` of the ranking by ``fused`` scores; requests with no relevant item get 0."""
    mask = _check_inputs(fused, relevance, mask, k)
    dtype = fused.dtype if fused.is_floating_point() else torch.float32
    gains, idcg = _gains_and_idcg(relevance, mask, k, dtype)
    dcg = (gains * _discount(_ranks(fused, mask), k, dtype)).sum(-1)
    return torch.where(idcg > 0, dcg / idcg.clamp_min(1e-30), torch.zeros_like(dcg))


@torch.no_grad()
def delta_ndcg(fused: Tensor, relevance: Tensor, mask: Tensor | None = None, k: int | None = None) -> Tensor:
    """|ΔNDCG_ij| ``[B, N, N]``: the NDCG(@k) change of swapping candidates i and j in the current
    ranking by ``fused`` scores, ``|G_i − G_j| · |D(r_i) − D(r_j)| / IDCG``.

    Zero on the diagonal, for pairs involving a padded candidate, and for requests whose ideal
    DCG is 0 (no relevant item).
    """
    mask = _check_inputs(fused, relevance, mask, k)
    dtype = fused.dtype if fused.is_floating_point() else torch.float32
    return _delta_ndcg(fused, relevance, mask, k, dtype)


def _delta_ndcg(fused: Tensor, relevance: Tensor, mask: Tensor, k: int | None, dtype: torch.dtype) -> Tensor:
    gains, idcg = _gains_and_idcg(relevance, mask, k, dtype)
    disc = _discount(_ranks(fused, mask), k, dtype)
    w = (gains.unsqueeze(-1) - gains.unsqueeze(-2)).abs() * (disc.unsqueeze(-1) - disc.unsqueeze(-2)).abs()
    inv = torch.where(idcg > 0, 1.0 / idcg.clamp_min(1e-30), torch.zeros_like(idcg))
    pair_mask = mask.unsqueeze(-1) & mask.unsqueeze(-2)
    return (w * inv[:, None, None]).masked_fill(~pair_mask, 0.0)


def _ndcg_loss2_weights(fused: Tensor, relevance: Tensor, mask: Tensor, k: int | None, dtype: torch.dtype) -> Tensor:
    """NDCG-Loss2 weights |G_i − G_j| · δ_ij / IDCG with δ_ij = |1/D(|r_i−r_j|) − 1/D(|r_i−r_j|+1)|,
    D(r) = log2(r + 1) (Wang et al. 2018, eq. 13); with ``k``, pairs with both ranks > k get 0."""
    gains, idcg = _gains_and_idcg(relevance, mask, k, dtype)
    rank = _ranks(fused, mask)
    dist = (rank.unsqueeze(-1) - rank.unsqueeze(-2)).abs().to(dtype)
    delta = (1.0 / torch.log2(dist + 1.0) - 1.0 / torch.log2(dist + 2.0)).abs()
    w = (gains.unsqueeze(-1) - gains.unsqueeze(-2)).abs() * delta
    if k is not None:
        top = rank <= k
        w = w.masked_fill(~(top.unsqueeze(-1) | top.unsqueeze(-2)), 0.0)
    inv = torch.where(idcg > 0, 1.0 / idcg.clamp_min(1e-30), torch.zeros_like(idcg))
    pair_mask = mask.unsqueeze(-1) & mask.unsqueeze(-2)
    return (w * inv[:, None, None]).masked_fill(~pair_mask, 0.0)


# --------------------------------------------------------------------------------------------
# LambdaLoss
# --------------------------------------------------------------------------------------------


def lambda_loss(
    fused: Tensor,
    relevance: Tensor,
    mask: Tensor | None = None,
    k: int | None = None,
    sigma: float = 1.0,
    *,
    weighting: str = "lambdarank",
    reduction: str = "mean",
) -> Tensor:
    """LambdaLoss: the NDCG-weighted pairwise logistic loss of ``fused: [B, N]`` scores.

    For every pair of real candidates with ``rel_i > rel_j``::

        loss_b = Σ_{i,j: rel_i > rel_j} w_ij · log(1 + exp(−σ (s_i − s_j)))

    **Variant.** The default ``weighting="lambdarank"`` is the LambdaRank-style weighting
    ``w_ij = |ΔNDCG_ij|`` (:func:`delta_ndcg`): the NDCG(@k) change of swapping i and j in the
    current ranking, ``|G_i − G_j| · |1/log2(r_i+1) − 1/log2(r_j+1)| / IDCG(@k)`` with
    ``G = 2^rel − 1``. In the LambdaLoss framework this is the "LambdaRank" loss (a heuristic
    surrogate; the paper's bound-tight metric-driven variant is NDCG-Loss2). ``weighting=
    "ndcg_loss2"`` selects NDCG-Loss2 instead: ``w_ij = |G_i − G_j| · δ_ij / IDCG`` with
    ``δ_ij = |1/D(|r_i−r_j|) − 1/D(|r_i−r_j|+1)|``, ``D(x) = log2(x + 1)``.
    The ranks come from the detached scores (the weights carry no gradient, as in LambdaRank);
    the loss is differentiable in ``fused`` and hence in the fusion weights that produced it.

    ``k``: truncate NDCG at k (with ``lambdarank`` the discount is 0 beyond rank k, so pairs
    with both candidates below k get weight 0; with ``ndcg_loss2`` such pairs are dropped).
    ``sigma``: the logistic slope σ > 0. Padded candidates (``mask`` False) are excluded;
    requests with no relevant item (ideal DCG 0) have no pairs and contribute 0.

    ``reduction``: ``"none"`` → per-request losses ``[B]``; ``"sum"`` → their sum; ``"mean"``
    (default) → their sum divided by the number of requests that have at least one ordered
    pair (so uninformative requests do not dilute the loss; 0 when no request has a pair).
    The loss uses the natural log (the paper writes log2; the two differ by a constant factor).
    """
    if weighting not in LAMBDA_WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; choose one of {list(LAMBDA_WEIGHTINGS)}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"unknown reduction {reduction!r}; choose mean, sum or none")
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive finite number, got {sigma!r}")
    if not fused.is_floating_point():
        raise TypeError(f"fused scores must be a floating-point tensor, got dtype {fused.dtype}")
    mask = _check_inputs(fused, relevance, mask, k)
    dtype = fused.dtype
    if weighting == "lambdarank":
        w = _delta_ndcg(fused, relevance, mask, k, dtype)
    else:
        w = _ndcg_loss2_weights(fused, relevance, mask, k, dtype)

    rel = relevance.detach().to(dtype)
    pair_mask = mask.unsqueeze(-1) & mask.unsqueeze(-2)
    ordered = (rel.unsqueeze(-1) > rel.unsqueeze(-2)) & pair_mask  # [B, N, N], i more relevant than j
    w = w.masked_fill(~ordered, 0.0)

    # padded scores may be anything (even -inf/nan): select them away before differencing
    s = torch.where(mask, fused, torch.zeros((), dtype=dtype, device=fused.device))
    diff = s.unsqueeze(-1) - s.unsqueeze(-2)
    pair_loss = F.softplus(-sigma * diff)
    per_request = (w * pair_loss).sum(dim=(-1, -2))
    if reduction == "none":
        return per_request
    if reduction == "sum":
        return per_request.sum()
    n_informative = ordered.flatten(1).any(-1).sum().clamp_min(1)
    return per_request.sum() / n_informative


# --------------------------------------------------------------------------------------------
# GRADE stage 1: supervised pre-training of the mean fusion weights
# --------------------------------------------------------------------------------------------


def pretrain_fusion_policy(
    policy: torch.nn.Module,
    features: Tensor,
    scores: Tensor,
    relevance: Tensor,
    mask: Tensor | None = None,
    *,
    steps: int = 200,
    lr: float = 1e-2,
    fusion: str = "linear",
    batch_size: int = 256,
    seed: int = 0,
    k: int | None = None,
    sigma: float = 10.0,
    weighting: str = "lambdarank",
    group: Tensor | None = None,
    weight_decay: float = 0.0,
) -> dict:
    """Stage 1 of GRADE: fit the policy's *mean* fusion weights to logged relevance.

    Per step, a minibatch of ``batch_size`` requests is drawn (a seeded permutation, cycling
    through the data in epochs); ``w = policy(features, group).mode()`` gives the mean weights
    ``[b, K]`` (α/Σα for a Dirichlet head, softmax([μ, 0]) for a Gaussian-softmax head), and
    Adam minimizes ``lambda_loss(fuse(scores, w), relevance, mask, k, sigma)``.

    ``features: [R, d]``, ``scores: [R, N, K]``, ``relevance: [R, N]``, ``mask: [R, N]`` bool
    (or None), ``group: [R]`` integer ids for a policy with a group embedding (or None).
    Works for any head whose ``Decision.mode()`` is a differentiable ``[B, K]`` point (not for
    a categorical head). Note that with simplex weights the fused-score scale is fixed by the
    task scores, so ``sigma`` sets how sharply the logistic loss separates pairs. The default
    10 (not :func:`lambda_loss`'s 1) suits task scores in [0, 1]: with σ·(s_i − s_j) ≪ 1 the
    loss is nearly linear in the weights and drives them to a vertex of the simplex; a larger
    σ (10-100) approaches the max-margin weights (on a toy problem with relevance from a known
    w*, σ = 1 gave a vertex, σ = 10 cosine ≈ 0.99, σ = 30 cosine ≈ 0.999 to w*).

    Only the policy's parameters are updated (in place); the global RNG is not touched.
    Returns ``{"loss": [steps] floats, "ndcg_before": float, "ndcg_after": float}`` where the
    NDCG(@k) values are the mean over requests with a relevant item, on all R requests.
    """
    if fusion not in FUSIONS:
        raise ValueError(f"unknown fusion {fusion!r}; choose one of {list(FUSIONS)}")
    if features.ndim != 2:
        raise ValueError(f"features must be [R, d], got shape {tuple(features.shape)}")
    if scores.ndim != 3:
        raise ValueError(f"scores must be [R, N, K], got shape {tuple(scores.shape)}")
    r, n, _ = scores.shape
    if features.shape[0] != r:
        raise ValueError(f"features have {features.shape[0]} rows but scores have R = {r}")
    if relevance.shape != (r, n):
        raise ValueError(f"relevance must be [R, N] = [{r}, {n}], got {tuple(relevance.shape)}")
    if mask is not None and mask.shape != (r, n):
        raise ValueError(f"mask must be [R, N] = [{r}, {n}], got {tuple(mask.shape)}")
    if group is not None and group.shape != (r,):
        raise ValueError(f"group must be [R] = [{r}], got {tuple(group.shape)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    params = [p for p in policy.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the policy has no trainable parameters")
    # validate relevance / mask / k once on the full data (cheap, and errors name the real problem)
    _check_inputs(torch.zeros(r, n, dtype=torch.float32, device=scores.device), relevance, mask, k)

    def mean_weights(idx: Tensor) -> Tensor:
        g = None if group is None else group[idx]
        w = policy(features[idx], g).mode()
        if not torch.is_tensor(w) or not w.is_floating_point() or w.shape != (idx.numel(), scores.shape[-1]):
            raise TypeError(
                f"pretrain_fusion_policy needs a simplex head whose mode() is a float [B, K = {scores.shape[-1]}] "
                f"tensor, got {getattr(w, 'dtype', type(w))} of shape {tuple(getattr(w, 'shape', ()))}"
            )
        return w

    def fused_of(idx: Tensor, w: Tensor) -> Tensor:
        return fuse(scores[idx], w.unsqueeze(1), fusion).squeeze(1)

    @torch.no_grad()
    def mean_ndcg() -> float:
        was_training = policy.training
        policy.eval()
        total, count = 0.0, 0
        for start in range(0, r, batch_size):
            idx = torch.arange(start, min(start + batch_size, r), device=scores.device)
            m = None if mask is None else mask[idx]
            f = fused_of(idx, mean_weights(idx))
            rel = relevance[idx]
            val = ndcg(f, rel, m, k)
            _, idcg = _gains_and_idcg(rel, torch.ones_like(rel, dtype=torch.bool) if m is None else m, k, f.dtype)
            has_rel = idcg > 0
            total += float(val[has_rel].sum())
            count += int(has_rel.sum())
        policy.train(was_training)
        return total / max(count, 1)

    gen = torch.Generator(device="cpu").manual_seed(seed)
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    ndcg_before = mean_ndcg()
    history: list[float] = []
    perm = torch.randperm(r, generator=gen)
    cursor = 0
    bs = min(batch_size, r)
    for _ in range(steps):
        if cursor + bs > r:
            perm, cursor = torch.randperm(r, generator=gen), 0
        idx = perm[cursor : cursor + bs].to(scores.device)
        cursor += bs
        w = mean_weights(idx)
        if not w.requires_grad:
            raise TypeError("the policy's mode() is not differentiable in its parameters; pretraining needs it to be")
        loss = lambda_loss(
            fused_of(idx, w), relevance[idx], None if mask is None else mask[idx], k, sigma, weighting=weighting
        )
        if not torch.isfinite(loss):
            raise FloatingPointError(f"lambda_loss became non-finite ({float(loss)}) at step {len(history)}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.append(float(loss.detach()))
    return {"loss": history, "ndcg_before": ndcg_before, "ndcg_after": mean_ndcg()}
