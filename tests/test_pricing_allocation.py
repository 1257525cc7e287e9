"""The pricing and budget-allocation scenarios: rewards vs closed forms, oracles vs grids, baselines,
reproducibility, config validation and a short GRPO learning run on each."""

import pytest
import torch
from pydantic import ValidationError

from grpokit.config import GRPOConfig
from grpokit.grpo.trainer import GRPOTrainer
from grpokit.policy import BetaHead, DirichletHead, MLPTorso, Policy
from grpokit.scenarios.allocation import AllocationScenario
from grpokit.scenarios.gym_env import ScenarioEnv
from grpokit.scenarios.pricing import PricingConfig, PricingScenario


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# pricing
# ---------------------------------------------------------------------------------------------


def test_pricing_interface():
    sc = PricingScenario()
    assert sc.action_spec == {"kind": "beta", "low": 0.6, "high": 2.5}
    assert sc.n_groups == 3 and sc.group_names == ["students", "regulars", "business"]
    ctx = sc.sample_contexts(20000, _gen())
    assert ctx.obs.shape == (20000, sc.obs_dim) and ctx.obs.dtype == torch.float32
    shares = torch.bincount(ctx.group, minlength=3).float() / len(ctx)
    assert torch.allclose(shares, torch.tensor([0.35, 0.45, 0.20]), atol=0.01)
    # the noisy indicators reveal the group most of the time; column n_groups is the competitor z-score
    assert float((ctx.obs[:, :3].argmax(1) == ctx.group).float().mean()) > 0.95
    log_ratio = (ctx.extra["competitor_price"] / 10.0).log()
    assert torch.allclose(log_ratio, 0.2 * ctx.obs[:, 3], atol=1e-5)
    m = torch.rand(20000, 5, generator=_gen(1)) * 1.9 + 0.6
    assert sc.reward(ctx, m, _gen(2)).shape == (20000, 5)
    assert sc.expected_reward(ctx, m).shape == (20000, 5)
    assert sc.oracle_actions(ctx).shape == (20000,)


def test_pricing_demand_moves_the_right_way():
    sc = PricingScenario()
    ctx = sc.sample_contexts(2000, _gen())
    m = torch.linspace(0.6, 2.5, 50).expand(2000, 50)
    q = sc.purchase_probability(ctx, m)
    assert bool((q.diff(dim=1) < 0).all())  # a higher price sells less
    # a dearer competitor raises demand (every default group has competitor sensitivity > 0)
    dear = ctx.index(slice(None))
    dear.extra = {**ctx.extra, "competitor_price": ctx.extra["competitor_price"] * 1.5}
    assert bool((sc.purchase_probability(dear, m) > q).all())


def test_pricing_rewards_match_expectations():
    sc = PricingScenario()
    ctx = sc.sample_contexts(4096, _gen())
    m = torch.rand(4096, 16, generator=_gen(1)) * (sc.high - sc.low) + sc.low
    r = sc.reward(ctx, m, _gen(2))
    margin = m * 10.0 - 6.0
    assert bool(((r == 0) | torch.isclose(r, margin)).all())  # no sale, or one sale at the margin
    mean = sc.expected_reward(ctx, m)
    q = sc.purchase_probability(ctx, m)
    se = (margin**2 * q * (1 - q)).mean().sqrt() / (r.numel() ** 0.5)
    assert abs(float(r.mean() - mean.mean())) < 4 * float(se)
    for g in range(3):  # per group too
        sel = ctx.group == g
        se_g = (margin[sel] ** 2 * q[sel] * (1 - q[sel])).mean().sqrt() / (r[sel].numel() ** 0.5)
        assert abs(float(r[sel].mean() - mean[sel].mean())) < 4 * float(se_g)


def test_pricing_oracle_beats_a_fine_grid_and_the_fixed_price():
    sc = PricingScenario()
    ctx = sc.sample_contexts(1000, _gen(3))
    best = sc.oracle_actions(ctx).double()
    assert bool(((best >= sc.low) & (best <= sc.high)).all())
    oracle = sc.expected_reward(ctx, best[:, None])[:, 0]
    grid = torch.linspace(sc.low, sc.high, 2001, dtype=torch.float64)
    values = sc.expected_reward(ctx, grid.expand(1000, -1))
    assert bool((oracle >= values.max(1).values - 1e-6).all())  # float32 actions: ~1e-8 at a bound
    step = float(grid[1] - grid[0])
    assert float((best - grid[values.argmax(1)]).abs().max()) <= step + 1e-9
    # the optimum differs by group: students cheapest, business dearest
    by_group = [float(best[ctx.group == g].mean()) for g in range(3)]
    assert by_group[0] < by_group[1] < by_group[2]
    # the best fixed price is a grid optimum of the mean margin and never beats the oracle
    fixed = sc.best_fixed_price()
    coarse = [sc.fixed_price_value(float(m)) for m in torch.linspace(sc.low, sc.high, 39)]
    assert sc.fixed_price_value(fixed) >= max(coarse) - 1e-12
    fixed_values = sc.expected_reward(ctx, torch.full((1000, 1), fixed, dtype=torch.float64))[:, 0]
    assert bool((oracle >= fixed_values - 1e-9).all())
    assert float(oracle.mean()) > 1.1 * float(fixed_values.mean())


def test_pricing_oracle_at_the_bounds():
    # no price sensitivity: the margin grows with the price, so the best multiplier is high
    flat = PricingScenario(elasticities=[0, 0, 0], competitor_sensitivities=[0, 0, 0])
    ctx = flat.sample_contexts(100, _gen())
    assert torch.allclose(flat.oracle_actions(ctx), torch.full((100,), 2.5))
    # very elastic demand and no cost: the best multiplier is the lowest allowed
    steep = PricingScenario(elasticities=[30, 30, 30], reference_prices=[5, 5, 5], intercepts=[0, 0, 0],
                            unit_cost=0.0, low=1.0)
    ctx = steep.sample_contexts(100, _gen())
    assert torch.allclose(steep.oracle_actions(ctx), torch.full((100,), 1.0))
    # zero cost, interior optimum: still the grid's optimum
    free = PricingScenario(unit_cost=0.0)
    ctx = free.sample_contexts(200, _gen())
    grid = torch.linspace(free.low, free.high, 2001, dtype=torch.float64)
    values = free.expected_reward(ctx, grid.expand(200, -1))
    oracle = free.expected_reward(ctx, free.oracle_actions(ctx).double()[:, None])[:, 0]
    assert bool((oracle >= values.max(1).values - 1e-6).all())  # float32 actions: ~1e-8 at a bound
    # actions outside [low, high] are scored at the bound
    sc = PricingScenario()
    ctx = sc.sample_contexts(10, _gen())
    out = sc.expected_reward(ctx, torch.tensor([[0.1, 9.0]]).expand(10, 2))
    at = sc.expected_reward(ctx, torch.tensor([[0.6, 2.5]]).expand(10, 2))
    assert torch.equal(out, at)


def test_pricing_is_reproducible():
    a, b = PricingScenario(), PricingScenario()
    ca, cb = a.sample_contexts(256, _gen(5)), b.sample_contexts(256, _gen(5))
    assert torch.equal(ca.obs, cb.obs) and torch.equal(ca.group, cb.group)
    m = torch.full((256, 4), 1.2)
    assert torch.equal(a.reward(ca, m, _gen(6)), b.reward(cb, m, _gen(6)))
    assert not torch.equal(a.sample_contexts(256, _gen(7)).obs, ca.obs)
    assert a.best_fixed_price(n_contexts=2000) == b.best_fixed_price(n_contexts=2000)
    assert PricingScenario(PricingConfig(seed=1)).baseline_contexts().obs.ne(a.baseline_contexts().obs).any()


@pytest.mark.parametrize(
    "params, fragment",
    [
        ({"shares": [0.5, 0.5]}, "one per group"),
        ({"shares": [0.5, 0.4, 0.2]}, "sum to 1"),
        ({"shares": [1.2, -0.1, -0.1]}, "positive"),
        ({"low": 2.0, "high": 1.5}, "low must be < scenario.high"),
        ({"low": 1.0, "high": 1.0}, "low must be <"),
        ({"low": 0.0}, "low"),
        ({"unit_cost": -1.0}, "unit_cost"),
        ({"unit_cost": 30.0}, "no price"),
        ({"elasticities": [1.0, -1.0, 1.0]}, "elasticities"),
        ({"competitor_sensitivities": [1.0, -1.0, 1.0]}, "competitor_sensitivities"),
        ({"reference_prices": [8.0, 0.0, 18.0]}, "reference_prices"),
        ({"group_names": ["a", "a", "b"]}, "distinct"),
        ({"base_price": float("nan")}, "base_price"),
        ({"colour": "red"}, "colour"),
        ({"name": "allocation"}, "name"),
    ],
)
def test_pricing_config_errors(params, fragment):
    with pytest.raises((ValidationError, ValueError), match=fragment):
        PricingScenario(**params)


def test_pricing_config_or_params_not_both():
    with pytest.raises(ValueError, match="not both"):
        PricingScenario(PricingConfig(), seed=1)


# ---------------------------------------------------------------------------------------------
# allocation
# ---------------------------------------------------------------------------------------------


def _simplex_grid(n: int) -> torch.Tensor:
    """All points (i, j, n − i − j) / n of the 3-simplex."""
    pts = [(i, j, n - i - j) for i in range(n + 1) for j in range(n + 1 - i)]
    return torch.tensor(pts, dtype=torch.float64) / n


def test_allocation_interface():
    sc = AllocationScenario()
    assert sc.action_spec == {"kind": "dirichlet", "n_components": 4}
    assert sc.n_groups == 3 and sc.obs_dim == 3 + 3 + 1
    ctx = sc.sample_contexts(5000, _gen())
    assert ctx.obs.shape == (5000, sc.obs_dim)
    assert bool(((ctx.extra["budget"] >= 50) & (ctx.extra["budget"] <= 150)).all())
    w = torch.distributions.Dirichlet(torch.ones(4)).sample((5000, 6))
    assert sc.reward(ctx, w, _gen(1)).shape == (5000, 6)
    best = sc.oracle_actions(ctx)
    assert best.shape == (5000, 4) and torch.allclose(best.sum(1), torch.ones(5000))
    # market conditions change which channel gets the largest share within a group
    g0 = best[ctx.group == 0].argmax(1)
    assert g0.unique().numel() >= 2


def test_allocation_rewards_match_expectations():
    sc = AllocationScenario(noise_std=5.0)
    ctx = sc.sample_contexts(2048, _gen())
    w = torch.distributions.Dirichlet(torch.ones(4)).sample((2048, 8))
    r = sc.reward(ctx, w, _gen(1))
    mean = sc.expected_reward(ctx, w)
    se = 5.0 / r.numel() ** 0.5
    assert abs(float(r.mean() - mean.mean())) < 4 * se
    assert float((r - mean).std()) == pytest.approx(5.0, rel=0.05)
    # noise-free rewards equal the expectation; the components add up to the total
    exact = AllocationScenario(noise_std=0.0)
    assert torch.equal(exact.reward(ctx, w, _gen(1)), exact.expected_reward(ctx, w))
    parts = AllocationScenario(noise_std=5.0, reward_components=True).reward(ctx, w, _gen(1))
    assert set(parts) == {"revenue", "target_penalty"} and bool((parts["target_penalty"] <= 0).all())
    assert torch.allclose(parts["revenue"] + parts["target_penalty"], r, atol=1e-4)


def test_allocation_closed_form():
    sc = AllocationScenario(channel_names=["a", "b"], group_names=["g"], shares=[1.0], productivity=[[10.0, 20.0]],
                            saturation=[5.0, 10.0], targets=[[4.0, 0.0]], penalty=2.0, n_conditions=0,
                            budget_min=10.0, budget_max=10.0)
    ctx = sc.sample_contexts(3, _gen())
    w = torch.tensor([[0.1, 0.9], [0.5, 0.5]], dtype=torch.float64).expand(3, 2, 2)
    x = 10.0 * w
    ra = 10 * (1 - torch.exp(-x[..., 0] / 5))
    rb = 20 * (1 - torch.exp(-x[..., 1] / 10))
    expect = ra + rb - 2.0 * (4.0 - ra).clamp_min(0)
    assert torch.allclose(sc.expected_reward(ctx, w), expect)
    log = AllocationScenario(**{**sc.config.model_dump(), "response": "log"})
    ra, rb = 10 * torch.log1p(x[..., 0] / 5), 20 * torch.log1p(x[..., 1] / 10)
    assert torch.allclose(log.expected_reward(ctx, w), ra + rb - 2.0 * (4.0 - ra).clamp_min(0))


@pytest.mark.parametrize("response", ["exp", "log"])
@pytest.mark.parametrize("penalty", [0.0, 1.0, 4.0])
def test_allocation_oracle_matches_a_brute_force_simplex_grid(response, penalty):
    sc = AllocationScenario(channel_names=["a", "b", "c"], response=response, penalty=penalty, target_fraction=0.4,
                            seed=2)
    ctx = sc.sample_contexts(12, _gen(4))
    best = sc.oracle_actions(ctx).double()
    oracle = sc.expected_reward(ctx, best[:, None])[:, 0]
    grid = _simplex_grid(300)
    values = sc.expected_reward(ctx, grid.expand(12, -1, -1))
    top = values.max(1).values
    assert bool((oracle >= top - 1e-6).all())  # nothing on the grid beats the oracle
    assert bool((oracle - top <= 1e-3 * top.abs()).all())  # and the grid comes close to it
    assert float((best - grid[values.argmax(1)]).abs().max()) < 0.02


def test_allocation_oracle_beats_random_splits_and_fixed_baselines():
    sc = AllocationScenario()
    ctx = sc.sample_contexts(500, _gen(8))
    best = sc.oracle_actions(ctx).double()
    oracle = sc.expected_reward(ctx, best[:, None])[:, 0]
    # local perturbations and random splits never do better
    noise = torch.distributions.Dirichlet(torch.full((4,), 50.0)).sample((500, 16)).double()
    for w in (noise, 0.9 * best[:, None] + 0.1 * noise, torch.distributions.Dirichlet(torch.ones(4)).sample((500, 16))):
        assert bool((sc.expected_reward(ctx, w.double()) <= oracle[:, None] + 1e-9).all())
    equal = sc.expected_reward(ctx, torch.full((500, 1, 4), 0.25, dtype=torch.float64))[:, 0]
    fixed_split = sc.best_fixed_split()
    assert torch.allclose(fixed_split.sum(), torch.tensor(1.0)) and bool((fixed_split >= 0).all())
    fixed = sc.expected_reward(ctx, fixed_split.double().expand(500, 1, 4))[:, 0]
    assert bool((oracle >= equal - 1e-9).all()) and bool((oracle >= fixed - 1e-9).all())
    assert float(oracle.mean()) > float(fixed.mean()) > float(equal.mean())
    assert sc.fixed_split_value(fixed_split) >= sc.equal_split()
    # best_fixed_split is (near) the best split on a grid of fixed splits (K = 3 variant)
    k3 = AllocationScenario(channel_names=["a", "b", "c"])
    base = k3.baseline_contexts(4000)
    w = k3.best_fixed_split(contexts=base)
    grid_values = [k3.fixed_split_value(g, base) for g in _simplex_grid(40)]
    assert k3.fixed_split_value(w, base) >= max(grid_values) - 1e-3


def test_allocation_penalty_pushes_channels_to_targets():
    free = AllocationScenario(penalty=0.0)
    strict = AllocationScenario(penalty=50.0)
    ctx = free.sample_contexts(2000, _gen())
    targets = free.targets[ctx.group]

    def shortfall(sc):
        r = sc.channel_returns(ctx, sc.oracle_actions(ctx).double()[:, None])[:, 0]
        return (targets - r).clamp_min(0).sum(1).mean()

    assert float(shortfall(strict)) < 0.2 * float(shortfall(free))


def test_allocation_is_reproducible():
    a, b, c = AllocationScenario(seed=3), AllocationScenario(seed=3), AllocationScenario(seed=4)
    assert torch.equal(a.productivity, b.productivity) and torch.equal(a.loadings, b.loadings)
    assert not torch.equal(a.productivity, c.productivity)
    ca, cb = a.sample_contexts(128, _gen(1)), b.sample_contexts(128, _gen(1))
    assert torch.equal(ca.obs, cb.obs) and torch.equal(ca.extra["productivity"], cb.extra["productivity"])
    w = torch.full((128, 3, 4), 0.25)
    assert torch.equal(a.reward(ca, w, _gen(2)), b.reward(cb, w, _gen(2)))
    assert torch.equal(a.oracle_actions(ca), b.oracle_actions(cb))
    assert a.equal_split() == b.equal_split()


@pytest.mark.parametrize(
    "params, fragment",
    [
        ({"shares": [0.5, 0.5]}, "one per group"),
        ({"shares": [0.5, 0.3, 0.3]}, "sum to 1"),
        ({"channel_names": ["only"]}, "at least 2"),
        ({"productivity": [[1.0, 2.0]]}, "productivity must be a"),
        ({"productivity": [[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1]]}, "> 0"),
        ({"targets": [[1, 1, 1, -1], [1, 1, 1, 1], [1, 1, 1, 1]]}, ">= 0"),
        ({"saturation": [1.0, 2.0]}, "saturation"),
        ({"budget_min": 100.0, "budget_max": 50.0}, "budget_max"),
        ({"budget_min": -1.0}, "budget_min"),
        ({"penalty": -1.0}, "penalty"),
        ({"noise_std": -0.1}, "noise_std"),
        ({"response": "linear"}, "response"),
        ({"budget": 100.0}, "budget"),
    ],
)
def test_allocation_config_errors(params, fragment):
    with pytest.raises((ValidationError, ValueError), match=fragment):
        AllocationScenario(**params)


def test_both_scenarios_work_as_gym_envs():
    for sc in (PricingScenario(), AllocationScenario()):
        env = ScenarioEnv(sc)
        obs, _ = env.reset(seed=0)
        assert obs.shape == (sc.obs_dim,)
        _, reward, terminated, _, info = env.step(env.action_space.sample())
        assert terminated and info["oracle_reward"] >= info["expected_reward"] - 1e-5


# ---------------------------------------------------------------------------------------------
# learning
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["pricing", "allocation"])
def test_grpo_learns_both_scenarios(kind):
    torch.manual_seed(0)
    if kind == "pricing":
        sc = PricingScenario()
        head = BetaHead(sc.low, sc.high)
    else:
        sc = AllocationScenario()
        head = DirichletHead(sc.n_channels)
    trainer = GRPOTrainer(Policy(MLPTorso(sc.obs_dim), head), sc, GRPOConfig(steps=200, device="cpu", eval_every=50))
    summary = trainer.train()
    oracle = summary["oracle"]["value"]
    start, final = trainer.eval_history[0]["value"], summary["policies"]["grpo"]["value"]
    if kind == "pricing":
        baseline = sc.fixed_price_value(sc.best_fixed_price(contexts=trainer.eval_contexts), trainer.eval_contexts)
    else:
        baseline = sc.fixed_split_value(sc.best_fixed_split(contexts=trainer.eval_contexts), trainer.eval_contexts)
    # the trained policy beats its start and the best context-free decision, and nears the oracle
    assert final > start + 0.05 * oracle
    assert final > baseline
    assert final > (0.93 if kind == "pricing" else 0.97) * oracle  # measured: 0.954 and 0.991
