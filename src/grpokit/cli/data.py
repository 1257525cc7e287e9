"""``grpokit data``: logged decisions in the embedded DuckDB store."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from rich.markup import escape

from grpokit.cli._common import (
    SchemaOption,
    StoreOption,
    _fail,
    _schema,
    console,
)

FeaturesOption = typer.Option(
    None, "--features", help="Comma-separated feature columns (overrides the schema's features and the inference)"
)


def _with_features(schema, features: Optional[str]):
    """The schema with ``--features a,b,c`` applied (a LogSchema; the default one when None)."""
    from grpokit.offline.schema import LogSchema

    if features is None:
        return schema
    names = [f.strip() for f in features.split(",") if f.strip()]
    if not names:
        _fail("--features: give at least one column name")
    base = (schema or LogSchema()).model_dump(exclude_unset=True)
    try:
        return LogSchema(**{**base, "features": names})
    except ValueError as err:
        _fail(f"--features: {err}")


def _schema_hint(message: str) -> str:
    if message.startswith("missing column"):
        message += ("; map your column names with --schema FILE (a TOML file of LogSchema keys, e.g. "
                    'action = "offer", reward = "profit", pscore = "propensity")')
    return message


def print_roles(roles: list[dict]) -> None:
    """The role table: every column, its role, kind and why; suspected leaks and ids in yellow."""
    if not roles:
        return
    table = Table(title="column roles")
    for col in ("column", "role", "kind", "why"):
        table.add_column(col)
    for r in roles:
        style = "yellow" if r.get("warning") else ("green" if r["role"] == "feature" else None)
        table.add_row(escape(str(r["column"])), r["role"], r["kind"], escape(str(r["reason"])), style=style)
    console.print(table)
    leaks = [r for r in roles if r.get("warning") and r["role"] != "feature"]
    if leaks:
        console.print(f"[yellow]warning:[/] {len(leaks)} column(s) left out of the features because they look like "
                      f"outcomes or ids: {escape(', '.join(str(r['column']) for r in leaks))} "
                      "(name them in --features or the schema's features to use them anyway)")
    asked = [r for r in roles if r.get("warning") and r["role"] == "feature"]
    for r in asked:
        console.print(f"[yellow]warning:[/] feature {escape(str(r['column']))!s}: {escape(str(r['reason']))}")

data_app = typer.Typer(help="Logged decisions in the embedded DuckDB store.", no_args_is_help=True)


@data_app.command("import")
def data_import(
    file: Path = typer.Argument(..., help="A parquet or CSV file of logged decisions"),
    name: str = typer.Option(..., "--name", help="Dataset name in the store (letters, digits, _)"),
    store: Path = StoreOption,
    schema: Optional[Path] = SchemaOption,
    features: Optional[str] = FeaturesOption,
    replace: bool = typer.Option(False, "--replace", help="Overwrite a dataset of the same name"),
) -> None:
    """Validate a log and store it (one transaction: a failed import leaves the store unchanged).

    Prints the role of every column (feature, action, reward, pscore, group, id, timestamp,
    outcome, ignored) and why; outcome-like and id-like columns are never features unless named.
    """
    from grpokit.store import Store

    if not file.exists():
        _fail(f"log file {file} does not exist")
    try:
        with Store(store) as st:
            info = st.import_log(file, name, _with_features(_schema(schema), features), replace=replace)
    except (ValueError, KeyError) as err:
        _fail(_schema_hint(str(err)))
    except OSError as err:  # reading the log file (permission, a full disk for the store's temp files)
        _fail(f"cannot import {err.filename or file}: {err.strerror or err}; the store is left as it was")
    print_roles(info.roles)
    console.print(f"imported [bold]{name}[/] into {store}: {escape(repr(info))}")


@data_app.command("show")
def data_show(name: str = typer.Argument(..., help="A dataset in the store"), store: Path = StoreOption) -> None:
    """The role of every column of a stored dataset, as decided at import."""
    from grpokit.store import Store

    if not store.exists():
        _fail(f"store {store} does not exist")
    try:
        with Store(store, read_only=True) as st:
            roles = st.dataset_roles(name).to_dict("records")
    except ValueError as err:
        _fail(str(err))
    print_roles(roles)


@data_app.command("list")
def data_list(store: Path = StoreOption) -> None:
    """The datasets in the store."""
    from grpokit.store import Store

    if not store.exists():
        _fail(f"store {store} does not exist")
    try:
        with Store(store, read_only=True) as st:
            df = st.list_datasets()
    except ValueError as err:
        _fail(str(err))
    table = Table(title=f"datasets in {store}")
    for col in ("name", "n_rows", "n_actions", "created_at"):
        table.add_column(col)
    for _, row in df.iterrows():
        table.add_row(str(row["name"]), str(row["n_rows"]), str(row["n_actions"]), str(row["created_at"]))
    console.print(table)
