"""Markdown tables of a `grpokit bench llm-preferences` JSON (the BENCHMARKS.md section).

    python benchmarks/llm_table.py runs/bench/llm_preferences.json
"""

from __future__ import annotations

import json
import sys


def fmt_steps(v) -> str:
    return "never" if v is None else f"{v:g}"


def main(path: str) -> None:
    res = json.loads(open(path).read())
    personas = res["personas"]
    head = "| method | " + " | ".join(f"{p['name']} {p['share'] * 100:g}%" for p in personas) + " | weighted | NLL |"
    sep = "|---|" + "---:|" * (len(personas) + 2)
    print("Final pass rate (mean over seeds):\n")
    print(head)
    print(sep)
    for m, b in res["methods"].items():
        cells = [f"{b['per_group'][p['name']]['final_reward']:.2f}" for p in personas]
        print(f"| {m} | " + " | ".join(cells) + f" | {b['final_reward_weighted']:.3f} | {b['heldout_nll']:.2f} |")
    sft = res["sft"]
    print("| supervised (start) | " + " | ".join(f"{sft['pass_rate'][p['name']]:.2f}" for p in personas) + f" | | {sft['heldout_nll']:.2f} |")
    for key, title in (("steps_to_90", "reward 1.0"), ("steps_to_90_of_best", "the best any method reached")):
        print(f"\nSteps to 90 % of {title} (median over seeds; per seed in brackets):\n")
        print("| method | " + " | ".join(p["name"] for p in personas) + " |")
        print("|---|" + "---:|" * len(personas))
        for m, b in res["methods"].items():
            cells = []
            for p in personas:
                pg = b["per_group"][p["name"]]
                cells.append(f"{fmt_steps(pg[key])} [{', '.join(fmt_steps(x) for x in pg[key + '_per_seed'])}]")
            print(f"| {m} | " + " | ".join(cells) + " |")
    print("\nTargets:", json.dumps(res["targets"], indent=1))
    for m, b in res["methods"].items():
        if any(b["groups_found"]):
            print(m, "groups:", b["groups_found"])


if __name__ == "__main__":
    main(sys.argv[1])
