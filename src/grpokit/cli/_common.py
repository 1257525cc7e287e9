"""Shared pieces of the ``grpokit`` command: the root app, consoles, options, error exit, store helpers."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

app = typer.Typer(
    help="Group-relative policy optimization (GRPO, P-GRPO) for personalized business decisions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

console = Console()
err_console = Console(stderr=True, soft_wrap=True)

StoreOption = typer.Option(Path("grpokit.duckdb"), "--store", help="The DuckDB store file")
SetOption = typer.Option(
    None, "--set", help="Override a config key: section.key=value (repeatable), e.g. --set grpo.lr=0.001"
)


def _fail(message: str, code: int = 2) -> None:
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(message)}")  # [0, 1] in a message is text, not markup
    raise typer.Exit(code)


def _write_json(path: Path, data: dict) -> None:
    from grpokit.atomic import atomic_write_json

    check_output(path)
    try:
        atomic_write_json(path, data)
    except OSError as err:
        _fail(f"cannot write {path}: {err.strerror or err}")


def check_output(path: Optional[Path], what: str = "--json") -> None:
    """Fail now, before any work, if ``path`` cannot be written (a folder, a read-only or missing place)."""
    from grpokit.atomic import check_writable

    if path is None:
        return
    if path.is_dir():
        _fail(f"{what} {path} is a folder; give a file name (e.g. {path / 'result.json'})")
    try:
        check_writable(path.parent, f"the folder of {what} {path}")
    except OSError as err:
        _fail(err.strerror or str(err))


def _load(config: Optional[Path], overrides: Optional[List[str]]):
    from grpokit.config import ConfigError, load_config

    try:
        return load_config(config, overrides or [])
    except ConfigError as err:
        _fail(str(err))


SchemaOption = typer.Option(None, "--schema", help="TOML file mapping your column names (LogSchema keys)")


def _schema(path: Optional[Path], schema_class=None):
    """The schema (``LogSchema`` by default, or ``schema_class``) read from a TOML file, or None."""
    import tomllib
    from pydantic import ValidationError

    if schema_class is None:
        from grpokit.offline.schema import LogSchema as schema_class
    if path is None:
        return None
    if not path.is_file():
        _fail(f"schema file {path} does not exist")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        _fail(f"schema file {path} is not a text (UTF-8) TOML file")
    except tomllib.TOMLDecodeError as err:
        _fail(f"schema file {path}: {err}")
    try:
        schema = schema_class(**data)
    except (ValidationError, ValueError) as err:
        _fail(f"schema file {path}: {err}")
    missing = [k for k in getattr(schema_class, "FILE_REQUIRED", ()) if k not in data]
    if missing:  # the defaults may be meant (a log written by grpokit), so say it loudly, do not refuse
        from rich.markup import escape

        used = "; ".join(f"{k} = {getattr(schema, k)!r}" for k in missing)
        err_console.print(f"[bold yellow]warning:[/] schema file {escape(str(path))} does not give "
                          f"{', '.join(missing)}: using the defaults ({escape(used)}); name your log's columns "
                          "there if these are not them")
    return schema


def _read_log(log: Optional[Path], dataset: Optional[str], store: Path, schema: Optional[Path]):
    from grpokit.offline.io import read_log
    from grpokit.store import Store

    if (log is None) == (dataset is None):
        _fail("give exactly one of --log FILE or --dataset NAME")
    try:
        if log is not None:
            if not log.exists():
                _fail(f"log file {log} does not exist")
            return read_log(log, _schema(schema))
        if not store.exists():
            _fail(f"store {store} does not exist: import a log first with 'grpokit data import'")
        with Store(store, read_only=True) as st:
            return st.load_log(dataset)
    except (ValueError, KeyError, FileNotFoundError) as err:
        _fail(str(err))
    except OSError as err:
        _fail(f"cannot read {err.filename or log}: {err.strerror or err}")


def _record(store: Path, kind: str, run_id: str, config: dict, summary: dict) -> None:
    from grpokit.store import Store

    try:
        with Store(store) as st:
            st.record_run(run_id, kind, config, summary)
    except Exception as err:  # noqa: BLE001 - recording is best effort: the result is already written
        err_console.print(f"[yellow]warning:[/] the run was not recorded in {store}: {err}")
