"""``grpokit pilot plan|analyze`` over a real decision service's store (FastAPI TestClient), bad input too."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytestmark = pytest.mark.serve

from fastapi.testclient import TestClient  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from grpokit.cli import app as cli  # noqa: E402
from grpokit.policy import CategoricalHead, MLPTorso, Policy  # noqa: E402
from grpokit.policy.io import save_policy  # noqa: E402
from grpokit.serve import Client  # noqa: E402
from grpokit.serve.app import create_app  # noqa: E402
from grpokit.serve.config import ServeConfig  # noqa: E402

FIELDS = ["a", "b"]
COHORTS = [f"c{k}" for k in range(12)]
BASE = {c: 10.0 + 2.0 * k for k, c in enumerate(COHORTS)}  # cohorts differ a lot: stratification matters
EFFECT = 5.0


def _policy(path, bias):
    torch.manual_seed(0)
    p = Policy(MLPTorso(2, [4]), CategoricalHead(3))
    with torch.no_grad():
        p.out.weight.zero_()
        p.out.bias.copy_(torch.tensor(bias))
    save_policy(p, path, {"feature_names": FIELDS, "action_labels": ["x", "y", "z"]})
    return path


def _serve(store, policy, tag, n, rng, *, rollout=None, candidate_path=None):
    """Serve n decisions over the 12 cohorts; reward = cohort base + EFFECT on the candidate arm + noise."""
    cfg = ServeConfig(store=str(store), log={"flush_interval_s": 0.1}, epsilon=0.1)
    with TestClient(create_app(cfg, policy)) as http:
        c = Client(http=http)
        if rollout is not None:
            from grpokit.serve import versions

            v2 = http.app.state.serve.admin(lambda con: versions.register(con, store, candidate_path))["version"]
            c.set_rollout("canary", candidate=v2, cohorts=rollout)
        cohorts = [COHORTS[k % 12] for k in range(n)]
        ds = c.decide_batch([{"a": float(rng.normal()), "b": float(rng.normal())} for _ in range(n)],
                            event_ids=[f"{tag}-{k}" for k in range(n)], cohorts=cohorts)
        rewards = [(d["event_id"], BASE[co] + (EFFECT if d["arm"] == "candidate" else 0.0) + float(rng.normal()))
                   for d, co in zip(ds, cohorts)]
        c.reward_batch(rewards)
    return ds, rewards


@pytest.fixture
def served(tmp_path):
    rng = np.random.default_rng(0)
    store = tmp_path / "s.duckdb"
    live = _policy(tmp_path / "live.pt", [1.0, 0.0, 0.0])
    _serve(store, live, "pre", 600, rng)
    return store, live, tmp_path


def _run(*args):
    return CliRunner().invoke(cli, ["pilot", *map(str, args)])


def test_plan_then_analyze_through_the_cli(served):
    store, live, tmp = served
    r = _run("plan", "--pilot", "p1", "--decisions", 1200, "--store", store, "--effect", 2.0, "--json", tmp / "plan.json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output.strip().splitlines()[-1])
    treated = out["treated"]
    assert len(treated) == 6 and set(treated) <= set(COHORTS)
    # strata of 4 cohorts sorted on the pre-period mean (= BASE order here): 2 of each block on the candidate
    for block in (COHORTS[0:4], COHORTS[4:8], COHORTS[8:12]):
        assert sum(c in treated for c in block) == 2
    assert out["power"]["mde"] > 0 and out["power"]["cohorts_needed"] >= 1
    saved = json.loads((tmp / "plan.json").read_text())
    assert [c for c, t in zip(saved["cohorts"], saved["treated"]) if t] == treated
    # the pilot period: the treated cohorts get the candidate, whose reward is EFFECT higher
    rng = np.random.default_rng(1)
    cand = _policy(tmp / "cand.pt", [0.0, 1.0, 0.0])
    ds, rewards = _serve(store, live, "pilot", 1200, rng, rollout=treated, candidate_path=cand)
    assert {d["arm"] for d in ds} == {"candidate", "control"}
    r = _run("analyze", "--pilot", "p1", "--store", store, "--json", tmp / "analysis.json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.output.strip().splitlines()[-1])
    assert res["ci_low"] <= EFFECT <= res["ci_high"] and res["verdict"] == "promote"
    full = json.loads((tmp / "analysis.json").read_text())
    assert full["arm_mismatches"] == 0
    # hand value: the cohort means of what was posted in the pilot period
    means = {c: np.mean([v for (eid, v), d in zip(rewards, ds) if COHORTS[int(eid.split("-")[1]) % 12] == c])
             for c in COHORTS}
    for c in COHORTS:
        assert full["cohort_means"][c] == pytest.approx(means[c], abs=1e-9)
    diff = np.mean([means[c] for c in treated]) - np.mean([means[c] for c in COHORTS if c not in treated])
    assert full["unit_level"]["estimate"] == pytest.approx(diff, rel=1e-9)  # equal cohort sizes: unit = cohort diff


def test_plan_and_analyze_bad_input(served, tmp_path):
    store, live, tmp = served
    r = _run("plan", "--pilot", "p1", "--decisions", 1200, "--store", tmp / "missing.duckdb")
    assert r.exit_code != 0 and "does not exist" in r.output
    r = _run("plan", "--pilot", "p1", "--decisions", 1200, "--store", store, "--design", "coin")
    assert r.exit_code != 0 and "--design 'coin'" in r.output
    r = _run("plan", "--pilot", "p1", "--decisions", 1200, "--store", store, "--apply")
    assert r.exit_code != 0 and "--candidate" in r.output
    r = _run("plan", "--pilot", "p1", "--decisions", 10, "--store", store)
    assert r.exit_code != 0 and "decisions = 10" in r.output
    r = _run("plan", "--pilot", "bad name!", "--decisions", 1200, "--store", store)
    assert r.exit_code != 0 and "pilot name 'bad name!'" in r.output
    assert _run("plan", "--pilot", "p1", "--decisions", 1200, "--store", store).exit_code == 0
    r = _run("plan", "--pilot", "p1", "--decisions", 1200, "--store", store)
    assert r.exit_code != 0 and "already exists" in r.output
    r = _run("analyze", "--pilot", "nope", "--store", store)
    assert r.exit_code != 0 and "no pilot named 'nope'" in r.output and "p1" in r.output
    r = _run("analyze", "--pilot", "p1", "--store", store)  # no pilot-period decision yet
    assert r.exit_code != 0 and "error" in r.output.lower()
    # a store whose decisions carry no cohort cannot plan a cohort pilot
    bare = tmp / "bare.duckdb"
    cfg = ServeConfig(store=str(bare), log={"flush_interval_s": 0.1})
    with TestClient(create_app(cfg, live)) as http:
        c = Client(http=http)
        ds = c.decide_batch([{"a": 0.0, "b": 1.0}] * 20)
        c.reward_batch([(d["event_id"], 1.0) for d in ds])
    r = _run("plan", "--pilot", "p2", "--decisions", 100, "--store", bare)
    assert r.exit_code != 0 and "cohort" in r.output
