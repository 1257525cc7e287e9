"""Continuous-action OPE (offline/continuous.py), the served mixture density (policy/deployed.py's
continuous branch) and the closed loop on pricing and allocation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

from grpokit.offline.continuous import (ContinuousOutcomeModel, density_ratio, estimate_continuous,
                                        estimate_continuous_difference)

# -- a synthetic problem with a known value --------------------------------------------------------
# x ~ U(0, 1); logged q = 0.8 Beta(2, 2) + 0.2 U[0, 1]; target pi(.|x) = Beta(2 + 3x, 5 − 3x);
# r = 1 − (a − x)² + N(0, 0.1²). E_pi[r | x] = 1 − Var(a|x) − (E[a|x] − x)² (Beta moments); V by quadrature.
EPS_LOG = 0.2


def _target_ab(x):
    return 2 + 3 * x, 5 - 3 * x


def _true_value() -> float:
    x = (np.arange(200_000) + 0.5) / 200_000
    a, b = _target_ab(x)
    mean, var = a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1))
    return float(np.mean(1 - var - (mean - x) ** 2))


def _logged_pdf(a):
    return (1 - EPS_LOG) * stats.beta.pdf(a, 2, 2) + EPS_LOG


def _draw(n, rng):
    x = rng.random(n)
    explore = rng.random(n) < EPS_LOG
    act = np.where(explore, rng.random(n), rng.beta(2, 2, n))
    r = 1 - (act - x) ** 2 + 0.1 * rng.standard_normal(n)
    ta, tb = _target_ab(x)
    return x, act, r, np.log(stats.beta.pdf(act, ta, tb)), np.log(_logged_pdf(act))


def _dm(x, m, rng, s=16):
    """DM term by S target samples through the outcome model ``m(x, a)``."""
    ta, tb = _target_ab(x)
    samples = rng.beta(ta[:, None], tb[:, None], (len(x), s))
    return m(x[:, None], samples).mean(1)


def test_ips_and_dr_are_unbiased_against_the_quadrature_value():
    truth = _true_value()
    rng = np.random.default_rng(0)
    wrong = lambda x, a: 0.5 + 0.0 * (x + a)  # noqa: E731  a wrong outcome model: DR stays unbiased
    ips, snips, dr, dm_wrong = [], [], [], []
    for _ in range(300):
        x, a, r, lt, lq = _draw(1000, rng)
        kw = dict(ci="normal")
        ips.append(estimate_continuous("ips", r, lt, lq, **kw)["value"])
        snips.append(estimate_continuous("snips", r, lt, lq, **kw)["value"])
        dm = _dm(x, wrong, rng)
        dr.append(estimate_continuous("dr", r, lt, lq, dm=dm, m_logged=wrong(x, a), **kw)["value"])
        dm_wrong.append(dm.mean())
    for name, v in (("ips", ips), ("snips", snips), ("dr", dr)):
        v = np.asarray(v)
        se = v.std(ddof=1) / math.sqrt(len(v))
        assert abs(v.mean() - truth) < 4 * se + 1e-4, (name, v.mean(), truth, se)
    assert abs(np.mean(dm_wrong) - truth) > 0.1  # the wrong model alone is biased: the test can fail


def test_dr_with_a_good_model_has_lower_variance_than_ips():
    rng = np.random.default_rng(1)
    good = lambda x, a: 1 - (a - x) ** 2  # noqa: E731
    ips, dr = [], []
    for _ in range(100):
        x, a, r, lt, lq = _draw(500, rng)
        ips.append(estimate_continuous("ips", r, lt, lq, ci="normal")["value"])
        dr.append(estimate_continuous("dr", r, lt, lq, dm=_dm(x, good, rng), m_logged=good(x, a), ci="normal")["value"])
    assert np.std(dr) < 0.5 * np.std(ips)


def _brute(method, r, lt, lq, dm=None, m=None):
    """Row by row, plain Python: the estimators' formulas."""
    w = [math.exp(t - q) for t, q in zip(lt, lq)]
    n = len(r)
    if method == "ips":
        return sum(wi * ri for wi, ri in zip(w, r)) / n
    if method == "snips":
        return sum(wi * ri for wi, ri in zip(w, r)) / sum(w)
    if method == "dm":
        return sum(dm) / n
    return sum(d + wi * (ri - mi) for d, wi, ri, mi in zip(dm, w, r, m)) / n


def test_point_estimates_match_a_brute_force_implementation():
    rng = np.random.default_rng(2)
    x, a, r, lt, lq = _draw(400, rng)
    m = 0.9 - 0.5 * (a - x) ** 2
    dm = rng.random(400)
    for method in ("ips", "snips", "dm", "dr"):
        got = estimate_continuous(method, r, lt, lq, dm=dm, m_logged=m, n_bootstrap=50)["value"]
        assert got == pytest.approx(_brute(method, r, lt, lq, dm, m), rel=1e-12, abs=1e-12), method
    # the paired difference is the difference of the two values; clipping caps the ratios
    lt2 = lt + np.log(0.5 + rng.random(400))
    d = estimate_continuous_difference("dr", r, lq, lt, lt2, dm_a=dm, dm_b=dm * 0.9, m_logged=m, n_bootstrap=50)
    assert d["value"] == pytest.approx(_brute("dr", r, lt, lq, dm, m) - _brute("dr", r, lt2, lq, dm * 0.9, m), abs=1e-12)
    assert density_ratio(lt, lq, clip=2.0).max() <= 2.0


def test_bootstrap_interval_matches_a_brute_force_bootstrap_and_covers():
    rng = np.random.default_rng(3)
    x, a, r, lt, lq = _draw(800, rng)
    res = estimate_continuous("snips", r, lt, lq, n_bootstrap=2000, seed=5)
    # an independent bootstrap: explicit resampling of rows, its own generator
    g = np.random.default_rng(99)
    w = np.exp(lt - lq)
    vals = []
    for _ in range(2000):
        i = g.integers(0, 800, 800)
        vals.append((w[i] * r[i]).sum() / w[i].sum())
    lo, hi = np.quantile(vals, [0.025, 0.975])
    assert res["ci_low"] == pytest.approx(lo, abs=0.01) and res["ci_high"] == pytest.approx(hi, abs=0.01)
    # coverage of the 95 % bootstrap interval over replicates
    truth = _true_value()
    hits = 0
    for k in range(100):
        x, a, r, lt, lq = _draw(600, rng)
        e = estimate_continuous("ips", r, lt, lq, n_bootstrap=200, seed=k)
        hits += e["ci_low"] <= truth <= e["ci_high"]
    assert hits >= 88, hits


def test_estimator_errors_name_the_problem():
    r, lt, lq = np.ones(5), np.zeros(5), np.zeros(5)
    with pytest.raises(ValueError, match="unknown continuous estimator"):
        estimate_continuous("switch", r, lt, lq)
    with pytest.raises(ValueError, match="needs the DM term"):
        estimate_continuous("dr", r, lt, lq)
    with pytest.raises(ValueError, match="m_logged"):
        estimate_continuous("dr", r, lt, lq, dm=np.ones(5))
    with pytest.raises(ValueError, match="logged log density of row 2"):
        estimate_continuous("ips", r, lt, np.array([0, 0, -np.inf, 0, 0.0]))


def test_outcome_model_crossfits_scalar_and_simplex_actions():
    rng = np.random.default_rng(4)
    x = rng.random((600, 2))
    a = rng.random(600)
    r = x[:, 0] - (a - 0.5) ** 2 + 0.05 * rng.standard_normal(600)
    m = ContinuousOutcomeModel("gbm", seed=0).fit(x, a, r)
    assert m.predict_crossfit(x, a).shape == (600,)
    many = m.predict_crossfit(x, rng.random((600, 3)))
    assert many.shape == (600, 3)
    truth = x[:, 0] - (a - 0.5) ** 2
    assert np.corrcoef(m.predict_crossfit(x, a), truth)[0, 1] > 0.8
    w = rng.dirichlet(np.ones(3), 600)
    ms = ContinuousOutcomeModel("linear", seed=0).fit(x, w, w[:, 0] + x[:, 1])
    assert ms.predict(x, w).shape == (600,) and ms.predict(x, np.stack([w, w], 1)).shape == (600, 2)


# -- the served mixture density ----------------------------------------------------------------------


def _deployed(tmp_path, head, eps):
    from grpokit.policy.deployed import DeployedPolicy
    from grpokit.policy.io import save_policy
    from grpokit.policy.network import MLPTorso, Policy

    torch.manual_seed(0)
    pol = Policy(MLPTorso(2, [8]), head)
    path = save_policy(pol, tmp_path / f"{type(head).__name__}.pt",
                       {"feature_names": ["f0", "f1"], "continuous_epsilon": eps})
    return DeployedPolicy.load(path), pol


def test_beta_mixture_samples_follow_the_logged_density(tmp_path):
    from grpokit.policy.heads import BetaHead

    dp, pol = _deployed(tmp_path, BetaHead(0.5, 2.0), 0.3)
    rows = [{"f0": 0.3, "f1": -0.2}] * 20_000
    d = dp.decide(rows, seed=0, uniforms=np.random.default_rng(0).random(20_000))
    with torch.no_grad():
        dist = pol(torch.tensor([[0.3, -0.2]]))
    a0, b0 = float(dist.a), float(dist.b)

    def cdf(y):
        return 0.7 * stats.beta.cdf((y - 0.5) / 1.5, a0, b0) + 0.3 * (y - 0.5) / 1.5

    assert stats.kstest(d.actions, cdf).pvalue > 0.001
    pdf = 0.7 * stats.beta.pdf((d.actions - 0.5) / 1.5, a0, b0) / 1.5 + 0.3 / 1.5
    np.testing.assert_allclose(d.propensities, pdf, rtol=1e-4)
    assert np.all(d.propensities >= 0.3 / 1.5 - 1e-12)  # the ratio of any target is bounded by pi / (eps u)
    # the same uniform gives the same action; without uniforms, chunking does not matter
    u = np.random.default_rng(1).random(10)
    np.testing.assert_array_equal(dp.decide(rows[:10], uniforms=u).actions, dp.decide(rows[:10], uniforms=u).actions)
    whole = dp.decide(rows[:30], seed=4).actions
    np.testing.assert_array_equal(np.concatenate([dp.decide(rows[:12], seed=4).actions,
                                                  dp.decide(rows[12:30], seed=4, row_index=np.arange(12, 30)).actions]), whole)


def test_dirichlet_mixture_density_and_mean(tmp_path):
    from grpokit.policy.heads import DirichletHead

    dp, pol = _deployed(tmp_path, DirichletHead(3), 0.25)
    rows = [{"f0": 1.0, "f1": 0.5}] * 20_000
    d = dp.decide(rows, uniforms=np.random.default_rng(2).random(20_000))
    assert d.actions.shape == (20_000, 3) and np.allclose(d.actions.sum(1), 1)
    with torch.no_grad():
        alpha = pol(torch.tensor([[1.0, 0.5]])).concentration[0].double().numpy()
    want = 0.75 * alpha / alpha.sum() + 0.25 / 3
    assert np.all(np.abs(d.actions.mean(0) - want) < 0.01)
    dens = 0.75 * stats.dirichlet.pdf(d.actions[:200].T, alpha) + 0.25 * math.gamma(3)
    np.testing.assert_allclose(d.propensities[:200], dens, rtol=1e-4)


def test_served_density_of_a_policy_matches_the_service_draw(tmp_path):
    from grpokit.offline.continuous_learn import sample_served, served_log_density_of
    from grpokit.policy.heads import BetaHead

    dp, pol = _deployed(tmp_path, BetaHead(0.0, 1.0), 0.2)
    x = np.random.default_rng(3).standard_normal((50, 2))
    d = dp.decide([{"f0": a, "f1": b} for a, b in x], seed=3)
    np.testing.assert_allclose(served_log_density_of(pol, x, d.actions, 0.2), d.log_density, rtol=1e-5, atol=1e-6)
    s = sample_served(pol, x[:1].repeat(20_000, 0), 1, 0.2, seed=0)[:, 0]
    assert stats.ks_2samp(s, dp.decide([{"f0": x[0, 0], "f1": x[0, 1]}] * 20_000, seed=9).actions).pvalue > 0.001


# -- the loop on pricing and allocation ----------------------------------------------------------------

_TINY = ["loop.rounds=2", "loop.decisions=2500", "loop.pilot_decisions=1500", "loop.shadow_decisions=200",
         "loop.eval_size=2000", "loop.n_bootstrap=100", "grpo.steps=20", "grpo.batch_size=64", "loop.epsilon=0.2",
         "loop.gate_screen='not_worse'", "loop.batch=500", "loop.flush_interval_s=0.05",
         "loop.rewards.loss=0.03", "loop.rewards.duplicate=0.1", "loop.rewards.delay_batches=1"]


def _check_tiny_run(summary, out, kind):
    import pandas as pd

    from grpokit.serve.export import served_frame

    rounds = summary["rounds"]
    assert [r["round"] for r in rounds] == [0, 1]
    for r in rounds:
        for key in ("round", "live_version", "true_value", "share_of_oracle", "verdict"):
            assert key in r
        assert r["share_of_oracle"] < 1 and (r.get("planted") or r["share_of_oracle"] > 0.5)
        g = r["gate"]
        assert g["improvement"]["ci_low"] < g["improvement"]["ci_high"]
        assert len(g["per_cohort"]) >= 6  # 12 observable cohorts, those with >= 50 held-out rows
    frame, info = served_frame(out / "store.duckdb", continuous=True)
    phases = pd.concat([pd.read_parquet(f) for f in (out / "phases").glob("*.parquet")])
    joined = frame.merge(phases, on="decision_id", how="left")
    assert (joined["reward"] - joined["outcome"]).abs().max() < 1e-9  # the posted reward is the served action's outcome
    assert info["duplicate_rewards_ignored"] > 0 and info["left_out_pending"] > 0
    a = np.asarray(frame["action_value"].tolist())
    if kind == "beta":
        assert a.ndim == 1 and a.min() >= 0.6 and a.max() <= 2.5
        # round 0 serves the list price (multiplier 1) mixed with 20 % uniform exploration over [0.6, 2.5]
        r0 = frame[frame["decision_id"].str.startswith("r0live-")]
        a0 = np.asarray(r0["action_value"].tolist())
        far = np.abs(a0 - 1.0) > 0.3
        assert 0.12 < far.mean() < 0.25
        assert np.allclose(r0["pscore"][far], 0.2 / 1.9, rtol=1e-3)  # the logged density there is eps * u
    else:
        assert a.ndim == 2 and a.shape[1] == 4 and np.allclose(a.sum(1), 1, atol=1e-6)
    assert (frame["pscore"] > 0).all()
    assert json.loads((out / "summary.json").read_text())["scenario"] == summary["scenario"]
    assert "share of oracle" in (out / "report.html").read_text()


@pytest.mark.serve
@pytest.mark.slow
def test_tiny_pricing_loop_through_a_real_server(tmp_path):
    pytest.importorskip("fastapi")
    from grpokit.loop.config import load_loop_config
    from grpokit.loop.loop import run_loop

    cfg = load_loop_config(None, ["scenario.name='pricing'", "loop.start_policy='reference'", *_TINY])
    summary = run_loop(cfg, tmp_path / "run")
    assert summary["scenario"] == "pricing"
    assert summary["rounds"][0]["live_label"] == "reference_list_price"
    _check_tiny_run(summary, tmp_path / "run", "beta")


@pytest.mark.serve
@pytest.mark.slow
def test_tiny_allocation_loop_through_a_real_server_with_a_planted_bad_policy(tmp_path):
    pytest.importorskip("fastapi")
    from grpokit.loop.config import load_loop_config
    from grpokit.loop.loop import run_loop

    cfg = load_loop_config(None, ["scenario.name='allocation'", "loop.start_policy='best_single'",
                                  "loop.plant_bad_policy_round=1", *_TINY])
    summary = run_loop(cfg, tmp_path / "run")
    assert summary["scenario"] == "allocation"
    r1 = summary["rounds"][1]
    assert r1["planted"] == r1["live_version"] and "guardrail" in r1
    assert r1["true_value"] < summary["rounds"][0]["true_value"]  # the planted policy really is worse
    if r1["verdict"] == "rollback":
        assert summary["final"]["serving_version"] == summary["rounds"][0]["live_version"]
    else:  # no guardrail verdict: the round went on to learn and gate
        assert "gate" in r1
    r1.setdefault("gate", summary["rounds"][0]["gate"])
    _check_tiny_run(summary, tmp_path / "run", "dirichlet")


@pytest.mark.parametrize("sets, match", [
    (["scenario.name='pricing'", "loop.drift=0.1"], "loop.drift"),
    (["scenario.name='allocation'", "loop.outcome_model='lightgbm'"], "loop.outcome_model"),
    (["scenario.name='pricing'", "loop.epsilon=0.0"], "loop.epsilon"),
    (["scenario.name='allocation'", "scenario.reward_components=true"], "scenario.reward_components"),
    (["scenario.name='pricing'", "policy.head='dirichlet'"], "policy.head"),
    (["scenario.name='marketing'", "loop.start_policy='reference'"], "loop.start_policy"),
    (["scenario.name='search'"], "scenario.name"),
    (["scenario.name='pricing'", "scenario.low=3.0"], "low"),
])
def test_loop_config_errors_name_the_field(sets, match):
    from grpokit.loop.config import load_loop_config

    with pytest.raises(ValueError, match=match):
        load_loop_config(None, sets)


def test_examples_load():
    from pathlib import Path

    from grpokit.loop.config import load_loop_config

    root = Path(__file__).resolve().parents[1] / "examples"
    assert load_loop_config(root / "pricing_loop.toml").scenario["name"] == "pricing"
    assert load_loop_config(root / "allocation_loop.toml").scenario["name"] == "allocation"


def test_cohorts_are_observable_and_the_world_scores_with_the_true_segment():
    from grpokit.loop.world import ContinuousWorld

    w = ContinuousWorld({"name": "pricing"}, eval_size=3000, seed=1)
    ctx = w.ctx
    np.testing.assert_array_equal(w.sc.cohort_of(ctx.obs).numpy(), ctx.group.numpy())
    assert len(w.sc.group_names) == 12 and len(np.unique(ctx.group.numpy())) == 12
    # the oracle beats every fixed price, and the scenario is scored with the true segments
    best = w.sc.best_fixed_action(0)
    unit = w.unit_values(ctx, lambda obs, s: np.full((len(obs), s), float(best)))
    assert w.oracle_unit.mean() > unit.mean()
    direct = w.base.expected_reward(type(ctx)(ctx.obs, ctx.extra["segment"], ctx.mask, ctx.extra),
                                    torch.full((len(ctx), 1), float(best), dtype=torch.float64))[:, 0].numpy()
    np.testing.assert_allclose(unit, direct)
