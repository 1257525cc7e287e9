"""Evaluation of policies against a scenario's ground truth."""

from grpokit.evaluation.values import evaluate_actions, evaluate_policy, oracle_values, steps_to_fraction

__all__ = ["evaluate_actions", "evaluate_policy", "oracle_values", "steps_to_fraction"]
