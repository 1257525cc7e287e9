"""The numpy forward that serves single-context groups gives torch's probabilities (to float32
rounding) and DeployedPolicy.decide's draws, on random policies with and without the cohort
embedding; policies it cannot run are left to torch."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

from grpokit.policy import CategoricalHead, MLPTorso, Policy
from grpokit.policy.deployed import DeployedPolicy
from grpokit.policy.features import FeatureEncoder
from grpokit.policy.numpy_forward import draw_served, numpy_forward

pytestmark = pytest.mark.serve


def _net(activation: str, n_groups: int, seed: int, hidden=(32, 16), obs_dim: int = 6, n_actions: int = 5) -> Policy:
    torch.manual_seed(seed)
    net = Policy(MLPTorso(obs_dim, list(hidden), activation=activation, n_groups=n_groups,
                          group_embedding_dim=3 if n_groups else 0), CategoricalHead(n_actions))
    with torch.no_grad():  # far from uniform: a wrong layer or activation would show in every digit
        net.out.weight.normal_(0.0, 1.5)
        net.out.bias.normal_(0.0, 1.0)
    return net


def _torch_probs(net: Policy, x: np.ndarray, g: np.ndarray | None) -> np.ndarray:
    with torch.no_grad():
        dist = net(torch.from_numpy(x), None if g is None else torch.from_numpy(g))
    return dist.log_probs.exp().double().numpy()


@pytest.mark.parametrize("activation", ["tanh", "relu", "gelu", "silu"])
@pytest.mark.parametrize("n_groups", [0, 4])
def test_numpy_forward_equals_torch_on_random_policies(activation, n_groups):
    """Both run in float32: they agree to float32 rounding of the logits (|logit| up to ~35 here), and
    against the same network in float64 the numpy forward is as exact as torch's."""
    import copy

    for seed in range(4):
        net = _net(activation, n_groups, seed, hidden=[(32, 16), (64, 64), (8,)][seed % 3])
        exact_net = copy.deepcopy(net).double()
        fwd = numpy_forward(net)
        assert fwd is not None
        rng = np.random.default_rng(seed)
        for n in (1, 3, 16, 200):
            x = rng.normal(0.0, 2.0, (n, 6)).astype(np.float32)
            g = rng.integers(0, n_groups, n) if n_groups else None
            ref = _torch_probs(net, x, g)
            got = fwd.probabilities(x, g)
            assert got.dtype == np.float64 and got.shape == ref.shape
            np.testing.assert_allclose(got, ref, rtol=0, atol=3e-6)
            np.testing.assert_allclose(got.sum(1), 1.0, rtol=0, atol=1e-12)
            with torch.no_grad():
                exact = exact_net(torch.from_numpy(x).double(), None if g is None else torch.from_numpy(g))
            exact = exact.log_probs.exp().numpy()
            assert np.abs(got - exact).max() <= max(2.0 * np.abs(ref - exact).max(), 1e-6)
            assert n < 16 or ref.max(1).mean() > 0.45  # peaked distributions were compared, not near-uniform ones


@pytest.mark.parametrize("n_groups", [0, 4])
def test_numpy_forward_within_1e6_of_torch_at_moderate_logits(n_groups):
    """At the logits of a usual policy (|logit| < ~15) the two agree to 1e-6."""
    for seed in range(6):
        net = _net(["tanh", "relu", "gelu"][seed % 3], n_groups, seed, hidden=(64, 64))
        with torch.no_grad():
            net.out.weight.mul_(0.25)
        x = np.random.default_rng(seed).normal(0.0, 2.0, (300, 6)).astype(np.float32)
        g = np.random.default_rng(seed).integers(0, n_groups, 300) if n_groups else None
        with torch.no_grad():
            logits = net.out(net.torso(torch.from_numpy(x), None if g is None else torch.from_numpy(g)))
        assert 2.0 < float(logits.abs().max()) < 15.0
        np.testing.assert_allclose(numpy_forward(net).probabilities(x, g), _torch_probs(net, x, g), rtol=0, atol=1e-6)


def test_numpy_forward_sees_weights_updated_in_place():
    net = _net("tanh", 0, 0)
    fwd = numpy_forward(net)
    x = np.ones((2, 6), np.float32)
    before = fwd.probabilities(x)
    with torch.no_grad():
        net.out.bias.copy_(torch.tensor([6.0, 0.0, 0.0, 0.0, 0.0]))
    after = fwd.probabilities(x)
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, _torch_probs(net, x, None), atol=1e-6)


def test_policies_it_cannot_run_are_left_to_torch():
    net = _net("tanh", 0, 0)
    net.head.restrict([True, False, True, True, True])
    assert numpy_forward(net) is None  # a restricted head: torch masks
    net = _net("tanh", 0, 0)
    net.torso.net[1] = torch.nn.LeakyReLU()
    assert numpy_forward(net) is None  # an activation it does not know
    net = _net("tanh", 0, 0)
    net.out.register_forward_hook(lambda *a: None)
    assert numpy_forward(net) is None
    net = _net("tanh", 0, 0).double()
    assert numpy_forward(net) is None


@pytest.mark.parametrize("mode", ["sample", "greedy"])
def test_draw_served_is_deployed_policys_draw(mode):
    net = _net("tanh", 3, 1)
    enc = FeatureEncoder([f"f{k}" for k in range(6)])
    enc.fields = [{"name": f"f{k}", "type": "number", "mean": 0.0, "std": 1.0} for k in range(6)]
    dp = DeployedPolicy(net, {"group_labels": ["a", "b", "c"]}, enc, "v1")
    rng = np.random.default_rng(3)
    rows = [{**{f"f{k}": float(v) for k, v in enumerate(r)}, "cohort": "abc"[i % 3]}
            for i, r in enumerate(rng.normal(0, 2, (500, 6)))]
    u = rng.random(500)
    ref = dp.decide(rows, epsilon=0.1, mode=mode, uniforms=u)
    x, group = dp.features(rows)
    actions, props, q = draw_served(numpy_forward(net).probabilities(x, group), 0.1, mode, u)
    np.testing.assert_array_equal(actions, ref.actions)
    np.testing.assert_allclose(props, ref.propensities, rtol=0, atol=3e-6)
    np.testing.assert_allclose(q, ref.probabilities, rtol=0, atol=3e-6)
    assert q.min() >= 0.1 / 5 - 1e-12  # exploration keeps every action possible
    assert len(set(actions.tolist())) > 1


def test_single_requests_are_served_by_the_numpy_forward_batches_by_torch(tmp_path):
    """The service uses the numpy forward for a group of single requests (same draws as the policy's
    own decide) and the policy's torch path for a batch request."""
    from grpokit.policy.io import save_policy
    from grpokit.serve.app import ServeState
    from grpokit.serve.config import ServeConfig

    net = _net("tanh", 0, 2, obs_dim=3, n_actions=4)
    enc_fields = ["a", "b", "c"]
    path = tmp_path / "p.pt"
    save_policy(net, path, {"feature_names": enc_fields, "action_labels": ["w", "x", "y", "z"]})
    st = ServeState(ServeConfig(store=str(tmp_path / "s.duckdb"), log={"flush_interval_s": 0.2}), path)
    st.startup()
    calls = []
    dp = st.policies.current
    orig = dp.probabilities
    dp.probabilities = lambda rows: calls.append(len(rows)) or orig(rows)  # torch's path (decide asks it)
    rng = np.random.default_rng(0)
    ctxs = [dict(zip(enc_fields, map(float, r))) for r in rng.normal(0, 2, (30, 3))]
    try:
        singles = asyncio.run(_gather(st, [{"context": c, "event_id": f"s{k}", "probabilities": True}
                                           for k, c in enumerate(ctxs)]))
        assert calls == []  # the numpy forward answered the group
        batch = asyncio.run(st.decide({"batch": [{"context": c, "event_id": f"b{k}"} for k, c in enumerate(ctxs)],
                                       "probabilities": True}))["decisions"]
        assert calls == [30]  # the batch went to DeployedPolicy.decide (torch)
    finally:
        st.shutdown()
    from grpokit.serve.rollout import event_uniforms

    ref = dp.decide(ctxs, epsilon=0.05, uniforms=event_uniforms(0, [f"s{k}" for k in range(30)]))
    assert [d["action_code"] for d in singles] == ref.actions.tolist()
    np.testing.assert_allclose([d["propensity"] for d in singles], ref.propensities, rtol=0, atol=3e-6)
    np.testing.assert_allclose([d["probabilities"] for d in singles], [d["probabilities"] for d in batch], rtol=0, atol=3e-6)


async def _gather(st, bodies):
    return await asyncio.gather(*[st.decide(b) for b in bodies])
