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
    config: Optional[Path] = typer.Argument(None, help="TOML run file (its \\[scenario] is used)"),
    out: Path = typer.Option(..., "--out", help="Where to write the log (.parquet or .csv)"),
    n: int = typer.Option(20000, "--n", min=1, help="Number of logged decisions"),
    policy: str = typer.Option("uniform", "--policy", help="Logging policy: uniform (A/B; search: random weights per request), targeting, or default (search: the production weights)"),
    seed: int = typer.Option(0, "--seed", help="Seed of the logged units and their outcomes (the log's units are the population `scenario evaluate --n N --seed S` scores)"),
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
    pop = None
    if sc.name != "search":  # a log of units: state their population (the search log holds requests)
        from grpokit.evaluation.population import population, population_info

        pop = population_info(population(sc, n, seed), seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    if out.suffix == ".parquet":
        import json

        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(df, preserve_index=False)
        if pop is not None:
            meta = {b"grpokit": json.dumps({"population": pop, "logging_policy": policy}).encode()}
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
        pq.write_table(table, tmp)
    else:
        df.to_csv(tmp, index=False)
    tmp.replace(out)
    console.print(f"wrote {len(df):,} decisions to [bold]{out}[/] (columns: {', '.join(df.columns[:8])}, ...)")
    if pop is not None:
        console.print(f"units: population {pop['fingerprint']} (n {n}, seed {seed}); score decisions for them with "
                      f"`grpokit scenario evaluate --n {n} --seed {seed}`")


@scenario_app.command("evaluate")
def scenario_evaluate(
    config: Optional[Path] = typer.Argument(None, help="TOML run file (its \\[scenario] is used)"),
    assignment: Path = typer.Option(..., "--assignment", help="parquet/CSV with decision_id (or unit_id) and action (codes or offer names) columns"),
    json_out: Path = typer.Option(..., "--json", help="Where to write the true values"),
    n: int = typer.Option(20000, "--n", min=1, help="Units of the evaluation population (decision ids 0..n-1)"),
    seed: int = typer.Option(0, "--seed", help="Seed of the evaluation population (a `grpokit run` states its own in summary.json: population.seed)"),
    set_: Optional[List[str]] = SetOption,
) -> None:
    """True value of any assignment of actions to units (spillover included): score external tools' decisions.

    The population is the scenario's seeded sample of N units (``grpokit scenario simulate --seed S
    --n N`` logs the same units, with the same decision_id). A file that states its population
    (a ``population`` column or parquet metadata, as ``grpokit run``'s RUN_DIR/decisions/ files do)
    is refused when it does not match."""
    import torch

    from grpokit.business import evaluate_assignment
    from grpokit.evaluation.decisions import ID_COLUMN, DecisionFileError, action_codes, read_decisions
    from grpokit.evaluation.population import PopulationMismatch, check_population, population, population_info

    _, sc = _scenario(config, set_)
    kind = sc.action_spec["kind"]
    if kind not in ("categorical", "beta"):
        _fail(f"scenario evaluate supports categorical and scalar actions, not {kind!r}")
    try:
        df, stated = read_decisions(assignment, n)
        contexts = population(sc, n, seed)
        pop = population_info(contexts, seed)
        check_population(stated, pop, source=str(assignment))
        ids, actions = df[ID_COLUMN].to_numpy(), df["action"].to_numpy()
        if kind == "categorical":
            codes = action_codes(actions, getattr(sc, "action_names", None), sc.action_spec["n_actions"], ids=ids)
            tensor = torch.as_tensor(codes)
        else:
            import pandas as pd

            numeric = pd.to_numeric(pd.Series(actions), errors="coerce").to_numpy(dtype=np.float64)
            low, high = sc.action_spec["low"], sc.action_spec["high"]
            bad = ~np.isfinite(numeric) | (numeric < low) | (numeric > high)
            if bad.any():
                raise DecisionFileError(f"action, {ID_COLUMN} {int(ids[bad][0])}: {actions[bad][0]!r} is not a number in [{low}, {high}]")
            tensor = torch.as_tensor(numeric.astype(np.float32))
    except (DecisionFileError, PopulationMismatch) as err:
        _fail(str(err))
    result = evaluate_assignment(sc, contexts, tensor)
    result["units"] = n
    result["population"] = pop
    _write_json(json_out, result)
    console.print(f"true value per unit: [bold]{result['value']:.5f}[/] over {n:,} units of population "
                  f"{pop['fingerprint']} (seed {seed}); written to {json_out}")
