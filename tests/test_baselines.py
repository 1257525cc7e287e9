"""Baselines on a simulated A/B log with known uplift: each does what its definition says."""

import numpy as np
import pytest

from grpokit.baselines import make_baseline


def _ab_log(n=6000, seed=0):
    """Control 0; action 1 helps when x0 > 0, hurts otherwise; action 2 is a small flat gain."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    a = rng.integers(0, 3, n)
    base = 1.0 + 0.5 * x[:, 1]
    effect = np.stack([np.zeros(n), np.where(x[:, 0] > 0, 1.0, -1.0), np.full(n, 0.2)], axis=1)
    y = base + effect[np.arange(n), a] + rng.normal(scale=0.3, size=n)
    return x, a, y, base[:, None] + effect


def _value(decisions, truth):
    return truth[np.arange(len(truth)), decisions].mean()


@pytest.mark.parametrize("name", ["t_learner", "x_learner"])
def test_uplift_learners_find_the_heterogeneous_effect(name):
    x, a, y, _ = _ab_log()
    xt, _, _, truth = _ab_log(2000, seed=1)
    b = make_baseline(name, 3, control=0).fit(x, a, y)
    d = b.decide(xt)
    best = truth.max(1).mean()
    assert _value(d, truth) > 0.95 * best
    # where action 1 helps, it is chosen
    assert np.mean(d[xt[:, 0] > 0.5] == 1) > 0.9


def test_best_single_and_random():
    x, a, y, _ = _ab_log()
    xt, _, _, truth = _ab_log(2000, seed=1)
    bs = make_baseline("best_single", 3).fit(x, a, y)
    assert bs.best_ == 2  # +0.2 flat beats +1/-1 on average 0
    assert np.all(bs.decide(xt) == 2)
    r = make_baseline("random", 3, seed=4).fit(x, a, y).decide(xt)
    assert set(np.unique(r)) == {0, 1, 2}
    assert abs(_value(r, truth) - truth.mean()) < 0.05


def test_propensity_treats_the_likely_buyers():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4000, 2))
    a = rng.integers(0, 2, 4000)
    y = (rng.random(4000) < 1 / (1 + np.exp(-3 * x[:, 0]))).astype(float) * 10 + a * 0.5
    b = make_baseline("propensity", 2, control=0, treat_fraction=0.25).fit(x, a, y)
    d = b.decide(x)
    assert abs(d.mean() - 0.25) < 0.05
    assert x[d == 1, 0].mean() > x[d == 0, 0].mean() + 1.0


def test_bad_input():
    x, a, y, _ = _ab_log(300)
    with pytest.raises(ValueError, match="unknown baseline"):
        make_baseline("magic", 3)
    with pytest.raises(ValueError, match="never tried action"):
        make_baseline("t_learner", 4).fit(x, a, y)
    with pytest.raises(ValueError, match="rows"):
        make_baseline("t_learner", 3).fit(x, a[:-1], y)
    y2 = y.copy()
    y2[3] = np.nan
    with pytest.raises(ValueError, match="finite"):
        make_baseline("x_learner", 3).fit(x, a, y2)
    with pytest.raises(RuntimeError, match="not fitted"):
        make_baseline("best_single", 3).decide(x)
    with pytest.raises(ValueError, match="treat_fraction"):
        make_baseline("propensity", 3, treat_fraction=1.5)
