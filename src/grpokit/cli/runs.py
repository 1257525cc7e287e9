"""``grpokit runs``: the runs recorded in the store (``learn``, ``evaluate``, ``run``, ...)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from grpokit.cli._common import StoreOption, _fail, console

runs_app = typer.Typer(help="Runs recorded in the DuckDB store.", no_args_is_help=True)


def _headline(kind: str, summary: dict) -> str:
    """A few words on a run's outcome, from its summary."""
    if "verdict" in summary:
        imp = summary.get("improvement") or {}
        return f"{summary['verdict']} (improvement {imp.get('value', float('nan')):+.4g})"
    if "verdict_line" in summary:
        return summary["verdict_line"][:90]
    if "holdout" in summary and summary["holdout"]:
        return f"held-out value {summary['holdout']['learned']['value']:.4g}"
    if "model_value_of_policy" in summary:
        return f"model value {summary['model_value_of_policy']:.4g}"
    policies = summary.get("policies")
    if isinstance(policies, dict) and policies:
        name, p = next(iter(policies.items()))
        return f"{name}: {p.get('value', float('nan')):.4g}"
    return ""


def _open(store: Path):
    from grpokit.store import Store

    if not store.exists():
        _fail(f"store {store} does not exist (runs are recorded by learn, evaluate and run with --store)")
    return Store(store)


@runs_app.command("list")
def runs_list(
    store: Path = StoreOption,
    kind: Optional[str] = typer.Option(None, "--kind", help="Only runs of this kind (learn, evaluate, ...)"),
    limit: int = typer.Option(50, "--limit", min=1, help="Show the most recent N runs"),
) -> None:
    """The recorded runs, most recent last."""
    with _open(store) as st:
        df = st.list_runs(kind)
    if df.empty:
        console.print(f"no runs{f' of kind {kind!r}' if kind else ''} in {store}")
        return
    df = df.tail(limit)
    table = Table(title=f"runs in {store}")
    for col in ("run_id", "kind", "created_at (UTC)", "outcome"):
        table.add_column(col)
    for _, row in df.iterrows():
        table.add_row(escape(str(row["run_id"])), escape(str(row["kind"])), str(row["created_at"])[:19],
                      escape(_headline(row["kind"], row["summary"])))
    console.print(table)


@runs_app.command("show")
def runs_show(
    run_id: str = typer.Argument(..., help="A run id from 'grpokit runs list'"),
    store: Path = StoreOption,
) -> None:
    """One run's config and summary (JSON)."""
    with _open(store) as st:
        df = st.list_runs()
    match = df[df["run_id"] == run_id]
    if match.empty:
        near = [r for r in df["run_id"] if run_id in r][:5]
        _fail(f"no run {run_id!r} in {store}" + (f"; did you mean {near}?" if near else "; see 'grpokit runs list'"))
    row = match.iloc[-1]
    console.print(f"[bold]{escape(run_id)}[/] ({escape(row['kind'])}, {str(row['created_at'])[:19]} UTC)")
    console.print_json(json.dumps({"config": row["config"], "summary": row["summary"]}, default=str))
