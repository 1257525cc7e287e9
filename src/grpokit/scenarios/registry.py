"""Scenario names to their config models and classes."""

from __future__ import annotations

from grpokit.scenarios.allocation import AllocationConfig, AllocationScenario
from grpokit.scenarios.marketing import MarketingConfig, MarketingScenario
from grpokit.scenarios.preferences import PreferenceConfig, PreferenceScenario
from grpokit.scenarios.pricing import PricingConfig, PricingScenario
from grpokit.ranking.logged import LoggedRankingConfig
from grpokit.scenarios.search import SearchConfig, SearchScenario

SCENARIO_CONFIGS = {"preferences": PreferenceConfig, "marketing": MarketingConfig, "pricing": PricingConfig, "allocation": AllocationConfig,
                    "search": SearchConfig, "logged_ranking": LoggedRankingConfig}
SCENARIOS = {"preferences": PreferenceScenario, "marketing": MarketingScenario, "pricing": PricingScenario, "allocation": AllocationScenario,
             "search": SearchScenario}


def make_scenario(name: str, **params):
    """Build a scenario by name with its parameters (validated by the scenario's config model)."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; choose one of {sorted(SCENARIOS)}")
    return SCENARIOS[name](SCENARIO_CONFIGS[name](name=name, **params))


def scenario_from_config(config) -> "object":
    if config.name not in SCENARIOS:
        raise ValueError(f"scenario {config.name!r} is built from a log, not from its config alone "
                         "(logged_ranking: use `grpokit fusion learn CONFIG --log LOG`)")
    return SCENARIOS[config.name](config)
