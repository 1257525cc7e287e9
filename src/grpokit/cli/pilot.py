"""``grpokit pilot plan|analyze``: a cohort pilot over the decision service's log (see docs/loop.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from grpokit.cli._common import _fail, _write_json, console

pilot_app = typer.Typer(help="Cohort pilots that can decide: plan (stratified on the pre-period, with a power "
                        "figure) and analyze (adjusted effect, randomization interval) from the served log.",
                        no_args_is_help=True)


def _frame(store: Path, arms: list[str], version: Optional[str] = None):
    from grpokit.serve.export import served_frame
    from grpokit.serve.tables import StoreBusy

    if not store.is_file():
        _fail(f"store {store} does not exist")
    try:
        frame, _ = served_frame(store, arms=arms, version=version)
    except (ValueError, StoreBusy) as err:
        _fail(str(err))
    if "group" not in frame.columns:
        _fail("the served decisions carry no cohort: a cohort pilot needs 'cohort' on every decide request")
    return frame


@pilot_app.command("plan")
def plan(
    pilot: str = typer.Option(..., "--pilot", help="Name of the pilot (kept in the store's 'pilots' table)"),
    decisions: int = typer.Option(..., "--decisions", help="Decisions the pilot will serve, in all"),
    store: Path = typer.Option(Path("grpokit.duckdb"), "--store", help="The DuckDB store file"),
    effect: Optional[float] = typer.Option(None, "--effect", help="Effect to detect: report the cohorts / decisions it needs"),
    design: str = typer.Option("strata", "--design", help="strata | pairs | complete"),
    stratum_size: int = typer.Option(4, "--stratum-size", help="Cohorts per stratum (design strata)"),
    seed: int = typer.Option(0, "--seed"),
    alpha: float = typer.Option(0.05, "--alpha"),
    power: float = typer.Option(0.8, "--power"),
    version: Optional[str] = typer.Option(None, "--version", help="Pre-period: decisions of this version (default all live ones)"),
    candidate: Optional[str] = typer.Option(None, "--candidate", help="Registered version to pilot (with --apply)"),
    apply: bool = typer.Option(False, "--apply", help="Set the service's rollout: canary on the planned cohorts"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the plan here"),
) -> None:
    """Randomize cohorts (balanced on the pre-period outcome) and say what the pilot can detect."""
    from grpokit.loop.pilot import plan_from_log, save_plan

    if design not in ("strata", "pairs", "complete"):
        _fail(f"--design {design!r}: choose strata, pairs or complete")
    if apply and not candidate:
        _fail("--apply needs --candidate VERSION (the registered policy to pilot)")
    frame = _frame(store, ["live"], version)
    try:
        p = plan_from_log(frame, decisions=decisions, effect=effect, design=design, stratum_size=stratum_size,
                          seed=seed, alpha=alpha, power=power)
        if apply:
            from grpokit.serve.config import RolloutConfig
            from grpokit.serve.tables import connect
            from grpokit.serve.versions import set_rollout

            con = connect(store, 30.0)
            try:
                set_rollout(con, RolloutConfig(mode="canary", candidate=candidate, cohorts=p.treated_cohorts))
            finally:
                con.close()
        save_plan(store, pilot, p)
    except ValueError as err:
        _fail(str(err))
    out = p.to_dict()
    if json_out is not None:
        _write_json(json_out, out)
    pw = p.power
    console.print(f"pilot {pilot!r}: {len(p.treated_cohorts)} cohorts on the candidate {p.treated_cohorts}, "
                  f"{len(p.control_cohorts)} on the live policy ({p.design} design, seed {p.seed})")
    if "mde" in pw:
        console.print(f"minimal detectable effect ({pw['power']:.0%} power, alpha {p.alpha}): {pw['mde']:.4g} per "
                      f"decision (unadjusted {pw['mde_unadjusted']:.4g})")
        if effect is not None:
            console.print(f"for an effect of {effect:g}: {pw['cohorts_needed']} cohorts at this size, or "
                          f"{pw['decisions_needed']} decisions over these cohorts")
    typer.echo(json.dumps({"pilot": pilot, "treated": p.treated_cohorts, "power": pw}, default=float))


@pilot_app.command("analyze")
def analyze(
    pilot: str = typer.Option(..., "--pilot", help="Name of a planned pilot"),
    store: Path = typer.Option(Path("grpokit.duckdb"), "--store", help="The DuckDB store file"),
    margin: float = typer.Option(0.0, "--margin", help="Promote only if the interval lies above this"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the analysis here"),
) -> None:
    """The pilot's effect from the served log since it started: adjusted estimate, randomization interval."""
    import pandas as pd

    from grpokit.loop.pilot import analyze_from_log, load_plan, save_analysis

    if not store.is_file():
        _fail(f"store {store} does not exist")
    try:
        p, started = load_plan(store, pilot)
    except ValueError as err:
        _fail(str(err))
    frame = _frame(store, ["candidate", "control"])
    frame = frame[pd.to_datetime(frame["timestamp"]) >= pd.Timestamp(started)]
    try:
        res = analyze_from_log(p, frame, margin=margin)
        save_analysis(store, pilot, res)
    except ValueError as err:
        _fail(str(err))
    if json_out is not None:
        _write_json(json_out, res)
    u = res["unit_level"]
    console.print(f"pilot {pilot!r}: effect {res['estimate']:.4g} [{res['ci_low']:.4g}, {res['ci_high']:.4g}] "
                  f"(95 % randomization interval, adjusted on the pre-period; p = {res['p_value']:.3g}); "
                  f"unit-level {u['estimate']:.4g} [{u['ci_low']:.4g}, {u['ci_high']:.4g}] (cluster-robust); "
                  f"verdict: {res['verdict']}")
    typer.echo(json.dumps({k: res[k] for k in ("estimate", "ci_low", "ci_high", "p_value", "verdict")}))
