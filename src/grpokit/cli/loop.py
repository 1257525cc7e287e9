"""``grpokit loop CONFIG --out RUN_DIR``: the closed loop against a real decision service (docs/loop.md)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from grpokit.cli._common import SetOption, _fail, app, console


@app.command("loop")
def loop(
    config: Optional[Path] = typer.Argument(None, help="Loop TOML (e.g. examples/marketing_loop.toml); default settings without"),
    out: Path = typer.Option(..., "--out", help="Run directory (summary.json, report.html, store, policies)"),
    overrides: Optional[List[str]] = SetOption,
    quiet: bool = typer.Option(False, "--quiet", help="No progress lines"),
) -> None:
    """Serve, learn from the served log, gate, shadow, pilot by cohort, promote or roll back, in rounds."""
    from grpokit.loop.config import load_loop_config
    from grpokit.loop.loop import run_loop

    try:
        cfg = load_loop_config(config, overrides)
    except ValueError as err:
        _fail(str(err))
    try:
        summary = run_loop(cfg, out, progress=not quiet)
    except (FileExistsError, ValueError, RuntimeError) as err:
        _fail(str(err))
    f = summary["final"]
    console.print(f"loop done: live {f['live_label']} true value {f['true_value']:.3f} = {f['share_of_oracle']:.3f} of "
                  f"the oracle; {summary['promotions']} promotions, {summary['rollbacks']} rollbacks; intervals "
                  f"covering the truth {summary['coverage']['covered']}/{summary['coverage']['intervals']}; "
                  f"report {summary['report']}")
