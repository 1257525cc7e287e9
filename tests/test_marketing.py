"""The marketing (offer-targeting) scenario: segments, features, spillover, ground truth, oracle, logs, config."""

import itertools

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from grpokit.evaluation.values import evaluate_actions
from grpokit.grpo.trainer import GRPOTrainer
from grpokit.config import GRPOConfig
from grpokit.offline.io import validate_log
from grpokit.policy import CategoricalHead, MLPTorso, Policy
from grpokit.scenarios.marketing import MarketingConfig, MarketingScenario

NONE, OFF5, OFF10, OFF20, FREESHIP = range(5)


def _ctx(sc, n, seed=0):
    return sc.sample_contexts(n, torch.Generator().manual_seed(seed))


def _seg(sc, name):
    return sc.segment_names.index(name)


def _one_cohort(**params):
    """Default segments and offers, but a single cohort (one region, one channel): strong spillover."""
    segs = [s.model_copy(update={"channel_weights": None, "region_weights": None}) for s in MarketingConfig().segments]
    return MarketingScenario(segments=segs, channels=["web"], regions=["north"], **params)


def _reference_expected(sc, ctx, actions):
    """Expected profit [B, G] from the documented formula, one customer and column at a time."""
    c = sc.config
    B, G = actions.shape
    out = torch.zeros(B, G, dtype=torch.float64)
    seg, base, m, group = (ctx.extra["segment"].tolist(), ctx.extra["base_prob"].tolist(),
                           ctx.extra["basket"].tolist(), ctx.group.tolist())
    for g in range(G):
        col = actions[:, g].tolist()
        for b in range(B):
            peers = [j for j in range(B) if j != b and group[j] == group[b]]
            q = sum(col[j] != 0 for j in peers) / len(peers) if peers else 0.0
            s, o = c.segments[seg[b]], c.offers[col[b]]
            resp = 0.0 if col[b] == 0 else (s.contact_effect + s.discount_sensitivity * o.discount
                                            + s.shipping_effect * o.free_shipping)
            p = min(max(base[b] + resp + c.spillover * q * s.spillover_sensitivity, 0.0), 1.0)
            unit = m[b] * (c.gross_margin - o.discount) - c.shipping_cost * o.free_shipping
            out[b, g] = p * unit - c.contact_cost * (col[b] != 0)
    return out


# -- reproducibility -------------------------------------------------------------------------------


def test_seeded_reproducibility():
    sc1, sc2 = MarketingScenario(spillover=0.1), MarketingScenario(spillover=0.1)
    a, b, other = _ctx(sc1, 300, 7), _ctx(sc2, 300, 7), _ctx(sc1, 300, 8)
    assert torch.equal(a.obs, b.obs) and torch.equal(a.group, b.group)
    assert all(torch.equal(a.extra[k], b.extra[k]) for k in ("segment", "base_prob", "basket"))
    assert not torch.equal(a.obs, other.obs)
    actions = torch.randint(5, (300, 4), generator=torch.Generator().manual_seed(0))
    r1 = sc1.reward(a, actions, torch.Generator().manual_seed(3))
    r2 = sc2.reward(b, actions, torch.Generator().manual_seed(3))
    r3 = sc1.reward(a, actions, torch.Generator().manual_seed(4))
    assert all(torch.equal(r1[k], r2[k]) for k in r1)
    assert not torch.equal(r1["profit"], r3["profit"])
    pd.testing.assert_frame_equal(sc1.simulate_log(500, "targeting", seed=3), sc2.simulate_log(500, "targeting", seed=3))
    assert not sc1.simulate_log(500, seed=3)["reward"].equals(sc1.simulate_log(500, seed=4)["reward"])
    # the default seed comes from the config
    pd.testing.assert_frame_equal(MarketingScenario(seed=5, spillover=0.1).simulate_log(100), sc1.simulate_log(100, seed=5))


# -- segments --------------------------------------------------------------------------------------


def test_segment_behaviour():
    sc = MarketingScenario()
    ctx = _ctx(sc, 6000)
    every_offer = torch.arange(5).expand(len(ctx), 5)  # column a: offer a for everyone
    p = sc.purchase_prob(ctx, every_offer)
    profit = sc.expected_reward(ctx, every_offer)
    seg = ctx.extra["segment"]

    sure = seg == _seg(sc, "sure_thing")
    assert p[sure, NONE].mean() > 0.5  # buy anyway
    assert (p[sure, 1:] - p[sure, :1]).max() <= 0.05  # offers barely matter ...
    assert int(profit[sure].mean(0).argmax()) == NONE  # ... and only cost margin

    dogs = seg == _seg(sc, "sleeping_dog")
    assert bool((p[dogs, 1:] < p[dogs, :1]).all())  # contact lowers their purchase probability
    assert int(profit[dogs].mean(0).argmax()) == NONE

    pers = seg == _seg(sc, "persuadable")
    mp = p[pers].mean(0)
    assert mp[NONE] < 0.1
    assert mp[NONE] < mp[OFF5] < mp[OFF10] < mp[OFF20]  # respond, most to the biggest discount
    assert int(profit[pers].mean(0).argmax()) == OFF20

    lost = seg == _seg(sc, "lost_cause")
    assert bool((p[lost].mean(0) < 0.06).all())

    new = seg == _seg(sc, "new_customer")
    assert int(p[new].mean(0).argmax()) == FREESHIP
    assert int(profit[new].mean(0).argmax()) == FREESHIP


def test_features_hide_the_segment_but_correlate_with_it():
    def accuracy(noise):
        sc = MarketingScenario(feature_noise=noise)
        train, test = _ctx(sc, 4000, 1), _ctx(sc, 4000, 2)
        x, y = train.obs[:, :4], train.extra["segment"]
        centroids = torch.stack([x[y == s].mean(0) for s in range(sc.n_segments)])
        pred = torch.cdist(test.obs[:, :4], centroids).argmin(1)
        return float((pred == test.extra["segment"]).float().mean())

    sc = MarketingScenario()
    ctx = _ctx(sc, 4000)
    assert sc.obs_dim == ctx.obs.shape[1] == 4 + 3 + 4
    assert sc.feature_names[:4] == ["recency", "frequency", "monetary", "tenure"]
    assert set(ctx.extra) == {"segment", "base_prob", "basket"}
    seg_onehot = torch.nn.functional.one_hot(ctx.extra["segment"], sc.n_segments).double()
    corr = torch.corrcoef(torch.cat([ctx.obs.double(), seg_onehot], 1).T)[: sc.obs_dim, sc.obs_dim:]
    assert float(corr.abs().max()) < 0.9  # no feature is the segment
    assert float(corr[:4].abs().max()) > 0.4  # but they are correlated with it
    acc = {noise: accuracy(noise) for noise in (0.0, 0.3, 0.8, 3.0)}
    assert acc[0.0] > 0.95  # without noise the profiles nearly give it away
    assert acc[0.3] > acc[0.8] > acc[3.0]
    assert 0.4 < acc[0.8] < 0.9  # default: partly recoverable (chance is 0.25)
    # the cohort is region x channel, read off the one-hot features
    channel, region = ctx.obs[:, 4:7].argmax(1), ctx.obs[:, 7:].argmax(1)
    assert torch.equal(ctx.group, region * 3 + channel)
    assert sc.n_groups == 12 and sc.group_names[0] == "north/web"


# -- rewards and ground truth --------------------------------------------------------------------


@pytest.mark.parametrize("spillover", [0.0, 0.3])
def test_expected_reward_matches_monte_carlo(spillover):
    sc = MarketingScenario(spillover=spillover, reward_components=["profit", "revenue", "cost", "spend"])
    ctx = _ctx(sc, 48, 3)
    G, K = 5, 4000
    actions = torch.randint(5, (48, G), generator=torch.Generator().manual_seed(1))
    expected = sc.expected_reward(ctx, actions).double()
    assert torch.allclose(expected, _reference_expected(sc, ctx, actions), atol=1e-4)
    if spillover:  # the peers matter in this batch
        assert float((expected - MarketingScenario().expected_reward(ctx, actions)).abs().mean()) > 1.0
    # each column repeated K times: K independent draws of the same joint assignment
    r = sc.reward(ctx, actions.repeat(1, K), torch.Generator().manual_seed(2))
    assert torch.allclose(r["profit"], r["revenue"] - r["cost"], atol=1e-4)
    for name, truth in (("profit", expected), ("spend", sc.spend(ctx, actions).double())):
        draws = r[name].double().view(48, K, G)
        mean, se = draws.mean(1), draws.std(1) / K**0.5
        assert bool(((mean - truth).abs() <= 4 * se + 1e-4).all()), name
        col_mean, col_se = draws.mean(0).mean(0), draws.mean(0).std(0) / K**0.5
        assert bool(((col_mean - truth.mean(0)).abs() <= 4 * col_se + 1e-4).all()), name


def test_reward_components():
    assert MarketingScenario().config.reward_components == ["profit", "peer_effect"]  # own profit + spillover credit
    sc = MarketingScenario(reward_components=["profit", "revenue", "cost", "uplift_profit"])
    ctx = _ctx(sc, 200)
    actions = torch.randint(5, (200, 3), generator=torch.Generator().manual_seed(0))
    r = sc.reward(ctx, actions, torch.Generator().manual_seed(0))
    assert list(r) == ["profit", "revenue", "cost", "uplift_profit"]
    assert all(v.shape == (200, 3) for v in r.values())
    assert torch.allclose(r["profit"], r["revenue"] - r["cost"], atol=1e-4)
    assert bool((r["uplift_profit"][actions == NONE] == 0).all())
    assert torch.allclose(r["uplift_profit"], sc.uplift_profit(ctx, actions))
    every = torch.arange(5).expand(200, 5)
    uplift = sc.uplift_profit(ctx, every)
    assert torch.allclose(uplift, sc.expected_reward(ctx, every) - sc.expected_reward(ctx, every)[:, :1], atol=1e-4)
    pers = ctx.extra["segment"] == _seg(sc, "persuadable")
    assert bool((uplift[pers, OFF20] > 0).all())
    only = MarketingScenario(reward_components=["profit"]).reward(ctx, actions, torch.Generator().manual_seed(0))
    assert list(only) == ["profit"] and torch.equal(only["profit"], r["profit"])
    assert bool((sc.spend(ctx, every)[:, NONE] == 0).all()) and bool((sc.spend(ctx, every) >= 0).all())
    with pytest.raises(ValueError, match=r"\[B, G\]"):
        sc.reward(ctx, actions[:, 0], torch.Generator())


@pytest.mark.parametrize("spillover", [0.2, -0.2])
def test_spillover_direction_and_off_switch(spillover):
    on, off = _one_cohort(spillover=spillover), _one_cohort(spillover=0.0)
    ctx = _ctx(on, 101)
    # column 0: nobody treated; column 1: every odd customer gets 20 % off, the even ones nothing
    actions = torch.zeros(101, 2, dtype=torch.long)
    actions[1::2, 1] = OFF20
    even = torch.arange(101) % 2 == 0
    share = 50 / 100  # an even customer's peers: 100 others, 50 of them treated
    p_on, p_off = on.purchase_prob(ctx, actions), off.purchase_prob(ctx, actions)
    assert torch.allclose(on.treated_share(ctx, actions)[even, 1].float(), torch.full((51,), share))
    sens = on.spill_sens[ctx.extra["segment"][even]].float()
    lift = (p_on[even, 1] - p_on[even, 0])
    inside = (p_on[even, 0] > 0) & (p_on[even, 0] < 1) & (p_on[even, 1] > 0) & (p_on[even, 1] < 1)
    assert torch.allclose(lift[inside], spillover * share * sens[inside], atol=1e-6)  # documented formula
    e_on = on.expected_reward(ctx, actions)
    if spillover > 0:  # word of mouth: untreated customers buy more when peers are treated
        assert bool((e_on[even, 1] >= e_on[even, 0]).all()) and float((e_on[even, 1] - e_on[even, 0]).sum()) > 1
    else:  # offer fatigue
        assert bool((e_on[even, 1] <= e_on[even, 0]).all()) and float((e_on[even, 1] - e_on[even, 0]).sum()) < -1
    # spillover = 0: exactly no effect of the peers' offers
    e_off = off.expected_reward(ctx, actions)
    assert torch.equal(e_off[even, 0], e_off[even, 1])
    assert torch.equal(p_off[:, 0], ctx.extra["base_prob"])
    assert torch.allclose(e_on.double(), _reference_expected(on, ctx, actions), atol=1e-4)


def test_true_value_equals_mean_expected_reward():
    for sc in (MarketingScenario(), MarketingScenario(spillover=0.15, budget_per_customer=2.0)):
        ctx = _ctx(sc, 1000, 4)
        a = torch.randint(5, (1000,), generator=torch.Generator().manual_seed(9))
        tv = sc.true_value(ctx, a)
        column = sc.expected_reward(ctx, a[:, None])[:, 0].double()
        assert tv["value"] == pytest.approx(float(column.mean()), rel=1e-5)
        assert tv["value"] == pytest.approx(evaluate_actions(sc, ctx, a)["value"], rel=1e-5)
        for g, name in enumerate(sc.group_names):
            assert tv["per_group"][name] == pytest.approx(float(column[ctx.group == g].mean()), rel=1e-5, abs=1e-6)
        assert tv["spend"] == pytest.approx(float(sc.spend(ctx, a[:, None]).double().mean()), rel=1e-5)
        treated = (a != NONE).double()
        for s, name in enumerate(sc.segment_names):
            assert tv["offer_rate_by_segment"][name] == pytest.approx(float(treated[ctx.extra["segment"] == s].mean()))
        assert sum(tv["offer_mix"].values()) == pytest.approx(1.0)
    assert tv["within_budget"] == (tv["spend"] <= 2.0)
    with pytest.raises(ValueError, match="assignment"):
        sc.true_value(ctx, a[:, None])


# -- oracle ----------------------------------------------------------------------------------------


def _baselines(sc, ctx, n_random=10):
    gen = torch.Generator().manual_seed(11)
    single = [sc.true_value(ctx, torch.full((len(ctx),), a))["value"] for a in range(sc.n_offers)]
    rand = [sc.true_value(ctx, torch.randint(sc.n_offers, (len(ctx),), generator=gen))["value"] for _ in range(n_random)]
    return single, rand


@pytest.mark.parametrize("spillover", [0.0, 0.1, -0.1])
def test_oracle_beats_single_offers_and_random(spillover):
    sc = MarketingScenario(spillover=spillover)
    ctx = _ctx(sc, 1500, 5)
    best = sc.oracle_actions(ctx)
    value = sc.true_value(ctx, best)["value"]
    single, rand = _baselines(sc, ctx)
    assert value >= max(single) + 0.5 and value >= max(rand) + 0.5
    assert sc.oracle_kind == ("exact" if spillover == 0 else "reference")
    assert sc.oracle_info["converged"]
    if spillover == 0:  # the exact oracle is the per-customer argmax
        every = torch.arange(5).expand(len(ctx), 5)
        assert torch.equal(best, sc.expected_reward(ctx, every).double().argmax(1))


def test_oracle_against_brute_force():
    # 7 customers in one cohort: every one of the 5^7 joint assignments, each as one column
    combos = torch.tensor(list(itertools.product(range(5), repeat=7))).T  # [7, 78125]
    for spillover, seed in itertools.product((0.0, 0.4, -0.4), (12, 13)):
        sc = _one_cohort(spillover=spillover)
        ctx = _ctx(sc, 7, seed)
        brute = float(sc.expected_reward(ctx, combos).double().mean(0).max())
        value = sc.true_value(ctx, sc.oracle_actions(ctx))["value"]
        # exact without spillover; with it a reference that reaches the optimum on these small cases
        assert value == pytest.approx(brute, rel=1e-6), (spillover, seed, value, brute)


def test_oracle_respects_budget():
    for spillover in (0.0, 0.1):
        free = MarketingScenario(spillover=spillover)
        capped = MarketingScenario(spillover=spillover, budget_per_customer=1.0)
        ctx = _ctx(capped, 1200, 6)
        unconstrained = free.true_value(ctx, free.oracle_actions(ctx))
        assert unconstrained["spend"] > 1.0  # the budget binds
        tv = capped.true_value(ctx, capped.oracle_actions(ctx))
        assert tv["within_budget"] and tv["spend"] <= 1.0 + 1e-9
        assert capped.oracle_kind == "reference" and capped.oracle_info["lambda"] > 0
        assert tv["value"] < unconstrained["value"]
        single, _ = _baselines(capped, ctx, n_random=0)
        feasible = [v for a, v in enumerate(single)
                    if capped.true_value(ctx, torch.full((len(ctx),), a))["within_budget"]]
        assert tv["value"] >= max(feasible)


# -- logged data -----------------------------------------------------------------------------------


def test_simulate_log_uniform():
    sc = MarketingScenario()
    df, ctx, actions = sc.simulate_log(4000, "uniform", seed=1, return_contexts=True)
    log = validate_log(df, sc.log_schema())
    assert log.feature_names == sc.feature_names
    assert "true_segment" in log.ignored_columns and "true_segment" not in log.feature_names
    assert log.n_actions == 5 and log.group_labels == list(range(12))
    assert np.allclose(log.pscore, 0.2)
    assert np.array_equal(log.action, actions.numpy()) and np.array_equal(log.group, ctx.group.numpy())
    assert set(df["true_segment"]) == set(sc.segment_names)
    assert np.allclose(df[sc.feature_names].to_numpy(), ctx.obs.double().numpy())
    # the realized profit is an unbiased draw of the logged assignment's true value
    truth = sc.true_value(ctx, actions)["value"]
    assert abs(df["reward"].mean() - truth) <= 4 * df["reward"].std() / len(df) ** 0.5
    validate_log(df)  # the default schema reads it too


def test_simulate_log_targeting_pscores():
    sc = MarketingScenario()
    df = sc.simulate_log(6000, "targeting", seed=2)
    log = validate_log(df, sc.log_schema())
    high = df["frequency"].to_numpy() > 0.0
    target = sc.action_names.index("10% off")
    is_target = df["action"].to_numpy() == target
    want = np.where(high, np.where(is_target, 0.8, 0.2 / 4), 0.2)
    assert np.allclose(log.pscore, want, atol=1e-6)
    frac = is_target[high].mean()
    assert abs(frac - 0.8) <= 4 * (0.8 * 0.2 / high.sum()) ** 0.5
    assert (df["action"][~high].value_counts(normalize=True) - 0.2).abs().max() < 0.04
    with pytest.raises(ValueError, match="logging policy"):
        sc.simulate_log(10, "greedy")


# -- configuration ---------------------------------------------------------------------------------


def _segments(**update):
    segs = [s.model_dump() for s in MarketingConfig().segments]
    segs[0].update(update)
    return segs


@pytest.mark.parametrize(
    "params, match",
    [
        ({"segments": _segments(share=0.5)}, "sum to 1"),
        ({"contact_cost": -1.0}, "contact_cost"),
        ({"shipping_cost": -0.1}, "shipping_cost"),
        ({"colour": "red"}, "colour"),
        ({"segments": _segments(bogus=1)}, "bogus"),
        ({"segments": _segments(base_prob=1.5)}, "base_prob"),
        ({"segments": _segments(channel_weights=[1.0, 2.0])}, "channel_weights has 2 entries"),
        ({"segments": _segments(name="persuadable")}, "duplicate"),
        ({"offers": [{"name": "5% off", "discount": 0.05}, {"name": "none"}]}, "offers\\[0\\]"),
        ({"offers": [{"name": "none"}, {"name": "all", "discount": 1.0}]}, "discount"),
        ({"feature_noise": -0.1}, "feature_noise"),
        ({"budget_per_customer": -1.0}, "budget_per_customer"),
        ({"targeting_offer": "50% off"}, "targeting_offer"),
        ({"reward_components": ["profit", "margin"]}, "reward_components"),
        ({"name": "preferences"}, "name"),
    ],
)
def test_bad_config_values_are_clear_errors(params, match):
    with pytest.raises(ValidationError, match=match):
        MarketingScenario(**params)


def test_config_and_spec():
    sc = MarketingScenario(MarketingConfig())
    assert sc.action_spec == {"kind": "categorical", "n_actions": 5}
    assert sc.action_names == ["none", "5% off", "10% off", "20% off", "free shipping"]
    assert len(sc.group_names) == sc.n_groups == 12
    with pytest.raises(ValueError, match="not both"):
        MarketingScenario(MarketingConfig(), spillover=0.1)
    # a custom offer list and fewer cohorts
    custom = MarketingScenario(offers=[{"name": "none"}, {"name": "15% off", "discount": 0.15}],
                               channels=["web"], regions=["north", "south"], targeting_offer="15% off",
                               segments=[s.model_copy(update={"channel_weights": None, "region_weights": None}).model_dump()
                                         for s in MarketingConfig().segments])
    assert custom.n_groups == 2 and custom.obs_dim == 4 + 1 + 2 and custom.action_spec["n_actions"] == 2
    ctx = _ctx(custom, 300)
    best = custom.oracle_actions(ctx)
    assert custom.true_value(ctx, best)["value"] >= custom.true_value(ctx, torch.zeros(300, dtype=torch.long))["value"]
    assert np.allclose(validate_log(custom.simulate_log(200, "uniform"), custom.log_schema()).pscore, 0.5)


def test_trains_with_the_grpo_trainer():
    sc = MarketingScenario(reward_components=["profit", "revenue", "cost", "uplift_profit"])
    policy = Policy(MLPTorso(sc.obs_dim, [16]), CategoricalHead(sc.n_offers))
    cfg = GRPOConfig(steps=3, batch_size=64, group_size=4, eval_size=256, eval_every=3, device="cpu",
                     reward_weights={"revenue": 0.0, "cost": 0.0, "uplift_profit": 0.0})
    trainer = GRPOTrainer(policy, sc, cfg)
    m = trainer.train_step()
    assert float(m["reward_mean"]) == pytest.approx(float(m["reward/profit"]), rel=1e-5)
    assert trainer.oracle["value"] > 0


def test_peer_effect_is_the_change_in_peers_profit():
    # brute force: for each customer, peers' expected profit with its offer minus with "none" instead
    sc = MarketingScenario(spillover=0.05, base_prob_spread=0.0)
    ctx = _ctx(sc, 60)
    a = torch.randint(0, 5, (60,), generator=torch.Generator().manual_seed(3))
    pe = sc.peer_effect(ctx, a.unsqueeze(1))[:, 0].double()
    for i in range(60):
        alt = a.clone()
        alt[i] = 0
        both = torch.stack([a, alt], 1)
        prof = sc.expected_reward(ctx, both).double()
        peers = (ctx.group == ctx.group[i]) & (torch.arange(60) != i)
        brute = float(prof[peers, 0].sum() - prof[peers, 1].sum())
        assert abs(brute - float(pe[i])) < 1e-3 * max(1.0, abs(brute)), (i, brute, float(pe[i]))
    assert torch.all(sc.peer_effect(ctx, torch.zeros(60, 2, dtype=torch.long)) == 0)
    assert torch.all(MarketingScenario().peer_effect(ctx, a.unsqueeze(1)) == 0)  # spillover off
