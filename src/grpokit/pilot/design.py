"""Randomize whole cohorts for a pilot, balanced on each cohort's pre-period outcome.

Designs (K cohorts, pre-period cohort means x_c from the served log of the live policy):

* ``"strata"``: sort the cohorts by x_c, cut them into consecutive strata of ``stratum_size``
  (a remainder of one cohort joins the last stratum), and treat half of each stratum, chosen
  uniformly at random (an odd stratum treats floor(s/2) or ceil(s/2), each with probability 1/2);
* ``"pairs"``: the same with strata of 2 (matched pairs on x_c);
* ``"complete"``: treat floor(K/2) of the K cohorts uniformly at random (no balancing);
* ``"bernoulli"``: each cohort independently with probability 1/2, redrawn until both arms hold
  at least two cohorts (the older design :func:`grpokit.pilot.simulate.simulate_welch_pilot`
  draws, kept for comparison).

:func:`design_assignments` lists the assignments the design could have drawn (all of them, each
equally likely, when there are at most ``max_assignments``; else that many uniform draws): the
reference distribution of randomization inference (:mod:`grpokit.pilot.analysis`).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field

import numpy as np

__all__ = ["DESIGNS", "PilotPlan", "plan_pilot", "make_strata", "design_assignments", "n_design_assignments"]

DESIGNS = ("strata", "pairs", "complete", "bernoulli")


@dataclass
class PilotPlan:
    """Which cohorts get the candidate: ``treated[c]`` for ``cohorts[c]``, with the design that chose it."""

    cohorts: list[str]
    treated: list[bool]
    strata: list[int]
    pre_mean: list[float]
    pre_n: list[int]
    design: str
    stratum_size: int
    seed: int
    alpha: float = 0.05
    power: dict = field(default_factory=dict)

    @property
    def treated_cohorts(self) -> list[str]:
        return [c for c, t in zip(self.cohorts, self.treated) if t]

    @property
    def control_cohorts(self) -> list[str]:
        return [c for c, t in zip(self.cohorts, self.treated) if not t]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PilotPlan":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        missing = [k for k in ("cohorts", "treated", "strata", "pre_mean", "pre_n", "design", "stratum_size", "seed")
                   if k not in known]
        if missing:
            raise ValueError(f"a pilot plan needs the key(s) {missing}")
        return cls(**known)


def make_strata(pre_mean: np.ndarray, design: str, stratum_size: int = 4) -> np.ndarray:
    """Stratum id per cohort ``[K]``: consecutive blocks of the cohorts sorted by pre-period mean."""
    x = np.asarray(pre_mean, dtype=np.float64)
    k = len(x)
    if design in ("complete", "bernoulli"):
        return np.zeros(k, dtype=np.int64)
    size = 2 if design == "pairs" else int(stratum_size)
    if size < 2:
        raise ValueError(f"stratum_size must be >= 2, got {stratum_size}")
    order = np.argsort(x, kind="stable")
    n_strata = max(k // size, 1)
    strata = np.empty(k, dtype=np.int64)
    for rank, c in enumerate(order):
        strata[c] = min(rank // size, n_strata - 1)  # the remainder joins the last stratum
    return strata


def _stratum_choices(members: np.ndarray) -> list[tuple[int, ...]]:
    """Every treated subset a stratum can draw (half of it; both halves of an odd stratum)."""
    s = len(members)
    sizes = {s // 2, (s + 1) // 2}
    return [c for m in sorted(sizes) for c in itertools.combinations(members.tolist(), m)]


def n_design_assignments(strata: np.ndarray, design: str) -> int:
    """How many equally likely assignments the design has (Bernoulli: those with >= 2 per arm)."""
    strata = np.asarray(strata)
    k = len(strata)
    if design == "bernoulli":
        return sum(math.comb(k, m) for m in range(2, k - 1))
    return math.prod(_n_choices(int((strata == s).sum())) for s in np.unique(strata))


def _n_choices(s: int) -> int:
    """Number of treated subsets of a stratum of s cohorts (both halves of an odd one)."""
    return math.comb(s, s // 2) * (1 if s % 2 == 0 else 2)


def _draw(strata: np.ndarray, design: str, rng: np.random.Generator) -> np.ndarray:
    k = len(strata)
    if design == "bernoulli":
        for _ in range(10_000):
            t = rng.random(k) < 0.5
            if 2 <= t.sum() <= k - 2:
                return t
        raise RuntimeError("could not draw a Bernoulli assignment with two cohorts per arm")
    t = np.zeros(k, dtype=bool)
    for s in np.unique(strata):
        members = np.flatnonzero(strata == s)
        size = len(members) // 2 + (int(rng.integers(2)) if len(members) % 2 else 0)
        t[rng.choice(members, size=size, replace=False)] = True
    return t


def design_assignments(strata: np.ndarray, design: str, *, max_assignments: int = 5000,
                       seed: int = 0) -> tuple[np.ndarray, bool]:
    """``([M, K] bool, exact)``: all the design's assignments (exact) or ``max_assignments`` uniform draws."""
    strata = np.asarray(strata)
    k = len(strata)
    if design not in DESIGNS:
        raise ValueError(f"unknown design {design!r}; choose one of {DESIGNS}")
    total = n_design_assignments(strata, design)
    if total <= max_assignments:
        if design == "bernoulli":
            rows = [np.array(bits, dtype=bool) for bits in itertools.product([False, True], repeat=k)]
            return np.array([r for r in rows if 2 <= r.sum() <= k - 2]), True
        per = [_stratum_choices(np.flatnonzero(strata == s)) for s in np.unique(strata)]
        out = np.zeros((total, k), dtype=bool)
        for i, combo in enumerate(itertools.product(*per)):
            for members in combo:
                out[i, list(members)] = True
        return out, True
    rng = np.random.default_rng(seed)
    return np.array([_draw(strata, design, rng) for _ in range(max_assignments)]), False


def plan_pilot(cohorts: list[str], pre_mean, pre_n=None, *, design: str = "strata", stratum_size: int = 4,
               seed: int = 0, alpha: float = 0.05) -> PilotPlan:
    """Randomize the cohorts: stratify (or pair) them on ``pre_mean`` and treat half of each stratum."""
    cohorts = [str(c) for c in cohorts]
    x = np.asarray(pre_mean, dtype=np.float64)
    if design not in DESIGNS:
        raise ValueError(f"unknown design {design!r}; choose one of {DESIGNS}")
    if len(cohorts) != len(x):
        raise ValueError(f"{len(cohorts)} cohorts but {len(x)} pre-period means")
    if len(set(cohorts)) != len(cohorts):
        raise ValueError(f"cohort names repeat: {sorted({c for c in cohorts if cohorts.count(c) > 1})}")
    if len(cohorts) < 4:
        raise ValueError(f"a cohort pilot needs at least 4 cohorts (two per arm), got {len(cohorts)}")
    bad = np.flatnonzero(~np.isfinite(x))
    if len(bad):
        raise ValueError(f"cohort {cohorts[bad[0]]!r} has a pre-period mean of {x[bad[0]]}: every cohort needs "
                         "finite pre-period outcomes (does it have served, rewarded decisions?)")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    n = np.zeros(len(x), dtype=np.int64) if pre_n is None else np.asarray(pre_n, dtype=np.int64)
    strata = make_strata(x, design, stratum_size)
    treated = _draw(strata, design, np.random.default_rng(seed))
    return PilotPlan(cohorts=cohorts, treated=treated.tolist(), strata=strata.tolist(), pre_mean=x.tolist(),
                     pre_n=n.tolist(), design=design, stratum_size=2 if design == "pairs" else int(stratum_size),
                     seed=int(seed), alpha=float(alpha))
