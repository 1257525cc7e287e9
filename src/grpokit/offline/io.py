"""Read logged decisions from a DataFrame, a Parquet or CSV file, or a DuckDB table, and validate them.

:func:`read_log` loads the rows and :func:`validate_log` checks them against a
:class:`~grpokit.offline.schema.LogSchema` and builds the arrays of a
:class:`~grpokit.offline.schema.LoggedDecisions`. The columns a log may have:

==============  ==================  ===========================================================
role            default column      type and meaning
==============  ==================  ===========================================================
decision_id     ``decision_id``     unique id (int or str); generated 0..n-1 when absent
features        unassigned numeric  numeric context features -> float64 ``[n, d]``
group           ``group``           optional cohort labels -> int codes + ``group_labels``
action          ``action``          int codes 0..n_actions-1, or labels listed in ``actions``
reward          ``reward``          float reward (optional when ``outcomes`` are named)
outcomes        (none)              several named float outcome columns
pscore          ``pscore``          logging propensity of the logged action, in (0, 1]
position        ``position``        optional integer slot / rank
timestamp       ``timestamp``       optional datetime (or numeric epoch)
==============  ==================  ===========================================================

(:mod:`grpokit.offline.schema` explains every role and default in full.)

Every problem is a :class:`LogValidationError` (a ``ValueError``) whose message names the column,
the first offending row -- its 0-based position in the log *and* its decision id -- the value,
and how many more rows have the same problem; the same facts are on the exception as
``column``, ``row``, ``decision_id`` and ``value``. What is checked:

* the input is not empty, and every column the schema needs is there (the message lists the
  missing ones and the available ones);
* decision ids are present and unique (a duplicate names both rows);
* features, reward, outcomes and propensities are numbers, with no NaN or inf; a column that mixes
  numbers and text (e.g. ``"n/a"`` in a numeric column) is an error, and so is a text column named
  as a feature -- encode categories yourself (one-hot or integer codes) first: grpokit does not
  guess an encoding. Left to its default, ``features`` simply leaves out text and datetime
  columns (see ``LoggedDecisions.ignored_columns``);
* actions are integers in ``0..n_actions-1``, or labels listed in ``LogSchema.actions``;
* propensities lie in (0, 1];
* positions are integers, timestamps are readable dates (or numbers), groups have no gaps.

CSV files carry no types: pandas infers them, so ids like ``"007"`` come back as ``7``. Prefer
Parquet or DuckDB when that matters.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from grpokit.offline.schema import LoggedDecisions, LogSchema

__all__ = ["LogValidationError", "read_log", "validate_log"]

_TABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*){0,2}$")
_PARQUET = (".parquet", ".pq")
_CSV = (".csv", ".csv.gz")
_DUCKDB = (".duckdb", ".ddb", ".db")


class LogValidationError(ValueError):
    """A log that cannot be used; the message names the column, the row, its decision id and the value."""

    def __init__(self, message: str, *, column: str | None = None, row: int | None = None,
                 decision_id: Any = None, value: Any = None) -> None:
        super().__init__(message)
        self.column = column
        self.row = row
        self.decision_id = decision_id
        self.value = value


# --------------------------------------------------------------------------------------- reading


def read_log(source: Any, schema: LogSchema | None = None, *, table: str | None = None,
             con: Any = None) -> LoggedDecisions:
    """Read and validate a decision log.

    ``source`` is one of:

    * a pandas DataFrame;
    * a path to a ``.parquet`` / ``.pq`` or ``.csv`` / ``.csv.gz`` file;
    * a DuckDB table name together with ``con`` -- an open ``duckdb`` connection or the path of a
      database file (``read_log("events", con="shop.duckdb")``); ``schema.table`` names work too;
    * a path to a DuckDB database file (``.duckdb``, ``.ddb``, ``.db``) together with ``table``.

    ``schema`` defaults to ``LogSchema()`` (columns named ``action``, ``reward``, ``pscore``, ...).
    """
    schema = LogSchema() if schema is None else schema
    return validate_log(_load_frame(source, table=table, con=con), schema)


def _load_frame(source: Any, *, table: str | None, con: Any) -> pd.DataFrame:
    if isinstance(source, pd.DataFrame):
        if table is not None or con is not None:
            raise LogValidationError("table= and con= are for DuckDB sources; a DataFrame needs neither")
        return source
    if con is not None:
        if source is not None and table is not None:
            raise LogValidationError(f"give the table name once: as source ({source!r}) or as table= ({table!r})")
        return _read_duckdb(con, table if table is not None else source)
    if source is None:
        raise LogValidationError("no source: give a DataFrame, a .parquet/.csv path, or a table name with con=")
    if not isinstance(source, (str, os.PathLike)):
        raise LogValidationError(
            f"cannot read a log from a {type(source).__name__}: give a DataFrame, a .parquet/.csv path, "
            "or a DuckDB table name with con="
        )
    path = Path(source)
    name = path.name.lower()
    if path.is_dir():
        raise LogValidationError(f"log file {str(path)!r} is a folder; give a .parquet or .csv file")
    if table is not None:
        if not name.endswith(_DUCKDB):
            raise LogValidationError(
                f"table={table!r} names a table in a DuckDB database, but {str(path)!r} is not a DuckDB file "
                f"({', '.join(_DUCKDB)}); to read a table from an open connection pass con="
            )
        return _read_duckdb(path, table)
    if name.endswith(_DUCKDB):
        raise LogValidationError(f"{str(path)!r} is a DuckDB database: name its table (read_log(path, table='...'); "
                                 "on the command line export it to Parquet first, or import it with --table where "
                                 "the command has one)")
    if not name.endswith(_PARQUET + _CSV):
        if not path.suffix and not path.exists() and _TABLE_RE.match(str(source)):
            raise LogValidationError(
                f"{str(source)!r} is not a file; to read a DuckDB table pass its database: "
                f"read_log({str(source)!r}, con=connection_or_path) (--table on the command line)"
            )
        raise LogValidationError(
            f"cannot read {str(path)!r}: unsupported file type {path.suffix or '(no suffix)'!r}; "
            "use .parquet, .csv, a pandas DataFrame, or a DuckDB table (table=..., con=...)"
        )
    if not path.is_file():
        raise FileNotFoundError(f"log file {str(path)!r} does not exist")
    if name.endswith(_PARQUET):
        try:
            return pd.read_parquet(path)
        except (OSError, ValueError, TypeError) as err:  # pyarrow's ArrowInvalid is a ValueError
            if isinstance(err, PermissionError):
                raise
            raise LogValidationError(f"cannot read {str(path)!r} as Parquet: {str(err).splitlines()[0]}; "
                                     "is it a Parquet file?") from None
    return _read_csv(path)


def _read_csv(path: Path) -> pd.DataFrame:
    """A CSV file as a DataFrame: UTF-8 text (a BOM is fine), no column name twice."""
    import csv
    import gzip
    import io

    raw = path.read_bytes()
    if path.name.lower().endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise LogValidationError(f"cannot read {str(path)!r}: not a gzip file ({err})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise LogValidationError(
            f"{str(path)!r} is not UTF-8 text: line {line} has the byte {raw[err.start]:#04x} (offset {err.start}); "
            "save the file as UTF-8 (e.g. 'CSV UTF-8' in Excel, or iconv -f latin1 -t utf-8), or write it as Parquet"
        ) from None
    header = next(csv.reader(io.StringIO(text.split("\n", 1)[0])), [])
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise LogValidationError(
                f"{str(path)!r}: column {name!r} appears more than once in the header; rename one of them "
                "(a CSV reader would silently rename the copy)", column=name)
        seen.add(name)
    try:
        return pd.read_csv(io.StringIO(text))
    except pd.errors.EmptyDataError:
        raise LogValidationError(f"the log is empty: {str(path)!r} has no rows and no columns") from None
    except pd.errors.ParserError as err:
        raise LogValidationError(f"cannot read {str(path)!r} as CSV: {str(err).strip()}") from None


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _read_duckdb(con: Any, table: Any) -> pd.DataFrame:
    import duckdb

    if not isinstance(table, str) or not _TABLE_RE.match(table):
        raise LogValidationError(
            f"bad DuckDB table name {table!r}: use letters, digits and _ (not starting with a digit), "
            "optionally qualified as schema.table"
        )
    quoted = ".".join(_quote(part) for part in table.split("."))
    own = False
    if isinstance(con, (str, os.PathLike)):
        path = Path(con)
        if not path.is_file():
            raise FileNotFoundError(f"DuckDB database {str(path)!r} does not exist")
        try:
            connection = duckdb.connect(str(path), read_only=True)
        except duckdb.Error:  # already open read-write in this process: share that instance
            connection = duckdb.connect(str(path))
        own = True
    elif isinstance(con, duckdb.DuckDBPyConnection):
        connection = con
    else:
        raise LogValidationError(f"con must be a duckdb connection or a database path, got a {type(con).__name__}")
    try:
        try:
            return connection.execute(f"SELECT * FROM {quoted}").df()
        except duckdb.CatalogException:
            tables = [r[0] for r in connection.execute(
                "SELECT table_name FROM information_schema.tables ORDER BY table_name").fetchall()]
            raise LogValidationError(f"no table {table!r} in the DuckDB database; its tables: {tables}") from None
    finally:
        if own:
            connection.close()


# ------------------------------------------------------------------------------------ validation


def _py(v: Any) -> Any:
    """A value as plain Python, for messages and labels (np.float64(0.5) -> 0.5)."""
    return v.item() if isinstance(v, np.generic) else v


class _Rows:
    """Words row references (position and decision id) in validation errors; subclasses change the id."""

    error = LogValidationError

    def __init__(self, ids: np.ndarray | None) -> None:
        self.ids = ids

    def where(self, i: int) -> tuple[str, dict]:
        """The words for row ``i`` and the id fields of the error."""
        did = None if self.ids is None else _py(self.ids[i])
        return f"row {i}" + ("" if self.ids is None else f" (decision id {did!r})"), {"decision_id": did}

    def fail(self, column: str | None, i: int, problem: str, *, value: Any = None, more: int = 0,
             hint: str = "") -> LogValidationError:
        where, ids = self.where(i)
        msg = (f"column {column!r}, " if column is not None else "") + f"{where}: {problem}"
        if more > 0:
            msg += f" ({more} more row{'s' if more > 1 else ''} with the same problem)"
        if hint:
            msg += f"; {hint}"
        return self.error(msg, column=column, row=i, value=_py(value), **ids)

    def first(self, column: str, bad: np.ndarray, problem, values, *, hint: str = "") -> None:
        """Raise for the first True in ``bad``; ``problem(value)`` words it."""
        if bad.any():
            idx = np.flatnonzero(bad)
            i = int(idx[0])
            v = _py(values[i])
            raise self.fail(column, i, problem(v), value=v, more=len(idx) - 1, hint=hint)


def validate_log(df: pd.DataFrame, schema: LogSchema | None = None) -> LoggedDecisions:
    """Check a DataFrame against ``schema`` and return its validated arrays.

    Raises :class:`LogValidationError` naming the column, the first offending row (0-based position
    and decision id) and the value; see the module docstring for the list of checks.
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"validate_log takes a pandas DataFrame, got a {type(df).__name__}; read_log reads files")
    schema = LogSchema() if schema is None else schema
    if len(df) == 0:
        cols = list(df.columns)
        raise LogValidationError("the log is empty: no rows" + (f" (columns: {cols})" if cols else " and no columns"))
    not_text = [c for c in df.columns if not isinstance(c, str)]
    if not_text:
        raise LogValidationError(f"column names must be text, got {not_text!r}; rename them (df.columns = ...)")
    doubled = df.columns[df.columns.duplicated()].tolist()
    if doubled:
        raise LogValidationError(f"column {doubled[0]!r} appears more than once")

    roles, feature_names, ignored, column_roles = _resolve(df, schema)
    n = len(df)
    ids = _decision_ids(df, roles["decision_id"])
    rows = _Rows(ids)

    from grpokit.offline import roles as _roles

    all_features = list(feature_names)
    kinds = {r.column: r.kind for r in column_roles if r.role == "feature"}
    categorical = {c: _roles.category_values(df[c], c, rows) for c in all_features if kinds.get(c) == "category"}
    feature_names = [c for c in all_features if c not in categorical]
    features = np.zeros((n, len(feature_names)), dtype=np.float64)
    for j, col in enumerate(feature_names):
        s = df[col]
        if kinds.get(col) == "datetime":  # named in features on purpose: days since 1970-01-01
            s = pd.Series(_timestamps(s, col, rows)).astype("datetime64[us]").astype(np.int64) / 86_400e6
        features[:, j] = _floats(s, col, rows, "feature",
                                 hint="give numbers, booleans or text labels, or leave it out of features")

        _not_huge(features[:, j], col, rows, "feature")
    if not all_features:
        left = f" (left out: {ignored})" if ignored else ""
        raise LogValidationError(
            f"the log has no feature columns{left}: a policy would see nothing to personalize on; name the "
            "context columns in the schema's features (or --features a,b,c)"
        )

    action, n_actions = _actions(df[schema.action], schema.action, rows, schema)

    reward = None
    if roles["reward"] is not None:
        reward = _floats(df[roles["reward"]], roles["reward"], rows, "reward")
        _not_huge(reward, roles["reward"], rows, "reward")
    outcomes = {c: _floats(df[c], c, rows, "outcome") for c in schema.outcomes}
    for c, v in outcomes.items():
        _not_huge(v, c, rows, "outcome")

    pscore = _floats(df[schema.pscore], schema.pscore, rows, "propensity")
    rows.first(schema.pscore, (pscore <= 0) | (pscore > 1),
               lambda v: f"propensity {v!r} is outside (0, 1]", pscore,
               hint="pscore is the logging policy's probability of the logged action")
    rows.first(schema.pscore, pscore < MIN_PSCORE,
               lambda v: f"propensity {v!r} is implausibly small (below {MIN_PSCORE:g}: its importance weight "
               f"would exceed {1 / MIN_PSCORE:g})", pscore,
               hint="check the column holds probabilities, not log-probabilities, or leave such rows out")

    group = group_labels = None
    if roles["group"] is not None:
        group, group_labels = _groups(df[roles["group"]], roles["group"], rows, schema.groups)

    position = None
    if roles["position"] is not None:
        position = _integers(df[roles["position"]], roles["position"], rows, "position")

    timestamp = None
    if roles["timestamp"] is not None:
        timestamp = _timestamps(df[roles["timestamp"]], roles["timestamp"], rows)

    taken = set(all_features) | set(schema.outcomes) | {v for v in roles.values() if v is not None}
    id_name = roles["decision_id"] or _free_name("decision_id", taken)
    resolved = LogSchema(
        decision_id=id_name,
        features=all_features,
        group=roles["group"],
        action=schema.action,
        reward=roles["reward"],
        outcomes=list(schema.outcomes),
        pscore=schema.pscore,
        position=roles["position"],
        timestamp=roles["timestamp"],
        n_actions=n_actions,
        actions=None if schema.actions is None else list(schema.actions),
        groups=group_labels,
        reward_unit=schema.reward_unit,
    )
    return LoggedDecisions(
        decision_id=ids,
        features=features,
        feature_names=list(feature_names),
        action=action,
        pscore=pscore,
        n_actions=n_actions,
        reward=reward,
        outcomes=outcomes,
        group=group,
        group_labels=group_labels,
        position=position,
        timestamp=timestamp,
        action_labels=None if schema.actions is None else list(schema.actions),
        schema=resolved,
        ignored_columns=ignored,
        categorical=categorical,
        feature_kinds={c: ("bool" if kinds.get(c) == "bool" else "number") for c in feature_names},
        roles=[r.to_dict() for r in column_roles],
    )


def _free_name(base: str, taken: set[str]) -> str:
    name = base
    while name in taken:
        name = "_" + name
    return name


def _resolve(df: pd.DataFrame, schema: LogSchema) -> tuple[dict[str, str | None], list[str], list[str], list]:
    """Which column plays which role (+ every column's ColumnRole); missing columns are one error listing them all."""
    cols = list(df.columns)
    present = set(cols)
    explicit = schema.model_fields_set
    claimed = set(schema.features or []) | set(schema.outcomes) | {schema.action, schema.pscore}
    claimed |= {getattr(schema, r) for r in LogSchema.OPTIONAL_ROLES if r in explicit}
    missing: list[tuple[str, str]] = []
    roles: dict[str, str | None] = {}
    for role in LogSchema.OPTIONAL_ROLES:
        name = getattr(schema, role)
        if name is None:
            roles[role] = None
        elif role in explicit:
            roles[role] = name
            if name not in present:
                missing.append((name, role))
        else:  # a default name: used when there and not named for something else
            roles[role] = name if name in present and name not in claimed else None
    if roles["reward"] is None and not schema.outcomes:
        if schema.reward in present:  # the default name, but the column is claimed by another role
            raise LogValidationError(
                f"column {schema.reward!r} is named for another role, so the log has no reward; "
                "name the reward column (reward=...) or list outcome columns in outcomes",
                column=schema.reward,
            )
        missing.append((schema.reward, "reward; or list outcome columns in outcomes"))
    for role in ("action", "pscore"):
        if getattr(schema, role) not in present:
            missing.append((getattr(schema, role), role))
    missing += [(c, "outcome") for c in schema.outcomes if c not in present]
    if schema.features is not None:
        missing += [(c, "feature") for c in schema.features if c not in present]
    if missing:
        listed = ", ".join(f"{c!r} ({role})" for c, role in missing)
        raise LogValidationError(
            f"missing column{'s' if len(missing) > 1 else ''} {listed}; available columns: {cols}",
            column=missing[0][0],
        )

    from grpokit.offline.roles import infer_roles

    inferred = infer_roles(df, schema, roles)
    if schema.features is not None:
        return roles, list(schema.features), [r.column for r in inferred if r.role == "ignored"], inferred
    features = [r.column for r in inferred if r.role == "feature"]
    left_out = {"ignored", "id", "outcome", "timestamp"}
    assigned = {v for v in roles.values() if v is not None}
    ignored = [r.column for r in inferred if r.role in left_out and r.column not in assigned]
    return roles, features, ignored, inferred


def _parses(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.number, np.bool_))


def _all_non_numeric(s: pd.Series) -> bool:
    """True for text / datetime columns with no numbers at all (left out of the default features)."""
    if ptypes.is_bool_dtype(s) or ptypes.is_numeric_dtype(s):
        return False
    if ptypes.is_datetime64_any_dtype(s) or ptypes.is_timedelta64_dtype(s):
        return True
    vals = s.to_numpy(dtype=object)
    present = ~pd.isna(vals)
    if not present.any():
        return False
    numeric_like = np.fromiter((_is_number(v) or (isinstance(v, str) and _parses(v)) for v in vals), bool, len(vals))
    return not (numeric_like & present).any()


def _floats(s: pd.Series, col: str, rows: _Rows, what: str, *, hint: str = "") -> np.ndarray:
    """A numeric column as float64, with no NaN/inf; text, mixed types and dates are errors."""
    if ptypes.is_bool_dtype(s) or (ptypes.is_numeric_dtype(s) and not ptypes.is_complex_dtype(s)):
        values = s.to_numpy(dtype=np.float64, na_value=np.nan)
    elif ptypes.is_datetime64_any_dtype(s) or ptypes.is_timedelta64_dtype(s):
        raise rows.fail(col, 0, f"{what} column holds dates ({s.iloc[0]!r}), not numbers",
                        value=s.iloc[0], hint=hint or "convert it to numbers first")
    else:
        vals = s.to_numpy(dtype=object)
        present = ~pd.isna(vals)
        is_num = np.fromiter((_is_number(v) for v in vals), bool, len(vals))
        is_str = np.fromiter((isinstance(v, str) for v in vals), bool, len(vals))
        parses = is_num | np.fromiter((isinstance(v, str) and _parses(v) for v in vals), bool, len(vals))
        non_numeric = present & ~parses
        if non_numeric.any():
            if (present & parses).any():
                rows.first(col, non_numeric, lambda v: f"mixed types: {v!r} among numbers in a {what} column",
                           vals, hint="every value must be a number")
            rows.first(col, non_numeric, lambda v: f"{what} column is not numeric: {v!r}", vals,
                       hint=hint or "give numbers")
        if (is_num & present).any() and is_str.any():
            rows.first(col, is_str, lambda v: f"mixed types: text {v!r} among numbers in a {what} column",
                       vals, hint="give numbers, not text")
        values = np.array([float(v) if p else np.nan for v, p in zip(vals, present)], dtype=np.float64)
    rows.first(col, ~np.isfinite(values),
               lambda v: f"{what} value {v!r} is not finite (NaN, missing values and inf are not allowed)", values)
    return values


def _integers(s: pd.Series, col: str, rows: _Rows, what: str, *, hint: str = "") -> np.ndarray:
    if ptypes.is_integer_dtype(s) and not s.isna().any():
        return s.to_numpy(dtype=np.int64)
    values = _floats(s, col, rows, what, hint=hint)
    rows.first(col, values != np.round(values), lambda v: f"non-integer {what} {v!r}", values, hint=hint)
    return values.astype(np.int64)


def _decision_ids(df: pd.DataFrame, col: str | None) -> np.ndarray:
    n = len(df)
    if col is None:
        return np.arange(n, dtype=np.int64)
    s = df[col]
    no_ids = _Rows(None)
    vals = s.to_numpy(dtype=object)
    no_ids.first(col, pd.isna(vals), lambda v: f"missing decision id ({v!r})", vals)
    if ptypes.is_bool_dtype(s):
        raise no_ids.fail(col, 0, "decision ids must be integers or text, not booleans", value=s.iloc[0])
    if ptypes.is_integer_dtype(s):
        ids = s.to_numpy(dtype=np.int64)
    elif ptypes.is_float_dtype(s):
        f = s.to_numpy(dtype=np.float64)
        no_ids.first(col, (f != np.round(f)) | ~np.isfinite(f), lambda v: f"decision id {v!r} is not an integer", f,
                     hint="decision ids must be integers or text")
        ids = f.astype(np.int64)
    else:
        is_str = np.fromiter((isinstance(v, str) for v in vals), bool, n)
        is_int = np.fromiter((isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
                              for v in vals), bool, n)
        if is_str.all():
            ids = vals.astype(object)
        elif is_int.all():
            ids = vals.astype(np.int64)
        else:
            odd = ~is_str if is_str[0] else ~is_int
            kind = "text" if is_str[0] else "integer"
            no_ids.first(col, odd, lambda v: f"mixed types: decision id {v!r} ({type(v).__name__}) among {kind} ids",
                         vals, hint="decision ids must be integers or text")
    dup = pd.Series(ids).duplicated(keep="first").to_numpy()
    if dup.any():
        j = int(np.flatnonzero(dup)[0])
        v = _py(ids[j])
        i = int(np.flatnonzero(ids == ids[j])[0])
        raise LogValidationError(
            f"column {col!r}: duplicate decision id {v!r} at rows {i} and {j}"
            + (f" ({int(dup.sum()) - 1} more duplicate rows)" if dup.sum() > 1 else ""),
            column=col, row=j, decision_id=v, value=v,
        )
    return ids


def _actions(s: pd.Series, col: str, rows: _Rows, schema: LogSchema) -> tuple[np.ndarray, int]:
    vals = s.to_numpy(dtype=object)
    rows.first(col, pd.isna(vals), lambda v: f"missing action ({v!r})", vals)
    if schema.actions is not None:
        codes = _map_labels(s, col, rows, schema.actions, "action")
        return codes, len(schema.actions)
    hint = "actions must be integer codes 0..n_actions-1"
    if not (ptypes.is_numeric_dtype(s) or ptypes.is_bool_dtype(s)) and _all_non_numeric(s):
        found = sorted(map(str, pd.unique(vals)))
        shown = found[:10] + (["..."] if len(found) > 10 else [])
        rows.first(col, np.ones(len(s), bool), lambda v: f"non-integer action {v!r}", vals,
                   hint=hint + f"; for text labels pass LogSchema(actions=[...]) listing them in code order "
                   f"(found {shown})")
    action = _integers(s, col, rows, "action", hint=hint)
    rows.first(col, action < 0, lambda v: f"unknown action {v!r}: actions are codes 0..n_actions-1", action)
    if schema.n_actions is None:
        _contiguous(action, col, rows)
    n_actions = schema.n_actions if schema.n_actions is not None else int(action.max()) + 1
    rows.first(col, action >= n_actions,
               lambda v: f"unknown action {v!r}: outside 0..{n_actions - 1} (n_actions={n_actions})", action)
    if n_actions < 2:
        raise LogValidationError(
            f"column {col!r}: the log has a single action (n_actions={n_actions}): there is nothing to choose "
            "between; a policy needs at least two actions (declare n_actions or actions in the schema if the log "
            "only shows one of them)", column=col)
    return action, n_actions


def _contiguous(action: np.ndarray, col: str, rows: _Rows) -> None:
    """Undeclared action codes must be 0..max with none missing: a gap is a typo or a hidden action set."""
    codes = np.unique(action)
    if len(codes) == codes[-1] + 1:
        return
    first_gap = int(np.flatnonzero(codes != np.arange(len(codes)))[0])
    after = int(codes[first_gap])  # the smallest code above the first unused one
    shown = ", ".join(map(str, codes[:12].tolist())) + (", ..." if len(codes) > 12 else "")
    unused = f"{first_gap}" if after == first_gap + 1 else f"{first_gap}..{after - 1}"
    i = int(np.flatnonzero(action == after)[0])
    raise rows.fail(
        col, i, f"action {after} leaves code{'s' if after > first_gap + 1 else ''} {unused} never logged "
        f"(the log's codes: {shown}); a typo?", value=after,
        hint=f"fix the row, or if the action set really has {int(codes[-1]) + 1} actions declare it in the "
        f"schema (n_actions = {int(codes[-1]) + 1}, or actions = [labels]; --schema FILE)",
    )


#: the largest magnitude a feature, reward or outcome may have: beyond it float32 policies and the
#: outcome models' sums overflow (and no real log needs it: rescale, e.g. take a log or change units)
MAX_ABS = 1e30
#: the smallest logging propensity: below it an importance weight (1/pscore) is beyond any use
MIN_PSCORE = 1e-12


def _not_huge(values: np.ndarray, col: str, rows: _Rows, what: str) -> None:
    rows.first(col, np.abs(values) > MAX_ABS,
               lambda v: f"{what} value {v!r} is too large (beyond ±{MAX_ABS:g}, where float32 policies and "
               "sums overflow)", values, hint="rescale the column (e.g. a log, or other units)")


def _map_labels(s: pd.Series, col: str, rows: _Rows, labels: list, what: str) -> np.ndarray:
    mapping = {lab: i for i, lab in enumerate(labels)}
    codes = s.map(mapping)
    unmapped = codes.isna().to_numpy()
    if unmapped.any():  # text labels that came back from a CSV as numbers ("1" -> 1)
        by_text = {str(lab): i for i, lab in enumerate(labels)}
        codes = codes.where(~unmapped, s.astype(str).map(by_text))
    vals = s.to_numpy(dtype=object)
    rows.first(col, codes.isna().to_numpy(), lambda v: f"unknown {what} {v!r}: not one of the labels {list(labels)}",
               vals, hint=f"list every {what} label in LogSchema.{what}s")
    return codes.to_numpy(dtype=np.int64)


def _groups(s: pd.Series, col: str, rows: _Rows, labels: list | None) -> tuple[np.ndarray, list]:
    vals = s.to_numpy(dtype=object)
    rows.first(col, pd.isna(vals), lambda v: f"missing group ({v!r})", vals)
    if labels is not None:
        return _map_labels(s, col, rows, labels, "group"), list(labels)
    if ptypes.is_numeric_dtype(s) or ptypes.is_bool_dtype(s):
        values = _integers(s, col, rows, "group", hint="groups are integer codes or text labels")
        uniq = np.unique(values)
        codes = np.searchsorted(uniq, values).astype(np.int64)
        return codes, [int(u) for u in uniq]
    is_str = np.fromiter((isinstance(v, str) for v in vals), bool, len(vals))
    if not is_str.all():
        if is_str.any():
            rows.first(col, ~is_str if is_str[0] else is_str,
                       lambda v: f"mixed types: group {v!r} among {'text' if is_str[0] else 'numeric'} groups", vals)
        values = _integers(pd.Series(vals, dtype=object), col, rows, "group",
                           hint="groups are integer codes or text labels")
        uniq = np.unique(values)
        return np.searchsorted(uniq, values).astype(np.int64), [int(u) for u in uniq]
    uniq = sorted(set(vals.tolist()))
    mapping = {lab: i for i, lab in enumerate(uniq)}
    return np.fromiter((mapping[v] for v in vals), np.int64, len(vals)), uniq


def _timestamps(s: pd.Series, col: str, rows: _Rows) -> np.ndarray:
    vals = s.to_numpy(dtype=object)
    rows.first(col, pd.isna(vals), lambda v: f"missing timestamp ({v!r})", vals)
    if ptypes.is_datetime64_any_dtype(s):
        if getattr(s.dt, "tz", None) is not None:
            s = s.dt.tz_convert("UTC").dt.tz_localize(None)
        return s.to_numpy(dtype="datetime64[us]")
    if ptypes.is_integer_dtype(s):
        return s.to_numpy(dtype=np.int64)
    if ptypes.is_float_dtype(s):
        return _floats(s, col, rows, "timestamp")
    text = s.astype(object)
    parsed = pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601")
    if parsed.isna().any():
        parsed = pd.to_datetime(text, errors="coerce", utc=True, format="mixed")
    rows.first(col, parsed.isna().to_numpy(), lambda v: f"cannot read timestamp {v!r} as a date", vals,
               hint="give datetimes, ISO 8601 text or numbers")
    return parsed.dt.tz_localize(None).to_numpy(dtype="datetime64[us]")
