"""Moved to :mod:`grpokit.pilot.analysis` (re-exported here so that ``grpokit.loop.pilot_analysis`` keeps working)."""

from grpokit.pilot.analysis import (  # noqa: F401
    analyze_cohorts,
    ancova_coefficients,
    cluster_robust_difference,
    ols_t_interval,
    randomization_interval,
    welch_difference,
)

__all__ = ["ancova_coefficients", "randomization_interval", "analyze_cohorts", "welch_difference",
           "cluster_robust_difference", "ols_t_interval"]
