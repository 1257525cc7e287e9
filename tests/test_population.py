"""Stated seeds and population fingerprints, decision files in one format (decision_id or unit_id,
codes or offer names), mismatches refused, and `grpokit run --log FILE`."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from grpokit.cli import app
from grpokit.evaluation.decisions import DecisionFileError, action_codes, read_decisions, write_decisions
from grpokit.evaluation.population import PopulationMismatch, check_population, population, population_fingerprint, population_info
from grpokit.scenarios import make_scenario

runner = CliRunner()
N_EVAL, N_LOG = 1000, 2000
SMALL = ["--set", "scenario.name=marketing", "--set", "grpo.steps=20", "--set", "grpo.batch_size=128", "--set", "grpo.eval_size=256",
         "--set", f"evaluation.eval_size={N_EVAL}", "--set", f"evaluation.log_size={N_LOG}", "--set", "evaluation.pilot_size=2000",
         "--no-progress"]
SC = ["--set", "scenario.name=marketing"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("pop") / "run"
    r = runner.invoke(app, ["run", "--out", str(out), "--store", str(out.parent / "s.duckdb"), *SMALL])
    assert r.exit_code == 0, r.output
    return out


def test_fingerprint_identifies_the_units():
    sc = make_scenario("marketing")
    a, b = population(sc, 500, 3), population(sc, 500, 3)
    assert population_fingerprint(a) == population_fingerprint(b)
    assert population_fingerprint(population(sc, 500, 4)) != population_fingerprint(a)
    assert population_fingerprint(population(sc, 501, 3)) != population_fingerprint(a)
    _, ctx, _ = sc.simulate_log(500, "uniform", seed=3, return_contexts=True)  # the simulated log's units
    assert torch.equal(ctx.obs, a.obs) and population_fingerprint(ctx) == population_fingerprint(a)
    info = population_info(a, 3)
    check_population(None, info, source="x")  # a file that states nothing passes
    check_population({"fingerprint": info["fingerprint"]}, info, source="x")
    with pytest.raises(PopulationMismatch, match="--n 500 --seed 4"):
        check_population({"fingerprint": "0" * 16, "n": 500, "seed": 4}, info, source="d.parquet")


def test_summary_states_seeds_population_and_lift_shares(run_dir):
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["seeds"]["ab_log"] == 101 and s["seeds"]["population"] == 7 and s["seeds"]["held_out_log"] == 202
    pop = s["population"]
    assert pop["n"] == N_EVAL and pop["seed"] == 7
    assert pop["fingerprint"] == population_fingerprint(population(make_scenario("marketing"), N_EVAL, 7))
    assert s["ab_log"] == {"source": "simulated", "rows": N_LOG, "policy": "uniform", "seed": 101}
    p = s["policies"]
    assert set(p["no_offer"]["offer_mix"].values()) == {0.0, 1.0} and p["no_offer"]["offer_mix"]["none"] == 1.0
    o, z, cur = p["oracle"]["value"], p["no_offer"]["value"], p["best_single"]["value"]
    for name, b in p.items():
        assert b["lift_share_vs_no_offer"] == pytest.approx((b["value"] - z) / (o - z))
        assert b["lift_share_vs_current"] == pytest.approx((b["value"] - cur) / (o - cur))
        assert b["ci_low"] < b["value"] < b["ci_high"]
        if name != "best_single":
            d = b["vs_current"]
            assert d["difference"] == pytest.approx(b["value"] - cur) and d["ci_low"] <= d["difference"] <= d["ci_high"]
    html = (run_dir / "report.html").read_text()
    assert "no_offer" in html and "of the oracle&#x27;s lift over no offer" in html and pop["fingerprint"] in html


def test_run_decisions_score_the_same_and_a_wrong_population_is_refused(run_dir, tmp_path):
    s = json.loads((run_dir / "summary.json").read_text())
    files = sorted(p.stem for p in (run_dir / "decisions").glob("*.parquet"))
    assert files == sorted(s["policies"])
    out = tmp_path / "v.json"
    grpo = run_dir / "decisions" / "grpo.parquet"
    r = runner.invoke(app, ["scenario", "evaluate", "--assignment", str(grpo), "--json", str(out),
                            "--n", str(N_EVAL), "--seed", "7", *SC])
    assert r.exit_code == 0, r.output
    v = json.loads(out.read_text())
    assert v["value"] == pytest.approx(s["policies"]["grpo"]["value"], rel=1e-9)
    assert v["population"] == {k: s["population"][k] for k in ("n", "seed", "fingerprint")}
    r = runner.invoke(app, ["scenario", "evaluate", "--assignment", str(grpo), "--json", str(out),
                            "--n", str(N_EVAL), "--seed", "0", *SC])
    assert r.exit_code == 2 and "population" in r.output and "--seed 7" in r.output
    # the same decisions as a CSV with the population column: refused too; without it (another tool's file): scored
    df = pd.read_parquet(grpo)
    df.to_csv(tmp_path / "with_fp.csv", index=False)
    r = runner.invoke(app, ["scenario", "evaluate", "--assignment", str(tmp_path / "with_fp.csv"), "--json", str(out),
                            "--n", str(N_EVAL), "--seed", "0", *SC])
    assert r.exit_code == 2 and "population" in r.output


def test_one_id_name_and_offer_names_everywhere(run_dir, tmp_path):
    s = json.loads((run_dir / "summary.json").read_text())
    df = pd.read_parquet(run_dir / "decisions" / "x_learner.parquet")
    names = make_scenario("marketing").action_names
    value = s["policies"]["x_learner"]["value"]
    out = tmp_path / "v.json"
    variants = {
        "unit_id_codes.csv": pd.DataFrame({"unit_id": df["decision_id"], "action": df["action"]}),
        "decision_id_names.csv": pd.DataFrame({"decision_id": df["decision_id"], "action": [names[a] for a in df["action"]]}),
        "mixed.parquet": pd.DataFrame({"decision_id": df["decision_id"],
                                       "action": [names[a] if i % 2 else str(a) for i, a in enumerate(df["action"])]}),
    }
    for fname, frame in variants.items():
        path = tmp_path / fname
        frame = frame.sample(frac=1.0, random_state=1)  # order does not matter
        frame.to_csv(path, index=False) if fname.endswith(".csv") else frame.to_parquet(path, index=False)
        r = runner.invoke(app, ["scenario", "evaluate", "--assignment", str(path), "--json", str(out),
                                "--n", str(N_EVAL), "--seed", "7", *SC])
        assert r.exit_code == 0, (fname, r.output)
        assert json.loads(out.read_text())["value"] == pytest.approx(value, rel=1e-9), fname
    bad = variants["decision_id_names.csv"].copy()
    bad.loc[5, "action"] = "30% off"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    r = runner.invoke(app, ["scenario", "evaluate", "--assignment", str(tmp_path / "bad.csv"), "--json", str(out),
                            "--n", str(N_EVAL), "--seed", "7", *SC])
    assert r.exit_code == 2 and "decision_id 5" in r.output and "'30% off'" in r.output and "free shipping" in r.output


def test_decision_file_errors_name_the_row(tmp_path):
    ok = pd.DataFrame({"decision_id": np.arange(4), "action": [0, 1, 2, 3]})
    cases = {
        "dup": (ok.assign(decision_id=[0, 1, 1, 3]), "row 2: unit 1 has two decisions"),
        "range": (ok.assign(decision_id=[0, 1, 2, 9]), "row 3: unit 9 is outside"),
        "noid": (ok.rename(columns={"decision_id": "customer"}), "no 'decision_id' column"),
        "text_id": (ok.assign(decision_id=["a", "1", "2", "3"]), "row 0: 'a' is not an integer"),
        "both": (ok.assign(unit_id=[3, 2, 1, 0]), "both name the unit but differ"),
        "missing": (ok.assign(action=[0, None, 2, 3]), "row 1"),
    }
    for name, (frame, message) in cases.items():
        path = tmp_path / f"{name}.csv"
        frame.to_csv(path, index=False)
        with pytest.raises(DecisionFileError, match=message.replace("(", r"\(")):
            read_decisions(path, 4)
    with pytest.raises(DecisionFileError, match="gives decisions to 3 units"):
        ok.iloc[:3].to_csv(tmp_path / "short.csv", index=False)
        read_decisions(tmp_path / "short.csv", 4)
    with pytest.raises(DecisionFileError, match=r"decision_id 11: 7 is not a code 0..4 or one of the names"):
        action_codes([1, 7], ["none", "a", "b", "c", "d"], 5, ids=[10, 11])
    assert action_codes(["2", 3.0, "none", "b"], ["none", "a", "b", "c", "d"], 5).tolist() == [2, 3, 0, 2]
    # a written file reads back with its population
    pop = {"n": 4, "seed": 1, "fingerprint": "abcd" * 4}
    write_decisions(tmp_path / "d.parquet", np.array([3, 2, 1, 0]), population=pop, action_names=list("wxyz"))
    frame, stated = read_decisions(tmp_path / "d.parquet", 4)
    assert frame["action"].tolist() == [3, 2, 1, 0] and stated == pop


def test_run_on_an_external_log_reproduces_the_simulated_one(run_dir, tmp_path):
    """The A/B log `grpokit run` simulates is `scenario simulate --n log_size --seed evaluation.seed + 101`:
    fitted on that file (with offer names instead of codes), the baselines score exactly the same."""
    log = tmp_path / "ab.csv"
    r = runner.invoke(app, ["scenario", "simulate", "--out", str(tmp_path / "ab.parquet"), "--n", str(N_LOG), "--seed", "101", *SC])
    assert r.exit_code == 0, r.output
    df = pd.read_parquet(tmp_path / "ab.parquet")
    df["action"] = [make_scenario("marketing").action_names[a] for a in df["action"]]
    df.to_csv(log, index=False)
    out = tmp_path / "ext"
    r = runner.invoke(app, ["run", "--out", str(out), "--log", str(log), "--store", str(tmp_path / "s.duckdb"), *SMALL])
    assert r.exit_code == 0, r.output
    s, ref = json.loads((out / "summary.json").read_text()), json.loads((run_dir / "summary.json").read_text())
    assert s["ab_log"] == {"source": str(log), "rows": N_LOG}
    for name in ("random", "best_single", "propensity", "t_learner", "x_learner"):
        assert s["policies"][name]["value"] == pytest.approx(ref["policies"][name]["value"], rel=1e-12), name
    broken = df.drop(columns=["recency"])
    broken.to_csv(tmp_path / "broken.csv", index=False)
    r = runner.invoke(app, ["run", "--out", str(tmp_path / "b"), "--log", str(tmp_path / "broken.csv"), *SMALL])
    assert r.exit_code == 2 and "'recency'" in r.output
    assert not (tmp_path / "b" / "metrics.jsonl").exists()  # refused before any training
