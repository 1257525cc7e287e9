"""Moved to :mod:`grpokit.pilot.simulate` (re-exported here so that ``grpokit.loop.pilot_sim`` keeps working)."""

from grpokit.pilot.simulate import (  # noqa: F401
    cohort_stats,
    sampled_outcome,
    simulate_cohort_pilot,
    simulate_welch_pilot,
    true_cohort_effect,
)

__all__ = ["sampled_outcome", "cohort_stats", "simulate_cohort_pilot", "simulate_welch_pilot", "true_cohort_effect"]
