"""Ranking: multi-task score fusion, the offline auction, GRADE (personalized fusion weights)."""

from grpokit.ranking.fusion import FUSIONS, fuse, position_discount, rerank

__all__ = ["FUSIONS", "fuse", "position_discount", "rerank"]
