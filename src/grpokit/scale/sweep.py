"""Sweeps: one workflow (``grpokit run`` or ``grpokit train``) per grid point x seed, serially or as
parallel Ray tasks, into one table (``sweep.csv``, ``sweep.json``).

A grid ``{"grpo.lr": [0.001, 0.003]}`` with ``seeds=5`` is 2 x 5 runs; seed s sets every key of
``seed_keys`` (default ``grpo.seed`` and ``evaluation.seed``) to s. Each run builds its config from the
resolved dict the driver validated (so a bad key fails before anything runs), trains with one torch
thread (so a run's floating-point reductions are the same on every backend), and returns its summary's
numeric leaves flattened to ``a.b.c`` columns. Timings (``*seconds*``, ``decisions_per_second``) are
left out of the columns, which makes the table of a Ray sweep equal to the serial one; each row's own
``wall_s`` is kept beside them.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from grpokit.scale._ray import check_backend

__all__ = ["parse_grid", "expand_grid", "run_sweep", "SweepResult", "WORKFLOWS", "DEFAULT_SEED_KEYS"]

WORKFLOWS = ("run", "train")
DEFAULT_SEED_KEYS = ("grpo.seed", "evaluation.seed")
_SKIP = ("second", "elapsed", "report")


def parse_grid(items: list[str] | None) -> dict[str, list]:
    """``["grpo.lr=0.001,0.003", "scenario.spillover=0,0.3"]`` -> ``{"grpo.lr": [0.001, 0.003], ...}``.

    Values are TOML literals (numbers, booleans, quoted strings; bare words are strings), split on
    commas outside brackets and quotes."""
    from grpokit.config import ConfigError, _parse_value

    grid: dict[str, list] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set-grid {item!r} must look like section.key=v1,v2")
        key, text = (s.strip() for s in item.split("=", 1))
        if len(key.split(".")) < 2 or not all(key.split(".")):
            raise ConfigError(f"--set-grid {item!r}: the key must name a section and a key, like grpo.lr=0.001,0.003")
        if key in grid:
            raise ConfigError(f"--set-grid names {key!r} twice")
        values = [_parse_value(v.strip()) for v in _split_values(text)]
        if not values or any(v == "" for v in values):
            raise ConfigError(f"--set-grid {item!r}: give at least one value, separated by commas")
        grid[key] = values
    return grid


def _split_values(text: str) -> list[str]:
    out, depth, quote, cur = [], 0, None, ""
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(cur)
            cur = ""
            continue
        cur += ch
    out.append(cur)
    return out


def _toml_literal(v) -> str:
    from grpokit.config import _toml_value

    return _toml_value(v)


def expand_grid(grid: dict[str, list], seeds: list[int], seed_keys=DEFAULT_SEED_KEYS) -> list[dict]:
    """Every grid point x seed: ``{"name", "point" (key -> value), "seed", "overrides" (section.key=v)}``.

    Seeds vary fastest; names are ``<k>=<v>_..._seed<s>`` with keys shortened to their last part."""
    if not seeds:
        raise ValueError("a sweep needs at least one seed")
    keys = list(grid)
    runs = []
    for values in itertools.product(*(grid[k] for k in keys)) if keys else [()]:
        point = dict(zip(keys, values))
        for s in seeds:
            overrides = [f"{k}={_toml_literal(v)}" for k, v in point.items()]
            overrides += [f"{k}={int(s)}" for k in seed_keys if k not in point]
            label = "_".join(f"{k.split('.')[-1]}={v}" for k, v in point.items())
            name = (label + "_" if label else "") + f"seed{s}"
            runs.append({"name": _safe(name), "point": point, "seed": int(s), "overrides": overrides})
    return runs


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "=._-" else "-" for ch in name)


def flatten(summary: dict, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a summary as ``a.b.c`` -> float (booleans as 0/1; timings and paths left out)."""
    out: dict[str, float] = {}
    for k, v in summary.items():
        key = f"{prefix}{k}"
        if any(s in str(k) for s in _SKIP) or k in ("decisions_per_second", "assignment"):
            continue
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, bool):
            out[key] = float(v)
        elif isinstance(v, (int, float)) and v is not None:
            out[key] = float(v)
    return out


def _run_one(config_dict: dict, overrides: list[str], workflow: str, out_dir: str | None, threads: int) -> dict:
    """Build the run's config and run its workflow; returns the flattened summary and the wall time."""
    import torch

    from grpokit.config import apply_overrides, build_config

    torch.set_num_threads(threads)
    config = build_config(apply_overrides(config_dict, overrides))
    t0 = time.perf_counter()
    if workflow == "run":
        from grpokit.business import run_business

        if out_dir is None:
            raise ValueError("the run workflow writes a report: it needs an output directory")
        summary = run_business(config, out_dir)
    else:
        from grpokit.runner import run_training

        summary = run_training(config, out_dir) if out_dir is not None else _train_in_memory(config)
    return {"metrics": flatten(summary), "wall_s": time.perf_counter() - t0}


def _train_in_memory(config) -> dict:
    from grpokit.runner import build_trainer

    return build_trainer(config, None).train()


@dataclass
class SweepResult:
    """``rows``: one dict per run (``name``, the grid keys, ``seed``, ``wall_s``, the metric columns);
    ``wall_s``: the whole sweep's wall time; files written when an ``out`` was given."""

    rows: list[dict]
    grid: dict[str, list]
    seeds: list[int]
    workflow: str
    backend: str
    wall_s: float
    files: dict[str, str] = field(default_factory=dict)

    def metric_columns(self) -> list[str]:
        fixed = {"name", "seed", "wall_s", *self.grid}
        cols: dict[str, None] = {}
        for r in self.rows:
            cols.update({k: None for k in r if k not in fixed})
        return list(cols)

    def aggregate(self, columns: list[str] | None = None) -> list[dict]:
        """Per grid point: each metric's mean, sample sd and count over seeds."""
        columns = columns or self.metric_columns()
        groups: dict[tuple, list[dict]] = {}
        for r in self.rows:
            groups.setdefault(tuple(json.dumps(r[k]) for k in self.grid), []).append(r)
        out = []
        for rows in groups.values():
            agg = {k: rows[0][k] for k in self.grid}
            agg["n_seeds"] = len(rows)
            for c in columns:
                vals = [r[c] for r in rows if r.get(c) is not None and math.isfinite(r[c])]
                if vals:
                    mean = sum(vals) / len(vals)
                    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else float("nan")
                    agg[c] = {"mean": mean, "sd": sd, "n": len(vals)}
            out.append(agg)
        return out

    def to_dict(self) -> dict:
        return {"workflow": self.workflow, "backend": self.backend, "grid": self.grid, "seeds": self.seeds,
                "wall_s": self.wall_s, "rows": self.rows, "aggregate": self.aggregate()}


def run_sweep(
    config: str | Path | None,
    grid: dict[str, list] | None = None,
    seeds: int | list[int] = 5,
    *,
    workflow: str = "run",
    backend: str = "local",
    out: str | Path | None = None,
    overrides: list[str] | None = None,
    seed_keys=DEFAULT_SEED_KEYS,
    threads_per_run: int = 1,
    address: str | None = None,
    num_cpus: int | None = None,
    on_result=None,
) -> SweepResult:
    """Run ``workflow`` for every grid point x seed; ``backend="ray"`` runs them as parallel Ray tasks
    (one CPU each, ``threads_per_run`` torch threads), ``"local"`` one after the other in this process.

    ``config``: a TOML run file (None: the defaults); ``overrides``: ``--set`` overrides applied to
    every run before the grid's; ``out``: the sweep directory (``runs/<name>/`` per run, ``sweep.csv``,
    ``sweep.json``; required by ``workflow="run"``). Every run's config is validated on the driver before
    any starts. ``on_result(row)`` is called as each run finishes (in completion order).
    """
    from grpokit.config import ConfigError, apply_overrides, build_config, load_config

    check_backend(backend)
    if workflow not in WORKFLOWS:
        raise ValueError(f"unknown workflow {workflow!r}; choose one of {list(WORKFLOWS)}")
    grid = dict(grid or {})
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if isinstance(seeds, int) and seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    base = load_config(config, overrides or []).model_dump(mode="json")
    runs = expand_grid(grid, seed_list, seed_keys)
    for r in runs:  # fail on a bad grid value before anything runs, naming the key
        try:
            build_config(apply_overrides(base, r["overrides"]))
        except ConfigError as err:
            raise ConfigError(f"sweep run {r['name']}: {err}") from None
    out_path = Path(out) if out is not None else None
    if workflow == "run" and out_path is None:
        raise ValueError("the run workflow writes a report per run: give the sweep an output directory (out)")
    if out_path is not None:
        existing = [r["name"] for r in runs if (out_path / "runs" / r["name"] / "summary.json").exists()]
        if existing:
            raise FileExistsError(f"{out_path} already holds runs {existing[:3]}: choose another --out")
    run_dirs = [str(out_path / "runs" / r["name"]) if out_path is not None else None for r in runs]

    t0 = time.perf_counter()
    results: list[dict | None] = [None] * len(runs)

    def _row(i: int, res: dict) -> dict:
        r = runs[i]
        row = {"name": r["name"], **r["point"], "seed": r["seed"], "wall_s": res["wall_s"], **res["metrics"]}
        results[i] = row
        if on_result is not None:
            on_result(row)
        return row

    if backend == "local":
        for i, r in enumerate(runs):
            _row(i, _run_one(base, r["overrides"], workflow, run_dirs[i], threads_per_run))
    else:
        from grpokit.scale._ray import init_ray

        ray = init_ray(address, num_cpus)
        task = ray.remote(num_cpus=1)(_run_one)
        refs = {task.remote(base, r["overrides"], workflow, run_dirs[i], threads_per_run): i for i, r in enumerate(runs)}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            _row(refs[done[0]], ray.get(done[0]))
    result = SweepResult([r for r in results if r is not None], grid, seed_list, workflow, backend,
                         time.perf_counter() - t0)
    if out_path is not None:
        result.files = write_table(result, out_path)
    return result


def write_table(result: SweepResult, out: Path) -> dict[str, str]:
    """``sweep.csv`` (one row per run) and ``sweep.json`` (rows + per-grid-point mean/sd), atomically."""
    import csv
    import io

    from grpokit.atomic import atomic_write_json, atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    cols = ["name", *result.grid, "seed", "wall_s", *result.metric_columns()]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    writer.writeheader()
    for r in result.rows:
        writer.writerow({k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in r.items()})
    csv_path = atomic_write_text(out / "sweep.csv", buf.getvalue())
    json_path = atomic_write_json(out / "sweep.json", result.to_dict())
    return {"csv": str(csv_path), "json": str(json_path)}
