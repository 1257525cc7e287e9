"""The cohort pilot: design, analysis against hand-computed values and brute-force randomization, power."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from grpokit.loop.pilot_analysis import (
    analyze_cohorts,
    cluster_robust_difference,
    ols_t_interval,
    randomization_interval,
    welch_difference,
)
from grpokit.loop.pilot_design import design_assignments, make_strata, n_design_assignments, plan_pilot
from grpokit.loop.pilot_power import mde, power_plan, variance_components

# -- design ---------------------------------------------------------------------------------------


def test_strata_are_blocks_of_the_sorted_pre_period_means():
    x = np.array([5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0, 4.0, 6.0])
    s = make_strata(x, "strata", 4)  # 9 cohorts: blocks of 4, the 9th joins the last block
    order = np.argsort(x)
    assert s[order].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1]
    p = make_strata(x, "pairs")
    assert p[order].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 3]


@pytest.mark.parametrize("design,expected", [("strata", 6**3), ("pairs", 2**6), ("complete", math.comb(12, 6)),
                                             ("bernoulli", 2**12 - 2 * (1 + 12))])
def test_design_enumerates_every_assignment_once(design, expected):
    x = np.arange(12.0)
    strata = make_strata(x, design, 4)
    assert n_design_assignments(strata, design) == expected
    a, exact = design_assignments(strata, design, max_assignments=10_000)
    assert exact and a.shape == (expected, 12)
    assert len({row.tobytes() for row in a}) == expected
    if design in ("strata", "pairs"):
        for s in np.unique(strata):
            assert (a[:, strata == s].sum(1) == (strata == s).sum() // 2).all()


def test_plan_treats_half_of_each_stratum_and_is_seeded():
    x = np.random.default_rng(0).normal(20, 8, 12)
    names = [f"c{i}" for i in range(12)]
    a = plan_pilot(names, x, design="strata", seed=3)
    b = plan_pilot(names, x, design="strata", seed=3)
    assert a.treated == b.treated
    t, s = np.array(a.treated), np.array(a.strata)
    for k in range(3):
        assert t[s == k].sum() == 2
    draws = {tuple(plan_pilot(names, x, seed=i).treated) for i in range(30)}
    assert len(draws) > 10  # the seed changes the draw
    assert set(a.treated_cohorts) | set(a.control_cohorts) == set(names)


def test_plan_rejects_bad_input_naming_it():
    names = [f"c{i}" for i in range(6)]
    with pytest.raises(ValueError, match="at least 4 cohorts"):
        plan_pilot(names[:3], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="'c2'.*nan"):
        plan_pilot(names, [1, 2, float("nan"), 4, 5, 6])
    with pytest.raises(ValueError, match="repeat"):
        plan_pilot(["a", "a", "b", "c"], [1, 2, 3, 4])
    with pytest.raises(ValueError, match="unknown design"):
        plan_pilot(names, np.arange(6.0), design="magic")


# -- analysis against hand-computed values --------------------------------------------------------


def test_welch_hand_values():
    r = welch_difference(np.array([5.0, 7.0, 1.0, 3.0]), np.array([True, True, False, False]))
    assert r["estimate"] == pytest.approx(4.0)
    assert r["se"] == pytest.approx(math.sqrt(2.0))
    assert r["dof"] == pytest.approx(2.0)
    assert r["ci_high"] - 4.0 == pytest.approx(4.302652729911275 * math.sqrt(2.0))


# y = [3, 1, 5, 2], T = [1, 0, 1, 0], x = [-1, -1, 1, 1] (x orthogonal to 1 and T): tau = 4 - 1.5 = 2.5,
# slope = x'y / x'x = 3/4, residuals ±0.25, RSS 0.25 on 1 dof, se = sqrt(0.25 * (1/2 + 1/2)) = 0.5
Y, T, X = np.array([3.0, 1.0, 5.0, 2.0]), np.array([True, False, True, False]), np.array([-1.0, -1.0, 1.0, 1.0])


def test_ancova_t_interval_hand_values():
    r = ols_t_interval(Y, T, X)
    assert r["estimate"] == pytest.approx(2.5)
    assert r["slope"] == pytest.approx(0.75)
    assert r["se"] == pytest.approx(0.5)
    assert r["dof"] == 1
    assert r["ci_low"] == pytest.approx(2.5 - 12.706204736174707 * 0.5)


def test_randomization_p_value_hand_values():
    # pairs {0,1}, {2,3}: 4 assignments, x stays orthogonal to T in each, so tau_k = difference of means:
    # [1,0,1,0] 2.5, [1,0,0,1] -0.5, [0,1,1,0] 0.5, [0,1,0,1] -2.5  ->  p(tau = 0) = 2/4
    a, exact = design_assignments(np.array([0, 0, 1, 1]), "pairs")
    r = randomization_interval(Y, T, a, X, alpha=0.05, exact=exact)
    assert r["estimate"] == pytest.approx(2.5)
    assert r["p_value"] == pytest.approx(0.5)
    assert r["n_assignments"] == 4
    assert r["ci_low"] == -math.inf and r["ci_high"] == math.inf  # 4 assignments cannot reach 5 %


def test_cluster_robust_hand_values():
    # clusters A (T=1): 1, 3; B (T=1): 5; C (T=0): 0, 2; D (T=0): 4. tau = 3 - 2 = 1; residuals -2, 0, 2 per arm;
    # (X'X)^-1 = [[1/3, -1/3], [-1/3, 2/3]], cluster scores (-2,-2), (2,2), (-2,0), (2,0): V_TT = 16/9,
    # times G/(G-1) (N-1)/(N-2) = 4/3 * 5/4: se^2 = 80/27, t with 3 dof
    y = np.array([1.0, 3.0, 5.0, 0.0, 2.0, 4.0])
    t = np.array([1, 1, 1, 0, 0, 0])
    g = np.array(["A", "A", "B", "C", "C", "D"])
    r = cluster_robust_difference(y, t, g)
    assert r["estimate"] == pytest.approx(1.0)
    assert r["se"] == pytest.approx(math.sqrt(80 / 27))
    assert r["dof"] == 3
    assert r["ci_high"] == pytest.approx(1.0 + stats.t.ppf(0.975, 3) * math.sqrt(80 / 27))


def test_cluster_robust_matches_a_loop_over_clusters():
    rng = np.random.default_rng(1)
    g = rng.integers(0, 9, 300)
    t = (g % 2).astype(float)
    y = rng.normal(size=300) + 0.5 * t + 0.3 * g
    r = cluster_robust_difference(y, t, g)
    X = np.column_stack([np.ones(300), t])
    bread = np.linalg.inv(X.T @ X)
    beta = bread @ X.T @ y
    meat = np.zeros((2, 2))
    for c in np.unique(g):
        s = X[g == c].T @ (y - X @ beta)[g == c]
        meat += np.outer(s, s)
    v = 9 / 8 * 299 / 298 * bread @ meat @ bread
    assert r["se"] == pytest.approx(math.sqrt(v[1, 1]), rel=1e-10)


def test_analysis_rejects_bad_input():
    y = np.arange(6.0)
    with pytest.raises(ValueError, match="each arm needs >= 2"):
        analyze_cohorts(y, [True, False, False, False, False, False], y)
    with pytest.raises(ValueError, match="pre_mean of cohort 2"):
        analyze_cohorts(y, [True, True, True, False, False, False], [0, 1, np.inf, 3, 4, 5])
    with pytest.raises(ValueError, match="one entry per cohort"):
        analyze_cohorts(y, [True, False], y)
    with pytest.raises(ValueError, match="row 1"):
        cluster_robust_difference([1.0, np.nan, 2.0], [1, 0, 1], [0, 1, 2])


# -- against a brute-force randomization distribution ---------------------------------------------


def _brute_p(y, t_obs, x, assignments, t0):
    """p(t0) the long way: rebuild each assignment's outcomes under H0 and refit the regression."""
    y0 = y - t0 * t_obs

    def fit(t):
        X = np.column_stack([np.ones(len(y)), t, x - x.mean()])
        return np.linalg.lstsq(X, y0 + t0 * t, rcond=None)[0][1]

    obs = abs(fit(t_obs.astype(float)) - t0)
    stats_k = np.array([abs(fit(a.astype(float)) - t0) for a in assignments])
    return float(np.mean(stats_k >= obs - 1e-9))


@pytest.mark.parametrize("design", ["strata", "pairs"])
def test_randomization_interval_matches_brute_force_inversion(design):
    rng = np.random.default_rng(7)
    x = rng.normal(20, 8, 12)
    strata = make_strata(x, design, 4)
    a, exact = design_assignments(strata, design)
    t_obs = a[5]
    y = x + rng.normal(0, 1.5, 12) + 2.0 * t_obs + rng.normal(0, 0.5, 12) * t_obs
    r = randomization_interval(y, t_obs, a, x, alpha=0.1, exact=exact)
    assert r["p_value"] == pytest.approx(_brute_p(y, t_obs, x, a, 0.0))
    grid = np.linspace(r["estimate"] - 6, r["estimate"] + 6, 121)  # step 0.1
    accepted = grid[[_brute_p(y, t_obs, x, a, g) > 0.1 for g in grid]]
    assert accepted.min() == pytest.approx(r["ci_low"], abs=0.101)
    assert accepted.max() == pytest.approx(r["ci_high"], abs=0.101)


def test_randomization_interval_covers_a_constant_effect_at_its_level():
    rng = np.random.default_rng(3)
    cover = 0
    for rep in range(150):
        x = rng.normal(20, 8, 12)
        strata = make_strata(x, "strata", 4)
        a, exact = design_assignments(strata, "strata")
        t_obs = a[rng.integers(len(a))]
        y = 0.9 * x + rng.standard_t(3, 12) + 1.0 * t_obs  # heavy-tailed noise: no normality needed
        r = randomization_interval(y, t_obs, a, x, alpha=0.1, exact=exact)
        cover += r["ci_low"] <= 1.0 <= r["ci_high"]
    assert cover / 150 >= 0.84  # nominal 0.90; 150 draws: sd 0.025


def test_monte_carlo_assignments_when_the_design_is_large():
    x = np.arange(30.0)
    strata = make_strata(x, "complete")
    a, exact = design_assignments(strata, "complete", max_assignments=500, seed=1)
    assert not exact and a.shape == (500, 30) and (a.sum(1) == 15).all()
    y = x + 3.0 * a[0]
    r = analyze_cohorts(y, a[0], x, strata=strata, design="complete", max_assignments=500)
    assert r["ci_low"] < 3.0 < r["ci_high"] and not r["randomization"]["exact"]


# -- power ----------------------------------------------------------------------------------------


def test_variance_components_and_mde_hand_values():
    comp = variance_components([1.0, 3.0, 5.0, 7.0], [10, 10, 10, 10], [4.0, 4.0, 4.0, 4.0])
    assert comp["within_var"] == pytest.approx(4.0)
    assert comp["between_var"] == pytest.approx(20 / 3 - 0.4)  # var(1,3,5,7) = 20/3 minus 4/10
    no_between = {"within_var": 4.0, "between_var": 0.0, "mean_pre_n": 10}
    got = mde(no_between, cohorts=12, decisions_per_cohort=100, pre_decisions_per_cohort=100, power=0.8)
    q = stats.t.ppf(0.975, 9) + stats.t.ppf(0.8, 9)
    assert got == pytest.approx(q * math.sqrt(4.0 / 100 * (1 / 6 + 1 / 6)))


def test_power_prediction_matches_simulated_spread():
    rng = np.random.default_rng(11)
    sb, sw, m, k = 25.0, 400.0, 200, 12
    comp = {"within_var": sw, "between_var": sb, "mean_pre_n": m}
    q = stats.t.ppf(0.975, 9) + stats.t.ppf(0.8, 9)
    se_pred = mde(comp, cohorts=k, decisions_per_cohort=m, pre_decisions_per_cohort=m) / q
    est = []
    for _ in range(3000):
        mu = rng.normal(0, math.sqrt(sb), k)
        x = mu + rng.normal(0, math.sqrt(sw / m), k)
        y = mu + rng.normal(0, math.sqrt(sw / m), k)
        t = rng.permutation(np.r_[np.ones(6, bool), np.zeros(6, bool)])
        est.append(ols_t_interval(y, t, x)["estimate"])
    assert np.std(est) == pytest.approx(se_pred, rel=0.15)


def test_power_plan_needs_and_floor():
    comp = {"within_var": 400.0, "between_var": 25.0, "mean_pre_n": 200}
    p = power_plan(comp, cohorts=12, decisions=2400, effect=3.0)
    assert p["mde"] < p["mde_unadjusted"]
    k = p["cohorts_needed"]
    assert mde(comp, cohorts=k, decisions_per_cohort=200, pre_decisions_per_cohort=200) <= 3.0
    assert mde(comp, cohorts=k - 1, decisions_per_cohort=200, pre_decisions_per_cohort=200) > 3.0
    need = p["decisions_needed"]
    assert mde(comp, cohorts=12, decisions_per_cohort=need / 12, pre_decisions_per_cohort=200) <= 3.0
    # with the pre-period fixed at 200 per cohort the adjusted residual has a floor: a tiny effect is out of reach
    assert power_plan(comp, cohorts=12, decisions=2400, effect=0.01)["decisions_needed"] is None
    with pytest.raises(ValueError, match=">= 2"):
        variance_components([1.0, 2.0, 3.0], [1, 5, 5], [1.0, 1.0, 1.0])
