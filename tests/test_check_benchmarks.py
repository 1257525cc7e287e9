"""benchmarks/check_benchmarks.py: finding the checked tables and comparing regenerated figures."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import business_table  # noqa: E402
import check_benchmarks as cb  # noqa: E402

TABLE = "| policy | value |\n| --- | --- |\n| grpo | 21.358 ± 0.132 (97.8 %) |"


def test_blocks_and_comparison():
    text = f"intro\n<!-- bench-check marketing -->\n{TABLE}\n<!-- /bench-check -->\nrest"
    assert cb.blocks(text) == {"marketing": TABLE}
    assert cb.same(TABLE, TABLE) == []
    assert cb.same(TABLE, TABLE.replace("21.358", "21.359")) == []  # one unit of the last printed digit
    assert cb.same(TABLE, TABLE.replace("21.358", "21.361"))  # three units: a different figure
    assert cb.same(TABLE, TABLE.replace("97.8 %", "97.6 %"))
    assert cb.same(TABLE, TABLE.replace("grpo", "x_learner"))  # text must match
    assert cb.same(TABLE, TABLE + "\n| extra | 1 |")


def test_every_check_has_its_block_in_benchmarks_md():
    found = cb.blocks((Path(cb.ROOT) / "BENCHMARKS.md").read_text())
    assert set(cb.CHECKS) <= set(found), sorted(set(cb.CHECKS) - set(found))


def _run(tmp_path, name, grpo, xl, oracle=22.0):
    d = tmp_path / name
    d.mkdir()
    pol = {"grpo": {"value": grpo}, "x_learner": {"value": xl}, "no_offer": {"value": 17.0}, "oracle": {"value": oracle}}
    for b in pol.values():
        b["share_of_oracle"] = b["value"] / oracle
        b["lift_share_vs_no_offer"] = (b["value"] - 17.0) / (oracle - 17.0)
    (d / "summary.json").write_text(json.dumps({"policies": pol, "lift_references": {"current": "best_single"}}))
    return d


def test_business_table_reports_margins_per_seed(tmp_path):
    dirs = [_run(tmp_path, "s0", 21.0, 20.0), _run(tmp_path, "s1", 20.0, 20.5)]
    t = business_table.table("marketing", dirs)
    rows = {r.split(" | ")[0].strip("| *"): r for r in t.splitlines()[2:]}
    assert list(rows) == ["grpo", "x_learner", "no_offer", "oracle"]  # best first, oracle last
    assert "20.500 ± 0.707" in rows["grpo"] and "70.0 %" in rows["grpo"]  # mean lift share (0.8 + 0.6) / 2
    assert "+1.000, -0.500 (1/2 above)" in rows["x_learner"]
    with pytest.raises(SystemExit):
        business_table.table("nonesuch", dirs)


def test_write_keeps_edits_made_while_the_runs_went_on(tmp_path):
    f = tmp_path / "B.md"
    f.write_text(f"a\n<!-- bench-check marketing -->\n{TABLE}\n<!-- /bench-check -->\n"
                 "<!-- bench-check other -->\n| x |\n<!-- /bench-check -->\n")
    f.write_text("new section by someone else\n" + f.read_text())  # edited after the script read it
    new = TABLE.replace("21.358", "20.000")
    cb.write_blocks(f, {"marketing": new})
    text = f.read_text()
    assert text.startswith("new section by someone else\n")
    assert cb.blocks(text) == {"marketing": new, "other": "| x |"}


def test_spillover_table_adds_the_offer_rate_to_sure_things(tmp_path):
    dirs = [_run(tmp_path, "s0", 21.0, 20.0), _run(tmp_path, "s1", 20.0, 20.5)]
    for d, rate in zip(dirs, (0.9, 0.7)):
        s = json.loads((d / "summary.json").read_text())
        s["policies"]["grpo"]["offer_rate_sure_things"] = rate
        (d / "summary.json").write_text(json.dumps(s))
    lines = business_table.table("spillover", dirs).splitlines()
    assert "offer rate, sure things" in lines[0]
    rows = {r.split(" | ")[0].strip("| *"): r.split(" | ") for r in lines[2:]}
    assert rows["grpo"][-2] == "0.80"  # mean of 0.9 and 0.7
    assert rows["x_learner"][-2] == "–"  # not in the summaries


def test_an_empty_block_is_filled_without_swallowing_the_text_after_it(tmp_path):
    f = tmp_path / "B.md"
    between = "prose between the blocks\n\n### a section\n"
    f.write_text(f"<!-- bench-check new -->\n<!-- /bench-check -->\n{between}"
                 f"<!-- bench-check marketing -->\n{TABLE}\n<!-- /bench-check -->\nend\n")
    assert cb.blocks(f.read_text()) == {"new": "", "marketing": TABLE}
    cb.write_blocks(f, {"new": "| n |"})
    assert f.read_text() == (f"<!-- bench-check new -->\n| n |\n<!-- /bench-check -->\n{between}"
                             f"<!-- bench-check marketing -->\n{TABLE}\n<!-- /bench-check -->\nend\n")


def test_a_check_whose_command_writes_one_file(tmp_path, monkeypatch):
    """OUT in the args is replaced by the file's path; the file is reused with --runs, rewritten without."""
    monkeypatch.setattr(cb, "_grpokit", lambda: [sys.executable])
    write = ["-c", "import sys, time; open(sys.argv[1], 'w').write(str(time.time_ns()))", cb.OUT]
    monkeypatch.setitem(cb.CHECKS, "one-file", ([("f.txt", write)], lambda paths: paths[0].read_text()))
    first = cb.run_check("one-file", tmp_path, reuse=True)
    assert (tmp_path / "f.txt").read_text() == first
    assert cb.run_check("one-file", tmp_path, reuse=True) == first  # reused
    cb._DONE.clear()
    assert cb.run_check("one-file", tmp_path, reuse=False) != first  # rerun


def test_obd_learn_table_reads_label_seed_and_gives_the_gates_verdict(tmp_path):
    import obd_table

    def write(name, lo, hi):
        r = {"policies": {"grpo": {"value": 0.01, "ci_low": 0.0, "ci_high": 0.02}, "random": {"value": 0.004}},
             "improvement_over_random": {"value": (lo + hi) / 2, "ci_low": lo, "ci_high": hi}}
        (tmp_path / name).write_text(json.dumps(r))
        return tmp_path / name

    files = [write("obd_learn_gbm_s0.json", 0.001, 0.05), write("obd_learn_gbm_beta0.05_s1.json", -0.01, 0.02),
             write("obd_learn_linear_s2.json", -0.006, -0.002)]
    rows = [r.split(" | ") for r in obd_table.learn(files, {"gbm": "gbm (default)"}).splitlines()[2:]]
    assert [(r[0].strip("| "), r[1], r[-1].strip(" |")) for r in rows] == [
        ("gbm (default)", "0", "promote"), ("gbm_beta0.05", "1", "hold"), ("linear", "2", "hold (worse)")]
    with pytest.raises(SystemExit):
        obd_table.learn([tmp_path / "other.json"])


def test_obd_tables_print_no_negative_zero(tmp_path):
    import obd_table

    assert [obd_table.f5(x) for x in (-0.0, -0.000004, 0.000004, -0.00001, 0.012345)] == [
        "0.00000", "0.00000", "0.00000", "-0.00001", "0.01235"]
    r = {"policies": {"grpo": {"value": 0.0, "ci_low": -0.000001, "ci_high": 0.00001}, "random": {"value": 0.0046}},
         "improvement_over_random": {"value": -0.0046, "ci_low": -0.0066, "ci_high": -0.0028}}
    (tmp_path / "obd_learn_gbm_s2.json").write_text(json.dumps(r))
    row = obd_table.learn([tmp_path / "obd_learn_gbm_s2.json"]).splitlines()[2]
    assert "[0.00000, 0.00001]" in row and "-0.00000" not in row


def test_fusion_table_extra_row_is_against_the_base_runs_static_tuned(tmp_path):
    import fusion_table

    def run(name, pols, chosen=None):
        d = tmp_path / name
        d.mkdir()
        summary = {"policies": {n: {"true": {"gpm": g, "opm": o}, "gpm_vs_static_tuned": 0.0, "opm_vs_static_tuned": 0.0}
                                for n, (g, o) in pols.items()},
                   "prior_weight_selection": None if chosen is None else {"chosen": chosen, "static": {"chosen": 0.0}}}
        (d / "summary.json").write_text(json.dumps(summary))
        return d

    base = [run(f"b{s}", {"static_default": (90.0, 9.0), "static_tuned": (100.0 + s, 10.0)}, 0.3) for s in range(2)]
    other = [run(f"o{s}", {"static_default": (90.0, 9.0), "static_tuned": (50.0, 5.0), "grade": (99.0 + s, 11.0)}) for s in range(2)]
    lines = fusion_table.table(base, [("grade, fixed", other, "grade")]).splitlines()
    assert lines[4].startswith("| grade, fixed | 99.5 ± 0.7 | 11.00 ± 0.00 | -1.00 %, -0.99 % (-1.00 %) | +10.00 %, +10.00 % (+10.00 %) | 0/2 / 2/2 |")
    assert lines[-1] == "prior weight chosen per seed: GRADE 0.3, 0.3; static weights 0, 0"
    bad = run("bad", {"static_default": (91.0, 9.0), "static_tuned": (50.0, 5.0), "grade": (99.0, 11.0)})
    with pytest.raises(SystemExit, match="evaluation requests differ"):
        fusion_table.table(base, [("grade, fixed", [other[0], bad], "grade")])
    with pytest.raises(SystemExit, match="no per-λ GRADE"):
        fusion_table.candidate_gpm(base[0])


def test_preferences_table_says_never_when_a_seed_did_not_reach_90_percent(tmp_path):
    import preferences_table

    block = {"policies": {"pgrpo": {"value": 0.5, "value_std": 0.01, "per_group": {"g0": 0.9, "g1": 0.05}}},
             "oracle": {"per_group": {"g0": 1.0, "g1": 0.1}}, "steps_to_90pct": {"g0": 10, "g1": None},
             "steps_to_90pct_per_seed": {"g0": [10, 10], "g1": [None, 40]}}
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"methods": {"pgrpo": block}}))
    assert preferences_table.table(f).splitlines()[2] == "| pgrpo | 0.5000 ± 0.0100 | 0.900 | 0.500 | 10 / never |"
    assert preferences_table.per_seed(f, ["g1"]) == "g1: pgrpo [never, 40]"


def test_a_file_commands_own_runs_folder_is_kept_with_runs_and_cleared_without(tmp_path, monkeypatch):
    """OUT_RUNS is replaced by the file's path + '.runs': reused with --runs (an interrupted sweep resumes),
    removed before a fresh run (nothing stale is reused by the command)."""
    monkeypatch.setattr(cb, "_grpokit", lambda: [sys.executable])
    code = ("import sys, pathlib; r = pathlib.Path(sys.argv[2]); r.mkdir(exist_ok=True); m = r / 'mark'; "
            "old = m.exists(); m.write_text('x'); open(sys.argv[1], 'w').write('reused' if old else 'fresh')")
    monkeypatch.setitem(cb.CHECKS, "sweep", ([("s.json", ["-c", code, cb.OUT, cb.OUT_RUNS])], lambda p: p[0].read_text()))
    assert cb.run_check("sweep", tmp_path, reuse=True) == "fresh"
    assert (tmp_path / "s.json.runs" / "mark").exists()
    (tmp_path / "s.json").unlink()  # an interrupted sweep: its runs are there, the file is not
    cb._DONE.clear()
    assert cb.run_check("sweep", tmp_path, reuse=True) == "reused"
    cb._DONE.clear()
    assert cb.run_check("sweep", tmp_path, reuse=False) == "fresh"


def test_group_frontier_check_rebuilds_the_table_from_its_json(tmp_path):
    import group_frontier

    mean = {**{k: 0.5 for k in group_frontier.METRICS}, "n_cohorts": 12, "value": 21.33}
    rows = [{"cohorts": "given", "policy": "grpo", "label": "profit", "mean": mean,
             "sd": {k: 0.1 for k in group_frontier.METRICS}}]
    f = tmp_path / "group_frontier.json"
    f.write_text(json.dumps({"rows": rows}))
    table = cb.CHECKS["group-frontier"][1]([f])
    assert table == group_frontier.markdown_table(rows)
    assert table.splitlines()[2].startswith("| given (12) | profit | 21.33 ± 0.10 |"), table


def test_learn_defaults_tables_from_their_json():
    import learn_defaults

    own = {"mean": {"grpo": {"true_value": 4.09125, "gap_closed": 0.6858, "share_of_oracle": 0.96117, "top_share": 0.5666}}}
    assert learn_defaults.own_data_table(own, {"grpo": "**grpo**"}).splitlines()[2] == "| **grpo** | 4.091 | +0.69 | 0.961 | 57 % |"
    mk = {"spillover": 0.3, "summary": {"grpo": {"lift_share_mean": 0.7975, "lift_share_sd": 0.0416, "lift_share_min": 0.749,
                                                 "lift_share_max": 0.825, "per_seed": [0.749, 0.821, 0.825]}}}
    row = learn_defaults.marketing_table([(mk, {})]).splitlines()[2]
    assert row == "| grpo | 0.3 | 79.8 % ± 4.2 | 74.9 - 82.5 % | 74.9, 82.1, 82.5 |", row
