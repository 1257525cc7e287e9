"""Choosing the composite reward's prior weight by held-out feedback (grpokit.ranking.composite)."""

import pytest
import torch

from grpokit.ranking.composite import composite_objective, select_prior_weight
from grpokit.scenarios.search import SearchScenario


def _ctx(sc, n, seed):
    return sc.sample_contexts(n, torch.Generator().manual_seed(seed))


def test_composite_objective_is_the_weighted_mean_reward_with_common_random_numbers():
    sc = SearchScenario()
    ctx = _ctx(sc, 500, 0)
    w = torch.tensor([[0.6, 0.25, 0.15], [0.2, 0.5, 0.3]])
    obj = composite_objective(sc, ctx, {"posterior": 1.0, "prior": 0.5, "rules": 2.0}, seed=3)
    parts = sc.reward(ctx, w.unsqueeze(0).expand(500, -1, -1), torch.Generator().manual_seed(3))
    ref = (parts["posterior"] + 0.5 * parts["prior"] + 2.0 * parts["rules"]).double().mean(0)
    assert torch.allclose(obj(w), ref)
    assert torch.equal(obj(w), obj(w))  # the same draws on every call
    # missing weights count 1
    assert torch.allclose(composite_objective(sc, ctx, {}, 3)(w), (parts["posterior"] + parts["prior"] + parts["rules"]).double().mean(0))


def test_selection_lowers_the_prior_weight_when_the_model_is_badly_miscalibrated():
    """With p_order inflated 4x on expensive items, weights tuned on the prior are worse on held-out
    feedback than weights tuned without it, and the selection sees that (a known answer: on the truth,
    λ = 0 is best whenever the posterior is unbiased)."""
    sc = SearchScenario(miscalibration=4.0)
    tune, hold = _ctx(sc, 2000, 1), _ctx(sc, 20000, 2)
    sel = select_prior_weight(sc, tune, hold, {"posterior": 1.0, "rules": 1.0}, [0.0, 3.0], method="random", budget=40, seed=0)
    assert sel.weight == 0.0 and sel.scores[0.0] > sel.scores[3.0]
    # the held-out scores agree with the truth: the chosen static weights earn more true GMV
    truth = {lam: float(sc.expected_reward(hold, w).mean()) for lam, w in sel.weights.items()}
    assert truth[0.0] > truth[3.0]
    assert sel.se_vs_chosen[0.0] == 0.0 and sel.se_vs_chosen[3.0] > 0
    d = sel.as_dict()
    assert d["chosen"] == 0.0 and d["grid"] == [0.0, 3.0] and set(d["static_weights"]) == {"0", "3"}


def test_selection_errors():
    sc = SearchScenario()
    ctx = _ctx(sc, 200, 0)
    for grid, msg in (([], "empty"), ([-0.5], ">= 0"), ([float("nan")], ">= 0"), ([1.0, 1.0], "repeated")):
        with pytest.raises(ValueError, match=msg):
            select_prior_weight(sc, ctx, ctx, {}, grid, method="random", budget=10)
