"""The closed loop over seeds: the issue's targets (share of the oracle, no worse promotion, coverage).

    python benchmarks/loop_seeds.py --seeds 0 1 2 3 4 --out runs/loop_seeds [--jobs 2] [--set loop.drift=0.1]

Runs ``grpokit loop examples/marketing_loop.toml --out OUT/seed_S --set loop.seed=S --set grpo.seed=S``
per seed (``--jobs`` at a time), then prints one line per seed and the totals from the summaries.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def run(seed: int, out: Path, config: str, extra: list[str]) -> float:
    cmd = [str(Path(sys.executable).with_name("grpokit")), "loop", config, "--out", str(out / f"seed_{seed}"), "--quiet",
           "--set", f"loop.seed={seed}", "--set", f"grpo.seed={seed}"] + [a for s in extra for a in ("--set", s)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def table(out: Path, seeds: list[int]) -> dict:
    rows, cov, ints, worse = [], 0, 0, 0
    for s in seeds:
        sm = json.loads((out / f"seed_{s}" / "summary.json").read_text())
        f = sm["final"]
        verdicts = " ".join(r["verdict"].split(" ")[0] + ("(gate)" if "(gate)" in r["verdict"] else "")
                            for r in sm["rounds"])
        pilots = [r["pilot"].get("decisions") for r in sm["rounds"] if r.get("pilot")]
        rows.append(f"seed {s}: final share {f['share_of_oracle']:.3f} ({f['live_label']}); verdicts {verdicts}; "
                    f"intervals {sm['coverage']['covered']}/{sm['coverage']['intervals']}; "
                    f"promoted worse {sm['promoted_worse']}; pilots {len(pilots)} "
                    f"({sum(p or 0 for p in pilots)} decisions); wall {sm['wall_seconds']:.0f} s")
        cov += sm["coverage"]["covered"]
        ints += sm["coverage"]["intervals"]
        worse += len(sm["promoted_worse"])
    shares = [json.loads((out / f"seed_{s}" / "summary.json").read_text())["final"]["share_of_oracle"] for s in seeds]
    print("\n".join(rows))
    print(f"seeds at >= 0.90 of the oracle: {sum(x >= 0.9 for x in shares)}/{len(seeds)}; promotions of a worse "
          f"policy: {worse}; intervals covering the truth: {cov}/{ints} = {cov / max(ints, 1):.3f}")
    return {"shares": shares, "covered": cov, "intervals": ints, "promoted_worse": worse}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--out", type=Path, default=Path("runs/loop_seeds"))
    ap.add_argument("--config", default="examples/marketing_loop.toml")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--set", dest="extra", action="append", default=[])
    ap.add_argument("--table-only", action="store_true")
    args = ap.parse_args()
    if not args.table_only:
        with ThreadPoolExecutor(args.jobs) as ex:
            for s, sec in zip(args.seeds, ex.map(lambda s: run(s, args.out, args.config, args.extra), args.seeds)):
                print(f"seed {s}: {sec:.0f} s wall", flush=True)
    table(args.out, args.seeds)


if __name__ == "__main__":
    main()
