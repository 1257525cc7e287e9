"""Ranking: multi-task score fusion, the offline auction, learning to rank, static-weight tuning (GRADE)."""

from grpokit.ranking.auction import auction, auction_throughput, gauc
from grpokit.ranking.fusion import FUSIONS, fuse, position_discount, rerank
from grpokit.ranking.logs import RankingLog, RankingLogError, RankingSchema, read_ranking_log, validate_ranking_log
from grpokit.ranking.ltr import lambda_loss, pretrain_fusion_policy
from grpokit.ranking.tuning import tune_per_segment, tune_static_weights

__all__ = [
    "FUSIONS",
    "RankingLog",
    "RankingLogError",
    "RankingSchema",
    "auction",
    "auction_throughput",
    "fuse",
    "gauc",
    "lambda_loss",
    "position_discount",
    "pretrain_fusion_policy",
    "read_ranking_log",
    "rerank",
    "tune_per_segment",
    "tune_static_weights",
    "validate_ranking_log",
]
