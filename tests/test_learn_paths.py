"""One learner from a log: `grpokit learn` and `grpokit run --set evaluation.train_on=logs` share it.

Also: the degeneration warning and the honest best-single line raised inside learn, the held-out
comparison through the Python API, the cohort exposure (interference) feature and the summaries
that say when the off-policy estimates rest on a no-interference assumption the scenario breaks.
"""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from grpokit.cli import app
from grpokit.config import GRPOConfig
from grpokit.offline.io import validate_log
from grpokit.offline.schema import LogSchema
from grpokit.offline.workflow import cohort_treated_share, fit_policy_on_log, learn_from_log

runner = CliRunner()
SMALL = ["--set", "grpo.steps=40", "--set", "grpo.batch_size=128", "--set", "grpo.eval_size=512",
         "--set", "evaluation.eval_size=2000", "--set", "evaluation.log_size=3000", "--set", "evaluation.pilot=false",
         "--set", "evaluation.compare_ignore_spillover=false", "--no-progress"]


def _log(n, seed, personalized: bool):
    """Two features, three actions, uniform logging. personalized: action 1 pays when x1 > 0, action 2
    when x1 < 0; else action 1 pays 1 for everybody and the others nothing (one best action)."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    action = rng.integers(0, 3, n)
    if personalized:
        mean = np.where(action == 1, 2.0 * (x1 > 0), np.where(action == 2, 2.0 * (x1 < 0), 0.0))
    else:
        mean = (action == 1).astype(float)
    df = pd.DataFrame({"x1": x1, "x2": x2, "action": action, "pscore": np.full(n, 1 / 3),
                       "reward": mean + 0.1 * rng.normal(size=n)})
    return validate_log(df, LogSchema(n_actions=3, features=["x1", "x2"]))


def test_learn_warns_when_the_policy_collapses_and_says_best_single_is_as_good(tmp_path):
    log = _log(1500, 0, personalized=False)
    s = learn_from_log(log, tmp_path / "run", outcome_model="linear", report=False, n_bootstrap=50,
                       config=GRPOConfig(device="cpu", steps=150, seed=0))
    deg = s["degeneration"]
    assert deg["constant"] and deg["top_action"] == "1" and deg["top_share"] > 0.98
    assert deg["warning"] and "gives 1 to" in deg["warning"] and "best single action" in deg["warning"]
    assert s["best_single_action"] == "1"
    assert s["verdict_line"].startswith("not better than the best single action: giving everyone 1 is as good")


def test_heldout_comparison_through_the_python_api(tmp_path):
    log = _log(3000, 1, personalized=True)
    s = learn_from_log(log, tmp_path / "run", outcome_model="gbm", report=False, n_bootstrap=100, holdout=0.3,
                       config=GRPOConfig(device="cpu", steps=200, seed=1))
    hold = s["holdout"]
    assert s["n_holdout"] == 900 and hold["method"] == "dr"
    for key in ("learned", "best_single", "logging"):
        assert hold[key]["ci_low"] <= hold[key]["value"] <= hold[key]["ci_high"], key
    d = hold["learned_minus_best_single"]
    # the paired difference is the difference of the two DR points on the same rows
    assert d["value"] == pytest.approx(hold["learned"]["value"] - hold["best_single"]["value"], abs=1e-9)
    # truth: the personalized optimum is worth 2, action 1 or 2 for everybody 1, the uniform logger 2/3
    assert hold["learned"]["value"] > 1.6 and hold["logging"]["value"] == pytest.approx(2 / 3, abs=0.15)
    assert hold["best_single"]["value"] == pytest.approx(1.0, abs=0.2)
    assert d["ci_low"] > 0.5 and s["verdict_line"].startswith("personalized policy beats the best single action")
    assert not s["degeneration"]["constant"]
    assert s["interference"] is None and "assume no interference" in s["off_policy_assumption"]


def test_cohort_treated_share_by_hand():
    group = np.array([0, 0, 0, 1, 1, 2])
    action = np.array([0, 2, 1, 0, 0, 3])
    t = cohort_treated_share(group, action)
    assert np.allclose(t, [1.0, 0.5, 0.5, 0.0, 0.0, 0.0])  # leave-one-out; a cohort of one has no peers


def test_interference_peer_credit_is_identified_when_cohorts_differ_in_treatment_rate():
    """Cohorts logged at rates 0.1..0.9: reward = own effect + beta * (share of peers treated); the
    linear outcome model's slope in t is the peer credit (beta)."""
    rng = np.random.default_rng(3)
    n_groups, per, beta = 20, 200, 2.0
    group = np.repeat(np.arange(n_groups), per)
    rate = np.linspace(0.1, 0.9, n_groups)[group]
    action = (rng.random(len(group)) < rate).astype(int)
    t = cohort_treated_share(group, action)
    x = rng.normal(size=len(group))
    reward = 0.5 * action + beta * t + 0.2 * rng.normal(size=len(group))
    df = pd.DataFrame({"x": x, "group": group, "action": action, "reward": reward,
                       "pscore": np.where(action == 1, rate, 1 - rate)})
    log = validate_log(df, LogSchema(n_actions=2, features=["x"]))
    fit = fit_policy_on_log(log, outcome_model="linear", config=GRPOConfig(device="cpu", steps=5), interference=True)
    credit = np.array(list(fit.interference["peer_credit_per_cohort"].values()))
    assert credit.shape == (n_groups,) and np.allclose(credit, beta, atol=0.35)
    assert fit.interference["share_sd"] > 0.2
    # the reward table credits a treatment with the cohort's peer credit
    base = fit.model.predict_crossfit()
    assert np.allclose(fit.table[:, 1] - base[:, 1], credit[log.group]) and np.allclose(fit.table[:, 0], base[:, 0])
    with pytest.raises(ValueError, match="group"):
        fit_policy_on_log(validate_log(df.drop(columns=["group"]), LogSchema(n_actions=2, features=["x"])),
                          outcome_model="linear", config=GRPOConfig(device="cpu", steps=5), interference=True)


@pytest.mark.slow
def test_run_train_on_logs_uses_the_learn_path_and_flags_interference(tmp_path):
    out = tmp_path / "logs"
    r = runner.invoke(app, ["run", "--out", str(out), "--set", "scenario.name=marketing", "--set",
                            "evaluation.train_on=logs", "--store", str(tmp_path / "s.duckdb"), *SMALL])
    assert r.exit_code == 0, r.output
    s = json.loads((out / "summary.json").read_text())
    assert s["learner"]["path"] == "grpokit.offline.workflow.fit_policy_on_log"
    assert s["learner"]["degeneration"]["top_share"] <= 1.0 and s["learner"]["interference"] is None
    assert s["off_policy_assumption"]["broken"] is False
    assert "caution: spillover" not in (out / "report.html").read_text()
    spill = tmp_path / "spill"
    r = runner.invoke(app, ["run", "--out", str(spill), "--set", "scenario.name=marketing", "--set",
                            "evaluation.train_on=logs", "--set", "scenario.spillover=0.3",
                            "--store", str(tmp_path / "s.duckdb"), *SMALL])
    assert r.exit_code == 0, r.output
    s = json.loads((spill / "summary.json").read_text())
    assert s["off_policy_assumption"]["broken"] is True and s["off_policy_assumption"]["spillover"] == 0.3
    assert s["learner"]["interference"] is None  # unidentified on a unit-randomized log (BENCHMARKS.md)
    html = (spill / "report.html").read_text()
    assert "caution: spillover = 0.3 breaks the no-interference assumption" in html


@pytest.mark.slow
def test_run_train_on_logs_uses_learns_default_advantage_unless_told(tmp_path):
    """examples/marketing.toml names pgrpo (the simulator's choice); learning from its log uses learn's
    default (grpo) unless evaluation.logs_advantage says otherwise."""
    from grpokit.offline.workflow import DEFAULT_ADVANTAGE

    base = ["run", "examples/marketing.toml", "--set", "evaluation.train_on=logs", "--store", str(tmp_path / "s.duckdb"),
            *SMALL, "--set", "evaluation.baselines=[]"]
    r = runner.invoke(app, [*base, "--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    s = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert s["learner"]["advantage"] == DEFAULT_ADVANTAGE == "grpo"
    r = runner.invoke(app, [*base, "--out", str(tmp_path / "b"), "--set", 'evaluation.logs_advantage="config"'])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["learner"]["advantage"] == "pgrpo"
    r = runner.invoke(app, [*base, "--out", str(tmp_path / "c"), "--set", 'evaluation.logs_advantage="ppo"'])
    assert r.exit_code != 0 and "logs_advantage" in r.output
