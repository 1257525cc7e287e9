"""Outcome models: they learn E[r | x, a], cross-fitting never scores a row with a model that saw it."""

import numpy as np
import pytest

from grpokit.offline.outcome import OutcomeModel


def _simulate(n=3000, d=3, n_actions=4, seed=0, binary=True):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    theta = rng.normal(size=(n_actions, d))
    bias = np.linspace(-1.0, 1.0, n_actions)
    logits = x @ theta.T + bias  # [n, A]
    truth = 1 / (1 + np.exp(-logits)) if binary else logits
    a = rng.integers(0, n_actions, n)
    mean = truth[np.arange(n), a]
    r = (rng.random(n) < mean).astype(float) if binary else mean + rng.normal(scale=0.1, size=n)
    return x, a, r, truth


@pytest.mark.parametrize("kind", ["gbm", "linear"])
def test_learns_expected_reward(kind):
    x, a, r, truth = _simulate(binary=True)
    model = OutcomeModel(4, kind, n_folds=3).fit(x, a, r)
    pred = model.predict(x)
    assert pred.shape == truth.shape and np.all((pred >= 0) & (pred <= 1))
    corr = np.corrcoef(pred.ravel(), truth.ravel())[0, 1]
    assert corr > 0.85, corr
    cf = model.predict_crossfit()
    assert np.corrcoef(cf.ravel(), truth.ravel())[0, 1] > 0.8


def test_regression_rewards():
    x, a, r, truth = _simulate(binary=False, n=2000)
    model = OutcomeModel(4, "linear", n_folds=2).fit(x, a, r)
    assert not model.binary_
    assert np.abs(model.predict(x) - truth).mean() < 0.1


def test_crossfit_does_not_memorize_noise():
    # labels unrelated to the features: a deep GBM memorizes them in-sample, the cross-fit cannot
    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 5))
    a = rng.integers(0, 3, 600)
    r = (rng.random(600) < 0.5).astype(float)
    model = OutcomeModel(3, "gbm", n_folds=3, max_iter=300, learning_rate=0.3, min_samples_leaf=2).fit(x, a, r)
    in_sample = model.predict(x)[np.arange(600), a]
    cross = model.predict_crossfit()[np.arange(600), a]
    acc_in = np.mean((in_sample > 0.5) == (r == 1))
    acc_cf = np.mean((cross > 0.5) == (r == 1))
    assert acc_in > 0.8, acc_in  # memorized
    assert acc_cf < 0.6, acc_cf  # no better than chance out of fold
    folds = np.sort(np.concatenate(model.folds_))
    assert np.array_equal(folds, np.arange(600))  # the folds partition the rows


def test_action_context_is_used():
    rng = np.random.default_rng(2)
    n, n_actions = 2000, 6
    x = rng.normal(size=(n, 2))
    quality = np.linspace(0.05, 0.6, n_actions)[:, None]  # the item feature drives the click rate
    a = rng.integers(0, n_actions, n)
    r = (rng.random(n) < quality[a, 0]).astype(float)
    model = OutcomeModel(n_actions, "gbm", action_context=quality, n_folds=2).fit(x, a, r)
    pred = model.predict(x[:50]).mean(0)
    assert np.all(np.diff(pred) > -0.05) and pred[-1] > pred[0] + 0.3


def test_bad_input():
    x, a, r, _ = _simulate(n=100)
    with pytest.raises(ValueError, match="n_folds"):
        OutcomeModel(4, n_folds=1)
    with pytest.raises(ValueError, match="kind"):
        OutcomeModel(4, "forest")
    with pytest.raises(ValueError, match="action_context has 3 rows"):
        OutcomeModel(4, action_context=np.zeros((3, 2)))
    m = OutcomeModel(4, n_folds=2)
    with pytest.raises(RuntimeError, match="not fitted"):
        m.predict(x)
    bad = a.copy()
    bad[7] = 9
    with pytest.raises(ValueError, match="action 9 in row 7"):
        m.fit(x, bad, r)
    xn = x.copy()
    xn[3, 1] = np.nan
    with pytest.raises(ValueError, match="x has a NaN or inf in row 3"):
        m.fit(xn, a, r)
    with pytest.raises(ValueError, match="rows"):
        m.fit(x, a[:-1], r)
    with pytest.raises(ValueError, match="all equal"):
        m.fit(x, a, np.zeros(100))
    with pytest.raises(ValueError, match="reward in row"):
        OutcomeModel(4, task="binary", n_folds=2).fit(x, a, r + 0.5)
    m.fit(x, a, r)
    with pytest.raises(ValueError, match="features"):
        m.predict(x[:, :2])
