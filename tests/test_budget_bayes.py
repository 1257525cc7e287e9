"""benchmarks/budget_seeds.py's reference: the best budget-constrained policy of the observed features.

Its posterior expectations must average to the true per-customer tables (they are conditional
expectations of them), it must approach the latent-aware oracle when the features are nearly
noiseless, fall below it when they are noisy, and spend the budget (the integrality fill)."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from budget_seeds import bayes_constrained, posterior_tables  # noqa: E402

from grpokit.config import load_config  # noqa: E402
from grpokit.scenarios.marketing import MarketingScenario  # noqa: E402


def _scenario(noise: float, budget: float | None):
    over = [f"scenario.feature_noise={noise}"] + ([f"scenario.budget_per_customer={budget}"] if budget else [])
    return MarketingScenario(load_config("examples/marketing.toml", over).scenario)


def test_posterior_tables_average_to_the_true_tables():
    sc = _scenario(0.4, None)
    ctx = sc.sample_contexts(40_000, torch.Generator().manual_seed(3))
    profit, spend = posterior_tables(sc, ctx)
    true_profit, true_spend = sc._no_spill_tables(ctx)
    assert torch.allclose(profit.mean(0), true_profit.mean(0), rtol=0.01)  # E[E[profit | x]] = E[profit]
    assert torch.allclose(spend.mean(0), true_spend.mean(0), rtol=0.01)


def test_bayes_reference_against_the_oracle():
    for noise, low, high in ((0.05, 0.995, 1.0 + 1e-9), (0.4, 0.95, 0.995)):
        sc = _scenario(noise, 1.0)
        ctx = sc.sample_contexts(10_000, torch.Generator().manual_seed(5))
        bayes = sc.true_value(ctx, bayes_constrained(sc, ctx, 1.0))
        oracle = sc.true_value(ctx, sc.oracle_actions(ctx))
        assert bayes["spend"] <= 1.0 + 1e-9 and bayes["spend"] >= 0.995, bayes["spend"]  # the budget is used
        assert low <= bayes["value"] / oracle["value"] <= high, (noise, bayes["value"], oracle["value"])
