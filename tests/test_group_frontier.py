"""benchmarks/group_frontier.py's table and plot on fake run summaries (no training)."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("group_frontier", ROOT / "benchmarks" / "group_frontier.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


gf = _module()

SEGS = ["sure_thing", "persuadable", "lost_cause", "sleeping_dog", "new_customer"]


def _block(value, per_group, per_segment, sure, per_market=None):
    b = {"value": value, "per_group": dict(zip(["c0", "c1"], per_group)),
         "per_segment": dict(zip(SEGS, per_segment)), "offer_rate_by_segment": {"sure_thing": sure}}
    if per_market is not None:
        b["per_market"] = dict(zip(["north/web", "south/app"], per_market))
    return b


def _summary(shift: float = 0.0, baselines: bool = True) -> dict:
    pol = {
        "no_offer": _block(10.0, [4.0, 20.0], [30, 2, 1, 20, 3], 0.0, [8.0, 12.0]),
        "oracle": _block(14.0, [6.0, 25.0], [30, 8, 1, 20, 9], 0.0, [11.0, 17.0]),
        "grpo": _block(12.0 + shift, [5.0, 21.0 + shift], [28, 6, 1, 20, 7], 0.5, [9.0, 15.0]),
    }
    if baselines:
        pol["t_learner"] = _block(11.0, [3.0, 22.0], [29, 5, 1, 19, 6], 0.8, [7.5, 15.0])
        pol["x_learner"] = _block(11.5, [4.5, 21.0], [29, 6, 1, 19, 6], 0.7, [8.5, 14.5])
    return {"policies": pol, "segments": {"shares": dict(zip(SEGS, [0.25, 0.2, 0.25, 0.1, 0.2]))}}


def test_policy_metrics_hand_computed():
    m = gf.policy_metrics(_summary(), "grpo")
    assert m["value"] == 12.0
    assert m["share_of_oracle"] == pytest.approx(12 / 14)
    assert m["lift_share"] == pytest.approx((12 - 10) / (14 - 10))
    assert m["sure_rate"] == 0.5
    assert m["lowest_gain"] == pytest.approx(1.0)  # gains c0: 5 - 4 = 1, c1: 21 - 20 = 1
    assert m["spread"] == pytest.approx(0.0)
    assert m["lowest_market_gain"] == pytest.approx(1.0)  # 9 - 8 = 1, 15 - 12 = 3
    assert m["untapped_gain"] == pytest.approx(0.2 * (6 - 2) + 0.2 * (7 - 3))
    t = gf.policy_metrics(_summary(), "t_learner", "per_market")
    assert t["lowest_gain"] == pytest.approx(-0.5) and t["spread"] == pytest.approx(3.5)  # 7.5 - 8, 15 - 12


def test_collect_aggregate_table_and_frontier(tmp_path):
    w0, w1 = (1.0, 0.0, 0.0), (0.0, 0.5, 2.0)
    runs = [("discovered", 0, w0, _summary(0.0)), ("discovered", 1, w0, _summary(2.0)),
            ("discovered", 0, w1, _summary(-1.0, False)), ("discovered", 1, w1, _summary(-1.0, False)),
            ("given", 0, w0, _summary(0.0, False)), ("given", 1, w0, _summary(0.0, False))]
    rows = gf.aggregate(gf.collect(runs))
    by = {(r["cohorts"], r["label"]): r for r in rows}
    assert set(by) >= {("discovered", "profit"), ("discovered", "rel 0.5 + rank 2 (group-relative only)"),
                       ("discovered", "t_learner"), ("given", "t_learner"), ("given", "oracle")}
    prof = by[("discovered", "profit")]
    assert prof["mean"]["value"] == pytest.approx(13.0) and prof["sd"]["value"] == pytest.approx(2 ** 0.5)
    assert prof["seeds"] == [0, 1]
    # the baselines of the given cohorts come from the discovered run's region x channel values
    assert by[("given", "t_learner")]["mean"]["lowest_gain"] == pytest.approx(-0.5)
    assert by[("discovered", "t_learner")]["mean"]["lowest_gain"] == pytest.approx(-1.0)  # 3 - 4, 22 - 20
    md = gf.markdown_table(rows)
    assert "| discovered (2) | profit | 13.00 ± 1.41 |" in md
    assert "85.7 ± 0.0 %" in gf.markdown_table([by[("given", "profit")]])  # 12 / 14

    gf.write_outputs(rows, json_out=str(tmp_path / "f.json"), plot_out=str(tmp_path / "f.svg"),
                     report_out=str(tmp_path / "r" / "report.html"), command="python benchmarks/group_frontier.py", meta={"seeds": [0, 1]})
    data = json.loads((tmp_path / "f.json").read_text())
    pts = data["frontier"]["points"]
    objective = [p for p in pts if p["kind"] == "objective"]
    assert len(objective) == 3 and {p["series"] for p in objective} == {"discovered cohorts", "given cohorts"}
    assert sorted(p["label"] for p in objective) == ["0:0.5:2", "1:0:0", "1:0:0"]
    assert {p["label"] for p in pts if p["kind"] == "baseline"} == {"t_learner (discovered)", "x_learner (discovered)",
                                                                    "t_learner (given)", "x_learner (given)"}
    svg = (tmp_path / "f.svg").read_text()
    assert svg.startswith("<svg") and svg.count("class='objective'") == 3 and svg.count("class='baseline'") == 4
    page = (tmp_path / "r" / "report.html").read_text()
    assert "Profit and fairness: the frontier" in page and "<svg" in page and "13.00 ± 1.41" in page
    assert "Value per policy" not in page  # a benchmark page has no run's policies


def test_run_report_derives_frontier_from_policies(tmp_path):
    from grpokit.evaluation.report import frontier_points, write_report

    pol = {"grpo": {"value": 12.0, "lowest_cohort_improvement_vs_no_offer": 1.0},
           "t_learner": {"value": 11.0, "lowest_cohort_improvement_vs_no_offer": -1.0},
           "oracle": {"value": 14.0, "lowest_cohort_improvement_vs_no_offer": 2.0}, "random": {"value": 9.0}}
    pts = frontier_points(pol)
    assert [(p["label"], p["kind"], p["x"]) for p in pts] == [("grpo", "objective", 1.0), ("t_learner", "baseline", -1.0),
                                                             ("oracle", "reference", 2.0)]
    page = write_report(tmp_path / "report.html", title="t", summary={"policies": pol}).read_text()
    assert "Profit and fairness: the frontier" in page and page.count("class='baseline'") == 1
    assert "lowest cohort gain vs no offer" in page


def test_parse_weights_names_bad_values():
    assert gf.parse_weights("1:0.5:2") == (1.0, 0.5, 2.0)
    for bad in ("1:2", "a:b:c", "0:0:0", "1:-1:0"):
        with pytest.raises(argparse.ArgumentTypeError, match="--weights"):
            gf.parse_weights(bad)
    assert gf.weight_label((1.0, 0.0, 0.0)) == "profit" and gf.weight_label((2.0, 1.0, 0.0)) == "2·profit + rel 1"
