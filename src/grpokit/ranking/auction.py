"""The offline auction: re-rank logged requests under candidate fusion weights and score the top-k.

For every request b and each of its G weight vectors ``w[b, g]`` (GRADE samples G per request),
:func:`auction` fuses the multi-task predictions of the request's candidates
(:func:`grpokit.ranking.fusion.fuse`), keeps the top-k (:func:`grpokit.ranking.fusion.rerank`,
ties go to the lower candidate index, padded candidates never rank above real ones) and reads
off, from the *observed* labels of the log, what that ranking would have earned:

* ``<label>`` for every label column (``click``, ``order``, ``gmv`` by default):
  ``Σ_{i<k} d_i · label[top_i]``, the position-discounted outcome of the top-k
  (``d_i = 1 / log2(i + 2)`` for ``discount="log2"``, 1 for ``"none"``, or a tensor of weights);
* ``ndcg``: NDCG@k of the re-ranked list for a relevance (default: the ``gmv`` label if the log has
  one, else ``order``, else the last label column). Gains are linear (``rel``, as in
  ``sklearn.metrics.ndcg_score``), negative relevance counts as 0, the ideal DCG is that of the
  request's candidates sorted by relevance, and a request with no relevant item (ideal DCG 0) gets
  NDCG **0** (so it lowers the mean; filter on ``ideal DCG > 0`` to exclude such requests);
* ``prior_<task>``: ``Σ_{i<k} d_i · prediction[top_i]`` -- the same discounted sum of the model's
  raw predictions (untransformed), a dense prior utility with no label noise.

Every output is a ``[B, G]`` tensor on the device of the weights. Requests with fewer than k real
candidates contribute only their real ones (k larger than the padded width N is clamped to N).

Per-task ``transforms`` rescale predictions before fusion: ``identity``, ``log1p`` (values must be
> -1), ``sqrt`` (values must be >= 0) and ``rank``: the per-request percentile
``midrank / n`` in (0, 1] (1 for the highest prediction; ties share their mid-rank).

:func:`gauc` is the group AUC of a fused score; :func:`auction_throughput` times the auction.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, Callable

import torch
from torch import Tensor

from grpokit.ranking.fusion import fuse, position_discount, rerank
from grpokit.ranking.logs import DEFAULT_LABELS, DEFAULT_TASKS, RankingLog

__all__ = ["TRANSFORMS", "apply_transforms", "auction", "auction_throughput", "gauc", "midranks"]

TRANSFORMS = ("identity", "log1p", "sqrt", "rank")


# ------------------------------------------------------------------------------------- helpers


def midranks(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """1-based ranks along the last dim, ascending, ties sharing their mid-rank; padding ignored.

    ``x [..., N]`` with finite real values, ``mask [..., N]`` bool (broadcastable to ``x``). Padded
    entries (mask False) do not count and get an unspecified rank. Vectorized with one sort and
    two ``searchsorted`` calls: ``rank = #less + (#equal + 1) / 2``.
    """
    big = x if mask is None else torch.where(mask, x, torch.full_like(x, float("inf")))
    big = big.contiguous()
    srt = torch.sort(big, dim=-1).values
    less = torch.searchsorted(srt, big, right=False)
    less_eq = torch.searchsorted(srt, big, right=True)
    return less.to(x.dtype) + (less_eq - less + 1).to(x.dtype) / 2


def apply_transforms(scores: Tensor, mask: Tensor, tasks: Sequence[str],
                     transforms: Mapping[Any, str] | None) -> Tensor:
    """``scores [B, N, K]`` with the per-task transforms applied (keys: task names or indices)."""
    if not transforms:
        return scores
    cols = list(scores.unbind(-1))
    for key, name in transforms.items():
        if isinstance(key, int) and not isinstance(key, bool):
            if not 0 <= key < len(cols):
                raise ValueError(f"transforms: task index {key} outside 0..{len(cols) - 1}")
            k = key
        elif key in tasks:
            k = list(tasks).index(key)
        else:
            raise ValueError(f"transforms: unknown task {key!r}; tasks are {list(tasks)}")
        cols[k] = _transform(cols[k], mask, name, tasks[k])
    return torch.stack(cols, dim=-1)


def _transform(s: Tensor, mask: Tensor, name: str, task: str) -> Tensor:
    if name == "identity":
        return s
    if name == "log1p":
        if bool(((s <= -1) & mask).any()):
            raise ValueError(f"transform log1p of task {task!r} needs predictions > -1, got {s[mask].min().item()}")
        return torch.log1p(torch.where(mask, s, torch.zeros_like(s)))
    if name == "sqrt":
        if bool(((s < 0) & mask).any()):
            raise ValueError(f"transform sqrt of task {task!r} needs predictions >= 0, got {s[mask].min().item()}")
        return torch.sqrt(torch.where(mask, s, torch.zeros_like(s)))
    if name == "rank":
        n = mask.sum(-1, keepdim=True).clamp_min(1).to(s.dtype)
        pct = midranks(s, mask) / n
        return torch.where(mask, pct, torch.zeros_like(pct))
    raise ValueError(f"unknown transform {name!r} for task {task!r}; choose one of {list(TRANSFORMS)}")


def _unpack(log_or_tensors: Any, tasks: Sequence[str] | None, label_names: Sequence[str] | None):
    """(scores, labels, mask, tasks, label_names) from a RankingLog, a mapping or a tuple."""
    if isinstance(log_or_tensors, RankingLog):
        log = log_or_tensors
        scores, labels, mask = log.scores, log.labels, log.mask
        tasks = log.tasks if tasks is None else tasks
        label_names = log.label_names if label_names is None else label_names
    elif isinstance(log_or_tensors, Mapping):
        if "scores" not in log_or_tensors or "labels" not in log_or_tensors:
            raise ValueError(f"a mapping of tensors needs 'scores' and 'labels', got keys {list(log_or_tensors)}")
        scores, labels = log_or_tensors["scores"], log_or_tensors["labels"]
        mask = log_or_tensors.get("mask")
        tasks = log_or_tensors.get("tasks", tasks) if tasks is None else tasks
        label_names = log_or_tensors.get("label_names", label_names) if label_names is None else label_names
    elif isinstance(log_or_tensors, (tuple, list)) and len(log_or_tensors) in (2, 3):
        scores, labels = log_or_tensors[0], log_or_tensors[1]
        mask = log_or_tensors[2] if len(log_or_tensors) == 3 else None
    else:
        raise TypeError("auction takes a RankingLog, a mapping {'scores', 'labels', 'mask'?, 'tasks'?, "
                        "'label_names'?} or a tuple (scores, labels[, mask])")
    if scores.ndim != 3:
        raise ValueError(f"scores must be [B, N, K], got {tuple(scores.shape)}")
    if labels.shape != scores.shape:
        raise ValueError(f"labels must have the shape of scores {tuple(scores.shape)}, got {tuple(labels.shape)}")
    b, n, k = scores.shape
    if mask is None:
        mask = torch.ones(b, n, dtype=torch.bool, device=scores.device)
    if mask.shape != (b, n):
        raise ValueError(f"mask must be [B, N] = {(b, n)}, got {tuple(mask.shape)}")
    if tasks is None:
        tasks = list(DEFAULT_TASKS) if k == len(DEFAULT_TASKS) else [f"task{i}" for i in range(k)]
    if label_names is None:
        label_names = ([DEFAULT_LABELS[t] for t in tasks] if all(t in DEFAULT_LABELS for t in tasks)
                       else [f"label{i}" for i in range(k)])
    if len(tasks) != k or len(label_names) != k:
        raise ValueError(f"{len(tasks)} task names and {len(label_names)} label names for K={k}")
    return scores, labels, mask.bool(), list(tasks), list(label_names)


def _relevance(relevance: Any, labels: Tensor, tasks: list[str], label_names: list[str]) -> Tensor:
    if relevance is None:
        for name in ("gmv", "order"):
            if name in label_names:
                return labels[..., label_names.index(name)]
        return labels[..., -1]
    if isinstance(relevance, Tensor):
        if relevance.shape != labels.shape[:2]:
            raise ValueError(f"relevance must be [B, N] = {tuple(labels.shape[:2])}, got {tuple(relevance.shape)}")
        return relevance.to(device=labels.device, dtype=labels.dtype)
    if isinstance(relevance, str):
        if relevance in label_names:
            return labels[..., label_names.index(relevance)]
        if relevance in tasks:
            return labels[..., tasks.index(relevance)]
        raise ValueError(f"relevance {relevance!r} is not a label column {label_names} or a task {tasks}")
    raise TypeError(f"relevance must be a label name, a [B, N] tensor or None, got a {type(relevance).__name__}")


# ------------------------------------------------------------------------------------- auction


def auction(weights: Tensor, log_or_tensors: Any, *, k: int = 10, fusion: str = "linear",
            transforms: Mapping[Any, str] | None = None, discount: str | Tensor = "log2",
            relevance: str | Tensor | None = None, tasks: Sequence[str] | None = None,
            label_names: Sequence[str] | None = None,
            utilities: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
    """Re-rank every request under every weight vector and score the top-k (see the module docstring).

    ``weights``: ``[B, G, K]`` (``[1, G, K]`` or ``[G, K]`` broadcast over the B requests).
    ``log_or_tensors``: a :class:`~grpokit.ranking.logs.RankingLog` with B requests, a mapping with
    ``scores [B, N, K]``, ``labels [B, N, K]`` and optionally ``mask [B, N]``, ``tasks``,
    ``label_names``, or a tuple ``(scores, labels[, mask])``. Names default to the log's; for bare
    tensors with the default K=3 tasks to ``p_click, p_order, order_value`` / ``click, order, gmv``,
    else ``task<i>`` / ``label<i>``. The log is moved to the weights' device.

    ``fusion``: ``linear`` or ``log_linear``; ``transforms``: task (name or index) -> one of
    :data:`TRANSFORMS`; ``discount``: ``log2``, ``none`` or a tensor of >= k slot weights;
    ``relevance`` (for NDCG): a label or task name, or a ``[B, N]`` tensor. ``utilities``: extra
    per-candidate values ``{name: [B, N]}`` (e.g. the model's predicted GMV p̂c · p̂o · v̂) whose
    discounted top-k sums are returned under their names.

    Returns ``{label: [B, G] for each label} | {"ndcg": [B, G]} | {"prior_<task>": [B, G]} | {utility: [B, G]}``.
    """
    scores, labels, mask, tasks, label_names = _unpack(log_or_tensors, tasks, label_names)
    device = weights.device
    scores, labels, mask = scores.to(device), labels.to(device), mask.to(device)
    if not scores.is_floating_point():
        scores = scores.float()
    dtype = scores.dtype
    labels = labels.to(dtype)
    b, n, n_tasks = scores.shape
    if weights.ndim == 2:
        weights = weights.unsqueeze(0)
    if weights.ndim != 3 or weights.shape[-1] != n_tasks or weights.shape[0] not in (1, b):
        raise ValueError(f"weights must be [B, G, K] = [{b}, G, {n_tasks}] (or [1, G, K], [G, K]), "
                         f"got {tuple(weights.shape)}")
    if weights.shape[0] == 1 and b > 1:
        weights = weights.expand(b, -1, -1)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    utilities = dict(utilities or {})
    for name, u in utilities.items():
        if not isinstance(u, Tensor) or u.shape != (b, n):
            raise ValueError(f"utility {name!r} must be a [B, N] = {(b, n)} tensor, got "
                             f"{tuple(u.shape) if isinstance(u, Tensor) else type(u).__name__}")
    keys = label_names + ["ndcg"] + [f"prior_{t}" for t in tasks] + list(utilities)
    if len(set(keys)) != len(keys):
        raise ValueError(f"output names collide: {keys}; rename the label columns")
    k_eff = min(k, n)
    if isinstance(discount, Tensor):
        if discount.ndim != 1 or discount.shape[0] < k_eff:
            raise ValueError(f"a discount tensor must be 1-D with at least k={k_eff} slots, got {tuple(discount.shape)}")
        disc = discount[:k_eff].to(device=device, dtype=dtype)
    else:
        disc = position_discount(k_eff, discount, device=device, dtype=dtype)
    rel = _relevance(relevance, labels, tasks, label_names).clamp_min(0)

    fused = fuse(apply_transforms(scores, mask, tasks, transforms), weights, fusion)  # [B, G, N]
    top = rerank(fused, k_eff, mask)  # [B, G, k]
    g = top.shape[1]
    flat = top.reshape(b, g * k_eff)
    slot_w = mask.gather(1, flat).view(b, g, k_eff).to(dtype) * disc  # [B, G, k]: 0 for padding

    def discounted(values: Tensor) -> Tensor:  # [B, N, K] -> [B, G, K]
        picked = values.gather(1, flat.unsqueeze(-1).expand(b, g * k_eff, values.shape[-1]))
        return torch.einsum("bgjk,bgj->bgk", picked.view(b, g, k_eff, -1), slot_w)

    out: dict[str, Tensor] = {}
    got = discounted(labels)
    for i, name in enumerate(label_names):
        out[name] = got[..., i]
    rel = torch.where(mask, rel, torch.zeros_like(rel))
    dcg = (rel.gather(1, flat).view(b, g, k_eff) * slot_w).sum(-1)
    ideal = (torch.topk(rel, k_eff, dim=1).values * disc).sum(-1, keepdim=True)  # [B, 1]
    out["ndcg"] = torch.where(ideal > 0, dcg / ideal.clamp_min(torch.finfo(dtype).tiny), torch.zeros_like(dcg))
    prior = discounted(scores)
    for i, t in enumerate(tasks):
        out[f"prior_{t}"] = prior[..., i]
    if utilities:
        extra = discounted(torch.stack([u.to(device=device, dtype=dtype) for u in utilities.values()], -1))
        for i, name in enumerate(utilities):
            out[name] = extra[..., i]
    return out


# ----------------------------------------------------------------------------------------- GAUC


def gauc(scores_fused: Tensor, labels: Tensor, mask: Tensor | None = None, *,
         per_request: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Group AUC: the per-request AUC of a fused score for a binary label, averaged over requests.

    ``scores_fused``: ``[B, N]`` or ``[B, G, N]`` (one fused score per weight vector); ``labels [B, N]``
    (positive: ``label > 0``, so click / order counts or GMV work); ``mask [B, N]`` real candidates.
    The AUC of request b is the Mann-Whitney statistic with mid-ranks for ties (a tied
    positive/negative pair counts 1/2, as in ``sklearn.metrics.roc_auc_score``). Only requests with
    both a positive and a negative candidate count, each weighted by its number of candidates:
    ``GAUC = Σ_b n_b AUC_b / Σ_b n_b``. Returns a 0-dim tensor (``[G]`` for ``[B, G, N]`` input),
    NaN when no request has both classes; with ``per_request=True`` also the per-request AUCs
    ``[B]`` / ``[B, G]`` (NaN where undefined). Scores of real candidates must be finite.
    Computed in float64.
    """
    if scores_fused.ndim not in (2, 3):
        raise ValueError(f"scores_fused must be [B, N] or [B, G, N], got {tuple(scores_fused.shape)}")
    b, n = scores_fused.shape[0], scores_fused.shape[-1]
    if labels.shape != (b, n):
        raise ValueError(f"labels must be [B, N] = {(b, n)}, got {tuple(labels.shape)}")
    device = scores_fused.device
    mask = torch.ones(b, n, dtype=torch.bool, device=device) if mask is None else mask.to(device).bool()
    if mask.shape != (b, n):
        raise ValueError(f"mask must be [B, N] = {(b, n)}, got {tuple(mask.shape)}")
    s = scores_fused.to(torch.float64)
    pos = (labels.to(device) > 0) & mask
    if s.ndim == 3:
        m, pos = mask.unsqueeze(1).expand_as(s), pos.unsqueeze(1).expand_as(s)
    else:
        m = mask
    if bool((~torch.isfinite(s) & m).any()):
        raise ValueError("gauc: scores of real candidates must be finite")
    ranks = midranks(s, m)
    n_pos = pos.sum(-1).to(torch.float64)
    n_all = m.sum(-1).to(torch.float64)
    n_neg = n_all - n_pos
    rank_sum = torch.where(pos, ranks, torch.zeros_like(ranks)).sum(-1)
    ok = (n_pos > 0) & (n_neg > 0)
    auc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg).clamp_min(1)
    auc = torch.where(ok, auc, torch.full_like(auc, float("nan")))
    w = torch.where(ok, n_all, torch.zeros_like(n_all))
    total = (torch.nan_to_num(auc) * w).sum(0) / w.sum(0)  # 0/0 = NaN when no request counts
    return (total, auc) if per_request else total


# ----------------------------------------------------------------------------------- throughput


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def auction_throughput(B: int = 4096, N: int = 50, K: int = 3, G: int = 8, k: int = 10, device: Any = "cpu",
                       steps: int = 5, *, warmup: int = 1, fusion: str = "linear", seed: int = 0,
                       transforms: Mapping[Any, str] | None = None,
                       timer: Callable[[], float] = time.perf_counter) -> float:
    """Auction throughput in requests·G per second (weight vectors scored per second).

    Random full requests (B × N candidates, K tasks, binary labels for the first K-1 tasks and a
    value label for the last), G random simplex weights per request, top-k; the auction is run
    ``warmup`` times, then timed over ``steps`` calls.
    """
    dev = torch.device(device)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    scores = torch.rand(B, N, K, generator=gen)
    labels = (torch.rand(B, N, K, generator=gen) < 0.1).float()
    labels[..., -1] *= 50 * torch.rand(B, N, generator=gen)
    weights = torch.softmax(torch.randn(B, G, K, generator=gen), -1)
    mask = torch.ones(B, N, dtype=torch.bool)
    data = {"scores": scores.to(dev), "labels": labels.to(dev), "mask": mask.to(dev)}
    weights = weights.to(dev)
    for _ in range(warmup):
        auction(weights, data, k=k, fusion=fusion, transforms=transforms)
    _sync(dev)
    t0 = timer()
    for _ in range(steps):
        auction(weights, data, k=k, fusion=fusion, transforms=transforms)
    _sync(dev)
    return steps * B * G / (timer() - t0)
