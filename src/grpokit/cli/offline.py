"""``grpokit learn`` and ``grpokit evaluate``: learn a policy from a log, the deployment gate."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from grpokit.cli._common import (
    SchemaOption,
    SetOption,
    StoreOption,
    _fail,
    _load,
    _record,
    _schema,
    _write_json,
    check_output,
    app,
    console,
)
from grpokit.cli.data import FeaturesOption, _schema_hint, _with_features, print_roles


def _read(log: Optional[Path], dataset: Optional[str], store: Path, schema: Optional[Path],
          features: Optional[str] = None, show_roles: bool = True, n_actions: Optional[int] = None):
    """The log (a file with --schema/--features, or a stored dataset), its roles printed for a file.

    ``n_actions``: the action set to read a file's codes against when its schema declares none (the
    policy's, for evaluate: an evaluation log need not show every action)."""
    from grpokit.offline.io import read_log
    from grpokit.store import Store

    if (log is None) == (dataset is None):
        _fail("give exactly one of --log FILE or --dataset NAME")
    try:
        if log is not None:
            if not log.exists():
                _fail(f"log file {log} does not exist")
            s = _with_features(_schema(schema), features)
            if n_actions is not None:
                from grpokit.offline.schema import LogSchema

                s = s or LogSchema()
                if s.n_actions is None and s.actions is None:
                    s = s.model_copy(update={"n_actions": n_actions})
            data = read_log(log, s)
            if show_roles:
                print_roles(data.roles)
            return data
        if features is not None:
            _fail("--features applies to --log FILE; a stored dataset keeps the features chosen at import")
        if not store.exists():
            _fail(f"store {store} does not exist: import a log first with 'grpokit data import'")
        with Store(store, read_only=True) as st:
            return st.load_log(dataset)
    except (ValueError, KeyError, FileNotFoundError) as err:
        _fail(_schema_hint(str(err)))


def _stage_printer():
    def stage(text: str) -> None:
        console.print(f"[dim]…[/] {escape(text)}")

    return stage


def _writable(folder: Path, what: str) -> None:
    from grpokit.atomic import check_writable

    try:
        check_writable(folder, f"the {what} folder")
    except OSError as err:
        _fail(err.strerror or str(err))


def _num(x, fmt: str = ".4f") -> str:
    """A number for the console; '–' where it is undefined (None, NaN: e.g. a CI from one row)."""
    import math

    return "–" if x is None or not math.isfinite(float(x)) else f"{x:{fmt}}"


def _ci(r: dict, fmt: str = ".4f") -> str:
    return f"{_num(r['value'], fmt)} [{_num(r['ci_low'], fmt)}, {_num(r['ci_high'], fmt)}]"


def _check_outcome(kind: str, backend: str) -> None:
    """--outcome-model / --outcome-backend named before any work (and the extra a choice needs)."""
    from grpokit.offline.outcome import BACKENDS, KINDS, require_lightgbm

    if kind not in KINDS:
        _fail(f"--outcome-model {kind!r} is unknown; choose one of {list(KINDS)}")
    if backend not in BACKENDS:
        _fail(f"--outcome-backend {backend!r} is unknown; choose one of {list(BACKENDS)}")
    if backend == "ray" and kind != "lightgbm":
        _fail(f"--outcome-backend ray fits --outcome-model lightgbm only, got {kind!r}")
    try:
        if kind == "lightgbm":
            require_lightgbm()
        if backend == "ray":
            import ray  # noqa: F401
    except ImportError as err:
        _fail(str(err) if kind == "lightgbm" and "lightgbm" in str(err) else
              "--outcome-backend ray needs Ray, grpokit's optional extra 'ray': pip install -c constraints.txt -e '.[ray]'")



def _learn_weights(grpo, weight_sets: list[str]):
    """``grpo`` with the reward weights of the ``--set grpo.reward_weights...`` overrides (numbers checked)."""
    from pydantic import ValidationError

    from grpokit.config import ConfigError, GRPOConfig, apply_overrides

    try:
        weights = apply_overrides({"grpo": {"reward_weights": dict(grpo.reward_weights)}}, weight_sets)["grpo"]["reward_weights"]
        checked = GRPOConfig(reward_weights=weights).reward_weights
    except ConfigError as err:
        _fail(str(err))
    except ValidationError as err:
        _fail("grpo.reward_weights: " + "; ".join(f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in err.errors()))
    return grpo.model_copy(update={"reward_weights": checked})


@app.command()
def learn(
    out: Path = typer.Option(..., "--out", help="Run directory: policy.pt, summary.json, report.html"),
    log: Optional[Path] = typer.Option(None, "--log", help="A parquet/CSV log"),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="A dataset in the store"),
    store: Path = StoreOption,
    schema: Optional[Path] = SchemaOption,
    features: Optional[str] = FeaturesOption,
    outcome_model: str = typer.Option("gbm", "--outcome-model", help="gbm, linear or lightgbm (extra 'ray')"),
    outcome_backend: str = typer.Option("local", "--outcome-backend",
                                        help="local, or ray: each lightgbm fit on Ray Train workers (extra 'ray')"),
    holdout: float = typer.Option(0.3, "--holdout", help="Share of rows held out to judge the policy (0: none)"),
    no_groups: bool = typer.Option(False, "--no-groups", help="Do not use the group column as P-GRPO preference groups"),
    set_: Optional[List[str]] = SetOption,
    config_file: Optional[Path] = typer.Option(None, "--config",
                                               help="A TOML config: its \\[grpo], \\[policy] and \\[cohorts] sections apply"),
    seed: int = typer.Option(0, "--seed"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show stages and a training progress bar"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the policy an earlier learn left in --out"),
    allow_unlogged: bool = typer.Option(False, "--allow-unlogged",
                                        help="Let the policy choose actions the log never shows (valued by extrapolation)"),
    interference: bool = typer.Option(False, "--interference",
                                      help="Outcome model also sees the share of the unit's group treated (spillover)"),
    reward_components: Optional[str] = typer.Option(
        None, "--reward-components",
        help="GRPO's reward as named parts, comma-separated: reward (r̂), improvement, relative_to_cohort_median, "
             "cohort_percentile_rank; weights in --set grpo.reward_weights={...}"),
    improvement_reference: Optional[str] = typer.Option(
        None, "--improvement-reference",
        help="What improvement is measured against: control (the first action, e.g. no offer; the default), logged "
             "(the logging policy's action) or an action label; with --config naming scenario components, its "
             "scenario.improvement_reference"),
) -> None:
    """Learn a policy from logged decisions (encoder + outcome model + GRPO), judge it on held-out rows."""
    from grpokit.offline.workflow import learn_from_log

    _check_outcome(outcome_model, outcome_backend)
    # --set grpo.reward_weights... are merged after the load: they may name learn's components or, with a run
    # config's scenario objective, the scenario's (translated below)
    weight_sets = [s for s in (set_ or []) if s.split("=", 1)[0].strip().startswith("grpo.reward_weights")]
    cfg = _load(config_file, [f"grpo.seed={seed}", 'grpo.device="cpu"', *[s for s in (set_ or []) if s not in weight_sets]])
    grpo = cfg.grpo
    components = [c.strip() for c in reward_components.split(",") if c.strip()] if reward_components else None
    if cfg.policy.head not in (None, "categorical"):
        _fail(f"policy.head = {cfg.policy.head!r}: learn picks one of the log's discrete actions, so its policy "
              "has a categorical head; remove --set policy.head")
    if (out / "policy.pt").exists() and not overwrite:
        _fail(f"{out} already holds a policy ({out / 'policy.pt'}); pass --overwrite to replace it, "
              "or choose another --out")
    _writable(out, "--out")
    data = _read(log, dataset, store, schema, features)
    from grpokit.business import log_reference, log_reward_spec, names_scenario_objective

    labels = data.action_labels or range(data.n_actions)
    merged = _learn_weights(grpo, weight_sets) if weight_sets else grpo  # the file's weights with --set's
    scenario_objective = config_file is not None and names_scenario_objective(cfg.scenario, dict(merged.reward_weights))
    if scenario_objective and components is None:
        # the file describes a scenario's objective (profit, peer_effect, group-relative parts): learn it in r̂'s terms
        try:
            spec = log_reward_spec(cfg.scenario, dict(merged.reward_weights), log_labels=labels)
        except ValueError as err:
            _fail(f"{config_file}: {err}")
        components, grpo = spec["components"], merged.model_copy(update={"reward_weights": spec["weights"]})
        if improvement_reference is None and components:
            improvement_reference = spec["reference"]
        if spec["dropped"]:
            console.print(f"[yellow]{escape(str(config_file))}: reward components {spec['dropped']} left out (a log's "
                          "reward is the unit's own profit; see --interference for peer effects)[/]")
        if components:
            console.print(f"learning {escape(str(config_file))}'s objective from the log: {components} with weights "
                          f"{spec['weights'] or '1 each'}, improvement against {spec['reference_action']!r}")
    elif scenario_objective:  # --reward-components names learn's parts: the file's scenario-named weights do not apply
        named = sorted(set(cfg.grpo.reward_weights))
        console.print(f"[yellow]{escape(str(config_file))}'s grpo.reward_weights {named} name the scenario's components; "
                      "with --reward-components only the weights given with --set apply (a missing weight is 1)[/]")
        bare = grpo.model_copy(update={"reward_weights": {}})
        grpo = _learn_weights(bare, weight_sets) if weight_sets else bare
    else:
        grpo = merged
    if improvement_reference is not None and config_file is not None:
        improvement_reference = log_reference(improvement_reference, cfg.scenario, labels)  # an offer name → its code
    improvement_reference = improvement_reference or "control"
    try:
        summary = learn_from_log(
            data, out, outcome_model=outcome_model, outcome_backend=outcome_backend, config=grpo, policy_config=cfg.policy, seed=seed,
            holdout=holdout, use_groups=not no_groups, progress=progress,
            on_stage=_stage_printer() if progress else None, allow_unlogged=allow_unlogged,
            interference=interference, cohorts=cfg.cohorts,
            reward_components=components, improvement_reference=improvement_reference,
        )
    except ValueError as err:
        _fail(str(err))
    except OSError as err:  # e.g. the disk filled up while writing policy.pt (written atomically: no torn file)
        _fail(f"cannot write the results in {out} ({err.filename or 'a file'}): {err.strerror or err}")
    _write_json(out / "summary.json", summary)
    _record(store, "learn", str(out), {"log": str(log or dataset), "grpo": grpo.model_dump(mode="json")},
            {k: v for k, v in summary.items() if k not in ("roles", "explanation", "uplift_curve")})
    unit = summary.get("reward_unit") or "per decision"
    console.print(f"policy saved to [bold]{summary['policy_path']}[/] (advantage {summary['advantage']}"
                  + (f", preference groups = {summary['preference_groups']}"
                     if summary.get("preference_groups") and summary.get("advantage") == "pgrpo" else "")
                  + ")")
    if summary.get("cohorts"):
        c = summary["cohorts"]
        console.print(f"cohorts: {c['n_cohorts']} discovered by {c['method']} on {escape(', '.join(c['features']))} "
                      f"(training rows: " + ", ".join(f"{k} {v:,}" for k, v in c["sizes"].items()) + ")")
    if summary.get("never_logged_actions"):
        never = ", ".join(map(str, summary["never_logged_actions"]))
        console.print(f"[bold yellow]warning:[/] the log never shows action(s) {escape(never)}: " + (
            "the policy may choose them on the outcome model's extrapolation alone (--allow-unlogged)"
            if summary.get("never_logged_get_mass") else
            "the policy gives them no probability (pass --allow-unlogged to let it choose them)"))
    deg = summary["degeneration"]
    if deg["warning"]:
        console.print(f"[bold yellow]warning:[/] {escape(deg['warning'])}")
    if summary.get("off_policy_assumption"):
        console.print(f"note: {escape(summary['off_policy_assumption'])}")
    hold = summary.get("holdout")
    if hold:
        level = int(round(100 * (1 - hold["alpha"])))
        table = Table(title=f"held-out {hold['method']} values on {summary['n_holdout']:,} rows ({unit}, {level} % CIs)")
        for col in ("policy", "value [CI]"):
            table.add_column(col, justify="right")
        table.add_row("learned policy", _ci(hold["learned"]))
        table.add_row(escape(f"everyone {hold['best_single']['action']} (best single)"), _ci(hold["best_single"]))
        table.add_row("logging policy", _ci(hold["logging"]))
        table.add_row(escape(f"learned − everyone {hold['best_single']['action']}"), _ci(hold["learned_minus_best_single"]))
        console.print(table)
        colour = "green" if summary["verdict_line"].startswith("personalized") else "yellow"
        console.print(f"[bold {colour}]{escape(summary['verdict_line'])}[/]")
    else:
        console.print(
            f"outcome-model value of the policy {summary['model_value_of_policy']:.5f} vs logging "
            f"{summary['model_value_of_logging']:.5f} (in-sample model estimates: check them with "
            "'grpokit evaluate' on held-out logs)"
        )
    mix = ", ".join(f"{escape(a)} {100 * s:.1f} %" for a, s in summary["decision_mix"].items())
    console.print(f"decision mix: {mix}")
    if summary.get("report_path"):
        console.print(f"report: [bold]{summary['report_path']}[/]")


@app.command()
def evaluate(
    policy: Path = typer.Option(..., "--policy", help="A policy.pt saved by 'grpokit learn'"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the verdict as JSON here"),
    out: Optional[Path] = typer.Option(None, "--out", help="A folder for verdict.json and report.html"),
    log: Optional[Path] = typer.Option(None, "--log", help="A parquet/CSV log of the current policy"),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="A dataset in the store"),
    store: Path = StoreOption,
    schema: Optional[Path] = SchemaOption,
    method: str = typer.Option("dr", "--method", help="ips, snips, dm, dr or sndr"),
    margin: float = typer.Option(0.0, "--margin", help="Promote only if the improvement's lower bound exceeds this"),
    alpha: float = typer.Option(0.05, "--alpha", help="1 - confidence level"),
    outcome_model: str = typer.Option("gbm", "--outcome-model", help="gbm, linear or lightgbm (for dm, dr, sndr)"),
    outcome_backend: str = typer.Option("local", "--outcome-backend",
                                        help="local, or ray: each lightgbm fit on Ray Train workers (extra 'ray')"),
    epsilon: float = typer.Option(0.0, "--epsilon", help="Score the served rule (1-eps)*pi + eps/A, as 'grpokit score --epsilon'"),
    greedy: bool = typer.Option(False, "--greedy", help="Score the greedy rule (argmax), as 'grpokit score --mode greedy'"),
    n_bootstrap: int = typer.Option(1000, "--n-bootstrap", min=10),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """The deployment gate: candidate vs current policy on a log, with CIs and a verdict."""
    from grpokit.offline.estimators import ESTIMATORS
    from grpokit.offline.workflow import evaluate_on_log

    if method not in ESTIMATORS:
        _fail(f"unknown method {method!r}; choose one of {list(ESTIMATORS)}")
    _check_outcome(outcome_model, outcome_backend)
    check_output(json_out)  # before the work: a verdict must not be lost to an unwritable path
    if out is not None:
        _writable(out, "--out")
    if not 0.0 <= epsilon <= 1.0:
        _fail(f"--epsilon must be in [0, 1], got {epsilon}")
    features = n_policy_actions = None
    if log is not None and policy.is_file():
        features, n_policy_actions = _policy_fields(policy, schema)
    data = _read(log, dataset, store, schema, features, show_roles=False, n_actions=n_policy_actions)
    console.print(f"[dim]…[/] scoring the policy on {len(data):,} logged decisions ({method}, "
                  f"{n_bootstrap} bootstrap resamples)")
    try:
        result = evaluate_on_log(
            data, policy, method=method, margin=margin, alpha=alpha, outcome_model=outcome_model,
            outcome_backend=outcome_backend,
            n_bootstrap=n_bootstrap, seed=seed, epsilon=epsilon, mode="greedy" if greedy else "sample",
        )
    except (ValueError, FileNotFoundError) as err:
        _fail(str(err))
    written = []
    if out is not None:
        from grpokit.evaluation.offline_report import write_offline_report

        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / "verdict.json", result)
        write_offline_report(out / "report.html", result, kind="evaluate")
        written += [str(out / "verdict.json"), str(out / "report.html")]
    if json_out is not None:
        _write_json(json_out, result)
        written.append(str(json_out))
    run_id = str(out or json_out or f"evaluate:{policy}:{log or dataset}")
    _record(store, "evaluate", _unique(store, run_id),
            {"policy": str(policy), "log": str(log or dataset), "method": method},
            {k: v for k, v in result.items() if k not in ("explanation", "uplift_curve")})
    level = int(round(100 * (1 - alpha)))
    unit = result.get("reward_unit") or "per decision"
    table = Table(title=f"{method} estimates on {result['n_rows']:,} logged decisions ({unit}, {level} % CIs)")
    for col in ("", "value", "ci low", "ci high"):
        table.add_column(col, justify="right")
    for name, key in (("candidate", "candidate"), ("current (logging)", "current"), ("improvement", "improvement")):
        r = result[key]
        table.add_row(name, _num(r["value"]), _num(r["ci_low"]), _num(r["ci_high"]))
    console.print(table)
    from grpokit.evaluation.offline_report import headline

    text, word = headline(result["improvement"], result["current"], unit, margin, alpha)
    colour = {"PROMOTE": "green", "HOLD": "red"}.get(word, "yellow")
    console.print(f"[bold {colour}]{escape(text)}[/]")
    console.print(f"{result['verdict'].upper()}: {escape(result['reason'])}")
    for g, r in (result.get("per_group") or {}).items():
        if "improvement" in r:
            console.print(f"  {escape(str(g))}: {_ci(r['improvement'])} -> {r['verdict']}")
    if written:
        console.print("written to " + ", ".join(f"[bold]{w}[/]" for w in written))


def _policy_fields(policy: Path, schema: Optional[Path]) -> tuple[Optional[str], Optional[int]]:
    """The policy's input fields as --features, so a raw log is read with exactly what the policy needs,
    and its number of actions when it has no action labels (the action set a log's codes belong to)."""
    try:
        from grpokit.policy.deployed import DeployedPolicy

        dp = DeployedPolicy.load(policy)
    except (ValueError, FileNotFoundError) as err:
        _fail(str(err))
    n_actions = None if getattr(dp, "action_labels", None) and not all(
        str(lab) == str(i) for i, lab in enumerate(dp.action_labels)) else int(dp.n_actions)
    s = _schema(schema)
    if (s is not None and s.features is not None) or dp.encoder is None:
        return None, n_actions
    return ",".join(dp.encoder.names), n_actions


def _unique(store: Path, run_id: str) -> str:
    """``run_id``, or ``run_id#2``, ``#3``... when the store already has it (evaluate can be rerun)."""
    from grpokit.store import Store

    try:
        with Store(store, read_only=True) as st:
            taken = set(st.list_runs()["run_id"])
    except Exception:  # noqa: BLE001 - recording is best effort
        return run_id
    k, rid = 1, run_id
    while rid in taken:
        k += 1
        rid = f"{run_id}#{k}"
    return rid
