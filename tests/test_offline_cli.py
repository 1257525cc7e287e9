"""Bring-your-own-logs end to end: import, learn, evaluate (the deployment gate), and bad input."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from grpokit.cli import app
from grpokit.offline.gate import deployment_gate

runner = CliRunner()


def _log(n, seed, n_actions=4):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    theta = np.array([[2.0, 0, 0], [-2.0, 0, 0], [0, 2.0, 0], [0, -2.0, 0]])[:n_actions]
    p = 1 / (1 + np.exp(-(x @ theta.T - 1.0)))
    a = rng.integers(0, n_actions, n)
    r = (rng.random(n) < p[np.arange(n), a]).astype(float)
    df = pd.DataFrame({"decision_id": np.arange(n) + 10_000 * seed, "x0": x[:, 0], "x1": x[:, 1], "x2": x[:, 2],
                       "action": a, "reward": r, "pscore": np.full(n, 1 / n_actions),
                       "group": np.where(x[:, 2] > 0, "north", "south")})
    return df


def test_import_learn_evaluate(tmp_path):
    train, test = tmp_path / "train.csv", tmp_path / "test.parquet"
    _log(3000, 0).to_csv(train, index=False)
    _log(3000, 1).to_parquet(test)
    store = tmp_path / "s.duckdb"
    r = runner.invoke(app, ["data", "import", str(train), "--name", "train", "--store", str(store)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["data", "list", "--store", str(store)])
    assert r.exit_code == 0 and "train" in r.output and "3000" in r.output
    run = tmp_path / "run"
    r = runner.invoke(app, ["learn", "--dataset", "train", "--store", str(store), "--out", str(run),
                            "--outcome-model", "linear", "--set", "grpo.steps=120"])
    assert r.exit_code == 0, r.output
    assert (run / "policy.pt").is_file()
    out = tmp_path / "verdict.json"
    r = runner.invoke(app, ["evaluate", "--log", str(test), "--policy", str(run / "policy.pt"), "--json", str(out),
                            "--store", str(store), "--outcome-model", "linear", "--n-bootstrap", "200"])
    assert r.exit_code == 0, r.output
    v = json.loads(out.read_text())
    # uniform random logging leaves a lot on the table: the learned policy must be clearly better
    assert v["verdict"] == "promote", v["reason"]
    assert v["improvement"]["ci_low"] > 0 and v["candidate"]["value"] > v["current"]["value"]
    assert set(v["per_group"]) == {"north", "south"}
    # the same candidate with an impossible margin is held
    r = runner.invoke(app, ["evaluate", "--log", str(test), "--policy", str(run / "policy.pt"), "--json", str(out),
                            "--store", str(store), "--margin", "1.0", "--method", "ips", "--n-bootstrap", "200"])
    assert r.exit_code == 0 and json.loads(out.read_text())["verdict"] == "hold"
    # runs are recorded in the store
    from grpokit.store import Store

    with Store(store) as st:
        assert set(st.list_runs()["kind"]) == {"learn", "evaluate"}


def test_bad_input(tmp_path):
    good = tmp_path / "log.csv"
    _log(200, 0).to_csv(good, index=False)
    r = runner.invoke(app, ["data", "import", str(tmp_path / "none.csv"), "--name", "x", "--store", str(tmp_path / "s.duckdb")])
    assert r.exit_code == 2 and "does not exist" in r.output
    bad = _log(200, 0)
    bad.loc[5, "pscore"] = 1.5
    bad.to_csv(tmp_path / "bad.csv", index=False)
    r = runner.invoke(app, ["data", "import", str(tmp_path / "bad.csv"), "--name", "bad", "--store", str(tmp_path / "s.duckdb")])
    assert r.exit_code == 2 and "pscore" in r.output and "row 5" in r.output
    r = runner.invoke(app, ["evaluate", "--log", str(good), "--dataset", "x", "--policy", "p.pt", "--json", "o.json"])
    assert r.exit_code == 2 and "exactly one" in r.output
    r = runner.invoke(app, ["evaluate", "--log", str(good), "--policy", "p.pt", "--json", "o.json", "--method", "magic"])
    assert r.exit_code == 2 and "magic" in r.output
    r = runner.invoke(app, ["evaluate", "--log", str(good), "--policy", str(tmp_path / "none.pt"), "--json", str(tmp_path / "o.json"),
                            "--store", str(tmp_path / "s.duckdb")])
    assert r.exit_code == 2 and "no policy file" in r.output
    # a policy trained on other features: the error names the missing columns
    run = tmp_path / "run"
    assert runner.invoke(app, ["learn", "--log", str(good), "--out", str(run), "--set", "grpo.steps=2",
                               "--store", str(tmp_path / "s.duckdb")]).exit_code == 0
    other = _log(200, 1).rename(columns={"x1": "age"})
    other.to_csv(tmp_path / "other.csv", index=False)
    r = runner.invoke(app, ["evaluate", "--log", str(tmp_path / "other.csv"), "--policy", str(run / "policy.pt"),
                            "--json", str(tmp_path / "o.json"), "--store", str(tmp_path / "s.duckdb")])
    assert r.exit_code == 2 and "x1" in r.output


def test_gate_holds_when_the_candidate_is_the_current_policy():
    rng = np.random.default_rng(3)
    n, k = 4000, 4
    a = rng.integers(0, k, n)
    r = (rng.random(n) < 0.1 + 0.05 * a).astype(float)
    uniform = np.full((n, k), 1 / k)
    res = deployment_gate(reward=r, action=a, pscore=np.full(n, 1 / k), target_probs=uniform, method="ips", n_bootstrap=300)
    assert res["verdict"] == "hold"
    assert res["improvement"]["ci_low"] <= 0 <= res["improvement"]["ci_high"]
    best = np.zeros((n, k))
    best[:, k - 1] = 1.0
    res = deployment_gate(reward=r, action=a, pscore=np.full(n, 1 / k), target_probs=best, method="ips", n_bootstrap=300)
    assert res["verdict"] == "promote" and "promote" in res["reason"]
    with pytest.raises(ValueError, match="margin"):
        deployment_gate(reward=r, action=a, pscore=np.full(n, 1 / k), target_probs=best, margin=float("nan"))
