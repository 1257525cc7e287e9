"""Summarize the off-policy evaluation benchmarks' JSON files into the BENCHMARKS.md tables.

    python benchmarks/obd_table.py validate runs/bench/obd_validate.json
    python benchmarks/obd_table.py coverage runs/bench/ope_coverage.json
    python benchmarks/obd_table.py learn runs/bench/obd_learn_gbm_s0.json runs/bench/obd_learn_gbm_s1.json ...

``validate`` (`grpokit obd validate`): per estimator, the BTS policy's value estimated from the
random log, its 95 % CI, the relative error |V̂ − V| / V against the BTS log's on-policy value V,
and whether the CI covers V. ``coverage`` (`benchmarks/ope_coverage.py`): per estimator, bias (±
its Monte-Carlo standard error), RMSE, and coverage and mean width of the bootstrap and normal
intervals. ``learn`` (`grpokit obd learn`): one row per file (its label is the file name's
``obd_learn_<label>_s<seed>.json``), GRPO's held-out value, the random policy's, the paired
improvement over random with its 95 % CI, and the verdict the gate would give it: promote when the
CI is above 0, "hold (worse)" when below, "hold" otherwise. Every figure is read from the JSON.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def _load(path) -> dict:
    return json.loads(Path(path).read_text())


def f5(x: float) -> str:
    """``x`` to 5 decimals, a value that rounds to zero printed as 0.00000 (never -0.00000)."""
    s = f"{x:.5f}"
    return s[1:] if s.startswith("-") and float(s) == 0.0 else s


def validate(path) -> str:
    r = _load(path)
    v = r["on_policy_value"]
    lines = [f"| estimator | estimate | 95 % CI | relative error | CI covers {f5(v)} |", "| --- | --- | --- | --- | --- |"]
    for name, e in r["estimators"].items():
        lines.append(f"| {name} | {f5(e['value'])} | [{f5(e['ci_low'])}, {f5(e['ci_high'])}] | {e['relative_error']:.3f} "
                     f"| {'yes' if e['ci_covers_on_policy'] else 'no'} |")
    return "\n".join(lines)


def coverage(path, labels: dict[str, str] | None = None) -> str:
    r = _load(path)
    lines = ["| estimator | bias (± se) | RMSE | bootstrap coverage | width | normal coverage | width |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for e in r["rows"]:
        lines.append(f"| {(labels or {}).get(e['estimator'], e['estimator'])} | {e['bias']:+.4f} ± {e['bias_se']:.4f} "
                     f"| {e['rmse']:.4f} | {e['coverage_bootstrap']:.3f} | {e['width_bootstrap']:.4f} "
                     f"| {e['coverage_normal']:.3f} | {e['width_normal']:.4f} |")
    return "\n".join(lines)


def _verdict(imp: dict) -> str:
    return "promote" if imp["ci_low"] > 0 else "hold (worse)" if imp["ci_high"] < 0 else "hold"


def learn(paths, labels: dict[str, str] | None = None) -> str:
    lines = ["| outcome model, config | seed | GRPO value [95 % CI] | random | improvement [95 % CI] | verdict |",
             "| --- | --- | --- | --- | --- | --- |"]
    for path in paths:
        m = re.fullmatch(r"obd_learn_(?P<label>.+)_s(?P<seed>\d+)\.json", Path(path).name)
        if m is None:
            raise SystemExit(f"{path}: expected a name obd_learn_<label>_s<seed>.json")
        r = _load(path)
        g, rnd, imp = r["policies"]["grpo"], r["policies"]["random"], r["improvement_over_random"]
        lines.append(f"| {(labels or {}).get(m['label'], m['label'])} | {m['seed']} "
                     f"| {f5(g['value'])} [{f5(g['ci_low'])}, {f5(g['ci_high'])}] | {f5(rnd['value'])} "
                     f"| {f5(imp['value'])} [{f5(imp['ci_low'])}, {f5(imp['ci_high'])}] | {_verdict(imp)} |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[0] not in ("validate", "coverage", "learn"):
        raise SystemExit(__doc__)
    kind, files = argv[0], argv[1:]
    print(learn(files) if kind == "learn" else validate(files[0]) if kind == "validate" else coverage(files[0]))


if __name__ == "__main__":
    main(sys.argv[1:])
