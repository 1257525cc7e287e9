"""Off-policy evaluation (OPE): the value of a target policy pi from logged bandit data.

The logs hold n rows (x_i, a_i, r_i, p_i) collected by a logging policy pi_0, with
p_i = pi_0(a_i | x_i) the logging propensity of the logged action. The target policy is given by its
action probabilities pi(a | x_i) on every logged context (``target_probs[i, a]``), and the model-based
estimators use an outcome model rhat(x_i, a) ~ E[r | x_i, a] for every action (``reward_hat[i, a]``),
ideally cross-fitted (each row scored by a model that did not see it).

Importance weights: w_i = pi(a_i | x_i) / p_i, optionally clipped: w_i <- min(w_i, clip).

Estimators (V = E_x[sum_a pi(a|x) E[r|x,a]], the expected reward of pi):

* ``ips``   (inverse propensity scoring):      V = (1/n) sum_i w_i r_i
* ``snips`` (self-normalized IPS):             V = sum_i w_i r_i / sum_i w_i
* ``dm``    (direct method):                   V = (1/n) sum_i dm_i,  dm_i = sum_a pi(a|x_i) rhat(x_i, a)
* ``dr``    (doubly robust):                   V = (1/n) sum_i [dm_i + w_i (r_i - rhat(x_i, a_i))]
* ``sndr``  (self-normalized doubly robust):   V = (1/n) sum_i dm_i + sum_i w_i (r_i - rhat(x_i, a_i)) / sum_i w_i

ips and dr are unbiased when the logging policy covers the target (pi(a|x) > 0 => pi_0(a|x) > 0) and
the propensities are right (dr also when rhat is wrong); snips and sndr are consistent (bias O(1/n))
and invariant to a common rescaling of the weights; dm is only as good as the outcome model. Clipping
trades bias (downwards for non-negative rewards) for variance.

Confidence intervals (level 1 - alpha):

* ``ci="bootstrap"``: percentile bootstrap over rows. Each of ``n_bootstrap`` resamples draws n rows
  with replacement (multinomial counts c_bi, sum_i c_bi = n) and recomputes the estimator with the
  counts as row weights, e.g. snips_b = sum_i c_bi w_i r_i / sum_i c_bi w_i; the interval is the
  [alpha/2, 1 - alpha/2] quantiles of the resampled values. Vectorized: the counts of a chunk of
  resamples are one ``bincount`` of a ``[chunk, n]`` index matrix, and every estimator needs only
  the count-weighted sums of a few per-row columns, i.e. one matrix product ``counts @ columns``.
  Seeded with ``numpy.random.default_rng(seed)``; the resamples depend only on (seed, n,
  n_bootstrap), so two calls with the same seed on the same rows use the same resamples.
* ``ci="normal"``: V +- z_{1-alpha/2} sd(psi) / sqrt(n) with psi_i the per-row terms (ips: w_i r_i;
  dm: dm_i; dr: dm_i + w_i (r_i - rhat_i,a_i)) and, for the ratio estimators, the linearized
  (delta-method / influence-function) terms psi_i = V + phi_i:
  snips: phi_i = w_i (r_i - V) / wbar;
  sndr:  phi_i = (dm_i - mean(dm)) + w_i (e_i - S) / wbar, with e_i = r_i - rhat(x_i, a_i),
  S = sum_i w_i e_i / sum_i w_i and wbar = mean(w). sd uses ddof = 1.

Both CIs treat pi_0's propensities and rhat as fixed (they ignore the uncertainty of fitting the
outcome model). A CI needs at least two rows: with n = 1, ci_low = ci_high = nan.

:func:`estimate_improvement` estimates V(pi) - V(pi_0) with V(pi_0) = mean(r) (the logging policy's
on-policy value) and a *paired* CI: the bootstrap recomputes both terms on the same resampled rows
(diff_b = V_b(pi) - mean_b(r)), the normal CI uses sd(psi_i - r_i) / sqrt(n). Because V(pi) and
mean(r) share the rows, the paired interval is usually much narrower than one built from the two
separate intervals.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from statistics import NormalDist

import numpy as np

__all__ = ["ESTIMATORS", "OPEResult", "estimate_value", "estimate_improvement"]

ESTIMATORS = ("ips", "snips", "dm", "dr", "sndr")
_NEEDS_MODEL = ("dm", "dr", "sndr")
_CI_KINDS = ("bootstrap", "normal")
_ROW_SUM_TOL = 1e-6
# Elements of one [chunk, n] bootstrap index matrix (int64): 2^21 ~ 16 MiB per chunk.
_CHUNK_ELEMENTS = 1 << 21


@dataclass(frozen=True)
class OPEResult:
    """An off-policy estimate with its (1 - alpha) confidence interval.

    ``diagnostics``: ``n`` rows; ``ess`` = (sum w)^2 / sum w^2, the effective sample size of the
    importance weights (n when all weights are equal); ``max_weight`` and ``mean_weight`` of the
    weights used (after clipping; mean_weight should be ~1 when pi_0 covers pi and there is no
    clipping, a value well below 1 flags actions the logging policy never takes);
    ``clipped_fraction``: share of rows whose weight was clipped. The bootstrap adds
    ``n_bootstrap`` and ``bootstrap_undefined`` (resamples where a self-normalized estimator was 0/0,
    dropped from the quantiles). :func:`estimate_improvement` adds ``target_value`` and
    ``logging_value``.
    """

    value: float
    ci_low: float
    ci_high: float
    method: str
    alpha: float
    diagnostics: dict = field(default_factory=dict)
    ci: str = "bootstrap"

    def to_dict(self) -> dict:
        """Plain-Python dict (JSON-serializable)."""
        return asdict(self)


# -- validation ---------------------------------------------------------------------------------


def _as_float(name: str, x, ndim: int) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array: {exc}") from None
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-d array, got shape {arr.shape}")
    _check_finite(name, arr)
    return arr


def _check_finite(name: str, arr: np.ndarray) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        pos = tuple(int(i) for i in np.argwhere(bad)[0])
        where = f"row {pos[0]}" if len(pos) == 1 else f"row {pos[0]}, action {pos[1]}"
        raise ValueError(f"{name} has a non-finite value in {where}: {arr[pos]} ({int(bad.sum())} in all)")


def _rows_msg(rows: np.ndarray) -> str:
    return "" if len(rows) <= 1 else f" ({len(rows)} rows in all)"


def _validate(method, reward, action, pscore, target_probs, reward_hat, alpha, clip, ci, n_bootstrap):
    if not isinstance(method, str) or method not in ESTIMATORS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(ESTIMATORS)}")
    if not isinstance(ci, str) or ci not in _CI_KINDS:
        raise ValueError(f"unknown ci {ci!r}; choose 'bootstrap' or 'normal'")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating, np.integer)) or not (0 < alpha < 1):
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if clip is not None:
        if isinstance(clip, bool) or not isinstance(clip, (int, float, np.floating, np.integer)) or not (clip > 0):
            raise ValueError(f"clip must be None or a number > 0, got {clip!r}")
    if ci == "bootstrap":
        if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < 1:
            raise ValueError(f"n_bootstrap must be an integer >= 1, got {n_bootstrap!r}")

    reward = _as_float("reward", reward, 1)
    pscore = _as_float("pscore", pscore, 1)
    target_probs = _as_float("target_probs", target_probs, 2)

    action = np.asarray(action)
    if action.ndim != 1:
        raise ValueError(f"action must be a 1-d array, got shape {action.shape}")
    numeric = np.issubdtype(action.dtype, np.integer) or np.issubdtype(action.dtype, np.floating)
    if action.dtype == bool or not numeric:
        raise ValueError(f"action must hold integer action codes, got dtype {action.dtype}")
    if np.issubdtype(action.dtype, np.floating):
        _check_finite("action", action)
        frac = np.flatnonzero(action != np.round(action))
        if len(frac):
            raise ValueError(
                f"action must hold integer action codes; row {frac[0]} has {action[frac[0]]}{_rows_msg(frac)}"
            )

    n = len(reward)
    lengths = {"reward": n, "action": len(action), "pscore": len(pscore), "target_probs": target_probs.shape[0]}
    if reward_hat is not None:
        reward_hat = _as_float("reward_hat", reward_hat, 2)
        lengths["reward_hat"] = reward_hat.shape[0]
    if len(set(lengths.values())) > 1:
        raise ValueError("row counts differ: " + ", ".join(f"{k} has {v}" for k, v in lengths.items()))
    if n == 0:
        raise ValueError("empty input: reward, action, pscore and target_probs have 0 rows")
    n_actions = target_probs.shape[1]
    if n_actions < 1:
        raise ValueError(f"target_probs must have at least one action column, got shape {target_probs.shape}")
    if reward_hat is not None and reward_hat.shape != target_probs.shape:
        raise ValueError(f"reward_hat has shape {reward_hat.shape}, target_probs has {target_probs.shape}")
    if method in _NEEDS_MODEL and reward_hat is None:
        raise ValueError(f"method {method!r} needs reward_hat ([n, n_actions] outcome-model predictions)")

    action = action.astype(np.int64)
    bad = np.flatnonzero((action < 0) | (action >= n_actions))
    if len(bad):
        raise ValueError(
            f"action must be in 0..{n_actions - 1} (target_probs has {n_actions} columns); "
            f"row {bad[0]} has {action[bad[0]]}{_rows_msg(bad)}"
        )
    bad = np.flatnonzero((pscore <= 0) | (pscore > 1))
    if len(bad):
        raise ValueError(f"pscore must be in (0, 1]; row {bad[0]} has {pscore[bad[0]]}{_rows_msg(bad)}")
    neg = np.argwhere(target_probs < 0)
    if len(neg):
        i, a = (int(v) for v in neg[0])
        raise ValueError(f"target_probs must be >= 0; row {i}, action {a} has {target_probs[i, a]}")
    sums = target_probs.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > _ROW_SUM_TOL)
    if len(bad):
        raise ValueError(
            f"target_probs rows must sum to 1 (tolerance {_ROW_SUM_TOL:g}); "
            f"row {bad[0]} sums to {float(sums[bad[0]])!r}{_rows_msg(bad)}"
        )
    return reward, action, pscore, target_probs, reward_hat


# -- estimators as count-weighted sums ------------------------------------------------------------


class _Prepared:
    """Per-row columns of one estimator; value(sums) maps column sums (or count-weighted sums) to V.

    Every estimator is a function of the sums of a few per-row columns and of n, which is what makes
    the bootstrap one matrix product: for resample b, the sums are counts_b @ columns.
    """

    def __init__(self, method, reward, action, pscore, target_probs, reward_hat, clip):
        n = len(reward)
        rows = np.arange(n)
        raw_w = target_probs[rows, action] / pscore
        w = raw_w if clip is None else np.minimum(raw_w, float(clip))
        self.n, self.method, self.reward, self.w = n, method, reward, w
        if reward_hat is not None:
            dm = (target_probs * reward_hat).sum(axis=1)
            resid = reward - reward_hat[rows, action]
        if method == "ips":
            cols = [w * reward]
        elif method == "dm":
            cols = [dm]
        elif method == "dr":
            cols = [dm + w * resid]
        elif method == "snips":
            cols = [w * reward, w]
        else:  # sndr
            cols = [dm, w * resid, w]
        self.columns = np.stack(cols, axis=1)  # [n, k]
        sum_w, sum_w2 = float(w.sum()), float((w * w).sum())
        self.diagnostics = {
            "n": n,
            "ess": sum_w**2 / sum_w2 if sum_w2 > 0 else 0.0,
            "max_weight": float(w.max()),
            "mean_weight": sum_w / n,
            "clipped_fraction": 0.0 if clip is None else float(np.mean(raw_w > clip)),
        }
        if method in ("snips", "sndr") and sum_w <= 0:
            raise ValueError(
                f"{method} is undefined: every importance weight is 0 (the target policy gives probability 0 "
                "to every logged action)"
            )

    def value(self, sums: np.ndarray) -> np.ndarray:
        """V from column sums ``[..., k]`` (resampled sums keep n rows, so n is unchanged)."""
        n = self.n
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.method in ("ips", "dm", "dr"):
                return sums[..., 0] / n
            if self.method == "snips":
                return sums[..., 0] / sums[..., 1]
            return sums[..., 0] / n + sums[..., 1] / sums[..., 2]

    def point(self) -> float:
        return float(self.value(self.columns.sum(axis=0)))

    def influence_terms(self, value: float) -> np.ndarray:
        """psi_i with mean(psi) = V whose sd / sqrt(n) is the (delta-method) standard error."""
        c = self.columns
        if self.method in ("ips", "dm", "dr"):
            return c[:, 0]
        w = self.w
        wbar = w.mean()
        if self.method == "snips":
            return value + w * (self.reward - value) / wbar
        dm, w_resid = c[:, 0], c[:, 1]
        s = w_resid.sum() / w.sum()
        return value + (dm - dm.mean()) + (w_resid - w * s) / wbar


def _bootstrap_sums(columns: np.ndarray, n_bootstrap: int, seed) -> np.ndarray:
    """``[n_bootstrap, k]``: sum_i c_bi columns[i] for multinomial resample counts c_b (n draws of n rows).

    Resamples are drawn in chunks of rows of a ``[chunk, n]`` index matrix; the counts of a chunk are
    one bincount, and their weighted sums one matrix product with the ``[n, k]`` columns.
    """
    rng = np.random.default_rng(seed)
    n, k = columns.shape
    out = np.empty((n_bootstrap, k), dtype=np.float64)
    chunk = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, n_bootstrap, chunk):
        m = min(chunk, n_bootstrap - start)
        idx = rng.integers(0, n, size=(m, n), dtype=np.int64)
        idx += (np.arange(m, dtype=np.int64) * n)[:, None]
        counts = np.bincount(idx.ravel(), minlength=m * n).reshape(m, n).astype(np.float64)
        out[start : start + m] = counts @ columns
    return out


def _z(alpha: float) -> float:
    return NormalDist().inv_cdf(1 - alpha / 2)


def _normal_ci(terms: np.ndarray, center: float, alpha: float) -> tuple[float, float]:
    n = len(terms)
    if n < 2:
        return math.nan, math.nan
    half = _z(alpha) * float(np.std(terms, ddof=1)) / math.sqrt(n)
    return center - half, center + half


def _percentile_ci(values: np.ndarray, alpha: float) -> tuple[float, float, int]:
    ok = np.isfinite(values)
    undefined = int((~ok).sum())
    if not ok.any():
        return math.nan, math.nan, undefined
    lo, hi = np.quantile(values[ok], [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi), undefined


def _run(method, improvement, reward, action, pscore, target_probs, reward_hat, alpha, n_bootstrap, seed, clip, ci):
    reward, action, pscore, target_probs, reward_hat = _validate(
        method, reward, action, pscore, target_probs, reward_hat, alpha, clip, ci, n_bootstrap
    )
    prep = _Prepared(method, reward, action, pscore, target_probs, reward_hat, clip)
    n = prep.n
    target_value = prep.point()
    logging_value = float(reward.mean())
    value = target_value - logging_value if improvement else target_value
    diagnostics = dict(prep.diagnostics)
    if improvement:
        diagnostics.update(target_value=target_value, logging_value=logging_value)

    if n < 2:
        lo, hi = math.nan, math.nan
        if ci == "bootstrap":
            diagnostics.update(n_bootstrap=int(n_bootstrap), bootstrap_undefined=0)
    elif ci == "normal":
        terms = prep.influence_terms(target_value)
        if improvement:
            terms = terms - reward
        lo, hi = _normal_ci(terms, value, alpha)
    else:
        columns = np.column_stack([prep.columns, reward]) if improvement else prep.columns
        sums = _bootstrap_sums(columns, int(n_bootstrap), seed)
        boot = prep.value(sums[:, : prep.columns.shape[1]])
        if improvement:
            boot = boot - sums[:, -1] / n
        lo, hi, undefined = _percentile_ci(boot, alpha)
        diagnostics.update(n_bootstrap=int(n_bootstrap), bootstrap_undefined=undefined)
    return OPEResult(
        value=float(value), ci_low=float(lo), ci_high=float(hi), method=method, alpha=float(alpha),
        diagnostics=diagnostics, ci=ci,
    )


# -- API ----------------------------------------------------------------------------------------


def estimate_value(
    method: str,
    *,
    reward,
    action,
    pscore,
    target_probs,
    reward_hat=None,
    alpha: float = 0.05,
    n_bootstrap: int = 1000,
    seed=0,
    clip: float | None = None,
    ci: str = "bootstrap",
) -> OPEResult:
    """Off-policy estimate of the target policy's value with a (1 - alpha) confidence interval.

    ``method`` in :data:`ESTIMATORS`, with w_i = min(pi(a_i|x_i) / p_i, clip) and
    dm_i = sum_a pi(a|x_i) rhat(x_i, a):

    * ips:   (1/n) sum_i w_i r_i
    * snips: sum_i w_i r_i / sum_i w_i
    * dm:    (1/n) sum_i dm_i
    * dr:    (1/n) sum_i [dm_i + w_i (r_i - rhat(x_i, a_i))]
    * sndr:  (1/n) sum_i dm_i + sum_i w_i (r_i - rhat(x_i, a_i)) / sum_i w_i

    Arguments: ``reward[n]``; ``action[n]`` integer codes in 0..n_actions-1; ``pscore[n]`` the logging
    propensity pi_0(a_i|x_i) in (0, 1]; ``target_probs[n, n_actions]`` pi(.|x_i), rows summing to 1;
    ``reward_hat[n, n_actions]`` the outcome model's E[r|x_i, a] (required for dm, dr, sndr);
    ``clip``: None or a weight cap > 0; ``ci``: ``"bootstrap"`` (percentile, ``n_bootstrap``
    resamples of the rows, ``numpy.random.default_rng(seed)``) or ``"normal"`` (z-interval of the
    per-row / delta-method terms). See the module docstring for the CI formulas. Raises ValueError on
    inconsistent or invalid input.
    """
    return _run(method, False, reward, action, pscore, target_probs, reward_hat, alpha, n_bootstrap, seed, clip, ci)


def estimate_improvement(
    method: str,
    *,
    reward,
    action,
    pscore,
    target_probs,
    reward_hat=None,
    alpha: float = 0.05,
    n_bootstrap: int = 1000,
    seed=0,
    clip: float | None = None,
    ci: str = "bootstrap",
) -> OPEResult:
    """V_method(pi) - mean(r): the target's estimated value minus the logging policy's on-policy value.

    The CI is paired: the bootstrap evaluates both terms on the same resampled rows,
    diff_b = V_b(pi) - (1/n) sum_i c_bi r_i (with the same seed, the V_b(pi) are exactly those of
    :func:`estimate_value`); the normal CI is diff +- z_{1-alpha/2} sd(psi_i - r_i) / sqrt(n) with
    psi_i the per-row (or delta-method) terms of the estimator. Arguments as :func:`estimate_value`;
    ``diagnostics`` adds ``target_value`` and ``logging_value``.
    """
    return _run(method, True, reward, action, pscore, target_probs, reward_hat, alpha, n_bootstrap, seed, clip, ci)
