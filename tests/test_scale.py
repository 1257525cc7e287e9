"""grpokit.scale without Ray: grids, serial sweeps, seeded rollouts, P-GRPO statistic merges, OPE sums.

The Ray twins of these paths (same results on Ray) are in tests/test_scale_ray.py (marker ``ray``).
"""

from __future__ import annotations

import json

import pytest
import torch

from grpokit.config import ConfigError, load_config
from grpokit.scale.sweep import expand_grid, flatten, parse_grid, run_sweep

TINY = ["grpo.steps=4", "grpo.batch_size=16", "grpo.eval_size=128", "grpo.eval_every=2"]


def test_parse_grid_values_and_errors():
    g = parse_grid(["grpo.lr=0.001,0.003", "policy.hidden=[8, 8],[16]", 'grpo.advantage.name="grpo",pgrpo'])
    assert g == {"grpo.lr": [0.001, 0.003], "policy.hidden": [[8, 8], [16]], "grpo.advantage.name": ["grpo", "pgrpo"]}
    with pytest.raises(ConfigError, match="section.key=v1,v2"):
        parse_grid(["grpo.lr"])
    with pytest.raises(ConfigError, match="twice"):
        parse_grid(["grpo.lr=1", "grpo.lr=2"])
    with pytest.raises(ConfigError, match="at least one value"):
        parse_grid(["grpo.lr=0.1,"])


def test_expand_grid_product_and_seed_keys():
    runs = expand_grid({"grpo.lr": [0.1, 0.2]}, [0, 1, 2])
    assert len(runs) == 6 and [r["seed"] for r in runs] == [0, 1, 2] * 2
    assert runs[4]["overrides"] == ["grpo.lr=0.2", "grpo.seed=1", "evaluation.seed=1"]
    assert len({r["name"] for r in runs}) == 6
    # a grid over the seed key itself is not overwritten by the seed
    assert expand_grid({"grpo.seed": [7]}, [0])[0]["overrides"] == ["grpo.seed=7", "evaluation.seed=0"]


def test_flatten_drops_timings_keeps_numbers():
    flat = flatten({"seconds": 1.0, "train_seconds": 2, "a": {"b": 1, "c": None, "d": "x", "e": True},
                    "decisions_per_second": 5.0, "report": "r.html"})
    assert flat == {"a.b": 1.0, "a.e": 1.0}


def test_bad_grid_value_fails_before_any_run(tmp_path):
    with pytest.raises(ConfigError, match="grpo.lr"):
        run_sweep(None, {"grpo.lr": [0.01, -1.0]}, 1, workflow="train", out=tmp_path, overrides=TINY)
    assert not (tmp_path / "runs").exists()
    with pytest.raises(ValueError, match="backend"):
        run_sweep(None, {}, 1, workflow="train", backend="spark", overrides=TINY)
    with pytest.raises(ValueError, match="output directory"):
        run_sweep(None, {}, 1, workflow="run", overrides=TINY)


def test_serial_sweep_rows_equal_single_runs(tmp_path):
    """Each row is the run's own summary: the same numbers as training that seed directly."""
    from grpokit.runner import run_training

    res = run_sweep(None, {"grpo.lr": [0.001, 0.01]}, 2, workflow="train", out=tmp_path / "sw", overrides=TINY)
    assert len(res.rows) == 4
    torch.set_num_threads(1)
    direct = run_training(load_config(None, TINY + ["grpo.lr=0.01", "grpo.seed=1"]), tmp_path / "direct")
    row = next(r for r in res.rows if r["grpo.lr"] == 0.01 and r["seed"] == 1)
    assert row["policies.grpo.value"] == direct["policies"]["grpo"]["value"]
    assert row["oracle.value"] == direct["oracle"]["value"]
    other = next(r for r in res.rows if r["grpo.lr"] == 0.001 and r["seed"] == 1)
    assert other["policies.grpo.value"] != row["policies.grpo.value"] or other["last_metrics.loss"] != row["last_metrics.loss"]
    table = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert len(table["rows"]) == 4 and len(table["aggregate"]) == 2
    agg = next(a for a in table["aggregate"] if a["grpo.lr"] == 0.01)
    vals = [r["policies.grpo.value"] for r in res.rows if r["grpo.lr"] == 0.01]
    assert agg["policies.grpo.value"]["mean"] == pytest.approx(sum(vals) / 2)
    csv_lines = (tmp_path / "sw" / "sweep.csv").read_text().splitlines()
    assert len(csv_lines) == 5 and csv_lines[0].startswith("name,grpo.lr,seed,wall_s")
    with pytest.raises(FileExistsError):
        run_sweep(None, {"grpo.lr": [0.001]}, 1, workflow="train", out=tmp_path / "sw", overrides=TINY)


def test_sweep_cli(tmp_path):
    from typer.testing import CliRunner

    from grpokit.cli import app

    args = ["sweep", "--workflow", "train", "--out", str(tmp_path / "s"), "--seeds", "2", "--set-grid", "grpo.lr=0.001,0.003"]
    for o in TINY:
        args += ["--set", o]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "0.003" in r.output and (tmp_path / "s" / "sweep.csv").is_file()
    bad = CliRunner().invoke(app, ["sweep", "--workflow", "train", "--out", str(tmp_path / "t"), "--set-grid", "grpo.nope=1"])
    assert bad.exit_code == 2 and "nope" in bad.output


# -- rollouts ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from grpokit.runner import run_training

    out = tmp_path_factory.mktemp("run")
    run_training(load_config(None, TINY), out)
    from grpokit.scale.rollouts import load_run

    return load_run(out)


def test_rollouts_seeded_and_greedy_value_matches_evaluation(trained_run):
    from grpokit.evaluation.values import evaluate_policy
    from grpokit.runner import build_policy
    from grpokit.scale.rollouts import rollout, run_rollouts
    from grpokit.scenarios.registry import scenario_from_config

    config, state = trained_run
    a = run_rollouts(config, state, [0, 1], 500)
    assert a == run_rollouts(config, state, [0, 1], 500)
    assert a[0]["reward_mean"] != a[1]["reward_mean"]
    # greedy rollout's true value = evaluate_policy on the same seeded contexts (independent path)
    cfg = load_config(None, TINY)
    scenario = scenario_from_config(cfg.scenario)
    policy = build_policy(cfg, scenario)
    policy.load_state_dict(state)
    contexts = scenario.sample_contexts(500, torch.Generator().manual_seed(3))
    ref = evaluate_policy(policy, scenario, contexts)
    g = rollout(config, state, 3, 500, mode="greedy")
    assert g["value"] == pytest.approx(ref["value"], abs=1e-12)
    with pytest.raises(ValueError, match="mode"):
        rollout(config, state, 0, 10, mode="argmax")
    with pytest.raises(ValueError, match="n >= 1"):
        rollout(config, state, 0, 0)
