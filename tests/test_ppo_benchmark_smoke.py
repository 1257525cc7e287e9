"""Smoke test of benchmarks/ppo_vs_grpo.py: a tiny budget, every method, a valid JSON (SB3 is a bench extra)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("stable_baselines3")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "ppo_vs_grpo.py"


def _load():
    spec = importlib.util.spec_from_file_location("ppo_vs_grpo", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_summarize_curve_first_and_stable():
    bench = _load()
    oracle = {"value": 1.0, "per_group": {"a": 1.0, "b": 0.5}}
    curve = [
        {"decisions": 0, "seconds": 0.0, "value": 0.1, "per_group": {"a": 0.1, "b": 0.1}},
        {"decisions": 10, "seconds": 1.0, "value": 0.95, "per_group": {"a": 0.95, "b": 0.46}},
        {"decisions": 20, "seconds": 2.0, "value": 0.95, "per_group": {"a": 0.95, "b": 0.40}},
        {"decisions": 30, "seconds": 3.0, "value": 0.97, "per_group": {"a": 0.97, "b": 0.49}},
    ]
    s = bench.summarize_curve(curve, oracle)
    assert s["to_90pct"]["overall"] == {"decisions": 10, "seconds": 1.0}
    assert s["to_90pct"]["worst_group"] == {"decisions": 10, "seconds": 1.0}
    assert s["to_90pct"]["worst_group_stable"] == {"decisions": 30, "seconds": 3.0}
    assert s["final"]["ratio_per_group"]["b"] == pytest.approx(0.98)


def test_tiny_run_writes_json(tmp_path, capsys):
    bench = _load()
    out = tmp_path / "r.json"
    threads = torch.get_num_threads()
    try:
        result = bench.main(["--seeds", "1", "--budget-seconds", "0.5", "--eval-size", "256", "--json", str(out)])
    finally:
        torch.set_num_threads(threads)  # main() sets it for the benchmark
    data = json.loads(out.read_text())
    assert set(data["methods"]) == {"ppo", "grpo", "pgrpo"}
    for block in data["methods"].values():
        run = block["runs"][0]
        assert run["decisions"] > 0 and run["curve"][0]["decisions"] == 0
        decisions = [p["decisions"] for p in run["curve"]]
        assert decisions == sorted(decisions)
        assert 0 <= block["aggregate"]["final_ratio_mean"] <= 1.0 + 1e-9
    assert data["oracle"]["value"] > 0 and result["scenario"]["name"] == "preferences"
    table = capsys.readouterr().out
    assert "ppo" in table and "pgrpo" in table
