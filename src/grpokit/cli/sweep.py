"""``grpokit sweep``: a workflow over a grid of settings x seeds, serially or as parallel Ray tasks."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from grpokit.cli._common import SetOption, _fail, app, console


@app.command()
def sweep(
    config: Optional[Path] = typer.Argument(None, help="TOML run file (e.g. examples/marketing.toml)"),
    out: Path = typer.Option(..., "--out", help="Sweep directory: runs/<name>/ per run, sweep.csv, sweep.json"),
    set_grid: Optional[List[str]] = typer.Option(
        None, "--set-grid", help="A grid axis: section.key=v1,v2,... (repeatable; the runs are the product)"
    ),
    seeds: int = typer.Option(5, "--seeds", min=1, help="Seeds 0..N-1 per grid point"),
    seed_key: Optional[List[str]] = typer.Option(
        None, "--seed-key", help="Config keys set to the seed (repeatable; default grpo.seed and evaluation.seed)"
    ),
    workflow: str = typer.Option("run", "--workflow", help="run (train + baselines + report) or train"),
    backend: str = typer.Option("local", "--backend", help="local (one run after another) or ray (parallel tasks)"),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (default: $RAY_ADDRESS or a local cluster)"),
    num_cpus: Optional[int] = typer.Option(None, "--num-cpus", min=1, help="CPUs of a local Ray cluster"),
    set_: Optional[List[str]] = SetOption,
) -> None:
    """Run `grpokit run` (or `train`) for every grid point x seed into one table (mean +- sd over seeds)."""
    from grpokit.config import ConfigError
    from grpokit.scale.sweep import DEFAULT_SEED_KEYS, parse_grid, run_sweep

    try:
        grid = parse_grid(set_grid)
        done = []
        with console.status("sweeping...") as status:
            result = run_sweep(
                config, grid, seeds, workflow=workflow, backend=backend, out=out, overrides=set_,
                seed_keys=tuple(seed_key) if seed_key else DEFAULT_SEED_KEYS, address=address, num_cpus=num_cpus,
                on_result=lambda row: (done.append(row), status.update(f"{len(done)} runs done; last {row['name']}")),
            )
    except (ConfigError, ValueError, FileExistsError, ImportError) as err:
        _fail(str(err))
    console.print(sweep_table(result))
    console.print(f"{len(result.rows)} runs in {result.wall_s:.1f} s ({backend}); table: {result.files['csv']}, "
                  f"{result.files['json']}")


def sweep_table(result) -> Table:
    """Per grid point: the headline values (each policy's value, the oracle's) as mean +- sd over seeds."""
    cols = [c for c in result.metric_columns() if c.startswith("policies.") and c.endswith(".value")
            and c.count(".") == 2]
    cols += [c for c in ("oracle.value",) if c in result.metric_columns()]
    table = Table(title=f"sweep: {result.workflow}, {len(result.seeds)} seeds, mean +- sd")
    for k in result.grid:
        table.add_column(k)
    table.add_column("seeds", justify="right")
    for c in cols:
        table.add_column(c.removeprefix("policies.").removesuffix(".value"), justify="right")
    for agg in result.aggregate(cols):
        cells = [str(agg[k]) for k in result.grid] + [str(agg["n_seeds"])]
        for c in cols:
            m = agg.get(c)
            cells.append("" if m is None else f"{m['mean']:.4f} +- {m['sd']:.4f}" if m["n"] > 1 else f"{m['mean']:.4f}")
        table.add_row(*cells)
    return table
