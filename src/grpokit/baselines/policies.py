"""What a data scientist would do instead: baseline decision rules learned from an A/B log.

Every baseline is fitted on a log (features ``x [n, d]``, logged ``action [n]``, ``reward [n]``,
the control action's code, e.g. "no offer") and then ``decide(x) -> [m]`` gives one action per new
context. They are scored on the same ground truth as the GRPO policy.

* ``RandomBaseline``: uniform random actions (the A/B test itself).
* ``BestSingleBaseline``: the action with the highest mean logged reward, for everybody.
* ``PropensityBaseline`` ("treat the likely buyers"): a classifier of P(reward > 0 | x) on the
  control rows; the top ``treat_fraction`` of contexts get the best single treatment, the rest the control.
* ``TLearnerBaseline``: one regressor μ_a(x) per action on that action's rows; decide argmax_a μ_a(x)
  (the action with the highest predicted incremental profit over the control, μ_a − μ_control).
* ``XLearnerBaseline`` (Künzel et al. 2019), per treatment a against the control c: impute
  D_a = Y − μ_c(X) on a's rows and D_c = μ_a(X) − Y on c's rows, fit τ_a1 on D_a and τ_a0 on D_c,
  τ_a(x) = g_a τ_a0(x) + (1 − g_a) τ_a1(x) with g_a the share of a among {a, c} rows; decide
  argmax over {c: 0, a: τ_a(x)}.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import clone
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

__all__ = [
    "RandomBaseline",
    "BestSingleBaseline",
    "PropensityBaseline",
    "TLearnerBaseline",
    "XLearnerBaseline",
    "BASELINES",
    "make_baseline",
]


def _check(x, action, reward, n_actions: int, control: int):
    x = np.asarray(x, dtype=np.float64)
    action = np.asarray(action)
    reward = np.asarray(reward, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"x must be a non-empty [n, d] array, got shape {x.shape}")
    if not (len(x) == len(action) == len(reward)):
        raise ValueError(f"x, action and reward have {len(x)}, {len(action)} and {len(reward)} rows")
    if not np.all(np.isfinite(x)) or not np.all(np.isfinite(reward)):
        raise ValueError("x and reward must be finite (NaN or inf found)")
    if not np.issubdtype(action.dtype, np.integer) or action.min() < 0 or action.max() >= n_actions:
        raise ValueError(f"actions must be integer codes in 0..{n_actions - 1}")
    if not 0 <= control < n_actions:
        raise ValueError(f"control action {control} outside 0..{n_actions - 1}")
    missing = sorted(set(range(n_actions)) - set(np.unique(action).tolist()))
    if missing:
        raise ValueError(f"the log never tried action(s) {missing}: a baseline cannot learn about them")
    return x, action.astype(np.int64), reward


def _regressor(seed: int):
    return HistGradientBoostingRegressor(max_iter=150, learning_rate=0.05, min_samples_leaf=40, random_state=seed)


class _Baseline:
    def __init__(self, n_actions: int, control: int = 0, seed: int = 0):
        if n_actions < 2:
            raise ValueError(f"n_actions must be >= 2, got {n_actions}")
        self.n_actions, self.control, self.seed = n_actions, control, seed

    def _fitted(self):
        if not getattr(self, "fitted_", False):
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(x, action, reward) first")


class RandomBaseline(_Baseline):
    def fit(self, x, action, reward):
        _check(x, action, reward, self.n_actions, self.control)
        self.fitted_ = True
        return self

    def decide(self, x) -> np.ndarray:
        self._fitted()
        return np.random.default_rng(self.seed).integers(0, self.n_actions, len(x))


class BestSingleBaseline(_Baseline):
    def fit(self, x, action, reward):
        x, action, reward = _check(x, action, reward, self.n_actions, self.control)
        means = np.array([reward[action == a].mean() for a in range(self.n_actions)])
        self.action_means_ = means
        self.best_ = int(means.argmax())
        self.fitted_ = True
        return self

    def decide(self, x) -> np.ndarray:
        self._fitted()
        return np.full(len(x), self.best_, dtype=np.int64)


class PropensityBaseline(_Baseline):
    def __init__(self, n_actions: int, control: int = 0, seed: int = 0, treat_fraction: float = 0.3):
        super().__init__(n_actions, control, seed)
        if not 0.0 < treat_fraction < 1.0:
            raise ValueError(f"treat_fraction must be in (0, 1), got {treat_fraction}")
        self.treat_fraction = treat_fraction

    def fit(self, x, action, reward):
        x, action, reward = _check(x, action, reward, self.n_actions, self.control)
        ctrl = action == self.control
        buys = (reward[ctrl] > 0).astype(int)
        if len(np.unique(buys)) < 2:
            raise ValueError("the control rows have only one outcome class: cannot model the likely buyers")
        self.model_ = HistGradientBoostingClassifier(max_iter=150, learning_rate=0.05, random_state=self.seed).fit(x[ctrl], buys)
        means = np.array([reward[action == a].mean() for a in range(self.n_actions)])
        means[self.control] = -np.inf
        self.treatment_ = int(means.argmax())
        self.threshold_ = float(np.quantile(self.model_.predict_proba(x)[:, 1], 1 - self.treat_fraction))
        self.fitted_ = True
        return self

    def decide(self, x) -> np.ndarray:
        self._fitted()
        p = self.model_.predict_proba(np.asarray(x, dtype=np.float64))[:, 1]
        return np.where(p >= self.threshold_, self.treatment_, self.control).astype(np.int64)


class TLearnerBaseline(_Baseline):
    def fit(self, x, action, reward):
        x, action, reward = _check(x, action, reward, self.n_actions, self.control)
        self.models_ = [clone(_regressor(self.seed)).fit(x[action == a], reward[action == a]) for a in range(self.n_actions)]
        self.fitted_ = True
        return self

    def predict(self, x) -> np.ndarray:
        """``[m, n_actions]`` predicted reward μ_a(x) of every action."""
        self._fitted()
        x = np.asarray(x, dtype=np.float64)
        return np.stack([m.predict(x) for m in self.models_], axis=1)

    def decide(self, x) -> np.ndarray:
        mu = self.predict(x)
        return (mu - mu[:, [self.control]]).argmax(1).astype(np.int64)


class XLearnerBaseline(_Baseline):
    def fit(self, x, action, reward):
        x, action, reward = _check(x, action, reward, self.n_actions, self.control)
        c = self.control
        mu = [clone(_regressor(self.seed)).fit(x[action == a], reward[action == a]) for a in range(self.n_actions)]
        self.tau_ = {}
        xc, yc = x[action == c], reward[action == c]
        for a in range(self.n_actions):
            if a == c:
                continue
            xa, ya = x[action == a], reward[action == a]
            d_a = ya - mu[c].predict(xa)  # imputed effect on the treated
            d_c = mu[a].predict(xc) - yc  # imputed effect on the controls
            tau1 = clone(_regressor(self.seed)).fit(xa, d_a)
            tau0 = clone(_regressor(self.seed)).fit(xc, d_c)
            g = len(xa) / (len(xa) + len(xc))
            self.tau_[a] = (tau0, tau1, g)
        self.fitted_ = True
        return self

    def effects(self, x) -> np.ndarray:
        """``[m, n_actions]`` estimated effect τ_a(x) of each action over the control (0 for the control)."""
        self._fitted()
        x = np.asarray(x, dtype=np.float64)
        out = np.zeros((len(x), self.n_actions))
        for a, (tau0, tau1, g) in self.tau_.items():
            out[:, a] = g * tau0.predict(x) + (1 - g) * tau1.predict(x)
        return out

    def decide(self, x) -> np.ndarray:
        return self.effects(x).argmax(1).astype(np.int64)


BASELINES = {
    "random": RandomBaseline,
    "best_single": BestSingleBaseline,
    "propensity": PropensityBaseline,
    "t_learner": TLearnerBaseline,
    "x_learner": XLearnerBaseline,
}


def make_baseline(name: str, n_actions: int, control: int = 0, seed: int = 0, **params):
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose one of {sorted(BASELINES)}")
    return BASELINES[name](n_actions, control, seed, **params)
