"""GRADE on a ranking log: the offline-auction scenario (vs brute force), the split, the pipeline and its CLI."""

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from grpokit.cli import app
from grpokit.config import load_config
from grpokit.policy.io import load_policy
from grpokit.ranking.composite import rule_penalty
from grpokit.ranking.grade_log import learn_fusion_from_log, split_log
from grpokit.ranking.logged import LoggedRankingConfig, LoggedRankingScenario
from grpokit.ranking.logs import RankingSchema, read_ranking_log
from grpokit.scenarios.search import SearchScenario

runner = CliRunner()


def tiny_log(n_requests=6, n=5, seed=0):
    """Requests with one feature, 5 candidates, random predictions and labels (every candidate labelled)."""
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(n_requests):
        for i in range(n):
            click = int(rng.random() < 0.5)
            order = int(click and rng.random() < 0.5)
            rows.append({"request_id": r, "item": i, "x": float(r), "seg": "a" if r % 2 else "b",
                         "p_click": rng.uniform(0.05, 0.95), "p_order": rng.uniform(0.01, 0.5),
                         "order_value": rng.uniform(5, 50), "click": click, "order": order,
                         "gmv": order * rng.uniform(5, 50), "position": i + 1})
    return read_ranking_log(pd.DataFrame(rows), RankingSchema(item="item", features=["x"], segment="seg"))


def test_rewards_match_brute_force_sorting():
    log = tiny_log()
    sc = LoggedRankingScenario(log, k=3, transforms="identity", posterior={"gmv": 1.0, "order": 10.0},
                               default_weights=[0.5, 0.3, 0.2])
    assert sc.obs_dim == 1 and sc.group_names == ["a", "b"] and sc.action_spec == {"kind": "dirichlet", "n_components": 3}
    ctx = sc.contexts()
    w = torch.tensor([[0.6, 0.3, 0.1], [0.1, 0.1, 0.8], [0.0, 1.0, 0.0]])
    parts = sc.reward(ctx, w.expand(len(log), -1, -1), torch.Generator())
    disc = [1 / math.log2(j + 2) for j in range(3)]
    for b in range(len(log)):
        for g in range(3):
            s = (log.scores[b] * w[g]).sum(-1)
            order = sorted(range(5), key=lambda i: (-float(s[i]), i))[:3]  # ties to the lower index
            post = sum(d * (float(log.labels[b, i, 2]) + 10 * float(log.labels[b, i, 1])) for d, i in zip(disc, order))
            prior = sum(d * float(log.scores[b, i].prod()) for d, i in zip(disc, order))
            assert math.isclose(float(parts["posterior"][b, g]), post, rel_tol=1e-5, abs_tol=1e-5)
            assert math.isclose(float(parts["prior"][b, g]), prior, rel_tol=1e-5, abs_tol=1e-6)
    ref = rule_penalty(w, floors=torch.full((3,), 0.05), default=torch.tensor([0.5, 0.3, 0.2]))
    assert torch.allclose(parts["rules"], ref.expand(len(log), -1))
    # deterministic, and the expected reward is the posterior
    again = sc.reward(ctx, w.expand(len(log), -1, -1), torch.Generator().manual_seed(9))
    assert torch.equal(again["posterior"], parts["posterior"])
    assert torch.allclose(sc.expected_reward(ctx, w.expand(len(log), -1, -1)), parts["posterior"])
    # sampled contexts carry their rows
    c = sc.sample_contexts(50, torch.Generator().manual_seed(1))
    assert torch.equal(c.obs[:, 0], log.features[c.extra["row"], 0]) and torch.equal(c.group, log.segment[c.extra["row"]])


def test_padding_never_ranks_and_rank_transform_is_scale_free():
    log = tiny_log()
    log.mask[0, 3:] = False  # request 0 has 3 real candidates
    sc = LoggedRankingScenario(log, k=5)
    r = sc.auction(sc.contexts(torch.tensor([0])), torch.tensor([[[0.2, 0.3, 0.5]]]))
    assert float(r["ndcg"].max()) <= 1.0 + 1e-6
    scaled = log.scores.clone()
    scaled[..., 2] *= 1000  # order value in another currency: the rank transform does not care
    from dataclasses import replace

    sc2 = LoggedRankingScenario(replace(log, scores=scaled), k=3)
    w = torch.rand(len(log), 4, 3)
    assert torch.allclose(LoggedRankingScenario(log, k=3).reward(sc.contexts(), w)["posterior"],
                          sc2.reward(sc2.contexts(), w)["posterior"])


def test_scenario_errors():
    log = tiny_log()
    for kwargs, msg in (({"posterior": {"revenue": 1.0}}, "revenue"), ({"prior_tasks": ["p_buy"]}, "p_buy"),
                        ({"default_weights": [0.5, 0.5]}, "default_weights"), ({"rule_floor": 0.5}, "rule_floor"),
                        ({"transforms": {"p_buy": "rank"}}, "p_buy")):
        with pytest.raises(ValueError, match=msg):
            LoggedRankingScenario(log, **kwargs)
    with pytest.raises(ValueError, match="sum to 1"):
        LoggedRankingConfig(default_weights=[0.5, 0.6, 0.1])
    from dataclasses import replace

    no_feat = replace(log, features=torch.zeros(len(log), 0), feature_names=[])
    with pytest.raises(ValueError, match="no request features"):
        LoggedRankingScenario(no_feat)
    with pytest.raises(ValueError, match="weights must be"):
        LoggedRankingScenario(log).reward(LoggedRankingScenario(log).contexts(), torch.rand(2, 3, 3))


def test_split_is_disjoint_complete_and_seeded():
    log = tiny_log(n_requests=20)
    tr, ho = split_log(log, 0.25, seed=3)
    ids_tr, ids_ho = set(tr.request_ids.tolist()), set(ho.request_ids.tolist())
    assert len(ids_ho) == 5 and len(ids_tr) == 15 and not ids_tr & ids_ho and ids_tr | ids_ho == set(range(20))
    assert split_log(log, 0.25, seed=3)[1].request_ids.tolist() == ho.request_ids.tolist()
    assert split_log(log, 0.25, seed=4)[1].request_ids.tolist() != ho.request_ids.tolist()
    with pytest.raises(ValueError, match="too few"):
        split_log(tiny_log(n_requests=3), 0.2, seed=0)


def _sim_log(path, n=400, seed=1):
    sc = SearchScenario()
    df = sc.simulate_log(n, seed=seed)
    df.to_parquet(path)
    schema = path.parent / "schema.toml"
    schema.write_text("features = [" + ", ".join(f'"{c}"' for c in sc.feature_names) + ']\nsegment = "user_type"\nitem = "candidate"\n')
    return schema


TINY = ["--set", "grpo.steps=6", "--set", "grpo.batch_size=32", "--set", "grpo.group_size=4", "--set", "grpo.eval_size=64",
        "--set", "fusion.tune_budget=12", "--set", "fusion.pretrain_steps=3", "--set", "policy.head_params.concentration=20.0",
        "--set", "scenario.default_weights=[0.6, 0.25, 0.15]", "--no-progress"]


def test_fusion_learn_cli(tmp_path):
    log = tmp_path / "log.parquet"
    schema = _sim_log(log)
    out = tmp_path / "run"
    r = runner.invoke(app, ["fusion", "learn", "--log", str(log), "--schema", str(schema), "--out", str(out), *TINY])
    assert r.exit_code == 0, r.output
    s = json.loads((out / "summary.json").read_text())
    assert s["requests"] == {"train": 320, "holdout": 80}
    assert set(s["policies"]) == {"static_default", "static_tuned", "static_per_segment", "grade"}
    for name, p in s["policies"].items():
        assert set(p["per_thousand"]) == {"click", "order", "gmv"} and 0 <= p["ndcg"] <= 1 and 0 <= p["gauc"] <= 1
        assert set(p["per_segment"]) == {"browser", "buyer", "price_sensitive", "quality_seeking"}
        if name != "static_tuned":
            vs = p["vs_static_tuned"]
            assert vs["ci_low"] <= vs["mean"] <= vs["ci_high"]
    # the paired difference is the difference of the means
    d = s["policies"]["grade"]["posterior"] - s["policies"]["static_tuned"]["posterior"]
    assert math.isclose(s["policies"]["grade"]["vs_static_tuned"]["mean"], d, rel_tol=1e-6, abs_tol=1e-9)
    policy, meta = load_policy(out / "policy.pt")
    assert meta["feature_names"] == SearchScenario().feature_names and meta["tasks"] == ["p_click", "p_order", "order_value"]
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps[0] == 0 and steps[-1] == 6  # the step-0 evaluation, then one line per step
    # a second run into the same directory is refused; nothing is overwritten
    before = (out / "summary.json").read_text()
    r = runner.invoke(app, ["fusion", "learn", "--log", str(log), "--schema", str(schema), "--out", str(out), *TINY])
    assert r.exit_code == 2 and "already holds a run" in r.output and (out / "summary.json").read_text() == before


def test_fusion_learn_bad_input(tmp_path):
    log = tmp_path / "log.parquet"
    schema = _sim_log(log, n=60)
    base = ["fusion", "learn", "--out", str(tmp_path / "x"), "--no-progress"]
    r = runner.invoke(app, [*base, "--log", str(tmp_path / "nope.parquet")])
    assert r.exit_code == 2 and "does not exist" in r.output
    bad_schema = tmp_path / "bad.toml"
    bad_schema.write_text('tasks = ["p_click"]\nlabels = {p_click = "click", p_order = "order"}\n')
    r = runner.invoke(app, [*base, "--log", str(log), "--schema", str(bad_schema)])
    assert r.exit_code == 2 and "p_order" in r.output
    df = pd.read_parquet(log).drop(columns=["p_order"])
    df.to_parquet(tmp_path / "no_task.parquet")
    r = runner.invoke(app, [*base, "--log", str(tmp_path / "no_task.parquet"), "--schema", str(schema)])
    assert r.exit_code == 2 and "p_order" in r.output
    r = runner.invoke(app, [*base, "--log", str(log), "--schema", str(schema), "--set", "scenario.name=search"])
    assert r.exit_code == 2 and "logged_ranking" in r.output
    r = runner.invoke(app, [*base, "--log", str(log), "--schema", str(schema), "--set", "scenario.posterior={revenue = 1.0}"])
    assert r.exit_code == 2 and "revenue" in r.output


def test_gauc_undefined_is_null_not_nan(tmp_path):
    """Every click label 1: GAUC has no negatives, so summary.json holds null (valid JSON), not NaN."""
    log = tiny_log(n_requests=20)
    log.labels[..., 0] = 1.0
    cfg = load_config(None, ["scenario.name=logged_ranking", "grpo.steps=2", "grpo.batch_size=8", "grpo.group_size=4",
                             "grpo.eval_size=16", "fusion.tune_budget=10", "fusion.pretrain_steps=2",
                             "policy.head_params.concentration=20.0", 'grpo.device="cpu"'])
    s = learn_fusion_from_log(log, cfg, tmp_path / "run")
    assert all(p["gauc"] is None for p in s["policies"].values())
    json.loads((tmp_path / "run" / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))


def test_learns_the_weights_a_known_objective_wants():
    """Labels generated from p_order alone: the tuned static weights and GRADE's mean weights lean on p_order,
    and both beat uniform weights on held-out requests."""
    rng = np.random.default_rng(0)
    rows = []
    for r in range(300):
        pc, po, v = rng.uniform(0.05, 0.95, 20), rng.uniform(0.01, 0.9, 20), rng.uniform(5, 50, 20)
        order = (rng.random(20) < po).astype(int)
        for i in range(20):
            rows.append({"request_id": r, "item": i, "x": rng.normal(), "p_click": pc[i], "p_order": po[i],
                         "order_value": v[i], "click": 1, "order": order[i], "gmv": 0.0})
    log = read_ranking_log(pd.DataFrame(rows).assign(x=lambda d: d.groupby("request_id").x.transform("first")),
                           RankingSchema(item="item", features=["x"], position=None, segment=None))
    cfg = load_config(None, ["scenario.name=logged_ranking", "scenario.posterior={order = 1.0}", "scenario.k=5",
                             "scenario.rule_default_penalty=0.0", "grpo.reward_weights.prior=0.0", "grpo.steps=60", "grpo.batch_size=64", "grpo.group_size=8",
                             "grpo.eval_size=64", "grpo.lr=0.01", "grpo.beta=0.0", "fusion.tune_budget=40", "fusion.pretrain_steps=30",
                             "policy.head_params.concentration=20.0", 'grpo.device="cpu"'])
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        s = learn_fusion_from_log(log, cfg, d)
    p = s["policies"]
    assert max(range(3), key=lambda i: s["static_tuned_weights"][i]) == 1
    assert max(range(3), key=lambda i: p["grade"]["mean_weights"][i]) == 1
    assert p["grade"]["posterior"] > p["static_default"]["posterior"]
    assert p["static_tuned"]["posterior"] > p["static_default"]["posterior"]


def test_simulate_then_learn_with_the_examples(tmp_path):
    """The documented path: `grpokit scenario simulate` a search log, then `grpokit fusion learn` with the examples."""
    log = tmp_path / "search_log.parquet"
    r = runner.invoke(app, ["scenario", "simulate", "examples/fusion.toml", "--policy", "default", "--n", "200", "--out", str(log)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["fusion", "learn", "examples/fusion_log.toml", "--log", str(log), "--schema",
                            "examples/search_log_schema.toml", "--out", str(tmp_path / "run"), *TINY])
    assert r.exit_code == 0, r.output
    assert "grade" in json.loads((tmp_path / "run" / "summary.json").read_text())["policies"]
