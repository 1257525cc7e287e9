"""``grpokit bench``: throughput and the preference-group comparison."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from grpokit.cli._common import (
    SetOption,
    _fail,
    _load,
    _write_json,
    console,
)

bench_app = typer.Typer(help="Benchmarks: throughput, the preference-group comparison, the LLM persona benchmark.", no_args_is_help=True)


def _preferences_table(result: dict, title: str) -> Table:
    methods = result["methods"]
    first = next(iter(methods.values()))
    groups = list(first["oracle"]["per_group"])
    table = Table(title=title, caption="group columns: value / oracle value; steps: first step at 90 % of oracle")
    table.add_column("method")
    table.add_column("value", justify="right")
    table.add_column("± sd", justify="right")
    for g in groups:
        table.add_column(g, justify="right")
    table.add_column("steps to 90% (" + " / ".join(groups) + ")", justify="right")
    for name, block in methods.items():
        p = block["policies"][name]
        row = [name, f"{p['value']:.4f}", f"{p['value_std']:.4f}"]
        row += [f"{p['per_group'][g] / first['oracle']['per_group'][g]:.3f}" for g in groups]
        row.append(" / ".join("never" if block["steps_to_90pct"][g] is None else f"{block['steps_to_90pct'][g]:g}" for g in groups))
        table.add_row(*row)
    o = first["oracle"]
    table.add_row("oracle", f"{o['value']:.4f}", "", *["1.000"] * len(groups), "")
    return table


@bench_app.command("preferences")
def bench_preferences(
    json_out: Path = typer.Option(..., "--json", help="Where to write the results (one block per method)"),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML run file (default: built-in preference scenario)"),
    seeds: int = typer.Option(3, "--seeds", min=1, help="Number of training seeds (0..N-1), the same for every method"),
    methods: str = typer.Option("grpo,dr_grpo,rank,pgrpo", "--methods", help="Comma-separated advantage estimators"),
    set_: Optional[List[str]] = SetOption,
) -> None:
    """GRPO vs Dr. GRPO vs rank vs P-GRPO on the same seeds: value per preference group."""
    from grpokit.bench.preferences import METHODS, run_preferences

    chosen = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in METHODS]
    if unknown or not chosen:
        _fail(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    _load(config, set_)  # validate before any work
    try:
        with console.status("training...") as status:
            result = run_preferences(
                chosen,
                list(range(seeds)),
                config,
                set_ or [],
                on_result=lambda m, s, r: status.update(f"{m} seed {s}: value {r['policies'][m]['value']:.4f}"),
            )
    except ValueError as err:
        _fail(str(err))
    _write_json(json_out, result)
    console.print(_preferences_table(result, f"preference scenario, {seeds} seeds"))
    console.print(f"written to [bold]{json_out}[/]")


@bench_app.command("throughput")
def bench_throughput(
    json_out: Path = typer.Option(..., "--json", help="Where to write the results"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda"),
    steps: int = typer.Option(200, "--steps", min=1, help="Timed steps per measurement"),
) -> None:
    """Training decisions per second at B=4096 x G=8 (and B=262144 x G=16 on CUDA)."""
    from grpokit.bench.throughput import run_throughput

    try:
        result = run_throughput(device, steps)
    except ValueError as err:
        _fail(str(err))
    _write_json(json_out, result)
    table = Table(title=f"training throughput on {result['device_name']} (torch {result['torch']})")
    for col in ("B", "G", "engine grpo", "engine pgrpo", "minimal loop"):
        table.add_column(col, justify="right")
    for r in result["results"]:
        table.add_row(
            str(r["batch_size"]),
            str(r["group_size"]),
            f"{r['engine']['decisions_per_second']:,.0f}/s",
            f"{r['engine_pgrpo']['decisions_per_second']:,.0f}/s",
            f"{r['minimal_loop']['decisions_per_second']:,.0f}/s",
        )
    console.print(table)
    console.print(f"written to [bold]{json_out}[/]")


def _llm_table(result: dict, title: str) -> Table:
    names = [p["name"] for p in result["personas"]]
    table = Table(title=title, caption="per persona: final pass rate / steps to 90 % of 1.0 (- never); quality: held-out NLL")
    table.add_column("method")
    for p in result["personas"]:
        table.add_column(f"{p['name']} {p['share'] * 100:g}%", justify="right")
    table.add_column("NLL", justify="right")
    for name, block in result["methods"].items():
        row = [name]
        for g in names:
            pg = block["per_group"][g]
            s = "-" if pg["steps_to_90"] is None else f"{pg['steps_to_90']:g}"
            row.append(f"{pg['final_reward']:.2f} / {s}")
        row.append(f"{block['heldout_nll']:.2f}")
        table.add_row(*row)
    table.add_row("supervised", *[f"{result['sft']['pass_rate'][g]:.2f}" for g in names], f"{result['sft']['heldout_nll']:.2f}")
    return table


@bench_app.command("llm-preferences")
def bench_llm_preferences(
    json_out: Path = typer.Option(..., "--json", help="Where to write the results (one block per method)"),
    quick: bool = typer.Option(False, "--quick", help="Fewer RL steps (a few minutes per seed on a CPU)"),
    seeds: int = typer.Option(3, "--seeds", min=1, help="Number of seeds (0..N-1), the same for every method"),
    methods: str = typer.Option(
        "grpo,grpo_batch,dr_grpo,pgrpo,pgrpo_random_labels,pgrpo_discovered", "--methods", help="Comma-separated methods"
    ),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="RL steps per run (overrides --quick's)"),
    lr: Optional[float] = typer.Option(None, "--lr", help="RL learning rate"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="torch CPU threads (default 1)"),
    decay: Optional[float] = typer.Option(None, "--decay", help="P-GRPO history decay per batch (default 1: none)"),
    min_history: Optional[int] = typer.Option(None, "--min-history", help="P-GRPO warm-up count (default 16)"),
) -> None:
    """Seven personas, tiny LM, TRL: GRPO vs Dr. GRPO vs P-GRPO (true, random, discovered groups). Needs the llm extra."""
    try:
        from grpokit.llm import require_llm_extra

        require_llm_extra()
    except ImportError as err:
        _fail(str(err))
    from grpokit.llm.benchmark import METHODS, QUICK, LLMBenchConfig, run_llm_preferences, with_overrides

    chosen = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in METHODS]
    if unknown or not chosen:
        _fail(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    cfg = with_overrides(QUICK if quick else LLMBenchConfig(), steps=steps, learning_rate=lr, threads=threads, decay=decay, min_history=min_history)
    if not 0.0 < cfg.decay <= 1.0:
        _fail(f"--decay must be in (0, 1], got {cfg.decay}")
    if cfg.min_history < 2:
        _fail(f"--min-history must be >= 2, got {cfg.min_history}")
    try:
        with console.status("training...") as status:
            result = run_llm_preferences(
                chosen,
                list(range(seeds)),
                cfg,
                on_result=lambda m, s, r: status.update(f"{m} seed {s}: mean pass rate {sum(r['final'].values()) / 7:.3f}"),
            )
    except ValueError as err:
        _fail(str(err))
    _write_json(json_out, result)
    console.print(_llm_table(result, f"persona benchmark, {seeds} seeds, {cfg.steps} steps"))
    console.print(f"written to [bold]{json_out}[/]")
