"""The decision service's DuckDB tables in the store file (beside :mod:`grpokit.store`'s datasets and runs).

===================  =====================================================================================
table                one row per
===================  =====================================================================================
``decisions``        acknowledged decision: event_id (primary key), ts (UTC), policy_version, arm, unit_id,
                     cohort, context (JSON of the fields as received), action_code, action_label,
                     action_value (JSON, continuous heads), propensity (probability of the served action
                     under the served distribution; a density for continuous heads), probabilities (JSON
                     list, the served distribution), epsilon, mode, shadow_version, shadow_action_code,
                     shadow_propensity, deferred (activation pending at decision time), wal_segment
``rewards``          reward received: reward_id (primary key), event_id, received_at, value (weighted sum of
                     the components), components (JSON), late (after the reward window), duplicate (under
                     ``first``: the event already had one), counted (joins the decision)
``activations``      activated deferred decision: event_id (primary key), activated_at
``serve_segments``   write-ahead segment moved into DuckDB: seq, n_records, flushed_at
===================  =====================================================================================

The store is opened only for short transactions (the flusher's, the CLI's), so other processes
(``grpokit policy ...``, ``grpokit evaluate``) can use the file between them: DuckDB lets one
process at a time hold a file open for writing, and :func:`connect` waits for the lock.
"""

from __future__ import annotations

import time
from pathlib import Path

import duckdb

__all__ = ["connect", "ensure_tables", "DECISION_COLUMNS", "REWARD_COLUMNS", "StoreBusy"]

DECISION_COLUMNS = (
    ("event_id", "VARCHAR PRIMARY KEY"), ("ts", "TIMESTAMP NOT NULL"), ("policy_version", "VARCHAR NOT NULL"),
    ("arm", "VARCHAR NOT NULL"), ("unit_id", "VARCHAR"), ("cohort", "VARCHAR"), ("context", "VARCHAR NOT NULL"),
    ("action_code", "INTEGER"), ("action_label", "VARCHAR"), ("action_value", "VARCHAR"),
    ("propensity", "DOUBLE NOT NULL"), ("probabilities", "VARCHAR"), ("epsilon", "DOUBLE"), ("mode", "VARCHAR"),
    ("shadow_version", "VARCHAR"), ("shadow_action_code", "INTEGER"), ("shadow_propensity", "DOUBLE"),
    ("deferred", "BOOLEAN NOT NULL"), ("wal_segment", "BIGINT"),
)
REWARD_COLUMNS = (
    ("reward_id", "VARCHAR PRIMARY KEY"), ("event_id", "VARCHAR NOT NULL"), ("received_at", "TIMESTAMP NOT NULL"),
    ("value", "DOUBLE NOT NULL"), ("components", "VARCHAR"), ("late", "BOOLEAN NOT NULL"),
    ("duplicate", "BOOLEAN NOT NULL"), ("counted", "BOOLEAN NOT NULL"),
)

_DDL = (
    "CREATE TABLE IF NOT EXISTS decisions (" + ", ".join(f"{n} {t}" for n, t in DECISION_COLUMNS) + ")",
    "CREATE TABLE IF NOT EXISTS rewards (" + ", ".join(f"{n} {t}" for n, t in REWARD_COLUMNS) + ")",
    "CREATE TABLE IF NOT EXISTS activations (event_id VARCHAR PRIMARY KEY, activated_at TIMESTAMP NOT NULL)",
    "CREATE TABLE IF NOT EXISTS serve_segments (seq BIGINT, n_records BIGINT, flushed_at TIMESTAMP)",
)


class StoreBusy(RuntimeError):
    """The store file stayed locked by another process for longer than the timeout."""


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    for sql in _DDL:
        con.execute(sql)


def connect(path: str | Path, timeout_s: float = 10.0, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open the store file, waiting up to ``timeout_s`` for another process's lock; creates the serve tables."""
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot open the store {str(path)!r}: folder {str(path.parent)!r} does not exist")
    deadline = time.monotonic() + timeout_s
    delay = 0.005
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only)
            break
        except duckdb.IOException as err:
            if "lock" not in str(err).lower() or time.monotonic() > deadline:
                if "lock" in str(err).lower():
                    raise StoreBusy(
                        f"the store {str(path)!r} is locked by another process for more than {timeout_s:g} s: {err}"
                    ) from None
                raise
            time.sleep(delay)
            delay = min(2 * delay, 0.1)
    if not read_only:
        ensure_tables(con)
    return con
