"""Scenarios: batch simulators with ground truth, and a gymnasium adapter."""

from grpokit.scenarios.base import Contexts, Scenario, TensorContextSampler
from grpokit.scenarios.preferences import PreferenceConfig, PreferenceScenario
from grpokit.scenarios.registry import SCENARIOS, make_scenario, scenario_from_config


def make_env(name: str, **params):
    """A one-step ``gymnasium.Env`` over scenario ``name`` (see :mod:`grpokit.scenarios.gym_env`)."""
    from grpokit.scenarios.gym_env import make_env as _make_env

    return _make_env(name, **params)


__all__ = [
    "Contexts",
    "PreferenceConfig",
    "PreferenceScenario",
    "SCENARIOS",
    "Scenario",
    "TensorContextSampler",
    "make_env",
    "make_scenario",
    "scenario_from_config",
]
