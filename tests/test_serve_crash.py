"""A real uvicorn server on a free 127.0.0.1 port: kill -9 under load, restart, nothing acknowledged is lost,
nothing is duplicated; concurrent duplicate rewards over HTTP join once."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
pytestmark = pytest.mark.serve

from test_serve import CTX, make_policy  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(tmp: Path, port: int, policy: Path | None, name: str) -> subprocess.Popen:
    cmd = [sys.executable, "-c", "from grpokit.cli import app; app()", "serve", "--store", str(tmp / "s.duckdb"), "--port", str(port),
           "--config", str(tmp / "serve.toml"), "--log-level", "warning"]
    if policy is not None:
        cmd += ["--policy", str(policy)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRPOKIT_")}
    out = open(tmp / f"{name}.log", "wb")
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp)


def wait_healthy(proc: subprocess.Popen, port: int, tmp: Path, name: str, timeout: float = 90.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}: {(tmp / f'{name}.log').read_text()[-2000:]}")
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1.0)
            if r.status_code == 200:
                return r.json()
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"server not healthy after {timeout} s: {(tmp / f'{name}.log').read_text()[-2000:]}")


async def load(port: int, workers: int, seconds: float, acked: list, stop_after: int) -> int:
    """Decide with known event ids from ``workers`` concurrent loops; returns requests sent."""
    sent = 0
    deadline = time.monotonic() + seconds

    async def worker(w: int, client):
        nonlocal sent
        k = 0
        while time.monotonic() < deadline and len(acked) < stop_after:
            eid = f"w{w}-{k}"
            k += 1
            sent += 1
            try:
                r = await client.post("/v1/decide", json={"context": CTX, "event_id": eid})
            except httpx.HTTPError:
                return
            if r.status_code == 200:
                acked.append(eid)

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5.0) as client:
        await asyncio.gather(*[worker(w, client) for w in range(workers)])
    return sent


def test_kill_9_under_load_then_restart(tmp_path):
    policy = make_policy(tmp_path / "p.pt")
    (tmp_path / "serve.toml").write_text("[serve.log]\nflush_interval_s = 60\n")  # nothing reaches DuckDB before the kill
    port = free_port()
    proc = start(tmp_path, port, policy, "first")
    try:
        wait_healthy(proc, port, tmp_path, "first")
        acked: list[str] = []
        workers = 8

        async def load_then_kill():
            task = asyncio.create_task(load(port, workers, 20.0, acked, 10**9))
            while len(acked) < 150 and not task.done():
                await asyncio.sleep(0.01)
            os.kill(proc.pid, signal.SIGKILL)  # in the middle of the load
            return await task

        asyncio.run(load_then_kill())
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(acked) >= 150
    assert list((tmp_path / "s.duckdb.decision-log").glob("seg-*.wal")), "the acknowledged decisions must be in segments"

    port = free_port()
    proc = start(tmp_path, port, None, "second")  # no --policy: the store's current version
    try:
        health = wait_healthy(proc, port, tmp_path, "second")
        assert health["log"]["replayed_at_start"] >= len(acked)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5.0) as c:
            # a retried decision after the restart answers the stored one
            r = c.post("/v1/decide", json={"context": CTX, "event_id": acked[0]}).json()
            assert r["replayed"] is True

        async def duplicate_rewards():
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10.0) as ac:
                rs = await asyncio.gather(*[ac.post(f"/v1/events/{acked[1]}/reward", json={"reward": float(k)})
                                            for k in range(20)])
            return [r.json() for r in rs]

        results = asyncio.run(duplicate_rewards())
        assert sum(r["counted"] for r in results) == 1 and sum(r["duplicate"] for r in results) == 19
    finally:
        proc.send_signal(signal.SIGTERM)  # graceful: the log is flushed into DuckDB
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    con = duckdb.connect(str(tmp_path / "s.duckdb"), read_only=True)
    try:
        logged = {r[0] for r in con.execute("SELECT event_id FROM decisions").fetchall()}
        n, n_distinct = con.execute("SELECT count(*), count(DISTINCT event_id) FROM decisions").fetchone()
        counted = con.execute("SELECT count(*) FROM rewards WHERE counted AND event_id = ?", [acked[1]]).fetchone()[0]
        n_rewards = con.execute("SELECT count(*) FROM rewards WHERE event_id = ?", [acked[1]]).fetchone()[0]
    finally:
        con.close()
    assert set(acked) <= logged, f"{len(set(acked) - logged)} acknowledged decisions lost"
    assert n == n_distinct  # no duplicates
    # logged but never acknowledged: written and fsync'd while the process died, at most one per worker
    assert 0 <= len(logged) - len(acked) <= workers
    assert counted == 1 and n_rewards == 20
    assert not list((tmp_path / "s.duckdb.decision-log").glob("seg-*.wal")) or all(
        p.stat().st_size == 0 for p in (tmp_path / "s.duckdb.decision-log").glob("seg-*.wal"))
