"""Any OBD campaign: the item count comes from the data (item_context.csv, checked against the
affinity columns and the BTS prior), so a campaign of another size than the sample's 80 items
(men: 34, women: 46 in the real dataset) loads, validates and learns end to end."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from grpokit.cli import app
from grpokit.datasets.obd import bts_action_dist, load_bts_prior, load_obd


def _write_campaign(root, campaign, n_items, n=600, seed=0, behavior="random", n_affinity=None):
    rng = np.random.default_rng(seed)
    folder = root / behavior / campaign
    folder.mkdir(parents=True, exist_ok=True)
    item = rng.integers(0, n_items, n)
    data = {
        "timestamp": pd.date_range("2019-11-24", periods=n, freq="min", tz="UTC").astype(str),
        "item_id": item,
        "position": rng.integers(1, 4, n),
        "click": (rng.random(n) < 0.05 + 0.3 * (item % 5 == 0)).astype(int),  # items 0, 5, 10, ... are better
        "propensity_score": np.full(n, 1 / n_items),
        "user_feature_0": rng.choice(["a", "b"], n),
        "user_feature_1": rng.choice(["c", "d", "e"], n),
        "user_feature_2": rng.choice(["f"], n),
        "user_feature_3": rng.choice(["g", "h"], n),
    }
    for i in range(n_items if n_affinity is None else n_affinity):
        data[f"user-item_affinity_{i}"] = rng.integers(0, 3, n).astype(float)
    pd.DataFrame(data).to_csv(folder / f"{campaign}.csv")
    pd.DataFrame({
        "item_id": np.arange(n_items),
        "item_feature_0": rng.normal(size=n_items),
        "item_feature_1": rng.choice(["p", "q"], n_items),
        "item_feature_2": rng.choice(["r", "s", "t"], n_items),
        "item_feature_3": rng.choice(["u", "v"], n_items),
    }).to_csv(folder / "item_context.csv")
    if behavior == "bts":
        alpha = (1 + 5 * (np.arange(n_items) % 5 == 0)).tolist()
        (folder / "prior_bts.json").write_text(json.dumps({"alpha": alpha, "beta": [10.0] * n_items}))


@pytest.fixture
def men(tmp_path):
    _write_campaign(tmp_path, "men", 34, behavior="random")
    _write_campaign(tmp_path, "men", 34, behavior="bts", seed=1)
    return tmp_path


def test_campaign_of_34_items_loads(men):
    log = load_obd(men, "random", "men")
    assert log.n_actions == 34 and log.action_context.shape[0] == 34
    assert log.context_names[-34:] == [f"user-item_affinity_{i}" for i in range(34)]
    assert log.context.shape[1] == 2 + 3 + 1 + 2 + 34
    alpha, _ = load_bts_prior(men, "men", log.n_actions)
    assert bts_action_dist((alpha, np.full(34, 10.0)), n_sim=2000).shape == (34, 3)


def test_obd_validate_on_a_34_item_campaign(men, tmp_path):
    out = tmp_path / "v.json"
    r = CliRunner().invoke(app, ["obd", "validate", "--root", str(men), "--campaign", "men", "--json", str(out),
                                 "--n-sim", "2000", "--n-bootstrap", "20", "--outcome-model", "linear"])
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["n_random"] == 600 and all(np.isfinite(e["value"]) for e in res["estimators"].values())


def test_mismatched_item_counts_are_named(tmp_path):
    _write_campaign(tmp_path, "women", 46, n_affinity=80)  # a log with 80 affinity columns, 46 items
    with pytest.raises(ValueError, match="lists 46 items.*has 80 affinity columns.*unexpected"):
        load_obd(tmp_path, "random", "women")
    _write_campaign(tmp_path, "women", 46, n_affinity=40, seed=2)
    with pytest.raises(ValueError, match="missing 6"):
        load_obd(tmp_path, "random", "women")
    _write_campaign(tmp_path, "women", 46, behavior="bts")
    prior = tmp_path / "bts" / "women" / "prior_bts.json"
    prior.write_text(json.dumps({"alpha": [1.0] * 80, "beta": [1.0] * 80}))
    with pytest.raises(ValueError, match="80 items but the campaign's logs have 46"):
        load_bts_prior(tmp_path, "women", 46)


def test_obd_learn_on_a_46_item_campaign(tmp_path):
    # the real women campaign's size: learn end to end (encoder, outcome model, GRPO over 46 items, OPE)
    _write_campaign(tmp_path, "women", 46, n=900, behavior="random")
    _write_campaign(tmp_path, "women", 46, n=900, behavior="bts", seed=1)
    out = tmp_path / "l.json"
    r = CliRunner().invoke(app, ["obd", "learn", "--root", str(tmp_path), "--campaign", "women", "--json", str(out),
                                 "--outcome-model", "linear", "--set", "grpo.steps=5", "--set", "grpo.batch_size=32"])
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["campaign"] == "women" and res["n_train"] + res["n_test"] == 900 and res["training"]["steps"] == 5
    assert 1 <= res["policy_concentration"]["distinct_top_items"] <= 46
    for name in ("grpo", "random", "bts"):
        p = res["policies"][name]
        assert np.isfinite(p["value"]) and p["ci_low"] <= p["value"] <= p["ci_high"], (name, p)
    # the uniform logger's value is the test half's mean click (its propensities are 1/46)
    assert 0 < res["policies"]["random"]["value"] < 1
