"""``grpokit learn`` and ``grpokit evaluate``: learn a policy from a log, the deployment gate."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from grpokit.cli._common import (
    SchemaOption,
    SetOption,
    StoreOption,
    _fail,
    _load,
    _read_log,
    _record,
    _write_json,
    app,
    console,
)


@app.command()
def learn(
    out: Path = typer.Option(..., "--out", help="Run directory: policy.pt, summary.json"),
    log: Optional[Path] = typer.Option(None, "--log", help="A parquet/CSV log"),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="A dataset in the store"),
    store: Path = StoreOption,
    schema: Optional[Path] = SchemaOption,
    outcome_model: str = typer.Option("gbm", "--outcome-model", help="gbm or linear"),
    set_: Optional[List[str]] = SetOption,
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Learn a policy from logged decisions (outcome model + GRPO) and save it."""
    from grpokit.offline.workflow import learn_from_log

    cfg = _load(None, [f"grpo.seed={seed}", 'grpo.device="cpu"', *(set_ or [])])
    data = _read_log(log, dataset, store, schema)
    try:
        summary = learn_from_log(data, out, outcome_model=outcome_model, config=cfg.grpo, policy_config=cfg.policy, seed=seed)
    except ValueError as err:
        _fail(str(err))
    _write_json(out / "summary.json", summary)
    _record(store, "learn", str(out), {"log": str(log or dataset), "grpo": cfg.grpo.model_dump(mode="json")}, summary)
    console.print(
        f"policy saved to [bold]{summary['policy_path']}[/]; outcome-model value of the policy "
        f"{summary['model_value_of_policy']:.5f} vs logging {summary['model_value_of_logging']:.5f} "
        "(in-sample model estimates: check them with 'grpokit evaluate' on held-out logs)"
    )


@app.command()
def evaluate(
    policy: Path = typer.Option(..., "--policy", help="A policy.pt saved by 'grpokit learn'"),
    json_out: Path = typer.Option(..., "--json", help="Where to write the verdict"),
    log: Optional[Path] = typer.Option(None, "--log", help="A parquet/CSV log of the current policy"),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="A dataset in the store"),
    store: Path = StoreOption,
    schema: Optional[Path] = SchemaOption,
    method: str = typer.Option("dr", "--method", help="ips, snips, dm, dr or sndr"),
    margin: float = typer.Option(0.0, "--margin", help="Promote only if the improvement's lower bound exceeds this"),
    alpha: float = typer.Option(0.05, "--alpha", help="1 - confidence level"),
    outcome_model: str = typer.Option("gbm", "--outcome-model", help="gbm or linear (for dm, dr, sndr)"),
    n_bootstrap: int = typer.Option(1000, "--n-bootstrap", min=10),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """The deployment gate: candidate vs current policy on a log, with CIs and a verdict."""
    from grpokit.offline.estimators import ESTIMATORS
    from grpokit.offline.workflow import evaluate_on_log

    if method not in ESTIMATORS:
        _fail(f"unknown method {method!r}; choose one of {list(ESTIMATORS)}")
    data = _read_log(log, dataset, store, schema)
    try:
        result = evaluate_on_log(
            data, policy, method=method, margin=margin, alpha=alpha, outcome_model=outcome_model,
            n_bootstrap=n_bootstrap, seed=seed,
        )
    except (ValueError, FileNotFoundError) as err:
        _fail(str(err))
    _write_json(json_out, result)
    _record(store, "evaluate", str(json_out), {"policy": str(policy), "log": str(log or dataset), "method": method}, result)
    level = int(round(100 * (1 - alpha)))
    table = Table(title=f"{method} estimates on {result['n_rows']:,} logged decisions ({level} % CIs)")
    for col in ("", "value", "ci low", "ci high"):
        table.add_column(col, justify="right")
    for name, key in (("candidate", "candidate"), ("current (logging)", "current"), ("improvement", "improvement")):
        r = result[key]
        table.add_row(name, f"{r['value']:.5f}", f"{r['ci_low']:.5f}", f"{r['ci_high']:.5f}")
    console.print(table)
    colour = "green" if result["verdict"] == "promote" else "yellow"
    console.print(f"[bold {colour}]{result['verdict'].upper()}[/]: {result['reason']}")
    console.print(f"written to [bold]{json_out}[/]")
