"""The effect of a cohort pilot: covariate-adjusted over cohorts, with an exact randomization interval.

Cohort c (c = 1..K) has its pilot-period mean outcome y_c, its pre-period mean x_c (the same
cohort served by the live policy before the pilot) and T_c = 1 when it got the candidate. The
estimand is the mean over the K cohorts of (cohort value under the candidate − under the live
policy). The estimate is the CUPED / ANCOVA coefficient over cohorts (equal weight per cohort):

    y_c = a + tau · T_c + b · (x_c − mean(x)) + e_c,      tau_hat = c_T' y   (OLS, c_T its row of (X'X)^-1 X')

The pre-period mean absorbs the large, stable differences between cohorts (their mix of customers),
which are what makes a plain difference of arm means over 12 cohorts so wide.

Interval (``interval = "randomization"``, the default): Fisher randomization inference inverted
into a confidence set. Under H0: tau = t0 (a constant additive effect), each cohort's outcome under
the live policy is y_c − t0 T_c, so the estimate under any other assignment T^k the design could
have drawn is known, and its deviation from t0 is A_k − t0 B_k with A_k = c_k' y, B_k = c_k' T
(linear in t0). p(t0) = share of the design's assignments with |A_k − t0 B_k| >= |tau_hat − t0|
(``p_greater``: the one-sided p of tau = 0, the share with A_k >= tau_hat);
the 1 − alpha set is {t0 : p(t0) > alpha}, found exactly from the 2 roots per assignment (its hull
is reported). Why this one: its level comes from the randomization we actually ran (the stratified
or paired design is built into the reference distribution), with no normality or equal-variance
assumption, which 12 cohorts cannot check. ``ci_t`` beside it is the classical OLS interval with
K − 3 degrees of freedom (exact only for normal, homoscedastic cohort residuals).

Also reported: ``welch``, the plain difference of arm means with a Welch t interval over cohorts
(today's analysis), and :func:`cluster_robust_difference`, the unit-level difference of means with
cluster-robust (CR1, clustered by cohort) errors and a t interval with G − 1 degrees of freedom.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["ancova_coefficients", "randomization_interval", "analyze_cohorts", "welch_difference",
           "cluster_robust_difference"]


def _design_matrix(t: np.ndarray, x: np.ndarray | None) -> np.ndarray:
    """``[M, K, p]``: columns 1, T (and x − mean x) for each of M assignments."""
    m, k = t.shape
    cols = [np.ones((m, k)), t.astype(np.float64)]
    if x is not None:
        cols.append(np.broadcast_to(x - x.mean(), (m, k)))
    return np.stack(cols, axis=-1)


def ancova_coefficients(t: np.ndarray, x: np.ndarray | None) -> np.ndarray:
    """``[M, K]``: the row c_k of (X'X)^-1 X' giving tau_hat = c_k' y for each assignment ``t: [M, K]``."""
    t = np.atleast_2d(np.asarray(t, dtype=bool))
    X = _design_matrix(t, None if x is None else np.asarray(x, dtype=np.float64))
    xtx = np.einsum("mki,mkj->mij", X, X)
    det = np.linalg.det(xtx)
    if np.any(np.abs(det) < 1e-12 * np.abs(xtx).max(axis=(1, 2)) ** X.shape[-1]):
        raise ValueError("the regression over cohorts is singular: each arm needs >= 2 cohorts and the pre-period "
                         "means must not be collinear with the assignment")
    return np.linalg.solve(xtx, np.transpose(X, (0, 2, 1)))[:, 1, :]


def randomization_interval(y: np.ndarray, t_obs: np.ndarray, assignments: np.ndarray, x: np.ndarray | None,
                           *, alpha: float = 0.05, exact: bool = True) -> dict:
    """The randomization-inference estimate, p-value of tau = 0 and (1 − alpha) interval (module doc).

    ``assignments: [M, K]``: the design's assignments (``exact``: all of them, the observed one
    included; else uniform draws, and p = (1 + count) / (1 + M)).
    """
    y = np.asarray(y, dtype=np.float64)
    t_obs = np.asarray(t_obs, dtype=bool)
    c_obs = ancova_coefficients(t_obs[None], x)[0]
    tau = float(c_obs @ y)
    c = ancova_coefficients(assignments, x)
    a = c @ y
    b = c @ t_obs.astype(np.float64)
    add = 0 if exact else 1
    m = len(a) + add
    scale = max(1.0, float(np.abs(a).max()), abs(tau))

    def pvalues(t0: np.ndarray) -> np.ndarray:
        dev = np.abs(a[None, :] - t0[:, None] * b[None, :])
        obs = np.abs(tau - t0)[:, None]
        return ((dev >= obs - 1e-9 * scale).sum(1) + add) / m

    roots = []
    with np.errstate(divide="ignore", invalid="ignore"):
        for num, den in ((a - tau, b - 1.0), (a + tau, b + 1.0)):
            ok = np.abs(den) > 1e-12
            roots.append(num[ok] / den[ok])
    r = np.unique(np.concatenate(roots))
    r = r[np.isfinite(r)]
    if len(r) == 0:
        return {"estimate": tau, "p_value": 1.0, "ci_low": -math.inf, "ci_high": math.inf, "n_assignments": len(a)}
    span = max(float(r.max() - r.min()), scale)
    probes = np.concatenate([[r[0] - span], 0.5 * (r[:-1] + r[1:]), [r[-1] + span]])
    accepted = np.flatnonzero(pvalues(probes) > alpha)
    if len(accepted) == 0:  # cannot happen: t0 = tau_hat has p = 1
        lo = hi = tau
    else:
        lo = -math.inf if accepted[0] == 0 else float(r[accepted[0] - 1])
        hi = math.inf if accepted[-1] == len(probes) - 1 else float(r[accepted[-1]])
    connected = bool(len(accepted) == 0 or (np.diff(accepted) == 1).all())
    # one-sided p of tau = 0 against tau > 0: under the sharp null y is what every assignment would give,
    # so the estimate under assignment k is a_k; p = share of the design's assignments with a_k >= tau_hat
    p_greater = float(((a >= tau - 1e-9 * scale).sum() + add) / m)
    return {"estimate": tau, "p_value": float(pvalues(np.array([0.0]))[0]), "p_greater": p_greater,
            "ci_low": lo, "ci_high": hi,
            "n_assignments": int(len(a)), "exact": bool(exact), "connected": connected,
            "min_p_value": float((1 + add) / m) if exact else float(1 / m)}


def _t_quantile(p: float, dof: float) -> float:
    from scipy import stats

    return float(stats.t.ppf(p, dof)) if math.isfinite(dof) and dof > 0 else float("nan")


def ols_t_interval(y: np.ndarray, t_obs: np.ndarray, x: np.ndarray | None, alpha: float = 0.05) -> dict:
    """Classical OLS estimate of tau, its standard error and t interval with K − p degrees of freedom."""
    y = np.asarray(y, dtype=np.float64)
    X = _design_matrix(np.asarray(t_obs, dtype=bool)[None], None if x is None else np.asarray(x, float))[0]
    k, p = X.shape
    if k <= p:
        raise ValueError(f"{k} cohorts cannot fit {p} coefficients")
    xtx_inv = np.linalg.inv(X.T @ X)
    coef = xtx_inv @ X.T @ y
    resid = y - X @ coef
    dof = k - p
    se = math.sqrt(float(resid @ resid) / dof * xtx_inv[1, 1])
    q = _t_quantile(1 - alpha / 2, dof)
    out = {"estimate": float(coef[1]), "se": se, "dof": dof, "ci_low": float(coef[1] - q * se),
           "ci_high": float(coef[1] + q * se)}
    if x is not None:
        out["slope"] = float(coef[2])
    return out


def welch_difference(y: np.ndarray, t_obs: np.ndarray, alpha: float = 0.05) -> dict:
    """Difference of the arms' mean cohort outcomes with a Welch t interval over cohorts."""
    y = np.asarray(y, dtype=np.float64)
    t_obs = np.asarray(t_obs, dtype=bool)
    a, b = y[t_obs], y[~t_obs]
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"Welch needs >= 2 cohorts per arm, got {len(a)} and {len(b)}")
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    diff = float(a.mean() - b.mean())
    se = math.sqrt(va + vb)
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if va + vb > 0 else math.inf
    q = _t_quantile(1 - alpha / 2, dof)
    return {"estimate": diff, "se": se, "dof": float(dof), "ci_low": diff - q * se, "ci_high": diff + q * se}


def cluster_robust_difference(values: np.ndarray, treated: np.ndarray, cluster: np.ndarray,
                              alpha: float = 0.05) -> dict:
    """Unit-level regression y_i = a + tau T_i + e_i with CR1 standard errors clustered by cohort.

    V = G/(G−1) · (N−1)/(N−2) · (X'X)^-1 (Σ_g X_g' e_g e_g' X_g) (X'X)^-1; interval tau ± t_{G−1} se.
    Weights every unit equally (so cohorts by their size), unlike the cohort-level estimate.
    """
    y = np.asarray(values, dtype=np.float64)
    t = np.asarray(treated, dtype=np.float64)
    g = np.asarray(cluster)
    if not (len(y) == len(t) == len(g)):
        raise ValueError(f"values, treated and cluster must have one entry per unit, got {len(y)}, {len(t)}, {len(g)}")
    if not np.all(np.isfinite(y)):
        raise ValueError(f"values row {int(np.flatnonzero(~np.isfinite(y))[0])} is NaN or inf")
    _, gi = np.unique(g, return_inverse=True)
    n_g = int(gi.max()) + 1
    if n_g < 3:
        raise ValueError(f"cluster-robust errors need >= 3 clusters, got {n_g}")
    X = np.stack([np.ones_like(t), t], 1)
    xtx_inv = np.linalg.inv(X.T @ X)
    coef = xtx_inv @ X.T @ y
    e = y - X @ coef
    scores = np.zeros((n_g, 2))
    np.add.at(scores, gi, X * e[:, None])
    meat = scores.T @ scores
    n = len(y)
    v = n_g / (n_g - 1) * (n - 1) / (n - 2) * xtx_inv @ meat @ xtx_inv
    se = math.sqrt(v[1, 1])
    q = _t_quantile(1 - alpha / 2, n_g - 1)
    return {"estimate": float(coef[1]), "se": se, "dof": n_g - 1, "ci_low": float(coef[1] - q * se),
            "ci_high": float(coef[1] + q * se), "units": n, "clusters": n_g}


def analyze_cohorts(y, treated, pre_mean=None, *, strata=None, design: str = "strata", alpha: float = 0.05,
                    max_assignments: int = 5000, seed: int = 0) -> dict:
    """The pilot's effect over cohorts: ANCOVA on the pre-period mean with its randomization interval,
    the OLS t interval and (without adjustment) Welch beside it. ``treated``: bool per cohort."""
    from grpokit.pilot.design import design_assignments, make_strata

    y = np.asarray(y, dtype=np.float64)
    t = np.asarray(treated, dtype=bool)
    x = None if pre_mean is None else np.asarray(pre_mean, dtype=np.float64)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if len(t) != len(y) or (x is not None and len(x) != len(y)):
        raise ValueError(f"y, treated and pre_mean need one entry per cohort, got {len(y)}, {len(t)}, "
                         f"{None if x is None else len(x)}")
    for name, v in (("y", y), ("pre_mean", x)):
        if v is not None and not np.all(np.isfinite(v)):
            raise ValueError(f"{name} of cohort {int(np.flatnonzero(~np.isfinite(v))[0])} is NaN or inf")
    if t.sum() < 2 or (~t).sum() < 2:
        raise ValueError(f"each arm needs >= 2 cohorts, got {int(t.sum())} treated and {int((~t).sum())} control")
    if strata is None:
        strata = make_strata(x if x is not None else np.zeros(len(y)), design)
    assignments, exact = design_assignments(np.asarray(strata), design, max_assignments=max_assignments, seed=seed)
    ri = randomization_interval(y, t, assignments, x, alpha=alpha, exact=exact)
    tt = ols_t_interval(y, t, x, alpha)
    out = {"estimate": ri["estimate"], "ci_low": ri["ci_low"], "ci_high": ri["ci_high"], "p_value": ri["p_value"],
           "interval": "randomization", "adjusted": x is not None, "design": design, "alpha": alpha,
           "randomization": ri, "ci_t": tt, "welch": welch_difference(y, t, alpha),
           "cohorts_treated": int(t.sum()), "cohorts_control": int((~t).sum())}
    return out
