"""``grpokit cohorts``: discover customer cohorts in a log, store them, print their profile."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from grpokit.cli._common import SchemaOption, StoreOption, _fail, _read_log, _write_json, console

cohorts_app = typer.Typer(help="Discover customer cohorts (k-means / GMM / a column) and profile them.",
                          no_args_is_help=True)


def _save(store: Path, name: str, decision_id, labels, model: dict) -> None:
    """Cohort of every row -> table ``cohorts__<name>`` (decision_id, cohort); the model -> ``cohort_models``."""
    import pandas as pd

    from grpokit.store import Store

    table = f"cohorts__{name}"
    frame = pd.DataFrame({"decision_id": decision_id, "cohort": labels.astype("int64")})
    with Store(store) as st:
        con = st.con
        con.execute("CREATE TABLE IF NOT EXISTS cohort_models (name VARCHAR PRIMARY KEY, model JSON, "
                    "created TIMESTAMP DEFAULT current_timestamp)")
        con.register("_cohort_rows", frame)
        con.execute(f'CREATE OR REPLACE TABLE "{table}" AS SELECT * FROM _cohort_rows')
        con.unregister("_cohort_rows")
        con.execute("INSERT OR REPLACE INTO cohort_models (name, model) VALUES (?, ?)", [name, json.dumps(model)])


@cohorts_app.command("discover")
def discover(
    dataset: Optional[str] = typer.Option(None, "--dataset", help="A dataset imported with 'grpokit data import'"),
    log: Optional[Path] = typer.Option(None, "--log", help="A log file (parquet / csv)"),
    method: str = typer.Option("gmm", "--method", help="gmm | kmeans | column"),
    k: str = typer.Option("auto", "--k", help="'auto' (chosen by --select) or a number of cohorts"),
    select: Optional[str] = typer.Option(None, "--select", help="bic | silhouette (default: bic for gmm, silhouette for kmeans)"),
    features: Optional[str] = typer.Option(None, "--features", help="Comma-separated feature columns (default: all)"),
    column: Optional[str] = typer.Option(None, "--column", help="For --method column: the column holding cohorts"),
    seed: int = typer.Option(0, "--seed"),
    name: Optional[str] = typer.Option(None, "--name", help="Name of the stored cohorts (default: the dataset's or file's)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the model, profile and scores here"),
    store: Path = StoreOption,
    schema: Optional[Path] = SchemaOption,
) -> None:
    """Fit the cohort model, store every row's cohort and the model (plain JSON) in the store, print the profile."""
    from grpokit.groups.discover import discover_cohorts

    if method not in ("gmm", "kmeans", "column"):
        _fail(f"--method must be gmm, kmeans or column, got {method!r}")
    if k != "auto":
        try:
            k_val: int | str = int(k)
        except ValueError:
            _fail(f"--k must be 'auto' or a whole number, got {k!r}")
    else:
        k_val = "auto"
    data = _read_log(log, dataset, store, schema)
    feats = [f.strip() for f in features.split(",") if f.strip()] if features else None
    try:
        result = discover_cohorts(data, method=method, k=k_val, select=select, features=feats, column=column, seed=seed)
    except ValueError as err:
        _fail(str(err))
    label = name or dataset or (log.stem if log is not None else "cohorts")
    _save(store, label, data.decision_id, result["labels"], result["model"])
    prof = result["profile"]
    table = Table(title=f"{result['n_cohorts']} cohorts ({method}, k={k}) of {len(result['labels']):,} rows: stored as "
                        f"'{label}' in {store}")
    table.add_column("cohort")
    for col in prof.columns:
        table.add_column(str(col), justify="right")
    for idx, row in prof.iterrows():
        table.add_row(str(idx), *[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.tolist()])
    console.print(table)
    if result["scores"]:
        console.print("selection scores: " + ", ".join(f"k={kk}: {v:.4g}" for kk, v in result["scores"].items()))
    if json_out is not None:
        _write_json(json_out, {"name": label, "model": result["model"], "n_cohorts": result["n_cohorts"],
                               "profile": json.loads(prof.to_json(orient="index")),
                               "scores": {str(kk): v for kk, v in result["scores"].items()}})
