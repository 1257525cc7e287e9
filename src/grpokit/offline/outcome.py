"""Outcome (reward) models: E[r | x, a] learned from logged decisions, cross-fitted.

One joint model f(x, a) on the design row [x, onehot(a), action_context[a]] (the action's own
features let the model share strength across actions). Binary rewards use a classifier's
P(r = 1 | x, a); other rewards a regressor. ``kind``:

* ``"gbm"``: scikit-learn's HistGradientBoosting (interactions between x and a come from the trees);
* ``"lightgbm"``: LightGBM (optional extra ``ray``; ``backend="local"`` trains with ``lightgbm.train``
  in this process, ``backend="ray"`` each fit with Ray Train's ``LightGBMTrainer`` over a Ray Dataset
  of the design, data-parallel on ``num_workers`` workers; see :mod:`grpokit.scale.outcome`);
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

__all__ = ["OutcomeModel", "LightGBMEstimator", "LIGHTGBM_PARAMS", "KINDS"]

KINDS = ("gbm", "linear", "lightgbm")
BACKENDS = ("local", "ray")

#: LightGBM's defaults here (deterministic, one thread: the local fit and a one-worker Ray fit agree)
LIGHTGBM_PARAMS = {"learning_rate": 0.05, "num_leaves": 31, "min_data_in_leaf": 20, "verbose": -1,
                   "deterministic": True, "force_col_wise": True, "num_threads": 1}


def require_lightgbm():
    """The ``lightgbm`` module, or an ImportError that names the extra to install."""
    try:
        import lightgbm
    except ImportError:  # pragma: no cover - only where the extra is absent
        raise ImportError("outcome_model = 'lightgbm' needs LightGBM, part of grpokit's optional extra 'ray': "
                          "pip install -c constraints.txt -e '.[ray]'") from None
    return lightgbm


def lightgbm_params(binary: bool, seed: int, params: dict | None = None) -> dict:
    """:data:`LIGHTGBM_PARAMS` with the objective (logistic loss for 0/1 rewards, squared loss otherwise)."""
    return {**LIGHTGBM_PARAMS, "objective": "binary" if binary else "regression", "seed": seed, **(params or {})}


class LightGBMEstimator:
    """A scikit-learn-shaped LightGBM fit on a design matrix: ``fit(X, y)``, ``predict``, ``predict_proba``.

    ``backend="local"``: ``lightgbm.train`` in this process; ``backend="ray"``: Ray Train's
    ``LightGBMTrainer`` on ``num_workers`` workers (the design goes to Ray's object store; the driver
    receives only the booster). ``params`` override :data:`LIGHTGBM_PARAMS`, except ``num_boost_round``
    (default 200) and the Ray settings ``num_workers``, ``cpus_per_worker``, ``address``.
    """

    def __init__(self, binary: bool, seed: int = 0, backend: str = "local", **params):
        if backend not in BACKENDS:
            raise ValueError(f"unknown outcome backend {backend!r}; choose one of {list(BACKENDS)}")
        self.binary, self.seed, self.backend, self.params = binary, seed, backend, params

    def get_params(self, deep: bool = True) -> dict:  # scikit-learn's clone
        return {"binary": self.binary, "seed": self.seed, "backend": self.backend, **self.params}

    def set_params(self, **params) -> "LightGBMEstimator":
        for k in ("binary", "seed", "backend"):
            if k in params:
                setattr(self, k, params.pop(k))
        self.params.update(params)
        return self

    def fit(self, X: np.ndarray, y: np.ndarray) -> "LightGBMEstimator":
        lgb = require_lightgbm()
        rest = dict(self.params)
        rounds = int(rest.pop("num_boost_round", 200))
        ray_opts = {k: rest.pop(k) for k in ("num_workers", "cpus_per_worker", "address") if k in rest}
        p = lightgbm_params(self.binary, self.seed, rest)
        if self.backend == "local":
            self.booster_ = lgb.train(p, lgb.Dataset(np.asarray(X, dtype=np.float64), label=y), num_boost_round=rounds)
        else:
            from grpokit.scale.outcome import train_design_ray  # optional extra 'ray'

            self.booster_ = train_design_ray(X, y, p, num_boost_round=rounds, **ray_opts)
        return self

    def _raw(self, X: np.ndarray) -> np.ndarray:
        return self.booster_.predict(np.asarray(X, dtype=np.float64), num_threads=1)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self._raw(X)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        p1 = self._raw(X)
        return np.stack([1.0 - p1, p1], axis=1)


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
    are all 0/1), ``"binary"`` or ``"regression"``; ``params``: passed to the scikit-learn estimator
    (for ``lightgbm``: LightGBM parameters, ``num_boost_round``, and with ``backend="ray"``
    ``num_workers``, ``cpus_per_worker``, ``address``).
    """

    def __init__(
        self,
        n_actions: int,
        kind: Literal["gbm", "linear", "lightgbm"] = "gbm",
        *,
        backend: Literal["local", "ray"] = "local",
        action_context: np.ndarray | None = None,
        n_folds: int = 5,
        task: Literal["auto", "binary", "regression"] = "auto",
        interactions: bool | None = None,
        seed: int = 0,
        **params,
    ):
        if n_actions < 2:
            raise ValueError(f"n_actions must be >= 2, got {n_actions}")
        if kind not in KINDS:
            raise ValueError(f"unknown outcome model kind {kind!r}; choose one of {list(KINDS)}")
        if backend not in BACKENDS:
            raise ValueError(f"unknown outcome backend {backend!r}; choose one of {list(BACKENDS)}")
        if backend == "ray" and kind != "lightgbm":
            raise ValueError(f"backend 'ray' fits outcome_model = 'lightgbm' only, got {kind!r}")
        if kind == "lightgbm":
            require_lightgbm()
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
        self.backend = backend
        self.action_context = action_context
        self.n_folds = n_folds
        self.task = task
        self.interactions = interactions
        self.seed = seed
        self.params = params

    # -- design -------------------------------------------------------------------------------

    def _estimator(self, binary: bool):
        if self.kind == "lightgbm":
            return LightGBMEstimator(binary, seed=self.seed, backend=self.backend, **self.params)
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
