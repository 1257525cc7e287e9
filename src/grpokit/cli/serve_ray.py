"""``grpokit serve ray``: the decision service as shard replicas on Ray Serve (grpokit.scale.serve)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from grpokit.cli._common import _fail, console
from grpokit.cli.serve import _config, serve_app


@serve_app.command("ray")
def serve_ray(
    policy: Optional[Path] = typer.Option(None, "--policy", help="policy.pt to register and promote (default: the store's current version)"),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML file with a 'serve' table"),
    store: Optional[Path] = typer.Option(None, "--store", help="The DuckDB store file (default grpokit.duckdb)"),
    host: Optional[str] = typer.Option(None, "--host", help="Bind address (default 127.0.0.1)"),
    port: Optional[int] = typer.Option(None, "--port", help="Port (default 8000)"),
    epsilon: Optional[float] = typer.Option(None, "--epsilon", help="Exploration rate (default 0.05)"),
    replicas: int = typer.Option(2, "--replicas", help="Shard replicas (each with its own decision log)"),
    ingress_replicas: int = typer.Option(1, "--ingress-replicas", help="Stateless ingress replicas"),
    cpus_per_replica: float = typer.Option(1.0, "--cpus-per-replica", help="Ray CPUs reserved per shard replica"),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (default $RAY_ADDRESS, else a local cluster)"),
    token_file: Optional[Path] = typer.Option(None, "--token-file", help="File holding the API token (else $GRPOKIT_API_TOKEN)"),
    admin_token_file: Optional[Path] = typer.Option(None, "--admin-token-file", help="File holding the admin token"),
) -> None:
    """Serve a policy with Ray Serve replicas sharded by event id, all logging into one store (docs/scale.md)."""
    import signal
    import threading

    cfg = _config(config, store=store, host=host, port=port, epsilon=epsilon)
    if policy is not None and not policy.is_file():
        _fail(f"--policy: no policy file at {policy}")
    try:
        from grpokit.scale.serve import start_replicas

        svc = start_replicas(cfg, policy, replicas=replicas, ingress_replicas=ingress_replicas,
                             cpus_per_replica=cpus_per_replica, address=address,
                             token_file=None if token_file is None else str(token_file),
                             admin_token_file=None if admin_token_file is None else str(admin_token_file))
    except ImportError as err:
        _fail(f"serving replicas need the ray extra ({err}): pip install -c constraints.txt -e '.[ray]'")
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        _fail(str(err))
    console.print(f"serving on {svc.url} with {replicas} shard replicas (store {cfg.store}); Ctrl-C stops")
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    for r in svc.stop():
        console.print(f"shard {r['shard']}: {r['flushed']} records moved into the store")
