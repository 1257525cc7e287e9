"""Bad logs and store faults the way a user meets them: through `grpokit data`, `learn` and `evaluate`.

Each case is one `error:` line that names the file / column / row and what to do, exit code 2, and
the store left exactly as it was."""

import json
import os
import subprocess
import sys

import duckdb
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from grpokit.cli import app
from grpokit.store import Store

runner = CliRunner()


def _log(n=60, n_actions=5, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"decision_id": np.arange(n), "x0": rng.normal(size=n), "x1": rng.normal(size=n),
                         "action": np.arange(n) % n_actions, "reward": rng.normal(size=n),
                         "pscore": np.full(n, 1 / n_actions)})


def _import(tmp_path, df_or_path, *extra, name="d"):
    path = df_or_path
    if isinstance(df_or_path, pd.DataFrame):
        path = tmp_path / "log.csv"
        df_or_path.to_csv(path, index=False)
    store = tmp_path / "s.duckdb"
    return runner.invoke(app, ["data", "import", str(path), "--name", name, "--store", str(store), *extra]), store


def _one_error(r, *fragments):
    assert r.exit_code == 2, r.output
    assert r.output.startswith("error:") and "Traceback" not in r.output, r.output
    for f in fragments:
        assert f in r.output, (f, r.output)


def _datasets(store):
    if not store.exists():
        return []
    with Store(store, read_only=True) as st:
        return st.list_datasets()["name"].tolist()


# ------------------------------------------------------------------ silent wrong results (issue items 1, 5, 9)


def test_action_code_typo_is_refused_naming_the_row(tmp_path):
    df = _log()
    df.loc[17, "action"] = 100000  # one typo in a 5-action log
    r, store = _import(tmp_path, df)
    _one_error(r, "'action'", "row 17", "decision id 17", "action 100000", "5..99999 never logged", "n_actions = 100001")
    assert _datasets(store) == []


def test_declared_action_set_with_a_gap_is_accepted(tmp_path):
    df = _log()
    df = df[df.action != 3]
    schema = tmp_path / "schema.toml"
    schema.write_text("n_actions = 5\n")
    r, store = _import(tmp_path, df, "--schema", str(schema))
    assert r.exit_code == 0, r.output
    with Store(store, read_only=True) as st:
        assert st.load_log("d").n_actions == 5
    r, _ = _import(tmp_path, df, name="e")  # undeclared, the same gap is refused
    _one_error(r, "action 4 leaves code 3 never logged", "n_actions = 5")


def test_a_single_action_is_refused(tmp_path):
    r, _ = _import(tmp_path, _log(n_actions=1))
    _one_error(r, "single action", "nothing to choose")


def test_zero_features_are_refused(tmp_path):
    r, _ = _import(tmp_path, _log().drop(columns=["x0", "x1"]))
    _one_error(r, "no feature columns")


def test_duplicated_csv_column_is_refused(tmp_path):
    path = tmp_path / "dup.csv"
    lines = _log().to_csv(index=False).splitlines()
    path.write_text("\n".join(["x0," + lines[0]] + ["9," + ln for ln in lines[1:]]) + "\n")  # x0 twice
    r, store = _import(tmp_path, path)
    _one_error(r, "column 'x0' appears more than once", str(path))
    assert _datasets(store) == []


def test_non_utf8_csv_names_the_line(tmp_path):
    path = tmp_path / "latin1.csv"
    text = _log().to_csv(index=False).replace("decision_id", "d\u00e9cision", 1)
    path.write_bytes(text.encode("latin-1"))
    r, _ = _import(tmp_path, path)
    _one_error(r, "not UTF-8 text", "line 1", "0xe9", "save the file as UTF-8")


def test_a_utf8_bom_is_fine(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + _log().to_csv(index=False).encode())
    r, _ = _import(tmp_path, path)
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("column, value, fragment", [
    ("x1", 1e39, "feature value 1e+39 is too large"),        # float32 made it inf
    ("x0", -1e300, "feature value -1e+300 is too large"),   # sklearn: "Input X contains infinity or a value too large"
    ("reward", 1e308, "reward value 1e+308 is too large"),  # NaN / Infinity in the verdict JSON
])
def test_huge_finite_values_are_refused_naming_column_and_row(tmp_path, column, value, fragment):
    df = _log()
    df[column] = df[column].astype(float)
    df.loc[7, column] = value
    r, _ = _import(tmp_path, df)
    _one_error(r, f"column {column!r}", "row 7", fragment, "rescale")


def test_tiny_propensity_is_refused(tmp_path):
    df = _log()
    df.loc[3, "pscore"] = 1e-300  # evaluate died with an OverflowError
    r, _ = _import(tmp_path, df)
    _one_error(r, "'pscore'", "row 3", "implausibly small")


# ------------------------------------------------------------------------------- tracebacks and messages


def test_log_path_that_is_a_folder(tmp_path):
    folder = tmp_path / "logs"
    folder.mkdir()
    for args in (["data", "import", str(folder), "--name", "d", "--store", str(tmp_path / "s.duckdb")],
                 ["learn", "--log", str(folder), "--out", str(tmp_path / "run")]):
        r = runner.invoke(app, args)
        _one_error(r, "is a folder")


def test_garbage_parquet(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"not parquet at all" * 10)
    r, _ = _import(tmp_path, path)
    _one_error(r, "cannot read", "as Parquet")


def test_duckdb_file_as_a_log_points_to_the_right_option(tmp_path):
    path = tmp_path / "shop.duckdb"
    duckdb.connect(str(path)).close()
    r, _ = _import(tmp_path, path)
    _one_error(r, "is a DuckDB database", "table")


def test_replace_message_names_the_flag(tmp_path):
    r, _ = _import(tmp_path, _log())
    assert r.exit_code == 0, r.output
    r, _ = _import(tmp_path, _log(seed=1))
    _one_error(r, "already exists", "--replace")


def test_store_that_is_not_a_duckdb_file(tmp_path):
    store = tmp_path / "notes.duckdb"
    store.write_text("my notes, not a database\n" * 20)
    _log().to_csv(tmp_path / "log.csv", index=False)
    for args in (["data", "list", "--store", str(store)],
                 ["data", "import", str(tmp_path / "log.csv"), "--name", "d", "--store", str(store)],
                 ["learn", "--dataset", "d", "--store", str(store), "--out", str(tmp_path / "run")]):
        r = runner.invoke(app, args)
        _one_error(r, "is not a DuckDB database")
        assert "another process" not in r.output
    assert store.read_text().startswith("my notes")


def test_reading_never_writes_the_store(tmp_path):
    # a DuckDB file of the user's own: listing it must not add grpokit's tables to it
    store = tmp_path / "own.duckdb"
    with duckdb.connect(str(store)) as con:
        con.execute("CREATE TABLE mine (x INT)")
    before = store.read_bytes()
    r = runner.invoke(app, ["data", "list", "--store", str(store)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["learn", "--dataset", "d", "--store", str(store), "--out", str(tmp_path / "run")])
    _one_error(r, "no dataset 'd'")
    assert store.read_bytes() == before
    with duckdb.connect(str(store), read_only=True) as con:
        assert [t[0] for t in con.execute("SHOW TABLES").fetchall()] == ["mine"]


def test_locked_store_names_the_other_process(tmp_path):
    r, store = _import(tmp_path, _log())
    assert r.exit_code == 0, r.output
    holder = subprocess.Popen([sys.executable, "-c", f"import duckdb, time; c = duckdb.connect({str(store)!r}); "
                               "print('held', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        r = runner.invoke(app, ["data", "list", "--store", str(store)])
        _one_error(r, "in use by another process", f"PID {holder.pid}", "wait for that process")
        r, _ = _import(tmp_path, _log(), name="e")
        _one_error(r, "in use by another process", f"PID {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    assert _datasets(store) == ["d"]


def test_a_failed_import_that_ended_the_transaction_leaves_the_store_usable(tmp_path, monkeypatch):
    """DuckDB ends the transaction itself on a write error (a full disk): the old code's ROLLBACK then
    failed with "no transaction is active" and hid the real error."""
    r, store = _import(tmp_path, _log())
    assert r.exit_code == 0

    def disk_full(self, name):
        self.con.execute("ROLLBACK")  # what DuckDB does on an IO error
        raise duckdb.IOException('IO Error: Could not write file "s.duckdb": No space left on device')

    monkeypatch.setattr(Store, "_after_table_write", disk_full)
    r, _ = _import(tmp_path, _log(seed=1), name="big")
    _one_error(r, "the import of 'big'", "the disk is full", "the store is left as it was")
    monkeypatch.undo()
    r, _ = _import(tmp_path, _log(seed=2), name="next")
    assert r.exit_code == 0, r.output
    assert _datasets(store) == ["d", "next"]


@pytest.fixture()
def tiny_disk(tmp_path):
    """A 2 MiB tmpfs (needs root and mount rights; skipped elsewhere)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2M", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_a_real_full_disk_during_import(tiny_disk, tmp_path):
    store = tiny_disk / "s.duckdb"
    small = tmp_path / "small.parquet"
    _log().to_parquet(small)
    r = runner.invoke(app, ["data", "import", str(small), "--name", "small", "--store", str(store)])
    assert r.exit_code == 0, r.output
    big = tmp_path / "big.parquet"
    _log(n=200_000).to_parquet(big)
    filler = tiny_disk / "filler"
    st = os.statvfs(tiny_disk)
    filler.write_bytes(b"\0" * (st.f_bavail * st.f_frsize - 200 * 1024))  # 200 KiB left
    r = runner.invoke(app, ["data", "import", str(big), "--name", "big", "--store", str(store)])
    _one_error(r, "the disk is full", "the store is left as it was")
    filler.unlink()  # the user frees space: the store takes the next import
    r = runner.invoke(app, ["data", "import", str(small), "--name", "again", "--store", str(store)])
    assert r.exit_code == 0, r.output
    assert _datasets(store) == ["small", "again"]


def test_json_that_is_a_folder_fails_before_the_work(tmp_path):
    log = tmp_path / "log.parquet"
    _log().to_parquet(log)
    r = runner.invoke(app, ["evaluate", "--log", str(log), "--policy", str(tmp_path / "p.pt"), "--json", str(tmp_path)])
    _one_error(r, "--json", "is a folder")


def test_learn_refuses_to_overwrite_a_policy(tmp_path):
    log = tmp_path / "log.parquet"
    _log().to_parquet(log)
    out = tmp_path / "run"
    out.mkdir()
    (out / "policy.pt").write_bytes(b"my earlier policy")
    r = runner.invoke(app, ["learn", "--log", str(log), "--out", str(out)])
    _one_error(r, "already holds a policy", "--overwrite")
    assert (out / "policy.pt").read_bytes() == b"my earlier policy"


def test_learn_refuses_a_head_it_cannot_use(tmp_path):
    log = tmp_path / "log.parquet"
    _log().to_parquet(log)
    r = runner.invoke(app, ["learn", "--log", str(log), "--out", str(tmp_path / "run"), "--set", "policy.head=beta"])
    _one_error(r, "policy.head = 'beta'", "categorical")
    assert not (tmp_path / "run" / "policy.pt").exists()


def test_json_written_is_strict(tmp_path):
    from grpokit.atomic import atomic_write_json

    path = atomic_write_json(tmp_path / "v.json", {"a": float("nan"), "b": [1.0, float("inf")], "c": np.float64(2.5)})
    assert json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON")) == \
        {"a": None, "b": [1.0, None], "c": 2.5}


_IMPORT_THAT_STALLS = """
import sys, time
from grpokit.store import Store
def stall(self, name):  # inside the import transaction, the new table written
    print("in transaction", flush=True)
    time.sleep(60)
Store._after_table_write = stall
from grpokit.cli import app
sys.argv = ["grpokit", "data", "import", sys.argv[1], "--name", "d", "--store", sys.argv[2], "--replace"]
app()
"""


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGINT"])
def test_kill_during_import_with_replace_leaves_the_store_unchanged(tmp_path, sig):
    import signal

    r, store = _import(tmp_path, _log())
    assert r.exit_code == 0, r.output
    with Store(store, read_only=True) as st:
        before = st.load_log("d").to_frame()
    new = tmp_path / "new.parquet"
    _log(n=500, seed=9).to_parquet(new)
    proc = subprocess.Popen([sys.executable, "-c", _IMPORT_THAT_STALLS, str(new), str(store)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "in transaction"
    proc.send_signal(getattr(signal, sig))
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    with Store(store) as st:  # the old dataset, whole; and the store takes the next import
        pd.testing.assert_frame_equal(st.load_log("d").to_frame(), before)
        assert st.list_datasets()["n_rows"].tolist() == [60]
        st.import_log(new, "after")
    assert _datasets(store) == ["d", "after"]


def _ranking_log(tmp_path, full=False, **changes):
    from grpokit.scenarios.search import SearchScenario

    sc = SearchScenario()
    df = sc.simulate_log(60, seed=1)
    for col, value in changes.items():
        df[col] = value(df[col])
    path = tmp_path / "ranking.parquet"
    df.to_parquet(path)
    schema = tmp_path / "ranking_schema.toml"
    schema.write_text("features = [" + ", ".join(f'"{c}"' for c in sc.feature_names) + ']\nsegment = "user_type"\n'
                      'item = "candidate"\n' + ('request_id = "request_id"\n[labels]\np_click = "click"\n'
                                                'p_order = "order"\norder_value = "gmv"\n' if full else ""))
    return path, schema


def test_ranking_log_without_any_feedback_is_refused(tmp_path):
    from grpokit.ranking.logs import DEFAULT_LABELS

    zero = {col: (lambda s: s * 0) for col in DEFAULT_LABELS.values()}
    log, schema = _ranking_log(tmp_path, **zero)
    r = runner.invoke(app, ["fusion", "learn", "examples/fusion_log.toml", "--log", str(log), "--schema", str(schema),
                            "--out", str(tmp_path / "run"), "--no-progress"])
    assert r.exit_code == 2 and "no feedback at all" in r.output, r.output
    # the schema file left request_id and labels at their defaults: said loudly, not silently
    assert "warning:" in r.output and "does not give request_id, labels" in r.output


def test_ranking_log_with_negative_gmv_is_refused(tmp_path):
    from grpokit.ranking.logs import DEFAULT_LABELS

    gmv = DEFAULT_LABELS["order_value"]
    log, schema = _ranking_log(tmp_path, **{gmv: lambda s: s - 1000.0})
    r = runner.invoke(app, ["fusion", "learn", "examples/fusion_log.toml", "--log", str(log), "--schema", str(schema),
                            "--out", str(tmp_path / "run"), "--no-progress"])
    assert r.exit_code == 2 and f"column {gmv!r}" in r.output and "is negative" in r.output, r.output


def test_never_logged_actions_get_no_mass_and_are_reported(tmp_path):
    """Codes {0, 1, 4} of a declared 5-action set: 2 and 3 were never tried, so only an extrapolation
    values them; the learned policy must not choose them unless asked."""
    from grpokit.policy.io import load_policy

    rng = np.random.default_rng(0)
    n = 600
    x = rng.normal(size=(n, 2))
    a = rng.choice([0, 1, 4], n)
    df = pd.DataFrame({"x0": x[:, 0], "x1": x[:, 1], "action": a, "reward": x[:, 0] * (a == 4) + rng.normal(size=n),
                       "pscore": 1 / 3})
    log, schema = tmp_path / "log.parquet", tmp_path / "schema.toml"
    df.to_parquet(log)
    schema.write_text("n_actions = 5\n")
    out = tmp_path / "run"
    r = runner.invoke(app, ["learn", "--log", str(log), "--schema", str(schema), "--out", str(out), "--no-progress",
                            "--outcome-model", "linear", "--holdout", "0", "--set", "grpo.steps=20"])
    assert r.exit_code == 0, r.output
    said = " ".join(r.output.split())  # rich wraps long lines
    assert "never shows action(s) 2, 3" in said and "no probability" in said
    s = json.loads((out / "summary.json").read_text())
    assert s["never_logged_actions"] == ["2", "3"] and s["never_logged_get_mass"] is False
    assert s["decision_mix"]["2"] == 0.0 and s["decision_mix"]["3"] == 0.0
    import torch

    policy, meta = load_policy(out / "policy.pt")  # the restriction travels with the saved policy
    with torch.no_grad():
        probs = policy(torch.randn(50, len(meta["feature_names"]))).log_probs.exp()
    assert probs.shape == (50, 5) and float(probs[:, [2, 3]].max()) == 0.0 and float(probs[:, [0, 1, 4]].min()) > 0


def test_evaluate_small_logs_give_valid_json_and_read_codes_against_the_policy(tmp_path):
    rng = np.random.default_rng(1)
    n = 400
    x = rng.normal(size=(n, 2))
    a = rng.integers(0, 3, n)
    df = pd.DataFrame({"x0": x[:, 0], "x1": x[:, 1], "action": a, "reward": x[:, 0] * (a == 1) + rng.normal(size=n),
                       "pscore": 1 / 3})
    train, out = tmp_path / "train.parquet", tmp_path / "run"
    df.to_parquet(train)
    r = runner.invoke(app, ["learn", "--log", str(train), "--out", str(out), "--no-progress", "--outcome-model",
                            "linear", "--holdout", "0", "--set", "grpo.steps=10"])
    assert r.exit_code == 0, r.output
    # an evaluation log that never shows the top action: read against the policy's 3 actions
    no_top = tmp_path / "no_top.parquet"
    df[df.action < 2].to_parquet(no_top)
    v = tmp_path / "v.json"
    r = runner.invoke(app, ["evaluate", "--log", str(no_top), "--policy", str(out / "policy.pt"), "--json", str(v),
                            "--method", "ips", "--n-bootstrap", "50"])
    assert r.exit_code == 0, r.output
    # a one-row log: the interval is undefined, written as null (NaN is not JSON)
    one = tmp_path / "one.parquet"
    df.head(1).to_parquet(one)
    r = runner.invoke(app, ["evaluate", "--log", str(one), "--policy", str(out / "policy.pt"), "--json", str(v),
                            "--method", "ips", "--n-bootstrap", "50"])
    assert r.exit_code == 0, r.output
    verdict = json.loads(v.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the verdict JSON"))
    assert verdict["improvement"]["ci_low"] is None and verdict["verdict"] == "hold"
    assert "nan" not in r.output.lower()  # the console shows an undefined interval as '–', not '[+nan, +nan]'


def test_negative_predictions_refused_where_fusion_would_clamp_them(tmp_path):
    log, schema = _ranking_log(tmp_path, full=True, order_value=lambda s: s - 1000.0)  # predicted GMV below 0
    base = ["fusion", "learn", "examples/fusion_log.toml", "--log", str(log), "--schema", str(schema),
            "--out", str(tmp_path / "run"), "--no-progress"]
    r = runner.invoke(app, [*base, "--set", "scenario.fusion=log_linear", "--set", "scenario.transforms=identity"])
    _one_error(r, "task 'order_value' has negative predictions", "log_linear")
    r = runner.invoke(app, [*base, "--set", "scenario.transforms=sqrt"])
    _one_error(r, "task 'order_value' has negative predictions", "sqrt")


def test_learn_with_a_budget_but_no_spend_speaks_cli(tmp_path):
    log = tmp_path / "log.parquet"
    _log(n=200).to_parquet(log)
    r = runner.invoke(app, ["learn", "--log", str(log), "--out", str(tmp_path / "run"), "--no-progress",
                            "--outcome-model", "linear", "--set", "grpo.budget=1"])
    said = " ".join(r.output.split())
    assert r.exit_code == 2 and "error: grpo.budget is set" in said and "remove grpo.budget" in said, r.output
    assert "Traceback" not in r.output and "spend_fn" not in said.split("(from Python")[0]
