"""The bring-your-own-data walk-through, end to end on the example log (examples/own_data/make_log.py).

import (leaky columns refused) -> learn (encoder in policy.pt, held-out comparison, report) ->
score (decisions with propensities) -> outcomes of the served decisions -> evaluate on them.
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from grpokit.cli import app
from grpokit.offline.io import validate_log
from grpokit.offline.schema import LogSchema
from grpokit.offline.workflow import degeneration, learn_from_log
from grpokit.policy.deployed import DeployedPolicy
from grpokit.policy.features import FeatureError

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("make_log", ROOT / "examples" / "own_data" / "make_log.py")
gen = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gen)

runner = CliRunner()
ENV = {"COLUMNS": "200"}
FAST = ["--outcome-model", "linear", "--set", "grpo.steps=120", "--no-progress"]


def test_truth_of_the_generator_is_consistent():
    log = gen.make_log(20_000, 0)
    t = gen.truth(log)
    # the logged profit of each offer matches its true expected profit (the log is what the truth says)
    for a, offer in enumerate(gen.OFFERS):
        rows = (log["offer"] == offer).to_numpy()
        expected = gen.expected_profit(log[rows], np.full(rows.sum(), a)).mean()
        se = log.loc[rows, "profit"].std() / np.sqrt(rows.sum())
        assert abs(log.loc[rows, "profit"].mean() - expected) < 4 * se, offer
    assert t["oracle_value"] > t["best_single_value"] > t["logging_value"]
    q = gen.logging_probabilities(log)
    assert np.allclose(q.sum(1), 1) and q.min() >= 0.025 - 1e-12
    assert np.allclose(log["propensity"], q[np.arange(len(log)), log["offer"].map(gen.OFFERS.index)], atol=1e-6)


@pytest.mark.slow
def test_walkthrough_cli(tmp_path):
    log_path, store = tmp_path / "offers.parquet", str(tmp_path / "s.duckdb")
    gen.make_log(6000, 1).to_parquet(log_path)
    schema = tmp_path / "schema.toml"
    schema.write_text('action = "offer"\nactions = ["none", "10%", "20%", "free_shipping"]\nreward = "profit"\n'
                      'pscore = "propensity"\ngroup = "region"\nreward_unit = "EUR profit per customer"\n'
                      'features = ["region", "channel", "age", "tenure", "orders_90d", "avg_basket", '
                      '"days_since_last_order", "is_member"]\n')
    four = tmp_path / "four.toml"
    four.write_text('action = "offer"\nactions = ["none", "10%", "20%", "free_shipping"]\nreward = "profit"\n'
                    'pscore = "propensity"\n')
    # 1. import with the four-line schema: the outcomes and the id are refused, by name
    r = runner.invoke(app, ["data", "import", str(log_path), "--name", "four", "--store", store, "--schema", str(four)],
                      env=ENV)
    assert r.exit_code == 0, r.output
    assert "customer_id, converted, revenue" in r.output.replace("\n", " ")
    # 2. learn with the tutorial's schema
    r = runner.invoke(app, ["data", "import", str(log_path), "--name", "march", "--store", store, "--schema",
                            str(schema)], env=ENV)
    assert r.exit_code == 0, r.output
    run = tmp_path / "run"
    r = runner.invoke(app, ["learn", "--dataset", "march", "--store", store, "--out", str(run), *FAST], env=ENV)
    assert r.exit_code == 0, r.output
    summary = json.loads((run / "summary.json").read_text())
    assert summary["advantage"] == "grpo" and summary["preference_groups"] == "region"
    hold = summary["holdout"]
    assert summary["n_holdout"] == 1800 and set(hold) >= {"learned", "best_single", "logging", "learned_minus_best_single"}
    assert ("beats the best single action" in r.output) or ("not better than the best single action" in r.output)
    html = (run / "report.html").read_text()
    assert "EUR profit per customer" in html and "Uplift (Qini) curve" in html and "How the policy decides" in html
    # the policy file loads without pickle and decides from raw rows
    payload = torch.load(run / "policy.pt", weights_only=True)
    assert payload["metadata"]["action_labels"] == gen.OFFERS
    dp = DeployedPolicy.load(run / "policy.pt")
    assert [f["name"] for f in dp.fields][:2] == ["region", "channel"]
    # 3. score fresh customers: decisions with propensities
    customers = tmp_path / "new.parquet"
    gen.make_customers(3000, 9).to_parquet(customers)
    decisions = tmp_path / "decisions.parquet"
    r = runner.invoke(app, ["score", "--policy", str(run / "policy.pt"), "--input", str(customers), "--out",
                            str(decisions), "--epsilon", "0.1", "--seed", "3"], env=ENV)
    assert r.exit_code == 0, r.output
    d = pd.read_parquet(decisions)
    q = dp.served_probabilities(pd.read_parquet(customers), epsilon=0.1)
    assert np.allclose(d["propensity"], q[np.arange(len(d)), d["action_code"]], atol=1e-6)
    # 4. what the served decisions earned, then evaluate the same served rule on them: IPS weights are all 1
    served = tmp_path / "served.parquet"
    gen.main(["--outcomes", str(decisions), "--customers", str(customers), "--out", str(served), "--seed", "4"])
    out = tmp_path / "eval"
    r = runner.invoke(app, ["evaluate", "--log", str(served), "--policy", str(run / "policy.pt"), "--schema", str(four),
                            "--method", "ips", "--epsilon", "0.1", "--out", str(out), "--n-bootstrap", "200",
                            "--store", store], env=ENV)
    assert r.exit_code == 0, r.output
    v = json.loads((out / "verdict.json").read_text())
    assert abs(v["improvement"]["value"]) < 1e-9 and v["candidate"]["diagnostics"]["ess"] == pytest.approx(3000)
    assert "inconclusive" in r.output or "HOLD" in r.output
    assert (out / "report.html").is_file()
    # evaluate without --json still prints the verdict
    r = runner.invoke(app, ["evaluate", "--log", str(served), "--policy", str(run / "policy.pt"), "--schema", str(four),
                            "--method", "ips", "--n-bootstrap", "50", "--store", store], env=ENV)
    assert r.exit_code == 0 and "New policy:" in r.output
    # the runs are listed
    r = runner.invoke(app, ["runs", "list", "--store", store], env=ENV)
    assert r.exit_code == 0 and "learn" in r.output and "evaluate" in r.output
    r = runner.invoke(app, ["runs", "show", str(run), "--store", store], env=ENV)
    assert r.exit_code == 0 and "holdout" in r.output


def test_evaluate_names_missing_and_bad_fields(tmp_path):
    df = gen.make_log(1500, 2)
    log = validate_log(df, LogSchema(action="offer", actions=gen.OFFERS, reward="profit", pscore="propensity"))
    from grpokit.config import GRPOConfig

    summary = learn_from_log(log, tmp_path / "run", outcome_model="linear", holdout=0.0, report=False,
                             config=GRPOConfig(device="cpu", steps=5), n_bootstrap=50)
    assert "holdout" not in summary and summary["advantage"] == "grpo"
    dp = DeployedPolicy.load(tmp_path / "run" / "policy.pt")
    row = {f["name"]: df.iloc[0][f["name"]] for f in dp.fields}
    row = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
    assert dp.probabilities(row).shape == (1, 4)
    with pytest.raises(FeatureError, match="channel"):
        dp.probabilities({k: v for k, v in row.items() if k != "channel"})
    with pytest.raises(FeatureError, match="revenue"):
        dp.probabilities({**row, "revenue": 3.0})
    path = tmp_path / "no_age.parquet"
    df.drop(columns=["age"]).to_parquet(path)
    r = runner.invoke(app, ["evaluate", "--log", str(path), "--policy", str(tmp_path / "run" / "policy.pt"),
                            "--store", str(tmp_path / "s.duckdb"), "--method", "ips", "--n-bootstrap", "20",
                            "--schema", str(_four(tmp_path))], env=ENV)
    assert r.exit_code == 2 and "'age'" in r.output and "--schema" in r.output


def _four(tmp_path):
    p = tmp_path / "four.toml"
    p.write_text('action = "offer"\nactions = ["none", "10%", "20%", "free_shipping"]\nreward = "profit"\n'
                 'pscore = "propensity"\n')
    return p


def test_degeneration_warning_on_a_constant_policy():
    labels = ["a", "b", "c"]
    constant = np.tile([0.999, 0.0005, 0.0005], (100, 1))
    d = degeneration(constant, {"frac_zero_std": 1.0}, labels)
    assert d["constant"] and d["warning"] and "gives a to 99.9 %" in d["warning"] and "frac_zero_std" in d["warning"]
    personal = np.zeros((100, 3))
    personal[np.arange(100), np.arange(100) % 3] = 1.0
    d = degeneration(personal, {"frac_zero_std": 1.0}, labels)
    assert not d["constant"] and d["warning"] is None and d["converged"]  # deterministic but personalized: fine
    uniform = np.full((100, 3), 1 / 3)
    assert degeneration(uniform, {"frac_zero_std": 0.0}, labels)["warning"] is None
