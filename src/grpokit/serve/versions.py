"""Policy versions in the store: register, list, promote, roll back, and the rollout setting.

===================  ===============================================================================
table                one row per
===================  ===============================================================================
``policy_versions``  registered policy: version (``sha256:<12 hex>`` of the file, or its metadata's
                     ``version``), path (a content-addressed copy under ``<store>.policies/``, so a
                     later overwrite of the source file cannot change what a version means),
                     source (the registered path), kind, actions (JSON), fields (JSON),
                     registered_at, note
``policy_events``    change: seq, changed_at, action (``promote`` | ``rollback``), version, previous, note
``serve_rollout``    rollout setting: seq, changed_at, config (JSON of :class:`~grpokit.serve.config.RolloutConfig`)
===================  ===============================================================================

The current version is the top of the promotion stack: ``promote V`` pushes V, ``rollback`` pops
the top (back to the version before it). The running service reads the current version and the
latest rollout row every ``log.poll_interval_s`` (1 s; the store is opened only when its file changed)
and switches without a restart.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import pandas as pd

from grpokit.serve.config import RolloutConfig

__all__ = ["VersionError", "ensure_version_tables", "register", "list_versions", "promote", "rollback",
           "current_version", "version_path", "set_rollout", "get_rollout", "load_deployed", "policies_dir"]

_DDL = (
    """CREATE TABLE IF NOT EXISTS policy_versions (version VARCHAR PRIMARY KEY, path VARCHAR NOT NULL,
        source VARCHAR, kind VARCHAR, actions VARCHAR, fields VARCHAR, registered_at TIMESTAMP NOT NULL, note VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS policy_events (seq BIGINT NOT NULL, changed_at TIMESTAMP NOT NULL, action VARCHAR NOT NULL,
        version VARCHAR, previous VARCHAR, note VARCHAR)""",
    "CREATE TABLE IF NOT EXISTS serve_rollout (seq BIGINT NOT NULL, changed_at TIMESTAMP NOT NULL, config VARCHAR NOT NULL)",
)


class VersionError(ValueError):
    """A version operation that cannot be done; the message names the version and why."""


def load_deployed(path: str | Path):
    """A :class:`~grpokit.policy.deployed.DeployedPolicy` (``torch.load(weights_only=True)``)."""
    from grpokit.policy.deployed import DeployedPolicy

    return DeployedPolicy.load(path)


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def ensure_version_tables(con) -> None:
    for sql in _DDL:
        con.execute(sql)


def policies_dir(store: str | Path) -> Path:
    return Path(str(store) + ".policies")


def _safe(version: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in version)


def register(con, store: str | Path, policy_path: str | Path, *, note: str | None = None,
             loader: Callable = load_deployed) -> dict:
    """Load ``policy_path`` (rejecting files that need pickle), copy it under ``<store>.policies/`` and
    record it; registering the same version again is a no-op. Returns the version's row."""
    ensure_version_tables(con)
    src = Path(policy_path)
    if not src.is_file():
        raise VersionError(f"no policy file at {src}")
    dp = loader(src)
    row = con.execute("SELECT version, path FROM policy_versions WHERE version = ?", [dp.version]).fetchone()
    if row is not None:
        return {"version": row[0], "path": row[1], "new": False}
    dest_dir = policies_dir(store)
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / f"{_safe(dp.version)}.pt"
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)
    con.execute(
        "INSERT INTO policy_versions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [dp.version, str(dest.resolve()), str(src.resolve()), dp.kind, json.dumps(dp.action_labels),
         json.dumps(dp.fields), _now(), note],
    )
    return {"version": dp.version, "path": str(dest.resolve()), "new": True}


def _stack(con) -> list[str]:
    stack: list[str] = []
    for action, version in con.execute("SELECT action, version FROM policy_events ORDER BY seq").fetchall():
        if action == "promote":
            stack.append(version)
        elif action == "rollback" and stack:
            stack.pop()
    return stack


def current_version(con) -> str | None:
    ensure_version_tables(con)
    stack = _stack(con)
    return stack[-1] if stack else None


def version_path(con, version: str) -> str:
    row = con.execute("SELECT path FROM policy_versions WHERE version = ?", [version]).fetchone()
    if row is None:
        known = [r[0] for r in con.execute("SELECT version FROM policy_versions ORDER BY registered_at").fetchall()]
        raise VersionError(f"version {version!r} is not registered; registered: {known} "
                           "(add it with 'grpokit policy register FILE')")
    return row[0]


def _event(con, action: str, version: str | None, previous: str | None, note: str | None) -> None:
    seq = con.execute("SELECT coalesce(max(seq), 0) + 1 FROM policy_events").fetchone()[0]
    con.execute("INSERT INTO policy_events VALUES (?, ?, ?, ?, ?, ?)", [seq, _now(), action, version, previous, note])


def promote(con, version: str, note: str | None = None) -> dict:
    """Make ``version`` (registered) the current one."""
    ensure_version_tables(con)
    version_path(con, version)
    previous = current_version(con)
    if previous == version:
        return {"version": version, "previous": previous, "changed": False}
    _event(con, "promote", version, previous, note)
    return {"version": version, "previous": previous, "changed": True}


def rollback(con, note: str | None = None) -> dict:
    """Go back to the version that was current before the current one."""
    ensure_version_tables(con)
    stack = _stack(con)
    if len(stack) < 2:
        raise VersionError("nothing to roll back to: fewer than two promotions are in effect "
                           f"(current: {stack[-1] if stack else None})")
    _event(con, "rollback", stack[-2], stack[-1], note)
    return {"version": stack[-2], "previous": stack[-1], "changed": True}


def list_versions(con) -> pd.DataFrame:
    """Registered versions, oldest first, with ``current`` and ``candidate`` flags."""
    ensure_version_tables(con)
    df = con.execute("SELECT version, kind, actions, registered_at, note, source, path FROM policy_versions "
                     "ORDER BY registered_at, version").df()
    cur = current_version(con)
    rollout = get_rollout(con)
    df["current"] = df["version"] == cur
    df["candidate"] = df["version"] == (rollout.candidate if rollout else None)
    return df


def set_rollout(con, rollout: RolloutConfig) -> None:
    """Record a rollout setting (its candidate must be registered)."""
    ensure_version_tables(con)
    if rollout.candidate is not None:
        version_path(con, rollout.candidate)
    seq = con.execute("SELECT coalesce(max(seq), 0) + 1 FROM serve_rollout").fetchone()[0]
    con.execute("INSERT INTO serve_rollout VALUES (?, ?, ?)", [seq, _now(), rollout.model_dump_json()])


def get_rollout(con) -> RolloutConfig | None:
    """The latest rollout setting recorded in the store (None: never set)."""
    ensure_version_tables(con)
    row = con.execute("SELECT config FROM serve_rollout ORDER BY seq DESC LIMIT 1").fetchone()
    return None if row is None else RolloutConfig.model_validate_json(row[0])
