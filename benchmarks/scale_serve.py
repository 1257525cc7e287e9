"""Throughput of the decision service on Ray Serve replicas vs the single-process ``grpokit serve``.

For each setting (the single process, then ``grpokit serve ray --replicas N`` for each N in
``--replicas``) a fresh store and server on a free 127.0.0.1 port; then, bounded in time and requests:
single-context ``POST /v1/decide`` saturated by ``--concurrency`` keep-alive connections, and batches of
1,000 contexts (``--batch-requests`` requests). After the server stops, the store must hold every
acknowledged decision exactly once (shards included). The load generator is benchmarks/serve_load.py's.

    .venv/bin/python benchmarks/scale_serve.py --replicas 1 2 --json runs/bench/scale_serve.json

On one machine the replicas share its cores with the ingress, Ray's own processes and the load
generator: the per-replica figure is what a cluster adds per replica node, not this machine's sum.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import serve_load as sl  # noqa: E402


def _start(work: Path, port: int, replicas: int | None, cpus_per_replica: float = 1.0) -> subprocess.Popen:
    cmd = [sys.executable, "-c", "from grpokit.cli import app; app()", "serve"]
    if replicas is not None:
        cmd += ["ray", "--replicas", str(replicas), "--cpus-per-replica", str(cpus_per_replica)]
    cmd += ["--store", str(work / "s.duckdb"), "--port", str(port), "--policy", str(work / "policy.pt")]
    if replicas is None:
        cmd += ["--log-level", "warning"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRPOKIT_")}
    return subprocess.Popen(cmd, stdout=open(work / "server.log", "ab"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def one(replicas: int | None, args, contexts_cache: dict) -> dict:
    import duckdb

    work = Path(tempfile.mkdtemp(prefix="grpokit-scale-serve-"))
    contexts = sl.make_policy(work / "policy.pt")
    port = sl.free_port()
    proc = _start(work, port, replicas, args.cpus_per_replica)
    name = "single process" if replicas is None else f"ray serve, {replicas} replica(s)"
    try:
        t = time.perf_counter()
        sl.wait_healthy(port, proc, timeout=args.start_timeout)
        startup = time.perf_counter() - t
        keyed = [json.dumps({"context": contexts[k % len(contexts)], "event_id": f"e-{k}"}).encode()
                 for k in range(200_000)]
        asyncio.run(sl.closed_loop(port, keyed[-2000:], 4, 1.0))  # warm up (event ids apart from the counted ones)
        acked: list[str] = []
        sat = asyncio.run(sl.closed_loop(port, keyed[:150_000], args.concurrency, args.seconds, acked=acked))
        batches = [json.dumps({"batch": [{"context": c} for c in contexts[i:i + 1000]]}).encode()
                   for i in range(0, 5000, 1000)]
        b = asyncio.run(sl.batch_load(port, batches, args.batch_requests, args.batch_concurrency))
    finally:
        _stop(proc)
    con = duckdb.connect(str(work / "s.duckdb"), read_only=True)
    logged = {r[0] for r in con.execute("SELECT event_id FROM decisions WHERE event_id LIKE 'e-%'").fetchall()}
    n, nd = con.execute("SELECT count(*), count(DISTINCT event_id) FROM decisions").fetchone()
    con.close()
    row = {"setting": name, "replicas": replicas, "startup_s": startup,
           "single_rps": sat["achieved_rps"], "single_p50_ms": sat["p50_ms"], "single_p99_ms": sat["p99_ms"],
           "single_errors": sat["errors"],
           "batch_decisions_per_s": 1000 * len(b["times"]) / b["wall_s"],
           "acknowledged": len(set(acked)), "acknowledged_lost": len(set(acked) - logged),
           "duplicates": int(n - nd)}
    print(f"{name:28s} start {startup:5.1f} s  single {row['single_rps']:7.1f} req/s (p99 {row['single_p99_ms']:.1f} ms, "
          f"errors {row['single_errors']})  batch {row['batch_decisions_per_s']:8.0f} decisions/s  "
          f"acked {row['acknowledged']} lost {row['acknowledged_lost']} dup {row['duplicates']}", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--batch-requests", type=int, default=30)
    ap.add_argument("--batch-concurrency", type=int, default=2)
    ap.add_argument("--no-single", action="store_true", help="skip the single-process baseline")
    ap.add_argument("--cpus-per-replica", type=float, default=0.5,
                    help="Ray CPUs reserved per shard replica (2 replicas x 1 CPU cannot be placed on a 2-CPU machine)")
    ap.add_argument("--start-timeout", type=float, default=240.0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    out = {"machine": {"cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()}, "rows": []}
    cache: dict = {}
    for r in ([] if args.no_single else [None]) + list(args.replicas):
        out["rows"].append(one(r, args, cache))
    out["machine"]["load_average_at_end"] = os.getloadavg()
    print("\n| setting | start-up | single decide req/s | p99 ms | batch decisions/s | acked lost | duplicates |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in out["rows"]:
        print(f"| {row['setting']} | {row['startup_s']:.0f} s | {row['single_rps']:,.0f} | {row['single_p99_ms']:.1f} | "
              f"{row['batch_decisions_per_s']:,.0f} | {row['acknowledged_lost']} | {row['duplicates']} |")
    print(f"load average {out['machine']['load_average_at_start']} -> {out['machine']['load_average_at_end']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
