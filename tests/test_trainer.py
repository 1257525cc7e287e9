"""The trainer: learning to the oracle, exact resume, NaN guard, reward components, devices."""

import json
import math

import pytest
import torch

from grpokit.config import GRPOConfig, config_to_toml, load_config
from grpokit.grpo.trainer import GRPOTrainer, NonFiniteError, resolve_device
from grpokit.policy import CategoricalHead, MLPTorso, Policy
from grpokit.runner import build_trainer, run_training
from grpokit.scenarios import TensorContextSampler

SMALL = ["grpo.batch_size=64", "grpo.eval_size=512", "grpo.eval_every=5", 'grpo.device="cpu"']


def _params(policy):
    return torch.cat([p.detach().flatten() for p in policy.parameters()])


@pytest.mark.parametrize("method", ["grpo", "dr_grpo", "rank", "pgrpo"])
def test_converges_to_oracle_on_small_scenario(method):
    # dense rewards, features that reveal the group: every estimator must find each group's best action
    cfg = load_config(
        None,
        SMALL
        + [
            "grpo.steps=150",
            f'grpo.advantage.name="{method}"',
            "grpo.advantage.min_history=8",
            'scenario.reward="gaussian"',
            "scenario.noise=[0.1, 0.1, 0.1]",
            "scenario.scales=[1.0, 1.0, 1.0]",
            "scenario.shares=[0.5, 0.3, 0.2]",
            "scenario.n_actions=4",
        ],
    )
    summary = build_trainer(cfg).train()
    oracle = summary["oracle"]
    got = summary["policies"][method]
    for g, target in oracle["per_group"].items():
        assert got["per_group"][g] >= 0.97 * target, (g, got["per_group"], oracle["per_group"])
    assert summary["steps_to_90pct"]["overall"] is not None


def test_initial_policy_is_far_from_oracle():
    # guards the convergence test: an untrained policy must not already be at the oracle
    cfg = load_config(None, SMALL + ["grpo.steps=1", 'scenario.reward="gaussian"', "scenario.n_actions=4"])
    trainer = build_trainer(cfg)
    first = trainer.evaluate()
    assert first["value"] < 0.9 * trainer.oracle["value"]


def test_exact_resume(tmp_path):
    overrides = SMALL + ["grpo.steps=20", "grpo.checkpoint_every=10", 'grpo.advantage.name="pgrpo"',
                         "grpo.advantage.min_history=4", "grpo.beta=0.05", "grpo.num_iterations=2"]
    cfg = load_config(None, overrides)
    straight = run_training(cfg, tmp_path / "a")
    trainer_a = build_trainer(cfg, tmp_path / "a")
    trainer_a.resume()

    # interrupted run: 10 steps, then a fresh process-like trainer resumes to 20
    first = build_trainer(cfg, tmp_path / "b")
    first.train(steps=10)
    (tmp_path / "b" / "config.toml").write_text(config_to_toml(cfg))
    first.save_checkpoint()
    # garbage the global RNG as another process would have it
    torch.manual_seed(12345)
    resumed_summary = run_training(cfg, tmp_path / "b", resume=True)
    trainer_b = build_trainer(cfg, tmp_path / "b")
    trainer_b.resume()

    assert trainer_a.step == trainer_b.step == 20
    assert torch.equal(_params(trainer_a.policy), _params(trainer_b.policy))
    est_a, est_b = trainer_a._estimators["total"], trainer_b._estimators["total"]
    assert torch.equal(est_a.mean, est_b.mean) and torch.equal(est_a.m2, est_b.m2)
    assert straight["policies"]["pgrpo"] == resumed_summary["policies"]["pgrpo"]
    rows_a = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    rows_b = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b]
    assert rows_a[-1]["loss"] == rows_b[-1]["loss"]


def test_resume_cuts_metrics_written_after_the_checkpoint(tmp_path):
    cfg = load_config(None, SMALL + ["grpo.steps=12", "grpo.checkpoint_every=5"])
    run_training(cfg, tmp_path)  # checkpoint at step 12 (the end)
    trainer = build_trainer(cfg, tmp_path)
    trainer.train(steps=0)
    # simulate a crash after step 15 without a checkpoint: extra metric rows
    with open(tmp_path / "metrics.jsonl", "a") as f:
        for s in (13, 14, 15):
            f.write(json.dumps({"step": s}) + "\n")
    trainer.resume()
    steps = [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 12


def test_nan_guard_keeps_last_good_checkpoint(tmp_path):
    cfg = load_config(None, SMALL + ["grpo.steps=10", "grpo.checkpoint_every=5"])
    trainer = build_trainer(cfg, tmp_path)
    trainer.train(steps=5)
    trainer.save_checkpoint()
    good = _params(trainer.policy).clone()
    saved = (tmp_path / "checkpoint.pt").read_bytes()

    real_reward = trainer.scenario.reward

    def poisoned(contexts, actions, generator, step=0):
        r = real_reward(contexts, actions, generator, step)
        return r * float("inf")

    trainer.scenario.reward = poisoned
    with pytest.raises((NonFiniteError, ValueError)) as info:
        trainer.train(steps=5)
    assert "inf" in str(info.value) or "nan" in str(info.value)
    assert torch.equal(_params(trainer.policy), good)
    assert (tmp_path / "checkpoint.pt").read_bytes() == saved


def test_nan_guard_on_loss():
    torso = MLPTorso(3, [8])
    policy = Policy(torso, CategoricalHead(3))
    # a reward function that is finite but makes the loss NaN through a NaN weight
    sampler = TensorContextSampler(torch.randn(32, 3))
    trainer = GRPOTrainer(policy, lambda c, a: torch.rand(a.shape), GRPOConfig(steps=3, batch_size=8), context_sampler=sampler)
    with torch.no_grad():
        policy.out.weight[0, 0] = float("nan")
    before = _params(policy).clone()
    with pytest.raises(NonFiniteError, match="step 0: the policy's parameters are not finite"):
        trainer.train_step()
    assert torch.equal(_params(policy).isnan(), before.isnan())
    assert torch.equal(_params(policy).nan_to_num(), before.nan_to_num())


def test_nan_guard_on_gradients():
    policy = Policy(MLPTorso(3, [8]), CategoricalHead(3))
    sampler = TensorContextSampler(torch.randn(32, 3))
    trainer = GRPOTrainer(policy, lambda c, a: torch.rand(a.shape), GRPOConfig(batch_size=8), context_sampler=sampler)
    policy.out.weight.register_hook(lambda g: g * float("nan"))
    before = _params(policy).clone()
    with pytest.raises(NonFiniteError, match="step 0: the gradient norm is nan; the update was not applied"):
        trainer.train_step()
    assert torch.equal(_params(policy), before)


def test_reward_components_are_combined_and_logged():
    sampler = TensorContextSampler(torch.randn(64, 4))
    policy = Policy(MLPTorso(4, [16]), CategoricalHead(3))

    def reward(contexts, actions):
        return {"gain": (actions == 1).float(), "cost": -(actions == 2).float()}

    cfg = GRPOConfig(steps=2, batch_size=16, reward_weights={"gain": 2.0, "cost": 0.5})
    trainer = GRPOTrainer(policy, reward, cfg, context_sampler=sampler)
    m = trainer.train_step()
    assert {"reward/gain", "reward/cost", "reward_mean"} <= set(m)
    # total = 2 * gain + 0.5 * cost: its mean is consistent with the component means
    assert math.isclose(float(m["reward_mean"]), 2 * float(m["reward/gain"]) + 0.5 * float(m["reward/cost"]), rel_tol=1e-5)

    trainer_bad = GRPOTrainer(policy, reward, GRPOConfig(reward_weights={"gian": 1.0}), context_sampler=sampler)
    with pytest.raises(ValueError, match="gian"):
        trainer_bad.train_step()


def test_normalize_then_sum_uses_one_estimator_per_component():
    sampler = TensorContextSampler(torch.randn(64, 4), group=torch.randint(0, 2, (64,)))
    policy = Policy(MLPTorso(4, [16]), CategoricalHead(3))

    def reward(contexts, actions):
        return {"a": (actions == 1).float(), "b": 100.0 * (actions == 2).float()}

    cfg = GRPOConfig(batch_size=16, reward_combine="normalize_then_sum", advantage={"name": "pgrpo", "min_history": 2})
    trainer = GRPOTrainer(policy, reward, cfg, context_sampler=sampler, n_groups=2)
    trainer.train_step()
    assert set(trainer._estimators) == {"a", "b"}
    # each component's history has its own scale
    assert float(trainer._estimators["b"].mean.max()) > 10 * float(trainer._estimators["a"].mean.max())


def test_bad_reward_shape_is_a_clear_error():
    sampler = TensorContextSampler(torch.randn(8, 2))
    policy = Policy(MLPTorso(2, [4]), CategoricalHead(2))
    trainer = GRPOTrainer(policy, lambda c, a: torch.zeros(a.shape[0], a.shape[1] + 1), GRPOConfig(batch_size=4), context_sampler=sampler)
    with pytest.raises(ValueError, match=r"shape \[B, G\]"):
        trainer.train_step()


def test_reward_fn_needs_sampler_and_bad_device():
    policy = Policy(MLPTorso(2, [4]), CategoricalHead(2))
    with pytest.raises(ValueError, match="context_sampler"):
        GRPOTrainer(policy, lambda c, a: a.float(), GRPOConfig())
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_step():
    cfg = load_config(None, ["grpo.batch_size=256", 'grpo.device="cuda"', "grpo.steps=3", 'grpo.advantage.name="pgrpo"'])
    trainer = build_trainer(cfg)
    trainer.train()
    assert next(trainer.policy.parameters()).is_cuda


def test_beta_zero_loads_no_reference():
    cfg = load_config(None, SMALL + ["grpo.beta=0.0"])
    assert build_trainer(cfg).reference is None
    cfg = load_config(None, SMALL + ["grpo.beta=0.1"])
    trainer = build_trainer(cfg)
    assert trainer.reference is not None
    assert not any(p.requires_grad for p in trainer.reference.parameters())
    trainer.train(steps=3)
    assert "kl" in trainer._last_metrics and trainer._last_metrics["kl"] >= 0


def test_budget_multiplier_meets_the_budget():
    # three actions: 0 costs nothing and earns 0.2, 1 costs 1 and earns 1.0, 2 costs 2 and earns 1.3;
    # unconstrained the policy picks 2 (spend 2); a budget of 0.5 per decision must be met by mixing
    sampler = TensorContextSampler(torch.randn(256, 2))
    cost = torch.tensor([0.0, 1.0, 2.0])
    gain = torch.tensor([0.2, 1.0, 1.3])
    policy = Policy(MLPTorso(2, [16]), CategoricalHead(3))
    cfg = GRPOConfig(steps=300, batch_size=128, group_size=8, lr=0.01, budget=0.5, budget_lr=0.2, device="cpu")
    trainer = GRPOTrainer(policy, lambda c, a: {"profit": gain[a]}, cfg, context_sampler=sampler,
                          spend_fn=lambda c, a: cost[a])
    trainer.train()
    with torch.no_grad():
        probs = policy(sampler.contexts.obs).log_probs.exp().mean(0)
    spend = float((probs * cost).sum())
    assert abs(spend - 0.5) < 0.1, (spend, probs)
    assert trainer.budget.value > 0
    assert "budget/lambda" in trainer._last_metrics and "reward/budget_penalty" in trainer._last_metrics
    with pytest.raises(ValueError, match="no spend"):
        GRPOTrainer(policy, lambda c, a: gain[a], GRPOConfig(budget=1.0), context_sampler=sampler)


def test_adaptive_dirichlet_exploration_trains_and_logs():
    cfg = load_config(None, ["scenario.name=allocation", "grpo.steps=15", "grpo.batch_size=64", "grpo.eval_size=128",
                             'grpo.device="cpu"', "policy.head_params.concentration=5.0", "policy.head_params.target_spread=0.1"])
    trainer = build_trainer(cfg)
    trainer.train()
    m = trainer._last_metrics
    assert m["exploration/concentration"] != 5.0 and 0 < m["exploration/spread"] < 0.5
