"""The ``grpokit`` command."""

from __future__ import annotations

import json
import sys

import numpy as np
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
data_app = typer.Typer(help="Logged decisions in the embedded DuckDB store.", no_args_is_help=True)
fusion_app = typer.Typer(help="GRADE: personalized multi-task fusion weights for ranking.", no_args_is_help=True)
scenario_app = typer.Typer(help="Scenarios: simulate logged data, score any assignment on the ground truth.", no_args_is_help=True)
obd_app = typer.Typer(help="The Open Bandit Dataset checks (real logs).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
app.add_typer(config_app, name="config")
app.add_typer(data_app, name="data")
app.add_typer(scenario_app, name="scenario")
app.add_typer(fusion_app, name="fusion")
app.add_typer(obd_app, name="obd")

console = Console()
err_console = Console(stderr=True, soft_wrap=True)

StoreOption = typer.Option(Path("grpokit.duckdb"), "--store", help="The DuckDB store file")
SetOption = typer.Option(
    None, "--set", help="Override a config key: section.key=value (repeatable), e.g. --set grpo.lr=0.001"
)


def _fail(message: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def _write_json(path: Path, data: dict) -> None:
    from grpokit.atomic import atomic_write_json

    atomic_write_json(path, data)


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


@app.command()
def run(
    config: Optional[Path] = typer.Argument(None, help="TOML run file (e.g. examples/marketing.toml)"),
    out: Path = typer.Option(..., "--out", help="Run directory: summary.json, report.html, metrics.jsonl, ..."),
    set_: Optional[List[str]] = SetOption,
    store: Path = StoreOption,
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train, compare with the baselines and the oracle per cohort, pilot, and write a report."""
    from grpokit.business import run_business

    cfg = _load(config, set_)
    try:
        summary = run_business(cfg, out, progress=progress)
    except (FileExistsError, ValueError) as err:
        _fail(str(err))
    _record(store, "run", str(out), cfg.model_dump(mode="json"), {k: v for k, v in summary.items() if k != "assignment"})
    _print_business(summary)
    console.print(f"report: [bold]{summary['report']}[/]; summary: {out / 'summary.json'}; run recorded in {store}")


def _print_business(summary: dict) -> None:
    policies = summary["policies"]
    groups = list(next(iter(policies.values())).get("per_group") or {})
    table = Table(title=f"{summary['scenario']}: true value per unit ({summary['eval_units']:,} units; "
                        f"training {summary['train_seconds']:.1f} s)")
    table.add_column("policy")
    table.add_column("value", justify="right")
    table.add_column("/ oracle", justify="right")
    has_ci = any("off_policy" in p for p in policies.values())
    if has_ci:
        table.add_column("DR estimate [95% CI], held-out log", justify="right")
    has_spend = any("spend" in p for p in policies.values())
    if has_spend:
        table.add_column("spend", justify="right")
    if len(groups) > 4:  # many cohorts: the worst one and the fairness figures instead of one column each
        groups = []
        table.add_column("worst cohort", justify="right")
        table.add_column("lowest cohort gain", justify="right")
    for name, p in policies.items():
        row = [name, f"{p['value']:.4f}", f"{p['share_of_oracle']:.3f}" if "share_of_oracle" in p else ""]
        if has_ci:
            o = p.get("off_policy")
            row.append(f"{o['value']:.3f} [{o['ci_low']:.3f}, {o['ci_high']:.3f}]" if o else "")
        if has_spend:
            row.append(f"{p.get('spend', float('nan')):.3f}")
        if groups:
            row += [("" if (p.get("per_group") or {}).get(g) is None else f"{p['per_group'][g]:.3f}") for g in groups]
        else:
            vals = [v for v in (p.get("per_group") or {}).values() if v is not None]
            row += [f"{min(vals):.3f}" if vals else "", f"{p['lowest_cohort_improvement']:.3f}" if "lowest_cohort_improvement" in p else ""]
        table.add_row(*row)
    console.print(table)
    if "pilot" in summary:
        pl = summary["pilot"]
        console.print(f"pilot ({pl['cohorts_new']} cohorts new vs {pl['cohorts_current']} on {pl['current_policy']}): "
                      f"difference {pl['difference']:.4f}, 95% CI [{pl['ci_low']:.4f}, {pl['ci_high']:.4f}] "
                      f"(true effect {pl['true_effect']:.4f})")


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


# ---------------------------------------------------------------------------------------------
# logged data: import, learn, evaluate
# ---------------------------------------------------------------------------------------------

SchemaOption = typer.Option(None, "--schema", help="TOML file mapping your column names (LogSchema keys)")


def _schema(path: Optional[Path], schema_class=None):
    """The schema (``LogSchema`` by default, or ``schema_class``) read from a TOML file, or None."""
    import tomllib

    from pydantic import ValidationError

    if schema_class is None:
        from grpokit.offline.schema import LogSchema as schema_class
    if path is None:
        return None
    if not path.is_file():
        _fail(f"schema file {path} does not exist")
    try:
        return schema_class(**tomllib.loads(path.read_text()))
    except (tomllib.TOMLDecodeError, ValidationError, ValueError) as err:
        _fail(f"schema file {path}: {err}")


def _read_log(log: Optional[Path], dataset: Optional[str], store: Path, schema: Optional[Path]):
    from grpokit.offline.io import read_log
    from grpokit.store import Store

    if (log is None) == (dataset is None):
        _fail("give exactly one of --log FILE or --dataset NAME")
    try:
        if log is not None:
            if not log.exists():
                _fail(f"log file {log} does not exist")
            return read_log(log, _schema(schema))
        if not store.exists():
            _fail(f"store {store} does not exist: import a log first with 'grpokit data import'")
        with Store(store) as st:
            return st.load_log(dataset)
    except (ValueError, KeyError, FileNotFoundError) as err:
        _fail(str(err))


def _record(store: Path, kind: str, run_id: str, config: dict, summary: dict) -> None:
    from grpokit.store import Store

    try:
        with Store(store) as st:
            st.record_run(run_id, kind, config, summary)
    except Exception as err:  # noqa: BLE001 - recording is best effort: the result is already written
        err_console.print(f"[yellow]warning:[/] the run was not recorded in {store}: {err}")


@data_app.command("import")
def data_import(
    file: Path = typer.Argument(..., help="A parquet or CSV file of logged decisions"),
    name: str = typer.Option(..., "--name", help="Dataset name in the store (letters, digits, _)"),
    store: Path = StoreOption,
    schema: Optional[Path] = SchemaOption,
    replace: bool = typer.Option(False, "--replace", help="Overwrite a dataset of the same name"),
) -> None:
    """Validate a log and store it (one transaction: a failed import leaves the store unchanged)."""
    from grpokit.store import Store

    if not file.exists():
        _fail(f"log file {file} does not exist")
    try:
        with Store(store) as st:
            info = st.import_log(file, name, _schema(schema), replace=replace)
    except (ValueError, KeyError) as err:
        _fail(str(err))
    console.print(f"imported [bold]{name}[/] into {store}: {info}")


@data_app.command("list")
def data_list(store: Path = StoreOption) -> None:
    """The datasets in the store."""
    from grpokit.store import Store

    if not store.exists():
        _fail(f"store {store} does not exist")
    with Store(store) as st:
        df = st.list_datasets()
    table = Table(title=f"datasets in {store}")
    for col in ("name", "n_rows", "n_actions", "created_at"):
        table.add_column(col)
    for _, row in df.iterrows():
        table.add_row(str(row["name"]), str(row["n_rows"]), str(row["n_actions"]), str(row["created_at"]))
    console.print(table)


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


# ---------------------------------------------------------------------------------------------
# Open Bandit Dataset
# ---------------------------------------------------------------------------------------------

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
    table = Table(title=f"BTS policy value from the random log (campaign {campaign}); on-policy value {v:.5f}")
    for col in ("estimator", "value", "95% CI", "relative error", "CI covers"):
        table.add_column(col, justify="right")
    for name, r in result["estimators"].items():
        table.add_row(name, f"{r['value']:.5f}", f"[{r['ci_low']:.5f}, {r['ci_high']:.5f}]",
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
        table.add_row(name, f"{r['value']:.5f}", f"[{r['ci_low']:.5f}, {r['ci_high']:.5f}]")
    imp = result["improvement_over_random"]
    table.add_row("grpo - random", f"{imp['value']:.5f}", f"[{imp['ci_low']:.5f}, {imp['ci_high']:.5f}]")
    console.print(table)
    console.print(f"written to [bold]{json_out}[/]")


# ---------------------------------------------------------------------------------------------
# scenarios: simulate a log, evaluate any assignment
# ---------------------------------------------------------------------------------------------

def _scenario(config: Optional[Path], set_: Optional[List[str]]):
    from grpokit.scenarios.registry import scenario_from_config

    cfg = _load(config, set_)
    return cfg, scenario_from_config(cfg.scenario)


@scenario_app.command("simulate")
def scenario_simulate(
    config: Optional[Path] = typer.Argument(None, help="TOML run file (its [scenario] is used)"),
    out: Path = typer.Option(..., "--out", help="Where to write the log (.parquet or .csv)"),
    n: int = typer.Option(20000, "--n", min=1, help="Number of logged decisions"),
    policy: str = typer.Option("uniform", "--policy", help="Logging policy: uniform (A/B; search: random weights per request), targeting, or default (search: the production weights)"),
    seed: int = typer.Option(0, "--seed"),
    set_: Optional[List[str]] = SetOption,
) -> None:
    """Write a logged dataset (with propensities) of the scenario under a logging policy."""
    _, sc = _scenario(config, set_)
    if not hasattr(sc, "simulate_log"):
        _fail(f"scenario {sc.name!r} cannot simulate logs yet")
    if out.suffix not in (".parquet", ".csv"):
        _fail(f"--out must end in .parquet or .csv, got {out.name}")
    try:
        df = sc.simulate_log(n, policy, seed=seed)
    except ValueError as err:
        _fail(str(err))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    df.to_parquet(tmp, index=False) if out.suffix == ".parquet" else df.to_csv(tmp, index=False)
    tmp.replace(out)
    console.print(f"wrote {len(df):,} decisions to [bold]{out}[/] (columns: {', '.join(df.columns[:8])}, ...)")


@scenario_app.command("evaluate")
def scenario_evaluate(
    config: Optional[Path] = typer.Argument(None, help="TOML run file (its [scenario] is used)"),
    assignment: Path = typer.Option(..., "--assignment", help="parquet/CSV with unit_id and action columns"),
    json_out: Path = typer.Option(..., "--json", help="Where to write the true values"),
    n: int = typer.Option(20000, "--n", min=1, help="Units of the evaluation population (unit ids 0..n-1)"),
    seed: int = typer.Option(0, "--seed", help="Seed of the evaluation population"),
    set_: Optional[List[str]] = SetOption,
) -> None:
    """True value of any assignment of actions to units (spillover included): score external tools' decisions.

    The population is the scenario's seeded sample of N units (``grpokit scenario simulate --policy
    uniform --seed S --n N`` shows the same units' features, unit_id = decision_id)."""
    import pandas as pd
    import torch

    from grpokit.business import evaluate_assignment

    _, sc = _scenario(config, set_)
    if not assignment.exists():
        _fail(f"assignment file {assignment} does not exist")
    df = pd.read_parquet(assignment) if assignment.suffix == ".parquet" else pd.read_csv(assignment)
    for col in ("unit_id", "action"):
        if col not in df.columns:
            _fail(f"assignment file {assignment} has no {col!r} column (columns: {list(df.columns)})")
    ids = df["unit_id"].to_numpy()
    if len(df) != n or sorted(ids.tolist()) != list(range(n)):
        _fail(f"the assignment must give exactly one action to each unit_id 0..{n - 1} (got {len(df)} rows)")
    if df["action"].isna().any():
        _fail(f"action is missing for unit_id {int(df.loc[df['action'].isna(), 'unit_id'].iloc[0])}")
    kind = sc.action_spec["kind"]
    order = np.argsort(ids)
    actions = df["action"].to_numpy()[order]
    if kind == "categorical":
        bad = ~np.isin(actions, np.arange(sc.action_spec["n_actions"]))
        if bad.any():
            _fail(f"unit_id {int(ids[order][bad][0])}: action {actions[bad][0]!r} is not a code 0..{sc.action_spec['n_actions'] - 1}")
        tensor = torch.as_tensor(actions.astype(np.int64))
    elif kind == "beta":
        numeric = pd.to_numeric(pd.Series(actions), errors="coerce").to_numpy(dtype=np.float64)
        low, high = sc.action_spec["low"], sc.action_spec["high"]
        bad = ~np.isfinite(numeric) | (numeric < low) | (numeric > high)
        if bad.any():
            _fail(f"unit_id {int(ids[order][bad][0])}: action {actions[bad][0]!r} is not a number in [{low}, {high}]")
        tensor = torch.as_tensor(numeric.astype(np.float32))
    else:
        _fail(f"scenario evaluate supports categorical and scalar actions, not {kind!r}")
    gen = torch.Generator().manual_seed(seed)
    if hasattr(sc, "simulate_log"):
        _, contexts, _ = sc.simulate_log(n, "uniform", seed=seed, return_contexts=True)
    else:
        contexts = sc.sample_contexts(n, gen)
    result = evaluate_assignment(sc, contexts, tensor)
    result["units"] = n
    _write_json(json_out, result)
    console.print(f"true value per unit: [bold]{result['value']:.5f}[/] over {n:,} units; written to {json_out}")


@fusion_app.command("learn")
def fusion_learn(
    config: Optional[Path] = typer.Argument(None, help="TOML run file with [scenario] name = \"logged_ranking\" "
                                                       "(default: the built-in logged-ranking settings)"),
    log: Path = typer.Option(..., "--log", help="Ranking log: parquet, CSV or DuckDB file (one row per candidate)"),
    out: Path = typer.Option(..., "--out", help="Run directory: policy.pt, summary.json, metrics.jsonl"),
    schema: Optional[Path] = typer.Option(None, "--schema", help="TOML file mapping your column names (RankingSchema keys)"),
    table: Optional[str] = typer.Option(None, "--table", help="The table, when --log is a DuckDB file"),
    set_: Optional[List[str]] = SetOption,
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """GRADE on your own ranking log: train on part of it, compare with static weights on the rest (offline auction)."""
    from grpokit.ranking.grade_log import learn_fusion_from_log
    from grpokit.ranking.logs import RankingLogError, RankingSchema, read_ranking_log

    cfg = _load(config, ([] if config is not None else ["scenario.name=logged_ranking"]) + list(set_ or []))
    if cfg.scenario.name != "logged_ranking":
        _fail(f"grpokit fusion learn needs [scenario] name = \"logged_ranking\", got {cfg.scenario.name!r}")
    rs = _schema(schema, RankingSchema)
    if not log.exists():
        _fail(f"log file {log} does not exist")
    try:
        data = read_ranking_log(log, rs, table=table)
        summary = learn_fusion_from_log(data, cfg, out, progress=progress)
    except (RankingLogError, FileExistsError, ValueError) as err:
        _fail(str(err))
    table_ = Table(title=f"offline auction on {summary['requests']['holdout']:,} held-out requests "
                         f"(trained on {summary['requests']['train']:,})")
    table_.add_column("policy", no_wrap=True)
    for col in ("posterior", "NDCG@k", "GAUC", "vs static_tuned [95 % CI]"):
        table_.add_column(col, justify="right", no_wrap=True)
    for name, p in summary["policies"].items():
        vs = p.get("vs_static_tuned")
        ci = "–" if vs is None else f"{vs['mean']:+.3f} [{vs['ci_low']:+.3f}, {vs['ci_high']:+.3f}]"
        g = "–" if p["gauc"] is None else f"{p['gauc']:.4f}"
        table_.add_row(name, f"{p['posterior']:.4f}", f"{p['ndcg']:.4f}", g, ci)
    console.print(table_)
    console.print(f"policy: [bold]{summary['policy_path']}[/]; summary: {out / 'summary.json'} "
                  "(offline-auction replay: unshown candidates earn nothing, so confirm a promotion online)")


@fusion_app.command("run")
def fusion_run(
    config: Optional[Path] = typer.Argument(None, help="TOML run file (e.g. examples/fusion.toml)"),
    out: Path = typer.Option(..., "--out", help="Run directory: summary.json, report.html, metrics.jsonl"),
    set_: Optional[List[str]] = SetOption,
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """GRADE vs static weights (default, tuned, per segment) and its ablations, on simulator ground truth."""
    from grpokit.ranking.grade import run_fusion

    cfg = _load(config, set_)
    try:
        summary = run_fusion(cfg, out, progress=progress)
    except (FileExistsError, ValueError) as err:
        _fail(str(err))
    table = Table(title=f"true metrics on {cfg.fusion.eval_size:,} requests (GMV / orders per thousand requests)")
    table.add_column("policy", no_wrap=True)
    for col in ("GPM", "OPM", "GPM vs tuned", "NDCG@k", "GAUC"):
        table.add_column(col, justify="right", no_wrap=True)
    for name, p in summary["policies"].items():
        t = p["true"]
        table.add_row(name, f"{t['gpm']:.1f}", f"{t['opm']:.2f}", f"{100 * p['gpm_vs_static_tuned']:+.2f}%",
                      *[("–" if p["auction"][m] is None else f"{p['auction'][m]:.4f}") for m in ("ndcg", "gauc")])
    console.print(table)
    sel = summary.get("prior_weight_selection")
    if sel:
        for who, block in (("static weights", sel["static"]), ("GRADE", sel["policy"])):
            if block:
                scores = ", ".join(f"{lam}: {v:.4f}" for lam, v in block["holdout_score"].items())
                console.print(f"prior weight for {who}: [bold]{block['chosen']:g}[/] "
                              f"(held-out posterior + rules per request by prior weight: {scores})")
    console.print(f"report: [bold]{summary['report']}[/]; summary: {out / 'summary.json'}")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
