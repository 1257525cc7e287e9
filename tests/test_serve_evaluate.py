"""A served log is valid input for the offline layer: simulated customers (the marketing scenario) are
served by the service, their rewards posted back, the log exported and judged by ``grpokit evaluate``;
the estimates cover the simulator's true values of the policy and of what was served."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
pytestmark = pytest.mark.serve

from fastapi.testclient import TestClient  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from grpokit.cli import app as cli  # noqa: E402
from grpokit.policy import CategoricalHead, MLPTorso, Policy  # noqa: E402
from grpokit.policy.io import save_policy  # noqa: E402
from grpokit.scenarios.marketing import MarketingScenario  # noqa: E402
from grpokit.serve import Client  # noqa: E402
from grpokit.serve.app import create_app  # noqa: E402
from grpokit.serve.config import ServeConfig  # noqa: E402


def test_served_log_evaluated_reproduces_true_values(tmp_path):
    scen = MarketingScenario()
    n, eps = 2000, 0.05
    torch.manual_seed(3)
    net = Policy(MLPTorso(scen.obs_dim, [16]), CategoricalHead(scen.n_actions))
    with torch.no_grad():  # a policy with clear, context-dependent preferences
        for m in net.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.mul_(3.0)
    path = tmp_path / "policy.pt"
    save_policy(net, path, {"feature_names": scen.feature_names, "action_labels": scen.action_names})

    gen = torch.Generator().manual_seed(11)
    ctx = scen.sample_contexts(n, gen)
    obs = ctx.obs.double().numpy()
    contexts = [dict(zip(scen.feature_names, map(float, row))) for row in obs]
    cohorts = [scen.group_names[g] for g in ctx.group.tolist()]
    store = tmp_path / "s.duckdb"
    config = ServeConfig(store=str(store), epsilon=eps, seed=5, log={"flush_interval_s": 0.5})
    with TestClient(create_app(config, path)) as http:
        c = Client(http=http)
        decisions = c.decide_batch(contexts, cohorts=cohorts, probabilities=True, chunk=500)
        actions = torch.tensor([d["action_code"] for d in decisions])
        profit = scen.reward(ctx, actions[:, None], gen)["profit"][:, 0].double().numpy()
        results = c.reward_batch([(d["event_id"], float(r)) for d, r in zip(decisions, profit)], chunk=700)
        assert len(results) == n and all(x["counted"] for x in results)
        served_q = np.array([d["probabilities"] for d in decisions])

    # the simulator's truth on these customers: E[profit | x, a] for every offer
    table = scen.expected_reward(ctx, torch.arange(scen.n_actions).repeat(n, 1)).double().numpy()
    with torch.no_grad():
        pi = net(ctx.obs).log_probs.exp().double().numpy()
    np.testing.assert_allclose(served_q, (1 - eps) * pi + eps / scen.n_actions, rtol=1e-4, atol=1e-7)
    true_pi = float((pi * table).sum(1).mean())
    true_served = float((served_q * table).sum(1).mean())

    out = tmp_path / "served.parquet"
    r = CliRunner().invoke(cli, ["serve", "export", "--store", str(store), "--out", str(out)])
    assert r.exit_code == 0, r.output
    verdict = tmp_path / "v.json"
    r = CliRunner().invoke(cli, ["evaluate", "--log", str(out), "--policy", str(path), "--json", str(verdict),
                                 "--method", "dr", "--outcome-model", "linear", "--n-bootstrap", "100",
                                 "--store", str(tmp_path / "runs.duckdb")])
    assert r.exit_code == 0, r.output
    res = json.loads(verdict.read_text())
    assert res["n_rows"] == n
    cand, cur = res["candidate"], res["current"]
    assert cand["ci_low"] <= true_pi <= cand["ci_high"], (cand, true_pi)
    assert cur["ci_low"] <= true_served <= cur["ci_high"], (cur, true_served)
    assert len(res["per_group"]) == scen.n_groups  # the cohorts came through as the log's groups
