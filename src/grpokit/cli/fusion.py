"""``grpokit fusion``: GRADE, personalized multi-task fusion weights for ranking."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from grpokit.cli._common import (
    SetOption,
    _fail,
    _load,
    _schema,
    console,
)

fusion_app = typer.Typer(help="GRADE: personalized multi-task fusion weights for ranking.", no_args_is_help=True)


@fusion_app.command("learn")
def fusion_learn(
    config: Optional[Path] = typer.Argument(None, help="TOML run file with \\[scenario] name = \"logged_ranking\" "
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
        _no_negative_where_it_breaks(data, cfg.scenario)
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


def _no_negative_where_it_breaks(data, sc) -> None:
    """Negative predictions are fine for a linear fusion of raw or ranked scores, but log_linear on raw
    scores would clamp them to 0, and log1p / sqrt would make them NaN: refuse those, naming the task."""
    for k, task in enumerate(data.tasks):
        t = sc.transforms.get(task, "rank") if isinstance(sc.transforms, dict) else sc.transforms
        if t in ("log1p", "sqrt") or (t == "identity" and sc.fusion == "log_linear"):
            values = data.scores[..., k][data.mask]
            if bool((values < 0).any()):
                how = f"the {t} transform" if t != "identity" else "log_linear fusion of raw scores"
                _fail(f"task {task!r} has negative predictions (min {float(values.min()):.4g}), which {how} cannot "
                      "use (it would clamp them to 0 or make them NaN); use scenario.transforms = \"rank\" or "
                      "fusion = \"linear\", or give non-negative predictions")


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
