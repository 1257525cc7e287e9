"""Outcome (reward) models: E[r | x, a] learned from logged decisions, cross-fitted.

One joint model f(x, a) on the design row [x, onehot(a), action_context[a]] (the action's own
features let the model share strength across actions). Binary rewards use a classifier's
P(r = 1 | x, a); other rewards a regressor. ``kind``:

* ``"gbm"``: scikit-learn's HistGradientBoosting (interactions between x and a come from the trees);
* ``"linear"``: standardized L2-regularized logistic regression (binary) or ridge (otherwise), with
  the action one-hot and, when ``interactions`` (default: only if d · n_actions <= 2000, since the
  design grows as d · n_actions), its products with x (a separate linear effect of x per action).

Cross-fitting: :meth:`OutcomeModel.fit` also fits one model per fold of a K-fold split, and
:meth:`OutcomeModel.predict_crossfit` gives every training row the prediction of the fold model
that did not see it, so an off-policy estimate never scores a row with a model fitted on it.
:meth:`OutcomeModel.predict` uses the model fitted on all rows (for new contexts, e.g. to score
the G actions GRPO samples per context).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from sklearn.base import clone
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

__all__ = ["OutcomeModel"]


def _check_array(name: str, x: np.ndarray, ndim: int) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-d array, got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if np.issubdtype(x.dtype, np.number) and not np.all(np.isfinite(x)):
        row = int(np.argwhere(~np.isfinite(x))[0][0])
        raise ValueError(f"{name} has a NaN or inf in row {row}")
    return x


class OutcomeModel:
    """E[r | x, a] for every action, scikit-learn style (parameters in ``__init__``, then ``fit``).

    ``n_actions``: number of actions; ``action_context``: optional ``[n_actions, k]`` features of each
    action; ``n_folds``: folds of the cross-fit (>= 2); ``task``: ``"auto"`` (binary if the rewards
    are all 0/1), ``"binary"`` or ``"regression"``; ``params``: passed to the scikit-learn estimator.
    """

    def __init__(
        self,
        n_actions: int,
        kind: Literal["gbm", "linear"] = "gbm",
        *,
        action_context: np.ndarray | None = None,
        n_folds: int = 5,
        task: Literal["auto", "binary", "regression"] = "auto",
        interactions: bool | None = None,
        seed: int = 0,
        **params,
    ):
        if n_actions < 2:
            raise ValueError(f"n_actions must be >= 2, got {n_actions}")
        if kind not in ("gbm", "linear"):
            raise ValueError(f"unknown outcome model kind {kind!r}; choose 'gbm' or 'linear'")
        if n_folds < 2:
            raise ValueError(f"n_folds must be >= 2 for cross-fitting, got {n_folds}")
        if task not in ("auto", "binary", "regression"):
            raise ValueError(f"task must be auto, binary or regression, got {task!r}")
        if action_context is not None:
            action_context = _check_array("action_context", np.asarray(action_context, dtype=np.float64), 2)
            if action_context.shape[0] != n_actions:
                raise ValueError(f"action_context has {action_context.shape[0]} rows, expected n_actions = {n_actions}")
        self.n_actions = n_actions
        self.kind = kind
        self.action_context = action_context
        self.n_folds = n_folds
        self.task = task
        self.interactions = interactions
        self.seed = seed
        self.params = params

    # -- design -------------------------------------------------------------------------------

    def _estimator(self, binary: bool):
        if self.kind == "gbm":
            defaults = {"max_iter": 200, "learning_rate": 0.05, "random_state": self.seed}
            cls = HistGradientBoostingClassifier if binary else HistGradientBoostingRegressor
            return cls(**{**defaults, **self.params})
        if binary:
            return make_pipeline(StandardScaler(), LogisticRegression(**{"C": 1.0, "max_iter": 2000, **self.params}))
        return make_pipeline(StandardScaler(), Ridge(**{"alpha": 1.0, **self.params}))

    def _design(self, x: np.ndarray, action: np.ndarray) -> np.ndarray:
        onehot = np.zeros((len(action), self.n_actions), dtype=np.float32)
        onehot[np.arange(len(action)), action] = 1.0
        parts = [x.astype(np.float32), onehot]
        if self.kind == "linear" and self.interactions_:
            parts.append((x[:, :, None] * onehot[:, None, :]).reshape(len(x), -1).astype(np.float32))
        if self.action_context is not None:
            parts.append(self.action_context[action].astype(np.float32))
        return np.concatenate(parts, axis=1)

    def _predict_all(self, model, x: np.ndarray, chunk: int = 4096) -> np.ndarray:
        """[n, n_actions] predictions, built in chunks of contexts (the design has n · n_actions rows)."""
        out = np.empty((len(x), self.n_actions), dtype=np.float64)
        actions = np.arange(self.n_actions)
        for start in range(0, len(x), chunk):
            xs = x[start : start + chunk]
            rep = np.repeat(xs, self.n_actions, axis=0)
            design = self._design(rep, np.tile(actions, len(xs)))
            pred = model.predict_proba(design)[:, 1] if self.binary_ else model.predict(design)
            out[start : start + len(xs)] = pred.reshape(len(xs), self.n_actions)
        return out

    # -- API ------------------------------------------------------------------------------------

    def fit(self, x: np.ndarray, action: np.ndarray, reward: np.ndarray) -> "OutcomeModel":
        """Fit the full-data model and one model per cross-fitting fold."""
        x = _check_array("x", np.asarray(x, dtype=np.float64), 2)
        action = _check_array("action", action, 1)
        reward = _check_array("reward", np.asarray(reward, dtype=np.float64), 1)
        if not (len(x) == len(action) == len(reward)):
            raise ValueError(f"x, action and reward have {len(x)}, {len(action)} and {len(reward)} rows")
        if not np.issubdtype(action.dtype, np.integer):
            raise ValueError(f"action must hold integer codes, got dtype {action.dtype}")
        bad = np.flatnonzero((action < 0) | (action >= self.n_actions))
        if len(bad):
            raise ValueError(f"action {action[bad[0]]} in row {bad[0]} is outside 0..{self.n_actions - 1}")
        is_binary = bool(np.all((reward == 0) | (reward == 1)))
        if self.task == "binary" and not is_binary:
            row = int(np.flatnonzero((reward != 0) & (reward != 1))[0])
            raise ValueError(f"task='binary' but reward in row {row} is {reward[row]}")
        self.binary_ = is_binary if self.task == "auto" else self.task == "binary"
        if self.binary_ and len(np.unique(reward)) < 2:
            raise ValueError("binary rewards are all equal: nothing to learn an outcome model from")
        if len(x) < 2 * self.n_folds:
            raise ValueError(f"{len(x)} rows are too few for {self.n_folds}-fold cross-fitting")
        self.n_features_ = x.shape[1]
        self.interactions_ = (
            x.shape[1] * self.n_actions <= 2000 if self.interactions is None else bool(self.interactions)
        )
        design = self._design(x, action)
        self.model_ = clone(self._estimator(self.binary_)).fit(design, reward)
        self.folds_ = []
        self.fold_models_ = []
        kf = KFold(self.n_folds, shuffle=True, random_state=self.seed)
        for train_idx, test_idx in kf.split(x):
            self.folds_.append(test_idx)
            self.fold_models_.append(clone(self._estimator(self.binary_)).fit(design[train_idx], reward[train_idx]))
        self._x_train = x
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise RuntimeError("the outcome model is not fitted: call fit(x, action, reward) first")

    def predict(self, x: np.ndarray) -> np.ndarray:
        """``[n, n_actions]`` predicted E[r | x, a] from the model fitted on all training rows."""
        self._check_fitted()
        x = _check_array("x", np.asarray(x, dtype=np.float64), 2)
        if x.shape[1] != self.n_features_:
            raise ValueError(f"x has {x.shape[1]} features, the model was fitted on {self.n_features_}")
        return self._predict_all(self.model_, x)

    def predict_crossfit(self) -> np.ndarray:
        """``[n_train, n_actions]``: each training row scored by the fold model that did not see it."""
        self._check_fitted()
        out = np.empty((len(self._x_train), self.n_actions))
        for test_idx, model in zip(self.folds_, self.fold_models_):
            out[test_idx] = self._predict_all(model, self._x_train[test_idx])
        return out
