"""``grpokit train``, ``grpokit run`` and ``grpokit demo``: training from a config, the business run."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from grpokit.cli._common import (
    SetOption,
    StoreOption,
    _fail,
    _load,
    _record,
    _write_json,
    app,
    console,
    err_console,
)
from grpokit.cli.bench import _preferences_table


@app.command()
def train(
    config: Optional[Path] = typer.Argument(None, help="TOML run file (default: the built-in preference scenario)"),
    out: Path = typer.Option(..., "--out", help="Run directory (config.toml, metrics.jsonl, summary.json, checkpoint.pt)"),
    resume: bool = typer.Option(False, "--resume", help="Continue exactly from RUN_DIR/checkpoint.pt"),
    set_: Optional[List[str]] = SetOption,
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a live progress bar"),
) -> None:
    """Train a policy with GRPO from a config file into a run directory."""
    from grpokit.grpo.trainer import NonFiniteError, TrainingInterrupted
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
    except TrainingInterrupted as stop:
        err_console.print(
            f"[bold yellow]interrupted[/] after step {stop.step}: checkpoint saved at {stop.path}; "
            f"continue with: grpokit train --out {_shell_quote(out)} --resume"
        )
        raise typer.Exit(130)
    except NonFiniteError as err:
        _fail(str(err), code=1)
    except (FileExistsError, FileNotFoundError, ValueError) as err:
        _fail(str(err))
    except OSError as err:  # a read-only or full disk: say which file
        _fail(_os_message(err, out))
    _print_summary(summary)
    console.print(f"results in [bold]{out}[/]: config.toml, metrics.jsonl, summary.json, checkpoint.pt")


@app.command()
def run(
    config: Optional[Path] = typer.Argument(None, help="TOML run file (e.g. examples/marketing.toml)"),
    out: Path = typer.Option(..., "--out", help="Run directory: summary.json, report.html, metrics.jsonl, ..."),
    set_: Optional[List[str]] = SetOption,
    store: Path = StoreOption,
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    log: Optional[Path] = typer.Option(None, "--log", help="An A/B log (parquet/CSV, the columns `grpokit scenario simulate` writes) "
                                       "to fit the baselines (and, with evaluation.train_on=logs, GRPO) on instead of a simulated one"),
) -> None:
    """Train, compare with the baselines and the oracle per cohort, pilot, and write a report."""
    from grpokit.business import run_business

    cfg = _load(config, set_)
    try:
        summary = run_business(cfg, out, progress=progress, log=log)
    except (FileExistsError, ValueError) as err:
        _fail(str(err))
    _record(store, "run", str(out), cfg.model_dump(mode="json"), {k: v for k, v in summary.items() if k != "assignment"})
    _print_business(summary)
    console.print(f"report: [bold]{summary['report']}[/]; summary: {out / 'summary.json'}; run recorded in {store}")
    if summary.get("policy_path"):
        console.print(f"policy: {summary['policy_path']} (grpokit score / evaluate / serve --policy take it)")


def _shell_quote(path: Path) -> str:
    import shlex

    return shlex.quote(str(path))


def _os_message(err: OSError, out: Path) -> str:
    where = f" ({err.filename})" if getattr(err, "filename", None) else ""
    what = err.strerror or str(err)
    hint = "free some space" if getattr(err, "errno", None) == 28 else "choose a folder you can write to"
    return f"cannot write the run in {out}{where}: {what}; {hint} (the last checkpoint, if any, is kept)"


def _print_business(summary: dict) -> None:
    policies = summary["policies"]
    groups = list(next(iter(policies.values())).get("per_group") or {})
    table = Table(title=f"{summary['scenario']}: true value per unit ({summary['eval_units']:,} units; "
                        f"training {summary['train_seconds']:.1f} s)")
    table.add_column("policy")
    table.add_column("value", justify="right")
    table.add_column("/ oracle", justify="right")
    lifts = [(k, t) for k, t in (("lift_share_vs_no_offer", "lift / none"),
                                 ("lift_share_vs_current", f"lift / {(summary.get('lift_references') or {}).get('current')}"))
             if any(p.get(k) is not None for p in policies.values())]
    for _, title in lifts:
        table.add_column(title, justify="right")
    has_ci = any("off_policy" in p for p in policies.values())
    if has_ci:
        table.add_column("DR estimate [95% CI], held-out log", justify="right")
    has_spend = any("spend" in p for p in policies.values())
    if has_spend:
        table.add_column("spend", justify="right")
    if len(groups) > 4:  # many cohorts: the worst one and the fairness figures instead of one column each
        groups = []
        table.add_column("worst cohort", justify="right")
        gain_key = next((k for k in ("lowest_cohort_improvement_vs_no_offer", "lowest_cohort_improvement")
                         if any(k in p for p in policies.values())), "lowest_cohort_improvement")
        table.add_column("lowest cohort gain vs " + ("no offer" if gain_key.endswith("no_offer") else "random"),
                         justify="right")
    for name, p in policies.items():
        row = [name, f"{p['value']:.3f}", f"{100 * p['share_of_oracle']:.1f} %" if "share_of_oracle" in p else ""]
        row += [f"{100 * p[k]:.1f} %" if p.get(k) is not None else "" for k, _ in lifts]
        if has_ci:
            o = p.get("off_policy")
            row.append(f"{o['value']:.3f} [{o['ci_low']:.3f}, {o['ci_high']:.3f}]" if o else "")
        if has_spend:
            row.append(f"{p.get('spend', float('nan')):.3f}")
        if groups:
            row += [("" if (p.get("per_group") or {}).get(g) is None else f"{p['per_group'][g]:.3f}") for g in groups]
        else:
            vals = [v for v in (p.get("per_group") or {}).values() if v is not None]
            row += [f"{min(vals):.3f}" if vals else "", f"{p[gain_key]:.3f}" if p.get(gain_key) is not None else ""]
        table.add_row(*row)
    console.print(table)
    if lifts:
        console.print("lift / X: the share of the oracle's lift over X that a policy captures, (V − V_X) / (V_oracle − V_X); "
                      "none = no offer for anyone (docs/business.md)")
    learner = summary.get("learner") or {}
    if learner.get("dropped_components"):
        console.print(f"learned from the log without the reward components {learner['dropped_components']} (a log's "
                      "reward is the unit's own profit; docs/business.md, \"A scenario's objective, learned from a log\")")
    if summary.get("off_policy_assumption", {}).get("broken"):
        console.print(f"note: {escape(summary['off_policy_assumption']['text'])}")
    if "pilot" in summary:
        pl = summary["pilot"]
        console.print(f"pilot, design {pl.get('design', 'welch')} ({pl['cohorts_new']} cohorts new vs "
                      f"{pl['cohorts_current']} on {pl['current_policy']}): "
                      f"difference {pl['difference']:.4f}, 95% CI [{pl['ci_low']:.4f}, {pl['ci_high']:.4f}] "
                      f"(true effect {pl['true_effect']:.4f})")
        w = pl.get("welch")
        if w and pl.get("design") != "welch":
            console.print(f"  older design (coin per cohort, Welch) on the same customers: difference "
                          f"{w['difference']:.4f}, 95% CI [{w['ci_low']:.4f}, {w['ci_high']:.4f}]")


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
        table.add_row(name, _num(block["value"]), *[_num(block["per_group"].get(g)) for g in groups])
    if "oracle" in summary:
        o = summary["oracle"]
        table.add_row("oracle", _num(o["value"]), *[_num(o["per_group"].get(g)) for g in groups])
    console.print(table)
    empty = [g for g in groups if summary["oracle"]["per_group"].get(g) is None]
    if empty:
        console.print(f"[yellow]note:[/] no evaluation context fell in group(s) {empty}: raise grpo.eval_size "
                      "to measure them")


def _num(v) -> str:
    """A value for a table cell: 4 decimals, or '-' where there is none (an empty group)."""
    return "-" if v is None else f"{v:.4f}"


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
