"""A scikit-learn estimator facade: learn a decision policy from logged (x, action, reward, pscore).

:class:`GRPOPolicyLearner` wraps the offline path of ``grpokit learn``: a FeatureEncoder on X
(standardized numbers, 0/1 booleans, one-hot text columns), a cross-fitted outcome model
r̂(x, a), then GRPO on the logged contexts with r̂ as the reward (P-GRPO preference groups from
``groups``). Parameters live in ``__init__`` (so ``clone``, ``Pipeline`` and ``GridSearchCV``
work); ``predict`` gives the greedy action, ``predict_proba`` π(a | x).

``score(X, y)`` is the self-normalized IPS value of the policy on logged rows,
Σ w_i r_i / Σ w_i with w_i = π(a_i | x_i) / pscore_i; scikit-learn passes only ``(X, y)`` to
``score``, so ``y`` may carry the log as three columns ``[action, reward, pscore]`` (``fit``
accepts the same ``y`` in place of separate arrays)::

    y = np.column_stack([action, reward, pscore])
    GridSearchCV(GRPOPolicyLearner(), {"lr": [1e-3, 3e-3]}, cv=3).fit(X, y)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

__all__ = ["GRPOPolicyLearner"]


def _unpack(action, reward, pscore):
    a = np.asarray(action)
    if reward is None and pscore is None:
        if a.ndim != 2 or a.shape[1] != 3:
            raise ValueError("give reward and pscore, or y as three columns [action, reward, pscore]")
        return a[:, 0], a[:, 1].astype(np.float64), a[:, 2].astype(np.float64)
    if reward is None or pscore is None:
        raise ValueError("give both reward and pscore (the logging policy's probability of each logged action)")
    return a, np.asarray(reward, dtype=np.float64), np.asarray(pscore, dtype=np.float64)


class GRPOPolicyLearner(BaseEstimator):
    """Learn a categorical policy from a decision log (see the module docstring).

    Parameters: ``outcome_model`` ("gbm" or "linear"); ``steps``, ``batch_size``, ``group_size``
    (G actions sampled per context), ``lr``, ``ent_coef``, ``advantage`` ("pgrpo", "dr_grpo",
    "grpo", "rank"; the :data:`grpokit.offline.workflow.DEFAULT_ADVANTAGE` of ``grpokit learn``
    by default), ``hidden`` (MLP widths), ``max_categories`` (one-hot cap per text column),
    ``n_folds`` (outcome-model cross-fit), ``seed``.
    """

    def __init__(self, outcome_model: str = "gbm", steps: int = 300, batch_size: int = 256, group_size: int = 4,
                 lr: float = 3e-3, ent_coef: float = 0.0, advantage: str = "pgrpo", hidden: tuple = (64, 64),
                 max_categories: int = 20, n_folds: int = 5, seed: int = 0):
        self.outcome_model = outcome_model
        self.steps = steps
        self.batch_size = batch_size
        self.group_size = group_size
        self.lr = lr
        self.ent_coef = ent_coef
        self.advantage = advantage
        self.hidden = hidden
        self.max_categories = max_categories
        self.n_folds = n_folds
        self.seed = seed

    # -- helpers ------------------------------------------------------------------------------

    def _frame(self, X) -> pd.DataFrame:
        if isinstance(X, pd.DataFrame):
            return X.reset_index(drop=True)
        arr = np.asarray(X)
        if arr.ndim != 2:
            raise ValueError(f"X must be 2-D [n_samples, n_features], got shape {arr.shape}")
        return pd.DataFrame(arr, columns=[f"x{j}" for j in range(arr.shape[1])])

    def _codes(self, action: np.ndarray) -> np.ndarray:
        pos = {c: i for i, c in enumerate(self.classes_.tolist())}
        try:
            return np.array([pos[v] for v in action.tolist()], dtype=np.int64)
        except KeyError as err:
            raise ValueError(f"action {err.args[0]!r} was not seen in fit (actions: {self.classes_.tolist()})") from None

    # -- API ----------------------------------------------------------------------------------

    def fit(self, X, action, reward=None, pscore=None, groups=None):
        """Fit on logged rows: ``X [n, d]`` (array or DataFrame), ``action [n]``, ``reward [n]``, ``pscore [n]``."""
        from grpokit.config import AdvantageConfig, GRPOConfig, PolicyConfig
        from grpokit.offline.learn import learn_from_outcome_model
        from grpokit.offline.outcome import OutcomeModel
        from grpokit.policy.features import FeatureEncoder

        action, reward, pscore = _unpack(action, reward, pscore)
        frame = self._frame(X)
        n = len(frame)
        if not (len(action) == len(reward) == len(pscore) == n):
            raise ValueError(f"X, action, reward and pscore have {n}, {len(action)}, {len(reward)}, {len(pscore)} rows")
        if not np.all(np.isfinite(reward)):
            raise ValueError(f"reward in row {int(np.flatnonzero(~np.isfinite(reward))[0])} is not finite")
        bad = ~((pscore > 0) & (pscore <= 1))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"pscore in row {i} is {pscore[i]!r}: propensities must lie in (0, 1]")
        self.classes_ = np.unique(action)
        if len(self.classes_) < 2:
            raise ValueError("the log has a single action: there is nothing to choose between")
        codes = self._codes(action)
        self.encoder_ = FeatureEncoder.infer(frame, list(frame.columns), max_categories=self.max_categories).fit(frame)
        x = self.encoder_.transform(frame)
        self.n_features_in_ = frame.shape[1]
        self.outcome_model_ = OutcomeModel(len(self.classes_), self.outcome_model, n_folds=self.n_folds,
                                           seed=self.seed).fit(x, codes, reward)
        table = self.outcome_model_.predict_crossfit()
        g, n_groups = None, None
        if self.advantage == "pgrpo":
            if groups is None:
                g, n_groups = np.zeros(n, dtype=np.int64), 1
            else:
                self.group_labels_, g = np.unique(np.asarray(groups), return_inverse=True)
                n_groups = len(self.group_labels_)
        cfg = GRPOConfig(device="cpu", seed=self.seed, steps=self.steps, batch_size=self.batch_size,
                         group_size=self.group_size, lr=self.lr, ent_coef=self.ent_coef,
                         advantage=AdvantageConfig(name=self.advantage))
        self.policy_, self.training_ = learn_from_outcome_model(
            x, table, cfg, PolicyConfig(hidden=list(self.hidden)), group=g, n_groups=n_groups)
        return self

    def _check(self):
        if not hasattr(self, "policy_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("this GRPOPolicyLearner is not fitted yet: call fit(X, action, reward, pscore)")

    def predict_proba(self, X) -> np.ndarray:
        """``[n, n_actions]``: π(a | x), columns in the order of ``classes_``."""
        from grpokit.offline.learn import action_probabilities

        self._check()
        return action_probabilities(self.policy_, self.encoder_.transform(self._frame(X)))

    def predict(self, X) -> np.ndarray:
        """The greedy action (one of ``classes_``) for each row."""
        self._check()
        return self.classes_[self.predict_proba(X).argmax(1)]

    def score(self, X, y) -> float:
        """SNIPS value of the policy on logged rows; ``y`` = ``[action, reward, pscore]`` columns."""
        action, reward, pscore = _unpack(y, None, None)
        probs = self.predict_proba(X)
        w = probs[np.arange(len(probs)), self._codes(action)] / pscore
        return float((w * reward).sum() / w.sum()) if w.sum() > 0 else 0.0

    def save(self, path) -> None:
        """Write the policy with its encoder (``policy.pt``: ``grpokit score`` and the service read it)."""
        from grpokit.policy.io import save_policy

        self._check()
        save_policy(self.policy_, path, {"action_labels": [str(c) for c in self.classes_.tolist()],
                                         "n_actions": len(self.classes_)}, encoder=self.encoder_)
