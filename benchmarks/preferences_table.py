"""Summarize `grpokit bench preferences` JSON files into the BENCHMARKS.md preference tables.

    python benchmarks/preferences_table.py runs/bench/pref_sparse.json
    python benchmarks/preferences_table.py runs/bench/pref_sparse.json --per-seed g1 g2

One markdown row per method, in the file's order: the true value of the deterministic policy (mean
± sd over the training seeds), each group's value as a fraction of its oracle value,
v_g(method) / v_g(oracle) (means over seeds), and the median over seeds of the first evaluation
step at which the group reached 90 % of its oracle value ("never" if any seed did not). ``--per-seed
GROUP ...`` adds, per method, the per-seed lists of those steps. Every figure is read from the JSON;
nothing is typed by hand.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _steps(x) -> str:
    return "never" if x is None else f"{x:g}"


def table(path: Path, label: dict[str, str] | None = None) -> str:
    """The markdown table of one `grpokit bench preferences --json` file; ``label`` renames methods."""
    result = json.loads(Path(path).read_text())
    methods = result["methods"]
    if not methods:
        raise SystemExit(f"{path}: no methods in the file")
    groups = list(next(iter(methods.values()))["oracle"]["per_group"])
    lines = ["| method | value (± sd) | " + " | ".join(groups) + " | steps to 90 % (" + " / ".join(groups) + ") |",
             "| --- | --- | " + " | ".join("---" for _ in groups) + " | --- |"]
    for name, block in methods.items():
        p, oracle = block["policies"][name], block["oracle"]["per_group"]
        row = [(label or {}).get(name, name), f"{p['value']:.4f} ± {p['value_std']:.4f}"]
        row += [f"{p['per_group'][g] / oracle[g]:.3f}" for g in groups]
        row.append(" / ".join(_steps(block["steps_to_90pct"][g]) for g in groups))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def per_seed(path: Path, groups: list[str]) -> str:
    """Per method and group, the steps to 90 % of each seed, one line per group."""
    result = json.loads(Path(path).read_text())
    out = []
    for g in groups:
        parts = [f"{name} [{', '.join(_steps(s) for s in block['steps_to_90pct_per_seed'][g])}]"
                 for name, block in result["methods"].items()]
        out.append(f"{g}: " + "; ".join(parts))
    return "\n".join(out)


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit(__doc__)
    path = Path(argv[0])
    print(table(path))
    if "--per-seed" in argv:
        print(per_seed(path, argv[argv.index("--per-seed") + 1:]))


if __name__ == "__main__":
    main(sys.argv[1:])
