"""Logged decisions: the schema, reading DataFrames / Parquet / CSV / DuckDB, and every validation error."""

import duckdb
import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from grpokit.offline.io import LogValidationError, read_log, validate_log
from grpokit.offline.schema import LoggedDecisions, LogSchema

ACTIONS = ["none", "coupon", "discount"]


def make_df(n: int = 12, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "decision_id": np.arange(1000, 1000 + n),
        "age": rng.normal(40, 10, n),
        "visits": rng.integers(0, 20, n),
        "member": rng.random(n) < 0.5,
        "segment": rng.choice(["gold", "silver", "bronze"], n),
        "offer": rng.choice(ACTIONS, n),
        "revenue": rng.normal(size=n),
        "p": rng.uniform(0.1, 1.0, n),
        "slot": rng.integers(1, 4, n),
        "ts": pd.date_range("2024-03-01", periods=n, freq="37min").astype("datetime64[us]"),
    })


SCHEMA = LogSchema(group="segment", action="offer", actions=ACTIONS, reward="revenue", pscore="p",
                   position="slot", timestamp="ts")


def plain_df(n: int = 8) -> pd.DataFrame:
    """A log in the default column names."""
    rng = np.random.default_rng(1)
    return pd.DataFrame({
        "decision_id": np.arange(100, 100 + n),
        "x1": rng.normal(size=n),
        "x2": rng.normal(size=n),
        "action": np.arange(n) % 3,
        "reward": rng.normal(size=n),
        "pscore": np.full(n, 0.5),
    })


def assert_same(a: LoggedDecisions, b: LoggedDecisions) -> None:
    for name in ("decision_id", "features", "action", "pscore", "reward", "group", "position", "timestamp"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype, (name, x.dtype, y.dtype)
            assert np.array_equal(x, y), name
    assert a.feature_names == b.feature_names
    assert a.outcomes.keys() == b.outcomes.keys()
    for k in a.outcomes:
        assert np.array_equal(a.outcomes[k], b.outcomes[k])
    assert a.n_actions == b.n_actions and a.action_labels == b.action_labels and a.group_labels == b.group_labels


def check(err: LogValidationError, column: str, row: int, decision_id, value) -> str:
    msg = str(err)
    assert f"column {column!r}" in msg, msg
    assert f"row {row} " in msg, msg
    assert f"decision id {decision_id!r}" in msg, msg
    assert repr(value) in msg, msg
    assert (err.column, err.row, err.decision_id) == (column, row, decision_id)
    return msg


# ------------------------------------------------------------------------------ reading and arrays


def test_defaults_take_every_unassigned_numeric_column():
    df = plain_df().assign(note="free text", flag=[True, False] * 4)
    log = validate_log(df)
    assert log.feature_names == ["x1", "x2", "flag"]
    assert log.ignored_columns == ["note"]
    assert log.features.dtype == np.float64 and log.features.shape == (8, 3)
    assert log.action.dtype == np.int64 and log.n_actions == 3
    assert log.group is None and log.position is None and log.timestamp is None and log.action_labels is None
    assert np.array_equal(log.decision_id, np.arange(100, 108))
    assert len(log) == 8 and "n=8" in repr(log)


def test_schema_roles_labels_and_groups():
    df = make_df()
    log = validate_log(df, SCHEMA)
    assert log.feature_names == ["age", "visits", "member"]
    assert log.action_labels == ACTIONS
    assert [ACTIONS[a] for a in log.action] == df["offer"].tolist()
    assert log.group_labels == ["bronze", "gold", "silver"]  # sorted
    assert [log.group_labels[g] for g in log.group] == df["segment"].tolist()
    assert log.position.dtype == np.int64 and log.timestamp.dtype == np.dtype("datetime64[us]")
    assert log.schema.features == ["age", "visits", "member"] and log.schema.n_actions == 3


def test_numeric_groups_and_fixed_group_order():
    df = plain_df().assign(group=[7, 3, 3, 7, 9, 3, 7, 9])
    log = validate_log(df)
    assert log.group_labels == [3, 7, 9]
    assert log.group.tolist() == [1, 0, 0, 1, 2, 0, 1, 2]
    log2 = validate_log(df, LogSchema(groups=[9, 7, 3]))
    assert log2.group.tolist() == [1, 2, 2, 1, 0, 2, 1, 0]
    assert "x1" in log.feature_names and "group" not in log.feature_names


def test_generated_ids_outcomes_without_reward_and_n_actions():
    df = plain_df().drop(columns=["decision_id", "reward"]).assign(clicks=1.0, spend=2.5)
    log = validate_log(df, LogSchema(outcomes=["clicks", "spend"], n_actions=5))
    assert np.array_equal(log.decision_id, np.arange(8))
    assert log.reward is None and set(log.outcomes) == {"clicks", "spend"}
    assert log.feature_names == ["x1", "x2"] and log.n_actions == 5


def test_to_frame_and_subset_round_trip():
    log = validate_log(make_df(), SCHEMA)
    frame = log.to_frame()
    assert list(frame.columns) == ["decision_id", "segment", "age", "visits", "member", "offer", "revenue", "p",
                                   "slot", "ts"]
    assert frame["offer"].tolist() == make_df()["offer"].tolist()
    assert_same(validate_log(frame, log.schema), log)
    part = log.subset([3, 1])
    assert len(part) == 2 and part.decision_id.tolist() == [1003, 1001]
    assert part.group_labels == log.group_labels and part.action_labels == ACTIONS
    mask = log.subset(log.action == 0)
    assert np.all(mask.action == 0) and len(log.subset(slice(2, 5))) == 3


@pytest.mark.parametrize("kind", ["parquet", "csv", "duckdb_con", "duckdb_path"])
def test_file_and_table_round_trips_give_identical_arrays(tmp_path, kind):
    df = make_df(30)
    expected = validate_log(df, SCHEMA)
    if kind == "parquet":
        df.to_parquet(tmp_path / "log.parquet")
        got = read_log(tmp_path / "log.parquet", SCHEMA)
    elif kind == "csv":
        df.to_csv(tmp_path / "log.csv", index=False)
        got = read_log(str(tmp_path / "log.csv"), SCHEMA)
    else:
        db = tmp_path / "logs.duckdb"
        con = duckdb.connect(str(db))
        con.register("df_view", df)
        con.execute("CREATE TABLE events AS SELECT * FROM df_view")
        if kind == "duckdb_con":
            got = read_log("events", SCHEMA, con=con)
            con.close()
        else:
            con.close()
            got = read_log("events", SCHEMA, con=db)
            assert_same(read_log(db, SCHEMA, table="events"), expected)
    assert_same(got, expected)


def test_csv_with_text_actions_that_look_like_numbers(tmp_path):
    df = plain_df().assign(action=["1", "2", "3", "1", "2", "3", "1", "2"])
    df.to_csv(tmp_path / "log.csv", index=False)  # read back as the integers 1, 2, 3
    log = read_log(tmp_path / "log.csv", LogSchema(actions=["3", "2", "1"]))
    assert log.action.tolist() == [2, 1, 0, 2, 1, 0, 2, 1]


# ------------------------------------------------------------------------------ source errors


def test_unsupported_suffix_and_missing_sources(tmp_path):
    (tmp_path / "log.json").write_text("{}")
    with pytest.raises(LogValidationError, match=r"unsupported file type '\.json'.*parquet.*csv"):
        read_log(tmp_path / "log.json")
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        read_log(tmp_path / "nope.parquet")
    with pytest.raises(LogValidationError, match="con="):
        read_log("events")
    con = duckdb.connect()
    con.execute("CREATE TABLE other (a INT)")
    with pytest.raises(LogValidationError, match=r"no table 'events'.*\['other'\]"):
        read_log("events", con=con)
    with pytest.raises(LogValidationError, match="bad DuckDB table name"):
        read_log("x; DROP TABLE other", con=con)


# ------------------------------------------------------------------------------ validation errors


def test_missing_columns_are_listed_with_the_available_ones():
    df = plain_df().drop(columns=["pscore", "reward"])
    with pytest.raises(LogValidationError) as e:
        validate_log(df)
    msg = str(e.value)
    assert "missing columns 'reward'" in msg and "'pscore'" in msg
    assert "available columns: ['decision_id', 'x1', 'x2', 'action']" in msg
    with pytest.raises(LogValidationError, match=r"missing column 'cohort' \(group\)"):
        validate_log(plain_df(), LogSchema(group="cohort"))  # named explicitly, so required


def test_empty_input(tmp_path):
    with pytest.raises(LogValidationError, match="empty: no rows"):
        validate_log(plain_df().iloc[:0])
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(LogValidationError, match="empty"):
        read_log(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("action,reward,pscore\n")
    with pytest.raises(LogValidationError, match="empty: no rows"):
        read_log(tmp_path / "header.csv")


def test_nan_in_feature():
    df = plain_df()
    df.loc[3, "x2"] = np.nan
    with pytest.raises(LogValidationError) as e:
        validate_log(df)
    assert "not finite" in check(e.value, "x2", 3, 103, np.nan)


def test_inf_in_reward_and_nan_in_pscore():
    df = plain_df()
    df.loc[5, "reward"] = -np.inf
    with pytest.raises(LogValidationError) as e:
        validate_log(df)
    check(e.value, "reward", 5, 105, -np.inf)
    df = plain_df()
    df.loc[2, "pscore"] = np.nan
    with pytest.raises(LogValidationError) as e:
        validate_log(df)
    check(e.value, "pscore", 2, 102, np.nan)


def test_missing_and_infinite_actions():
    df = plain_df().astype({"action": float})
    df.loc[4, "action"] = np.nan
    with pytest.raises(LogValidationError) as e:
        validate_log(df)
    assert "missing action" in check(e.value, "action", 4, 104, np.nan)
    df.loc[4, "action"] = np.inf
    with pytest.raises(LogValidationError) as e:
        validate_log(df)
    check(e.value, "action", 4, 104, np.inf)


def test_non_integer_action():
    df = plain_df().astype({"action": float})
    df.loc[6, "action"] = 1.5
    with pytest.raises(LogValidationError) as e:
        validate_log(df)
    assert "non-integer action 1.5" in check(e.value, "action", 6, 106, 1.5)


def test_text_actions_without_labels_say_how_to_map_them():
    df = plain_df().assign(action=["buy", "skip"] * 4)
    with pytest.raises(LogValidationError) as e:
        validate_log(df)
    msg = check(e.value, "action", 0, 100, "buy")
    assert "LogSchema(actions=[...])" in msg and "['buy', 'skip']" in msg


def test_unknown_action_label():
    df = make_df()
    df.loc[7, "offer"] = "free_upgrade"
    with pytest.raises(LogValidationError) as e:
        validate_log(df, SCHEMA)
    assert "unknown action" in check(e.value, "offer", 7, 1007, "free_upgrade")


def test_action_outside_range():
    df = plain_df()
    with pytest.raises(LogValidationError) as e:
        validate_log(df, LogSchema(n_actions=2))
    assert "outside 0..1" in check(e.value, "action", 2, 102, 2)
    df.loc[1, "action"] = -1
    with pytest.raises(LogValidationError) as e:
        validate_log(df)
    assert "unknown action" in check(e.value, "action", 1, 101, -1)


@pytest.mark.parametrize("bad", [0.0, 1.5, -0.2])
def test_propensity_outside_unit_interval(bad):
    df = plain_df()
    df.loc[5, "pscore"] = bad
    with pytest.raises(LogValidationError) as e:
        validate_log(df)
    assert "outside (0, 1]" in check(e.value, "pscore", 5, 105, bad)
    df.loc[5, "pscore"] = 1.0  # 1 itself is fine
    validate_log(df)


def test_text_mixed_into_numeric_feature(tmp_path):
    df = plain_df().astype({"x1": object})
    df.loc[3, "x1"] = "unknown"
    with pytest.raises(LogValidationError) as e:
        validate_log(df)
    assert "mixed types" in check(e.value, "x1", 3, 103, "unknown")
    df.to_csv(tmp_path / "mixed.csv", index=False)  # the same through a CSV: every value is text there
    with pytest.raises(LogValidationError) as e:
        read_log(tmp_path / "mixed.csv")
    assert "mixed types" in check(e.value, "x1", 3, 103, "unknown")
    df.loc[3, "x1"] = "1.5"  # a number written as text among numbers
    with pytest.raises(LogValidationError) as e:
        validate_log(df)
    check(e.value, "x1", 3, 103, "1.5")


def test_text_feature_column_is_categorical_and_a_missing_label_is_named():
    # text features are kept as labels (the policy's FeatureEncoder one-hot encodes them), not refused
    df = plain_df().assign(color=["red", "blue"] * 4)
    log = validate_log(df, LogSchema(features=["x1", "color"]))
    assert log.feature_names == ["x1"] and log.categorical["color"].tolist() == ["red", "blue"] * 4
    assert log.feature_columns == ["x1", "color"] and log.kind_of("color") == "category"
    df.loc[2, "color"] = None
    with pytest.raises(LogValidationError) as e:
        validate_log(df, LogSchema(features=["x1", "color"]))
    check(e.value, "color", 2, 102, float("nan"))


def test_duplicate_decision_ids_name_both_rows():
    df = plain_df()
    df.loc[6, "decision_id"] = 102
    with pytest.raises(LogValidationError) as e:
        validate_log(df)
    msg = str(e.value)
    assert "column 'decision_id'" in msg and "duplicate decision id 102 at rows 2 and 6" in msg
    assert e.value.row == 6


def test_group_errors():
    df = plain_df().assign(group=["a", "b", None, "a", "b", "a", "b", "a"])
    with pytest.raises(LogValidationError) as e:
        validate_log(df)
    assert "missing group" in check(e.value, "group", 2, 102, np.nan)
    df = plain_df().assign(group=["a", "b", "c", "a", "b", "a", "b", "a"])
    with pytest.raises(LogValidationError) as e:
        validate_log(df, LogSchema(groups=["a", "b"]))
    check(e.value, "group", 2, 102, "c")


def test_bad_timestamp_and_position():
    df = plain_df().assign(timestamp=["2024-01-01"] * 7 + ["yesterday"])
    with pytest.raises(LogValidationError) as e:
        validate_log(df)
    check(e.value, "timestamp", 7, 107, "yesterday")
    df = plain_df().assign(position=[1, 2, 3, 1, 2.5, 3, 1, 2])
    with pytest.raises(LogValidationError) as e:
        validate_log(df)
    check(e.value, "position", 4, 104, 2.5)


def test_schema_itself_is_checked():
    with pytest.raises(ValidationError, match="n_actions=2 but actions lists 3"):
        LogSchema(actions=ACTIONS, n_actions=2)
    with pytest.raises(ValidationError, match="two roles"):
        LogSchema(reward="x", features=["x", "y"])
    with pytest.raises(ValidationError, match="needs a reward"):
        LogSchema(reward=None)
    with pytest.raises(ValidationError, match="listed twice"):
        LogSchema(actions=["a", "a"])
    with pytest.raises(ValidationError):
        LogSchema(actoin="a")  # typo: unknown keys are errors
