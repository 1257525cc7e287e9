"""Policy heads and networks; saved policies with their preprocessing (``DeployedPolicy``)."""

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
from grpokit.policy.features import FeatureEncoder, FeatureError  # noqa: E402,I001
from grpokit.policy.deployed import Decisions, DeployedPolicy  # noqa: E402,I001

__all__ = [
    "BetaHead",
    "Decisions",
    "DeployedPolicy",
    "FeatureEncoder",
    "FeatureError",
    "CategoricalHead",
    "Decision",
    "DirichletHead",
    "GaussianSoftmaxHead",
    "MLPTorso",
    "Policy",
    "PolicyHead",
    "make_head",
]
