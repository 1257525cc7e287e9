"""Wall time of the BTS action-distribution simulation on the real OBD prior (moved out of the tests:
timed assertions fail on a loaded machine). Usage: python benchmarks/obd_bts_speed.py [--root ../shared/data/obd]"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from grpokit.datasets.obd import bts_action_dist


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data" / "obd")
    ap.add_argument("--n-sim", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    path = args.root / "bts" / "all" / "prior_bts.json"
    if not path.is_file():
        raise SystemExit(f"no OBD prior at {path}: give --root (the folder with random/ and bts/)")
    times = []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        bts_action_dist(path, n_sim=args.n_sim, seed=r)
        times.append(time.perf_counter() - t0)
    print(json.dumps({"n_sim": args.n_sim, "seconds": times, "best": min(times)}))


if __name__ == "__main__":
    main()
