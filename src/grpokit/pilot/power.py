"""Power of a cohort pilot before it runs: the minimal detectable effect, cohorts or decisions needed.

From the pre-period log (the live policy's served decisions with rewards, per cohort c: n_c units,
mean x_c, within-cohort variance s²_c), with sigma²_w = pooled within-cohort variance of a unit's
reward and sigma²_B = var_c(x_c) − mean_c(sigma²_w / n_c) (clipped at 0) the variance of the
cohorts' true means. With m pilot decisions and m_pre pre-period decisions per cohort, the
pilot-period mean regressed on the pre-period mean keeps the residual variance

    sigma²_res = sigma²_B + sigma²_w / m − sigma²_B² / (sigma²_B + sigma²_w / m_pre) + sigma²_tau / 2

(sigma²_tau: the spread of the effect between cohorts, an assumption, default 0). With K_T and K_C
cohorts per arm, se(tau_hat) = sigma_res · sqrt(1/K_T + 1/K_C) and, with d = K − 3 degrees of
freedom, MDE = (t_{1−alpha/2, d} + t_{power, d}) · se: the smallest true effect the pilot detects
(two-sided, level alpha) with the given power. Without adjustment (a plain difference over cohorts)
the residual variance is sigma²_B + sigma²_w / m + sigma²_tau / 2 and d = K − 2.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["variance_components", "mde", "power_plan"]


def variance_components(pre_mean, pre_n, pre_var) -> dict:
    """sigma²_w (pooled within-cohort unit variance) and sigma²_B (between cohorts' true means)."""
    x = np.asarray(pre_mean, dtype=np.float64)
    n = np.asarray(pre_n, dtype=np.float64)
    v = np.asarray(pre_var, dtype=np.float64)
    if not (len(x) == len(n) == len(v)) or len(x) < 3:
        raise ValueError(f"need pre-period mean, count and variance for >= 3 cohorts, got {len(x)}, {len(n)}, {len(v)}")
    if np.any(n < 2):
        c = int(np.flatnonzero(n < 2)[0])
        raise ValueError(f"cohort {c} has {int(n[c])} pre-period decisions with rewards; each needs >= 2")
    within = float(((n - 1) * v).sum() / (n - 1).sum())
    between = max(float(x.var(ddof=1) - np.mean(within / n)), 0.0)
    return {"within_var": within, "between_var": between, "cohorts": len(x), "mean_pre_n": float(n.mean())}


def _se(comp: dict, k: int, m: float, m_pre: float, effect_sd: float, adjusted: bool) -> float:
    sb, sw = comp["between_var"], comp["within_var"]
    res = sb + sw / m + effect_sd**2 / 2
    if adjusted:
        res -= sb**2 / (sb + sw / m_pre) if sb > 0 else 0.0
    kt, kc = k // 2, k - k // 2
    return math.sqrt(max(res, 0.0) * (1 / kt + 1 / kc))


def mde(comp: dict, *, cohorts: int, decisions_per_cohort: float, pre_decisions_per_cohort: float,
        alpha: float = 0.05, power: float = 0.8, effect_sd: float = 0.0, adjusted: bool = True) -> float:
    """The minimal detectable effect (module doc) of a pilot on ``cohorts`` cohorts."""
    from scipy import stats

    if cohorts < (5 if adjusted else 4):
        raise ValueError(f"a pilot needs >= {5 if adjusted else 4} cohorts for a power figure, got {cohorts}")
    if decisions_per_cohort <= 0 or pre_decisions_per_cohort <= 0:
        raise ValueError("decisions per cohort (pilot and pre-period) must be > 0")
    dof = cohorts - (3 if adjusted else 2)
    q = float(stats.t.ppf(1 - alpha / 2, dof) + stats.t.ppf(power, dof))
    return q * _se(comp, cohorts, decisions_per_cohort, pre_decisions_per_cohort, effect_sd, adjusted)


def power_plan(comp: dict, *, cohorts: int, decisions: int, pre_decisions_per_cohort: float | None = None,
               effect: float | None = None, alpha: float = 0.05, power: float = 0.8, effect_sd: float = 0.0,
               max_cohorts: int = 10_000, max_decisions: int = 10**9) -> dict:
    """MDE of the planned pilot (``decisions`` in all over ``cohorts``) and, for ``effect``, what it needs.

    ``cohorts_needed``: the fewest cohorts (same decisions per cohort) whose MDE <= effect;
    ``decisions_needed``: the fewest pilot decisions (over the planned cohorts, pre-period as logged)
    whose MDE <= effect, None when more decisions cannot get there (the between-cohort floor).
    """
    m_pre = pre_decisions_per_cohort or comp["mean_pre_n"]
    m = decisions / cohorts
    kw = dict(alpha=alpha, power=power, effect_sd=effect_sd)
    out = {"cohorts": cohorts, "decisions": decisions, "decisions_per_cohort": m,
           "pre_decisions_per_cohort": m_pre, "alpha": alpha, "power": power, "effect_sd": effect_sd,
           "within_var": comp["within_var"], "between_var": comp["between_var"],
           "mde": mde(comp, cohorts=cohorts, decisions_per_cohort=m, pre_decisions_per_cohort=m_pre, **kw),
           "mde_unadjusted": mde(comp, cohorts=cohorts, decisions_per_cohort=m, pre_decisions_per_cohort=m_pre,
                                 adjusted=False, **kw)}
    if effect is not None:
        if not effect > 0:
            raise ValueError(f"effect must be > 0, got {effect}")
        def enough(k: int) -> bool:  # the MDE falls as cohorts are added
            return mde(comp, cohorts=k, decisions_per_cohort=m, pre_decisions_per_cohort=m_pre, **kw) <= effect

        out["effect"] = effect
        if not enough(max_cohorts):
            out["cohorts_needed"] = None
        else:
            lo, hi = 4, 5  # enough(lo) is False (no power figure below 5 cohorts), enough(hi) is searched
            while not enough(hi):
                lo, hi = hi, min(hi * 2, max_cohorts)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if enough(mid) else (mid, hi)
            out["cohorts_needed"] = hi

        def ok(total: float) -> bool:
            return mde(comp, cohorts=cohorts, decisions_per_cohort=total / cohorts,
                       pre_decisions_per_cohort=m_pre, **kw) <= effect

        if not ok(max_decisions):
            out["decisions_needed"] = None
        else:
            lo, hi = cohorts, cohorts
            while not ok(hi):
                lo, hi = hi, hi * 2
            while hi - lo > max(1, cohorts):
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if ok(mid) else (mid, hi)
            out["decisions_needed"] = int(math.ceil(hi / cohorts) * cohorts)
    return out
