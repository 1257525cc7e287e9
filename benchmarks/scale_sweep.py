"""Sweep wall time, serial vs Ray tasks: the 5-seed marketing table (``grpokit run examples/marketing.toml``).

    .venv/bin/python benchmarks/scale_sweep.py --seeds 5 --steps 60 --json runs/bench/scale_sweep.json

Runs the same sweep twice (backend local, then ray with ``--num-cpus`` CPUs: one run per CPU) into
two directories, checks that the two tables are equal (every column but wall_s), and reports both
wall times and their ratio. ``--steps`` reduces grpo.steps (the example has 400) to keep the run short;
Ray's start-up (the local cluster, the workers' imports) is included in the ray wall time.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import ray
    import torch

    from grpokit.scale.sweep import run_sweep

    torch.set_num_threads(1)
    overrides = [f"grpo.steps={args.steps}"]
    cfg = ROOT / "examples" / "marketing.toml"
    tmp = Path(tempfile.mkdtemp(prefix="scale_sweep_"))
    local = run_sweep(cfg, {}, args.seeds, workflow="run", out=tmp / "local", overrides=overrides)
    t0 = time.perf_counter()
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    init_s = time.perf_counter() - t0
    remote = run_sweep(cfg, {}, args.seeds, workflow="run", backend="ray", out=tmp / "ray", overrides=overrides)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]  # noqa: E731
    equal = strip(local.rows) == strip(remote.rows)
    out = {
        "seeds": args.seeds, "grpo.steps": args.steps, "num_cpus": args.num_cpus,
        "serial_wall_s": local.wall_s, "ray_init_s": init_s, "ray_wall_s": remote.wall_s,
        "ray_wall_with_init_s": remote.wall_s + init_s, "speedup": local.wall_s / remote.wall_s,
        "speedup_with_init": local.wall_s / (remote.wall_s + init_s), "tables_equal": equal,
        "mean_run_s_serial": sum(r["wall_s"] for r in local.rows) / len(local.rows),
        "mean_run_s_ray": sum(r["wall_s"] for r in remote.rows) / len(remote.rows),
        "grpo_value": [r["policies.grpo.value"] for r in local.rows],
    }
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
    if not equal:
        raise SystemExit("the Ray table differs from the serial one")


if __name__ == "__main__":
    main()
