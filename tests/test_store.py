"""The DuckDB store: imports in one transaction, the catalog, loading back, and the runs table."""

import json

import duckdb
import numpy as np
import pandas as pd
import pytest

from grpokit.offline.io import LogValidationError, validate_log
from grpokit.offline.schema import LogSchema
from grpokit.store import Store, StoreError

ACTIONS = ["none", "coupon", "discount"]
SCHEMA = LogSchema(group="segment", action="offer", actions=ACTIONS, reward="revenue", pscore="p", timestamp="ts")


def make_df(n: int = 20, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "event": [f"e{seed}_{i}" for i in range(n)],
        "age": rng.normal(40, 10, n),
        "visits": rng.integers(0, 20, n),
        "segment": rng.choice(["gold", "silver"], n),
        "offer": rng.choice(ACTIONS, n),
        "revenue": rng.normal(size=n),
        "p": rng.uniform(0.1, 1.0, n),
        "ts": pd.date_range("2024-03-01", periods=n, freq="h").astype("datetime64[us]"),
    })


SCHEMA_ID = SCHEMA.model_copy(update={"decision_id": "event"})


def assert_same(a, b):
    for name in ("decision_id", "features", "action", "pscore", "reward", "group", "position", "timestamp"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and np.array_equal(x, y), name
    assert (a.feature_names, a.n_actions, a.action_labels, a.group_labels) == (
        b.feature_names, b.n_actions, b.action_labels, b.group_labels)


def snapshot(store: Store) -> dict:
    """Every table in the store and all of its rows."""
    tables = sorted(r[0] for r in store.con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall())
    return {t: store.con.execute(f'SELECT * FROM "{t}" ORDER BY ALL').fetchall() for t in tables}


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "test.duckdb") as s:
        yield s


def test_store_round_trip_and_catalog(tmp_path):
    path = tmp_path / "shop.duckdb"
    with Store(path) as store:
        imported = store.import_log(make_df(), "offers", SCHEMA_ID)
        assert_same(store.load_log("offers"), imported)
        assert_same(store.load_log("OFFERS"), imported)  # names ignore case, like DuckDB's
    with Store(path) as store:  # persisted
        loaded = store.load_log("offers")
        assert_same(loaded, validate_log(make_df(), SCHEMA_ID))
        cat = store.list_datasets()
        assert cat["name"].tolist() == ["offers"]
        row = cat.iloc[0]
        assert row["n_rows"] == 20 and row["n_actions"] == 3
        names = [c["name"] for c in row["columns"]]
        assert names == ["event", "segment", "age", "visits", "offer", "revenue", "p", "ts"]
        assert {"name": "ts", "type": "TIMESTAMP"} in row["columns"]
        assert row["schema"]["actions"] == ACTIONS and row["schema"]["decision_id"] == "event"
        assert LogSchema.model_validate(row["schema"]).groups == ["gold", "silver"]
        assert isinstance(row["created_at"], pd.Timestamp)
        assert store.con.execute('SELECT count(*) FROM "offers"').fetchone()[0] == 20


def test_default_path_is_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with Store() as store:
        store.import_log(make_df(), "offers", SCHEMA)
    assert (tmp_path / "grpokit.duckdb").is_file()
    with Store(":memory:") as mem:
        assert mem.list_datasets().empty


def test_import_from_files(store, tmp_path):
    make_df().to_parquet(tmp_path / "a.parquet")
    make_df(seed=1).to_csv(tmp_path / "b.csv", index=False)
    a = store.import_log(tmp_path / "a.parquet", "from_parquet", SCHEMA_ID)
    b = store.import_log(str(tmp_path / "b.csv"), "from_csv", SCHEMA_ID)
    assert_same(store.load_log("from_parquet"), a)
    assert_same(store.load_log("from_csv"), b)
    assert store.list_datasets()["name"].tolist() == ["from_parquet", "from_csv"]


def test_existing_name_without_replace_is_an_error_and_keeps_the_old_data(store):
    store.import_log(make_df(seed=0), "offers", SCHEMA_ID)
    before = snapshot(store)
    for name in ("offers", "Offers"):
        with pytest.raises(StoreError, match=r"dataset 'offers' already exists \(20 rows.*replace=True"):
            store.import_log(make_df(seed=1), name, SCHEMA_ID)
    assert snapshot(store) == before
    store.import_log(make_df(n=5, seed=1), "offers", SCHEMA_ID, replace=True)
    assert store.load_log("offers").decision_id.tolist() == [f"e1_{i}" for i in range(5)]
    assert store.list_datasets()["n_rows"].tolist() == [5]


class Boom(RuntimeError):
    pass


def _boom(self, name):
    raise Boom(f"interrupted after writing {name}")


def test_interrupted_import_leaves_the_store_unchanged(tmp_path, monkeypatch):
    path = tmp_path / "s.duckdb"
    with Store(path) as store:
        store.import_log(make_df(seed=0), "first", SCHEMA_ID)
        store.record_run("r1", "train", {"lr": 0.01}, {"value": 1.0})
        before = snapshot(store)
        monkeypatch.setattr(Store, "_after_table_write", _boom)
        with pytest.raises(Boom):
            store.import_log(make_df(seed=1), "second", SCHEMA_ID)  # a new name
        assert snapshot(store) == before
        with pytest.raises(Boom):
            store.import_log(make_df(seed=2), "first", SCHEMA_ID, replace=True)  # replacing
        assert snapshot(store) == before
        monkeypatch.undo()
        assert_same(store.load_log("first"), validate_log(make_df(seed=0), SCHEMA_ID))
        store.import_log(make_df(seed=1), "second", SCHEMA_ID)  # the store still works
    with Store(path) as store:
        assert sorted(store.list_datasets()["name"]) == ["first", "second"]


def test_invalid_log_writes_nothing(store):
    before = snapshot(store)
    bad = make_df()
    bad.loc[3, "p"] = 0.0
    with pytest.raises(LogValidationError, match=r"column 'p', row 3 \(decision id 'e0_3'\)"):
        store.import_log(bad, "offers", SCHEMA_ID)
    assert snapshot(store) == before


@pytest.mark.parametrize("name", ["1abc", "a-b", "a b", "", "x; DROP TABLE datasets", 'q"uote', "é", 5, None])
def test_bad_dataset_names(store, name):
    with pytest.raises(StoreError, match=r"bad dataset name.*\^\[A-Za-z_\]"):
        store.import_log(make_df(), name, SCHEMA)
    with pytest.raises(StoreError, match="bad dataset name"):
        store.load_log(name)


@pytest.mark.parametrize("name", ["datasets", "Runs"])
def test_reserved_names(store, name):
    with pytest.raises(StoreError, match="taken by the store's own"):
        store.import_log(make_df(), name, SCHEMA)


def test_unknown_dataset_and_foreign_table(store):
    store.import_log(make_df(), "offers", SCHEMA)
    with pytest.raises(StoreError, match=r"no dataset 'nope'.*\['offers'\]"):
        store.load_log("nope")
    store.con.execute("CREATE TABLE mine (a INTEGER)")
    with pytest.raises(StoreError, match="table 'mine' that is not a dataset"):
        store.import_log(make_df(), "mine", SCHEMA, replace=True)


def test_import_from_a_duckdb_table(store, tmp_path):
    other = duckdb.connect()
    other.register("v", make_df())
    other.execute("CREATE TABLE raw AS SELECT * FROM v")
    log = store.import_log("raw", "offers", SCHEMA_ID, con=other)
    assert_same(store.load_log("offers"), log)


def test_runs_table(store):
    store.record_run("r1", "train", {"grpo": {"lr": np.float64(0.003)}, "hidden": np.array([64, 64])},
                     {"value": 1.25, "steps": np.int64(300)})
    store.record_run("r2", "evaluate", {"dataset": "offers"}, {"ips": 0.4, "dr": float("nan")})
    runs = store.list_runs()
    assert runs["run_id"].tolist() == ["r1", "r2"] and runs["kind"].tolist() == ["train", "evaluate"]
    assert runs.iloc[0]["config"] == {"grpo": {"lr": 0.003}, "hidden": [64, 64]}
    assert runs.iloc[0]["summary"] == {"value": 1.25, "steps": 300}
    assert np.isnan(runs.iloc[1]["summary"]["dr"])
    assert store.list_runs(kind="evaluate")["run_id"].tolist() == ["r2"]
    with pytest.raises(StoreError, match="run 'r1' is already recorded"):
        store.record_run("r1", "train", {}, {})
    with pytest.raises(StoreError, match="config cannot be stored.*object"):
        store.record_run("r3", "train", {"f": object()}, {})
    with pytest.raises(StoreError, match="run_id"):
        store.record_run("", "train", {}, {})
    assert len(store.list_runs()) == 2
    assert json.loads(store.con.execute("SELECT config FROM runs WHERE run_id = 'r2'").fetchone()[0]) == {
        "dataset": "offers"}


def test_closed_store(tmp_path):
    store = Store(tmp_path / "c.duckdb")
    store.close()
    store.close()  # twice is fine
    with pytest.raises(StoreError, match="closed"):
        store.list_datasets()
    with pytest.raises(StoreError, match="does not exist"):
        Store(tmp_path / "no" / "such" / "dir.duckdb")
