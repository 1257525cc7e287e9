"""``grpokit data``: logged decisions in the embedded DuckDB store."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from grpokit.cli._common import (
    SchemaOption,
    StoreOption,
    _fail,
    _schema,
    console,
)

data_app = typer.Typer(help="Logged decisions in the embedded DuckDB store.", no_args_is_help=True)


@data_app.command("import")
def data_import(
    file: Path = typer.Argument(..., help="A parquet or CSV file of logged decisions"),
    name: str = typer.Option(..., "--name", help="Dataset name in the store (letters, digits, _)"),
    store: Path = StoreOption,
    schema: Optional[Path] = SchemaOption,
    replace: bool = typer.Option(False, "--replace", help="Overwrite a dataset of the same name"),
) -> None:
    """Validate a log and store it (one transaction: a failed import leaves the store unchanged)."""
    from grpokit.store import Store

    if not file.exists():
        _fail(f"log file {file} does not exist")
    try:
        with Store(store) as st:
            info = st.import_log(file, name, _schema(schema), replace=replace)
    except (ValueError, KeyError) as err:
        _fail(str(err))
    console.print(f"imported [bold]{name}[/] into {store}: {info}")


@data_app.command("list")
def data_list(store: Path = StoreOption) -> None:
    """The datasets in the store."""
    from grpokit.store import Store

    if not store.exists():
        _fail(f"store {store} does not exist")
    with Store(store) as st:
        df = st.list_datasets()
    table = Table(title=f"datasets in {store}")
    for col in ("name", "n_rows", "n_actions", "created_at"):
        table.add_column(col)
    for _, row in df.iterrows():
        table.add_row(str(row["name"]), str(row["n_rows"]), str(row["n_actions"]), str(row["created_at"]))
    console.print(table)
