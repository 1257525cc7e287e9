"""GRPO on an outcome model's rewards reaches the table's optimum (a problem with a known answer)."""

import numpy as np
import pytest

from grpokit.config import GRPOConfig
from grpokit.offline.learn import action_probabilities, learn_from_outcome_model


def test_learns_the_argmax_of_the_reward_table():
    rng = np.random.default_rng(0)
    n, d, n_actions = 1000, 4, 5
    x = rng.normal(size=(n, d))
    table = 1 / (1 + np.exp(-(x @ rng.normal(size=(n_actions, d)).T)))
    policy, summary = learn_from_outcome_model(x, table, GRPOConfig(steps=150, batch_size=256, group_size=8, device="cpu"))
    probs = action_probabilities(policy, x)
    assert probs.shape == (n, n_actions) and np.allclose(probs.sum(1), 1, atol=1e-5)
    value = (probs * table).sum(1).mean()
    best, uniform = table.max(1).mean(), table.mean()
    assert value > uniform + 0.9 * (best - uniform), (value, best, uniform)
    assert summary["steps"] == 150


def test_bad_tables():
    x = np.zeros((10, 2))
    with pytest.raises(ValueError, match="share n"):
        learn_from_outcome_model(x, np.zeros((9, 3)))
    t = np.zeros((10, 3))
    t[4, 1] = np.nan
    with pytest.raises(ValueError, match="row 4"):
        learn_from_outcome_model(x, t)
