"""Discovered cohorts through every workflow (issue 16 item 1): the [cohorts] keys of `grpokit run`
and `grpokit learn` (bad values named), discovered cohorts as P-GRPO's preference groups, the
per-cohort tables and the report; a saved policy that embeds the cohort carries its cohort model
(weights_only=True) and `DeployedPolicy`, `grpokit evaluate` and the decision service assign a row
without its cohort field exactly as training did; examples/marketing_groups.toml runs."""

from __future__ import annotations

import json
import tomllib

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from grpokit.cli import app
from grpokit.config import load_config
from grpokit.groups import CohortModel, assign
from grpokit.scenarios.marketing import MarketingScenario

EXAMPLE = "examples/marketing_groups.toml"
RFM = ["recency", "frequency", "monetary", "tenure"]
#: a run small enough for a test: few steps, small populations, cheap baselines, no pilot
TINY_RUN = ["--set", "grpo.steps=3", "--set", "grpo.batch_size=64", "--set", "grpo.eval_size=256",
            "--set", "grpo.eval_every=100", "--set", 'grpo.device="cpu"', "--set", "evaluation.eval_size=1000",
            "--set", "evaluation.log_size=1000", "--set", "evaluation.pilot_size=1000",
            "--set", 'evaluation.baselines=["random", "best_single"]', "--set", "evaluation.pilot=false",
            "--set", "cohorts.fit_size=1000"]
runner = CliRunner()

BAD = [
    ('cohorts.method="dbscan"', ["cohorts.method", "dbscan"]),
    ("cohorts.k=0", ["cohorts.k", "0"]),
    ("cohorts.k=-1", ["cohorts.k", "-1"]),
    ('cohorts.k="many"', ["cohorts.k", "many"]),
    ("cohorts.k=2.5", ["cohorts.k", "2.5"]),
    ('cohorts.select="aic"', ["cohorts.select", "aic"]),
    ('cohorts.features=["recency", "shoe_size"]', ["cohorts.features", "shoe_size"]),
    ("cohorts.colour=1", ["cohorts.colour"]),
    ("cohorts.fit_size=3", ["cohorts.fit_size", "3"]),
    ('cohorts.seed="x"', ["cohorts.seed", "x"]),
]


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("override, fragments", BAD + [
    ('cohorts.select="bic"', ["cohorts.select", "bic", "k-means"]),  # with method kmeans below
    ("cohorts.k=2000", ["cohorts.k", "2000", "cohorts.fit_size"]),
])
def test_run_names_bad_cohorts_keys(tmp_path, override, fragments):
    extra = ["--set", 'cohorts.method="kmeans"'] if "select=\"bic\"" in override else []
    r = runner.invoke(app, ["run", EXAMPLE, "--out", str(tmp_path / "run"), "--store", str(tmp_path / "s.duckdb"),
                            "--no-progress", *TINY_RUN, *extra, "--set", override])
    assert r.exit_code == 2, r.output
    out = _flat(r.output)
    for f in fragments:
        assert f in out, (f, out)
    assert not (tmp_path / "run" / "summary.json").exists()


@pytest.fixture(scope="module")
def ab(tmp_path_factory):
    """A small marketing A/B log (1,200 rows), and a second one without the group column."""
    d = tmp_path_factory.mktemp("ab")
    sc = MarketingScenario()
    train = sc.simulate_log(1200, seed=1)
    new = sc.simulate_log(600, seed=2).drop(columns=["group"])
    train.to_parquet(d / "ab.parquet")
    new.to_parquet(d / "new.parquet")
    return d, train, new


@pytest.mark.parametrize("override, fragments", BAD + [
    ("cohorts.k=5000", ["cohorts.k", "5000"]),  # more cohorts than training rows
])
def test_learn_names_bad_cohorts_keys(tmp_path, ab, override, fragments):
    d, _, _ = ab
    r = runner.invoke(app, ["learn", "--log", str(d / "ab.parquet"), "--out", str(tmp_path / "l"),
                            "--store", str(tmp_path / "s.duckdb"), "--outcome-model", "linear", "--no-progress",
                            "--set", "grpo.steps=2", "--set", 'cohorts.method="gmm"', "--set", override])
    assert r.exit_code == 2, r.output
    out = _flat(r.output)
    for f in fragments:
        assert f in out, (f, out)
    assert not (tmp_path / "l" / "policy.pt").exists()


def test_learn_config_file_bad_value_named(tmp_path, ab):
    d, _, _ = ab
    bad = tmp_path / "bad.toml"
    bad.write_text('[cohorts]\nmethod = "kmeans"\nk = 3\nselect = "aic"\n')
    r = runner.invoke(app, ["learn", "--log", str(d / "ab.parquet"), "--out", str(tmp_path / "l"), "--config", str(bad),
                            "--store", str(tmp_path / "s.duckdb"), "--no-progress"])
    assert r.exit_code == 2 and "cohorts.select" in _flat(r.output) and "aic" in r.output, r.output


@pytest.mark.parametrize("overrides, method, k, criterion, features", [
    (['cohorts.method="kmeans"', "cohorts.k=3", "cohorts.features=[]"], "kmeans", 3, None, "all"),
    (['cohorts.method="kmeans"', 'cohorts.k="auto"', 'cohorts.select="silhouette"', "cohorts.fit_size=400"],
     "kmeans", None, "silhouette", None),
    (['cohorts.method="gmm"', 'cohorts.k="auto"', 'cohorts.select="bic"', 'cohorts.features=["recency", "tenure"]',
      "cohorts.fit_size=400", "cohorts.seed=3"], "gmm", None, "bic", ["recency", "tenure"]),
])
def test_every_cohorts_key_reaches_the_run(overrides, method, k, criterion, features):
    from grpokit.runner import build_trainer

    base = ["grpo.steps=1", "grpo.batch_size=32", "grpo.eval_size=64", 'grpo.device="cpu"']
    trainer = build_trainer(load_config(EXAMPLE, base + overrides))
    sc = trainer.scenario
    m = sc.cohort_model
    assert m["method"] == method and sc.n_groups == m["n_cohorts"] and trainer.n_groups == m["n_cohorts"]
    if k is not None:
        assert m["n_cohorts"] == k and m["criterion"] is None
    else:
        assert m["criterion"] == criterion and sorted(int(x) for x in m["scores"]) == list(range(2, 9))
    expected = RFM if features is None else (sc.feature_names if features == "all" else features)
    assert m["features"] == expected  # the example's RFM; [] = every feature
    # seeded: the same settings give the same model
    again = build_trainer(load_config(EXAMPLE, base + overrides)).scenario.cohort_model
    assert again == m
    column = build_trainer(load_config(EXAMPLE, base + ['cohorts.method="column"'])).scenario
    assert getattr(column, "cohort_model", None) is None and column.n_groups == 12


def test_discovered_cohorts_are_the_pgrpo_groups():
    """Every context's P-GRPO group is its cohort under the run's cohort model, not the scenario's own cohort."""
    from grpokit.runner import build_trainer

    cfg = load_config(EXAMPLE, ["grpo.steps=4", "grpo.batch_size=64", "grpo.eval_size=64", 'grpo.device="cpu"',
                                "grpo.eval_every=100", "cohorts.k=3", "cohorts.fit_size=500"])
    assert cfg.grpo.advantage.name == "pgrpo"
    trainer = build_trainer(cfg)
    seen = []
    inner = trainer.advantages

    def spy(contexts, rewards):
        seen.append((contexts.obs.detach().clone(), contexts.group.clone(), contexts.extra["market"].clone()))
        return inner(contexts, rewards)

    trainer.advantages = spy
    trainer.train()
    model = trainer.scenario.cohort_model
    cols = [trainer.scenario.feature_names.index(f) for f in model["features"]]
    obs = torch.cat([o for o, _, _ in seen])
    groups = torch.cat([g for _, g, _ in seen]).numpy()
    market = torch.cat([m for _, _, m in seen]).numpy()
    assert len(seen) == 4
    np.testing.assert_array_equal(groups, assign(model, obs.double().numpy()[:, cols]))
    assert set(np.unique(groups)) == {0, 1, 2} and (groups != market).any()  # not the region x channel cohorts
    est = trainer._estimators["total"]
    assert est.n_groups == 3
    G = cfg.grpo.group_size
    np.testing.assert_allclose(est.count.numpy(), G * np.bincount(groups, minlength=3))  # history per cohort


def test_example_runs_with_discovered_cohorts_in_config_tables_and_report(tmp_path):
    out = tmp_path / "run"
    r = runner.invoke(app, ["run", EXAMPLE, "--out", str(out), "--store", str(tmp_path / "s.duckdb"), "--no-progress",
                            *TINY_RUN])
    assert r.exit_code == 0, r.output
    resolved = tomllib.loads((out / "config.toml").read_text())
    example = tomllib.loads(open(EXAMPLE).read())
    assert resolved["cohorts"]["method"] == "gmm" and resolved["cohorts"]["k"] == "auto"
    assert resolved["cohorts"]["features"] == RFM
    assert resolved["scenario"]["reward_components"] == example["scenario"]["reward_components"]
    assert {"relative_to_cohort_median", "cohort_percentile_rank"} <= set(resolved["scenario"]["reward_components"])
    assert resolved["grpo"]["reward_weights"] == example["grpo"]["reward_weights"]
    summary = json.loads((out / "summary.json").read_text())
    c = summary["cohorts"]
    assert c["method"] == "gmm" and c["n_cohorts"] == len(c["names"]) >= 2 and c["model"]["criterion"] == "bic"
    assert set(summary["policies"]["grpo"]["per_group"]) == set(c["names"])
    assert set(summary["assignment"]) == set(c["names"])
    html = (out / "report.html").read_text()
    assert f"cohorts: {c['n_cohorts']} discovered by gmm" in html and "recency, frequency, monetary, tenure" in html
    for name in c["names"]:
        assert f"<td>{name}</td>" in html or f"<th>{name}</th>" in html, name
    for comp in ("relative_to_cohort_median", "cohort_percentile_rank"):
        rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
        assert any(f"reward/{comp}" in row for row in rows), comp


# ------------------------------------------------------------------------------------------ learn


LEARN_TOML = """
[grpo]
steps = 4
batch_size = 64
eval_size = 64
[grpo.advantage]
name = "pgrpo"
min_history = 8
[policy]
hidden = [16]
group_embedding_dim = 3
[cohorts]
method = "gmm"
k = 3
features = ["recency", "frequency", "monetary", "tenure"]
seed = 2
fit_size = 5000
"""


@pytest.fixture(scope="module")
def learned(ab, tmp_path_factory):
    """`grpokit learn --config` with [cohorts] gmm and a group embedding; records GRPO's groups."""
    from grpokit.offline import workflow
    from grpokit.offline.workflow import _split

    d, train_df, _ = ab
    out = tmp_path_factory.mktemp("learned")
    cfg = out / "learn.toml"
    cfg.write_text(LEARN_TOML)
    seen = {}
    inner = workflow.learn_from_outcome_model

    def spy(features, table, *a, **kw):
        seen.update(group=np.asarray(kw["group"]).copy(), n_groups=kw["n_groups"], n=len(features))
        return inner(features, table, *a, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(workflow, "learn_from_outcome_model", spy)
        r = runner.invoke(app, ["learn", "--log", str(d / "ab.parquet"), "--out", str(out / "run"), "--config", str(cfg),
                                "--store", str(out / "s.duckdb"), "--outcome-model", "linear", "--no-progress"])
    assert r.exit_code == 0, r.output
    train_rows, _ = _split(len(train_df), 0.3, 0)
    # the cohort model fitted in memory on the same training rows, the way learn fits it
    reference = CohortModel("gmm", n_cohorts=3, features=RFM, seed=2).fit(train_df.iloc[train_rows][RFM])
    return {"out": out / "run", "output": r.output, "seen": seen, "train_rows": train_rows, "reference": reference,
            "summary": json.loads((out / "run" / "summary.json").read_text())}


def test_learn_uses_discovered_cohorts_as_pgrpo_groups(learned):
    seen, ref = learned["seen"], learned["reference"]
    assert seen["n_groups"] == 3 and seen["n"] == len(learned["train_rows"])
    np.testing.assert_array_equal(seen["group"], ref.labels_)
    s = learned["summary"]
    assert s["advantage"] == "pgrpo" and s["preference_groups"] == "cohort"
    assert s["cohorts"]["method"] == "gmm" and s["cohorts"]["names"] == ["c0", "c1", "c2"]
    assert s["cohorts"]["sizes"] == {f"c{i}": int((ref.labels_ == i).sum()) for i in range(3)}
    assert set(s["holdout"]["per_group"]) == {"c0", "c1", "c2"}
    assert "3 discovered by gmm" in _flat(learned["output"])


def test_saved_policy_carries_its_cohort_model_and_assigns_new_rows_identically(learned, ab):
    from grpokit.policy.deployed import DeployedPolicy
    from grpokit.policy.features import FeatureError

    _, _, new = ab
    payload = torch.load(learned["out"] / "policy.pt", weights_only=True)
    meta = payload["metadata"]
    assert meta["cohort_model"]["method"] == "gmm" and meta["group_labels"] == ["c0", "c1", "c2"]
    dp = DeployedPolicy.load(learned["out"] / "policy.pt")
    assert dp.needs_group and dp.cohort_model == meta["cohort_model"]
    field = next(f for f in dp.fields if f["name"] == "cohort")
    assert field["optional"] and "gmm" in field["assigned_by"]
    # new customers: assigned after load as the in-memory model assigns them
    expected = learned["reference"].predict(new[RFM])
    np.testing.assert_array_equal(dp.assign_cohorts(new), expected)
    assert len(np.unique(expected)) == 3
    feats = [f["name"] for f in dp.encoder.fields]
    records = new[feats].to_dict("records")
    with_cohort = [{**r, "cohort": f"c{c}"} for r, c in zip(records, expected)]
    p_model = dp.probabilities(records)
    np.testing.assert_array_equal(p_model, dp.probabilities(with_cohort))
    np.testing.assert_array_equal(p_model, dp.probabilities(new[feats]))  # a DataFrame without the column
    # the cohort matters to this policy (so the test could fail): another cohort, other probabilities
    shifted = [{**r, "cohort": f"c{(c + 1) % 3}"} for r, c in zip(records, expected)]
    assert not np.allclose(p_model, dp.probabilities(shifted))
    # mixed: one row says its cohort, the others are assigned
    mixed = [with_cohort[0], *records[1:5]]
    np.testing.assert_array_equal(dp.probabilities(mixed), p_model[:5])
    with pytest.raises(FeatureError, match="row 1.*'monetary'"):
        dp.probabilities([records[0], {k: v for k, v in records[1].items() if k != "monetary"}])
    with pytest.raises(FeatureError, match="unknown cohort 'north/web'"):
        dp.probabilities([{**records[0], "cohort": "north/web"}])


def test_evaluate_assigns_cohorts_from_the_policy(learned, ab, tmp_path):
    from grpokit.policy.deployed import DeployedPolicy

    d, _, new = ab
    verdict = tmp_path / "v.json"
    r = runner.invoke(app, ["evaluate", "--policy", str(learned["out"] / "policy.pt"), "--log", str(d / "new.parquet"),
                            "--store", str(tmp_path / "s.duckdb"), "--json", str(verdict), "--outcome-model", "linear",
                            "--n-bootstrap", "20"])
    assert r.exit_code == 0, r.output
    v = json.loads(verdict.read_text())
    expected = learned["reference"].predict(new[RFM])
    assert v["cohorts"]["sizes"] == {f"c{i}": int((expected == i).sum()) for i in range(3)}
    assert set(v["per_group"]) == {"c0", "c1", "c2"}
    dp = DeployedPolicy.load(learned["out"] / "policy.pt")
    feats = [f["name"] for f in dp.encoder.fields]
    told = dp.probabilities([{**row, "cohort": f"c{c}"} for row, c in zip(new[feats].to_dict("records"), expected)])
    for a, label in enumerate(dp.action_labels):
        assert v["decision_mix"][label] == pytest.approx(told[:, a].mean(), rel=1e-9)
        for c in range(3):
            assert v["decision_mix_per_group"][f"c{c}"][label] == pytest.approx(told[expected == c, a].mean(), rel=1e-9)


def test_service_decides_a_row_without_its_cohort_by_the_model(learned, ab, tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from grpokit.policy.deployed import DeployedPolicy
    from grpokit.serve import Client
    from grpokit.serve.app import create_app
    from grpokit.serve.config import ServeConfig

    _, _, new = ab
    path = learned["out"] / "policy.pt"
    dp = DeployedPolicy.load(path)
    feats = [f["name"] for f in dp.encoder.fields]
    rows = new[feats].head(20).to_dict("records")
    codes = learned["reference"].predict(new[RFM].head(20))
    cfg = ServeConfig(store=str(tmp_path / "s.duckdb"), epsilon=0.1, seed=5, log={"flush_interval_s": 0.2})
    with TestClient(create_app(cfg, path)) as http:
        c = Client(http=http)
        for i, (row, code) in enumerate(zip(rows, codes)):
            bare = c.decide(row, event_id=f"bare{i}", probabilities=True)
            told = c.decide({**row, "cohort": f"c{code}"}, event_id=f"told{i}", probabilities=True)
            np.testing.assert_allclose(bare["probabilities"], told["probabilities"], rtol=0, atol=1e-12)
            q = dp.served_probabilities([{**row, "cohort": f"c{code}"}], epsilon=0.1)[0]
            np.testing.assert_allclose(bare["probabilities"], q, rtol=1e-6)
        # a row without the cohort model's features is refused by name, nothing logged for it
        feat = dp.cohort_model["features"][0]
        r = http.post("/v1/decide", json={"context": {k: v for k, v in rows[0].items() if k != feat}, "event_id": "nofeat"})
        assert r.status_code == 422 and feat in r.text, r.text
    # the decision log holds the cohort the model assigned (what the next learn and the pilot group by)
    import duckdb

    con = duckdb.connect(str(tmp_path / "s.duckdb"), read_only=True)
    logged = dict(con.execute("SELECT event_id, cohort FROM decisions").fetchall())
    con.close()
    for i, code in enumerate(codes):
        assert logged[f"bare{i}"] == f"c{code}" and logged[f"told{i}"] == f"c{code}"
    assert "nofeat" not in logged


def test_run_saves_a_policy_that_assigns_cohorts_like_the_run(tmp_path):
    """`grpokit run` with a group embedding on discovered cohorts: policy.pt carries the cohort model;
    loaded, it decides the evaluation population (rows without a cohort field) as the run did."""
    from grpokit.evaluation.population import population
    from grpokit.policy.deployed import DeployedPolicy
    from grpokit.scenarios.registry import scenario_from_config

    out = tmp_path / "run"
    r = runner.invoke(app, ["run", EXAMPLE, "--out", str(out), "--store", str(tmp_path / "s.duckdb"), "--no-progress",
                            *TINY_RUN, "--set", "cohorts.k=3", "--set", "policy.group_embedding_dim=3",
                            "--set", "grpo.steps=6", "--set", "grpo.lr=0.05"])
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    payload = torch.load(out / "policy.pt", weights_only=True)
    assert payload["metadata"]["cohort_model"] == summary["cohorts"]["model"]
    dp = DeployedPolicy.load(out / "policy.pt")
    assert dp.needs_group and dp.group_labels == summary["cohorts"]["names"]
    cfg = load_config(out / "config.toml")
    ctx = population(scenario_from_config(cfg.scenario), summary["population"]["n"], summary["population"]["seed"])
    rows = pd.DataFrame(ctx.obs.double().numpy(), columns=dp.encoder.names)
    codes = dp.assign_cohorts(rows)
    np.testing.assert_array_equal(codes, assign(summary["cohorts"]["model"], rows))
    ran = pd.read_parquet(out / "decisions" / "grpo.parquet")["action"].to_numpy()
    np.testing.assert_array_equal(dp.probabilities(rows).argmax(1), ran)
    told = rows.assign(cohort=[f"c{c}" for c in codes])
    np.testing.assert_array_equal(dp.probabilities(told), dp.probabilities(rows))
    # the cohort is an input of this policy (so the assignment matters): everyone told c0 is scored otherwise
    assert (codes != 0).any() and not np.allclose(dp.probabilities(rows.assign(cohort="c0")), dp.probabilities(rows))


def test_run_learning_from_logs_uses_the_discovered_cohorts(tmp_path, monkeypatch):
    """`grpokit run --set evaluation.train_on=logs`: the log's rows are regrouped by the run's cohort
    model before the shared log learner sees them (its P-GRPO groups = the discovered cohorts)."""
    from grpokit.offline import workflow

    cfg = tmp_path / "logs.toml"
    cfg.write_text('[scenario]\nname = "marketing"\n[grpo.advantage]\nname = "pgrpo"\nmin_history = 8\n'
                   '[evaluation]\ntrain_on = "logs"\nlogs_advantage = "config"\n[cohorts]\nmethod = "kmeans"\nk = 3\nfit_size = 500\n')
    seen = {}
    inner_fit, inner_learn = workflow.fit_policy_on_log, workflow.learn_from_outcome_model

    def fit_spy(log, **kw):
        seen["log"] = log
        return inner_fit(log, **kw)

    def learn_spy(features, table, *a, **kw):
        seen["group"], seen["n_groups"] = np.asarray(kw["group"]).copy(), kw["n_groups"]
        return inner_learn(features, table, *a, **kw)

    monkeypatch.setattr(workflow, "fit_policy_on_log", fit_spy)
    monkeypatch.setattr(workflow, "learn_from_outcome_model", learn_spy)
    out = tmp_path / "run"
    r = runner.invoke(app, ["run", str(cfg), "--out", str(out), "--store", str(tmp_path / "s.duckdb"), "--no-progress",
                            *TINY_RUN, "--set", "cohorts.fit_size=500"])
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    model = summary["cohorts"]["model"]
    assert summary["cohorts"]["method"] == "kmeans" and model["n_cohorts"] == 3
    log = seen["log"]
    expected = assign(model, pd.DataFrame(log.features, columns=log.feature_names))
    np.testing.assert_array_equal(log.group, expected)
    assert log.group_labels == ["c0", "c1", "c2"] and seen["n_groups"] == 3
    np.testing.assert_array_equal(seen["group"], expected)
    assert set(summary["policies"]["grpo"]["per_group"]) == {"c0", "c1", "c2"}
    assert summary["learner"]["advantage"] == "pgrpo"
