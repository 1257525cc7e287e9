"""The GRPO objective (src/grpokit/grpo/objective.py): REINFORCE gradient at ratio 1, clipping,
the k3 KL estimator and the entropy bonus."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from grpokit.grpo.advantages import grpo_advantages
from grpokit.grpo.objective import grpo_loss, k3_kl
from grpokit.policy.heads import CategoricalHead
from grpokit.policy.network import MLPTorso, Policy

DT = torch.float64


# ============================================================================================
# ratio 1: REINFORCE with the group baseline
# ============================================================================================


def test_gradient_at_ratio_one_is_reinforce_with_group_baseline():
    torch.manual_seed(0)
    B, G, N = 3, 5, 4
    policy = Policy(MLPTorso(3, hidden=(8,)), CategoricalHead(N)).double()
    # a larger output layer than the default 0.01 gain, so that the policy is far from uniform
    with torch.no_grad():
        policy.out.weight.normal_(0.0, 1.0)
    params = [p for p in policy.parameters()]
    obs = torch.randn(B, 3, dtype=DT)
    dec = policy(obs)
    actions, logp = dec.sample(G)
    rewards = torch.randn(B, G, dtype=DT, generator=torch.Generator().manual_seed(1))
    adv = grpo_advantages(rewards, "none")
    loss, metrics = grpo_loss(logp, logp.detach(), adv)
    grads = torch.autograd.grad(loss, params)
    assert metrics["ratio_mean"].item() == pytest.approx(1.0)
    assert metrics["clip_frac"].item() == 0.0

    # independent: an explicit per-sample loop, one forward pass and one autograd.grad per (b, i)
    r = rewards.numpy()
    baseline = r.mean(1)
    expected = [torch.zeros_like(p) for p in params]
    for b in range(B):
        for i in range(G):
            lp = torch.log_softmax(policy.out(policy.torso(obs[b : b + 1])), -1)[0, actions[b, i]]
            g = torch.autograd.grad(lp, params)
            coef = -(r[b, i] - baseline[b]) / (B * G)
            for e, gi in zip(expected, g):
                e += coef * gi
    assert any(e.abs().sum() > 1e-6 for e in expected)
    for got, exp in zip(grads, expected):
        torch.testing.assert_close(got, exp, rtol=1e-9, atol=1e-12)


def test_loss_value_at_ratio_one_is_minus_mean_advantage():
    adv = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]], dtype=DT)
    logp = torch.tensor([[-1.0, -0.5, -2.0], [-0.1, -3.0, -1.5]], dtype=DT, requires_grad=True)
    loss, _ = grpo_loss(logp, logp.detach(), adv)
    assert loss.item() == pytest.approx(-adv.mean().item())
    (grad,) = torch.autograd.grad(loss, logp)
    torch.testing.assert_close(grad, -adv / adv.numel())


# ============================================================================================
# clipping
# ============================================================================================


CLIP_LOW, CLIP_HIGH = 0.2, 0.28  # asymmetric (DAPO's clip-higher), so both sides are distinguishable
# ratio 1.25 is inside [0.8, 1.28] but would be clipped with a symmetric 0.2
RATIOS = [0.5, 0.5, 0.9, 1.0, 1.25, 1.25, 1.5, 1.5, 0.7, 1.1]
ADVS = [1.0, -1.0, -2.0, 0.5, 2.0, -2.0, 1.0, -1.0, -0.5, 3.0]


def _clip_inputs():
    ratio = torch.tensor(RATIOS, dtype=DT).reshape(2, 5)
    adv = torch.tensor(ADVS, dtype=DT).reshape(2, 5)
    logp_old = torch.tensor([[-1.0, -0.3, -2.0, -0.7, -1.1], [-0.2, -0.9, -1.4, -3.0, -0.5]], dtype=DT)
    logp = (logp_old + ratio.log()).requires_grad_(True)
    return ratio, adv, logp, logp_old


def test_clipping_gradient_elementwise():
    _, adv, logp, logp_old = _clip_inputs()
    loss, _ = grpo_loss(logp, logp_old, adv, clip_low=CLIP_LOW, clip_high=CLIP_HIGH)
    (grad,) = torch.autograd.grad(loss, logp)
    n = len(RATIOS)
    expected_grad, expected_terms = [], []
    for rho, a in zip(RATIOS, ADVS):
        clipped_active = (a > 0 and rho > 1 + CLIP_HIGH) or (a < 0 and rho < 1 - CLIP_LOW)
        # d(ρ A)/d logp = ρ A; clipped terms are constant in logp
        expected_grad.append(0.0 if clipped_active else -rho * a / n)
        clipped_rho = min(max(rho, 1 - CLIP_LOW), 1 + CLIP_HIGH)
        expected_terms.append(min(rho * a, clipped_rho * a))
    expected_grad_t = torch.tensor(expected_grad, dtype=DT).reshape(2, 5)
    torch.testing.assert_close(grad, expected_grad_t, rtol=1e-10, atol=1e-14)
    # by hand: the clipped entries are (0.5, −1), (1.5, +1) and (0.7, −0.5): indices 1, 6 and 8
    zero = (grad == 0).flatten().nonzero().flatten().tolist()
    assert zero == [1, 6, 8]
    # the pessimistic side is NOT clipped: ratio 0.5 with A > 0 and 1.5 with A < 0 keep their gradient
    assert grad.flatten()[0] != 0 and grad.flatten()[7] != 0
    assert loss.item() == pytest.approx(-np.mean(expected_terms))


def test_clip_fractions():
    _, adv, logp, logp_old = _clip_inputs()
    _, metrics = grpo_loss(logp, logp_old, adv, clip_low=CLIP_LOW, clip_high=CLIP_HIGH)
    # low: ratio < 0.8 and A < 0 -> (0.5, −1), (0.7, −0.5) = 2 of 10
    # high: ratio > 1.28 and A > 0 -> (1.5, +1) = 1 of 10
    assert metrics["clip_frac_low"].item() == pytest.approx(0.2)
    assert metrics["clip_frac_high"].item() == pytest.approx(0.1)
    assert metrics["clip_frac"].item() == pytest.approx(0.3)
    assert metrics["ratio_mean"].item() == pytest.approx(np.mean(RATIOS))
    # symmetric 0.2: (1.25, +2) is now clipped high too
    _, sym = grpo_loss(logp, logp_old, adv, clip_low=0.2, clip_high=0.2)
    assert sym["clip_frac_high"].item() == pytest.approx(0.2)
    assert sym["clip_frac_low"].item() == pytest.approx(0.2)
    assert all(not v.requires_grad for v in metrics.values())


def test_symmetric_clip_zeroes_the_extra_entry():
    _, adv, logp, logp_old = _clip_inputs()
    loss, _ = grpo_loss(logp, logp_old, adv, clip_low=0.2, clip_high=0.2)
    (grad,) = torch.autograd.grad(loss, logp)
    assert (grad == 0).flatten().nonzero().flatten().tolist() == [1, 4, 6, 8]


# ============================================================================================
# k3 KL
# ============================================================================================


def test_k3_by_hand():
    logp = torch.tensor([-1.0, -0.5, -2.0, -0.3, -4.0], dtype=DT)
    logp_ref = torch.tensor([-1.0, -1.5, -0.5, -0.3, -0.1], dtype=DT)
    q = (logp_ref - logp).numpy()
    expected = np.exp(q) - q - 1
    np.testing.assert_allclose(k3_kl(logp, logp_ref).numpy(), expected, rtol=1e-12, atol=1e-15)
    assert k3_kl(logp, logp_ref)[0].item() == 0.0
    assert k3_kl(logp, logp_ref)[3].item() == 0.0
    # e.g. q = −1: e^{−1} − (−1) − 1 = e^{−1}
    assert k3_kl(logp, logp_ref)[1].item() == pytest.approx(math.exp(-1.0))


def test_k3_nonnegative():
    g = torch.Generator().manual_seed(0)
    logp = torch.randn(1000, dtype=DT, generator=g) * 3
    logp_ref = torch.randn(1000, dtype=DT, generator=g) * 3
    k = k3_kl(logp, logp_ref)
    assert torch.all(k >= 0)
    assert torch.all(k3_kl(logp, logp) == 0)


def test_k3_mean_approximates_exact_categorical_kl():
    p = np.array([0.5, 0.2, 0.2, 0.1])
    q = np.array([0.25, 0.25, 0.3, 0.2])
    exact = float((p * np.log(p / q)).sum())
    g = torch.Generator().manual_seed(1)
    a = torch.multinomial(torch.tensor(p), 200_000, replacement=True, generator=g)
    logp = torch.tensor(np.log(p))[a]
    logp_ref = torch.tensor(np.log(q))[a]
    k = k3_kl(logp, logp_ref)
    se = k.std().item() / math.sqrt(k.numel())
    assert abs(k.mean().item() - exact) < 4 * se
    assert se < 0.01 * exact  # the check above is tight
    # the estimator's expectation under p is exactly KL(p || q) (unbiased): sum it analytically too
    lq = np.log(q / p)
    assert float((p * (np.exp(lq) - lq - 1)).sum()) == pytest.approx(exact, rel=1e-12)


def test_kl_penalty_in_loss():
    _, adv, logp, logp_old = _clip_inputs()
    logp_ref = (logp_old - 0.3).detach()
    base, _ = grpo_loss(logp, logp_old, adv)
    beta = 0.05
    loss, metrics = grpo_loss(logp, logp_old, adv, logp_ref=logp_ref, beta=beta)
    kl = k3_kl(logp, logp_ref).mean()
    assert metrics["kl"].item() == pytest.approx(kl.item())
    assert loss.item() == pytest.approx(base.item() + beta * kl.item())
    # the penalty's gradient: β/N · (1 − exp(q)) with q = logp_ref − logp
    (g_full,) = torch.autograd.grad(loss, logp)
    (g_base,) = torch.autograd.grad(base, logp)
    qv = (logp_ref - logp).detach()
    torch.testing.assert_close(g_full - g_base, beta * (1 - qv.exp()) / qv.numel())
    # beta = 0: logp_ref is ignored and no "kl" metric
    loss0, m0 = grpo_loss(logp, logp_old, adv, logp_ref=logp_ref, beta=0.0)
    assert loss0.item() == pytest.approx(base.item()) and "kl" not in m0


def test_beta_without_reference_raises():
    _, adv, logp, logp_old = _clip_inputs()
    with pytest.raises(ValueError, match="logp_ref"):
        grpo_loss(logp, logp_old, adv, beta=0.1)


# ============================================================================================
# entropy bonus
# ============================================================================================


def test_entropy_bonus_sign():
    _, adv, logp, logp_old = _clip_inputs()
    entropy = torch.tensor([1.3, 0.4], dtype=DT, requires_grad=True)
    base, m_base = grpo_loss(logp, logp_old, adv)
    assert "entropy" not in m_base
    c = 0.01
    loss, metrics = grpo_loss(logp, logp_old, adv, entropy=entropy, ent_coef=c)
    assert metrics["entropy"].item() == pytest.approx(0.85)
    assert loss.item() == pytest.approx(base.item() - c * 0.85)
    assert loss.item() < base.item()
    # minimizing the loss increases entropy
    (g,) = torch.autograd.grad(loss, entropy)
    torch.testing.assert_close(g, torch.full((2,), -c / 2, dtype=DT))
    # ent_coef 0: entropy only reported
    loss0, m0 = grpo_loss(logp, logp_old, adv, entropy=entropy)
    assert loss0.item() == pytest.approx(base.item()) and m0["entropy"].item() == pytest.approx(0.85)
