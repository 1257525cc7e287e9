"""``grpokit score``: decisions with their propensities for every row of a table."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from grpokit.cli._common import _fail, _write_json, app, console


@app.command()
def score(
    policy: Path = typer.Option(..., "--policy", help="A policy.pt (from 'grpokit learn' or 'grpokit train')"),
    input: Path = typer.Option(..., "--input", help="Rows to decide: a .parquet or .csv file with the policy's fields"),
    out: Path = typer.Option(..., "--out", help="Decisions: a .parquet file (id, action, action_code, propensity, policy_version)"),
    epsilon: float = typer.Option(0.05, "--epsilon", help="Exploration: serve (1 - epsilon) x policy + epsilon x uniform"),
    mode: str = typer.Option("sample", "--mode", help="sample (draw from the policy) or greedy (its most likely action)"),
    seed: int = typer.Option(0, "--seed", help="Seed of the per-row draws (same seed, same decisions)"),
    id_column: Optional[str] = typer.Option(None, "--id-column", help="Column copied beside each decision "
                                            "(default: the first of unit_id, customer_id, event_id, decision_id, user_id, id)"),
    batch_rows: int = typer.Option(65_536, "--batch-rows", min=1, help="Rows held in memory at a time"),
    probabilities: bool = typer.Option(False, "--probabilities", help="Also write prob_<action> columns (the served distribution)"),
    backend: str = typer.Option("local", "--backend", help="local, or ray (needs the 'ray' extra)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the run's summary as JSON"),
) -> None:
    """One decision per row, with the probability it was chosen with (valid input for off-policy evaluation)."""
    from grpokit.policy.features import FeatureError
    from grpokit.scoring import score_table

    if backend not in ("local", "ray"):
        _fail(f"--backend must be local or ray, got {backend!r}")
    try:
        with console.status("scoring...") as status:
            summary = score_table(policy, input, out, epsilon=epsilon, mode=mode, seed=seed, id_column=id_column,
                                  batch_rows=batch_rows, probabilities=probabilities, backend=backend,
                                  on_batch=lambda n: status.update(f"scored {n:,} rows"))
    except ModuleNotFoundError as err:
        _fail(f"{err}: the ray backend needs the extra: pip install -c constraints.txt -e '.[ray]'")
    except (FeatureError, ValueError, FileNotFoundError) as err:
        _fail(str(err))
    if json_out is not None:
        _write_json(json_out, summary)
    mix = summary["decision_mix"]
    mix_text = ", ".join(f"{k} {100 * v:.1f} %" for k, v in mix.items()) if mix else "continuous actions"
    console.print(f"scored {summary['rows']:,} rows with policy {summary['policy_version']} "
                  f"(epsilon {epsilon:g}, {mode}) in {summary['seconds']:.1f} s -> [bold]{out}[/]")
    console.print(f"decision mix: {mix_text}")
