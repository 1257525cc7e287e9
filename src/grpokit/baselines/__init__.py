"""Baselines users compare against: random A/B, best single action, propensity targeting, T-/X-learner uplift."""

from grpokit.baselines.policies import (
    BASELINES,
    BestSingleBaseline,
    PropensityBaseline,
    RandomBaseline,
    TLearnerBaseline,
    XLearnerBaseline,
    make_baseline,
)

__all__ = [
    "BASELINES",
    "BestSingleBaseline",
    "PropensityBaseline",
    "RandomBaseline",
    "TLearnerBaseline",
    "XLearnerBaseline",
    "make_baseline",
]
