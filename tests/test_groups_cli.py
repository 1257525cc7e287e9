"""`grpokit cohorts discover`: every row's cohort and the fitted model land in the store, the model
(plain JSON) reassigns the rows identically, bad options are named."""

import json

import duckdb
import numpy as np
import pandas as pd
from typer.testing import CliRunner

from grpokit.cli import app
from grpokit.groups import assign
from grpokit.scenarios.marketing import MarketingScenario


def test_discover_stores_rows_and_model(tmp_path):
    df = MarketingScenario().simulate_log(2000, seed=1)
    log = tmp_path / "ab.parquet"
    df.to_parquet(log)
    store, out = tmp_path / "s.duckdb", tmp_path / "c.json"
    r = CliRunner().invoke(app, ["cohorts", "discover", "--log", str(log), "--store", str(store), "--method", "kmeans",
                                 "--k", "4", "--features", "recency,frequency,monetary,tenure", "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert "4 cohorts" in r.output and "size" in r.output
    con = duckdb.connect(str(store), read_only=True)
    rows = con.execute('SELECT decision_id, cohort FROM "cohorts__ab" ORDER BY decision_id').df()
    model = json.loads(con.execute("SELECT model FROM cohort_models WHERE name = 'ab'").fetchone()[0])
    con.close()
    assert len(rows) == 2000 and set(rows["cohort"]) == {0, 1, 2, 3}
    np.testing.assert_array_equal(assign(model, df), rows["cohort"].to_numpy())
    res = json.loads(out.read_text())
    assert sum(v["size"] for v in res["profile"].values()) == 2000


def test_discover_bad_options(tmp_path):
    log = tmp_path / "ab.csv"
    MarketingScenario().simulate_log(300, seed=1).to_csv(log, index=False)
    run = lambda *a: CliRunner().invoke(app, ["cohorts", "discover", "--log", str(log), "--store",  # noqa: E731
                                               str(tmp_path / "s.duckdb"), *a])
    r = run("--method", "dbscan")
    assert r.exit_code == 2 and "--method" in r.output
    r = run("--k", "many")
    assert r.exit_code == 2 and "--k" in r.output
    r = run("--features", "recency,shoe_size")
    assert r.exit_code == 2 and "shoe_size" in r.output
    r = CliRunner().invoke(app, ["cohorts", "discover", "--store", str(tmp_path / "s.duckdb")])
    assert r.exit_code == 2 and "--log" in r.output
