"""``grpokit obd``: the Open Bandit Dataset checks (real logs)."""

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

obd_app = typer.Typer(help="The Open Bandit Dataset checks (real logs).", no_args_is_help=True)


def _f5(x: float) -> str:
    """``x`` to 5 decimals; a value that rounds to zero prints as 0.00000, never -0.00000."""
    s = f"{x:.5f}"
    return s[1:] if s.startswith("-") and float(s) == 0.0 else s


def _obd_root(root: Optional[Path]) -> Path:
    import os

    root = root or (Path(os.environ["GRPOKIT_OBD_ROOT"]) if "GRPOKIT_OBD_ROOT" in os.environ else None)
    if root is None:
        _fail("give --root DIR (the folder with random/ and bts/), or set GRPOKIT_OBD_ROOT")
    if not root.is_dir():
        _fail(f"OBD root {root} is not a folder")
    return root


@obd_app.command("validate")
def obd_validate(
    json_out: Path = typer.Option(..., "--json", help="Where to write the results"),
    root: Optional[Path] = typer.Option(None, "--root", help="OBD folder (random/, bts/)"),
    campaign: str = typer.Option("all", "--campaign"),
    outcome_model: str = typer.Option("gbm", "--outcome-model"),
    n_sim: int = typer.Option(100_000, "--n-sim", min=1000, help="Monte Carlo draws of the BTS policy"),
    n_bootstrap: int = typer.Option(1000, "--n-bootstrap", min=10),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Estimate the BTS policy's value from the random logs with every estimator, vs its on-policy value."""
    from grpokit.offline.obd_eval import validate_obd

    try:
        with console.status("fitting the outcome model and estimating..."):
            result = validate_obd(
                _obd_root(root), campaign, n_sim=n_sim, outcome_model=outcome_model, n_bootstrap=n_bootstrap, seed=seed
            )
    except (ValueError, FileNotFoundError) as err:
        _fail(str(err))
    _write_json(json_out, result)
    v = result["on_policy_value"]
    table = Table(title=f"BTS policy value from the random log (campaign {campaign}); on-policy value {_f5(v)}")
    for col in ("estimator", "value", "95% CI", "relative error", "CI covers"):
        table.add_column(col, justify="right")
    for name, r in result["estimators"].items():
        table.add_row(name, f"{_f5(r['value'])}", f"[{_f5(r['ci_low'])}, {_f5(r['ci_high'])}]",
                      f"{r['relative_error']:.3f}", "yes" if r["ci_covers_on_policy"] else "no")
    console.print(table)
    console.print(f"written to [bold]{json_out}[/]")


@obd_app.command("learn")
def obd_learn(
    json_out: Path = typer.Option(..., "--json", help="Where to write the results"),
    root: Optional[Path] = typer.Option(None, "--root", help="OBD folder (random/, bts/)"),
    campaign: str = typer.Option("all", "--campaign"),
    outcome_model: str = typer.Option("gbm", "--outcome-model"),
    method: str = typer.Option("dr", "--method"),
    test_fraction: float = typer.Option(0.5, "--test-fraction"),
    set_: Optional[List[str]] = SetOption,
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Learn a GRPO policy from the random logs; its held-out value with a CI next to random and BTS."""
    from grpokit.offline.obd_eval import learn_obd

    cfg = _load(None, ["grpo.steps=300", "grpo.batch_size=512", "grpo.group_size=8", "grpo.lr=0.001",
                       'grpo.device="cpu"', f"grpo.seed={seed}", *(set_ or [])])
    try:
        with console.status("learning from the random log..."):
            result = learn_obd(_obd_root(root), campaign, test_fraction=test_fraction, outcome_model=outcome_model,
                               config=cfg.grpo, policy_config=cfg.policy, method=method, seed=seed)
    except (ValueError, FileNotFoundError) as err:
        _fail(str(err))
    _write_json(json_out, result)
    table = Table(title=f"held-out {method} value ({result['n_test']:,} random-log rows, campaign {campaign})")
    for col in ("policy", "value", "95% CI"):
        table.add_column(col, justify="right")
    for name, r in result["policies"].items():
        table.add_row(name, f"{_f5(r['value'])}", f"[{_f5(r['ci_low'])}, {_f5(r['ci_high'])}]")
    imp = result["improvement_over_random"]
    table.add_row("grpo - random", f"{_f5(imp['value'])}", f"[{_f5(imp['ci_low'])}, {_f5(imp['ci_high'])}]")
    console.print(table)
    console.print(f"written to [bold]{json_out}[/]")
