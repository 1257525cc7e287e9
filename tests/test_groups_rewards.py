"""Group-relative reward components of the marketing scenario against hand-computed values (numpy
median per cohort, scipy percentileofscore), inside a training run where each is logged on its own."""

import numpy as np
import pytest
import torch
from scipy.stats import percentileofscore

from grpokit.config import load_config
from grpokit.runner import build_trainer
from grpokit.scenarios.marketing import MarketingScenario

COMPS = ["profit", "improvement", "relative_to_cohort_median", "cohort_percentile_rank"]


@pytest.mark.parametrize("reference", ["none", "10% off"])
def test_components_match_hand_computation(reference):
    sc = MarketingScenario(reward_components=COMPS, improvement_reference=reference)
    gen = torch.Generator().manual_seed(0)
    ctx = sc.sample_contexts(300, gen)
    actions = torch.randint(0, sc.n_actions, (300, 4), generator=gen)
    r = sc.reward(ctx, actions, torch.Generator().manual_seed(1))
    # the paired draw: profit of the chosen offer minus the profit of the reference with the same numbers
    same = sc.reward(ctx, torch.full_like(actions, sc.action_names.index(reference)), torch.Generator().manual_seed(1))
    np.testing.assert_allclose(r["improvement"], r["profit"] - same["profit"], atol=1e-4)
    assert torch.all(same["improvement"] == 0)
    imp, g = r["improvement"].numpy(), ctx.group.numpy()
    for c in np.unique(g):
        vals = imp[g == c].ravel()
        np.testing.assert_allclose(r["relative_to_cohort_median"].numpy()[g == c], imp[g == c] - np.median(vals), atol=1e-5)
        want = [percentileofscore(vals, v, kind="mean") / 100 for v in imp[g == c].ravel()]
        np.testing.assert_allclose(r["cohort_percentile_rank"].numpy()[g == c].ravel(), want, atol=1e-6)


def test_components_are_weighted_and_logged_in_training(tmp_path):
    cfg = load_config("examples/marketing.toml", [
        "scenario.reward_components=['profit', 'relative_to_cohort_median', 'cohort_percentile_rank']",
        "grpo.reward_weights={profit = 1.0, relative_to_cohort_median = 0.5, cohort_percentile_rank = 2.0}",
        "grpo.steps=3", "grpo.batch_size=64", "grpo.eval_size=128"])
    trainer = build_trainer(cfg, tmp_path)
    seen = {}
    orig = trainer.advantages

    def spy(contexts, rewards):
        adv, total, m = orig(contexts, rewards)
        seen["total"], seen["rewards"] = total, rewards
        return adv, total, m

    trainer.advantages = spy
    trainer.train()
    rw = seen["rewards"]
    expect = rw["profit"] + 0.5 * rw["relative_to_cohort_median"] + 2.0 * rw["cohort_percentile_rank"]
    torch.testing.assert_close(seen["total"], expect)
    import json

    last = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    for name in ("profit", "relative_to_cohort_median", "cohort_percentile_rank"):
        assert f"reward/{name}" in last
    assert last["reward/cohort_percentile_rank"] == pytest.approx(0.5, abs=1e-6)  # mid-ranks average 1/2 per cohort


def test_bad_reference_is_named():
    from grpokit.config import ConfigError

    with pytest.raises(ConfigError, match="improvement_reference"):
        load_config("examples/marketing.toml", ["scenario.improvement_reference='50% off'"])
    with pytest.raises(ConfigError, match="reward_components"):
        load_config("examples/marketing.toml", ["scenario.reward_components=['profit', 'rank_in_cohort']"])


def test_components_by_hand_inside_a_training_run(tmp_path):
    # the batch the trainer scores at each step: relative_to_cohort_median = improvement − its cohort's median and
    # cohort_percentile_rank = scipy's mean percentile of the improvement among the cohort's sampled decisions
    cfg = load_config("examples/marketing.toml", [
        "scenario.reward_components=['profit', 'improvement', 'relative_to_cohort_median', 'cohort_percentile_rank']",
        "grpo.reward_weights={profit = 1.0, improvement = 0.0, relative_to_cohort_median = 0.5, cohort_percentile_rank = 2.0}",
        "grpo.steps=3", "grpo.batch_size=64", "grpo.eval_size=128"])
    trainer = build_trainer(cfg, tmp_path)
    steps = []
    orig = trainer.advantages

    def spy(contexts, rewards):
        steps.append((contexts.group.cpu().numpy().copy(), {k: v.detach().cpu().numpy().copy() for k, v in rewards.items()}))
        return orig(contexts, rewards)

    trainer.advantages = spy
    trainer.train()
    assert len(steps) == 3
    for g, rw in steps:
        imp = rw["improvement"]
        assert imp.shape == (64, cfg.grpo.group_size)
        for c in np.unique(g):
            vals = imp[g == c].ravel()
            np.testing.assert_allclose(rw["relative_to_cohort_median"][g == c], imp[g == c] - np.median(vals), atol=1e-4)
            want = [percentileofscore(vals, v, kind="mean") / 100 for v in vals]
            np.testing.assert_allclose(rw["cohort_percentile_rank"][g == c].ravel(), want, atol=1e-6)
