"""Ranking: multi-task score fusion, the offline auction, learning to rank, static-weight tuning (GRADE).

Only the fusion core is imported eagerly (scenarios use it); the rest loads on first use, which
keeps ``grpokit.config`` -> scenarios -> ``grpokit.ranking`` free of import cycles.
"""

from importlib import import_module

from grpokit.ranking.fusion import FUSIONS, fuse, position_discount, rerank

_LAZY = {
    "auction": "grpokit.ranking.auction",
    "auction_throughput": "grpokit.ranking.auction",
    "gauc": "grpokit.ranking.auction",
    "RankingLog": "grpokit.ranking.logs",
    "RankingLogError": "grpokit.ranking.logs",
    "RankingSchema": "grpokit.ranking.logs",
    "read_ranking_log": "grpokit.ranking.logs",
    "validate_ranking_log": "grpokit.ranking.logs",
    "lambda_loss": "grpokit.ranking.ltr",
    "pretrain_fusion_policy": "grpokit.ranking.ltr",
    "tune_per_segment": "grpokit.ranking.tuning",
    "tune_static_weights": "grpokit.ranking.tuning",
}

__all__ = ["FUSIONS", "fuse", "position_discount", "rerank", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'grpokit.ranking' has no attribute {name!r}")
