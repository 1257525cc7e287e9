"""GRADE learned from a ranking log alone, judged on the simulator's ground truth.

    python benchmarks/fusion_from_log.py --seeds 0 1 2 --n-log 20000 --log-policy default

For each seed: simulate a production log of the marketplace-search scenario (examples/fusion.toml),
run `grpokit fusion learn` (examples/fusion_log.toml: offline-auction rewards, held-out split),
then score every learned policy on fresh simulated requests with the *true* expected GMV / orders
(which the learner never saw) next to the offline auction's held-out estimate. This checks
whether the offline auction's verdict carries over to the truth.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch

from grpokit.config import load_config
from grpokit.policy.io import load_policy
from grpokit.ranking.grade_log import learn_fusion_from_log
from grpokit.ranking.logs import RankingSchema, read_ranking_log
from grpokit.scenarios.registry import scenario_from_config

ROOT = Path(__file__).resolve().parents[1]


def run_seed(seed: int, n_log: int, log_policy: str, sets: list[str]) -> dict:
    import tomllib

    sim_cfg = load_config(ROOT / "examples" / "fusion.toml")
    sc = scenario_from_config(sim_cfg.scenario)
    df = sc.simulate_log(n_log, log_policy, seed=1000 + seed)
    schema = RankingSchema(**tomllib.loads((ROOT / "examples" / "search_log_schema.toml").read_text()))
    log = read_ranking_log(df, schema)
    cfg = load_config(ROOT / "examples" / "fusion_log.toml", [f"grpo.seed={seed}", f"fusion.seed={seed}", *sets])
    with tempfile.TemporaryDirectory() as d:
        summary = learn_fusion_from_log(log, cfg, d)
        policy, _ = load_policy(Path(d) / "policy.pt")
    ctx = sc.sample_contexts(20_000, torch.Generator().manual_seed(50_000 + seed))
    with torch.no_grad():
        grade_w = policy.eval()(ctx.obs, ctx.group).mode().float()
    weights = {"static_default": sc.static_default_weights, "static_tuned": torch.tensor(summary["static_tuned_weights"]),
               "grade": grade_w}
    if summary["static_per_segment_weights"]:
        table = torch.stack([torch.tensor(summary["static_per_segment_weights"][t]) for t in sc.group_names])
        weights["static_per_segment"] = table[ctx.group]
    out = {}
    for name, w in weights.items():
        m = sc.true_metrics(ctx, w)
        out[name] = {"true_gpm": m["gpm"], "true_opm": m["opm"], "auction_posterior": summary["policies"][name]["posterior"],
                     "auction_vs_tuned": summary["policies"][name].get("vs_static_tuned")}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--n-log", type=int, default=20_000)
    ap.add_argument("--log-policy", choices=["default", "uniform"], default="default")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="config overrides for fusion_log.toml")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    runs = {s: run_seed(s, a.n_log, a.log_policy, a.sets) for s in a.seeds}
    print(f"log: {a.n_log:,} requests, logging policy {a.log_policy}; truth on 20,000 fresh requests per seed")
    print("| policy | true GPM (mean ± sd) | true GPM vs static_tuned per seed | auction posterior vs static_tuned per seed [95 % CI] |")
    print("| --- | --- | --- | --- |")
    for name in runs[a.seeds[0]]:
        g = [runs[s][name]["true_gpm"] for s in a.seeds]
        rel = [runs[s][name]["true_gpm"] / runs[s]["static_tuned"]["true_gpm"] - 1 for s in a.seeds]
        vs = [runs[s][name]["auction_vs_tuned"] for s in a.seeds]
        auction = ", ".join("–" if v is None else f"{v['mean']:+.3f} [{v['ci_low']:+.3f}, {v['ci_high']:+.3f}]" for v in vs)
        sd = statistics.stdev(g) if len(g) > 1 else 0.0
        print(f"| {name} | {statistics.mean(g):.1f} ± {sd:.1f} | {', '.join(f'{100 * x:+.2f} %' for x in rel)} | {auction} |")
    if a.json:
        a.json.write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
