"""Moved to :mod:`grpokit.pilot.power` (re-exported here so that ``grpokit.loop.pilot_power`` keeps working)."""

from grpokit.pilot.power import mde, power_plan, variance_components  # noqa: F401

__all__ = ["variance_components", "mde", "power_plan"]
