"""grpo.group_sampling = "cover": every discrete action once per context's group (grpokit.grpo.cover).

Checked against independent references: the exact policy gradient of a tabular softmax bandit
(written out by hand, −Σ_a π_a (r_a − Σ_b π_b r_b) ∇logit, and by finite differences of the expected
reward), the sampled group's Monte-Carlo gradient (same expectation), and a scenario with a known
optimum."""

import pytest
import torch

from grpokit.config import ConfigError, load_config
from grpokit.grpo.advantages import GRPOAdvantage
from grpokit.grpo.cover import cover_actions, cover_advantages, cover_weights
from grpokit.grpo.objective import grpo_loss
from grpokit.runner import build_trainer

R = torch.tensor([[1.0, 0.0, 2.0], [0.5, 3.0, -1.0]], dtype=torch.float64)  # rewards of 2 contexts x 3 actions
THETA = torch.tensor([[0.3, -0.2, 0.1], [-1.0, 0.4, 2.0]], dtype=torch.float64)


def _cover_loss(theta, rewards_of, group_size, floor=0.0, mask=None, gen=None):
    """The covering objective on a tabular softmax policy (the trainer's path, one iteration)."""
    logits = theta if mask is None else theta.masked_fill(~mask, float("-inf"))
    logp_all = torch.log_softmax(logits, -1)
    probs = logp_all.detach().exp()
    torch.manual_seed(0 if gen is None else gen)
    actions = cover_actions(probs, group_size, mask)
    adv, _ = GRPOAdvantage("none")(rewards_of(actions))  # A = r − group mean (Dr. GRPO)
    w = cover_weights(probs, actions, floor)
    a_cov = cover_advantages(adv, actions, w)
    live = w > 0
    logp = torch.where(live, logp_all, torch.zeros_like(probs))
    loss, _ = grpo_loss(logp, logp.detach(), a_cov, weights=w)
    return loss, actions


def _expected_reward(theta, mask=None):
    logits = theta if mask is None else theta.masked_fill(~mask, float("-inf"))
    return (torch.softmax(logits, -1) * R.masked_fill(~mask, 0.0) if mask is not None
            else torch.softmax(logits, -1) * R).sum(-1).mean()


def test_cover_gradient_is_the_exact_policy_gradient():
    theta = THETA.clone().requires_grad_(True)
    loss, actions = _cover_loss(theta, lambda a: R.gather(1, a), group_size=3)
    assert sorted(actions[0].tolist()) == [0, 1, 2] and sorted(actions[1].tolist()) == [0, 1, 2]
    (grad,) = torch.autograd.grad(loss, theta)
    pi = torch.softmax(THETA, -1)
    by_hand = -(pi * (R - (pi * R).sum(-1, keepdim=True))) / 2  # −∂/∂θ mean_b Σ_a π r, B = 2
    assert torch.allclose(grad, by_hand, atol=1e-12), (grad, by_hand)
    eps, fd = 1e-6, torch.zeros_like(THETA)
    for i in range(2):
        for k in range(3):
            up, dn = THETA.clone(), THETA.clone()
            up[i, k] += eps
            dn[i, k] -= eps
            fd[i, k] = -(_expected_reward(up) - _expected_reward(dn)) / (2 * eps)
    assert torch.allclose(grad, fd, atol=1e-8), (grad, fd)


def test_extra_samples_and_noisy_rewards_keep_it_unbiased():
    # G = 5 > K = 3 (two drawn samples per context) and noisy rewards: averaged over many identical
    # contexts, the covering gradient equals the exact one, as the sampled group's gradient does
    n = 40_000
    theta0 = THETA[1]
    pi = torch.softmax(theta0, -1)
    exact = -pi * (R[1] - (pi * R[1]).sum())
    gen = torch.Generator().manual_seed(1)

    def noisy(a):
        return R[1][a] + torch.randn(a.shape, generator=gen, dtype=torch.float64)

    theta = theta0.expand(n, 3).clone().requires_grad_(True)
    loss, actions = _cover_loss(theta, noisy, group_size=5, gen=3)
    assert (actions[:, :3] == torch.arange(3)).all()
    cover = torch.autograd.grad(loss, theta)[0].sum(0)  # loss is a mean over rows: sum = the mean gradient
    # the sampled group (G = 5 draws, REINFORCE with the group-mean baseline), its own estimate
    theta_s = theta0.expand(n, 3).clone().requires_grad_(True)
    logp_all = torch.log_softmax(theta_s, -1)
    torch.manual_seed(4)
    a = torch.multinomial(logp_all.detach().exp(), 5, replacement=True)
    adv, _ = GRPOAdvantage("none")(noisy(a))
    logp = logp_all.gather(1, a)
    loss_s, _ = grpo_loss(logp, logp.detach(), adv * 5 / 4)  # G/(G−1): the leave-one-in mean's bias
    sampled = torch.autograd.grad(loss_s, theta_s)[0].sum(0)
    assert torch.allclose(cover, exact, atol=0.01), (cover, exact)
    assert torch.allclose(sampled, exact, atol=0.03), (sampled, exact)
    assert exact.abs().max() > 0.2  # the gradient is far from 0, so the checks can fail


@pytest.mark.parametrize("floor", [1.0, 0.3])
def test_floor_moves_each_logit_by_its_weighted_advantage(floor):
    theta = THETA.clone().requires_grad_(True)
    loss, _ = _cover_loss(theta, lambda a: R.gather(1, a), group_size=4, floor=floor)
    (grad,) = torch.autograd.grad(loss, theta)
    pi = torch.softmax(THETA, -1)
    w = (1 - floor) * pi + floor / 3
    expected = -w * (R - (w * R).sum(-1, keepdim=True)) / 2  # ∂L/∂logit_k = −w_k A_k, mean over B = 2
    assert torch.allclose(grad, expected, atol=1e-12), (grad, expected)
    if floor == 1.0:  # the natural gradient: each logit by its advantage over the plain mean, / K
        assert torch.allclose(grad, -(R - R.mean(-1, keepdim=True)) / 3 / 2, atol=1e-12)


def test_masked_actions_are_left_out():
    mask = torch.tensor([[True, True, False], [True, True, True]])
    theta = THETA.clone().requires_grad_(True)
    loss, actions = _cover_loss(theta, lambda a: R.gather(1, a), group_size=3, mask=mask)
    assert (actions[0] != 2).all()  # the ineligible column holds a drawn (eligible) action instead
    (grad,) = torch.autograd.grad(loss, theta)
    assert bool(torch.isfinite(grad).all())
    logits = THETA.masked_fill(~mask, float("-inf"))
    pi = torch.softmax(logits, -1)
    r = R.masked_fill(~mask, 0.0)
    by_hand = -(pi * (r - (pi * r).sum(-1, keepdim=True))) / 2
    assert torch.allclose(grad, by_hand, atol=1e-12), (grad, by_hand)


@pytest.mark.parametrize("floor", [0.0, 0.2])
def test_trainer_with_cover_reaches_the_oracle(floor):
    # dense rewards, features that reveal the group: the covering group must find each group's best action
    cfg = load_config(None, ["grpo.batch_size=64", "grpo.eval_size=512", "grpo.eval_every=5", 'grpo.device="cpu"',
                             "grpo.steps=150", "grpo.group_size=4", "grpo.group_sampling=cover", f"grpo.cover_floor={floor}",
                             'scenario.reward="gaussian"', "scenario.noise=[0.1, 0.1, 0.1]",
                             "scenario.scales=[1.0, 1.0, 1.0]", "scenario.shares=[0.5, 0.3, 0.2]",
                             "scenario.n_actions=4"])
    trainer = build_trainer(cfg)
    first = trainer.evaluate()
    summary = trainer.train()
    oracle, got = summary["oracle"], summary["policies"][cfg.grpo.advantage.name]
    assert first["value"] < 0.9 * oracle["value"]  # not there from the start
    for g, target in oracle["per_group"].items():
        assert got["per_group"][g] >= 0.97 * target, (g, got["per_group"], oracle["per_group"])


def test_cover_settings_are_checked():
    with pytest.raises(ConfigError, match="group_sampling"):
        load_config("examples/marketing.toml", ["grpo.group_sampling='all'"])
    with pytest.raises(ConfigError, match="cover_floor"):
        load_config("examples/marketing.toml", ["grpo.cover_floor=1.5"])
    cfg = load_config("examples/marketing.toml", ["grpo.group_size=4", "grpo.group_sampling=cover",
                                                  "grpo.eval_size=64"])  # 5 offers > G = 4
    with pytest.raises(ValueError, match="group_size"):
        build_trainer(cfg).train_step()
    cfg = load_config("examples/allocation.toml", ["grpo.group_sampling=cover", "grpo.eval_size=64"])
    with pytest.raises(ValueError, match="group_sampling"):
        build_trainer(cfg).train_step()


def test_budget_tracks_the_policy_expected_spend_under_cover():
    # with a covering group the G decisions are not draws of π, so λ tracks Σ_a π_old(a) · (mean spend of
    # action a's samples), not the group's mean spend
    import copy

    cfg = load_config("examples/marketing.toml", ["grpo.budget=1.0", "grpo.batch_size=64", "grpo.eval_size=64",
                                                  "grpo.budget_calibration_size=0", "grpo.group_sampling=cover"])
    trainer = build_trainer(cfg)
    for _ in range(3):  # move the policy off uniform first
        trainer.train_step()
    seen = []
    spend_fn = trainer.spend_fn

    def recording(ctx, actions):
        seen.append((ctx, actions.clone()))
        return spend_fn(ctx, actions)

    trainer.spend_fn = recording
    before = copy.deepcopy(trainer.policy)
    metrics = trainer.train_step()
    ctx, actions = seen[0]
    assert (actions[:, :5] == torch.arange(5)).all() and actions.shape == (64, 8)
    with torch.no_grad():
        pi = before(ctx.obs, ctx.group, ctx.mask).log_probs.exp().double()
    s = spend_fn(ctx, actions).double()
    onehot = torch.nn.functional.one_hot(actions, 5).double()
    per_action = (s.unsqueeze(2) * onehot).sum(1) / onehot.sum(1)
    expected = float((pi * per_action).sum(1).mean())
    assert abs(float(metrics["budget/spend"]) - expected) < 1e-5, (float(metrics["budget/spend"]), expected)
    assert abs(float(s.mean()) - expected) > 1e-3  # the plain group mean differs, so the check can fail
