"""Policy heads and networks."""

from grpokit.policy.heads import (
    BetaHead,
    CategoricalHead,
    Decision,
    DirichletHead,
    GaussianSoftmaxHead,
    PolicyHead,
    make_head,
)
from grpokit.policy.network import MLPTorso, Policy

__all__ = [
    "BetaHead",
    "CategoricalHead",
    "Decision",
    "DirichletHead",
    "GaussianSoftmaxHead",
    "MLPTorso",
    "Policy",
    "PolicyHead",
    "make_head",
]
