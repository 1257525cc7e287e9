"""Load benchmark of the decision service on loopback (a small asyncio HTTP/1.1 client as the load generator).

Runs, each bounded in requests and time, against real uvicorn servers on free 127.0.0.1 ports
(single worker, fsync'd durable logging on):

1. single-context ``POST /v1/decide`` at increasing offered load (open loop: requests are sent on a
   fixed schedule, at most ``--max-inflight`` outstanding), requests/s achieved and p50/p99 latency,
   next to a bare FastAPI endpoint returning a constant, in the same run; then both saturated
   (closed loop, ``--concurrency`` workers);
2. batch ``/v1/decide`` with 1,000 contexts per request: decisions/s (pre-encoded bodies);
3. kill -9 of the service in the middle of a load run, restart: acknowledged vs logged decisions,
   duplicates;
4. concurrent duplicate reward posts (``first``): counted rewards per event.

    .venv/bin/python benchmarks/serve_load.py --json runs/bench/serve_load.json

The load generator (:class:`Conn`: keep-alive HTTP/1.1 on asyncio streams, uvloop when installed,
~0.1 ms CPU per request) runs on the same machine as the server (2 cores here): at saturation they
compete for the CPU, which the report states. Open-loop latency counts from the scheduled send
time. ``--saturated-rounds N`` alternates N saturated decide/bare pairs (the table shows the
median-ratio pair, the per-round ratios follow it: a shared machine's noise then shows), and
``--compare-src DIR`` adds another checkout's service (``git archive <commit> src | tar -x -C DIR/..``)
to those rounds, for a before/after in one run. Saturated server CPU is split into the main
thread (event loop) and the other threads (log writers and their fsyncs, the flusher, DuckDB).
At the end a paste-ready markdown table is printed. ``--bare-server PORT`` is the bare endpoint's own
entry point (used by the benchmark itself).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

try:
    import uvloop

    _UVLOOP = True
except ImportError:  # pragma: no cover
    _UVLOOP = False


def bare_server(port: int) -> None:
    import uvicorn
    from fastapi import FastAPI, Response

    app = FastAPI()
    body = json.dumps({"event_id": "0" * 32, "action": "none", "action_code": 0, "propensity": 0.2,
                       "policy_version": "sha256:000000000000", "arm": "live"}).encode()

    @app.post("/v1/decide")
    async def decide():
        return Response(body, media_type="application/json")

    @app.get("/v1/health")
    async def health():
        return Response(b'{"status":"ok"}', media_type="application/json")

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 120.0) -> dict:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on {port} exited with {proc.returncode}")
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1.0)
            if r.status_code == 200:
                return r.json()
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server on {port} not healthy after {timeout} s")


def start_service(work: Path, port: int, policy: Path | None, log: str, src: Path | None = None) -> subprocess.Popen:
    """``grpokit serve`` in a subprocess; ``src``: another checkout's ``src`` directory to run instead
    (put first on PYTHONPATH: the before/after comparison)."""
    cmd = [sys.executable, "-c", "from grpokit.cli import app; app()", "serve", "--store", str(work / "s.duckdb"),
           "--port", str(port), "--log-level", "warning", "--config", str(work / "serve.toml")]
    if policy is not None:
        cmd += ["--policy", str(policy)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRPOKIT_")}
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return subprocess.Popen(cmd, stdout=open(work / log, "ab"), stderr=subprocess.STDOUT, env=env)


def make_policy(path: Path):
    import torch

    from grpokit.policy import CategoricalHead, MLPTorso, Policy
    from grpokit.policy.io import save_policy
    from grpokit.scenarios.marketing import MarketingScenario

    scen = MarketingScenario()
    torch.manual_seed(0)
    net = Policy(MLPTorso(scen.obs_dim, [64, 64]), CategoricalHead(scen.n_actions))
    save_policy(net, path, {"feature_names": scen.feature_names, "action_labels": scen.action_names})
    ctx = scen.sample_contexts(5000, torch.Generator().manual_seed(1))
    return [dict(zip(scen.feature_names, map(float, r))) for r in ctx.obs.double().numpy()]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc), to state per-request server cost under contention."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds(pid: int) -> tuple[float, float]:
    """(main thread, all other threads) user + system CPU seconds of a process (Linux /proc)."""
    main = other = 0.0
    tck = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # a thread that just ended
            continue
        t = (int(fields[11]) + int(fields[12])) / tck
        if tid == str(pid):
            main += t
        else:
            other += t
    return main, other


def _pct(lat: list[float], q: float) -> float | None:
    return None if not lat else float(np.percentile(np.asarray(lat) * 1000.0, q))


class Conn:
    """One keep-alive HTTP/1.1 connection on asyncio streams: the load generator's client.

    A deliberately small client (a request is one write, a response is read by its Content-Length)
    so that the generator costs ~0.1 ms of CPU per request; httpx.AsyncClient cost ~7 ms per
    request here, which made the generator, not the server, the bottleneck of earlier runs."""

    def __init__(self, port: int):
        self.port = port
        self.reader = self.writer = None

    async def open(self) -> "Conn":
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    async def post(self, path: str, body: bytes, timeout: float = 30.0) -> tuple[int, bytes]:
        self.writer.write(b"POST %s HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                          b"content-length: %d\r\n\r\n%s" % (path.encode(), len(body), body))
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        status = int(head[9:12])
        low = head.lower()
        i = low.find(b"\r\ncontent-length:")
        if i < 0:
            raise ConnectionError("response without content-length")
        n = int(low[i + 17:low.index(b"\r\n", i + 2)])
        data = await asyncio.wait_for(self.reader.readexactly(n), timeout)
        return status, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def open_loop(port: int, bodies: list[bytes], rate: float, seconds: float, max_inflight: int) -> dict:
    """Send at ``rate`` req/s on a fixed schedule for ``seconds`` over ``max_inflight`` keep-alive
    connections; latency from the scheduled send time to the response (so a generator or server
    that falls behind shows up in the latency, not hidden by sending late)."""
    lat: list[float] = []
    errors = 0
    skipped = 0
    n = int(rate * seconds)
    idle: list[Conn] = [await Conn(port).open() for _ in range(max_inflight)]

    async def one(conn: Conn, k: int, due: float):
        nonlocal errors
        try:
            status, _ = await conn.post("/v1/decide", bodies[k % len(bodies)])
            if status == 200:
                lat.append(time.perf_counter() - due)
            else:
                errors += 1
            idle.append(conn)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
            errors += 1
            conn.close()

    tasks = []
    t0 = time.perf_counter()
    for k in range(n):
        due = t0 + k / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if not idle:
            skipped += 1  # every connection busy: the server fell behind; not sent (counted, not hidden)
            continue
        tasks.append(asyncio.create_task(one(idle.pop(), k, due)))
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - t0
    for c in idle:
        c.close()
    return {"offered_rps": rate, "achieved_rps": len(lat) / wall, "p50_ms": _pct(lat, 50), "p99_ms": _pct(lat, 99),
            "ok": len(lat), "errors": errors, "not_sent_over_inflight_cap": skipped, "seconds": wall}


async def closed_loop(port: int, bodies: list[bytes], concurrency: int, seconds: float, path: str = "/v1/decide",
                      acked: list | None = None, stop_event: asyncio.Event | None = None) -> dict:
    """``concurrency`` workers, each on its own keep-alive connection, sending back to back."""
    lat: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker(w: int):
        nonlocal errors
        k = w
        try:
            conn = await Conn(port).open()
        except OSError:
            errors += 1
            return
        try:
            while time.perf_counter() < deadline and not (stop_event and stop_event.is_set()):
                body = bodies[k % len(bodies)]
                k += concurrency
                t = time.perf_counter()
                try:
                    status, _ = await conn.post(path, body)
                except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
                    errors += 1
                    if stop_event is not None:
                        return
                    conn.close()
                    conn = await Conn(port).open()
                    continue
                if status == 200:
                    lat.append(time.perf_counter() - t)
                    if acked is not None:
                        acked.append(json.loads(body)["event_id"])
                else:
                    errors += 1
        finally:
            conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*[worker(w) for w in range(concurrency)])
    wall = time.perf_counter() - t0
    return {"concurrency": concurrency, "achieved_rps": len(lat) / wall, "p50_ms": _pct(lat, 50),
            "p99_ms": _pct(lat, 99), "ok": len(lat), "errors": errors, "seconds": wall}


async def batch_load(port: int, batches: list[bytes], requests: int, concurrency: int) -> dict:
    """``requests`` batch requests over ``concurrency`` connections; every answer parsed and checked
    to hold 1,000 decisions (the client's share of the work is in the wall clock)."""
    times: list[float] = []
    conns = [await Conn(port).open() for _ in range(concurrency)]
    counter = iter(range(requests))

    async def worker(conn: Conn):
        for k in counter:
            t = time.perf_counter()
            status, data = await conn.post("/v1/decide", batches[k % len(batches)])
            times.append(time.perf_counter() - t)
            assert status == 200 and len(json.loads(data)["decisions"]) == 1000, data[:300]

    t0 = time.perf_counter()
    await asyncio.gather(*[worker(c) for c in conns])
    wall = time.perf_counter() - t0
    for c in conns:
        c.close()
    return {"wall_s": wall, "times": times}


def in_process(work: Path, contexts: list[dict]) -> dict:
    """CPU cost of the service's own work (no HTTP, no load generator): ``ServeState.decide`` on one
    context and on 1,000, process CPU time (all threads: the fsync'd writer, the flusher)."""
    import torch

    from grpokit.serve import jsonio
    from grpokit.serve.app import ServeState
    from grpokit.serve.config import ServeConfig

    torch.set_num_threads(1)
    d = work / "inproc"
    d.mkdir()
    state = ServeState(ServeConfig(store=str(d / "s.duckdb")), work / "policy.pt")
    state.startup()
    one = json.dumps({"context": contexts[0]}).encode()
    batch = json.dumps({"batch": [{"context": c} for c in contexts[:1000]]}).encode()
    out = {}
    try:
        for name, body, n in (("single", one, 400), ("batch_1000", batch, 10)):
            async def go(k):
                for _ in range(k):
                    await state.decide(jsonio.loads(body))

            asyncio.run(go(max(2, n // 10)))
            c0, w0 = time.process_time(), time.perf_counter()
            asyncio.run(go(n))
            out[name] = {"cpu_ms_per_request": 1000 * (time.process_time() - c0) / n,
                         "wall_ms_per_request": 1000 * (time.perf_counter() - w0) / n}
    finally:
        state.shutdown()
    out["batch_1000"]["decisions_per_cpu_s"] = 1000 * 1000 / out["batch_1000"]["cpu_ms_per_request"]
    print(f"in process: single {out['single']['cpu_ms_per_request']:.2f} ms CPU, batch of 1000 "
          f"{out['batch_1000']['cpu_ms_per_request']:.1f} ms CPU ({out['batch_1000']['decisions_per_cpu_s']:.0f} "
          "decisions per CPU second)", flush=True)
    return out


def run(args) -> dict:
    import duckdb
    import httpx

    work = Path(tempfile.mkdtemp(prefix="grpokit-serve-bench-"))
    (work / "serve.toml").write_text("[serve]\n")  # the defaults
    contexts = make_policy(work / "policy.pt")
    single = [json.dumps({"context": c}).encode() for c in contexts]
    out: dict = {"machine": {"cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()},
                 "load_generator": "asyncio streams, keep-alive HTTP/1.1, one process on the same machine"
                                   + (" (uvloop)" if _UVLOOP else ""),
                 "work_dir": str(work)}
    from grpokit.serve.config import LogConfig

    out["serve_log_config"] = LogConfig().model_dump()  # the service runs with the defaults (writers, group commit)
    out["in_process"] = in_process(work, contexts)
    sport, bport = free_port(), free_port()
    service = start_service(work, sport, work / "policy.pt", "service.log")
    bare = subprocess.Popen([sys.executable, __file__, "--bare-server", str(bport)], stdout=open(work / "bare.log", "ab"),
                            stderr=subprocess.STDOUT)
    compare = None  # (port, process) of the other checkout's service (--compare-src)
    if args.compare_src is not None:
        cwork = work / "compare"
        cwork.mkdir()
        (cwork / "serve.toml").write_text("[serve]\n")
        cport = free_port()
        compare = (cport, start_service(cwork, cport, work / "policy.pt", "service.log", src=args.compare_src))
    try:
        wait_healthy(sport, service)
        wait_healthy(bport, bare)
        if compare is not None:
            wait_healthy(*compare)
        for port in (sport, bport) + ((compare[0],) if compare else ()):  # warm up
            asyncio.run(closed_loop(port, single, 4, 1.0))
        levels = []
        for rate in args.rates:
            row = {"offered_rps": rate}
            for name, port, proc in (("decide", sport, service), ("bare", bport, bare)):
                c0 = cpu_seconds(proc.pid)
                r = asyncio.run(open_loop(port, single, rate, args.seconds, args.max_inflight))
                r["server_cpu_ms_per_request"] = 1000 * (cpu_seconds(proc.pid) - c0) / max(r["ok"], 1)
                row[name] = r
                print(f"{name:6s} offered {rate:5.0f}/s: achieved {r['achieved_rps']:7.1f}/s  p50 {r['p50_ms'] or 0:6.2f} ms"
                      f"  p99 {r['p99_ms'] or 0:6.2f} ms  errors {r['errors']}  not sent {r['not_sent_over_inflight_cap']}"
                      f"  server CPU {r['server_cpu_ms_per_request']:.2f} ms/req",
                      flush=True)
            levels.append(row)
        out["open_loop"] = levels
        sat = {}
        rounds: list[dict] = []
        for k in range(args.saturated_rounds):  # decide then bare, alternating: each round is one pair
            pair = {}
            servers = [("decide", sport, service), ("bare", bport, bare)]
            if compare is not None:
                servers.insert(1, ("compare", *compare))
            for name, port, proc in servers:
                c0, (m0, o0) = cpu_seconds(proc.pid), thread_cpu_seconds(proc.pid)
                r = asyncio.run(closed_loop(port, single, args.concurrency, args.seconds))
                m1, o1 = thread_cpu_seconds(proc.pid)
                ok = max(r["ok"], 1)
                r["server_cpu_ms_per_request"] = 1000 * (cpu_seconds(proc.pid) - c0) / ok
                r["server_cpu_ms_per_request_main_thread"] = 1000 * (m1 - m0) / ok
                r["server_cpu_ms_per_request_other_threads"] = 1000 * (o1 - o0) / ok
                pair[name] = r
                print(f"{name:6s} saturated ({args.concurrency} workers, round {k + 1}/{args.saturated_rounds}): "
                      f"{r['achieved_rps']:7.1f}/s  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  "
                      f"server CPU {r['server_cpu_ms_per_request']:.2f} ms/request (main thread "
                      f"{r['server_cpu_ms_per_request_main_thread']:.2f}, other threads "
                      f"{r['server_cpu_ms_per_request_other_threads']:.2f})", flush=True)
            pair["ratio_decide_to_bare"] = pair["decide"]["achieved_rps"] / pair["bare"]["achieved_rps"]
            pair["ratio_by_server_cpu"] = (pair["bare"]["server_cpu_ms_per_request"]
                                           / pair["decide"]["server_cpu_ms_per_request"])
            if compare is not None:
                pair["compare_ratio_to_bare"] = pair["compare"]["achieved_rps"] / pair["bare"]["achieved_rps"]
                pair["compare_ratio_by_server_cpu"] = (pair["bare"]["server_cpu_ms_per_request"]
                                                       / pair["compare"]["server_cpu_ms_per_request"])
            rounds.append(pair)
        # the reported pair: the round with the median wall-clock ratio (the only round with the default 1)
        sat = dict(sorted(rounds, key=lambda p: p["ratio_decide_to_bare"])[(len(rounds) - 1) // 2])
        if len(rounds) > 1:
            sat["rounds"] = [{k: p[k] for k in ("ratio_decide_to_bare", "ratio_by_server_cpu")} for p in rounds]
            print("saturated ratios per round (wall clock, by server CPU):",
                  [(round(p["ratio_decide_to_bare"], 3), round(p["ratio_by_server_cpu"], 3)) for p in rounds], flush=True)
        out["saturated"] = sat
        if compare is not None:
            med = lambda xs: float(np.median(xs))  # noqa: E731
            out["compare"] = {
                "src": str(args.compare_src),
                "rounds": [{k: p[k] for k in ("ratio_decide_to_bare", "ratio_by_server_cpu", "compare_ratio_to_bare",
                                              "compare_ratio_by_server_cpu")} for p in rounds],
                "median": {n: {"achieved_rps": med([p[n]["achieved_rps"] for p in rounds]),
                               "server_cpu_ms_per_request": med([p[n]["server_cpu_ms_per_request"] for p in rounds])}
                           for n in ("decide", "compare", "bare")}}
            print(f"compare ({args.compare_src}) medians over {len(rounds)} rounds: "
                  + "; ".join(f"{n} {v['achieved_rps']:.0f}/s, {v['server_cpu_ms_per_request']:.3f} ms CPU/req"
                              for n, v in out["compare"]["median"].items()), flush=True)

        # batch decide: 1,000 contexts per request
        batches = [json.dumps({"batch": [{"context": c} for c in contexts[i:i + 1000]]}).encode()
                   for i in range(0, 5000, 1000)]
        asyncio.run(batch_load(sport, batches, 2, 1))  # warm up
        c0 = cpu_seconds(service.pid)
        b = asyncio.run(batch_load(sport, batches, args.batch_requests, args.batch_concurrency))
        batch_cpu = cpu_seconds(service.pid) - c0
        times = np.asarray(b["times"])
        out["batch"] = {"server_cpu_ms_per_request": 1000 * batch_cpu / len(times),
                        "decisions_per_server_cpu_s": 1000 * len(times) / max(batch_cpu, 1e-9),
                        "contexts_per_request": 1000, "requests": int(len(times)),
                        "concurrency": args.batch_concurrency,
                        "decisions_per_s": float(1000 * len(times) / b["wall_s"]),
                        "p50_ms": float(np.median(times) * 1000), "p99_ms": float(np.percentile(times, 99) * 1000)}
        print(f"batch of 1000 ({args.batch_concurrency} connections): {out['batch']['decisions_per_s']:.0f} decisions/s "
              f"(p50 {out['batch']['p50_ms']:.1f} ms), {out['batch']['decisions_per_server_cpu_s']:.0f} decisions per "
              "server CPU second", flush=True)

        # kill -9 in the middle of a load run
        keyed = [json.dumps({"context": contexts[k % 5000], "event_id": f"crash-{k}"}).encode() for k in range(200_000)]
        acked: list[str] = []

        async def load_then_kill():
            stop = asyncio.Event()
            task = asyncio.create_task(closed_loop(sport, keyed, args.concurrency, 60.0, acked=acked, stop_event=stop))
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < args.seconds:
                await asyncio.sleep(0.05)
            service.send_signal(signal.SIGKILL)
            await asyncio.sleep(0.5)
            stop.set()
            return await task

        asyncio.run(load_then_kill())
        service.wait(timeout=10)
        sport2 = free_port()
        restarted = start_service(work, sport2, None, "service2.log")
        t = time.perf_counter()
        health = wait_healthy(sport2, restarted)
        restart_s = time.perf_counter() - t

        # concurrent duplicate reward posts: 10 at once for each of 50 events
        async def dup_rewards():
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{sport2}", timeout=30.0) as ac:
                rs = await asyncio.gather(*[ac.post(f"/v1/events/{eid}/reward", json={"reward": float(j)})
                                            for eid in acked[:50] for j in range(10)])
            return [r.json() for r in rs]

        results = asyncio.run(dup_rewards())
    finally:
        procs = (service, bare) + ((compare[1],) if compare else ())
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
    restarted.send_signal(signal.SIGTERM)
    restarted.wait(timeout=60)
    con = duckdb.connect(str(work / "s.duckdb"), read_only=True)
    logged = {r[0] for r in con.execute("SELECT event_id FROM decisions WHERE event_id LIKE 'crash-%'").fetchall()}
    n, nd = con.execute("SELECT count(*), count(DISTINCT event_id) FROM decisions").fetchone()
    per_event = con.execute("SELECT event_id, count(*) FILTER (WHERE counted), count(*) FROM rewards "
                            "GROUP BY event_id").fetchall()
    con.close()
    lost = len(set(acked) - logged)
    out["crash"] = {"acknowledged": len(acked), "logged": len(logged), "acknowledged_lost": lost,
                    "logged_not_acknowledged": len(logged - set(acked)), "duplicates": int(n - nd),
                    "replayed_at_restart": health["log"]["replayed_at_start"], "restart_to_healthy_s": restart_s}
    print(f"kill -9: acked {len(acked)}, logged {len(logged)}, lost {lost}, duplicates {n - nd}, "
          f"replayed {health['log']['replayed_at_start']}", flush=True)
    out["duplicate_rewards"] = {
        "events": len(per_event), "posts": len(results),
        "events_with_exactly_one_counted": sum(1 for _, c, _ in per_event if c == 1),
        "answered_counted": sum(r["counted"] for r in results)}
    print(f"duplicate rewards: {out['duplicate_rewards']}", flush=True)
    out["machine"]["load_average_at_end"] = os.getloadavg()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bare-server", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--rates", type=float, nargs="+", default=[100, 200, 300, 500])
    ap.add_argument("--seconds", type=float, default=4.0, help="duration of each load level")
    ap.add_argument("--max-inflight", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=16, help="closed-loop workers at saturation")
    ap.add_argument("--compare-src", type=Path, default=None,
                    help="another checkout's src directory (e.g. from git archive): its service joins the saturated "
                         "rounds, alternating with this one's and the bare endpoint (before/after in one run)")
    ap.add_argument("--saturated-rounds", type=int, default=1,
                    help="saturated decide/bare pairs, alternating; the table shows the median-ratio pair (a "
                         "shared machine's noise then shows in the per-round ratios)")
    ap.add_argument("--batch-requests", type=int, default=40)
    ap.add_argument("--batch-concurrency", type=int, default=2, help="connections sending batches at once")
    args = ap.parse_args()
    if args.bare_server is not None:
        bare_server(args.bare_server)
        return
    if _UVLOOP:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    out = run(args)
    out["args"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2, default=float))
    print()
    print(markdown(out))


def markdown(out: dict) -> str:
    """The BENCHMARKS.md tables of one run (paste-ready)."""
    f = lambda v, d=1: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
    lines = [f"Load average at start / end: {', '.join(f'{x:.1f}' for x in out['machine']['load_average_at_start'])} / "
             f"{', '.join(f'{x:.1f}' for x in out['machine']['load_average_at_end'])} ({out['machine']['cpus']} CPUs); "
             f"load generator: {out['load_generator']}.", "",
             "| offered req/s | decide: achieved req/s | p50 ms | p99 ms | server CPU ms/req | not sent | "
             "bare: achieved req/s | p50 ms | p99 ms | server CPU ms/req | not sent |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in out["open_loop"]:
        d, b = row["decide"], row["bare"]
        lines.append(f"| {row['offered_rps']:.0f} | {f(d['achieved_rps'])} | {f(d['p50_ms'], 2)} | {f(d['p99_ms'], 2)} | "
                     f"{f(d['server_cpu_ms_per_request'], 2)} | {d['not_sent_over_inflight_cap']} | {f(b['achieved_rps'])} | "
                     f"{f(b['p50_ms'], 2)} | {f(b['p99_ms'], 2)} | {f(b['server_cpu_ms_per_request'], 2)} | "
                     f"{b['not_sent_over_inflight_cap']} |")
    sat = out["saturated"]
    d, b = sat["decide"], sat["bare"]
    lines.append(f"| saturated ({d['concurrency']} workers) | {f(d['achieved_rps'])} | {f(d['p50_ms'], 2)} | "
                 f"{f(d['p99_ms'], 2)} | {f(d['server_cpu_ms_per_request'], 2)} | - | {f(b['achieved_rps'])} | "
                 f"{f(b['p50_ms'], 2)} | {f(b['p99_ms'], 2)} | {f(b['server_cpu_ms_per_request'], 2)} | - |")
    if out.get("compare"):
        c = out["compare"]["median"]
        lines += ["", f"Saturated, medians of {len(out['compare']['rounds'])} alternating rounds, this checkout / "
                  f"`{out['compare']['src']}` / bare: {c['decide']['achieved_rps']:.0f} / {c['compare']['achieved_rps']:.0f} / "
                  f"{c['bare']['achieved_rps']:.0f} req/s, {c['decide']['server_cpu_ms_per_request']:.3f} / "
                  f"{c['compare']['server_cpu_ms_per_request']:.3f} / {c['bare']['server_cpu_ms_per_request']:.3f} ms "
                  "server CPU per request."]
    bt, ip, cr = out["batch"], out["in_process"], out["crash"]
    per_round = ""
    if sat.get("rounds"):
        per_round = (f" (the median of {len(sat['rounds'])} alternating rounds; per round: "
                     + ", ".join(f"{p['ratio_decide_to_bare']:.2f}x / {p['ratio_by_server_cpu']:.2f}x" for p in sat["rounds"])
                     + ")")
    lines += ["", f"Saturated throughput, decide / bare: **{sat['ratio_decide_to_bare']:.2f}x** wall clock, "
              f"**{sat['ratio_by_server_cpu']:.2f}x** by server CPU per request{per_round}. Server CPU per "
              f"request, main thread + other threads: decide {d.get('server_cpu_ms_per_request_main_thread', 0):.3f} + "
              f"{d.get('server_cpu_ms_per_request_other_threads', 0):.3f} ms, bare "
              f"{b.get('server_cpu_ms_per_request_main_thread', 0):.3f} + "
              f"{b.get('server_cpu_ms_per_request_other_threads', 0):.3f} ms.", "",
              f"Batch of 1,000 ({bt['requests']} requests, {bt['concurrency']} connections): **{bt['decisions_per_s']:.0f} "
              f"decisions/s** wall clock (p50 {bt['p50_ms']:.1f} ms, p99 {bt['p99_ms']:.1f} ms per request), "
              f"**{bt['decisions_per_server_cpu_s']:.0f} decisions per server CPU second** "
              f"({bt['server_cpu_ms_per_request']:.1f} ms server CPU per request).", "",
              f"In process: one decision {ip['single']['cpu_ms_per_request']:.2f} ms CPU; a batch of 1,000 "
              f"{ip['batch_1000']['cpu_ms_per_request']:.1f} ms CPU ({ip['batch_1000']['decisions_per_cpu_s']:.0f} "
              "decisions per CPU second).", "",
              f"kill -9 under load: {cr['acknowledged']} acknowledged, {cr['logged']} logged, {cr['acknowledged_lost']} "
              f"acknowledged lost, {cr['duplicates']} duplicates ({cr['replayed_at_restart']} replayed at restart, "
              f"restart to healthy {cr['restart_to_healthy_s']:.1f} s); duplicate rewards: "
              f"{out['duplicate_rewards']['events_with_exactly_one_counted']} of {out['duplicate_rewards']['events']} "
              "events with exactly one counted."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
