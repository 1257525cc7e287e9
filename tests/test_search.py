"""The marketplace-search scenario (GRADE fusion weights): expectations vs Monte Carlo, position bias,
miscalibration, per-type optima, the oracle, the reward components, the logs and config validation."""

import math
import numpy as np

import pytest
import torch
from pydantic import ValidationError

from grpokit.config import GRPOConfig
from grpokit.grpo.trainer import GRPOTrainer
from grpokit.policy import DirichletHead, MLPTorso, Policy
from grpokit.ranking import fuse, rerank
from grpokit.scenarios.search import LIST_FEATURES, SearchConfig, SearchScenario, UserType, list_shape, simplex_grid


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _random_weights(b, g, k=3, seed=5):
    e = -torch.log1p(-torch.rand(b, g, k, generator=_gen(seed)))
    return e / e.sum(-1, keepdim=True)


def test_interface_and_shapes():
    sc = SearchScenario()
    assert sc.action_spec == {"kind": "dirichlet", "n_components": 3}
    assert sc.group_names == ["price_sensitive", "quality_seeking", "browser", "buyer"] and sc.n_groups == 4
    assert sc.obs_dim == 11 and sc.k == 10 and sc.feature_names[-3:] == list(LIST_FEATURES)
    assert torch.allclose(sc.static_default_weights, torch.tensor([0.6, 0.25, 0.15]))
    ctx = sc.sample_contexts(8000, _gen())
    assert ctx.obs.shape == (8000, 11) and ctx.obs.dtype == torch.float32
    shares = torch.bincount(ctx.group, minlength=4).float() / len(ctx)
    assert torch.allclose(shares, torch.tensor([0.35, 0.25, 0.25, 0.15]), atol=0.02)
    assert float((ctx.obs[:, :4].argmax(1) == ctx.group).float().mean()) > 0.6  # a noisy type signal
    assert ctx.extra["scores"].shape == (8000, 30, 3) and ctx.extra["pred"].shape == (8000, 30, 3)
    for key in ("p_click", "p_order", "value", "price", "quality", "popularity", "relevance", "rel_price"):
        assert ctx.extra[key].shape == (8000, 30)
    # log_zscore: each task's score is standardized over the request's candidates
    s = ctx.extra["scores"]
    assert torch.allclose(s.mean(1), torch.zeros(8000, 3), atol=1e-4)
    assert torch.allclose(s.std(1), torch.ones(8000, 3), atol=1e-3)
    w = _random_weights(8000, 4)
    r = sc.reward(ctx, w, _gen(1))
    assert set(r) == {"posterior", "prior", "rules"} and all(v.shape == (8000, 4) for v in r.values())
    assert float((r["posterior"] == 0).float().mean()) > 0.7  # sparse
    assert bool((r["prior"] > 0).all())  # dense
    assert sc.expected_reward(ctx, w).shape == (8000, 4)
    idx = sc.rank(ctx, w)
    assert idx.shape == (8000, 4, 10)
    assert torch.equal(idx, rerank(fuse(ctx.extra["scores"], w, "linear"), 10))
    m = sc.true_metrics(ctx, sc.static_default_weights)
    assert set(m) == {"ctr", "cvr", "opm", "gpm", "n", "per_type"} and set(m["per_type"]) == set(sc.group_names)


def test_user_types_behave_as_described():
    sc = SearchScenario()
    ctx = sc.sample_contexts(6000, _gen())
    per = sc.true_metrics(ctx, sc.static_default_weights)["per_type"]
    assert per["browser"]["ctr"] == max(p["ctr"] for p in per.values())  # browsers click the most...
    assert per["browser"]["cvr"] < 0.1 * min(p["cvr"] for n, p in per.items() if n != "browser")  # ...and rarely order
    assert per["buyer"]["opm"] == max(p["opm"] for p in per.values())  # buyers order the most
    # price-sensitive users order cheap items, quality seekers high-quality ones
    ps, qs = ctx.group == 0, ctx.group == 1
    po, ell, q = ctx.extra["p_order"], ctx.extra["rel_price"], ctx.extra["quality"]

    def corr(a, b):
        a, b = a - a.mean(), b - b.mean()
        return float((a * b).sum() / (a.norm() * b.norm()))

    assert corr(po[ps].log(), ell[ps]) < -0.5 and corr(po[qs].log(), q[qs]) > 0.7


def test_expected_values_match_monte_carlo():
    sc = SearchScenario()
    base = sc.sample_contexts(1000, _gen())
    reps = 16
    ctx = base.index(torch.arange(1000).repeat(reps))
    w = torch.cat([sc.static_default_weights.expand(1000, 1, 3), _random_weights(1000, 1)], 1).repeat(reps, 1, 1)
    exp = sc.expected_outcomes(ctx, w)
    sampled = sc.sample_outcomes(ctx, w, _gen(3))
    post = sc.reward(ctx, w, _gen(4))["posterior"]
    for name in ("clicks", "orders", "gmv"):
        x = sampled[name]
        se = x.double().std(0) / math.sqrt(len(x))
        gap = (x.double().mean(0) - exp[name].double().mean(0)).abs()
        assert bool((gap < 4 * se).all()), (name, gap, se)
    gap = (post.double().mean(0) - sc.expected_reward(ctx, w).double().mean(0)).abs()
    assert bool((gap < 4 * post.double().std(0) / math.sqrt(len(post))).all())
    # the true metrics of one weight vector against sampled outcomes
    m = sc.true_metrics(ctx, sc.static_default_weights)
    s = sampled["clicks"][:, 0].double(), sampled["orders"][:, 0].double(), sampled["gmv"][:, 0].double()
    n = len(ctx)
    assert abs(s[0].mean() / 10 - m["ctr"]) < 4 * s[0].std() / 10 / math.sqrt(n)
    assert abs(1000 * s[1].mean() - m["opm"]) < 4 * 1000 * s[1].std() / math.sqrt(n)
    assert abs(1000 * s[2].mean() - m["gpm"]) < 4 * 1000 * s[2].std() / math.sqrt(n)
    assert math.isclose(m["cvr"], m["opm"] / (1000 * m["ctr"] * 10), rel_tol=1e-9)


def test_position_bias_lowers_value_of_moved_down_items():
    sc = SearchScenario()
    assert sc.examination[0] == 1.0 and bool((sc.examination.diff() < 0).all())
    ctx = sc.sample_contexts(2000, _gen())
    u = ctx.extra["p_click"] * ctx.extra["p_order"] * ctx.extra["value"]
    best = u.argsort(1, descending=True)[:, None, :10]
    good = sc.ranking_outcomes(ctx, best)["gmv"]
    assert torch.allclose(good[:, 0], sc.ideal_gmv(ctx), rtol=1e-5)
    worse = sc.ranking_outcomes(ctx, best.flip(-1))["gmv"]  # the same items, best ones at the bottom
    assert bool((worse <= good + 1e-6).all()) and float(worse.mean()) < 0.8 * float(good.mean())
    # swapping only the first and the tenth slot also loses value
    swapped = best.clone()
    swapped[..., [0, 9]] = best[..., [9, 0]]
    assert float(sc.ranking_outcomes(ctx, swapped)["gmv"].mean()) < float(good.mean())
    # without position bias the order inside the top-k does not matter
    flat = SearchScenario(position_bias="none")
    ctx = flat.sample_contexts(500, _gen())
    idx = flat.rank(ctx, _random_weights(500, 2))
    assert torch.allclose(flat.ranking_outcomes(ctx, idx)["gmv"], flat.ranking_outcomes(ctx, idx.flip(-1))["gmv"], rtol=1e-5)
    # other examination curves
    assert torch.allclose(SearchScenario(position_bias="geometric", position_decay=0.5).examination[:3], torch.tensor([1.0, 0.5, 0.25]))
    assert torch.allclose(SearchScenario(position_bias="power", position_decay=1.0).examination[:3], torch.tensor([1.0, 1 / 2, 1 / 3]))


def test_miscalibration_misleads_the_prior_ranking():
    cal, mis = SearchScenario(miscalibration=1.0, score_transform="log"), SearchScenario(score_transform="log")
    a, b = cal.sample_contexts(3000, _gen()), mis.sample_contexts(3000, _gen())
    for key in ("p_click", "p_order", "value", "price", "obs"):
        x, y = (a.obs[:, :-3], b.obs[:, :-3]) if key == "obs" else (a.extra[key], b.extra[key])
        assert torch.equal(x, y)  # the same requests and the same model noise
    assert not torch.equal(a.obs[:, -3:], b.obs[:, -3:])  # the list shape is that of the (miscalibrated) predictions
    expensive = a.extra["rel_price"] > 0.25
    pa, pb = a.extra["pred"], b.extra["pred"]
    assert torch.equal(pa[~expensive], pb[~expensive])
    assert torch.allclose(pb[..., 1][expensive], (2 * pa[..., 1][expensive]).clamp(max=0.999))
    # equal weights on log scores rank by predicted p_click · p_order · order_value (the prior utility)
    eq = torch.full((3000, 1, 3), 1 / 3)
    u = pa[..., 0] * pa[..., 1] * pa[..., 2]
    assert torch.equal(cal.rank(a, eq)[:, 0].sort(1).values, u.topk(10, dim=1).indices.sort(1).values)
    gmv_cal, gmv_mis = cal.expected_reward(a, eq).mean(), mis.expected_reward(b, eq).mean()
    assert float(gmv_mis) < 0.995 * float(gmv_cal)
    # it over-promotes expensive items, and the model promises more GMV than it delivers
    shown_exp = lambda sc, c: float(torch.gather(expensive, 1, sc.rank(c, eq)[:, 0]).float().mean())
    assert shown_exp(mis, b) > shown_exp(cal, a) + 0.05
    assert float(mis.prior_utility(b, eq).mean()) > 1.2 * float(gmv_mis)


def test_user_types_have_different_best_static_weights():
    sc = SearchScenario()
    ctx = sc.sample_contexts(3000, _gen())
    per_type = sc.best_static_weights(ctx, per_type=True)
    best = sc.best_static_weights(ctx)
    assert per_type.shape == (4, 3) and best.shape == (3,)
    assert torch.allclose(per_type.sum(1), torch.ones(4))
    dist = torch.cdist(per_type, per_type, p=1)
    assert float(dist.max()) > 0.8  # e.g. browsers' weight goes to clicks, not to orders
    browser, price_sensitive = per_type[2], per_type[0]
    assert browser[0] >= 0.7 and browser[1] <= 0.1 and price_sensitive[1] >= 0.35
    v_default = sc.static_value(sc.static_default_weights, ctx)
    v_best = sc.static_value(best, ctx)
    v_type = float(sc.expected_reward(ctx, per_type[ctx.group]).mean())
    assert v_default < v_best < v_type


def test_oracle_beats_static_and_random_weights_per_request():
    sc = SearchScenario()
    ctx = sc.sample_contexts(1500, _gen())
    best = sc.oracle_actions(ctx)
    assert best.shape == (1500, 3) and torch.allclose(best.sum(1), torch.ones(1500))
    v_oracle = sc.expected_reward(ctx, best.unsqueeze(1))[:, 0]
    v_default = sc.expected_reward(ctx, sc.static_default_weights)[:, 0]
    v_random = sc.expected_reward(ctx, _random_weights(1500, 8))
    assert bool((v_oracle >= v_default - 1e-5).all())  # the default weights are an oracle candidate
    # a search over the simplex, not an exact optimum: an off-lattice vector can rarely do a little better
    assert float((v_oracle[:, None] >= v_random - 1e-5).float().mean()) > 0.995
    assert bool((v_oracle[:, None] >= 0.98 * v_random).all())
    assert float(v_oracle.mean()) > float(v_random.max(1).values.mean())
    assert bool((v_oracle <= sc.ideal_gmv(ctx) + 1e-4).all())  # the best fused ranking ≤ the best ranking
    assert float(v_oracle.mean()) > 1.03 * float(v_default.mean())
    assert sc.oracle_candidates.shape == (231 + 32 + 1, 3)


def test_reward_components():
    sc = SearchScenario()
    ctx = sc.sample_contexts(400, _gen())
    w = torch.tensor([[0.6, 0.25, 0.15], [0.0, 0.5, 0.5], [1.0, 0.0, 0.0], [0.3, 0.55, 0.15], [0.05, 0.05, 0.9]])
    r = sc.reward(ctx, w.expand(400, -1, -1), _gen(1))
    # default: 0; a zero weight on one task: floor 10 · 0.05, TV 0.6 − 0.3 → 2 · 0.3;
    # one-hot: floor 10 · 0.1 + TV (0.4 − 0.3) · 2 + one-hot 10 · 0.1; TV exactly at the tolerance: 0
    expected = torch.tensor([0.0, -(0.5 + 0.6), -(1.0 + 0.2 + 1.0), 0.0, -(2 * (0.75 - 0.3))])
    assert torch.allclose(r["rules"], expected.expand(400, -1), atol=1e-5)
    assert torch.allclose(sc.rule_penalty(w * 3), expected, atol=1e-5)  # scale-free: renormalized
    assert torch.allclose(r["prior"], sc.prior_utility(ctx, w.expand(400, -1, -1)))
    # the posterior is a weighted sum of sampled clicks, orders and GMV
    sc2 = SearchScenario(posterior_click=1.0, posterior_order=10.0, posterior_gmv=0.0, posterior_coupling="independent")
    post = sc2.reward(ctx, w.expand(400, -1, -1), _gen(1))["posterior"]
    s = sc.sample_outcomes(ctx, w.expand(400, -1, -1), _gen(1))
    assert torch.allclose(post, s["clicks"] + 10 * s["orders"])
    with pytest.raises(ValueError, match="weights must be"):
        sc.reward(ctx, torch.ones(400, 2, 4), _gen())


def test_shared_posterior_coupling():
    """Shared feedback uniforms per candidate: hand-rebuilt outcomes, equal lists get equal rewards,
    unbiased, and far less noisy differences between two nearby weight vectors than independent draws."""
    sc = SearchScenario()
    ctx = sc.sample_contexts(3000, _gen())
    w = torch.tensor([[0.6, 0.25, 0.15], [0.6, 0.25, 0.15], [0.55, 0.3, 0.15]]).expand(3000, -1, -1)
    post = sc.reward(ctx, w, _gen(7))["posterior"]
    assert torch.equal(post[:, 0], post[:, 1])  # the same ranking reads the same feedback
    # rebuild by hand: click at slot j iff u_click[item] < e_j pc[item], order iff also u_order[item] < po[item]
    u = torch.rand((2, 3000, 30), generator=_gen(7))
    idx = sc.rank(ctx, w)[:, 2]  # [B, k]
    pc = torch.gather(ctx.extra["p_click"], 1, idx) * sc.examination
    click = torch.gather(u[0], 1, idx) < pc
    order = click & (torch.gather(u[1], 1, idx) < torch.gather(ctx.extra["p_order"], 1, idx))
    gmv = (order.float() * torch.gather(ctx.extra["value"], 1, idx)).sum(1)
    assert torch.allclose(post[:, 2], gmv)
    indep = SearchScenario(posterior_coupling="independent").reward(ctx, w, _gen(7))["posterior"]
    assert not torch.equal(indep[:, 0], indep[:, 1])
    d_shared, d_indep = (post[:, 2] - post[:, 0]).var(), (indep[:, 2] - indep[:, 0]).var()
    assert float(d_shared) < 0.5 * float(d_indep), (d_shared, d_indep)
    # unbiased: the mean over many coupled draws matches the expectation for each weight vector
    reps = 8
    big = ctx.index(torch.arange(3000).repeat(reps))
    wb = w.repeat(reps, 1, 1)
    p = sc.reward(big, wb, _gen(8))["posterior"].double()
    gap = (p.mean(0) - sc.expected_reward(big, wb).double().mean(0)).abs()
    assert bool((gap < 4 * p.std(0) / math.sqrt(len(p))).all()), gap
    with pytest.raises(ValidationError):
        SearchScenario(posterior_coupling="per_slot")


def test_list_shape_features():
    """obs ends with log sd over candidates of log p̂c, log p̂o, log v̂ (numpy reference); masks drop padding;
    they are informative: weights proportional to the spreads beat the best static weights with a calibrated model."""
    import numpy as np

    sc = SearchScenario(miscalibration=1.0)
    ctx = sc.sample_contexts(4000, _gen(2))
    ref = np.log(np.log(ctx.extra["pred"].double().numpy()).std(axis=1, ddof=1))
    np.testing.assert_allclose(ctx.obs[:, -3:].double().numpy(), ref, rtol=1e-4, atol=1e-4)
    pred = ctx.extra["pred"][:5]
    padded = torch.cat([pred, torch.rand(5, 7, 3)], 1)
    mask = torch.cat([torch.ones(5, 30, dtype=torch.bool), torch.zeros(5, 7, dtype=torch.bool)], 1)
    assert torch.allclose(list_shape(padded, mask), list_shape(pred), atol=1e-5)
    sd = ctx.obs[:, -3:].exp()
    by_spread = sc.expected_reward(ctx, (sd / sd.sum(1, keepdim=True))[:, None]).mean()
    best_static = sc.expected_reward(ctx, sc.best_static_weights(ctx)).mean()
    assert float(by_spread) > 1.01 * float(best_static)
    plain = SearchScenario(list_features=False, miscalibration=1.0)
    assert plain.obs_dim == 8 and len(plain.feature_names) == 8
    assert torch.equal(plain.sample_contexts(50, _gen(3)).obs, sc.sample_contexts(50, _gen(3)).obs[:, :8])


def test_simulate_log():
    sc = SearchScenario()
    df = sc.simulate_log(300, seed=7)
    assert len(df) == 300 * 30
    cols = ["request_id", "type_signal_price_sensitive", "type_signal_buyer", "query_price_level", "query_price_dispersion",
            "query_specificity", "query_intent", *LIST_FEATURES, "candidate", "price", "rating", "popularity", "relevance", "p_click",
            "p_order", "order_value", "shown", "position", "click", "order", "gmv", "user_type"]
    assert all(c in df.columns for c in cols)
    assert not any(c.startswith("true_") for c in df.columns)
    shown = df[df.shown]
    assert shown.groupby("request_id").position.apply(lambda p: sorted(p) == list(range(1, 11))).all()
    assert (df.loc[~df.shown, ["position", "click", "order", "gmv"]] == 0).all().all()
    assert (df.order <= df.click).all() and ((df.gmv > 0) == (df.order == 1)).all()
    assert df.rating.between(1, 5).all() and set(df.user_type) <= set(sc.group_names)
    # the shown list is the default-weight ranking of the same requests
    ctx = sc.sample_contexts(300, _gen(7))
    idx = sc.rank(ctx, sc.static_default_weights)[:, 0]
    pos = torch.tensor(df.position.to_numpy()).reshape(300, 30)
    assert torch.equal(torch.gather(pos, 1, idx), torch.arange(1, 11).expand(300, 10))
    assert torch.allclose(torch.tensor(df.p_order.to_numpy()).reshape(300, 30), ctx.extra["pred"][..., 1])
    # reproducible, and the labels follow the truth (clicks per request vs expected, 4 SE)
    assert df.equals(sc.simulate_log(300, seed=7)) and not df.equals(sc.simulate_log(300, seed=8))
    big = sc.simulate_log(3000, seed=1, include_truth=True)
    assert {"true_p_click", "true_p_order", "true_order_value", "examination"} <= set(big.columns)
    clicks = big.groupby("request_id").click.sum()
    expected = (big.examination * big.true_p_click).groupby(big.request_id).sum()
    assert abs(clicks.mean() - expected.mean()) < 4 * clicks.std() / math.sqrt(3000)


def test_reproducible():
    sc = SearchScenario()
    a, b = sc.sample_contexts(200, _gen(3)), sc.sample_contexts(200, _gen(3))
    assert torch.equal(a.obs, b.obs) and all(torch.equal(a.extra[k], b.extra[k]) for k in a.extra)
    w = _random_weights(200, 4)
    ra, rb = sc.reward(a, w, _gen(9)), sc.reward(b, w, _gen(9))
    assert all(torch.equal(ra[k], rb[k]) for k in ra)
    assert torch.equal(SearchScenario(seed=1).oracle_candidates, SearchScenario(seed=1).oracle_candidates)
    assert not torch.equal(SearchScenario(seed=1).oracle_candidates, SearchScenario(seed=2).oracle_candidates)
    assert torch.equal(sc.oracle_actions(a), sc.oracle_actions(b))


def test_other_tasks_and_grid():
    g = simplex_grid(3, 0.05)
    assert g.shape == (231, 3) and torch.allclose(g.sum(1), torch.ones(231, dtype=g.dtype))
    assert simplex_grid(4, 0.25).shape == (35, 4)
    sc = SearchScenario(tasks=["p_ctcvr", "order_value"], default_weights=[0.7, 0.3], n_candidates=12, k=4)
    assert sc.action_spec == {"kind": "dirichlet", "n_components": 2}
    ctx = sc.sample_contexts(100, _gen())
    assert ctx.extra["scores"].shape == (100, 12, 2)
    assert sc.oracle_actions(ctx).shape == (100, 2) and sc.reward(ctx, _random_weights(100, 3, k=2), _gen())["rules"].shape == (100, 3)


def test_bad_configs():
    with pytest.raises(ValidationError, match="extra"):
        SearchConfig(nonsense=1)
    with pytest.raises(ValidationError, match="sum to 1"):
        SearchScenario(user_types=[UserType(name="a", share=0.5), UserType(name="b", share=0.4)])
    with pytest.raises(ValidationError, match="distinct"):
        SearchScenario(user_types=[UserType(name="a", share=0.5), UserType(name="a", share=0.5)])
    with pytest.raises(ValidationError, match="exceeds"):
        SearchScenario(k=40)
    with pytest.raises(ValidationError, match="one per task"):
        SearchScenario(default_weights=[0.5, 0.5])
    with pytest.raises(ValidationError, match="sum to 1"):
        SearchScenario(default_weights=[0.5, 0.5, 0.5])
    with pytest.raises(ValidationError, match="examination"):
        SearchScenario(examination=[1.0, 0.5])
    with pytest.raises(ValidationError, match="geometric"):
        SearchScenario(position_bias="geometric", position_decay=1.5)
    with pytest.raises(ValidationError, match="tasks must be distinct"):
        SearchScenario(tasks=["p_click", "p_click"], default_weights=[0.5, 0.5])
    with pytest.raises(ValidationError, match="rule_floor"):
        SearchScenario(rule_floor=0.4)
    with pytest.raises(ValidationError, match="oracle_step"):
        SearchScenario(oracle_step=0.3)
    with pytest.raises(ValidationError):
        SearchScenario(miscalibration=-1.0)
    with pytest.raises(ValueError, match="either"):
        SearchScenario(SearchConfig(), k=5)
    with pytest.raises(ValueError, match="one weight vector per request"):
        SearchScenario().true_metrics(SearchScenario().sample_contexts(5, _gen()), torch.ones(5, 2, 3))


def test_grpo_runs_on_the_composite_reward():
    sc = SearchScenario(n_candidates=20, k=5)
    cfg = GRPOConfig(steps=3, batch_size=64, group_size=4, device="cpu", eval_every=3, eval_size=128,
                     reward_weights={"posterior": 1.0, "prior": 0.5, "rules": 1.0})
    trainer = GRPOTrainer(Policy(MLPTorso(sc.obs_dim), DirichletHead(3)), sc, cfg)
    summary = trainer.train()
    assert summary["oracle"]["value"] >= summary["policies"]["grpo"]["value"] - 1e-6


def test_posterior_coefficients_shape_the_prior_and_the_truth():
    """With orders in the posterior (a_o = 30), the prior, the expected reward and the oracle follow the same utility."""
    sc = SearchScenario(posterior_order=30.0, posterior_click=0.5)
    ctx = sc.sample_contexts(500, _gen())
    w = _random_weights(500, 3)
    out = sc.expected_outcomes(ctx, w)
    assert torch.allclose(sc.expected_reward(ctx, w), out["gmv"] + 30 * out["orders"] + 0.5 * out["clicks"], rtol=1e-5)
    idx = sc.rank(ctx, w)
    p = ctx.extra["pred"]
    u = 0.5 * p[..., 0] + 30 * p[..., 0] * p[..., 1] + p[..., 0] * p[..., 1] * p[..., 2]
    ref = (torch.gather(u, 1, idx.reshape(500, -1)).reshape(500, 3, 10) * sc.examination).sum(-1)
    assert torch.allclose(sc.prior_utility(ctx, w), ref, rtol=1e-5)
    assert torch.allclose(sc.reward(ctx, w, _gen(1))["prior"], ref, rtol=1e-5)
    # the oracle now maximizes the same utility: it beats the GMV-only oracle on it
    gmv_only = SearchScenario()
    small = ctx.index(torch.arange(60))
    mixed = sc.expected_reward(small, sc.oracle_actions(small)[:, None]).mean()
    assert float(mixed) >= float(sc.expected_reward(small, gmv_only.oracle_actions(small)[:, None]).mean())


def test_simulate_log_policies():
    sc = SearchScenario()
    default = sc.simulate_log(50, seed=3)
    assert default.equals(sc.simulate_log(50, "default", seed=3))
    uni = sc.simulate_log(50, "uniform", seed=3)
    # the same requests, other shown lists: the uniform weights rank differently in most requests
    assert np.array_equal(uni.p_click.to_numpy(), default.p_click.to_numpy())
    differs = (uni.position.to_numpy() != default.position.to_numpy()).reshape(50, 30).any(1)
    assert differs.mean() > 0.5
    with pytest.raises(ValueError, match="policy must be"):
        sc.simulate_log(10, "targeting")
    with pytest.raises(ValueError, match="do not pass weights"):
        sc.simulate_log(10, "uniform", weights=torch.tensor([0.2, 0.3, 0.5]))
