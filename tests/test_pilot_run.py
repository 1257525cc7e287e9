"""`grpokit run`'s pilot: the stratified, pre-period-adjusted design by default, Welch beside it."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from grpokit.business import business_headline, cluster_pilot, cohort_pilot, pilot_lines
from grpokit.cli import app
from grpokit.scenarios import make_scenario

runner = CliRunner()
SMALL = ["--set", "grpo.steps=40", "--set", "grpo.batch_size=128", "--set", "grpo.eval_size=512",
         "--set", "evaluation.eval_size=2000", "--set", "evaluation.log_size=3000", "--set", "evaluation.pilot_size=3000",
         "--set", "evaluation.compare_ignore_spillover=false", "--no-progress"]


@pytest.fixture(scope="module")
def marketing():
    sc = make_scenario("marketing")
    gen = torch.Generator().manual_seed(0)
    pre, ctx = sc.sample_contexts(6000, gen), sc.sample_contexts(6000, gen)
    return sc, pre, ctx


def _none(c):
    return torch.zeros(len(c), dtype=torch.long)


def _balanced(p: dict, per_stratum: int) -> None:
    """Each stratum treats half of its cohorts (the design's promise)."""
    treated = set(p["treated_cohorts"])
    strata = np.array(p["strata"])
    for s in np.unique(strata):
        members = [c for c, k in zip(p["cohorts"], strata) if k == s]
        assert len(members) == per_stratum
        assert sum(c in treated for c in members) == per_stratum // 2


def test_run_reports_the_stratified_pilot_with_welch_beside_it(tmp_path):
    out = tmp_path / "run"
    r = runner.invoke(app, ["run", "--out", str(out), "--set", "scenario.name=marketing", "--set", "evaluation.seed=3",
                            "--store", str(tmp_path / "s.duckdb"), *SMALL])
    assert r.exit_code == 0, r.output
    s = json.loads((out / "summary.json").read_text())
    p = s["pilot"]
    # the keys older readers use are still there, now holding the new design's estimate and interval
    assert p["design"] == "strata" and p["interval"] == "randomization" and p["adjusted"] is True
    assert p["ci_low"] <= p["difference"] <= p["ci_high"] and p["difference"] == p["estimate"]
    assert p["cohorts_new"] + p["cohorts_current"] == 12 and p["cohorts_new"] == 6
    assert p["units"] == 3000 and p["pre_units"] == 3000 and p["current_policy"] == "best_single"
    assert p["n_assignments"] == 6**3 and p["exact"] is True  # 3 strata of 4 cohorts, C(4,2) = 6 choices each
    _balanced(p, 4)
    assert p["mde"] > 0 and p["mde_unadjusted"] > 0
    # the older design on the same pilot customers: the same estimand, its own (coin) assignment
    w = p["welch"]
    assert w["true_effect"] == pytest.approx(p["true_effect"], abs=1e-12)
    assert w["ci_low"] <= w["difference"] <= w["ci_high"] and w["cohorts_new"] + w["cohorts_current"] == 12
    # the pilot's seeds are stated, derived from evaluation.seed = 3
    assert p["seeds"] == {"pilot_population": 14, "pilot_pre_population": 20, "pilot_assignment": 16}
    assert {k: s["seeds"][k] for k in p["seeds"]} == p["seeds"]
    html = (out / "report.html").read_text()
    assert "randomization interval" in html and "older design (coin per cohort, Welch)" in html
    assert "older design (coin per cohort, Welch)" in r.output


def test_bad_pilot_design_is_named(tmp_path):
    r = runner.invoke(app, ["run", "--out", str(tmp_path / "x"), "--set", "scenario.name=marketing",
                            "--set", 'evaluation.pilot_design="magic"'])
    assert r.exit_code == 2 and "evaluation.pilot_design" in r.output
    assert not (tmp_path / "x" / "summary.json").exists()
    sc = make_scenario("marketing")
    ctx = sc.sample_contexts(500, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="evaluation.pilot_design = 'magic'"):
        cohort_pilot(sc, ctx, _none(ctx), ctx, _none(ctx), _none(ctx), design="magic")


def test_the_estimate_is_the_ancova_coefficient_over_cohorts(marketing):
    sc, pre, ctx = marketing
    new = sc.oracle_actions(ctx)
    p = cohort_pilot(sc, pre, _none(pre), ctx, new, _none(ctx), seed=5)
    y, x = np.array(p["cohort_means"]), np.array(p["pre_means"])
    t = np.array([c in set(p["treated_cohorts"]) for c in p["cohorts"]], dtype=float)
    coef = np.linalg.lstsq(np.stack([np.ones_like(t), t, x - x.mean()], 1), y, rcond=None)[0]
    assert p["estimate"] == pytest.approx(coef[1], rel=1e-9, abs=1e-9)
    assert p["ci_t"]["estimate"] == pytest.approx(coef[1], rel=1e-9, abs=1e-9)
    assert p["ci_low"] <= p["estimate"] <= p["ci_high"]
    # the estimand, by hand: the mean over cohorts of the cohort's expected value new − current
    e_new = sc.expected_reward(ctx, new.unsqueeze(1))[:, 0].double()
    e_cur = sc.expected_reward(ctx, _none(ctx).unsqueeze(1))[:, 0].double()
    g = ctx.group
    truth = np.mean([float(e_new[g == c].mean() - e_cur[g == c].mean()) for c in torch.unique(g)])
    assert p["true_effect"] == pytest.approx(truth, rel=1e-9) and p["true_effect"] > 0
    # the pre-period means are the current policy's cohort means in the pre-period, not the pilot's
    assert not np.allclose(x, y)


def test_same_seed_same_pilot_and_pairs_are_balanced(marketing):
    sc, pre, ctx = marketing
    new = sc.oracle_actions(ctx)
    a = cohort_pilot(sc, pre, _none(pre), ctx, new, _none(ctx), design="pairs", seed=2)
    b = cohort_pilot(sc, pre, _none(pre), ctx, new, _none(ctx), design="pairs", seed=2)
    assert a == b
    _balanced(a, 2)
    assert a["n_assignments"] == 2**6 and a["cohorts_new"] == 6
    c = cohort_pilot(sc, pre, _none(pre), ctx, new, _none(ctx), design="pairs", seed=3)
    assert (c["estimate"], c["treated_cohorts"]) != (a["estimate"], a["treated_cohorts"])


def test_welch_design_is_the_older_pilot(marketing):
    sc, _, ctx = marketing
    new = sc.oracle_actions(ctx)
    p = cohort_pilot(sc, None, None, ctx, new, _none(ctx), design="welch", seed=4)
    old = cluster_pilot(sc, ctx, new, _none(ctx), seed=4)
    assert p["design"] == "welch" and p["difference"] == old["difference"] and p["ci_low"] == old["ci_low"]
    assert p["welch"]["difference"] == old["difference"]
    lines = pilot_lines({**p, "current_policy": "no_offer"})
    assert len(lines) == 1 and "Welch" in lines[0]
    with pytest.raises(ValueError, match="needs a pre-period"):
        cohort_pilot(sc, None, None, ctx, new, _none(ctx), design="strata")


def test_a_cohort_missing_from_the_pre_period_is_named(marketing):
    sc, pre, ctx = marketing
    keep = pre.group != 0
    thin = pre.index(torch.nonzero(keep).squeeze(1))
    with pytest.raises(ValueError, match=rf"{sc.group_names[0]}.*fewer than 2 units in the pre-period"):
        cohort_pilot(sc, thin, _none(thin), ctx, _none(ctx), _none(ctx))


def test_headline_reads_the_new_pilot(marketing):
    sc, pre, ctx = marketing
    p = cohort_pilot(sc, pre, _none(pre), ctx, sc.oracle_actions(ctx), _none(ctx), seed=1)
    p["current_policy"] = "no_offer"
    lines = business_headline({"policies": {"grpo": {"value": 1.0}}, "pilot": p})
    text = " ".join(lines)
    assert "stratified in 4s" in text and "true effect" in text and "older design" in text
    assert "minimal detectable effect" in text


def test_too_few_assignments_falls_back_to_the_t_interval_and_says_why():
    from grpokit.config import CohortsConfig
    from grpokit.groups.scenario import with_cohorts

    sc = with_cohorts(make_scenario("marketing"), CohortsConfig(method="kmeans", k=6))
    gen = torch.Generator().manual_seed(0)
    pre, ctx = sc.sample_contexts(3000, gen), sc.sample_contexts(3000, gen)
    p = cohort_pilot(sc, pre, _none(pre), ctx, sc.oracle_actions(ctx), _none(ctx), seed=1)
    # 6 cohorts = one stratum of 6: C(6, 3) = 20 assignments; far from the estimate the observed assignment and
    # its mirror image (B_k = +1, -1) always deviate as much as observed, so p >= 2/20 > 0.05: unbounded set
    assert p["n_assignments"] == 20 and not np.isfinite(p["randomization_ci"]).all()
    assert p["interval"] == "t" and "20 assignments" in p["interval_why"]
    assert (p["ci_low"], p["ci_high"]) == (p["ci_t"]["ci_low"], p["ci_t"]["ci_high"])
    assert np.isfinite([p["ci_low"], p["ci_high"]]).all() and p["ci_low"] <= p["estimate"] <= p["ci_high"]
    p["current_policy"] = "no_offer"
    assert p["interval_why"] in pilot_lines(p) and "small-sample t interval" in pilot_lines(p)[0]
