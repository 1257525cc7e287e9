"""Batch scoring throughput and memory: ``score_table`` local (pyarrow batches) vs ray (Ray Data actors).

    .venv/bin/python benchmarks/scale_score.py --rows 250000 1000000 --json runs/bench/scale_score.json

Writes a customers table of each size (id, age, basket, region, is_member; row groups of 128k rows),
a categorical policy (MLP [64, 64], 5 actions, with its feature encoder), and scores it in a fresh
subprocess per (backend, size) with epsilon 0.05, seed 0, batches of 65,536 rows: rows/s and the
driver's peak RSS (``ru_maxrss``); for ray also the peak summed RSS of the Ray worker processes
(sampled every 0.2 s with psutil) and the scorer concurrency (2 on this 2-core machine). Checks that
both backends' decisions are identical, row by row.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, threading, time
from grpokit.scoring import score_table
backend, policy, inp, out, conc = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
peak = {"workers": 0}
stop = False
def sample():
    import psutil
    while not stop:
        tot = 0
        for p in psutil.process_iter(["cmdline", "memory_info"]):
            try:
                cmd = " ".join(p.info["cmdline"] or [])
                if "ray::" in cmd or "default_worker.py" in cmd:
                    tot += p.info["memory_info"].rss
            except Exception:
                pass
        peak["workers"] = max(peak["workers"], tot)
        time.sleep(0.2)
kw = {}
rss = []  # the driver's RSS after every 8th batch (local backend): flat means bounded memory
if backend == "local":
    import psutil
    me = psutil.Process()
    kw["on_batch"] = lambda n: rss.append((n, me.memory_info().rss / 2**20)) if len(rss) == 0 or n // 65536 % 8 == 0 else None
if backend == "ray":
    import ray
    t0 = time.perf_counter(); ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False); init_s = time.perf_counter() - t0
    threading.Thread(target=sample, daemon=True).start()
    kw["concurrency"] = conc
s = score_table(policy, inp, out, epsilon=0.05, seed=0, batch_rows=65536, backend=backend, **kw)
stop = True
res = {"rows": s["rows"], "seconds": s["seconds"], "rows_per_s": s["rows_per_second"],
       "driver_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
if rss:
    res["rss_mb_by_rows"] = [[n, round(m, 1)] for n, m in rss]
if backend == "ray":
    res.update(ray_init_s=init_s, workers_peak_rss_mb=peak["workers"] / 2**20, concurrency=conc)
print("RESULT " + json.dumps(res))
"""


def make_table(path: Path, n: int, seed: int = 0) -> None:
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    writer = None
    for start in range(0, n, 131072):
        m = min(131072, n - start)
        df = pd.DataFrame({"customer_id": np.arange(start, start + m), "age": rng.normal(40, 12, m).round(),
                           "basket": rng.gamma(2.0, 30.0, m), "region": rng.choice(["north", "south", "east", "west"], m),
                           "is_member": rng.random(m) < 0.3})
        t = pa.Table.from_pandas(df, preserve_index=False)
        writer = writer or pq.ParquetWriter(path, t.schema)
        writer.write_table(t)
    writer.close()


def make_policy(path: Path, sample: Path) -> None:
    import pandas as pd
    import pyarrow.parquet as pq
    import torch

    from grpokit.policy import CategoricalHead, MLPTorso, Policy
    from grpokit.policy.features import FeatureEncoder
    from grpokit.policy.io import save_policy

    df = pq.ParquetFile(sample).read_row_group(0).to_pandas()
    enc = FeatureEncoder.infer(df, ["age", "basket", "region", "is_member"]).fit(df)
    torch.manual_seed(0)
    pol = Policy(MLPTorso(enc.dim, [64, 64]), CategoricalHead(5))
    save_policy(pol, path, {"action_labels": ["none", "5% off", "10% off", "20% off", "free shipping"]}, encoder=enc)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[250_000, 1_000_000])
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--backends", nargs="+", default=["local", "ray"], choices=["local", "ray"])
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    import pyarrow.parquet as pq

    tmp = Path(tempfile.mkdtemp(prefix="scale_score_"))
    results = []
    policy = tmp / "policy.pt"
    for n in args.rows:
        inp = tmp / f"customers_{n}.parquet"
        make_table(inp, n)
        if not policy.exists():
            make_policy(policy, inp)
        outs = {}
        for backend in args.backends:
            outs[backend] = tmp / f"decisions_{backend}_{n}.parquet"
            p = subprocess.run([sys.executable, "-c", CHILD, backend, str(policy), str(inp), str(outs[backend]),
                                str(args.concurrency)], capture_output=True, text=True)
            line = next((ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                raise SystemExit(f"{backend} {n} failed:\n{p.stderr[-3000:]}")
            res = {"backend": backend, "rows": n, **json.loads(line[7:])}
            print(json.dumps(res))
            results.append(res)
        if len(outs) < 2:
            for f in (inp, *outs.values()):
                f.unlink()
            continue
        a, b = pq.ParquetFile(outs["local"]), pq.ParquetFile(outs["ray"])
        same = all(x.column("action_code").equals(y.column("action_code")) and x.column("customer_id").equals(y.column("customer_id"))
                   for x, y in zip(a.iter_batches(batch_size=262144, columns=["customer_id", "action_code"]),
                                   b.iter_batches(batch_size=262144, columns=["customer_id", "action_code"])))
        results.append({"rows": n, "decisions_identical": same})
        print(json.dumps(results[-1]))
        for f in (inp, *outs.values()):
            f.unlink()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
