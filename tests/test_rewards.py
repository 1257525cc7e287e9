"""Business reward components (src/grpokit/rewards): hand-computed values, numpy/scipy, a toy budget."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.stats as st
import torch

from grpokit.rewards import (
    BudgetMultiplier,
    RewardComposer,
    cohort_median,
    cohort_percentile_rank,
    profit,
    relative_to_cohort_median,
    uplift,
)

DT = torch.float64
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _t(x, dtype=DT):
    return torch.tensor(x, dtype=dtype)


# -- uplift / profit ------------------------------------------------------------------------------


def test_uplift_per_context_control():
    outcome = _t([[3.0, 5.0, 2.0], [1.0, 1.0, 4.0]])
    control = _t([2.0, 1.0])
    # row 0: [3-2, 5-2, 2-2] = [1, 3, 0];  row 1: [1-1, 1-1, 4-1] = [0, 0, 3]
    torch.testing.assert_close(uplift(outcome, control), _t([[1.0, 3.0, 0.0], [0.0, 0.0, 3.0]]))
    torch.testing.assert_close(uplift(outcome, control[:, None]), _t([[1.0, 3.0, 0.0], [0.0, 0.0, 3.0]]))


def test_uplift_per_sample_control():
    outcome = _t([[3.0, 5.0], [1.0, 4.0]])
    control = _t([[1.0, 5.5], [2.0, 0.0]])
    # [3-1, 5-5.5] = [2, -0.5];  [1-2, 4-0] = [-1, 4]
    torch.testing.assert_close(uplift(outcome, control), _t([[2.0, -0.5], [-1.0, 4.0]]))


def test_uplift_bad_shapes():
    with pytest.raises(ValueError, match="outcome_control"):
        uplift(torch.zeros(2, 3), torch.zeros(3))
    with pytest.raises(ValueError, match=r"\[B, G\]"):
        uplift(torch.zeros(6), torch.zeros(6))


def test_profit():
    revenue = _t([[10.0, 4.0], [0.0, 2.5]])
    # [10-3, 4-6] = [7, -2];  [0-0, 2.5-1] = [0, 1.5]
    torch.testing.assert_close(profit(revenue, _t([[3.0, 6.0], [0.0, 1.0]])), _t([[7.0, -2.0], [0.0, 1.5]]))
    # per-context cost [B, 1]: [10-1, 4-1], [0-2, 2.5-2]
    torch.testing.assert_close(profit(revenue, _t([[1.0], [2.0]])), _t([[9.0, 3.0], [-2.0, 0.5]]))
    with pytest.raises(ValueError, match="broadcast"):
        profit(torch.zeros(2, 1), torch.zeros(2, 3))


# -- cohort median --------------------------------------------------------------------------------


def test_relative_to_cohort_median_even_counts_hand():
    values = _t([[1.0, 2.0, 3.0], [10.0, 20.0, 30.0], [5.0, 7.0, 9.0], [4.0, 0.0, 8.0]])
    group = torch.tensor([0, 1, 0, 1])
    # cohort 0 pools rows 0, 2: {1, 2, 3, 5, 7, 9}, n = 6, two middles 3 and 5 -> median 4
    # cohort 1 pools rows 1, 3: {0, 4, 8, 10, 20, 30}, two middles 8 and 10 -> median 9
    # cohort 2 is absent -> NaN
    med = cohort_median(values, group, 3)
    torch.testing.assert_close(med[:2], _t([4.0, 9.0]))
    assert math.isnan(float(med[2]))
    expected = [[1 - 4, 2 - 4, 3 - 4], [10 - 9, 20 - 9, 30 - 9], [5 - 4, 7 - 4, 9 - 4], [4 - 9, 0 - 9, 8 - 9]]
    torch.testing.assert_close(relative_to_cohort_median(values, group, 3), _t(expected))


def test_relative_to_cohort_median_odd_count_and_ties_hand():
    # cohort 0: {4, 1, 7} -> sorted 1, 4, 7 -> median 4
    # cohort 1: {2, 2, 2, 2, 9, 0} -> sorted 0, 2, 2, 2, 2, 9 -> middles 2, 2 -> median 2
    values = _t([[4.0, 1.0, 7.0], [2.0, 2.0, 9.0], [2.0, 0.0, 2.0]])
    group = torch.tensor([0, 1, 1])
    out = relative_to_cohort_median(values, group, 2)
    torch.testing.assert_close(out, _t([[0.0, -3.0, 3.0], [0.0, 0.0, 7.0], [0.0, -2.0, 0.0]]))


def test_relative_to_cohort_median_reference_hand():
    values = _t([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    group = torch.tensor([0, 1, 0])
    # reference values (e.g. a baseline policy's), K = 3 per context:
    # cohort 0 pools rows 0, 2: {0, 0, 0, 2, 2, 2} -> middles 0 and 2 -> median 1
    # cohort 1 pools row 1: {10, 1, 100} -> sorted 1, 10, 100 -> median 10
    reference = _t([[0.0, 0.0, 0.0], [10.0, 1.0, 100.0], [2.0, 2.0, 2.0]])
    out = relative_to_cohort_median(values, group, 2, reference=reference)
    torch.testing.assert_close(out, _t([[0.0, 1.0], [-7.0, -6.0], [4.0, 5.0]]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cohort_median_matches_numpy_per_cohort(seed):
    rng = np.random.default_rng(seed)
    b, g, n_groups = 37, 4, 6  # cohort 5 never drawn; odd and even pooled counts both occur
    group = rng.integers(0, 5, size=b)
    values = rng.integers(0, 7, size=(b, g)).astype(np.float64)  # many ties
    values[: b // 2] += rng.normal(size=(b // 2, g))  # and some distinct values
    vt, gt = torch.from_numpy(values), torch.from_numpy(group)
    med = cohort_median(vt, gt, n_groups).numpy()
    out = relative_to_cohort_median(vt, gt, n_groups).numpy()
    counts = set()
    for c in range(n_groups):
        rows = group == c
        if not rows.any():
            assert np.isnan(med[c])
            continue
        counts.add(int(rows.sum() * g) % 2)
        np.testing.assert_allclose(med[c], np.median(values[rows]), rtol=0, atol=1e-12)
        np.testing.assert_allclose(out[rows], values[rows] - np.median(values[rows]), rtol=0, atol=1e-12)
    # an odd G makes odd pooled counts possible too
    vodd = torch.from_numpy(values[:, :3].copy())
    med_odd = cohort_median(vodd, gt, n_groups).numpy()
    for c in range(5):
        rows = group == c
        if rows.any():
            counts.add(int(rows.sum() * 3) % 2)
            np.testing.assert_allclose(med_odd[c], np.median(values[rows, :3]), rtol=0, atol=1e-12)
    assert counts == {0, 1}


def test_cohort_median_with_reference_matches_numpy():
    rng = np.random.default_rng(7)
    b, g, k = 30, 5, 2
    group = rng.integers(0, 3, size=b)
    values, reference = rng.normal(size=(b, g)), rng.integers(0, 4, size=(b, k)).astype(float)
    out = relative_to_cohort_median(torch.from_numpy(values), torch.from_numpy(group), 3, torch.from_numpy(reference))
    for c in range(3):
        rows = group == c
        np.testing.assert_allclose(out.numpy()[rows], values[rows] - np.median(reference[rows]), atol=1e-12)


def test_relative_median_permutation_equivariant_and_dtypes():
    gen = torch.Generator().manual_seed(3)
    values = torch.randint(0, 5, (20, 4), generator=gen).float()
    group = torch.randint(0, 3, (20,), generator=gen)
    perm = torch.randperm(20, generator=gen)
    out = relative_to_cohort_median(values, group, 3)
    assert out.dtype == torch.float32
    torch.testing.assert_close(relative_to_cohort_median(values[perm], group[perm], 3), out[perm])
    # integer values are promoted to the default float dtype
    torch.testing.assert_close(relative_to_cohort_median(values.long(), group, 3), out)


# -- cohort percentile rank ----------------------------------------------------------------------


def test_cohort_percentile_rank_hand():
    values = _t([[1.0, 2.0, 2.0], [7.0, 8.0, 6.0], [5.0, 0.0, 5.0], [7.0, 7.0, 7.0]])
    group = torch.tensor([0, 1, 0, 1])
    # rank = (less + equal / 2) / n, equal counting the value itself
    # cohort 0 pools {1, 2, 2, 5, 0, 5}, n = 6:
    #   0: (0 + 1/2)/6 = 1/12;  1: (1 + 1/2)/6 = 1/4;  2: (2 + 2/2)/6 = 1/2;  5: (4 + 2/2)/6 = 5/6
    # cohort 1 pools {7, 8, 6, 7, 7, 7}, n = 6:
    #   6: (0 + 1/2)/6 = 1/12;  7: (1 + 4/2)/6 = 1/2;  8: (5 + 1/2)/6 = 11/12
    expected = [[1 / 4, 1 / 2, 1 / 2], [1 / 2, 11 / 12, 1 / 12], [5 / 6, 1 / 12, 5 / 6], [1 / 2, 1 / 2, 1 / 2]]
    torch.testing.assert_close(cohort_percentile_rank(values, group, 2), _t(expected))


def test_cohort_percentile_rank_single_and_distinct():
    # one value: (0 + 1/2)/1 = 1/2; n distinct values: (j - 1/2)/n = 1/8, 3/8, 5/8, 7/8
    torch.testing.assert_close(cohort_percentile_rank(_t([[3.0]]), torch.tensor([0]), 1), _t([[0.5]]))
    out = cohort_percentile_rank(_t([[4.0, -1.0], [0.5, 9.0]]), torch.tensor([2, 2]), 3)
    torch.testing.assert_close(out, _t([[5 / 8, 1 / 8], [3 / 8, 7 / 8]]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cohort_percentile_rank_matches_scipy_per_cohort(seed):
    rng = np.random.default_rng(seed)
    b, g, n_groups = 41, 5, 7  # cohorts 5, 6 absent
    group = rng.integers(0, 5, size=b)
    values = rng.integers(-3, 4, size=(b, g)).astype(np.float64)  # heavy ties
    values[::3] += 0.25 * rng.normal(size=values[::3].shape)
    out = cohort_percentile_rank(torch.from_numpy(values), torch.from_numpy(group), n_groups).numpy()
    assert out.shape == (b, g)
    for c in range(5):
        rows = group == c
        pooled = values[rows].ravel()
        expected = st.percentileofscore(pooled, values[rows].ravel(), kind="mean") / 100
        np.testing.assert_allclose(out[rows].ravel(), expected, rtol=0, atol=1e-12)
        assert abs(out[rows].mean() - 0.5) < 1e-12  # mid-ranks average exactly 1/2
    assert ((out > 0) & (out < 1)).all()


def test_cohort_percentile_rank_permutation_equivariant():
    gen = torch.Generator().manual_seed(5)
    values = torch.randint(0, 4, (25, 3), generator=gen).float()
    group = torch.randint(0, 2, (25,), generator=gen)
    perm = torch.randperm(25, generator=gen)
    out = cohort_percentile_rank(values, group, 2)
    torch.testing.assert_close(cohort_percentile_rank(values[perm], group[perm], 2), out[perm])
    # shifting one cohort's values does not change any rank (ranks are within-cohort)
    shifted = values + 100.0 * (group == 1).float().unsqueeze(1)
    torch.testing.assert_close(cohort_percentile_rank(shifted, group, 2), out)


def test_cohort_functions_validate_inputs():
    v = torch.zeros(3, 2)
    with pytest.raises(ValueError, match=r"cohort ids must lie in \[0, 2\)"):
        cohort_percentile_rank(v, torch.tensor([0, 2, 1]), 2)
    with pytest.raises(ValueError, match="group must have shape"):
        relative_to_cohort_median(v, torch.tensor([0, 1]), 2)
    with pytest.raises(ValueError, match="integer"):
        cohort_median(v, torch.tensor([0.0, 1.0, 1.0]), 2)
    with pytest.raises(ValueError, match="finite"):
        cohort_percentile_rank(torch.tensor([[0.0, math.nan]] * 3), torch.tensor([0, 1, 1]), 2)
    with pytest.raises(ValueError, match="reference"):
        relative_to_cohort_median(v, torch.tensor([0, 1, 1]), 2, reference=torch.zeros(3, 0))


@pytest.mark.parametrize("device", DEVICES)
def test_cohort_functions_stay_on_device(device):
    gen = torch.Generator().manual_seed(0)
    values = torch.randint(0, 6, (64, 8), generator=gen).float()
    group = torch.randint(0, 4, (64,), generator=gen)
    want_rank = cohort_percentile_rank(values, group, 4)
    want_rel = relative_to_cohort_median(values, group, 4)
    got_rank = cohort_percentile_rank(values.to(device), group.to(device), 4)
    got_rel = relative_to_cohort_median(values.to(device), group.to(device), 4)
    assert got_rank.device.type == device and got_rel.device.type == device
    torch.testing.assert_close(got_rank.cpu(), want_rank)
    torch.testing.assert_close(got_rel.cpu(), want_rel)


# -- composer -------------------------------------------------------------------------------------


def test_composer_weights_and_total():
    comp = RewardComposer({"profit": 1.0, "rank_in_cohort": 0.5})
    components = {"profit": _t([[2.0, 4.0]]), "rank_in_cohort": _t([[0.25, 0.75]]), "uplift": _t([[1.0, -1.0]])}
    weighted = comp(components)
    assert list(weighted) == ["profit", "rank_in_cohort", "uplift"]
    torch.testing.assert_close(weighted["profit"], _t([[2.0, 4.0]]))  # 1.0 * [2, 4]
    torch.testing.assert_close(weighted["rank_in_cohort"], _t([[0.125, 0.375]]))  # 0.5 * [0.25, 0.75]
    torch.testing.assert_close(weighted["uplift"], _t([[1.0, -1.0]]))  # no weight -> default 1.0
    # total = [2 + 0.125 + 1, 4 + 0.375 - 1] = [3.125, 3.375]
    torch.testing.assert_close(comp.total(components), _t([[3.125, 3.375]]))
    assert comp.weight("uplift") == 1.0 and comp.weights == {"profit": 1.0, "rank_in_cohort": 0.5}
    # default_weight=0: unweighted components are logged but do not count
    comp0 = RewardComposer({"profit": 2.0}, default_weight=0.0)
    torch.testing.assert_close(comp0.total(components), _t([[4.0, 8.0]]))


def test_composer_unknown_names():
    components = {"profit": torch.zeros(2, 3), "rank_in_cohort": torch.zeros(2, 3)}
    with pytest.raises(ValueError, match=r"\['proft'\].*known components: \['profit', 'rank_in_cohort'\]"):
        RewardComposer({"proft": 1.0})(components)
    with pytest.raises(ValueError, match="proft"):
        RewardComposer({"proft": 1.0}).total(components)
    # with the known names given, a misspelled weight fails at construction
    with pytest.raises(ValueError, match=r"known components: \['profit', 'uplift'\]"):
        RewardComposer({"proft": 1.0}, names=["profit", "uplift"])
    comp = RewardComposer({"profit": 1.0}, names=["profit"])
    with pytest.raises(ValueError, match="rank_in_cohort"):
        comp(components)


def test_composer_validation():
    with pytest.raises(ValueError, match="finite number"):
        RewardComposer({"profit": math.nan})
    with pytest.raises(ValueError, match="finite number"):
        RewardComposer({"profit": "1"})
    with pytest.raises(ValueError, match="same shape"):
        RewardComposer()({"a": torch.zeros(2, 3), "b": torch.zeros(2, 2)})
    with pytest.raises(ValueError, match="non-empty"):
        RewardComposer()({})


def test_composer_components_in_trainer():
    from grpokit.config import GRPOConfig
    from grpokit.grpo.trainer import GRPOTrainer
    from grpokit.policy import CategoricalHead, MLPTorso, Policy
    from grpokit.scenarios import TensorContextSampler

    torch.manual_seed(0)
    sampler = TensorContextSampler(torch.randn(32, 3), group=torch.randint(0, 2, (32,)))
    policy = Policy(MLPTorso(3, [8]), CategoricalHead(3))
    composer = RewardComposer({"profit": 1.0, "rank_in_cohort": 0.5, "budget_penalty": 1.0})
    budget = BudgetMultiplier(budget=0.3, lr=0.5, init=0.2)

    def reward(contexts, actions):
        spend = (actions > 0).float()  # [B, G]
        p = profit(2.0 * actions.float(), spend)
        comps = {
            "profit": p,
            "rank_in_cohort": cohort_percentile_rank(p, contexts.group, 2),
            "budget_penalty": budget.penalty(spend),
        }
        budget.update(spend)
        return composer(comps)

    trainer = GRPOTrainer(policy, reward, GRPOConfig(batch_size=16), context_sampler=sampler, n_groups=2)
    m = trainer.train_step()
    assert {"reward/profit", "reward/rank_in_cohort", "reward/budget_penalty"} <= set(m)
    assert math.isclose(float(m["reward/rank_in_cohort"]), 0.25, rel_tol=1e-6)  # 0.5 * mean rank 1/2
    assert len(budget.history) == 1


# -- budget multiplier ----------------------------------------------------------------------------
# Toy: a policy family indexed by its treat probability p in [0, 1], value v(p) = 2p - p^2 (concave),
# spend s(p) = p. Lagrangian best response: argmax_p 2p - p^2 - λp -> p(λ) = clip(1 - λ/2, 0, 1).
# With budget 0.3 the constraint binds: p* = 0.3 and λ* = v'(0.3) = 2 - 2(0.3) = 1.4.
# With budget >= 1 it does not: p* = 1 (v'(1) = 0), λ* = 0.

GRID = torch.linspace(0.0, 1.0, 1001, dtype=DT)


def _best_response_closed(lam: float) -> float:
    return min(1.0, max(0.0, 1.0 - lam / 2))


def _best_response_grid(lam: float) -> float:
    # the Lagrangian reward r - λ·spend, computed with the multiplier itself, maximized on a grid
    mult = BudgetMultiplier(budget=1.0, lr=1.0, init=lam)
    lagrangian = mult.penalize(2 * GRID - GRID**2, GRID)
    return float(GRID[lagrangian.argmax()])


@pytest.mark.parametrize("best_response", [_best_response_closed, _best_response_grid])
@pytest.mark.parametrize("normalized,lr", [(False, 0.5), (True, 0.15)])
def test_budget_multiplier_converges_to_true_multiplier(best_response, normalized, lr):
    mult = BudgetMultiplier(budget=0.3, lr=lr, normalized=normalized)
    for _ in range(200):
        p = best_response(mult.value)
        mult.update(p)  # spend per decision of the best response: s(p) = p
    p = best_response(mult.value)
    assert abs(p - 0.3) <= 0.01, p
    assert abs(mult.value - 1.4) <= 0.05, mult.value
    assert len(mult.history) == 200 and mult.history[-1] == mult.value


def test_budget_multiplier_with_sampled_spend():
    # the spend is observed as the mean of B·G Bernoulli(p) decisions, as in a training batch
    gen = torch.Generator().manual_seed(0)
    mult = BudgetMultiplier(budget=0.3, lr=0.2)
    for _ in range(300):
        p = _best_response_closed(mult.value)
        spend = torch.bernoulli(torch.full((64, 16), p), generator=gen)  # [B, G]
        mult.update(spend)  # tensor -> its mean
    tail = np.mean(mult.history[-100:])
    assert abs(tail - 1.4) <= 0.05, tail
    assert abs(np.mean(mult.spend_history[-100:]) - 0.3) <= 0.01


def test_budget_multiplier_loose_budget_goes_to_zero():
    mult = BudgetMultiplier(budget=1.2, lr=0.5, init=2.0)
    for _ in range(50):
        mult.update(_best_response_closed(mult.value))
    # spend <= 1 < 1.2 at every p: λ falls by at least 0.5·0.2 a step until projected onto 0
    assert mult.value == 0.0 and min(mult.history) == 0.0
    assert _best_response_closed(mult.value) == 1.0


def test_budget_multiplier_update_arithmetic_and_cap():
    mult = BudgetMultiplier(budget=0.5, lr=2.0)
    assert mult.update(0.75) == pytest.approx(0.5)  # 0 + 2·(0.75 - 0.5)
    assert mult.update(0.0) == 0.0  # max(0, 0.5 + 2·(0 - 0.5)) = max(0, -0.5)
    norm = BudgetMultiplier(budget=0.5, lr=2.0, normalized=True, max_value=1.5)
    assert norm.update(0.75) == pytest.approx(1.0)  # 2·(0.75 - 0.5)/0.5
    assert norm.update(0.75) == pytest.approx(1.5)  # min(1.5, 1 + 1)
    # penalty / penalize: r - λ·spend with λ = 1.5
    spend, r = _t([[1.0, 0.0]]), _t([[2.0, 2.0]])
    torch.testing.assert_close(norm.penalize(r, spend), _t([[0.5, 2.0]]))
    torch.testing.assert_close(norm.penalty(spend), _t([[-1.5, 0.0]]))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"budget": 0.0, "lr": 0.1},
        {"budget": -1.0, "lr": 0.1},
        {"budget": math.inf, "lr": 0.1},
        {"budget": 1.0, "lr": 0.0},
        {"budget": 1.0, "lr": -0.5},
        {"budget": 1.0, "lr": math.nan},
        {"budget": 1.0, "lr": 0.1, "init": -1.0},
    ],
)
def test_budget_multiplier_validation(kwargs):
    with pytest.raises(ValueError):
        BudgetMultiplier(**kwargs)


def test_budget_multiplier_rejects_nonfinite_spend():
    with pytest.raises(ValueError, match="finite"):
        BudgetMultiplier(budget=1.0, lr=0.1).update(math.nan)


def test_budget_multiplier_state_dict_round_trip():
    spends = [0.9, 0.1, 0.5, 0.7, 0.2, 0.65, 0.3, 0.31]
    a = BudgetMultiplier(budget=0.3, lr=0.4)
    for s in spends[:4]:
        a.update(s)
    state = json.loads(json.dumps(a.state_dict()))  # plain JSON
    b = BudgetMultiplier(budget=0.3, lr=0.4)
    b.load_state_dict(state)
    assert b.value == a.value and b.history == a.history and b.spend_history == a.spend_history
    for s in spends[4:]:
        a.update(s)
        b.update(s)
    assert b.history == a.history and b.value == a.value  # exact resume
    # a multiplier with other settings refuses the state unless strict=False
    c = BudgetMultiplier(budget=0.5, lr=0.4)
    with pytest.raises(ValueError, match="budget"):
        c.load_state_dict(state)
    c.load_state_dict(state, strict=False)
    assert c.value == state["value"] and c.budget == 0.5
    with pytest.raises(ValueError, match="missing"):
        c.load_state_dict({"value": 1.0})
