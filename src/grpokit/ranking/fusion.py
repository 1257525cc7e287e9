"""Multi-task score fusion and re-ranking, vectorized over requests, sampled weight vectors and candidates.

Shapes: ``scores: [B, N, K]`` (B requests, N candidates, K task predictions such as p_click,
p_order, order_value), ``weights: [B, G, K]`` (G weight vectors on the simplex per request).

* ``linear``: f = Σ_k w_k s_k;
* ``log_linear``: f = Σ_k w_k log(s_k + eps), i.e. the product form Π_k s_k^{w_k} (order-equivalent).

``rerank`` returns, for each (request, weight vector), the indices of the top-k candidates by fused
score; padded candidates (``mask`` False) never enter the top-k unless a request has fewer than k.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["FUSIONS", "fuse", "rerank", "position_discount"]

FUSIONS = ("linear", "log_linear")


def fuse(scores: Tensor, weights: Tensor, method: str = "linear", eps: float = 1e-6) -> Tensor:
    """Fused scores ``[B, G, N]`` of ``scores [B, N, K]`` under ``weights [B, G, K]``."""
    if scores.ndim != 3 or weights.ndim != 3:
        raise ValueError(f"scores must be [B, N, K] and weights [B, G, K], got {tuple(scores.shape)} and {tuple(weights.shape)}")
    if scores.shape[0] != weights.shape[0] or scores.shape[2] != weights.shape[2]:
        raise ValueError(
            f"scores {tuple(scores.shape)} and weights {tuple(weights.shape)} disagree on B or K"
        )
    if method == "linear":
        s = scores
    elif method == "log_linear":
        s = torch.log(scores.clamp_min(0.0) + eps)
    else:
        raise ValueError(f"unknown fusion {method!r}; choose one of {list(FUSIONS)}")
    return torch.einsum("bgk,bnk->bgn", weights.to(s.dtype), s)


def rerank(fused: Tensor, k: int, mask: Tensor | None = None) -> Tensor:
    """Indices ``[B, G, k]`` of the k best candidates per (request, weight vector), best first.

    ``mask: [B, N]`` bool marks real candidates (requests padded to N); ties keep the lower index.
    """
    if fused.ndim != 3:
        raise ValueError(f"fused scores must be [B, G, N], got {tuple(fused.shape)}")
    n = fused.shape[-1]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..N = {n}, got {k}")
    if mask is not None:
        if mask.shape != (fused.shape[0], n):
            raise ValueError(f"mask must be [B, N] = [{fused.shape[0]}, {n}], got {tuple(mask.shape)}")
        fused = fused.masked_fill(~mask.unsqueeze(1), float("-inf"))
    order = torch.argsort(fused, dim=-1, descending=True, stable=True)
    return order[..., :k]


def position_discount(k: int, kind: str = "log2", device=None, dtype=torch.float32) -> Tensor:
    """``[k]`` position weights: ``log2``: 1 / log2(i + 2) (DCG), ``none``: 1 for every slot."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    i = torch.arange(k, device=device, dtype=dtype)
    if kind == "log2":
        return 1.0 / torch.log2(i + 2.0)
    if kind == "none":
        return torch.ones(k, device=device, dtype=dtype)
    raise ValueError(f"unknown position discount {kind!r}; choose log2 or none")
