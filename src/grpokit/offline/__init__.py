"""Offline layer: learning and evaluating decision policies from logged bandit data."""

from grpokit.offline.estimators import ESTIMATORS, OPEResult, estimate_improvement, estimate_value
from grpokit.offline.gate import deployment_gate
from grpokit.offline.io import LogValidationError, read_log, validate_log
from grpokit.offline.learn import action_probabilities, learn_from_outcome_model
from grpokit.offline.outcome import OutcomeModel
from grpokit.offline.schema import LoggedDecisions, LogSchema

__all__ = [
    "ESTIMATORS",
    "LogSchema",
    "LogValidationError",
    "LoggedDecisions",
    "OPEResult",
    "OutcomeModel",
    "action_probabilities",
    "deployment_gate",
    "estimate_improvement",
    "estimate_value",
    "learn_from_outcome_model",
    "read_log",
    "validate_log",
]
