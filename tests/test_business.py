"""`grpokit run` end to end on small budgets: the summary a business reads, the pilot, the report."""

import json

import pytest
import torch
from typer.testing import CliRunner

from grpokit.business import cluster_pilot
from grpokit.cli import app
from grpokit.scenarios import make_scenario

runner = CliRunner()
SMALL = ["--set", "grpo.steps=40", "--set", "grpo.batch_size=128", "--set", "grpo.eval_size=512",
         "--set", "evaluation.eval_size=2000", "--set", "evaluation.log_size=3000", "--set", "evaluation.pilot_size=3000",
         "--no-progress"]


def test_marketing_run(tmp_path):
    out = tmp_path / "run"
    r = runner.invoke(app, ["run", "--out", str(out), "--set", "scenario.name=marketing", "--set", "scenario.spillover=0.1",
                            "--store", str(tmp_path / "s.duckdb"), *SMALL])
    assert r.exit_code == 0, r.output
    s = json.loads((out / "summary.json").read_text())
    names = {"grpo", "grpo_ignoring_spillover", "no_offer", "random", "best_single", "propensity", "t_learner", "x_learner", "oracle"}
    assert set(s["policies"]) == names
    for block in s["policies"].values():
        assert {"value", "per_group", "spend", "offer_rate_sure_things"} <= set(block)
        assert len(block["per_group"]) == 12
    assert s["policies"]["oracle"]["share_of_oracle"] == pytest.approx(1.0)
    assert all(b["value"] <= s["policies"]["oracle"]["value"] + 1e-9 for b in s["policies"].values())
    assert "lowest_cohort_improvement" in s["policies"]["grpo"] and "cohort_improvement_spread" in s["policies"]["grpo"]
    p = s["pilot"]
    assert p["ci_low"] <= p["difference"] <= p["ci_high"] and p["cohorts_new"] + p["cohorts_current"] == 12
    assert s["oracle_kind"] == "reference"
    html = (out / "report.html").read_text()
    assert "Who gets which decision" in html and "fidelity" in html
    assert 0 <= s["explanation"]["fidelity"] <= 1
    again = runner.invoke(app, ["run", "--out", str(out), "--set", "scenario.name=marketing", *SMALL])
    assert again.exit_code == 2 and "already holds a run" in again.output


@pytest.mark.parametrize("name, baselines", [("pricing", {"best_fixed_price"}), ("allocation", {"equal_split", "best_fixed_split"})])
def test_continuous_runs(tmp_path, name, baselines):
    out = tmp_path / name
    r = runner.invoke(app, ["run", "--out", str(out), "--set", f"scenario.name={name}", "--store", str(tmp_path / "s.duckdb"), *SMALL])
    assert r.exit_code == 0, r.output
    s = json.loads((out / "summary.json").read_text())
    assert set(s["policies"]) == {"grpo", "oracle"} | baselines
    assert (out / "report.html").is_file()


def test_cluster_pilot_recovers_a_known_difference():
    sc = make_scenario("marketing")
    ctx = sc.sample_contexts(20000, torch.Generator().manual_seed(0))
    none = torch.zeros(len(ctx), dtype=torch.long)
    oracle = sc.oracle_actions(ctx)
    res = cluster_pilot(sc, ctx, oracle, none, seed=1)
    assert res["true_effect"] > 0 and res["ci_low"] <= res["true_effect"] <= res["ci_high"]
    same = cluster_pilot(sc, ctx, none, none, seed=1)
    assert same["true_effect"] == 0.0 and same["ci_low"] <= 0.0 <= same["ci_high"]
    with pytest.raises(ValueError, match="at least 4 cohorts"):
        cluster_pilot(make_scenario("pricing"), make_scenario("pricing").sample_contexts(100, torch.Generator()),
                      torch.ones(100), torch.ones(100))


def test_bad_evaluation_config(tmp_path):
    r = runner.invoke(app, ["run", "--out", str(tmp_path / "x"), "--set", "scenario.name=marketing",
                            "--set", 'evaluation.baselines=["magic"]'])
    assert r.exit_code == 2 and "evaluation.baselines" in r.output


def test_scenario_simulate_and_evaluate_agree_with_monte_carlo(tmp_path):
    import numpy as np
    import pandas as pd

    log = tmp_path / "log.parquet"
    sets = ["--set", "scenario.name=marketing", "--set", "scenario.spillover=0.1"]
    r = runner.invoke(app, ["scenario", "simulate", "--out", str(log), "--n", "3000", "--seed", "5", *sets])
    assert r.exit_code == 0, r.output
    df = pd.read_parquet(log)
    assign = pd.DataFrame({"unit_id": df["decision_id"], "action": np.where(df["frequency"] > 0, 3, 0)})
    assign.sample(frac=1.0, random_state=0).to_csv(tmp_path / "a.csv", index=False)  # order must not matter
    out = tmp_path / "v.json"
    r = runner.invoke(app, ["scenario", "evaluate", "--assignment", str(tmp_path / "a.csv"), "--json", str(out),
                            "--n", "3000", "--seed", "5", *sets])
    assert r.exit_code == 0, r.output
    value = json.loads(out.read_text())["value"]
    # Monte Carlo: 400 independent realizations of the same joint assignment (spillover included)
    sc = make_scenario("marketing", spillover=0.1)
    _, ctx, _ = sc.simulate_log(3000, "uniform", seed=5, return_contexts=True)
    a = torch.tensor(assign["action"].to_numpy()).long().unsqueeze(1).expand(-1, 400)
    profit = sc.reward(ctx, a, torch.Generator().manual_seed(9))["profit"].double()
    per_draw = profit.mean(0)
    assert abs(float(per_draw.mean()) - value) < 4 * float(per_draw.std()) / 20 + 1e-6
    # bad assignments
    assign.iloc[:-1].to_csv(tmp_path / "short.csv", index=False)
    r = runner.invoke(app, ["scenario", "evaluate", "--assignment", str(tmp_path / "short.csv"), "--json", str(out), "--n", "3000", *sets])
    assert r.exit_code == 2 and "gives decisions to 2999 units, the population has 3000" in r.output
    bad = assign.copy()
    bad.loc[7, "action"] = 9
    bad.to_csv(tmp_path / "bad.csv", index=False)
    r = runner.invoke(app, ["scenario", "evaluate", "--assignment", str(tmp_path / "bad.csv"), "--json", str(out), "--n", "3000", *sets])
    assert r.exit_code == 2 and "decision_id 7: 9 is not a code 0..4" in r.output


def test_marketing_learned_from_logs_reports_off_policy_values(tmp_path):
    out = tmp_path / "logs"
    r = runner.invoke(app, ["run", "--out", str(out), "--set", "scenario.name=marketing", "--set", "evaluation.train_on=logs",
                            "--set", "evaluation.pilot=false", "--store", str(tmp_path / "s.duckdb"), *SMALL])
    assert r.exit_code == 0, r.output
    s = json.loads((out / "summary.json").read_text())
    for name, block in s["policies"].items():
        if name == "oracle":
            assert "off_policy" not in block
            continue
        o = block["off_policy"]
        assert o["estimator"] == "dr" and o["ci_low"] <= o["value"] <= o["ci_high"]
        assert "grpo_ignoring_spillover" not in s["policies"]
    r = runner.invoke(app, ["run", "--out", str(tmp_path / "p"), "--set", "scenario.name=pricing", "--set", "evaluation.train_on=logs", *SMALL])
    assert r.exit_code == 2 and "simulates logs" in r.output


def test_settings_that_would_fail_after_training_fail_first(tmp_path):
    out = tmp_path / "early"
    r = runner.invoke(app, ["run", "--out", str(out), "--set", "scenario.name=marketing",
                            "--set", "evaluation.current_policy=nonesuch", *SMALL])
    assert r.exit_code == 2 and "evaluation.current_policy" in r.output
    assert not (out / "metrics.jsonl").exists()  # nothing was trained or written
    r = runner.invoke(app, ["run", "--out", str(out), "--set", "scenario.name=marketing", "--set", "evaluation.train_on=logs",
                            "--set", "grpo.budget=1.0", *SMALL])
    assert r.exit_code == 2 and "grpo.budget" in r.output


def test_a_store_that_cannot_be_written_does_not_fail_the_run(tmp_path):
    out = tmp_path / "r"
    r = runner.invoke(app, ["run", "--out", str(out), "--set", "scenario.name=pricing", "--store", str(tmp_path), *SMALL])
    assert r.exit_code == 0, r.output
    assert "warning" in r.output and (out / "summary.json").is_file()
    assert (out / "train_summary.json").is_file()
