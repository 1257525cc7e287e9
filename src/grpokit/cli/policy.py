"""``grpokit policy register|list|promote|rollback|rollout``: policy versions in the store.

The running service checks the store for the current version and the rollout every
``log.poll_interval_s`` (1 s by default) and switches without a restart.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from grpokit.cli._common import _fail, console

policy_app = typer.Typer(help="Policy versions in the store: register, list, promote, roll back, set the rollout.",
                         no_args_is_help=True)

StoreOpt = typer.Option(Path("grpokit.duckdb"), "--store", help="The DuckDB store file")


def _with_store(store: Path, fn, create: bool = False):
    from grpokit.serve.tables import StoreBusy, connect
    from grpokit.serve.versions import VersionError

    if not create and not store.is_file():
        _fail(f"store {store} does not exist")
    try:
        con = connect(store, 30.0)
    except (StoreBusy, FileNotFoundError) as err:
        _fail(str(err))
    try:
        return fn(con)
    except (VersionError, ValueError, FileNotFoundError) as err:
        _fail(str(err))
    finally:
        con.close()


def _resolve(con, version: str) -> str:
    """A version by its full id or a unique prefix (with or without 'sha256:')."""
    from grpokit.serve.versions import VersionError, ensure_version_tables

    ensure_version_tables(con)
    known = [r[0] for r in con.execute("SELECT version FROM policy_versions").fetchall()]
    if version in known:
        return version
    hits = [v for v in known if v.startswith(version) or v.split(":", 1)[-1].startswith(version)]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise VersionError(f"version {version!r} is not registered; registered: {known}")
    raise VersionError(f"version {version!r} is ambiguous: {hits}")


@policy_app.command("register")
def register(
    path: Path = typer.Argument(..., help="A policy.pt (loaded with weights_only=True)"),
    store: Path = StoreOpt,
    note: Optional[str] = typer.Option(None, "--note"),
    promote: bool = typer.Option(False, "--promote", help="Also make it the current version"),
) -> None:
    """Register a policy file as a version (content-addressed copy next to the store)."""
    from grpokit.serve import versions

    def go(con):
        row = versions.register(con, store, path, note=note)
        if promote:
            row["promotion"] = versions.promote(con, row["version"], note)
        return row

    row = _with_store(store, go, create=True)
    console.print(f"{'registered' if row['new'] else 'already registered'}: [bold]{row['version']}[/] ({row['path']})"
                  + (" -- now current" if promote else ""))


@policy_app.command("list")
def list_(store: Path = StoreOpt, as_json: bool = typer.Option(False, "--json", help="Print JSON")) -> None:
    """Registered versions (current and candidate marked)."""
    from grpokit.serve import versions

    df = _with_store(store, versions.list_versions)
    if as_json:
        typer.echo(json.dumps(json.loads(df.to_json(orient="records", date_format="iso"))))
        return
    table = Table(title=f"policy versions in {store}")
    for col in ("version", "kind", "actions", "registered", "role", "note"):
        table.add_column(col)
    for r in df.itertuples():
        role = "current" if r.current else ("candidate" if r.candidate else "")
        table.add_row(r.version, str(r.kind), str(r.actions), str(r.registered_at)[:19], role, str(r.note or ""))
    console.print(table)


@policy_app.command("promote")
def promote(version: str = typer.Argument(..., help="A registered version (or a unique prefix)"), store: Path = StoreOpt,
            note: Optional[str] = typer.Option(None, "--note")) -> None:
    """Make a version current (the running service switches within a second)."""
    from grpokit.serve import versions

    out = _with_store(store, lambda con: versions.promote(con, _resolve(con, version), note))
    console.print(f"current: [bold]{out['version']}[/] (was {out['previous']})"
                  + ("" if out["changed"] else " -- unchanged"))


@policy_app.command("rollback")
def rollback(store: Path = StoreOpt, note: Optional[str] = typer.Option(None, "--note")) -> None:
    """Go back to the version that was current before the current one."""
    from grpokit.serve import versions

    out = _with_store(store, lambda con: versions.rollback(con, note))
    console.print(f"rolled back: current [bold]{out['version']}[/] (was {out['previous']})")


@policy_app.command("rollout")
def rollout(
    mode: str = typer.Option(..., "--mode", help="live, shadow or canary"),
    candidate: Optional[str] = typer.Option(None, "--candidate", help="Registered version for shadow/canary"),
    fraction: float = typer.Option(0.0, "--fraction", help="Canary: share of hashed unit ids on the candidate"),
    cohort: Optional[List[str]] = typer.Option(None, "--cohort", help="Canary: a cohort that gets the candidate (repeatable)"),
    salt: str = typer.Option("grpokit", "--salt", help="Hash salt of the unit assignment"),
    store: Path = StoreOpt,
) -> None:
    """Set the rollout (the running service switches within a second)."""
    from pydantic import ValidationError

    from grpokit.serve import versions
    from grpokit.serve.config import RolloutConfig

    def go(con):
        try:
            ro = RolloutConfig(mode=mode, candidate=None if candidate is None else _resolve(con, candidate),
                               fraction=fraction, cohorts=list(cohort or []), salt=salt)
        except ValidationError as err:
            raise ValueError("; ".join(f"{'.'.join(map(str, e['loc'])) or 'rollout'}: {e['msg']}" for e in err.errors()))
        versions.set_rollout(con, ro)
        return ro

    ro = _with_store(store, go)
    console.print(f"rollout: {ro.model_dump_json()}")
