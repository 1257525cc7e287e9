"""Business reward mechanism: uplift, profit, cohort-relative scores, weighting, budget penalty."""

from grpokit.rewards.components import (
    BudgetMultiplier,
    RewardComposer,
    cohort_median,
    cohort_percentile_rank,
    profit,
    relative_to_cohort_median,
    uplift,
)

__all__ = [
    "BudgetMultiplier",
    "RewardComposer",
    "cohort_median",
    "cohort_percentile_rank",
    "profit",
    "relative_to_cohort_median",
    "uplift",
]
