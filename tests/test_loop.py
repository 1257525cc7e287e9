"""The closed loop end to end through a real ``grpokit serve`` subprocess on a free loopback port."""

from __future__ import annotations

import json

import pandas as pd
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from grpokit.loop.config import load_loop_config  # noqa: E402
from grpokit.loop.loop import run_loop  # noqa: E402


@pytest.mark.serve
@pytest.mark.slow
def test_tiny_loop_rolls_back_a_planted_bad_policy_and_handles_imperfect_rewards(tmp_path):
    cfg = load_loop_config(None, [
        "loop.rounds=2", "loop.decisions=6000", "loop.pilot_decisions=1500", "loop.shadow_decisions=200",
        "loop.eval_size=2000", "loop.n_bootstrap=100", "grpo.steps=20", "loop.plant_bad_policy_round=1",
        "loop.rewards.loss=0.03", "loop.rewards.duplicate=0.1", "loop.rewards.delay_batches=1",
    ])
    summary = run_loop(cfg, tmp_path / "run")
    rounds = summary["rounds"]
    assert [r["round"] for r in rounds] == [0, 1]
    for r in rounds:
        for key in ("round", "live_version", "true_value", "share_of_oracle", "verdict"):
            assert key in r
    # round 1: a planted bad policy (about 1 unit of profit per decision worse, 5 %: with 6,000 decisions a round the
    # guardrail's Welch test sees it in one cohort; at 2,000 it did not, at the guardrail's family-wise 5 %) (trained with the reward sign flipped) goes live; the guardrail rolls it back
    r1 = rounds[1]
    assert r1["planted"] == r1["live_version"]
    assert r1["verdict"] == "rollback", r1.get("guardrail")
    assert r1["guardrail"]["worse_cohorts"]
    assert r1["true_value"] < rounds[0]["true_value"]  # it really was worse
    assert summary["final"]["serving_version"] == rounds[0]["live_version"]  # the service serves the old one again
    # rewards: lost ones are left out (pending), duplicates are not added, the rest join exactly once
    from grpokit.serve.export import served_frame

    frame, info = served_frame(tmp_path / "run" / "store.duckdb")
    posted = [r["served"]["posted"] for r in rounds]
    lost = sum(p["lost"] for p in posted)
    dups = sum(p["duplicates"] for p in posted)
    assert lost > 0 and dups > 0
    phases = pd.concat([pd.read_parquet(f) for f in (tmp_path / "run" / "phases").glob("*.parquet")])
    # (rounds that pilot also lose and duplicate rewards in their shadow/pilot phases: hence >=)
    assert info["left_out_pending"] >= lost
    assert info["duplicate_rewards_ignored"] >= dups
    joined = frame.merge(phases, on="decision_id", how="left")
    assert joined["outcome"].notna().all()
    assert (joined["reward"] - joined["outcome"]).abs().max() < 1e-9  # first reward kept, never summed
    assert len(frame) == len(phases) - info["left_out_pending"]
    report = (tmp_path / "run" / "report.html").read_text()
    assert "rollback" in report
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["rollbacks"] == 1


def test_gate_screen_better_and_not_worse():
    """'better' passes only when the interval's lower end clears the margin; 'not_worse' unless its upper end does not."""
    import numpy as np

    from grpokit.loop.loop import _gate_screen

    rng = np.random.default_rng(0)
    noise = rng.standard_normal(10_000)
    noise = (noise - noise.mean()) / noise.std(ddof=1) * 50.0  # se = 0.5 exactly
    unclear = noise - 0.2  # -0.2 ± 0.98 (95 %): neither shown better nor worse
    worse = noise - 2.0  # -2.0 ± 0.98: shown worse
    better = noise + 2.0
    assert not _gate_screen(unclear, "better", 0.05, 0.0)["passed"]
    assert _gate_screen(unclear, "not_worse", 0.05, 0.0)["passed"]
    assert not _gate_screen(worse, "not_worse", 0.05, 0.0)["passed"]
    assert _gate_screen(better, "better", 0.05, 0.0)["passed"]
    g = _gate_screen(unclear, "not_worse", 0.2, 0.0)
    assert abs(g["gate_upper_bound"] - (-0.2 + 1.2816 * 0.5)) < 1e-3
    point = _gate_screen(unclear, "better", 1.0, -0.3)  # alpha 1: the point estimate against the margin
    assert point["gate_lower_bound"] == point["gate_upper_bound"] and point["passed"]


def test_pilot_size_from_the_power_figure():
    from grpokit.loop.loop import _pilot_size
    from grpokit.loop.pilot_power import power_plan, variance_components

    # the marketing loop's pre-period: 12 cohorts of ~1,650 decisions, unit variance ~850, cohorts alike
    means = [19.0, 19.4, 18.7, 19.9, 19.1, 18.8, 19.6, 19.2, 18.5, 19.8, 19.3, 18.9]
    comp = variance_components(means, [1650] * 12, [850.0] * 12)
    plan = power_plan(comp, cohorts=12, decisions=20_000, effect=1.0)
    need = plan["decisions_needed"]
    assert need > 20_000 and plan["mde"] > 1.0
    assert _pilot_size(plan, 20_000, 10**7) == need
    assert _pilot_size(plan, 20_000, 50_000) == min(need, 50_000)
    easy = power_plan(comp, cohorts=12, decisions=20_000, effect=100.0)
    assert _pilot_size(easy, 20_000, 80_000) == 20_000  # never below pilot_decisions
    assert _pilot_size({"note": "no power figure below 5 cohorts"}, 20_000, 80_000) == 20_000
    assert _pilot_size(power_plan(comp, cohorts=12, decisions=20_000), 20_000, 80_000) == 20_000  # no effect planned
    spread = variance_components([15.0, 24.0, 17.0, 22.0, 19.0, 26.0], [1650] * 6, [850.0] * 6)
    floor = power_plan(spread, cohorts=6, decisions=20_000, effect=0.5)
    assert floor["decisions_needed"] is None  # the between-cohort floor: more decisions cannot reach 0.5
    assert _pilot_size(floor, 20_000, 80_000) == 80_000


def test_pilot_max_decisions_below_pilot_decisions_is_an_error():
    with pytest.raises(ValueError, match="pilot_max_decisions"):
        load_loop_config(None, ["loop.pilot_max_decisions=1000"])
    with pytest.raises(ValueError, match="gate_screen"):
        load_loop_config(None, ["loop.gate_screen='sometimes'"])


def test_randomization_one_sided_p_hand_values_and_level():
    """p_greater = share of the design's assignments whose estimate (under the sharp null) is >= the observed one."""
    import numpy as np

    from grpokit.loop.pilot_analysis import randomization_interval
    from grpokit.loop.pilot_design import design_assignments, make_strata

    # pairs {0,1}, {2,3}; x orthogonal to T in each assignment, so tau_k = difference of means:
    # 2.5, -0.5, 0.5, -2.5 -> the observed 2.5 is the largest: p_greater = 1/4 (two-sided p = 2/4)
    y, t, x = np.array([10.0, 8.0, 12.0, 9.0]), np.array([1, 0, 1, 0], bool), np.array([1.0, 1.0, 2.0, 2.0])
    a, exact = design_assignments(np.array([0, 0, 1, 1]), "pairs")
    r = randomization_interval(y, t, a, x, exact=exact)
    assert r["p_greater"] == 0.25 and r["p_value"] == 0.5
    # under no effect it is a valid p-value: P(p_greater <= 0.1) <= 0.1 (150 draws, sd 0.025)
    rng = np.random.default_rng(5)
    small = 0
    for _ in range(150):
        xx = rng.normal(20, 8, 12)
        aa, ex = design_assignments(make_strata(xx, "strata", 4), "strata")
        tt = aa[rng.integers(len(aa))]
        yy = 0.9 * xx + rng.standard_t(3, 12)
        small += randomization_interval(yy, tt, aa, xx, exact=ex)["p_greater"] <= 0.1
    assert small / 150 <= 0.16
    # and it finds a real effect: +3 on noise of sd ~1.7
    yy = 0.9 * xx + rng.standard_t(3, 12) + 3.0 * tt
    assert randomization_interval(yy, tt, aa, xx, exact=ex)["p_greater"] < 0.05


def test_combined_decision_stouffer():
    from scipy.stats import norm

    from grpokit.loop.loop import _combined_decision

    half = norm.ppf(0.975)
    gate = {"improvement": {"value": 1.0, "ci_low": 1.0 - half * 0.5, "ci_high": 1.0 + half * 0.5}}  # z_gate = 2
    pilot = {"estimate": 0.8, "ci_low": -0.2, "ci_high": 1.8, "randomization": {"p_greater": float(norm.sf(1.5))}}
    d = _combined_decision(gate, pilot, 0.05)
    assert abs(d["z_gate"] - 2.0) < 1e-9 and abs(d["z_pilot"] - 1.5) < 1e-9
    assert abs(d["z"] - 3.5 / 2**0.5) < 1e-9 and d["verdict"] == "promote"  # 2.47 > 1.96; neither alone at 95 % two-sided
    weak = {**pilot, "randomization": {"p_greater": float(norm.sf(0.5))}}
    assert _combined_decision(gate, weak, 0.05)["verdict"] == "hold"  # (2 + 0.5) / sqrt 2 = 1.77
    against = {**pilot, "estimate": -0.1, "randomization": {"p_greater": float(norm.sf(3.0))}}
    assert _combined_decision(gate, against, 0.05)["verdict"] == "hold"  # the pilot must point the same way
    # precision weights 1 / se: a vague gate (se 2, z 0.1) no longer dilutes a clear pilot (se 0.5, z 2.6)
    vague = {"improvement": {"value": 0.2, "ci_low": 0.2 - half * 2.0, "ci_high": 0.2 + half * 2.0}}
    clear = {"estimate": 1.6, "ci_low": 0.4, "ci_high": 2.8, "ci_t": {"se": 0.5},
             "randomization": {"p_greater": float(norm.sf(2.6))}}
    eq = _combined_decision(vague, clear, 0.05)
    assert abs(eq["z"] - (0.1 + 2.6) / 2**0.5) < 1e-9 and eq["verdict"] == "hold"  # 1.91
    pw = _combined_decision(vague, clear, 0.05, "precision")
    assert abs(pw["z"] - (0.5 * 0.1 + 2.0 * 2.6) / (0.5**2 + 2.0**2) ** 0.5) < 1e-9 and pw["verdict"] == "promote"
    harm = {"estimate": -2.0, "ci_low": -3.0, "ci_high": -1.0, "randomization": {"p_greater": 0.99}}
    assert _combined_decision(gate, harm, 0.05)["verdict"] == "stop"


@pytest.mark.serve
@pytest.mark.slow
def test_tiny_loop_with_the_combined_decision_and_a_sized_pilot(tmp_path):
    cfg = load_loop_config(None, [
        "loop.rounds=2", "loop.decisions=4000", "loop.pilot_decisions=1500", "loop.pilot_max_decisions=3000",
        "loop.shadow_decisions=0", "loop.eval_size=2000", "loop.n_bootstrap=100", "grpo.steps=20",
        "loop.gate_screen='not_worse'", "loop.pilot_effect=0.5", "loop.decision='combined'",
    ])
    summary = run_loop(cfg, tmp_path / "run")
    piloted = [r for r in summary["rounds"] if r.get("pilot")]
    for r in summary["rounds"]:
        g = r["gate"]
        assert g["gate_screen"] == "not_worse" and g["passed"] == (g["gate_upper_bound"] > 0)
    assert piloted, [r["gate"] for r in summary["rounds"]]
    for r in piloted:
        p, d = r["pilot"], r["decision"]
        # an effect of 0.5 on profit of sd ~29 needs far more than 3,000 decisions: the pilot takes the cap
        assert p["decisions"] == 3000 and p["power"]["mde"] > 0.5
        assert 0 < p["randomization"]["p_greater"] <= 1
        assert d["verdict"] == ("promote" if d["z"] > d["critical"] and p["estimate"] > 0
                                else "stop" if p["ci_high"] < 0 else "hold")
        assert r["verdict"].startswith(d["verdict"])
