"""``grpokit serve``: run the decision service; ``grpokit serve export``: the served log for learn/evaluate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from grpokit.cli._common import _fail, console

serve_app = typer.Typer(
    help="The decision service: 'grpokit serve --policy P' answers /v1/decide and logs every decision "
    "with its propensity (needs the optional 'serve' extra). See docs/serving.md.",
    invoke_without_command=True,
    no_args_is_help=False,
)


def _config(config: Optional[Path], **overrides):
    from grpokit.serve.config import ServeConfigError, load_serve_config

    try:
        return load_serve_config(config, **{k: (str(v) if isinstance(v, Path) else v) for k, v in overrides.items()})
    except ServeConfigError as err:
        _fail(str(err))


@serve_app.callback(invoke_without_command=True)
def serve(
    ctx: typer.Context,
    policy: Optional[Path] = typer.Option(None, "--policy", help="policy.pt to register and promote (default: the store's current version)"),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML file with a 'serve' table"),
    store: Optional[Path] = typer.Option(None, "--store", help="The DuckDB store file (default grpokit.duckdb)"),
    host: Optional[str] = typer.Option(None, "--host", help="Bind address (default 127.0.0.1)"),
    port: Optional[int] = typer.Option(None, "--port", help="Port (default 8000)"),
    epsilon: Optional[float] = typer.Option(None, "--epsilon", help="Exploration rate (default 0.05)"),
    token_file: Optional[Path] = typer.Option(None, "--token-file", help="File holding the API token (else $GRPOKIT_API_TOKEN)"),
    admin_token_file: Optional[Path] = typer.Option(None, "--admin-token-file", help="File holding the admin token (else $GRPOKIT_ADMIN_TOKEN)"),
    log_level: str = typer.Option("info", "--log-level"),
) -> None:
    """Serve a policy over HTTP (FastAPI + uvicorn), logging decisions durably into the store."""
    if ctx.invoked_subcommand is not None:
        return
    try:
        from grpokit.serve.server import run_server
    except ImportError as err:
        _fail(f"the decision service needs the serve extra ({err.name} is missing): pip install 'grpokit[serve]'")
    cfg = _config(config, store=store, host=host, port=port, epsilon=epsilon)
    if policy is not None and not policy.is_file():
        _fail(f"--policy: no policy file at {policy}")
    from grpokit.serve.app import StartupError
    from grpokit.serve.auth import AuthError
    from grpokit.serve.versions import VersionError

    try:
        run_server(cfg, policy, token_file=None if token_file is None else str(token_file),
                   admin_token_file=None if admin_token_file is None else str(admin_token_file), log_level=log_level)
    except (StartupError, AuthError, VersionError, ValueError, FileNotFoundError) as err:
        _fail(str(err))


@serve_app.command("export")
def export(
    store: Path = typer.Option(Path("grpokit.duckdb"), "--store", help="The DuckDB store file"),
    out: Optional[Path] = typer.Option(None, "--out", help="Parquet file to write (for 'grpokit evaluate --log')"),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Also import into the store as this dataset (for 'grpokit learn --dataset')"),
    config: Optional[Path] = typer.Option(None, "--config", help="Serve config whose serve.reward settings apply"),
    version: Optional[str] = typer.Option(None, "--version", help="Only decisions of this policy version"),
    arm: Optional[List[str]] = typer.Option(None, "--arm", help="Only these arms (live, shadow, control, candidate; repeatable)"),
    default_reward: Optional[float] = typer.Option(None, "--default-reward", help="Reward of decisions whose window closed without one"),
    window_s: Optional[float] = typer.Option(None, "--window-s", help="Reward window in seconds"),
    replace: bool = typer.Option(False, "--replace", help="Overwrite an existing dataset"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the export's counts here"),
) -> None:
    """The served decisions joined with their rewards, in the offline log schema."""
    from grpokit.serve.export import export_served
    from grpokit.serve.tables import StoreBusy

    if out is None and dataset is None:
        _fail("give --out FILE.parquet and/or --dataset NAME")
    if not store.is_file():
        _fail(f"store {store} does not exist")
    cfg = _config(config, store=store)
    reward = cfg.reward.model_copy(update={k: v for k, v in (("default", default_reward), ("window_s", window_s))
                                           if v is not None})
    try:
        info = export_served(store, out, dataset=dataset, reward=reward, replace=replace, version=version, arms=arm)
    except (ValueError, StoreBusy, FileNotFoundError) as err:
        _fail(str(err))
    if json_out is not None:
        from grpokit.atomic import atomic_write_json

        atomic_write_json(json_out, info)
    typer.echo(json.dumps({k: v for k, v in info.items() if k != "features"}, default=str))
