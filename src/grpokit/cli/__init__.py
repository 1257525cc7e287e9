"""The ``grpokit`` command: one module per command group, each thin over the workflow functions."""

from __future__ import annotations

import sys

import typer

from grpokit.cli import train, offline, score  # noqa: F401,I001  (top-level commands register on import)
from grpokit.cli import sweep  # noqa: F401,I001  (grpokit sweep registers on import)
from grpokit.cli import loop  # noqa: F401,I001  (grpokit loop registers on import)
from grpokit.cli._common import app
from grpokit.cli.bench import bench_app
from grpokit.cli.config import config_app
from grpokit.cli.data import data_app
from grpokit.cli.fusion import fusion_app
from grpokit.cli.obd import obd_app
from grpokit.cli.pilot import pilot_app
from grpokit.cli.policy import policy_app
from grpokit.cli.runs import runs_app
from grpokit.cli.scenario import scenario_app
from grpokit.cli.serve import serve_app
from grpokit.cli import serve_ray  # noqa: F401,I001  (grpokit serve ray registers on import)

app.add_typer(bench_app, name="bench")
app.add_typer(config_app, name="config")
app.add_typer(data_app, name="data")
app.add_typer(scenario_app, name="scenario")
app.add_typer(fusion_app, name="fusion")
app.add_typer(obd_app, name="obd")
app.add_typer(serve_app, name="serve")
app.add_typer(policy_app, name="policy")
app.add_typer(pilot_app, name="pilot")
app.add_typer(runs_app, name="runs")
from grpokit.cli.cohorts import cohorts_app  # noqa: E402

app.add_typer(cohorts_app, name="cohorts")


def _version(value: bool) -> None:
    if value:
        from grpokit import __version__

        print(f"grpokit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit")) -> None:
    """Group-relative policy optimization (GRPO, P-GRPO) for personalized business decisions."""

__all__ = ["app", "main"]


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
