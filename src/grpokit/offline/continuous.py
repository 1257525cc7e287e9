"""Off-policy evaluation for continuous actions (prices, budget shares) from a log with logged densities.

The log holds n rows (x_i, a_i, r_i, q_i) with a_i ∈ [low, high] (a scalar) or on the K-simplex, drawn
from the served density q(· | x_i), and q_i = q(a_i | x_i) its density at the logged action (a pdf,
not a probability). A target policy π is given by its density at the logged actions,
π_i = π(a_i | x_i), and, for the model-based terms, by samples a_is ~ π(· | x_i), s = 1..S.

Density ratio: w_i = π(a_i | x_i) / q_i (from log densities, w_i = exp(log π_i − log q_i)), optionally
clipped, w_i <- min(w_i, clip). Both densities must be with respect to the same base measure
(Lebesgue on [low, high], or on the first K − 1 coordinates of the simplex).

Estimators of V(π) = E_x ∫ π(a | x) E[r | x, a] da:

* ``ips``:   V = (1/n) Σ_i w_i r_i
* ``snips``: V = Σ_i w_i r_i / Σ_i w_i
* ``dm``:    V = (1/n) Σ_i dm_i,  dm_i = (1/S) Σ_s m(x_i, a_is),  a_is ~ π(· | x_i)
* ``dr``:    V = (1/n) Σ_i [dm_i + w_i (r_i − m(x_i, a_i))]

with m(x, a) ≈ E[r | x, a] an outcome model fitted on the log (features and action values,
:class:`ContinuousOutcomeModel`, cross-fitted: row i is scored by the fold model that did not see
it). ips and dr are unbiased when q covers π (q > 0 wherever π > 0) and the q_i are right (dr also
when m is wrong; its Monte-Carlo DM term is unbiased for ∫ π m, so S only adds variance); snips is
consistent. A uniform exploration component in the served density, q >= ε u (see
:mod:`grpokit.policy.deployed`), bounds w <= π / (ε u), so the ratios stay finite for a bounded π.

Confidence intervals (level 1 − alpha), as the categorical estimators
(:mod:`grpokit.offline.estimators`): ``ci="bootstrap"`` the percentile bootstrap over rows (each of
``n_bootstrap`` resamples recomputes the estimator with multinomial row counts c_bi, e.g. snips_b =
Σ c_bi w_i r_i / Σ c_bi w_i; seeded, the resamples depend only on (seed, n, n_bootstrap));
``ci="normal"``: V ± z sd(ψ) / sqrt(n) with ψ_i the per-row terms (snips: the linearized ψ_i = V +
w_i (r_i − V) / mean(w)). :func:`estimate_continuous_difference` gives V(π_a) − V(π_b) on the same
rows with a paired interval (the bootstrap recomputes both on the same resamples). Both treat q, m
and the Monte-Carlo samples as fixed.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

__all__ = ["CONTINUOUS_ESTIMATORS", "density_ratio", "estimate_continuous", "estimate_continuous_difference",
           "ContinuousOutcomeModel"]

CONTINUOUS_ESTIMATORS = ("ips", "snips", "dm", "dr")


def density_ratio(target_log_density, logged_log_density, clip: float | None = None) -> np.ndarray:
    """``[n]``: w_i = exp(log π_i − log q_i), clipped at ``clip`` when given."""
    lt = np.asarray(target_log_density, dtype=np.float64)
    lq = np.asarray(logged_log_density, dtype=np.float64)
    if lt.shape != lq.shape or lt.ndim != 1:
        raise ValueError(f"target and logged log densities must be [n] arrays of one shape, got {lt.shape} and {lq.shape}")
    if not np.all(np.isfinite(lq)):
        row = int(np.argwhere(~np.isfinite(lq))[0][0])
        raise ValueError(f"logged log density of row {row} is {lq[row]}: the served density must be positive and finite")
    if np.any(np.isnan(lt)) or np.any(lt == np.inf):
        row = int(np.argwhere(np.isnan(lt) | (lt == np.inf))[0][0])
        raise ValueError(f"target log density of row {row} is {lt[row]}")
    w = np.exp(lt - lq)
    if clip is not None:
        if not clip > 0:
            raise ValueError(f"clip must be > 0, got {clip}")
        w = np.minimum(w, clip)
    return w


def _columns(method: str, r: np.ndarray, w: np.ndarray, dm, m_logged) -> tuple[np.ndarray, callable]:
    """Per-row columns whose (count-weighted) means give the estimator, and the map from means to V."""
    if method == "ips":
        return np.stack([w * r], 1), lambda s: s[..., 0]
    if method == "snips":
        return np.stack([w * r, w], 1), lambda s: s[..., 0] / s[..., 1]
    if dm is None:
        raise ValueError(f"method {method!r} needs the DM term dm [n] (Monte-Carlo mean of m over target samples)")
    dm = np.asarray(dm, dtype=np.float64)
    if dm.shape != r.shape or not np.all(np.isfinite(dm)):
        raise ValueError(f"dm must be a finite [n] = [{len(r)}] array, got shape {dm.shape}")
    if method == "dm":
        return np.stack([dm], 1), lambda s: s[..., 0]
    if m_logged is None:
        raise ValueError("method 'dr' needs m_logged [n]: the outcome model at the logged actions")
    m = np.asarray(m_logged, dtype=np.float64)
    if m.shape != r.shape or not np.all(np.isfinite(m)):
        raise ValueError(f"m_logged must be a finite [n] = [{len(r)}] array, got shape {m.shape}")
    return np.stack([dm + w * (r - m)], 1), lambda s: s[..., 0]


def _check(method, reward, alpha, n_bootstrap, ci) -> np.ndarray:
    if method not in CONTINUOUS_ESTIMATORS:
        raise ValueError(f"unknown continuous estimator {method!r}; choose one of {list(CONTINUOUS_ESTIMATORS)}")
    if ci not in ("bootstrap", "normal"):
        raise ValueError(f"ci must be 'bootstrap' or 'normal', got {ci!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if ci == "bootstrap" and n_bootstrap < 10:
        raise ValueError(f"n_bootstrap must be >= 10, got {n_bootstrap}")
    r = np.asarray(reward, dtype=np.float64)
    if r.ndim != 1 or len(r) < 2 or not np.all(np.isfinite(r)):
        raise ValueError(f"reward must be a finite [n] array with n >= 2, got shape {r.shape}")
    return r


def _bootstrap_means(columns: np.ndarray, n_bootstrap: int, seed: int, chunk: int = 32) -> np.ndarray:
    """``[n_bootstrap, c]``: the count-weighted column means of each resample (n rows with replacement)."""
    n = len(columns)
    rng = np.random.default_rng(seed)
    out = np.empty((n_bootstrap, columns.shape[1]))
    for start in range(0, n_bootstrap, chunk):
        b = min(chunk, n_bootstrap - start)
        idx = rng.integers(0, n, size=(b, n))
        counts = np.bincount((idx + (np.arange(b) * n)[:, None]).ravel(), minlength=b * n).reshape(b, n)
        out[start:start + b] = counts @ columns / n
    return out


def _summary(value: float, boot: np.ndarray | None, terms: np.ndarray | None, alpha: float, n: int, **extra) -> dict:
    if boot is not None:
        boot = boot[np.isfinite(boot)]
        lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
        se = float(boot.std(ddof=1))
    else:
        se = float(terms.std(ddof=1) / math.sqrt(n))
        z = NormalDist().inv_cdf(1 - alpha / 2)
        lo, hi = value - z * se, value + z * se
    return {"value": float(value), "ci_low": float(lo), "ci_high": float(hi), "se": se, "n": n, **extra}


def estimate_continuous(method: str, reward, target_log_density, logged_log_density, *, dm=None, m_logged=None,
                        alpha: float = 0.05, n_bootstrap: int = 500, seed: int = 0, ci: str = "bootstrap",
                        clip: float | None = None) -> dict:
    """V(π) by ``method`` (module doc) with its (1 − alpha) interval: ``{value, ci_low, ci_high, se, n,
    method, ci, max_weight, ess}`` (ess = (Σ w)² / Σ w², the effective sample size of the ratios)."""
    r = _check(method, reward, alpha, n_bootstrap, ci)
    w = density_ratio(target_log_density, logged_log_density, clip)
    if len(w) != len(r):
        raise ValueError(f"reward has {len(r)} rows, the densities {len(w)}")
    cols, f = _columns(method, r, w, dm, m_logged)
    value = float(f(cols.mean(0)))
    extra = {"method": method, "ci": ci, "max_weight": float(w.max()), "ess": float(w.sum() ** 2 / (w ** 2).sum())}
    if ci == "bootstrap":
        return _summary(value, f(_bootstrap_means(cols, n_bootstrap, seed)), None, alpha, len(r), **extra)
    terms = cols[:, 0] if method != "snips" else value + w * (r - value) / w.mean()
    return _summary(value, None, terms, alpha, len(r), **extra)


def estimate_continuous_difference(method: str, reward, logged_log_density, target_log_density_a,
                                   target_log_density_b, *, dm_a=None, dm_b=None, m_logged=None,
                                   alpha: float = 0.05, n_bootstrap: int = 500, seed: int = 0,
                                   ci: str = "bootstrap", clip: float | None = None) -> dict:
    """V(π_a) − V(π_b) on the same rows, paired interval (module doc); also ``value_a``, ``value_b``."""
    r = _check(method, reward, alpha, n_bootstrap, ci)
    wa = density_ratio(target_log_density_a, logged_log_density, clip)
    wb = density_ratio(target_log_density_b, logged_log_density, clip)
    ca, fa = _columns(method, r, wa, dm_a, m_logged)
    cb, fb = _columns(method, r, wb, dm_b, m_logged)
    k = ca.shape[1]
    cols = np.concatenate([ca, cb], 1)

    def f(s):
        return fa(s[..., :k]) - fb(s[..., k:])

    means = cols.mean(0)
    value = float(f(means))
    extra = {"method": method, "ci": ci, "value_a": float(fa(means[:k])), "value_b": float(fb(means[k:]))}
    if ci == "bootstrap":
        return _summary(value, f(_bootstrap_means(cols, n_bootstrap, seed)), None, alpha, len(r), **extra)
    if method == "snips":
        va, vb = extra["value_a"], extra["value_b"]
        terms = (va + wa * (r - va) / wa.mean()) - (vb + wb * (r - vb) / wb.mean())
    else:
        terms = ca[:, 0] - cb[:, 0]
    return _summary(value, None, terms, alpha, len(r), **extra)


class ContinuousOutcomeModel:
    """m(x, a) ≈ E[r | x, a] for continuous actions: one regressor on the design [x, a] (a's value(s)).

    ``kind="gbm"``: scikit-learn's HistGradientBoostingRegressor (``params`` passed to it);
    ``"linear"``: ridge on [x, a, a², x·a] (standardized). :meth:`fit` also fits one model per fold
    of a seeded K-fold split; :meth:`predict_crossfit` scores each training row's actions with the
    model of the fold that did not see that row (the DR and DM terms of an estimate on the training
    rows), :meth:`predict` with the model fitted on all rows (for new contexts, e.g. GRPO's samples).
    ``a``: ``[n]`` or ``[n, K]``; for several actions per row ``[n, S]`` or ``[n, S, K]``.
    """

    def __init__(self, kind: str = "gbm", *, n_folds: int = 5, seed: int = 0, **params):
        if kind not in ("gbm", "linear"):
            raise ValueError(f"unknown continuous outcome model {kind!r}; choose 'gbm' or 'linear'")
        if n_folds < 2:
            raise ValueError(f"n_folds must be >= 2, got {n_folds}")
        self.kind, self.n_folds, self.seed, self.params = kind, n_folds, seed, params

    def _estimator(self):
        if self.kind == "gbm":
            from sklearn.ensemble import HistGradientBoostingRegressor

            kw = {"max_iter": 200, "learning_rate": 0.05, "random_state": self.seed, **self.params}
            return HistGradientBoostingRegressor(**kw)
        from sklearn.linear_model import Ridge
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import PolynomialFeatures, StandardScaler

        return make_pipeline(PolynomialFeatures(2, include_bias=False), StandardScaler(), Ridge(**self.params))

    @staticmethod
    def _design(x: np.ndarray, a: np.ndarray) -> np.ndarray:
        a = a.reshape(len(a), -1)
        return np.concatenate([x, a], 1)

    def fit(self, x, a, r, *, crossfit: bool = True) -> "ContinuousOutcomeModel":
        """Fit on all rows and (``crossfit``) one model per fold; ``crossfit=False``: :meth:`predict` only."""
        x = np.asarray(x, dtype=np.float64)
        a = np.asarray(a, dtype=np.float64)
        r = np.asarray(r, dtype=np.float64)
        if x.ndim != 2 or len(a) != len(x) or r.shape != (len(x),):
            raise ValueError(f"x [n, d], a [n(, K)] and r [n] must share n, got {x.shape}, {a.shape}, {r.shape}")
        if len(x) < 2 * self.n_folds:
            raise ValueError(f"need at least {2 * self.n_folds} rows to cross-fit {self.n_folds} folds, got {len(x)}")
        self.action_dim_ = 1 if a.ndim == 1 else a.shape[1]
        d = self._design(x, a)
        self.model_ = self._estimator().fit(d, r)
        rng = np.random.default_rng(self.seed)
        self.fold_ = rng.permutation(np.arange(len(x)) % self.n_folds)
        self.fold_models_ = ([self._estimator().fit(d[self.fold_ != k], r[self.fold_ != k]) for k in range(self.n_folds)]
                             if crossfit else None)
        self.n_ = len(x)
        return self

    def _many(self, model, x: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``[n, S]`` predictions of ``model`` at actions ``a [n, S(, K)]`` (or ``[n]`` at ``a [n(, K)]``)."""
        x = np.asarray(x, dtype=np.float64)
        a = np.asarray(a, dtype=np.float64)
        single = a.ndim == 1 or (a.ndim == 2 and self.action_dim_ > 1)
        a3 = a.reshape(len(x), 1, self.action_dim_) if single else a.reshape(len(x), a.shape[1], self.action_dim_)
        s = a3.shape[1]
        d = np.concatenate([np.repeat(x, s, 0), a3.reshape(-1, self.action_dim_)], 1)
        out = model.predict(d).reshape(len(x), s)
        return out[:, 0] if single else out

    def predict(self, x, a) -> np.ndarray:
        """m(x_i, a_i) (or ``[n, S]`` for several actions per row) with the model fitted on all rows."""
        return self._many(self.model_, x, a)

    def predict_crossfit(self, x, a) -> np.ndarray:
        """As :meth:`predict` on the training rows (in order), each by its out-of-fold model."""
        x = np.asarray(x, dtype=np.float64)
        if self.fold_models_ is None:
            raise ValueError("this model was fitted with crossfit=False")
        if len(x) != self.n_:
            raise ValueError(f"predict_crossfit scores the {self.n_} training rows, got {len(x)}")
        a = np.asarray(a, dtype=np.float64)
        out = None
        for k, model in enumerate(self.fold_models_):
            rows = self.fold_ == k
            p = self._many(model, x[rows], a[rows])
            if out is None:
                out = np.empty((len(x),) + p.shape[1:])
            out[rows] = p
        return out
