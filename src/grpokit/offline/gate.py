"""The deployment gate: promote a candidate policy only if the logs show it beats the current one.

On a log collected by the current (logging) policy, V_current is the log's mean reward (on-policy)
and V_candidate is an off-policy estimate. The improvement Δ = V_candidate − V_current is estimated
from the same rows (paired), and the verdict is **promote** iff the lower end of Δ's
(1 − alpha) confidence interval is above ``margin``; otherwise **hold**. A business reads it as:
"with 95 % confidence the candidate is better by at least the margin" — or not yet.
"""

from __future__ import annotations

import numpy as np

from grpokit.offline.estimators import estimate_improvement, estimate_value

__all__ = ["deployment_gate"]


def deployment_gate(
    *,
    reward: np.ndarray,
    action: np.ndarray,
    pscore: np.ndarray,
    target_probs: np.ndarray,
    reward_hat: np.ndarray | None = None,
    method: str = "dr",
    margin: float = 0.0,
    alpha: float = 0.05,
    n_bootstrap: int = 1000,
    seed: int = 0,
    clip: float | None = None,
) -> dict:
    """Values of the candidate and the current policy with CIs, the improvement and the verdict."""
    if not np.isfinite(margin):
        raise ValueError(f"margin must be a finite number, got {margin}")
    kw = dict(
        reward=reward,
        action=action,
        pscore=pscore,
        target_probs=target_probs,
        reward_hat=reward_hat,
        alpha=alpha,
        n_bootstrap=n_bootstrap,
        seed=seed,
        clip=clip,
    )
    candidate = estimate_value(method, **kw).to_dict()
    improvement = estimate_improvement(method, **kw).to_dict()
    r = np.asarray(reward, dtype=np.float64)
    current_value = float(r.mean())
    # the current policy's CI: the candidate's minus the improvement's, from the same rows, is not
    # a CI; report the on-policy mean with its normal interval instead
    from scipy.stats import norm

    se = float(r.std(ddof=1) / np.sqrt(len(r)))
    z = float(norm.ppf(1 - alpha / 2))
    current = {"value": current_value, "ci_low": current_value - z * se, "ci_high": current_value + z * se}
    promote = improvement["ci_low"] > margin
    level = int(round(100 * (1 - alpha)))
    if promote:
        reason = (
            f"promote: with {level} % confidence the candidate improves the value by at least "
            f"{improvement['ci_low']:.6g} (> margin {margin:g}); estimated improvement {improvement['value']:.6g}"
        )
    elif not (np.isfinite(improvement["ci_low"]) and np.isfinite(improvement["ci_high"])):
        reason = f"hold: the {level} % interval of the improvement is undefined on {len(r)} row(s): log more decisions"
    else:
        reason = (
            f"hold: the {level} % interval of the improvement [{improvement['ci_low']:.6g}, "
            f"{improvement['ci_high']:.6g}] does not lie above the margin {margin:g}"
        )
    return {
        "method": method,
        "alpha": alpha,
        "margin": margin,
        "candidate": candidate,
        "current": current,
        "improvement": improvement,
        "verdict": "promote" if promote else "hold",
        "reason": reason,
    }
