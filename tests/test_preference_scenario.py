"""The heterogeneous-preference scenario: structure, rewards, oracle, validation."""

import pytest
import torch

from grpokit.evaluation import evaluate_actions, oracle_values
from grpokit.scenarios import PreferenceScenario, make_scenario


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_structure_and_oracle():
    sc = PreferenceScenario(n_groups=3, shares=[0.8, 0.15, 0.05], n_actions=6, scales=[1.0, 0.5, 0.2],
                            noise=[0.1, 0.1, 0.1], drift=[0, 0, 0], reward="gaussian")
    assert len(set(sc.best_actions.tolist())) == 3
    ctx = sc.sample_contexts(20000, _gen())
    shares = torch.bincount(ctx.group, minlength=3).float() / len(ctx)
    assert torch.allclose(shares, torch.tensor([0.8, 0.15, 0.05]), atol=0.01)
    # the oracle's action is the argmax of the expected reward of every action, per context
    every = torch.arange(6).expand(len(ctx), 6)
    expected = sc.expected_reward(ctx, every)
    assert torch.equal(expected.argmax(1), sc.oracle_actions(ctx))
    oracle = oracle_values(sc, ctx)
    assert oracle["per_group"] == pytest.approx({"g0": 1.0, "g1": 0.5, "g2": 0.2})
    # the majority's best action is worse for every minority
    majority_best = sc.best_actions[0].expand(len(ctx))
    value = evaluate_actions(sc, ctx, majority_best)
    assert value["per_group"]["g1"] < 0.5 * 0.5 + 1e-9 or value["per_group"]["g1"] <= sc.config.other_max * 0.5


def test_sampled_rewards_match_expectations():
    sc = PreferenceScenario(reward="bernoulli", scales=[0.5, 0.1, 0.03])
    ctx = sc.sample_contexts(4096, _gen(1))
    actions = torch.randint(0, sc.n_actions, (4096, 16), generator=_gen(2))
    r = sc.reward(ctx, actions, _gen(3))
    assert set(r.unique().tolist()) <= {0.0, 1.0}
    mean = sc.expected_reward(ctx, actions)
    # Monte Carlo mean within 4 standard errors of the expectation
    se = (mean * (1 - mean)).mean().sqrt() / (r.numel() ** 0.5)
    assert abs(float(r.mean() - mean.mean())) < 4 * float(se)


def test_gaussian_noise_and_drift():
    sc = PreferenceScenario(reward="gaussian", scales=[1.0, 1.0, 1.0], noise=[0.0, 0.0, 0.5], drift=[0.0, 2.0, 0.0])
    ctx = sc.sample_contexts(3000, _gen())
    a = torch.zeros(3000, 4, dtype=torch.long)
    r0 = sc.reward(ctx, a, _gen(1), step=0)
    r500 = sc.reward(ctx, a, _gen(1), step=500)
    g1, g0, g2 = ctx.group == 1, ctx.group == 0, ctx.group == 2
    assert torch.allclose(r500[g1] - r0[g1], torch.full_like(r0[g1], 1.0))  # 2.0 per 1000 steps
    assert torch.equal(r500[g0], r0[g0])
    assert float(r0[g2].std()) == pytest.approx(0.5, rel=0.15)
    assert r0[g0].unique().numel() == 1


def test_features_reveal_the_group_as_configured():
    hi = PreferenceScenario(feature_signal=8.0, obs_dim=8)
    lo = PreferenceScenario(feature_signal=0.0, obs_dim=8)
    for sc, expect_sep in ((hi, True), (lo, False)):
        ctx = sc.sample_contexts(5000, _gen())
        nearest = (ctx.obs @ sc.prototypes.T).argmax(1)
        acc = float((nearest == ctx.group).float().mean())
        assert (acc > 0.95) == expect_sep, acc


def test_seeded_structure_is_reproducible():
    a, b, c = PreferenceScenario(seed=3), PreferenceScenario(seed=3), PreferenceScenario(seed=4)
    assert torch.equal(a.relative, b.relative) and torch.equal(a.prototypes, b.prototypes)
    assert not torch.equal(a.relative, c.relative)


@pytest.mark.parametrize(
    "params, fragment",
    [
        ({"shares": [0.5, 0.5]}, "shares"),
        ({"shares": [0.5, 0.4, 0.2]}, "sum to 1"),
        ({"scales": [1.5, 0.1, 0.1]}, "bernoulli"),
        ({"noise": [-1.0, 0.0, 0.0]}, "noise"),
        ({"best_actions": [0, 1, 99]}, "best_actions"),
        ({"n_actions": 1}, "n_actions"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_parameters(params, fragment):
    with pytest.raises(ValueError, match=fragment):
        make_scenario("preferences", **params)
    with pytest.raises(ValueError, match="unknown scenario"):
        make_scenario("nope")
