"""`grpokit obd validate` and `grpokit obd learn` on a small synthetic OBD-shaped folder (fast, no real data needed)."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from grpokit.cli import app
from test_obd import _write_synthetic_obd

runner = CliRunner()


@pytest.fixture(scope="module")
def obd_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("obd")

    def sparse_clicks(df):
        df["click"] = (np.random.default_rng(1).random(len(df)) < 0.2).astype(int)
        return df

    _write_synthetic_obd(root, "random", n=400, seed=0, mutate=sparse_clicks)
    _write_synthetic_obd(root, "bts", n=400, seed=1, mutate=sparse_clicks)
    rng = np.random.default_rng(2)
    (root / "bts" / "all" / "prior_bts.json").write_text(
        json.dumps({"alpha": rng.integers(1, 50, 80).tolist(), "beta": rng.integers(50, 500, 80).tolist()})
    )
    return root


def test_obd_validate(obd_root, tmp_path):
    out = tmp_path / "v.json"
    r = runner.invoke(app, ["obd", "validate", "--root", str(obd_root), "--json", str(out),
                            "--n-sim", "2000", "--n-bootstrap", "50", "--outcome-model", "linear"])
    assert r.exit_code == 0, r.output
    d = json.loads(out.read_text())
    v = d["on_policy_value"]
    assert set(d["estimators"]) == {"ips", "snips", "dm", "dr", "sndr"}
    for res in d["estimators"].values():
        assert res["ci_low"] <= res["value"] <= res["ci_high"]
        assert res["relative_error"] == pytest.approx(abs(res["value"] - v) / v)
    # uniform logging, pscore 1/80: IPS weights are 80 x the target probability, so their mean is ~1
    assert 0.5 < d["estimators"]["ips"]["diagnostics"]["mean_weight"] < 1.5


def test_obd_learn(obd_root, tmp_path):
    out = tmp_path / "l.json"
    r = runner.invoke(app, ["obd", "learn", "--root", str(obd_root), "--json", str(out), "--outcome-model", "linear",
                            "--set", "grpo.steps=20"])
    assert r.exit_code == 0, r.output
    d = json.loads(out.read_text())
    assert set(d["policies"]) == {"grpo", "random", "bts"}
    assert d["n_train"] + d["n_test"] == 400
    imp = d["improvement_over_random"]
    assert imp["ci_low"] <= imp["value"] <= imp["ci_high"]


def test_obd_errors(tmp_path):
    r = runner.invoke(app, ["obd", "validate", "--root", str(tmp_path / "nope"), "--json", str(tmp_path / "o.json")])
    assert r.exit_code == 2 and "not a folder" in r.output
    r = runner.invoke(app, ["obd", "validate", "--root", str(tmp_path), "--json", str(tmp_path / "o.json")])
    assert r.exit_code == 2 and "random" in r.output
