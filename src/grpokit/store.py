"""The embedded DuckDB store: imported decision logs and a record of runs, in one file.

``Store()`` opens (or creates) ``grpokit.duckdb`` in the working directory; ``Store(path)`` opens
another file (``":memory:"`` for a throwaway store). Inside it:

* one table per imported dataset, named after the dataset, holding the validated log in the
  schema's column names (``LoggedDecisions.to_frame()``: decision ids, group labels, features,
  action codes or labels, reward / outcomes, pscore, position, timestamp);
* ``datasets``, the catalog, one row per dataset:

  ===========  =========  ====================================================================
  column       type       meaning
  ===========  =========  ====================================================================
  name         VARCHAR    dataset name (also its table's name)
  n_rows       BIGINT     number of decisions
  n_actions    INTEGER    number of actions
  columns      VARCHAR    JSON list of ``{"name", "type"}``, the table's columns and DuckDB types
  schema       VARCHAR    JSON of the resolved :class:`~grpokit.offline.schema.LogSchema`
  created_at   TIMESTAMP  when it was imported (UTC)
  ===========  =========  ====================================================================

* ``dataset_roles``: every column of the imported input (also those left out of the table) with
  its role, kind, reason and warning flag (:func:`grpokit.offline.roles.infer_roles`), one row per
  column: ``name`` (the dataset), ``position``, ``column_name``, ``role``, ``kind``, ``reason``, ``warning``;
* ``runs``: ``run_id``, ``kind`` (e.g. ``"train"``, ``"evaluate"``), ``config`` and ``summary``
  (JSON) and ``created_at`` (UTC), one row per :meth:`Store.record_run`.

An import validates the log first (:func:`grpokit.offline.io.read_log`), then writes the table and
its catalog row in one transaction: if anything fails on the way, the store is left exactly as it
was. Dataset names match ``^[A-Za-z_][A-Za-z0-9_]*$``; like DuckDB identifiers they are compared
without regard to case, and ``datasets`` and ``runs`` are taken.

DuckDB lets one process at a time open a file for writing.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from grpokit.offline.io import read_log, validate_log
from grpokit.offline.schema import LoggedDecisions, LogSchema

__all__ = ["DEFAULT_STORE", "Store", "StoreError"]

DEFAULT_STORE = "grpokit.duckdb"
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RESERVED = ("datasets", "runs", "dataset_roles")

_CREATE = (
    """CREATE TABLE IF NOT EXISTS datasets (
        name VARCHAR NOT NULL, n_rows BIGINT NOT NULL, n_actions INTEGER NOT NULL,
        columns VARCHAR NOT NULL, schema VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS dataset_roles (
        name VARCHAR NOT NULL, position INTEGER NOT NULL, column_name VARCHAR NOT NULL, role VARCHAR NOT NULL,
        kind VARCHAR NOT NULL, reason VARCHAR NOT NULL, warning BOOLEAN NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS runs (
        run_id VARCHAR NOT NULL, kind VARCHAR NOT NULL, config VARCHAR NOT NULL,
        summary VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL)""",
)


class StoreError(ValueError):
    """A store operation that cannot be done; the message says which name and why."""


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (Path, datetime)):
        return str(obj)
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    raise TypeError(f"a {type(obj).__name__} ({obj!r}) cannot be written as JSON")


def _to_json(what: str, obj: Any) -> str:
    if hasattr(obj, "model_dump"):
        obj = obj.model_dump(mode="json")
    if not isinstance(obj, dict):
        raise StoreError(f"{what} must be a dict, got a {type(obj).__name__}")
    try:
        return json.dumps(obj, default=_json_default)
    except (TypeError, ValueError) as err:
        raise StoreError(f"{what} cannot be stored: {err}") from None


class Store:
    """An embedded DuckDB file holding imported logs (with their catalog) and a record of runs."""

    def __init__(self, path: str | Path | None = None, *, read_only: bool = False) -> None:
        self.path = str(path) if str(path) == ":memory:" else Path(DEFAULT_STORE if path is None else path)
        self.read_only = read_only and self.path != ":memory:"
        if isinstance(self.path, Path):
            if self.path.is_dir():
                raise StoreError(f"the store {str(self.path)!r} is a folder; give a store file (--store FILE.duckdb)")
            if self.read_only and not self.path.is_file():
                raise StoreError(f"the store {str(self.path)!r} does not exist: import a log first with "
                                 "'grpokit data import'")
            if not self.path.parent.is_dir():
                raise StoreError(
                    f"cannot create the store {str(self.path)!r}: folder {str(self.path.parent)!r} does not exist"
                )
        try:
            self._con: duckdb.DuckDBPyConnection | None = duckdb.connect(str(self.path), read_only=self.read_only)
        except (duckdb.Error, OSError) as err:
            raise StoreError(self._open_error(err)) from None
        for sql in _CREATE:
            if not self.read_only:
                self._con.execute(sql)
            else:  # reading a store that never had this table: an empty one, in memory only
                table = sql.split("EXISTS", 1)[1].split("(", 1)[0].strip()
                if not self._table_exists(table):
                    self._con.execute(sql.replace("CREATE TABLE IF NOT EXISTS", "CREATE TEMP TABLE"))

    def _open_error(self, err: BaseException) -> str:
        """What really stopped the store from opening, in words (format, permission, lock, disk)."""
        text = str(err)
        where = f"the store {str(self.path)!r}"
        if "not a valid DuckDB database" in text:
            return (f"{where} is not a DuckDB database (a grpokit store file): give the right file with "
                    "--store, or a new file name to start a store")
        if isinstance(err, PermissionError) or "Permission denied" in text:
            need = "read" if self.read_only else "read and write"
            return f"cannot open {where}: permission denied (this command needs {need} access to the file and its folder)"
        if "lock" in text.lower():
            holder = re.search(r"held in (.*?) \(PID (\d+)\)", text)
            who = f" (PID {holder.group(2)}, {holder.group(1)})" if holder else ""
            return (f"{where} is in use by another process{who}: DuckDB lets one process write a store at a "
                    "time and no one read it meanwhile; wait for that process to finish, then run this again")
        if "No space left" in text:
            return f"cannot open {where}: the disk is full; free some space"
        return f"cannot open {where}: {text}"

    # ------------------------------------------------------------------------------ plumbing

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The open DuckDB connection (for your own queries)."""
        if self._con is None:
            raise StoreError(f"the store {str(self.path)!r} is closed")
        return self._con

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}{'' if self._con is not None else ', closed'})"

    @staticmethod
    def _check_name(name: Any) -> str:
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise StoreError(
                f"bad dataset name {name!r}: use letters, digits and _, not starting with a digit "
                "(it must match ^[A-Za-z_][A-Za-z0-9_]*$)"
            )
        if name.lower() in _RESERVED:
            raise StoreError(f"dataset name {name!r} is taken by the store's own {name.lower()!r} table; pick another")
        return name

    def _catalog_name(self, name: str) -> str | None:
        row = self.con.execute("SELECT name FROM datasets WHERE lower(name) = lower(?)", [name]).fetchone()
        return None if row is None else row[0]

    def _table_exists(self, name: str) -> bool:
        row = self.con.execute(
            "SELECT count(*) FROM information_schema.tables"
            " WHERE table_schema = 'main' AND lower(table_name) = lower(?)",
            [name],
        ).fetchone()
        return bool(row[0])

    def _rollback(self) -> None:
        """Undo the open transaction. DuckDB may already have aborted it itself (a write error such as
        a full disk ends it), so "no transaction is active" is not an error here: the store must take
        the next operation."""
        try:
            self.con.execute("ROLLBACK")
        except duckdb.Error:
            pass

    def _write_error(self, what: str, err: BaseException) -> str:
        text = str(err)
        why = "the disk is full; free some space and run it again" if "No space left" in text else text
        if "Permission denied" in text or "read-only" in text.lower():
            why = "the store file or its folder is read-only (permission denied)"
        return f"{what} into the store {str(self.path)!r} failed: {why}; the store is left as it was"

    def _after_table_write(self, name: str) -> None:
        """Runs inside the import transaction once the table is written (a seam for tests)."""

    # ------------------------------------------------------------------------------ datasets

    def import_log(self, source: Any, name: str, schema: LogSchema | None = None, replace: bool = False, *,
                   table: str | None = None, con: Any = None) -> LoggedDecisions:
        """Validate a log (anything :func:`~grpokit.offline.io.read_log` reads) and store it as ``name``.

        The table and its catalog row are written in one transaction: on any error the store is
        left as it was. An existing ``name`` is an error unless ``replace=True``. Returns the
        validated log.
        """
        self._check_name(name)
        if self.read_only:
            raise StoreError(f"the store {str(self.path)!r} was opened read-only; open it with Store(path) to import")
        log = read_log(source, schema, table=table, con=con)
        frame = log.to_frame()
        c = self.con
        view = f"__grpokit_import_{uuid.uuid4().hex}"
        c.register(view, frame)
        try:
            c.execute("BEGIN TRANSACTION")
            try:
                old = self._catalog_name(name)
                if old is not None and not replace:
                    n_rows, created = c.execute(
                        "SELECT n_rows, created_at FROM datasets WHERE name = ?", [old]).fetchone()
                    raise StoreError(
                        f"dataset {old!r} already exists ({n_rows} rows, imported {created}); "
                        "pass replace=True (--replace on the command line) to overwrite it"
                    )
                if old is None and self._table_exists(name):
                    raise StoreError(f"the store has a table {name!r} that is not a dataset; pick another name")
                if old is not None:
                    c.execute(f"DROP TABLE {_quote(old)}")
                    c.execute("DELETE FROM datasets WHERE name = ?", [old])
                    c.execute("DELETE FROM dataset_roles WHERE name = ?", [old])
                c.execute(f"CREATE TABLE {_quote(name)} AS SELECT * FROM {_quote(view)}")
                self._after_table_write(name)
                columns = [{"name": r[0], "type": r[1]} for r in c.execute(f"DESCRIBE {_quote(name)}").fetchall()]
                c.execute(
                    "INSERT INTO datasets VALUES (?, ?, ?, ?, ?, ?)",
                    [name, len(log), log.n_actions, json.dumps(columns), log.schema.model_dump_json(), _now()],
                )
                if log.roles:
                    c.executemany("INSERT INTO dataset_roles VALUES (?, ?, ?, ?, ?, ?, ?)", [
                        [name, i, r["column"], r["role"], r["kind"], r["reason"], bool(r["warning"])]
                        for i, r in enumerate(log.roles)])
                c.execute("COMMIT")
            except duckdb.Error as err:
                self._rollback()
                raise StoreError(self._write_error(f"the import of {name!r}", err)) from None
            except BaseException:
                self._rollback()
                raise
        finally:
            try:
                c.unregister(view)
            except duckdb.Error:
                pass
        return log

    def list_datasets(self) -> pd.DataFrame:
        """The catalog: name, n_rows, n_actions, columns (list), schema (dict), created_at; oldest first."""
        df = self.con.execute(
            "SELECT name, n_rows, n_actions, columns, schema, created_at FROM datasets ORDER BY created_at, rowid"
        ).df()
        df["columns"] = [json.loads(v) for v in df["columns"]]
        df["schema"] = [json.loads(v) for v in df["schema"]]
        return df

    def dataset_roles(self, name: str) -> pd.DataFrame:
        """The role of every column of dataset ``name`` at import: column, role, kind, reason, warning."""
        self._check_name(name)
        stored = self._catalog_name(name)
        if stored is None:
            raise StoreError(f"no dataset {name!r} in the store {str(self.path)!r}")
        return self.con.execute(
            "SELECT column_name AS column, role, kind, reason, warning FROM dataset_roles WHERE name = ? ORDER BY position",
            [stored]).df()

    def load_log(self, name: str) -> LoggedDecisions:
        """A stored dataset, validated again against the schema it was imported with."""
        self._check_name(name)
        row = self.con.execute("SELECT name, schema FROM datasets WHERE lower(name) = lower(?)", [name]).fetchone()
        if row is None:
            known = [r[0] for r in self.con.execute("SELECT name FROM datasets ORDER BY name").fetchall()]
            raise StoreError(f"no dataset {name!r} in the store {str(self.path)!r}; datasets: {known}")
        stored, schema_json = row
        frame = self.con.execute(f"SELECT * FROM {_quote(stored)}").df()
        return validate_log(frame, LogSchema.model_validate_json(schema_json))

    # ------------------------------------------------------------------------------ runs

    def record_run(self, run_id: str, kind: str, config: dict, summary: dict) -> None:
        """Record a run: its id (unique), kind, config and summary (dicts, written as JSON)."""
        if not isinstance(run_id, str) or not run_id:
            raise StoreError(f"run_id must be a non-empty string, got {run_id!r}")
        if not isinstance(kind, str) or not kind:
            raise StoreError(f"kind must be a non-empty string, got {kind!r}")
        if self.read_only:
            raise StoreError(f"the store {str(self.path)!r} was opened read-only; open it with Store(path) to record runs")
        config_json = _to_json("config", config)
        summary_json = _to_json("summary", summary)
        c = self.con
        c.execute("BEGIN TRANSACTION")
        try:
            if c.execute("SELECT count(*) FROM runs WHERE run_id = ?", [run_id]).fetchone()[0]:
                raise StoreError(f"run {run_id!r} is already recorded; give each run its own id")
            c.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?)", [run_id, kind, config_json, summary_json, _now()])
            c.execute("COMMIT")
        except duckdb.Error as err:
            self._rollback()
            raise StoreError(self._write_error(f"recording run {run_id!r}", err)) from None
        except BaseException:
            self._rollback()
            raise

    def list_runs(self, kind: str | None = None) -> pd.DataFrame:
        """Recorded runs (optionally of one kind): run_id, kind, config (dict), summary (dict), created_at."""
        sql = "SELECT run_id, kind, config, summary, created_at FROM runs"
        params: list[Any] = []
        if kind is not None:
            sql += " WHERE kind = ?"
            params.append(kind)
        df = self.con.execute(sql + " ORDER BY created_at, rowid", params).df()
        df["config"] = [json.loads(v) for v in df["config"]]
        df["summary"] = [json.loads(v) for v in df["summary"]]
        return df
