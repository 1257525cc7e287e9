"""The cohort pilot over a served decision log: plan it from the pre-period, analyze it afterwards.

``plan_from_log``: the live policy's served decisions (with rewards) give each cohort's pre-period
mean, count and variance; the cohorts are stratified (or paired) on the mean and half of each
stratum is chosen for the candidate (:mod:`~grpokit.pilot.design`); the power figure
(:mod:`~grpokit.pilot.power`) says which effect the planned decisions can detect.
``analyze_from_log``: the pilot period's decisions (arms ``candidate`` and ``control``) give each
cohort's mean outcome; the effect over cohorts is adjusted on the pre-period mean with its exact
randomization interval (:mod:`~grpokit.pilot.analysis`), the unit-level cluster-robust
difference beside it. Verdict: ``promote`` when the interval lies above ``margin``, ``stop`` when it
lies below 0 (the candidate is worse), else ``hold``.

Plans and analyses live in the store's ``pilots`` table (name, created_at, started_at, plan JSON,
analysis JSON), so ``grpokit pilot analyze --store S --pilot NAME`` finds them.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from grpokit.pilot.analysis import analyze_cohorts, cluster_robust_difference
from grpokit.pilot.design import PilotPlan, plan_pilot
from grpokit.pilot.power import power_plan, variance_components

__all__ = ["cohort_table", "plan_from_log", "analyze_from_log", "pilot_verdict", "save_plan", "load_plan",
           "save_analysis"]

_DDL = ("CREATE TABLE IF NOT EXISTS pilots (name VARCHAR PRIMARY KEY, created_at TIMESTAMP NOT NULL, "
        "started_at TIMESTAMP, plan VARCHAR NOT NULL, analysis VARCHAR)")


def _check_frame(frame: pd.DataFrame, cohort: str, reward: str) -> None:
    for col in (cohort, reward):
        if col not in frame.columns:
            raise ValueError(f"the log has no {col!r} column (columns: {list(frame.columns)})")
    r = pd.to_numeric(frame[reward], errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(r))
    if len(bad):
        raise ValueError(f"column {reward!r} row {int(bad[0])}: reward {frame[reward].iloc[bad[0]]!r} is not a finite number")


def cohort_table(frame: pd.DataFrame, *, cohort: str = "group", reward: str = "reward") -> pd.DataFrame:
    """Per cohort (index, as text): ``n``, ``mean`` and ``var`` (ddof 1) of the reward."""
    _check_frame(frame, cohort, reward)
    g = frame.groupby(frame[cohort].astype(str))[reward]
    return pd.DataFrame({"n": g.size(), "mean": g.mean(), "var": g.var(ddof=1)})


def plan_from_log(pre: pd.DataFrame, *, decisions: int, effect: float | None = None, design: str = "strata",
                  stratum_size: int = 4, seed: int = 0, alpha: float = 0.05, power: float = 0.8,
                  cohorts: list[str] | None = None, cohort: str = "group", reward: str = "reward") -> PilotPlan:
    """A pilot plan from the pre-period log (``decisions``: how many the pilot will serve in all)."""
    table = cohort_table(pre, cohort=cohort, reward=reward)
    if cohorts is not None:
        missing = [c for c in cohorts if c not in table.index]
        if missing:
            raise ValueError(f"cohort(s) {missing} have no rewarded decision in the pre-period log "
                             f"(cohorts there: {list(table.index)})")
        table = table.loc[[str(c) for c in cohorts]]
    thin = table.index[table["n"] < 2].tolist()
    if thin:
        raise ValueError(f"cohort(s) {thin} have fewer than 2 rewarded pre-period decisions")
    if decisions < 2 * len(table):
        raise ValueError(f"decisions = {decisions}: a pilot over {len(table)} cohorts needs at least {2 * len(table)}")
    plan = plan_pilot(list(table.index), table["mean"].to_numpy(), table["n"].to_numpy(), design=design,
                      stratum_size=stratum_size, seed=seed, alpha=alpha)
    comp = variance_components(table["mean"], table["n"], table["var"])
    if len(table) >= 5:
        plan.power = power_plan(comp, cohorts=len(table), decisions=int(decisions), effect=effect, alpha=alpha,
                                power=power)
    else:
        plan.power = {"note": "no power figure below 5 cohorts", **comp}
    return plan


def pilot_verdict(result: dict, margin: float = 0.0) -> str:
    if result["ci_low"] > margin:
        return "promote"
    if result["ci_high"] < 0:
        return "stop"
    return "hold"


def analyze_from_log(plan: PilotPlan, pilot: pd.DataFrame, *, margin: float = 0.0, max_assignments: int = 5000,
                     cohort: str = "group", reward: str = "reward", arm: str | None = "arm", seed: int = 0) -> dict:
    """The pilot's effect (module doc) from the pilot period's rewarded decisions."""
    table = cohort_table(pilot, cohort=cohort, reward=reward)
    missing = [c for c in plan.cohorts if c not in table.index]
    if missing:
        raise ValueError(f"planned cohort(s) {missing} have no rewarded decision in the pilot period")
    table = table.loc[plan.cohorts]
    treated = np.asarray(plan.treated, dtype=bool)
    res = analyze_cohorts(table["mean"].to_numpy(), treated, np.asarray(plan.pre_mean), strata=plan.strata,
                          design=plan.design, alpha=plan.alpha, max_assignments=max_assignments, seed=seed)
    rows = pilot[pilot[cohort].astype(str).isin(plan.cohorts)]
    lookup = dict(zip(plan.cohorts, treated))
    unit_t = rows[cohort].astype(str).map(lookup).to_numpy(dtype=bool)
    res["unit_level"] = cluster_robust_difference(rows[reward].to_numpy(np.float64), unit_t,
                                                  rows[cohort].astype(str).to_numpy(), plan.alpha)
    if arm is not None and arm in rows.columns:
        expected = np.where(unit_t, "candidate", "control")
        res["arm_mismatches"] = int((rows[arm].astype(str).to_numpy() != expected).sum())
    res["cohort_means"] = {c: float(v) for c, v in table["mean"].items()}
    res["cohort_decisions"] = {c: int(v) for c, v in table["n"].items()}
    res["treated_cohorts"] = plan.treated_cohorts
    res["margin"] = margin
    res["verdict"] = pilot_verdict(res, margin)
    return res


def _connect(store: str | Path):
    from grpokit.serve.tables import connect

    con = connect(store, 30.0)
    con.execute(_DDL)
    return con


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def save_plan(store: str | Path, name: str, plan: PilotPlan, *, started_at: datetime | None = None,
              replace: bool = False) -> None:
    """Record ``plan`` as pilot ``name`` (``started_at``: when its pilot period began, default now)."""
    if not name or not all(c.isalnum() or c in "-_." for c in name):
        raise ValueError(f"pilot name {name!r}: use letters, digits, '-', '_' or '.'")
    con = _connect(store)
    try:
        if con.execute("SELECT count(*) FROM pilots WHERE name = ?", [name]).fetchone()[0]:
            if not replace:
                raise ValueError(f"pilot {name!r} already exists in {store}: choose another name")
            con.execute("DELETE FROM pilots WHERE name = ?", [name])
        con.execute("INSERT INTO pilots VALUES (?, ?, ?, ?, NULL)",
                    [name, _now(), started_at or _now(), json.dumps(plan.to_dict())])
    finally:
        con.close()


def load_plan(store: str | Path, name: str) -> tuple[PilotPlan, datetime]:
    """``(plan, started_at)`` of pilot ``name``."""
    con = _connect(store)
    try:
        row = con.execute("SELECT plan, started_at FROM pilots WHERE name = ?", [name]).fetchone()
        if row is None:
            known = [r[0] for r in con.execute("SELECT name FROM pilots ORDER BY created_at").fetchall()]
            raise ValueError(f"no pilot named {name!r} in {store}; pilots there: {known}")
    finally:
        con.close()
    return PilotPlan.from_dict(json.loads(row[0])), row[1]


def save_analysis(store: str | Path, name: str, analysis: dict) -> None:
    con = _connect(store)
    try:
        con.execute("UPDATE pilots SET analysis = ? WHERE name = ?", [json.dumps(analysis, default=float), name])
    finally:
        con.close()
