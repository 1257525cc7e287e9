"""``grpokit config``: inspect run configurations."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from grpokit.cli._common import (
    SetOption,
    _load,
)

config_app = typer.Typer(help="Inspect run configurations.", no_args_is_help=True)


@config_app.command("show")
def config_show(
    config: Optional[Path] = typer.Argument(None, help="TOML run file (default: built-in defaults)"),
    set_: Optional[List[str]] = SetOption,
) -> None:
    """Print the resolved configuration (defaults filled in, overrides applied) as TOML."""
    from grpokit.config import config_to_toml

    typer.echo(config_to_toml(_load(config, set_)))
