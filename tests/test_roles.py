"""Column roles: outcome-like and id-like columns never become default features; text is encoded, not dropped."""

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from grpokit.cli import app
from grpokit.offline.io import LogValidationError, validate_log
from grpokit.offline.roles import leak_reason
from grpokit.offline.schema import LogSchema

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("make_log", ROOT / "examples" / "own_data" / "make_log.py")
gen = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gen)

FOUR_LINES = LogSchema(action="offer", actions=gen.OFFERS, reward="profit", pscore="propensity")


def roles_of(log):
    return {r["column"]: r for r in log.roles}


def test_the_walkthrough_log_refuses_outcomes_and_ids_and_keeps_text():
    df = gen.make_log(2000, 0)
    log = validate_log(df, FOUR_LINES)
    r = roles_of(log)
    assert r["converted"]["role"] == "outcome" and r["converted"]["warning"]
    assert r["revenue"]["role"] == "outcome" and r["revenue"]["warning"]
    assert r["customer_id"]["role"] == "id" and r["customer_id"]["warning"]
    assert r["event_date"]["role"] == "timestamp"
    assert (r["offer"]["role"], r["profit"]["role"], r["propensity"]["role"]) == ("action", "reward", "pscore")
    assert set(log.categorical) == {"region", "channel"}
    assert log.kind_of("is_member") == "bool" and log.kind_of("age") == "number"
    assert log.feature_columns == ["region", "channel", "age", "tenure", "orders_90d", "avg_basket",
                                   "days_since_last_order", "is_member"]
    assert not {"converted", "revenue", "customer_id", "event_date"} & set(log.feature_columns)
    assert set(log.ignored_columns) == {"customer_id", "event_date", "converted", "revenue"}
    frame = log.feature_frame()
    assert frame["region"].tolist() == df["region"].tolist() and frame["is_member"].dtype == bool


def test_correlation_with_the_reward_given_the_action_flags_an_unnamed_outcome():
    df = gen.make_log(3000, 1).drop(columns=["converted", "revenue", "customer_id"])
    # an outcome under an innocent name: profit plus a little noise
    df["settlement"] = df["profit"] * 1.19 + np.random.default_rng(0).normal(0, 0.01, len(df))
    reason = leak_reason(df, "settlement", "profit", "offer")
    assert reason is not None and "correlation" in reason
    assert leak_reason(df, "avg_basket", "profit", "offer") is None  # a real feature passes
    log = validate_log(df, FOUR_LINES)
    assert roles_of(log)["settlement"]["role"] == "outcome" and "settlement" not in log.feature_columns


def test_names_ids_history_words_and_ground_truth():
    rng = np.random.default_rng(2)
    n = 200
    df = pd.DataFrame({
        "ref": rng.permutation(n) + 10_000,          # a distinct integer per row: an id
        "revenue_90d": rng.normal(50, 10, n),        # history aggregate: a feature
        "true_segment": rng.choice(["a", "b"], n),   # ground truth: refused
        "clicked": rng.integers(0, 2, n),            # outcome word
        "visits": rng.integers(0, 5, n),
        "action": rng.integers(0, 3, n),
        "reward": rng.normal(size=n),
        "pscore": np.full(n, 1 / 3),
    })
    r = roles_of(validate_log(df))
    assert r["ref"]["role"] == "id" and "distinct value on every row" in r["ref"]["reason"]
    assert r["revenue_90d"]["role"] == "feature"
    assert r["true_segment"]["role"] == "outcome" and "ground truth" in r["true_segment"]["reason"]
    assert r["clicked"]["role"] == "outcome"
    assert r["visits"]["role"] == "feature"


def test_explicit_features_decide_but_warn():
    df = gen.make_log(1000, 3)
    schema = FOUR_LINES.model_copy(update={"features": ["age", "revenue", "region"]})
    log = validate_log(df, schema)
    r = roles_of(log)
    assert r["revenue"]["role"] == "feature" and r["revenue"]["warning"] and "WARNING" in r["revenue"]["reason"]
    assert r["tenure"]["role"] == "ignored" and not r["tenure"]["warning"]
    assert log.feature_columns == ["age", "revenue", "region"]


def test_timestamp_named_in_features_is_days_since_1970():
    df = gen.make_log(300, 4)
    log = validate_log(df, FOUR_LINES.model_copy(update={"features": ["age", "event_date"]}))
    j = log.feature_names.index("event_date")
    expected = (df["event_date"] - pd.Timestamp("1970-01-01")).dt.total_seconds().to_numpy() / 86400
    assert np.allclose(log.features[:, j], expected)


def test_group_column_may_also_be_a_feature_and_store_round_trip(tmp_path):
    from grpokit.store import Store

    df = gen.make_log(500, 5)
    schema = FOUR_LINES.model_copy(update={"group": "region", "features": ["region", "age", "channel"]})
    with Store(tmp_path / "s.duckdb") as st:
        log = st.import_log(df, "m", schema)
        back = st.load_log("m")
        roles = st.dataset_roles("m")
    assert log.group_labels == sorted(df["region"].unique()) and "region" in log.categorical
    assert back.feature_columns == log.feature_columns and np.array_equal(back.categorical["channel"],
                                                                         log.categorical["channel"])
    assert roles.set_index("column").loc["converted", "role"] == "ignored"
    assert roles.set_index("column").loc["region", "role"] == "feature"
    assert len(roles) == len(df.columns)


def test_missing_category_label_names_the_row():
    df = gen.make_log(300, 6)
    df.loc[7, "channel"] = None
    with pytest.raises(LogValidationError, match=r"column 'channel', row 7"):
        validate_log(df, FOUR_LINES)


def test_cli_prints_roles_and_points_to_schema(tmp_path):
    runner = CliRunner()
    path = tmp_path / "log.parquet"
    gen.make_log(800, 7).to_parquet(path)
    (tmp_path / "s.toml").write_text('action = "offer"\nactions = ["none", "10%", "20%", "free_shipping"]\n'
                                     'reward = "profit"\npscore = "propensity"\n')
    store = str(tmp_path / "s.duckdb")
    r = runner.invoke(app, ["data", "import", str(path), "--name", "m", "--store", store, "--schema",
                            str(tmp_path / "s.toml")], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "converted" in r.output and "outcome" in r.output and "left out of the features" in r.output
    r = runner.invoke(app, ["data", "show", "m", "--store", store], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "customer_id" in r.output and "id" in r.output
    r = runner.invoke(app, ["data", "import", str(path), "--name", "m2", "--store", store], env={"COLUMNS": "200"})
    assert r.exit_code == 2 and "missing column" in r.output and "--schema" in r.output
    r = runner.invoke(app, ["data", "import", str(path), "--name", "m3", "--store", store, "--schema",
                            str(tmp_path / "s.toml"), "--features", "age,revenue"], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "warning" in r.output and "revenue" in r.output
