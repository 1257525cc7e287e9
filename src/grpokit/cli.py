"""The ``grpokit`` command."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="Group-relative policy optimization (GRPO, P-GRPO) for personalized business decisions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Benchmarks: throughput and the preference-group comparison.", no_args_is_help=True)
config_app = typer.Typer(help="Inspect run configurations.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
app.add_typer(config_app, name="config")

console = Console()
err_console = Console(stderr=True, soft_wrap=True)

SetOption = typer.Option(
    None, "--set", help="Override a config key: section.key=value (repeatable), e.g. --set grpo.lr=0.001"
)


def _fail(message: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def _load(config: Optional[Path], overrides: Optional[List[str]]):
    from grpokit.config import ConfigError, load_config

    try:
        return load_config(config, overrides or [])
    except ConfigError as err:
        _fail(str(err))


@app.command()
def train(
    config: Optional[Path] = typer.Argument(None, help="TOML run file (default: the built-in preference scenario)"),
    out: Path = typer.Option(..., "--out", help="Run directory (config.toml, metrics.jsonl, summary.json, checkpoint.pt)"),
    resume: bool = typer.Option(False, "--resume", help="Continue exactly from RUN_DIR/checkpoint.pt"),
    set_: Optional[List[str]] = SetOption,
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a live progress bar"),
) -> None:
    """Train a policy with GRPO from a config file into a run directory."""
    from grpokit.grpo.trainer import NonFiniteError
    from grpokit.runner import run_training

    if resume:
        if config is not None:
            _fail("--resume continues the run with its saved config.toml: do not pass a CONFIG")
        saved = out / "config.toml"
        if not saved.is_file():
            _fail(f"cannot resume: {saved} does not exist")
        if set_:
            _fail("--set cannot change a run being resumed (it would no longer be the same run)")
        cfg = _load(saved, [])
    else:
        cfg = _load(config, set_)
    try:
        summary = run_training(cfg, out, resume=resume, progress=progress)
    except NonFiniteError as err:
        _fail(str(err), code=1)
    except (FileExistsError, FileNotFoundError, ValueError) as err:
        _fail(str(err))
    _print_summary(summary)
    console.print(f"results in [bold]{out}[/]: config.toml, metrics.jsonl, summary.json, checkpoint.pt")


def _print_summary(summary: dict) -> None:
    if "policies" not in summary:
        console.print(f"trained {summary['steps']} steps")
        return
    groups = list(summary["oracle"]["per_group"]) if "oracle" in summary else []
    table = Table(title=f"true value after {summary['steps']} steps ({summary['decisions']:,} decisions)")
    table.add_column("policy")
    table.add_column("overall", justify="right")
    for g in groups:
        table.add_column(g, justify="right")
    for name, block in summary["policies"].items():
        table.add_row(name, f"{block['value']:.4f}", *[f"{block['per_group'][g]:.4f}" for g in groups])
    if "oracle" in summary:
        o = summary["oracle"]
        table.add_row("oracle", f"{o['value']:.4f}", *[f"{o['per_group'][g]:.4f}" for g in groups])
    console.print(table)


@config_app.command("show")
def config_show(
    config: Optional[Path] = typer.Argument(None, help="TOML run file (default: built-in defaults)"),
    set_: Optional[List[str]] = SetOption,
) -> None:
    """Print the resolved configuration (defaults filled in, overrides applied) as TOML."""
    from grpokit.config import config_to_toml

    typer.echo(config_to_toml(_load(config, set_)))


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
    with console.status("training...") as status:
        result = run_preferences(
            chosen,
            list(range(seeds)),
            config,
            set_ or [],
            on_result=lambda m, s, r: status.update(f"{m} seed {s}: value {r['policies'][m]['value']:.4f}"),
        )
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


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Where the demo writes its results"),
    seeds: int = typer.Option(3, "--seeds", min=1),
) -> None:
    """The preference scenario end to end: every advantage estimator, same seeds, a per-group table."""
    from grpokit.bench.preferences import METHODS, run_preferences
    from grpokit.config import config_to_toml, load_config

    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(None, [])
    (out / "config.toml").write_text(config_to_toml(cfg))
    console.print(
        "[bold]grpokit demo[/]: a majority (80 %) and two minority preference groups (15 %, 5 %) with "
        "different best actions and sparse binary rewards (success rates 0.5 / 0.1 / 0.03), G = "
        f"{cfg.grpo.group_size} samples per context, {cfg.grpo.steps} steps of B = {cfg.grpo.batch_size}."
    )
    with console.status("training...") as status:
        result = run_preferences(
            METHODS,
            list(range(seeds)),
            out / "config.toml",
            [],
            on_result=lambda m, s, r: status.update(f"{m} seed {s}: value {r['policies'][m]['value']:.4f}"),
        )
    _write_json(out / "summary.json", result)
    console.print(_preferences_table(result, f"true value per preference group ({seeds} seeds)"))
    console.print(f"results in [bold]{out}[/]: config.toml, summary.json")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
