"""Off-policy estimators: hand-computed values, identities, unbiasedness, CI coverage, validation."""

import dataclasses
import json
import math
import time

import numpy as np
import pytest

from grpokit.offline import ESTIMATORS, OPEResult, estimate_improvement, estimate_value

Z975 = 1.959963984540054

# -- a tiny log written out ----------------------------------------------------------------------
# 4 rows, 3 actions.
#   row  action  reward  pscore  target_probs         reward_hat       w = pi(a_i)/p_i
#   0    0       1       0.5     [0.5, 0.25, 0.25]    [1.0, 0.0, 2.0]  0.5/0.5  = 1
#   1    1       0       0.25    [0.2, 0.5,  0.3 ]    [0.5, 1.0, 0.0]  0.5/0.25 = 2
#   2    2       2       0.5     [0.0, 0.0,  1.0 ]    [0.0, 1.0, 1.0]  1.0/0.5  = 2
#   3    0       2       0.8     [0.4, 0.4,  0.2 ]    [1.0, 1.0, 0.0]  0.4/0.8  = 0.5
REWARD = np.array([1.0, 0.0, 2.0, 2.0])
ACTION = np.array([0, 1, 2, 0])
PSCORE = np.array([0.5, 0.25, 0.5, 0.8])
TARGET = np.array([[0.5, 0.25, 0.25], [0.2, 0.5, 0.3], [0.0, 0.0, 1.0], [0.4, 0.4, 0.2]])
RHAT = np.array([[1.0, 0.0, 2.0], [0.5, 1.0, 0.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
# w r = [1, 0, 4, 1], sum 6; sum w = 5.5
# dm_i = sum_a pi rhat: [0.5 + 0 + 0.5, 0.1 + 0.5 + 0, 1.0, 0.4 + 0.4 + 0] = [1, 0.6, 1, 0.8], mean 3.4/4 = 0.85
# residual e = r - rhat(x_i, a_i) = [1-1, 0-1, 2-1, 2-1] = [0, -1, 1, 1]; w e = [0, -2, 2, 0.5], sum 0.5
EXPECTED = {
    "ips": 6 / 4,  # 1.5
    "snips": 6 / 5.5,  # 1.0909...
    "dm": 3.4 / 4,  # 0.85
    "dr": 0.85 + 0.5 / 4,  # 0.975 (per-row terms [1, -1.4, 3, 1.3])
    "sndr": 0.85 + 0.5 / 5.5,  # 0.9409...
}


def tiny(**overrides):
    kw = dict(reward=REWARD, action=ACTION, pscore=PSCORE, target_probs=TARGET, reward_hat=RHAT)
    kw.update(overrides)
    return kw


@pytest.mark.parametrize("method", ESTIMATORS)
def test_hand_computed_values(method):
    for ci in ("bootstrap", "normal"):
        res = estimate_value(method, **tiny(), ci=ci, n_bootstrap=200)
        assert res.value == pytest.approx(EXPECTED[method], abs=1e-12)
        assert res.method == method and res.ci == ci and res.alpha == 0.05
        assert res.ci_low <= res.ci_high


def test_hand_computed_diagnostics():
    d = estimate_value("ips", **tiny(), ci="normal").diagnostics
    # w = [1, 2, 2, 0.5]: ess = 5.5^2 / (1 + 4 + 4 + 0.25) = 30.25 / 9.25
    assert d["n"] == 4
    assert d["ess"] == pytest.approx(30.25 / 9.25)
    assert d["max_weight"] == 2.0
    assert d["mean_weight"] == pytest.approx(5.5 / 4)
    assert d["clipped_fraction"] == 0.0


def test_hand_computed_normal_cis():
    # ips terms [1, 0, 4, 1], mean 1.5, squared deviations [0.25, 2.25, 6.25, 0.25] -> var (ddof 1) = 9/3 = 3
    res = estimate_value("ips", **tiny(), ci="normal")
    half = Z975 * math.sqrt(3) / math.sqrt(4)
    assert (res.ci_low, res.ci_high) == pytest.approx((1.5 - half, 1.5 + half), abs=1e-9)
    # dr terms [1, -1.4, 3, 1.3], mean 0.975
    res = estimate_value("dr", **tiny(), ci="normal")
    sd = np.std([1, -1.4, 3, 1.3], ddof=1)
    assert res.ci_high - res.value == pytest.approx(Z975 * sd / 2, abs=1e-9)
    # snips delta method: V = 12/11, phi_i = w_i (r_i - V) / mean(w) with mean(w) = 11/8
    #   w (r - V) = [-1/11, -24/11, 20/11, 5/11] (sums to 0) -> phi = [-8, -192, 160, 40] / 121
    #   var(phi, ddof 1) = (64 + 36864 + 25600 + 1600) / 121^2 / 3
    res = estimate_value("snips", **tiny(), ci="normal")
    se = math.sqrt((64 + 36864 + 25600 + 1600) / 121**2 / 3 / 4)
    assert res.ci_high - res.value == pytest.approx(Z975 * se, abs=1e-9)
    assert res.value - res.ci_low == pytest.approx(Z975 * se, abs=1e-9)
    # sndr: phi_i = (dm_i - 0.85) + w_i (e_i - S) / mean(w), S = 0.5 / 5.5 = 1/11
    #   dm - 0.85 = [0.15, -0.25, 0.15, -0.05]; w (e - S) = [-1/11, -24/11, 20/11, 5/11]
    phi = np.array([0.15, -0.25, 0.15, -0.05]) + np.array([-1, -24, 20, 5]) / 11 * 8 / 11
    res = estimate_value("sndr", **tiny(), ci="normal")
    assert res.ci_high - res.value == pytest.approx(Z975 * np.std(phi, ddof=1) / 2, abs=1e-9)


def test_clipping_hand_computed():
    # clip 1.5: w = [1, 1.5, 1.5, 0.5], w r = [1, 0, 3, 1]
    kw = tiny(clip=1.5)
    assert estimate_value("ips", **kw, ci="normal").value == pytest.approx(5 / 4)
    assert estimate_value("snips", **kw, ci="normal").value == pytest.approx(5 / 4.5)
    # w e = [0, -1.5, 1.5, 0.5] -> dr = 0.85 + 0.5 / 4, sndr = 0.85 + 0.5 / 4.5
    assert estimate_value("dr", **kw, ci="normal").value == pytest.approx(0.975)
    assert estimate_value("sndr", **kw, ci="normal").value == pytest.approx(0.85 + 0.5 / 4.5)
    d = estimate_value("ips", **kw, ci="normal").diagnostics
    assert d["clipped_fraction"] == 0.5 and d["max_weight"] == 1.5
    assert d["mean_weight"] == pytest.approx(4.5 / 4)
    # a cap above every weight changes nothing
    for m in ESTIMATORS:
        assert estimate_value(m, **tiny(clip=2.0), ci="normal").value == pytest.approx(EXPECTED[m])


@pytest.mark.parametrize("method", ["snips", "sndr"])
def test_self_normalized_invariant_to_weight_scale(method):
    # every pscore x 1.25 (all stay <= 1) divides every weight by 1.25: ips scales, snips / sndr do not
    scaled = tiny(pscore=PSCORE * 1.25)  # 0.8 * 1.25 = 1.0
    assert estimate_value(method, **scaled, ci="normal").value == pytest.approx(EXPECTED[method], abs=1e-12)
    assert estimate_value("ips", **scaled, ci="normal").value == pytest.approx(EXPECTED["ips"] / 1.25)


def test_zero_outcome_model_gives_ips_and_snips():
    zero = np.zeros_like(RHAT)
    for dr, ips in (("dr", "ips"), ("sndr", "snips")):
        for ci in ("normal", "bootstrap"):
            a = estimate_value(dr, **tiny(reward_hat=zero), ci=ci, n_bootstrap=300, seed=3)
            b = estimate_value(ips, **tiny(), ci=ci, n_bootstrap=300, seed=3)
            assert (a.value, a.ci_low, a.ci_high) == pytest.approx((b.value, b.ci_low, b.ci_high), abs=1e-12)
    # dm with a zero model is 0
    assert estimate_value("dm", **tiny(reward_hat=zero), ci="normal").value == 0.0


def test_dr_equals_dm_when_model_exact_and_rewards_deterministic():
    log = simulate(seed=1, n=500, deterministic=True)
    for m in ("dr", "sndr"):
        a = estimate_value(m, **log.kwargs(log.q_rows), ci="normal").value
        b = estimate_value("dm", **log.kwargs(log.q_rows), ci="normal").value
        assert a == pytest.approx(b, abs=1e-12)
    # and a wrong model breaks the identity (the test can fail)
    a = estimate_value("dr", **log.kwargs(log.wrong_rows), ci="normal").value
    b = estimate_value("dm", **log.kwargs(log.wrong_rows), ci="normal").value
    assert abs(a - b) > 1e-3


def test_target_equal_to_logging_policy():
    log = simulate(seed=2, n=400)
    kw = log.kwargs(log.wrong_rows, target_rows=log.pi0[log.ctx])  # w == 1 for every row
    assert estimate_value("ips", **kw, ci="normal").value == pytest.approx(log.reward.mean())
    assert estimate_value("snips", **kw, ci="normal").value == pytest.approx(log.reward.mean())
    for ci in ("normal", "bootstrap"):
        res = estimate_improvement("ips", **kw, ci=ci, n_bootstrap=200)
        assert res.value == pytest.approx(0, abs=1e-12)
        assert res.ci_low == pytest.approx(0, abs=1e-12) and res.ci_high == pytest.approx(0, abs=1e-12)
    d = estimate_value("ips", **kw, ci="normal").diagnostics
    assert d["mean_weight"] == pytest.approx(1) and d["ess"] == pytest.approx(400)


# -- a simulated contextual bandit with a known value ---------------------------------------------


@dataclasses.dataclass
class Log:
    ctx: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    pscore: np.ndarray
    pi0: np.ndarray  # [M, K] logging policy on the context population
    pi: np.ndarray  # [M, K] target policy
    q: np.ndarray  # [M, K] true E[r | x, a]
    wrong: np.ndarray  # [M, K] a biased outcome model
    truth: float
    logging_truth: float

    @property
    def q_rows(self):
        return self.q[self.ctx]

    @property
    def wrong_rows(self):
        return self.wrong[self.ctx]

    def kwargs(self, reward_hat=None, target_rows=None):
        return dict(
            reward=self.reward,
            action=self.action,
            pscore=self.pscore,
            target_probs=self.pi[self.ctx] if target_rows is None else target_rows,
            reward_hat=reward_hat,
        )


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def simulate(seed, n, *, deterministic=False, target="other", m=30, k=4, d=3):
    """A finite population of m contexts (uniform), k actions, Bernoulli rewards with mean q[x, a].

    The population (features, q, both policies, the wrong model) is fixed (seed 12345); ``seed`` only
    draws the log, so the true value V(pi) = (1/m) sum_x sum_a pi(a|x) q(x, a) is exact.
    Logging: softmax(x B0); target: softmax(2 x B1) (``"other"``), or a policy that leans towards
    the best (``"better"``) or worst (``"worse"``) action. ``deterministic``: r = q (no noise).
    """
    pop = np.random.default_rng(12345)
    x = pop.normal(size=(m, d))
    q = 1 / (1 + np.exp(-(x @ pop.normal(size=(d, k)) + np.sin(2 * x[:, :1]) + pop.normal(size=k) * 0.5)))
    pi0 = _softmax(x @ pop.normal(size=(d, k)) * 0.7)
    if target == "other":
        pi = _softmax(2 * x @ pop.normal(size=(d, k)))
    else:
        sign = 1 if target == "better" else -1
        pi = 0.5 * pi0 + 0.5 * _softmax(sign * 6 * q)
    wrong = np.clip(q + 0.15 * np.cos(3 * x[:, :1] + np.arange(k)) + 0.05, 0, 1)
    rng = np.random.default_rng(seed)
    ctx = rng.integers(0, m, size=n)
    cum = pi0[ctx].cumsum(axis=1)
    action = np.minimum((rng.random(n)[:, None] > cum).sum(axis=1), k - 1)
    mean = q[ctx, action]
    reward = mean.copy() if deterministic else (rng.random(n) < mean).astype(np.float64)
    return Log(
        ctx=ctx, action=action, reward=reward, pscore=pi0[ctx, action], pi0=pi0, pi=pi, q=q, wrong=wrong,
        truth=float((pi * q).sum(axis=1).mean()), logging_truth=float((pi0 * q).sum(axis=1).mean()),
    )


def test_unbiased_on_simulated_logs():
    reps, n = 400, 300
    est = {key: [] for key in ("ips", "snips", "dr_wrong", "sndr_wrong", "dr_true", "dm_wrong", "dm_true")}
    truth = simulate(0, 1).truth
    for seed in range(reps):
        log = simulate(seed, n)
        assert log.truth == truth
        est["ips"].append(estimate_value("ips", **log.kwargs(), ci="normal").value)
        est["snips"].append(estimate_value("snips", **log.kwargs(), ci="normal").value)
        for name, rhat in (("wrong", log.wrong_rows), ("true", log.q_rows)):
            est[f"dr_{name}"].append(estimate_value("dr", **log.kwargs(rhat), ci="normal").value)
            est[f"dm_{name}"].append(estimate_value("dm", **log.kwargs(rhat), ci="normal").value)
        est["sndr_wrong"].append(estimate_value("sndr", **log.kwargs(log.wrong_rows), ci="normal").value)
    est = {key: np.asarray(v) for key, v in est.items()}
    for key in ("ips", "snips", "dr_wrong", "sndr_wrong", "dr_true", "dm_true"):
        se = est[key].std(ddof=1) / math.sqrt(reps)
        assert abs(est[key].mean() - truth) < 4 * se + 1e-3, (key, est[key].mean(), truth, se)
    # the DM with a wrong model is biased, and the check above would catch it
    se = est["dm_wrong"].std(ddof=1) / math.sqrt(reps)
    assert abs(est["dm_wrong"].mean() - truth) > 10 * se + 0.01
    # an exact model makes DR less variable than IPS (what is left is the Bernoulli noise x w)
    assert est["dr_true"].std() < 0.8 * est["ips"].std()


def test_dr_bootstrap_ci_coverage():
    reps, n = 200, 1000
    truth = simulate(0, 1).truth
    covered = {"bootstrap": 0, "normal": 0}
    for seed in range(reps):
        log = simulate(1000 + seed, n)
        for ci in covered:
            res = estimate_value("dr", **log.kwargs(log.wrong_rows), ci=ci, n_bootstrap=400, seed=seed)
            covered[ci] += res.ci_low <= truth <= res.ci_high
    for ci, c in covered.items():
        assert 0.88 <= c / reps <= 0.99, (ci, c / reps)


def test_bootstrap_seeded_and_close_to_normal():
    log = simulate(7, 5000)
    kw = log.kwargs(log.wrong_rows)
    a = estimate_value("sndr", **kw, seed=1, n_bootstrap=500)
    b = estimate_value("sndr", **kw, seed=1, n_bootstrap=500)
    c = estimate_value("sndr", **kw, seed=2, n_bootstrap=500)
    assert a == b
    assert (a.ci_low, a.ci_high) != (c.ci_low, c.ci_high)
    assert a.diagnostics["n_bootstrap"] == 500 and a.diagnostics["bootstrap_undefined"] == 0
    for m in ESTIMATORS:
        boot = estimate_value(m, **kw, n_bootstrap=2000)
        norm = estimate_value(m, **kw, ci="normal")
        assert boot.value == norm.value
        w_b, w_n = boot.ci_high - boot.ci_low, norm.ci_high - norm.ci_low
        assert abs(w_b / w_n - 1) < 0.1, (m, w_b, w_n)
        assert abs((boot.ci_low + boot.ci_high) / 2 - norm.value) < 0.1 * w_n


def test_bootstrap_alpha_widens():
    log = simulate(8, 2000)
    r90 = estimate_value("dr", **log.kwargs(log.wrong_rows), alpha=0.1)
    r99 = estimate_value("dr", **log.kwargs(log.wrong_rows), alpha=0.01)
    assert r99.ci_low < r90.ci_low < r90.value < r90.ci_high < r99.ci_high


def test_bootstrap_is_fast():
    rng = np.random.default_rng(0)
    n, k = 100_000, 5
    kw = dict(
        reward=rng.random(n), action=rng.integers(0, k, n), pscore=np.full(n, 1 / k),
        target_probs=rng.dirichlet(np.ones(k), size=n), reward_hat=rng.random((n, k)),
    )
    start = time.perf_counter()
    res = estimate_improvement("sndr", **kw, n_bootstrap=1000)
    elapsed = time.perf_counter() - start
    assert res.ci_low < res.value < res.ci_high
    assert elapsed < 20, elapsed  # ~1 s on a 2-core machine


def test_single_row_has_no_ci():
    for ci in ("bootstrap", "normal"):
        res = estimate_value("ips", reward=[1.0], action=[0], pscore=[0.5], target_probs=[[1.0, 0.0]], ci=ci)
        assert res.value == 2.0 and math.isnan(res.ci_low) and math.isnan(res.ci_high)


def test_result_is_frozen_and_serializable():
    res = estimate_improvement("dr", **tiny(), n_bootstrap=100)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.value = 0.0
    assert isinstance(res, OPEResult)
    d = json.loads(json.dumps(res.to_dict()))
    assert d["method"] == "dr" and d["value"] == pytest.approx(EXPECTED["dr"] - REWARD.mean())
    assert d["diagnostics"]["target_value"] == pytest.approx(EXPECTED["dr"])
    assert d["diagnostics"]["logging_value"] == pytest.approx(1.25)


# -- improvement over the logging policy -----------------------------------------------------------


@pytest.mark.parametrize("method", ESTIMATORS)
def test_improvement_paired_ci_not_wider_than_naive(method):
    log = simulate(11, 3000)
    kw = log.kwargs(log.wrong_rows)
    # the logging policy's value and CI: the target = logging policy gives w = 1, ips = mean(r)
    kw0 = log.kwargs(log.wrong_rows, target_rows=log.pi0[log.ctx])
    for ci in ("bootstrap", "normal"):
        imp = estimate_improvement(method, **kw, ci=ci, seed=5)
        tgt = estimate_value(method, **kw, ci=ci, seed=5)
        base = estimate_value("ips", **kw0, ci=ci, seed=6)
        assert imp.value == pytest.approx(tgt.value - log.reward.mean(), abs=1e-12)
        assert imp.diagnostics["target_value"] == tgt.value
        paired = imp.ci_high - imp.ci_low
        w_t, w_0 = tgt.ci_high - tgt.ci_low, base.ci_high - base.ci_low
        assert paired <= w_t + w_0  # the naive interval [lo_t - hi_0, hi_t - lo_0]
        if method != "dm":
            # rewards vary a lot across contexts, so the two terms are positively correlated and
            # the paired interval also beats the independent combination sqrt(w_t^2 + w_0^2)
            assert paired < math.sqrt(w_t**2 + w_0**2), (method, ci, paired, w_t, w_0)


@pytest.mark.parametrize("target", ["better", "worse"])
@pytest.mark.parametrize("method", ["ips", "snips", "dr", "sndr"])
def test_improvement_sign(method, target):
    log = simulate(21, 3000, target=target)
    true_gain = log.truth - log.logging_truth
    assert (true_gain > 0.03) if target == "better" else (true_gain < -0.03)
    for ci in ("bootstrap", "normal"):
        res = estimate_improvement(method, **log.kwargs(log.wrong_rows), ci=ci)
        assert np.sign(res.value) == np.sign(true_gain)
        assert res.ci_low > 0 if target == "better" else res.ci_high < 0, res
        assert res.ci_low <= true_gain <= res.ci_high


# -- validation --------------------------------------------------------------------------------------


def _with(**changes):
    kw = tiny()
    kw.update(changes)
    return kw


def _set(arr, idx, value):
    out = np.array(arr, dtype=np.float64)
    out[idx] = value
    return out


BAD_INPUTS = [
    ("shape", _with(reward=REWARD[:3]), r"row counts differ: reward has 3, action has 4"),
    ("shape-model", _with(reward_hat=RHAT[:, :2]), r"reward_hat has shape \(4, 2\), target_probs has \(4, 3\)"),
    ("ndim", _with(reward=REWARD[:, None]), r"reward must be a 1-d array"),
    ("empty", _with(reward=[], action=[], pscore=[], target_probs=np.zeros((0, 3)), reward_hat=np.zeros((0, 3))), "empty input"),
    ("nan-reward", _with(reward=_set(REWARD, 2, np.nan)), r"reward has a non-finite value in row 2: nan"),
    ("inf-pscore", _with(pscore=_set(PSCORE, 1, np.inf)), r"pscore has a non-finite value in row 1: inf"),
    ("nan-target", _with(target_probs=_set(TARGET, (3, 1), np.nan)), r"target_probs has a non-finite value in row 3, action 1"),
    ("nan-model", _with(reward_hat=_set(RHAT, (0, 2), -np.inf)), r"reward_hat has a non-finite value in row 0, action 2"),
    ("nan-action", _with(action=np.array([0, 1, np.nan, 0])), r"action has a non-finite value in row 2"),
    ("pscore-zero", _with(pscore=_set(PSCORE, 2, 0.0)), r"pscore must be in \(0, 1\]; row 2 has 0.0"),
    ("pscore-big", _with(pscore=_set(PSCORE, 3, 1.2)), r"pscore must be in \(0, 1\]; row 3 has 1.2"),
    ("pscore-neg", _with(pscore=_set(PSCORE, 0, -0.5)), r"row 0 has -0.5"),
    ("action-range", _with(action=np.array([0, 1, 3, 0])), r"action must be in 0..2 .*row 2 has 3"),
    ("action-neg", _with(action=np.array([0, -1, 2, 0])), r"row 1 has -1"),
    ("action-float", _with(action=np.array([0, 1.5, 2, 0])), r"action must hold integer action codes; row 1 has 1.5"),
    ("action-bool", _with(action=np.array([True, False, True, False])), r"action must hold integer action codes"),
    ("action-str", _with(action=np.array(["a", "b", "c", "a"])), r"action must hold integer action codes"),
    ("target-neg", _with(target_probs=np.array([[0.5, 0.25, 0.25], [0.2, 0.5, 0.3], [-0.1, 0.1, 1.0], [0.4, 0.4, 0.2]])), r"target_probs must be >= 0; row 2, action 0 has -0.1"),
    ("target-sum", _with(target_probs=_set(TARGET, (1, 2), 0.31)), r"target_probs rows must sum to 1 .*row 1 sums to 1.01"),
    ("reward-str", _with(reward=["a", "b", "c", "d"]), r"reward must be a numeric array"),
]


@pytest.mark.parametrize("kw, match", [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS])
def test_bad_inputs(kw, match):
    with pytest.raises(ValueError, match=match):
        estimate_value("dr", **kw)
    with pytest.raises(ValueError, match=match):
        estimate_improvement("dr", **kw, ci="normal")


def test_row_sum_tolerance():
    ok = _set(TARGET, (1, 2), 0.3 + 5e-7)  # within 1e-6
    assert estimate_value("ips", **_with(target_probs=ok), ci="normal").value == pytest.approx(1.5)


@pytest.mark.parametrize("method", ["dm", "dr", "sndr"])
def test_missing_outcome_model(method):
    with pytest.raises(ValueError, match=f"method '{method}' needs reward_hat"):
        estimate_value(method, **_with(reward_hat=None))
    # ips / snips do not need one
    assert estimate_value("snips", **_with(reward_hat=None), ci="normal").value == pytest.approx(EXPECTED["snips"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(method="ipw"), r"unknown method 'ipw'; choose one of ips, snips, dm, dr, sndr"),
        (dict(alpha=0.0), r"alpha must be in \(0, 1\), got 0.0"),
        (dict(alpha=1.0), r"alpha must be in \(0, 1\), got 1.0"),
        (dict(alpha=float("nan")), r"alpha must be in \(0, 1\)"),
        (dict(clip=0.0), r"clip must be None or a number > 0, got 0.0"),
        (dict(clip=-2), r"clip must be None or a number > 0, got -2"),
        (dict(ci="wald"), r"unknown ci 'wald'"),
        (dict(n_bootstrap=0), r"n_bootstrap must be an integer >= 1, got 0"),
    ],
)
def test_bad_options(kwargs, match):
    kwargs = dict(kwargs)
    method = kwargs.pop("method", "dr")
    with pytest.raises(ValueError, match=match):
        estimate_value(method, **tiny(), **kwargs)


def test_all_weights_zero_self_normalized():
    target = np.array([[0.0, 0.5, 0.5], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert estimate_value("ips", **_with(target_probs=target), ci="normal").value == 0.0
    for m in ("snips", "sndr"):
        with pytest.raises(ValueError, match=f"{m} is undefined: every importance weight is 0"):
            estimate_value(m, **_with(target_probs=target))
