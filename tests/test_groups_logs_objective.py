"""The group-relative objective when learning from a log (issue 16 items 2 and 6): a scenario's reward
components in the log learner's terms (``grpokit.business.log_reward_spec``), reached by
`grpokit run --set evaluation.train_on=logs` and by `grpokit learn --config` on the groups example
(both failed before with "grpo.reward_weights names [...], but the reward is r̂ alone")."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from grpokit.business import log_reward_spec
from grpokit.cli import app
from grpokit.config import load_config
from grpokit.scenarios.marketing import MarketingConfig, MarketingScenario

EXAMPLE = "examples/marketing_groups.toml"
runner = CliRunner()
SMALL = ["--set", "grpo.steps=4", "--set", "grpo.batch_size=64", "--set", "grpo.eval_size=256",
         "--set", "grpo.eval_every=100", "--set", 'grpo.device="cpu"']


def test_spec_maps_profit_to_rhat_keeps_group_parts_and_drops_peer_effect():
    cfg = load_config(EXAMPLE, [])
    spec = log_reward_spec(cfg.scenario, dict(cfg.grpo.reward_weights), log_labels=["0", "1", "2", "3", "4"])
    assert spec["components"] == ["reward", "relative_to_cohort_median", "cohort_percentile_rank"]
    assert spec["weights"] == {"reward": 1.0, "relative_to_cohort_median": 0.5, "cohort_percentile_rank": 2.0}
    assert spec["dropped"] == ["peer_effect"]
    assert spec["reference"] == "0"  # "none" is the first offer: its code in a coded log
    named = log_reward_spec(cfg.scenario, dict(cfg.grpo.reward_weights), log_labels=[o.name for o in cfg.scenario.offers])
    assert named["reference"] == "none"
    current = MarketingConfig(reward_components=["profit", "improvement"], improvement_reference="10% off")
    assert log_reward_spec(current, {}, log_labels=range(5))["reference"] == "2"


def test_spec_of_profit_alone_is_the_plain_learner():
    # marketing.toml's ["profit", "peer_effect"] without weights: r̂ as one number, as before
    spec = log_reward_spec(MarketingConfig(), {})
    assert spec["components"] is None and spec["weights"] == {} and spec["dropped"] == ["peer_effect"]


@pytest.mark.parametrize("components, weights, fragments", [
    (["profit", "revenue"], {}, ["revenue", "cannot be learned from a log"]),
    (["profit", "spend", "cost"], {"profit": 1.0}, ["spend", "cost"]),
    (["peer_effect"], {}, ["nothing a log can give"]),
    (["profit"], {"rank": 1.0}, ["grpo.reward_weights", "rank"]),
])
def test_spec_names_what_a_log_cannot_give(components, weights, fragments):
    with pytest.raises(ValueError) as err:
        log_reward_spec(MarketingConfig(reward_components=components), weights)
    for f in fragments:
        assert f in str(err.value), (f, str(err.value))


def test_run_on_logs_learns_the_groups_examples_objective(tmp_path):
    out = tmp_path / "run"
    r = runner.invoke(app, ["run", EXAMPLE, "--out", str(out), "--store", str(tmp_path / "s.duckdb"), "--no-progress",
                            *SMALL, "--set", "evaluation.train_on=logs", "--set", "evaluation.pilot=false",
                            "--set", "evaluation.eval_size=1000", "--set", "evaluation.log_size=1500",
                            "--set", 'evaluation.baselines=["random"]', "--set", "cohorts.fit_size=1000"])
    assert r.exit_code == 0, r.output
    learner = json.loads((out / "summary.json").read_text())["learner"]
    assert "without the reward components ['peer_effect']" in " ".join(r.output.split())  # said, not only recorded
    assert "without the reward components" in (out / "report.html").read_text()
    assert learner["reward_components"] == ["reward", "relative_to_cohort_median", "cohort_percentile_rank"]
    assert learner["reward_weights"] == {"reward": 1.0, "relative_to_cohort_median": 0.5, "cohort_percentile_rank": 2.0}
    assert learner["improvement_reference"] == "0" and learner["dropped_components"] == ["peer_effect"]
    # each component is logged on its own, in the run's metrics.jsonl (the learner's steps)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    assert len(rows) == 4 and all(f"reward/{k}" in rows[-1] for k in learner["reward_components"]), rows[-1]


def test_run_on_logs_refuses_a_component_no_log_gives(tmp_path):
    r = runner.invoke(app, ["run", "examples/marketing.toml", "--out", str(tmp_path / "run"),
                            "--store", str(tmp_path / "s.duckdb"), "--no-progress", *SMALL,
                            "--set", "evaluation.train_on=logs", "--set", "evaluation.pilot=false",
                            "--set", "evaluation.log_size=1000", "--set", "evaluation.eval_size=1000",
                            "--set", 'scenario.reward_components=["profit", "revenue"]'])
    assert r.exit_code != 0
    text = " ".join((r.output + str(r.exception or "")).split())
    assert "revenue" in text and "cannot be learned from a log" in text, text


def test_learn_with_the_groups_config_learns_its_objective(tmp_path):
    log = tmp_path / "ab.parquet"
    MarketingScenario(load_config(EXAMPLE, []).scenario).simulate_log(1500, seed=1).to_parquet(log)
    out = tmp_path / "l"
    r = runner.invoke(app, ["learn", "--log", str(log), "--config", EXAMPLE, "--out", str(out),
                            "--store", str(tmp_path / "s.duckdb"), "--outcome-model", "linear", "--no-progress",
                            "--set", "grpo.steps=4", "--set", "cohorts.fit_size=1000"])
    assert r.exit_code == 0, r.output
    assert "peer_effect" in r.output and "left out" in r.output
    s = json.loads((out / "summary.json").read_text())
    assert s["reward_components"] == ["reward", "relative_to_cohort_median", "cohort_percentile_rank"]
    assert s["improvement_reference"] == "0" and s["environment"]["packages"]["scikit-learn"]
    # an explicit reference wins over the config's scenario.improvement_reference
    r = runner.invoke(app, ["learn", "--log", str(log), "--config", EXAMPLE, "--out", str(tmp_path / "l2"),
                            "--store", str(tmp_path / "s.duckdb"), "--outcome-model", "linear", "--no-progress",
                            "--set", "grpo.steps=4", "--set", "cohorts.fit_size=1000", "--improvement-reference", "logged"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "l2" / "summary.json").read_text())["improvement_reference"] == "logged"


def test_run_table_says_what_the_lowest_cohort_gain_is_measured_against(tmp_path, monkeypatch):
    from grpokit.cli._common import console

    monkeypatch.setattr(console, "width", 300)  # one line per table row, headers unwrapped
    r = runner.invoke(app, ["run", "examples/marketing.toml", "--out", str(tmp_path / "run"),
                            "--store", str(tmp_path / "s.duckdb"), "--no-progress", *SMALL,
                            "--set", "evaluation.pilot=false", "--set", "evaluation.eval_size=1000",
                            "--set", "evaluation.log_size=1000", "--set", 'evaluation.baselines=["random"]'])
    assert r.exit_code == 0, r.output
    assert "lowest cohort gain vs no offer" in r.output, r.output
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["environment"]["packages"]["numpy"] and s["environment"]["torch_threads"] >= 1  # what it ran on
    line = next(ln for ln in r.output.splitlines() if ln.strip().startswith("│ grpo ") or ln.strip().startswith("grpo "))
    assert f"{s['policies']['grpo']['lowest_cohort_improvement_vs_no_offer']:.3f}" in line, line


@pytest.fixture
def coded_log(tmp_path):
    log = tmp_path / "ab.parquet"
    MarketingScenario(load_config(EXAMPLE, []).scenario).simulate_log(1500, seed=1).to_parquet(log)
    return log


def _learn(tmp_path, log, config, *extra):
    out = tmp_path / f"l{len(list(tmp_path.iterdir()))}"
    r = runner.invoke(app, ["learn", "--log", str(log), "--config", str(config), "--out", str(out),
                            "--store", str(tmp_path / "s.duckdb"), "--outcome-model", "linear", "--no-progress",
                            "--set", "grpo.steps=3", "--set", "cohorts.fit_size=1000", *extra])
    return r, (json.loads((out / "summary.json").read_text()) if r.exit_code == 0 else None)


def _config(tmp_path, name, components, weights=""):
    text = open(EXAMPLE).read()
    start = text.index("reward_components = ")
    text = text[:start] + f"reward_components = {components}" + text[text.index("\n", start):]
    w0 = text.index("[grpo.reward_weights]")
    text = text[:w0] + "[grpo.reward_weights]\n" + weights + text[text.index("\n[", w0 + 1):]
    p = tmp_path / name
    p.write_text(text)
    return p


def test_learn_config_without_weights_still_learns_its_group_objective(tmp_path, coded_log):
    cfg = _config(tmp_path, "nowt.toml", '["profit", "improvement", "relative_to_cohort_median"]')
    r, s = _learn(tmp_path, coded_log, cfg)
    assert r.exit_code == 0, r.output
    assert s["reward_components"] == ["reward", "improvement", "relative_to_cohort_median"], s["reward_components"]
    cfg = _config(tmp_path, "imp.toml", '["profit", "improvement"]', "improvement = 3.0\n")
    r, s = _learn(tmp_path, coded_log, cfg)
    assert r.exit_code == 0, r.output
    assert s["reward_components"] == ["reward", "improvement"] and s["grpo_config"]["reward_weights"] == {"improvement": 3.0}


def test_learn_config_weights_set_by_scenario_name_and_reference_by_offer_name(tmp_path, coded_log):
    r, s = _learn(tmp_path, coded_log, EXAMPLE, "--set", "grpo.reward_weights.profit=2", "--improvement-reference", "10% off")
    assert r.exit_code == 0, r.output
    assert s["grpo_config"]["reward_weights"]["reward"] == 2.0 and s["improvement_reference"] == "2"  # "10% off"'s code
    r, _ = _learn(tmp_path, coded_log, EXAMPLE, "--set", "grpo.reward_weights.rank=2")
    assert r.exit_code == 2 and "rank" in " ".join(r.output.split()), r.output


def test_explicit_reward_components_replace_the_configs_objective(tmp_path, coded_log):
    r, s = _learn(tmp_path, coded_log, EXAMPLE, "--reward-components", "reward,improvement",
                  "--set", "grpo.reward_weights.improvement=0.5")
    assert r.exit_code == 0, r.output
    assert s["reward_components"] == ["reward", "improvement"] and s["grpo_config"]["reward_weights"] == {"improvement": 0.5}
    assert "only the weights given with --set apply" in " ".join(r.output.split())


def test_a_logs_run_refuses_a_training_folder_it_did_not_write(tmp_path):
    out = tmp_path / "run"
    (out / "training").mkdir(parents=True)
    (out / "training" / "mine.txt").write_text("keep me")
    r = runner.invoke(app, ["run", EXAMPLE, "--out", str(out), "--store", str(tmp_path / "s.duckdb"), "--no-progress",
                            *SMALL, "--set", "evaluation.train_on=logs", "--set", "evaluation.pilot=false",
                            "--set", "evaluation.eval_size=1000", "--set", "evaluation.log_size=1500",
                            "--set", 'evaluation.baselines=["random"]', "--set", "cohorts.fit_size=1000"])
    assert r.exit_code == 2 and "mine.txt" in r.output, r.output
    assert (out / "training" / "mine.txt").read_text() == "keep me"


def test_spec_names_a_malformed_component_list():
    class Bad:
        reward_components = True

    with pytest.raises(ValueError, match="is not a list of component names"):
        log_reward_spec(Bad(), {})
