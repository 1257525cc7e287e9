"""Moved to :mod:`grpokit.pilot.design` (re-exported here so that ``grpokit.loop.pilot_design`` keeps working)."""

from grpokit.pilot.design import (  # noqa: F401
    DESIGNS,
    PilotPlan,
    design_assignments,
    make_strata,
    n_design_assignments,
    plan_pilot,
)

__all__ = ["DESIGNS", "PilotPlan", "plan_pilot", "make_strata", "design_assignments", "n_design_assignments"]
