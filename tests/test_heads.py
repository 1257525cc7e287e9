"""Policy heads (src/grpokit/policy/heads.py) and the policy network (network.py).

Every density, entropy and KL is checked against an independent reference: scipy.stats,
hand-written numpy / scipy.special formulas, torch.distributions, a Monte-Carlo estimate, or
(for the logistic-normal head) an explicit change of variables through an autograd Jacobian.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special as sp
import scipy.stats as st
import torch

from grpokit.policy.heads import (
    BetaHead,
    CategoricalHead,
    DirichletHead,
    GaussianSoftmaxHead,
    make_head,
)
from grpokit.policy.network import MLPTorso, Policy

DT = torch.float64


def _raw(b: int, d: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(b, d, generator=g, dtype=DT)).requires_grad_(True)


def _softplus_np(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


# ============================================================================================
# Categorical
# ============================================================================================


def _log_softmax_np(x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    x = x.copy()
    if mask is not None:
        x[~mask] = -np.inf
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


class TestCategorical:
    B, N, G = 4, 5, 7

    def test_shapes(self):
        torch.manual_seed(0)
        head = CategoricalHead(self.N)
        assert head.param_dim == self.N and head.event_shape == ()
        dec = head(_raw(self.B, self.N, 1))
        actions, lp = dec.sample(self.G)
        assert actions.shape == (self.B, self.G)
        assert actions.dtype == torch.long
        assert lp.shape == (self.B, self.G)
        assert dec.log_prob(actions).shape == (self.B, self.G)
        assert dec.entropy().shape == (self.B,)
        assert dec.mode().shape == (self.B,)
        assert dec.kl(head(_raw(self.B, self.N, 2))).shape == (self.B,)
        assert ((actions >= 0) & (actions < self.N)).all()

    def test_log_prob_entropy_against_numpy(self):
        raw = _raw(self.B, self.N, 3, scale=2.0)
        dec = CategoricalHead(self.N)(raw)
        ref_lp = _log_softmax_np(raw.detach().numpy())
        actions = torch.tensor([[0, 1, 2, 3, 4, 0, 2]] * self.B)
        expected = np.take_along_axis(ref_lp, actions.numpy(), axis=1)
        np.testing.assert_allclose(dec.log_prob(actions).detach().numpy(), expected, rtol=1e-12, atol=1e-12)
        p = np.exp(ref_lp)
        np.testing.assert_allclose(dec.entropy().detach().numpy(), -(p * ref_lp).sum(-1), rtol=1e-12)
        np.testing.assert_allclose(dec.entropy().detach().numpy(), st.entropy(p, axis=-1), rtol=1e-10)

    def test_kl_against_torch(self):
        head = CategoricalHead(self.N)
        r1, r2 = _raw(self.B, self.N, 4, 2.0), _raw(self.B, self.N, 5, 2.0)
        d1, d2 = head(r1), head(r2)
        ref = torch.distributions.kl_divergence(
            torch.distributions.Categorical(logits=r1), torch.distributions.Categorical(logits=r2)
        )
        torch.testing.assert_close(d1.kl(d2), ref, rtol=1e-10, atol=1e-12)
        assert torch.all(d1.kl(d1).abs() < 1e-12)
        assert torch.all(d1.kl(d2) > 0)

    def test_sample_log_prob_matches_log_prob_and_has_grad(self):
        torch.manual_seed(6)
        raw = _raw(self.B, self.N, 6)
        dec = CategoricalHead(self.N)(raw)
        actions, lp = dec.sample(self.G)
        torch.testing.assert_close(lp, dec.log_prob(actions))
        assert lp.requires_grad and not actions.requires_grad
        lp.sum().backward()
        assert raw.grad is not None and torch.isfinite(raw.grad).all() and raw.grad.abs().sum() > 0

    def test_mode_is_argmax(self):
        raw = torch.tensor([[0.1, 3.0, -1.0], [5.0, 0.0, 4.9], [-2.0, -3.0, -1.5]], dtype=DT)
        dec = CategoricalHead(3)(raw)
        assert dec.mode().tolist() == [1, 0, 2]
        # with a mask the argmax runs over eligible actions only
        mask = torch.tensor([[True, False, True], [False, True, True], [True, True, True]])
        assert CategoricalHead(3)(raw, mask).mode().tolist() == [0, 2, 2]

    def test_mask_never_sampled_zero_probability(self):
        torch.manual_seed(7)
        raw = _raw(3, 5, 7, scale=3.0)
        mask = torch.tensor(
            [[True, False, True, False, True], [False, False, False, False, True], [True, True, True, True, False]]
        )
        dec = CategoricalHead(5)(raw, mask)
        actions, lp = dec.sample(4000)
        eligible = mask.gather(1, actions)
        assert eligible.all(), "a masked action was sampled"
        assert torch.isfinite(lp).all()
        # row 1 has a single eligible action: it is always chosen with probability 1
        assert (actions[1] == 4).all()
        torch.testing.assert_close(lp[1], torch.zeros(4000, dtype=DT))
        # masked actions have probability exactly 0
        all_actions = torch.arange(5).expand(3, 5)
        probs = dec.log_prob(all_actions).exp()
        assert torch.all(probs[~mask] == 0)
        torch.testing.assert_close(probs.sum(-1), torch.ones(3, dtype=DT))
        # the eligible probabilities are the softmax restricted to the eligible actions
        ref = np.exp(_log_softmax_np(raw.detach().numpy(), mask.numpy()))
        np.testing.assert_allclose(probs.detach().numpy(), ref, rtol=1e-12, atol=1e-15)
        # every eligible action of row 0 (3 of them, all with decent mass) gets sampled
        assert set(actions[0].tolist()) == {0, 2, 4}

    def test_masked_entropy_and_kl_are_finite_and_correct(self):
        raw1, raw2 = _raw(2, 4, 8, 2.0), _raw(2, 4, 9, 2.0)
        mask = torch.tensor([[True, False, True, True], [False, True, False, True]])
        d1, d2 = CategoricalHead(4)(raw1, mask), CategoricalHead(4)(raw2, mask)
        lp1 = _log_softmax_np(raw1.detach().numpy(), mask.numpy())
        lp2 = _log_softmax_np(raw2.detach().numpy(), mask.numpy())
        p1 = np.exp(lp1)
        m = mask.numpy()
        ent = np.array([-(p1[b, m[b]] * lp1[b, m[b]]).sum() for b in range(2)])
        kl = np.array([(p1[b, m[b]] * (lp1[b, m[b]] - lp2[b, m[b]])).sum() for b in range(2)])
        np.testing.assert_allclose(d1.entropy().detach().numpy(), ent, rtol=1e-12)
        np.testing.assert_allclose(d1.kl(d2).detach().numpy(), kl, rtol=1e-10, atol=1e-14)
        assert torch.isfinite(d1.entropy()).all() and torch.isfinite(d1.kl(d2)).all()
        # KL to a distribution that excludes an action self can take is +inf
        narrower = CategoricalHead(4)(raw2, torch.tensor([[True, False, False, True], [False, True, False, True]]))
        kl_inf = d1.kl(narrower)
        assert math.isinf(kl_inf[0].item()) and kl_inf[0].item() > 0
        np.testing.assert_allclose(kl_inf[1].item(), kl[1], rtol=1e-10)

    def test_mask_row_without_eligible_action_raises(self):
        raw = _raw(3, 4, 10)
        mask = torch.ones(3, 4, dtype=torch.bool)
        mask[2] = False
        with pytest.raises(ValueError, match="row 2"):
            CategoricalHead(4)(raw, mask)

    def test_mask_wrong_shape_raises(self):
        with pytest.raises(ValueError, match="shape"):
            CategoricalHead(4)(_raw(3, 4, 11), torch.ones(3, 3, dtype=torch.bool))

    def test_bad_n_actions(self):
        for n in (1, 0, -3):
            with pytest.raises(ValueError, match="n_actions"):
                CategoricalHead(n)
        CategoricalHead(2)  # the smallest legal head


# ============================================================================================
# Dirichlet
# ============================================================================================


def _dirichlet_kl_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a0, b0 = a.sum(-1), b.sum(-1)
    return (
        sp.gammaln(a0)
        - sp.gammaln(a).sum(-1)
        - sp.gammaln(b0)
        + sp.gammaln(b).sum(-1)
        + ((a - b) * (sp.digamma(a) - sp.digamma(a0)[..., None])).sum(-1)
    )


class TestDirichlet:
    B, K, G = 3, 4, 6

    def test_shapes(self):
        torch.manual_seed(0)
        head = DirichletHead(self.K)
        assert head.param_dim == self.K and head.event_shape == (self.K,)
        dec = head(_raw(self.B, self.K, 1))
        w, lp = dec.sample(self.G)
        assert w.shape == (self.B, self.G, self.K)
        assert lp.shape == (self.B, self.G)
        assert dec.log_prob(w).shape == (self.B, self.G)
        assert dec.entropy().shape == (self.B,)
        assert dec.mode().shape == (self.B, self.K)
        assert dec.kl(head(_raw(self.B, self.K, 2))).shape == (self.B,)
        assert (w > 0).all()
        torch.testing.assert_close(w.sum(-1), torch.ones(self.B, self.G, dtype=DT))

    def test_concentration_is_softplus_plus_floor(self):
        raw = _raw(self.B, self.K, 3)
        dec = DirichletHead(self.K, floor=0.25)(raw)
        alpha = _softplus_np(raw.detach().numpy()) + 0.25
        np.testing.assert_allclose(dec.concentration.detach().numpy(), alpha, rtol=1e-12)

    def test_log_prob_entropy_against_scipy(self):
        torch.manual_seed(4)
        raw = _raw(self.B, self.K, 4, scale=1.5)
        dec = DirichletHead(self.K, floor=0.1)(raw)
        alpha = dec.concentration.detach().numpy()
        w, lp = dec.sample(self.G)
        w_np = w.numpy()
        for b in range(self.B):
            for i in range(self.G):
                x = w_np[b, i] / w_np[b, i].sum()
                assert lp[b, i].item() == pytest.approx(st.dirichlet.logpdf(x, alpha[b]), rel=1e-8, abs=1e-8)
            assert dec.entropy()[b].item() == pytest.approx(st.dirichlet.entropy(alpha[b]), rel=1e-10, abs=1e-12)
        torch.testing.assert_close(lp, dec.log_prob(w))
        assert lp.requires_grad and not w.requires_grad

    def test_log_prob_at_fixed_points(self):
        # a point given by hand, checked against the closed-form density Σ(α−1) log w − log B(α)
        alpha = np.array([[0.7, 2.0, 3.5]])
        raw = torch.tensor(np.log(np.expm1(alpha - 1e-3)), dtype=DT)  # inverse softplus, floor 1e-3
        dec = DirichletHead(3)(raw)
        np.testing.assert_allclose(dec.concentration.numpy(), alpha, rtol=1e-10)
        w = torch.tensor([[[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]]], dtype=DT)
        logB = sp.gammaln(alpha).sum() - sp.gammaln(alpha.sum())
        expected = ((alpha - 1) * np.log(w.numpy()[0])).sum(-1) - logB
        np.testing.assert_allclose(dec.log_prob(w).numpy()[0], expected, rtol=1e-10)

    def test_kl_closed_form_and_monte_carlo(self):
        torch.manual_seed(5)
        head = DirichletHead(self.K, floor=0.5)
        d1, d2 = head(_raw(self.B, self.K, 5)), head(_raw(self.B, self.K, 6))
        a1, a2 = d1.concentration.detach().numpy(), d2.concentration.detach().numpy()
        kl = d1.kl(d2).detach()
        np.testing.assert_allclose(kl.numpy(), _dirichlet_kl_np(a1, a2), rtol=1e-8)
        # Monte-Carlo: mean of log p1 − log p2 under samples of p1
        w, lp1 = d1.sample(20000)
        mc = (lp1 - d2.log_prob(w)).detach()
        se = mc.std(1) / math.sqrt(mc.shape[1])
        assert torch.all((mc.mean(1) - kl).abs() < 5 * se + 1e-3), (mc.mean(1), kl)
        assert torch.all(d1.kl(d1).abs() < 1e-10)

    def test_mode_is_mean(self):
        raw = _raw(self.B, self.K, 7)
        dec = DirichletHead(self.K, floor=0.2)(raw)
        alpha = _softplus_np(raw.detach().numpy()) + 0.2
        np.testing.assert_allclose(dec.mode().detach().numpy(), alpha / alpha.sum(-1, keepdims=True), rtol=1e-12)

    def test_empirical_mean_and_variance(self):
        torch.manual_seed(8)
        c = 5.0
        head = DirichletHead(self.K, concentration=c)
        dec = head(_raw(2, self.K, 8))
        w, _ = dec.sample(40000)
        m = dec.mode().detach()
        torch.testing.assert_close(w.mean(1), m, atol=5e-3, rtol=0)
        # Var(w_k) = m_k (1 − m_k) / (c + 1) (the docstring's exploration knob)
        torch.testing.assert_close(w.var(1), m * (1 - m) / (c + 1), atol=2e-3, rtol=0.05)

    def test_fixed_total_concentration_rescaling(self):
        raw = _raw(self.B, self.K, 9, scale=2.0)
        free = DirichletHead(self.K, floor=0.01)(raw)
        fixed = DirichletHead(self.K, floor=0.01, concentration=7.5)(raw)
        torch.testing.assert_close(fixed.concentration.sum(-1), torch.full((self.B,), 7.5, dtype=DT))
        # the rescaling keeps the mean: α · c / Σα
        alpha = _softplus_np(raw.detach().numpy()) + 0.01
        np.testing.assert_allclose(
            fixed.concentration.detach().numpy(), alpha * 7.5 / alpha.sum(-1, keepdims=True), rtol=1e-12
        )
        torch.testing.assert_close(fixed.mode(), free.mode())
        # learned c: no rescaling
        np.testing.assert_allclose(free.concentration.detach().numpy(), alpha, rtol=1e-12)
        # gradients still flow through the rescaled α (to the mean direction)
        fixed.mode()[:, 0].sum().backward()
        assert raw.grad is not None and raw.grad.abs().sum() > 0

    def test_set_concentration(self):
        head = DirichletHead(3, concentration=2.0)
        head.set_concentration(11.0)
        assert head.total_concentration.item() == 11.0
        out = head(_raw(2, 3, 10))
        torch.testing.assert_close(out.concentration.sum(-1), torch.full((2,), 11.0, dtype=DT))
        for bad in (0.0, -1.0, float("inf"), float("nan")):
            with pytest.raises(ValueError, match="concentration"):
                head.set_concentration(bad)
        assert head.total_concentration.item() == 11.0
        # a learned-c head can be switched to a fixed c
        learned = DirichletHead(3)
        assert torch.isnan(learned.total_concentration)
        learned.set_concentration(4.0)
        torch.testing.assert_close(learned(_raw(2, 3, 11)).concentration.sum(-1), torch.full((2,), 4.0, dtype=DT))

    def test_anneal_schedule_is_geometric(self):
        c0, c1, steps = 2.0, 50.0, 100
        head = DirichletHead(3, concentration=c0, concentration_final=c1, anneal_steps=steps)
        assert head.total_concentration.item() == pytest.approx(c0)
        expected = {0: c0, 25: c0 * (c1 / c0) ** 0.25, 50: math.sqrt(c0 * c1), 100: c1, 500: c1}
        for step, c in expected.items():
            head.step_schedule(step)
            assert head.total_concentration.item() == pytest.approx(c, rel=1e-6), step
        # geometric: equal ratios per equal step
        vals = []
        for step in (10, 20, 30):
            head.step_schedule(step)
            vals.append(head.total_concentration.item())
        assert vals[1] / vals[0] == pytest.approx(vals[2] / vals[1], rel=1e-6)
        # and the forward pass uses the scheduled value
        head.step_schedule(50)
        torch.testing.assert_close(
            head(_raw(2, 3, 12)).concentration.sum(-1), torch.full((2,), math.sqrt(c0 * c1), dtype=DT)
        )

    def test_schedule_noop_without_final(self):
        head = DirichletHead(3, concentration=3.0)
        head.step_schedule(1000)
        assert head.total_concentration.item() == 3.0
        learned = DirichletHead(3)
        learned.step_schedule(1000)
        assert torch.isnan(learned.total_concentration)

    def test_bad_args(self):
        with pytest.raises(ValueError, match="n_components"):
            DirichletHead(1)
        for floor in (0.0, -0.1):
            with pytest.raises(ValueError, match="floor"):
                DirichletHead(3, floor=floor)
        for c in (0.0, -2.0):
            with pytest.raises(ValueError, match="concentration"):
                DirichletHead(3, concentration=c)
        with pytest.raises(ValueError, match="starting concentration"):
            DirichletHead(3, concentration_final=5.0)

    @pytest.mark.parametrize("final", [0.0, -4.0])
    def test_bad_concentration_final_rejected_at_construction(self, final):
        with pytest.raises(ValueError, match="concentration_final"):
            DirichletHead(3, concentration=2.0, concentration_final=final, anneal_steps=10)


# ============================================================================================
# Beta on [low, high]
# ============================================================================================


def _beta_kl_np(a1, b1, a2, b2):
    return (
        sp.betaln(a2, b2)
        - sp.betaln(a1, b1)
        + (a1 - a2) * sp.digamma(a1)
        + (b1 - b2) * sp.digamma(b1)
        + (a2 - a1 + b2 - b1) * sp.digamma(a1 + b1)
    )


class TestBeta:
    B, G = 4, 6
    LOW, HIGH = 0.5, 2.5

    def head(self, floor: float = 1.0) -> BetaHead:
        return BetaHead(self.LOW, self.HIGH, floor=floor)

    def test_shapes(self):
        torch.manual_seed(0)
        head = self.head()
        assert head.param_dim == 2 and head.event_shape == ()
        dec = head(_raw(self.B, 2, 1))
        y, lp = dec.sample(self.G)
        assert y.shape == (self.B, self.G) and lp.shape == (self.B, self.G)
        assert dec.log_prob(y).shape == (self.B, self.G)
        assert dec.entropy().shape == (self.B,)
        assert dec.mode().shape == (self.B,)
        assert dec.kl(head(_raw(self.B, 2, 2))).shape == (self.B,)
        assert ((y > self.LOW) & (y < self.HIGH)).all()

    def test_params_are_softplus_plus_floor(self):
        raw = _raw(self.B, 2, 3)
        dec = self.head(floor=0.3)(raw)
        ab = _softplus_np(raw.detach().numpy()) + 0.3
        np.testing.assert_allclose(dec.a.detach().numpy(), ab[:, 0], rtol=1e-12)
        np.testing.assert_allclose(dec.b.detach().numpy(), ab[:, 1], rtol=1e-12)

    def test_log_prob_entropy_against_scipy(self):
        torch.manual_seed(4)
        dec = self.head(floor=0.5)(_raw(self.B, 2, 4, scale=1.5))
        a, b = dec.a.detach().numpy(), dec.b.detach().numpy()
        y, lp = dec.sample(self.G)
        scale = self.HIGH - self.LOW
        expected = st.beta.logpdf(y.numpy(), a[:, None], b[:, None], loc=self.LOW, scale=scale)
        np.testing.assert_allclose(lp.detach().numpy(), expected, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(
            dec.entropy().detach().numpy(), st.beta.entropy(a, b, loc=self.LOW, scale=scale), rtol=1e-8, atol=1e-12
        )
        # a hand-picked grid of actions too
        grid = torch.tensor([[0.6, 1.0, 1.5, 2.0, 2.4]] * self.B, dtype=DT)
        expected = st.beta.logpdf(grid.numpy(), a[:, None], b[:, None], loc=self.LOW, scale=scale)
        np.testing.assert_allclose(dec.log_prob(grid).detach().numpy(), expected, rtol=1e-8)
        torch.testing.assert_close(lp, dec.log_prob(y))
        assert lp.requires_grad and not y.requires_grad

    def test_kl_closed_form_and_monte_carlo(self):
        torch.manual_seed(5)
        head = self.head()
        d1, d2 = head(_raw(self.B, 2, 5)), head(_raw(self.B, 2, 6))
        a1, b1 = d1.a.detach().numpy(), d1.b.detach().numpy()
        a2, b2 = d2.a.detach().numpy(), d2.b.detach().numpy()
        kl = d1.kl(d2).detach()
        np.testing.assert_allclose(kl.numpy(), _beta_kl_np(a1, b1, a2, b2), rtol=1e-8)
        ref = torch.distributions.kl_divergence(
            torch.distributions.Beta(d1.a, d1.b), torch.distributions.Beta(d2.a, d2.b)
        )
        torch.testing.assert_close(kl, ref.detach())
        # Monte-Carlo on [low, high] with scipy densities (the KL is invariant to the affine map)
        y, _ = d1.sample(20000)
        s = self.HIGH - self.LOW
        yn = y.numpy()
        diff = st.beta.logpdf(yn, a1[:, None], b1[:, None], loc=self.LOW, scale=s) - st.beta.logpdf(
            yn, a2[:, None], b2[:, None], loc=self.LOW, scale=s
        )
        se = diff.std(1) / math.sqrt(diff.shape[1])
        assert np.all(np.abs(diff.mean(1) - kl.numpy()) < 5 * se + 1e-3)

    def test_mode_is_mean_and_empirical_mean(self):
        torch.manual_seed(6)
        raw = _raw(3, 2, 6, scale=2.0)
        dec = self.head()(raw)
        ab = _softplus_np(raw.detach().numpy()) + 1.0
        mean = self.LOW + (self.HIGH - self.LOW) * ab[:, 0] / ab.sum(-1)
        np.testing.assert_allclose(dec.mode().detach().numpy(), mean, rtol=1e-12)
        np.testing.assert_allclose(
            dec.mode().detach().numpy(), st.beta.mean(ab[:, 0], ab[:, 1], loc=self.LOW, scale=2.0), rtol=1e-12
        )
        y, _ = dec.sample(40000)
        np.testing.assert_allclose(y.mean(1).numpy(), mean, atol=0.01)

    def test_bad_args(self):
        for low, high in ((1.0, 1.0), (2.0, 1.0), (0.0, float("inf")), (float("-inf"), 0.0), (float("nan"), 1.0)):
            with pytest.raises(ValueError, match="low"):
                BetaHead(low, high)
        for floor in (0.0, -1.0):
            with pytest.raises(ValueError, match="floor"):
                BetaHead(0.0, 1.0, floor=floor)


# ============================================================================================
# Gaussian-softmax (additive logistic normal)
# ============================================================================================


def _to_simplex(z: torch.Tensor) -> torch.Tensor:
    """w = softmax([z, 0]) written out independently: w_k = e^{z_k} / (1 + Σ e^{z_j}), w_K = 1 / (...)."""
    e = torch.exp(z)
    denom = 1 + e.sum(-1, keepdim=True)
    return torch.cat([e / denom, 1 / denom], dim=-1)


class TestGaussianSoftmax:
    B, K, G = 3, 4, 5

    def test_shapes(self):
        torch.manual_seed(0)
        head = GaussianSoftmaxHead(self.K).double()
        assert head.param_dim == self.K - 1 and head.event_shape == (self.K,)
        dec = head(_raw(self.B, self.K - 1, 1))
        w, lp = dec.sample(self.G)
        assert w.shape == (self.B, self.G, self.K) and lp.shape == (self.B, self.G)
        assert dec.log_prob(w).shape == (self.B, self.G)
        assert dec.entropy().shape == (self.B,)
        assert dec.mode().shape == (self.B, self.K)
        assert dec.kl(head(_raw(self.B, self.K - 1, 2))).shape == (self.B,)
        assert (w > 0).all()
        torch.testing.assert_close(w.sum(-1), torch.ones(self.B, self.G, dtype=DT))

    def _decision(self, seed: int, init_std: float = 0.7):
        head = GaussianSoftmaxHead(self.K, init_std=init_std).double()
        with torch.no_grad():
            head.log_std.copy_(torch.tensor([math.log(0.5), math.log(0.9), math.log(1.3)], dtype=DT))
        return head, head(_raw(self.B, self.K - 1, seed))

    def test_log_prob_change_of_variables(self):
        """log p(w) = log N(z; μ, σ²) − log|det ∂w_{1..K−1}/∂z| with the Jacobian from autograd."""
        torch.manual_seed(3)
        _, dec = self._decision(3)
        mu = dec.mean.detach().numpy()
        sd = dec.log_std.exp().detach().numpy()
        z_all = torch.randn(self.B, self.G, self.K - 1, dtype=DT) * 1.5
        w = _to_simplex(z_all)
        got = dec.log_prob(w).detach()
        for b in range(self.B):
            for i in range(self.G):
                z = z_all[b, i]
                jac = torch.autograd.functional.jacobian(lambda v: _to_simplex(v)[: self.K - 1], z)
                assert jac.shape == (self.K - 1, self.K - 1)
                _, logdet = torch.linalg.slogdet(jac)
                log_gauss = st.norm.logpdf(z.numpy(), loc=mu[b], scale=sd[b]).sum()
                assert got[b, i].item() == pytest.approx(log_gauss - logdet.item(), rel=1e-8, abs=1e-8)

    def test_sample_log_prob_consistent(self):
        torch.manual_seed(4)
        _, dec = self._decision(4)
        w, lp = dec.sample(self.G)
        torch.testing.assert_close(lp, dec.log_prob(w))
        assert lp.requires_grad and not w.requires_grad
        # the samples are softmax([z, 0]) of Gaussian z: recovering z and standardising gives N(0, 1)
        torch.manual_seed(5)
        w, _ = dec.sample(20000)
        z = torch.log(w[..., :-1] / w[..., -1:])
        zs = (z - dec.mean.detach().unsqueeze(1)) / dec.std.detach().unsqueeze(1)
        torch.testing.assert_close(zs.mean(1), torch.zeros(self.B, self.K - 1, dtype=DT), atol=0.03, rtol=0)
        torch.testing.assert_close(zs.std(1), torch.ones(self.B, self.K - 1, dtype=DT), atol=0.03, rtol=0)

    def test_entropy_is_gaussian_entropy(self):
        _, dec = self._decision(6)
        sd = dec.log_std.exp().detach().numpy()
        expected = st.norm.entropy(scale=sd).sum(-1)
        np.testing.assert_allclose(dec.entropy().detach().numpy(), expected, rtol=1e-12)

    def test_kl_against_torch_and_monte_carlo(self):
        torch.manual_seed(7)
        head, d1 = self._decision(7)
        d2 = head(_raw(self.B, self.K - 1, 8))
        with torch.no_grad():
            d2 = type(d2)(d2.mean, d2.log_std + torch.tensor([0.3, -0.2, 0.1], dtype=DT))
        n1 = torch.distributions.Independent(torch.distributions.Normal(d1.mean, d1.std), 1)
        n2 = torch.distributions.Independent(torch.distributions.Normal(d2.mean, d2.std), 1)
        kl = d1.kl(d2).detach()
        torch.testing.assert_close(kl, torch.distributions.kl_divergence(n1, n2).detach())
        # Monte-Carlo with simplex densities: the Jacobian terms cancel
        w, lp1 = d1.sample(20000)
        diff = (lp1 - d2.log_prob(w)).detach()
        se = diff.std(1) / math.sqrt(diff.shape[1])
        assert torch.all((diff.mean(1) - kl).abs() < 5 * se + 1e-3)
        assert torch.all(d1.kl(d1).abs() < 1e-12)

    def test_mode(self):
        raw = torch.tensor([[0.0, 0.0, 0.0], [1.0, -2.0, 0.5]], dtype=DT)
        dec = GaussianSoftmaxHead(4).double()(raw)
        torch.testing.assert_close(dec.mode()[0], torch.full((4,), 0.25, dtype=DT))
        e = np.exp([1.0, -2.0, 0.5, 0.0])
        np.testing.assert_allclose(dec.mode()[1].detach().numpy(), e / e.sum(), rtol=1e-12)

    def test_log_std_is_clamped_and_initialised(self):
        head = GaussianSoftmaxHead(3, init_std=0.5, log_std_min=-1.0, log_std_max=0.5).double()
        torch.testing.assert_close(head.log_std.detach(), torch.full((2,), math.log(0.5), dtype=DT))
        with torch.no_grad():
            head.log_std.copy_(torch.tensor([-3.0, 4.0], dtype=DT))
        dec = head(_raw(2, 2, 9))
        torch.testing.assert_close(dec.log_std, torch.tensor([[-1.0, 0.5], [-1.0, 0.5]], dtype=DT))

    def test_bad_args(self):
        with pytest.raises(ValueError, match="n_components"):
            GaussianSoftmaxHead(1)
        for s in (0.0, -1.0):
            with pytest.raises(ValueError, match="init_std"):
                GaussianSoftmaxHead(3, init_std=s)


# ============================================================================================
# make_head
# ============================================================================================


def test_make_head():
    assert isinstance(make_head("categorical", n_actions=3), CategoricalHead)
    d = make_head("dirichlet", n_components=4, concentration=2.0)
    assert isinstance(d, DirichletHead) and d.total_concentration.item() == 2.0
    b = make_head("beta", low=1.0, high=3.0)
    assert isinstance(b, BetaHead) and (b.low, b.high) == (1.0, 3.0)
    assert isinstance(make_head("gaussian_softmax", n_components=3), GaussianSoftmaxHead)
    with pytest.raises(ValueError, match="unknown policy head 'gauss'"):
        make_head("gauss", n_components=3)


# ============================================================================================
# Policy / MLPTorso
# ============================================================================================


class TestPolicy:
    def test_forward_shapes_and_near_uniform_start(self):
        torch.manual_seed(0)
        pol = Policy(MLPTorso(5, hidden=(16, 16)), CategoricalHead(4))
        obs = torch.randn(6, 5)
        dec = pol(obs)
        actions, lp = dec.sample(3)
        assert actions.shape == (6, 3) and lp.shape == (6, 3)
        # output layer initialised with gain 0.01: close to the uniform policy
        probs = dec.log_probs.exp()
        assert torch.allclose(probs, torch.full_like(probs, 0.25), atol=0.02)
        act = pol.act(obs)
        assert act.shape == (6,) and not act.requires_grad

    def test_policy_with_simplex_head(self):
        torch.manual_seed(1)
        pol = Policy(MLPTorso(3, hidden=(8,)), DirichletHead(4, concentration=10.0))
        obs = torch.randn(2, 3)
        w, lp = pol(obs).sample(5)
        assert w.shape == (2, 5, 4) and lp.shape == (2, 5)
        torch.testing.assert_close(pol(obs).concentration.sum(-1), torch.full((2,), 10.0))
        assert pol.act(obs).shape == (2, 4)

    def test_mask_passed_through(self):
        torch.manual_seed(2)
        pol = Policy(MLPTorso(3, hidden=(8,)), CategoricalHead(3))
        mask = torch.tensor([[False, True, False], [True, True, False]])
        assert pol.act(torch.randn(2, 3), mask=mask)[0].item() == 1
        a, _ = pol(torch.randn(2, 3), mask=mask).sample(200)
        assert mask.gather(1, a).all()

    def test_wrong_obs_shape_raises(self):
        torso = MLPTorso(5, hidden=(8,))
        pol = Policy(torso, CategoricalHead(3))
        for bad in (torch.randn(5), torch.randn(2, 4), torch.randn(2, 6), torch.randn(2, 5, 1)):
            with pytest.raises(ValueError, match="obs must have shape"):
                pol(bad)
            with pytest.raises(ValueError, match="obs must have shape"):
                torso(bad)

    def test_group_embedding_requires_group_ids(self):
        torch.manual_seed(3)
        pol = Policy(MLPTorso(2, hidden=(8,), n_groups=3, group_embedding_dim=4), CategoricalHead(3))
        obs = torch.randn(4, 2)
        with pytest.raises(ValueError, match="group"):
            pol(obs)
        group = torch.tensor([0, 1, 2, 1])
        lp = pol(obs, group).log_probs
        assert lp.shape == (4, 3)
        # the embedding is used: the same obs with different group ids gives different features
        same_obs = obs[:1].expand(3, 2)
        h = pol.torso(same_obs, torch.tensor([0, 1, 2]))
        assert not torch.allclose(h[0], h[1]) and not torch.allclose(h[1], h[2])

    def test_embedding_only_policy(self):
        pol = Policy(MLPTorso(0, hidden=(8,), n_groups=2, group_embedding_dim=3), CategoricalHead(2))
        assert pol(torch.zeros(2, 0), torch.tensor([0, 1])).log_probs.shape == (2, 2)

    def test_bad_torso_args(self):
        with pytest.raises(ValueError, match="obs_dim"):
            MLPTorso(-1)
        with pytest.raises(ValueError, match="activation"):
            MLPTorso(3, activation="sigmoid")
        with pytest.raises(ValueError, match="n_groups"):
            MLPTorso(3, n_groups=0, group_embedding_dim=4)
        with pytest.raises(ValueError, match="sees nothing"):
            MLPTorso(0)

    def test_activations_and_out_dim(self):
        for act in ("tanh", "relu", "gelu", "silu"):
            t = MLPTorso(3, hidden=(7, 5), activation=act)
            assert t.out_dim == 5
            assert t(torch.randn(2, 3)).shape == (2, 5)
        assert MLPTorso(3, hidden=()).out_dim == 3


class TestAdaptiveConcentration:
    def test_spread_is_steered_to_the_target(self):
        torch.manual_seed(0)
        head = DirichletHead(3, concentration=2.0, target_spread=0.08, adapt_rate=0.3)
        raw = torch.zeros(256, 3)
        for step in range(200):
            head.step_schedule(step)
            actions, _ = head(raw).sample(8)
            head.observe(actions)
        # at the mean (1/3, 1/3, 1/3), sd = sqrt(m(1-m)/(c+1)): the target 0.08 needs c = 2/9/0.0064 - 1
        expected_c = (1 / 3) * (2 / 3) / 0.08**2 - 1
        assert abs(float(head.total_concentration) - expected_c) / expected_c < 0.15
        assert abs(head.last_spread - 0.08) < 0.01

    def test_target_decays_and_validation(self):
        head = DirichletHead(3, concentration=5.0, target_spread=0.2, target_spread_final=0.05, anneal_steps=100)
        head.step_schedule(0)
        assert head.target_spread == pytest.approx(0.2)
        head.step_schedule(50)
        assert head.target_spread == pytest.approx(0.1)
        head.step_schedule(500)
        assert head.target_spread == pytest.approx(0.05)
        with pytest.raises(ValueError, match="starting concentration"):
            DirichletHead(3, target_spread=0.1)
        with pytest.raises(ValueError, match="either"):
            DirichletHead(3, concentration=2.0, concentration_final=4.0, target_spread=0.1)
        with pytest.raises(ValueError, match="target_spread"):
            DirichletHead(3, concentration=2.0, target_spread=0.7)
