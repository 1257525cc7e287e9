"""Static fusion-weight baselines: black-box search over the probability simplex.

The baselines GRADE is compared against use one weight vector for everyone (or one per user
segment), tuned by black-box search on an offline objective (e.g. the mean reward of the
re-ranked lists):

* ``method="random"``: the K simplex vertices, the center, and Dirichlet(1, ..., 1) samples
  (uniform on the simplex) up to ``budget`` evaluations, evaluated in batches;
* ``method="cma"``: CMA-ES (the ``cma`` PyPI package, an optional dependency) over an
  unconstrained ``z ∈ R^K`` mapped to the simplex by ``w = softmax(z)``, started at the center
  (z = 0). Softmax is invariant to shifting z, so one direction of the search space is neutral;
  vertices are only reached in the limit.

``objective(W: [M, K]) -> [M]`` scores M weight vectors at once; by default it is maximized
(``maximize=False`` minimizes). :func:`tune_per_segment` runs the search once per segment.
"""

from __future__ import annotations

import math
import warnings
import zlib
from typing import Callable, Hashable, Mapping, NamedTuple

import numpy as np
import torch
from torch import Tensor

__all__ = ["TUNING_METHODS", "TuningResult", "simplex_candidates", "tune_per_segment", "tune_static_weights"]

TUNING_METHODS = ("random", "cma")

Objective = Callable[[Tensor], Tensor]


class TuningResult(NamedTuple):
    """``best_weights [K]``, ``best_value`` (float) and ``history``: a dict with ``weights
    [E, K]`` and ``values [E]`` of every evaluation in order, and ``best_so_far [E]`` (the
    running best, in the direction of the search)."""

    best_weights: Tensor
    best_value: float
    history: dict


def _import_cma():
    try:
        with warnings.catch_warnings():
            # cma warns at import time when matplotlib is missing (only its plotting needs it)
            warnings.simplefilter("ignore")
            import cma  # type: ignore[import-not-found]
    except ImportError as exc:
        raise ImportError(
            "method='cma' needs the optional package `cma` (CMA-ES); install it with `pip install cma`"
        ) from exc
    return cma


def simplex_candidates(K: int, n: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> Tensor:
    """``[n, K]`` candidate weights: the K vertices, the center, then Dirichlet(1) samples."""
    if isinstance(K, bool) or not isinstance(K, int) or K < 2:
        raise ValueError(f"K (the number of tasks) must be an integer >= 2, got {K!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < K + 1:
        raise ValueError(f"need at least K + 1 = {K + 1} candidates (vertices and center), got {n!r}")
    gen = torch.Generator().manual_seed(seed)
    fixed = torch.cat([torch.eye(K, dtype=dtype), torch.full((1, K), 1.0 / K, dtype=dtype)])
    # Dirichlet(1) = normalized Exp(1) draws
    e = torch.empty(n - K - 1, K, dtype=dtype).exponential_(1.0, generator=gen)
    e = e / e.sum(-1, keepdim=True)
    return torch.cat([fixed, e])


def _evaluate(objective: Objective, w: Tensor) -> Tensor:
    out = objective(w)
    if not torch.is_tensor(out):
        out = torch.as_tensor(out)
    out = out.detach()
    if out.shape != (w.shape[0],):
        raise ValueError(
            f"objective must map weights [M, K] to values [M]; got {tuple(out.shape)} for M = {w.shape[0]}"
        )
    out = out.to(torch.float64).cpu()
    if bool(torch.isnan(out).any()):
        raise ValueError("objective returned NaN values")
    return out


def tune_static_weights(
    objective: Objective,
    K: int,
    method: str = "random",
    budget: int = 512,
    seed: int = 0,
    *,
    maximize: bool = True,
    batch_size: int = 256,
    sigma0: float = 1.0,
    popsize: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
) -> TuningResult:
    """Search the K-simplex for the best static fusion weights of ``objective``.

    ``objective(W [M, K]) -> [M]``: values of M weight vectors (maximized unless
    ``maximize=False``); ``W`` has ``dtype`` and lives on ``device``. ``budget``: the maximum
    number of objective evaluations (weight vectors). ``random``: vertices + center +
    Dirichlet(1) samples, ``batch_size`` per objective call (needs ``budget >= K + 1``).
    ``cma``: CMA-ES on z ∈ R^K, w = softmax(z), from z = 0 with step size ``sigma0`` and
    population ``popsize`` (default: cma's 4 + 3 ln K); one objective call per generation,
    stopping before a generation would exceed ``budget`` or when CMA-ES converges.
    Returns a :class:`TuningResult` ``(best_weights [K], best_value, history)``.
    """
    if not callable(objective):
        raise TypeError(f"objective must be callable (W [M, K] -> [M]), got {type(objective).__name__}")
    if isinstance(K, bool) or not isinstance(K, int) or K < 2:
        raise ValueError(f"K (the number of tasks) must be an integer >= 2, got {K!r}")
    if method not in TUNING_METHODS:
        raise ValueError(f"unknown tuning method {method!r}; choose one of {list(TUNING_METHODS)}")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"budget must be a positive integer, got {budget!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    sign = 1.0 if maximize else -1.0

    all_w: list[Tensor] = []
    all_v: list[Tensor] = []

    def run(w64: Tensor) -> Tensor:
        v = _evaluate(objective, w64.to(dtype=dtype, device=device))
        all_w.append(w64.to(torch.float64).cpu())
        all_v.append(v)
        return v

    if method == "random":
        if budget < K + 1:
            raise ValueError(f"method='random' needs budget >= K + 1 = {K + 1} (vertices and center), got {budget}")
        cands = simplex_candidates(K, budget, seed)
        for start in range(0, budget, batch_size):
            run(cands[start : start + batch_size])
    else:
        if not (math.isfinite(sigma0) and sigma0 > 0):
            raise ValueError(f"sigma0 must be a positive finite number, got {sigma0!r}")
        if popsize is not None and (isinstance(popsize, bool) or not isinstance(popsize, int) or popsize < 2):
            raise ValueError(f"popsize must be an integer >= 2, got {popsize!r}")
        cma = _import_cma()
        opts = {
            "seed": int(seed) % (2**31 - 1) + 1,  # cma treats seed 0 as "seed from the clock"
            "verbose": -9,
            "maxfevals": budget,
        }
        if popsize is not None:
            opts["popsize"] = popsize
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            es = cma.CMAEvolutionStrategy(np.zeros(K), sigma0, opts)
        evals = 0
        while not es.stop() and evals + es.popsize <= budget:
            zs = es.ask()
            z = torch.as_tensor(np.asarray(zs), dtype=torch.float64)
            v = run(torch.softmax(z, dim=-1))
            evals += len(zs)
            # cma minimizes; -inf/+inf values are kept finite for its ranking
            fit = (-sign * v).nan_to_num(posinf=1e300, neginf=-1e300)
            es.tell(zs, fit.tolist())
        if not all_v:
            raise ValueError(f"budget {budget} is smaller than one CMA-ES generation ({es.popsize} evaluations)")

    weights = torch.cat(all_w)
    values = torch.cat(all_v)
    directed = sign * values
    best_so_far = sign * torch.cummax(directed, dim=0).values
    best = int(torch.argmax(directed))
    history = {"weights": weights, "values": values, "best_so_far": best_so_far}
    return TuningResult(weights[best].to(dtype), float(values[best]), history)


def tune_per_segment(
    objective_per_segment: Mapping[Hashable, Objective],
    K: int,
    method: str = "random",
    budget: int = 512,
    seed: int = 0,
    **kwargs,
) -> dict:
    """One static weight vector per segment: ``{segment: best_weights [K]}``.

    Runs :func:`tune_static_weights` on each segment's objective with the same settings
    (``kwargs`` are passed through). Each segment's seed is derived from ``seed`` and the
    segment name (CRC32 of ``str(segment)``), so results do not depend on the dict's order.
    """
    if not isinstance(objective_per_segment, Mapping):
        raise TypeError(
            f"objective_per_segment must be a mapping segment -> objective, got {type(objective_per_segment).__name__}"
        )
    if not objective_per_segment:
        raise ValueError("objective_per_segment is empty: give at least one segment")
    out = {}
    for segment, objective in objective_per_segment.items():
        if not callable(objective):
            raise TypeError(f"the objective of segment {segment!r} is not callable (got {type(objective).__name__})")
        seg_seed = (seed * 1_000_003 + zlib.crc32(str(segment).encode())) % (2**31 - 2)
        out[segment] = tune_static_weights(objective, K, method, budget, seg_seed, **kwargs).best_weights
    return out
