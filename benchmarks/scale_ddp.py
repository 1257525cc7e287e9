"""Multi-worker GRPO on CPU: steps/s with 1 and 2 Ray Train (gloo) workers, and the equality check.

    .venv/bin/python benchmarks/scale_ddp.py --steps 40 --batch 1024 --json runs/bench/scale_ddp.json

Trains the preference scenario with P-GRPO for ``--steps`` steps of a global batch of ``--batch``
contexts x G, in this process (num_workers=0), then under TorchTrainer with 1 and 2 workers (one CPU,
one torch thread each). Steps/s is measured inside the workers (training loop only, without Ray
Train's start-up, which is reported apart). Equality: the largest weight difference of each run to
the in-process run, and the P-GRPO statistics' largest difference.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import ray
    import torch

    from grpokit.config import load_config
    from grpokit.scale.ddp import train_distributed

    torch.set_num_threads(1)
    cfg = load_config(None, [f"grpo.steps={args.steps}", f"grpo.batch_size={args.batch}", f"grpo.group_size={args.group}",
                             "grpo.advantage.name=pgrpo", f"grpo.eval_every={args.steps}", "grpo.eval_size=1024"])
    ref = train_distributed(cfg, num_workers=0)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    out = {"steps": args.steps, "batch": args.batch, "group": args.group,
           "in_process_steps_per_s": ref["summary"]["workers"]["steps_per_second"], "runs": {}}
    for w in (1, 2):
        t0 = time.perf_counter()
        res = train_distributed(cfg, num_workers=w)
        total = time.perf_counter() - t0
        p1, p2 = ref["state"]["policy"], res["state"]["policy"]
        s1, s2 = ref["state"]["advantage"]["total"], res["state"]["advantage"]["total"]
        out["runs"][w] = {
            "steps_per_s": res["summary"]["workers"]["steps_per_second"],
            "decisions_per_s": res["summary"]["workers"]["steps_per_second"] * args.batch * args.group,
            "fit_wall_s": total,
            "max_weight_diff_vs_in_process": max(float((p1[k] - p2[k]).abs().max()) for k in p1),
            "max_stats_diff_vs_in_process": max(float((s1[k] - s2[k]).abs().max()) for k in s1),
            "max_param_diff_across_workers": res["summary"]["workers"]["max_param_diff"],
            "max_stats_diff_across_workers": res["summary"]["workers"]["max_stats_diff"],
            "value": res["summary"]["policies"]["pgrpo"]["value"],
        }
    out["speedup_2_vs_1"] = out["runs"][2]["steps_per_s"] / out["runs"][1]["steps_per_s"]
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
