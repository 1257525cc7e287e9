"""Lift shares (docs/business.md): the share of the oracle's lift over a reference, and the report's number formats."""

import pytest

from grpokit.business import lift_shares
from grpokit.evaluation.report import fmt_ci, fmt_num, fmt_pct


def _policies():
    return {"grpo": {"value": 21.0}, "no_offer": {"value": 17.0}, "best_single": {"value": 18.0},
            "propensity": {"value": 16.0}, "oracle": {"value": 22.0}}


def test_lift_shares_by_hand():
    p = _policies()
    lift_shares(p, current="best_single")
    # (21 - 17) / (22 - 17) = 0.8 ; (21 - 18) / (22 - 18) = 0.75
    assert p["grpo"]["lift_share_vs_no_offer"] == pytest.approx(0.8)
    assert p["grpo"]["lift_share_vs_current"] == pytest.approx(0.75)
    assert p["oracle"]["lift_share_vs_no_offer"] == pytest.approx(1.0) and p["no_offer"]["lift_share_vs_no_offer"] == 0.0
    assert p["propensity"]["lift_share_vs_no_offer"] == pytest.approx(-0.2)  # worse than sending nothing
    assert p["best_single"]["lift_share_vs_current"] == 0.0


def test_lift_shares_undefined_without_a_reference_or_headroom():
    p = _policies()
    lift_shares(p, current=None)
    assert "lift_share_vs_current" not in p["grpo"]
    q = {"a": {"value": 1.0}, "no_offer": {"value": 2.0}, "oracle": {"value": 2.0}}
    lift_shares(q)
    assert q["a"]["lift_share_vs_no_offer"] is None  # the oracle does not beat the reference: no lift to share
    r = {"a": {"value": 1.0}, "no_offer": {"value": 0.5}}
    lift_shares(r)  # no oracle: nothing is added
    assert "lift_share_vs_no_offer" not in r["a"]


def test_number_formats():
    assert fmt_num(21.35812) == "21.36" and fmt_num(0.012345) == "0.0123" and fmt_num(152.1049) == "152.1"
    assert fmt_num(5444.9) == "5,445" and fmt_num(-0.468) == "-0.468" and fmt_num(None) == "–" and fmt_num(3) == "3"
    assert fmt_pct(0.97812) == "97.8 %" and fmt_pct(-0.2) == "-20.0 %" and fmt_pct(None) == "–"
    assert fmt_ci(20.14, 21.96) == "[20.14, 21.96]" and fmt_ci(None, 1.0) == ""
