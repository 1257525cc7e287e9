"""The P-GRPO decomposition A_p = (sigma_G / sigma_p) A_GRPO + (mu_G - mu_p) / sigma_p (property test).

It holds exactly for given history statistics (mu_p, sigma_p); checked on grpokit's estimators
(the ones PGRPOTrainer uses) over many seeded random draws of history, batch and scale.
"""

from __future__ import annotations

import pytest
import torch

from grpokit.grpo.advantages import PGRPOAdvantage, grpo_advantages


@pytest.mark.parametrize("seed", range(25))
def test_decomposition_holds_for_given_history(seed):
    gen = torch.Generator().manual_seed(seed)
    n_groups = int(torch.randint(1, 6, (1,), generator=gen))
    b, g = int(torch.randint(1, 9, (1,), generator=gen)), int(torch.randint(2, 9, (1,), generator=gen))
    scale, shift = float(torch.rand(1, generator=gen) * 5 + 0.1), float(torch.randn(1, generator=gen) * 3)
    est = PGRPOAdvantage(n_groups, min_history=2, eps=0.0)
    # a history of 2-4 batches per group, so every group is past the warm-up
    for _ in range(int(torch.randint(2, 5, (1,), generator=gen))):
        est.update(torch.randn(n_groups, g, generator=gen, dtype=torch.float64) * scale + shift, torch.arange(n_groups))
    mu_p_all, sd_p_all = est.mean.clone(), est.std.clone()
    rewards = torch.randn(b, g, generator=gen, dtype=torch.float64) * scale + shift
    if seed % 5 == 0:  # sparse pass/fail rewards too
        rewards = (rewards > shift).double()
        est = PGRPOAdvantage(n_groups, min_history=2, eps=0.0)
        est.update((torch.rand(n_groups, 8, generator=gen, dtype=torch.float64) < 0.3).double(), torch.arange(n_groups))
        est.update(torch.tensor([[0.0, 1.0] * 4] * n_groups, dtype=torch.float64), torch.arange(n_groups))
        mu_p_all, sd_p_all = est.mean.clone(), est.std.clone()
    groups = torch.randint(0, n_groups, (b,), generator=gen)
    a_p, _ = est(rewards, groups)
    mu_p, sd_p = mu_p_all[groups].unsqueeze(1), sd_p_all[groups].unsqueeze(1)
    mu_g = rewards.mean(1, keepdim=True)
    sd_g = rewards.std(1, keepdim=True)  # unbiased: GRPO's (and TRL's) group std
    ok = sd_g.squeeze(1) > 0  # A_GRPO is undefined for an all-equal group
    a_grpo = grpo_advantages(rewards, "group", eps=0.0)
    rhs = sd_g / sd_p * a_grpo + (mu_g - mu_p) / sd_p
    torch.testing.assert_close(a_p[ok], rhs[ok], rtol=1e-9, atol=1e-9)
    # and the definition itself, brute force: (r - mu_p) / sigma_p
    torch.testing.assert_close(a_p, (rewards - mu_p) / sd_p, rtol=1e-12, atol=1e-12)


def test_all_equal_group_still_gets_the_history_signal():
    """Where A_GRPO is 0 (all G rewards equal), A_p = (mu_G - mu_p) / sigma_p, the second term alone."""
    est = PGRPOAdvantage(1, min_history=2, eps=0.0)
    est.update(torch.tensor([[0.0, 1.0, 0.0, 0.0]], dtype=torch.float64), torch.tensor([0]))
    mu, sd = est.mean[0].item(), est.std[0].item()
    a_p, _ = est(torch.zeros(1, 4, dtype=torch.float64), torch.tensor([0]))
    assert mu == 0.25 and sd == pytest.approx(0.4330127, rel=1e-6)
    torch.testing.assert_close(a_p, torch.full((1, 4), (0.0 - mu) / sd, dtype=torch.float64))
