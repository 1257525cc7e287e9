"""`grpokit fusion run` (GRADE) end to end on tiny budgets: the summary's shape and its errors."""

import json

import pytest
from typer.testing import CliRunner

from grpokit.cli import app
from grpokit.config import load_config
from grpokit.ranking.grade import _variant

runner = CliRunner()
TINY = ["--set", "scenario.name=search", "--set", "fusion.log_requests=120", "--set", "fusion.eval_size=300",
        "--set", "fusion.tune_requests=200", "--set", "fusion.tune_budget=16", "--set", "fusion.pretrain_steps=5",
        "--set", "grpo.steps=4", "--set", "grpo.batch_size=32", "--set", "grpo.eval_size=64",
        "--set", "policy.head_params.concentration=20.0", "--set", "policy.head_params.target_spread=0.08",
        "--set", 'fusion.ablations=["gaussian_softmax", "prior_only", "no_stage1"]', "--set", "fusion.oracle=false",
        "--no-progress"]


def test_fusion_run_summary(tmp_path):
    out = tmp_path / "fusion"
    r = runner.invoke(app, ["fusion", "run", "--out", str(out), *TINY])
    assert r.exit_code == 0, r.output
    s = json.loads((out / "summary.json").read_text())
    names = {"grade", "static_default", "static_tuned", "static_per_segment", "gaussian_softmax", "prior_only", "no_stage1"}
    assert set(s["policies"]) == names
    for block in s["policies"].values():
        assert set(block["true"]) == {"ctr", "cvr", "opm", "gpm"}
        assert set(block["auction"]) == {"ndcg", "gauc"} and 0 <= block["auction"]["ndcg"] <= 1
        assert set(block["per_type"]) == {"price_sensitive", "quality_seeking", "browser", "buyer"}
        assert abs(sum(block["mean_weights"]) - 1) < 1e-4
    assert s["policies"]["static_tuned"]["gpm_vs_static_tuned"] == 0.0
    assert "stage1_ndcg_after" in s["training"]["grade"] and "stage1_ndcg_after" not in s["training"]["no_stage1"]
    assert (out / "report.html").is_file()


def test_fusion_run_selects_the_prior_weight(tmp_path):
    out = tmp_path / "sel"
    r = runner.invoke(app, ["fusion", "run", "--out", str(out), *TINY, "--set", "fusion.prior_weight_grid=[0.0, 1.0]",
                            "--set", "fusion.holdout_requests=300"])
    assert r.exit_code == 0, r.output
    s = json.loads((out / "summary.json").read_text())
    sel = s["prior_weight_selection"]
    assert sel["select"] == "policy" and sel["chosen"] == sel["policy"]["chosen"] == s["reward_weights"]["prior"]
    for block in (sel["static"], sel["policy"]):
        assert block["chosen"] in (0.0, 1.0) and set(block["holdout_score"]) == {"0", "1"}
        best = max(block["holdout_score"].values())
        assert block["holdout_score"][f"{block['chosen']:g}"] == best and block["se_vs_chosen"][f"{block['chosen']:g}"] == 0.0
    assert s["static_tuned_weights"] == sel["static"]["static_weights"][f"{sel['static']['chosen']:g}"]
    # one GRADE per prior weight, the chosen one's curves copied to the run directory
    assert (out / "prior_weight_0" / "metrics.jsonl").is_file() and (out / "prior_weight_1" / "checkpoint.pt").is_file()
    chosen_dir = out / f"prior_weight_{sel['chosen']:g}"
    assert (out / "metrics.jsonl").read_text() == (chosen_dir / "metrics.jsonl").read_text() != ""
    assert "prior weight for GRADE" in r.output and "prior weight for static weights" in r.output
    # static: GRADE uses the static weights' choice
    out2 = tmp_path / "sel_static"
    r = runner.invoke(app, ["fusion", "run", "--out", str(out2), *TINY, "--set", "fusion.prior_weight_grid=[0.0, 1.0]",
                            "--set", "fusion.holdout_requests=300", "--set", "fusion.prior_weight_select=static"])
    assert r.exit_code == 0, r.output
    s2 = json.loads((out2 / "summary.json").read_text())["prior_weight_selection"]
    assert s2["policy"] is None and s2["chosen"] == s2["static"]["chosen"] and not (out2 / "prior_weight_0").exists()
    r = runner.invoke(app, ["fusion", "run", "--out", str(tmp_path / "bad"), *TINY, "--set", "fusion.prior_weight_grid=[-1.0]"])
    assert r.exit_code == 2 and "prior_weight_grid" in r.output


def test_fusion_run_errors(tmp_path):
    r = runner.invoke(app, ["fusion", "run", "--out", str(tmp_path / "x"), "--set", "scenario.name=marketing"])
    assert r.exit_code == 2 and "search" in r.output
    r = runner.invoke(app, ["fusion", "run", "--out", str(tmp_path / "y"), "--set", "scenario.name=search",
                            "--set", 'fusion.ablations=["magic"]'])
    assert r.exit_code == 2 and "fusion.ablations" in r.output


def test_ablation_variants():
    cfg = load_config(None, ["scenario.name=search", "policy.head_params.concentration=20.0",
                             "policy.head_params.target_spread=0.08", "grpo.reward_weights.prior=0.5"])
    post, stage1 = _variant(cfg, "posterior_only")
    assert post.grpo.reward_weights == {"prior": 0.0, "rules": 0.0} and stage1
    prior, _ = _variant(cfg, "prior_only")
    assert prior.grpo.reward_weights == {"prior": 1.0, "posterior": 0.0, "rules": 0.0}  # in GMV units
    fixed, _ = _variant(cfg, "fixed_concentration")
    assert "target_spread" not in fixed.policy.head_params and fixed.policy.head_params["concentration"] == 20.0
    gs, _ = _variant(cfg, "gaussian_softmax")
    assert gs.policy.head == "gaussian_softmax"
    assert _variant(cfg, "no_stage1")[1] is False
    assert cfg.grpo.reward_weights == {"prior": 0.5}  # the base config is not modified
    with pytest.raises(ValueError, match="unknown ablation"):
        _variant(cfg, "magic")
