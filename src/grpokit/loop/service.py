"""A real ``grpokit serve`` process on a free 127.0.0.1 port, for the loop and its tests.

``ServiceProcess(store, policy, ...)`` writes a serve config, starts ``grpokit serve`` as a
subprocess with fresh random API and admin tokens in its environment, waits (bounded) for
``/v1/health`` and gives a :class:`grpokit.serve.Client` with both tokens; ``stop()`` terminates it
(SIGTERM, then SIGKILL after a timeout). Used as a context manager it always stops.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["ServiceProcess", "free_port"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServiceProcess:
    def __init__(self, store: str | Path, policy: str | Path, *, epsilon: float = 0.05, seed: int = 0,
                 flush_interval_s: float = 0.2, window_s: float = 86400.0, log_file: str | Path | None = None,
                 start_timeout_s: float = 120.0):
        self.store = Path(store)
        self.policy = Path(policy)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = secrets.token_hex(16)
        self.admin_token = secrets.token_hex(16)
        self.config_path = self.store.with_suffix(".serve.toml")
        self.config_path.write_text(
            f"[serve]\nepsilon = {epsilon}\nseed = {seed}\n[serve.reward]\nwindow_s = {window_s}\n"
            f"[serve.log]\nflush_interval_s = {flush_interval_s}\n[serve.limits]\nmax_body_bytes = 16777216\n")
        self.log_file = Path(log_file) if log_file else self.store.with_suffix(".serve.log")
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen | None = None
        self.client = None

    def start(self) -> "ServiceProcess":
        from grpokit.serve import Client

        env = dict(os.environ, GRPOKIT_API_TOKEN=self.token, GRPOKIT_ADMIN_TOKEN=self.admin_token)
        cmd = [sys.executable, "-c", "from grpokit.cli import main; main()", "serve", "--policy", str(self.policy),
               "--store", str(self.store), "--host", "127.0.0.1", "--port", str(self.port),
               "--config", str(self.config_path), "--log-level", "warning"]
        self._log = open(self.log_file, "ab")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        # the loop's server keeps the default reward aggregation "first": a retried reward post is a duplicate
        self.client = Client(self.url, token=self.token, admin_token=self.admin_token, timeout=120.0, retry_rewards=True)
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if self.proc.poll() is not None:
                self._log.close()
                tail = self.log_file.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"grpokit serve exited with {self.proc.returncode} before answering:\n{tail}")
            try:
                self.client.health()
                return self
            except Exception:  # noqa: BLE001  (not up yet)
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"grpokit serve did not answer /v1/health within {self.start_timeout_s} s")
                time.sleep(0.2)

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.client is not None:
            self.client.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout_s)
        if getattr(self, "_log", None) is not None and not self._log.closed:
            self._log.close()

    def __enter__(self) -> "ServiceProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
