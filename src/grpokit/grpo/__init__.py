"""The GRPO engine: advantages, objective, trainer."""

from grpokit.grpo.advantages import (
    ADVANTAGES,
    GRPOAdvantage,
    PGRPOAdvantage,
    RankAdvantage,
    grpo_advantages,
    make_advantage,
    rank_advantages,
)
from grpokit.grpo.objective import grpo_loss, k3_kl
from grpokit.grpo.trainer import GRPOTrainer, NonFiniteError

__all__ = [
    "ADVANTAGES",
    "GRPOAdvantage",
    "GRPOTrainer",
    "NonFiniteError",
    "PGRPOAdvantage",
    "RankAdvantage",
    "grpo_advantages",
    "grpo_loss",
    "k3_kl",
    "make_advantage",
    "rank_advantages",
]
