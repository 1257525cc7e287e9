"""Run the decision service under uvicorn: tokens, the bind rule, start-up checks, then serve."""

from __future__ import annotations

import logging
from pathlib import Path

from grpokit.serve.auth import check_bind, load_tokens
from grpokit.serve.config import ServeConfig

__all__ = ["build_app", "run_server"]


def build_app(config: ServeConfig, policy_path: str | Path | None = None, *, token_file: str | None = None,
              admin_token_file: str | None = None):
    """Load the tokens, check the bind, create the app and run its start-up (store, replay, policies)
    now, so that a bad set-up fails with its message before the port opens."""
    from grpokit.serve.app import create_app

    tokens = load_tokens(config.auth, token_file, admin_token_file)
    check_bind(config.host, tokens)
    app = create_app(config, policy_path, tokens=tokens)
    app.state.serve.startup()
    return app


def run_server(config: ServeConfig, policy_path: str | Path | None = None, *, token_file: str | None = None,
               admin_token_file: str | None = None, log_level: str = "info") -> None:
    """Serve until interrupted (SIGINT/SIGTERM: the log is flushed into DuckDB before exit)."""
    import torch
    import uvicorn

    torch.set_num_threads(config.torch_threads)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = build_app(config, policy_path, token_file=token_file, admin_token_file=admin_token_file)
    import gc

    gc.freeze()  # the start-up objects (torch, the event index) stay out of later collections
    state = app.state.serve
    logging.getLogger("grpokit.serve").warning(
        "serving %s on http://%s:%d (store %s, log %s, epsilon %g, mode %s, rollout %s)%s",
        state.policies.current.version, config.host, config.port, config.store, config.wal_dir, config.epsilon,
        config.mode, state.policies.rollout.mode,
        "" if state.tokens.api else " -- no API token: auth is off (loopback only)")
    uvicorn.run(app, host=config.host, port=config.port, log_level=log_level, access_log=False,
                timeout_graceful_shutdown=10)
