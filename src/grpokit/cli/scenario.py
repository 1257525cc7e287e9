"""``grpokit scenario``: simulate logged data, score any assignment on the ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import numpy as np
import typer

from grpokit.cli._common import (
    SetOption,
    _fail,
    _load,
    _write_json,
    console,
)

scenario_app = typer.Typer(help="Scenarios: simulate logged data, score any assignment on the ground truth.", no_args_is_help=True)


def _scenario(config: Optional[Path], set_: Optional[List[str]]):
    from grpokit.scenarios.registry import scenario_from_config

    cfg = _load(config, set_)
    return cfg, scenario_from_config(cfg.scenario)


@scenario_app.command("simulate")
def scenario_simulate(
    config: Optional[Path] = typer.Argument(None, help="TOML run file (its [scenario] is used)"),
    out: Path = typer.Option(..., "--out", help="Where to write the log (.parquet or .csv)"),
    n: int = typer.Option(20000, "--n", min=1, help="Number of logged decisions"),
    policy: str = typer.Option("uniform", "--policy", help="Logging policy: uniform (A/B; search: random weights per request), targeting, or default (search: the production weights)"),
    seed: int = typer.Option(0, "--seed"),
    set_: Optional[List[str]] = SetOption,
) -> None:
    """Write a logged dataset (with propensities) of the scenario under a logging policy."""
    _, sc = _scenario(config, set_)
    if not hasattr(sc, "simulate_log"):
        _fail(f"scenario {sc.name!r} cannot simulate logs yet")
    if out.suffix not in (".parquet", ".csv"):
        _fail(f"--out must end in .parquet or .csv, got {out.name}")
    try:
        df = sc.simulate_log(n, policy, seed=seed)
    except ValueError as err:
        _fail(str(err))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    df.to_parquet(tmp, index=False) if out.suffix == ".parquet" else df.to_csv(tmp, index=False)
    tmp.replace(out)
    console.print(f"wrote {len(df):,} decisions to [bold]{out}[/] (columns: {', '.join(df.columns[:8])}, ...)")


@scenario_app.command("evaluate")
def scenario_evaluate(
    config: Optional[Path] = typer.Argument(None, help="TOML run file (its [scenario] is used)"),
    assignment: Path = typer.Option(..., "--assignment", help="parquet/CSV with unit_id and action columns"),
    json_out: Path = typer.Option(..., "--json", help="Where to write the true values"),
    n: int = typer.Option(20000, "--n", min=1, help="Units of the evaluation population (unit ids 0..n-1)"),
    seed: int = typer.Option(0, "--seed", help="Seed of the evaluation population"),
    set_: Optional[List[str]] = SetOption,
) -> None:
    """True value of any assignment of actions to units (spillover included): score external tools' decisions.

    The population is the scenario's seeded sample of N units (``grpokit scenario simulate --policy
    uniform --seed S --n N`` shows the same units' features, unit_id = decision_id)."""
    import pandas as pd
    import torch

    from grpokit.business import evaluate_assignment

    _, sc = _scenario(config, set_)
    if not assignment.exists():
        _fail(f"assignment file {assignment} does not exist")
    df = pd.read_parquet(assignment) if assignment.suffix == ".parquet" else pd.read_csv(assignment)
    for col in ("unit_id", "action"):
        if col not in df.columns:
            _fail(f"assignment file {assignment} has no {col!r} column (columns: {list(df.columns)})")
    ids = df["unit_id"].to_numpy()
    if len(df) != n or sorted(ids.tolist()) != list(range(n)):
        _fail(f"the assignment must give exactly one action to each unit_id 0..{n - 1} (got {len(df)} rows)")
    if df["action"].isna().any():
        _fail(f"action is missing for unit_id {int(df.loc[df['action'].isna(), 'unit_id'].iloc[0])}")
    kind = sc.action_spec["kind"]
    order = np.argsort(ids)
    actions = df["action"].to_numpy()[order]
    if kind == "categorical":
        bad = ~np.isin(actions, np.arange(sc.action_spec["n_actions"]))
        if bad.any():
            _fail(f"unit_id {int(ids[order][bad][0])}: action {actions[bad][0]!r} is not a code 0..{sc.action_spec['n_actions'] - 1}")
        tensor = torch.as_tensor(actions.astype(np.int64))
    elif kind == "beta":
        numeric = pd.to_numeric(pd.Series(actions), errors="coerce").to_numpy(dtype=np.float64)
        low, high = sc.action_spec["low"], sc.action_spec["high"]
        bad = ~np.isfinite(numeric) | (numeric < low) | (numeric > high)
        if bad.any():
            _fail(f"unit_id {int(ids[order][bad][0])}: action {actions[bad][0]!r} is not a number in [{low}, {high}]")
        tensor = torch.as_tensor(numeric.astype(np.float32))
    else:
        _fail(f"scenario evaluate supports categorical and scalar actions, not {kind!r}")
    gen = torch.Generator().manual_seed(seed)
    if hasattr(sc, "simulate_log"):
        _, contexts, _ = sc.simulate_log(n, "uniform", seed=seed, return_contexts=True)
    else:
        contexts = sc.sample_contexts(n, gen)
    result = evaluate_assignment(sc, contexts, tensor)
    result["units"] = n
    _write_json(json_out, result)
    console.print(f"true value per unit: [bold]{result['value']:.5f}[/] over {n:,} units; written to {json_out}")
