"""grpokit.scale without Ray: grids, serial sweeps, seeded rollouts, P-GRPO statistic merges, OPE sums.

The Ray twins of these paths (same results on Ray) are in tests/test_scale_ray.py (marker ``ray``).
"""

from __future__ import annotations

import json

import pytest
import torch

from grpokit.config import ConfigError, load_config
from grpokit.scale.sweep import expand_grid, flatten, parse_grid, run_sweep

TINY = ["grpo.steps=4", "grpo.batch_size=16", "grpo.eval_size=128", "grpo.eval_every=2"]


def test_parse_grid_values_and_errors():
    g = parse_grid(["grpo.lr=0.001,0.003", "policy.hidden=[8, 8],[16]", 'grpo.advantage.name="grpo",pgrpo'])
    assert g == {"grpo.lr": [0.001, 0.003], "policy.hidden": [[8, 8], [16]], "grpo.advantage.name": ["grpo", "pgrpo"]}
    with pytest.raises(ConfigError, match="section.key=v1,v2"):
        parse_grid(["grpo.lr"])
    with pytest.raises(ConfigError, match="twice"):
        parse_grid(["grpo.lr=1", "grpo.lr=2"])
    with pytest.raises(ConfigError, match="at least one value"):
        parse_grid(["grpo.lr=0.1,"])


def test_expand_grid_product_and_seed_keys():
    runs = expand_grid({"grpo.lr": [0.1, 0.2]}, [0, 1, 2])
    assert len(runs) == 6 and [r["seed"] for r in runs] == [0, 1, 2] * 2
    assert runs[4]["overrides"] == ["grpo.lr=0.2", "grpo.seed=1", "evaluation.seed=1"]
    assert len({r["name"] for r in runs}) == 6
    # a grid over the seed key itself is not overwritten by the seed
    assert expand_grid({"grpo.seed": [7]}, [0])[0]["overrides"] == ["grpo.seed=7", "evaluation.seed=0"]


def test_flatten_drops_timings_keeps_numbers():
    flat = flatten({"seconds": 1.0, "train_seconds": 2, "a": {"b": 1, "c": None, "d": "x", "e": True},
                    "decisions_per_second": 5.0, "report": "r.html"})
    assert flat == {"a.b": 1.0, "a.e": 1.0}


def test_bad_grid_value_fails_before_any_run(tmp_path):
    with pytest.raises(ConfigError, match="grpo.lr"):
        run_sweep(None, {"grpo.lr": [0.01, -1.0]}, 1, workflow="train", out=tmp_path, overrides=TINY)
    assert not (tmp_path / "runs").exists()
    with pytest.raises(ValueError, match="backend"):
        run_sweep(None, {}, 1, workflow="train", backend="spark", overrides=TINY)
    with pytest.raises(ValueError, match="output directory"):
        run_sweep(None, {}, 1, workflow="run", overrides=TINY)


def test_serial_sweep_rows_equal_single_runs(tmp_path):
    """Each row is the run's own summary: the same numbers as training that seed directly."""
    from grpokit.runner import run_training

    res = run_sweep(None, {"grpo.lr": [0.001, 0.01]}, 2, workflow="train", out=tmp_path / "sw", overrides=TINY)
    assert len(res.rows) == 4
    torch.set_num_threads(1)
    direct = run_training(load_config(None, TINY + ["grpo.lr=0.01", "grpo.seed=1"]), tmp_path / "direct")
    row = next(r for r in res.rows if r["grpo.lr"] == 0.01 and r["seed"] == 1)
    assert row["policies.grpo.value"] == direct["policies"]["grpo"]["value"]
    assert row["oracle.value"] == direct["oracle"]["value"]
    other = next(r for r in res.rows if r["grpo.lr"] == 0.001 and r["seed"] == 1)
    assert other["policies.grpo.value"] != row["policies.grpo.value"] or other["last_metrics.loss"] != row["last_metrics.loss"]
    table = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert len(table["rows"]) == 4 and len(table["aggregate"]) == 2
    agg = next(a for a in table["aggregate"] if a["grpo.lr"] == 0.01)
    vals = [r["policies.grpo.value"] for r in res.rows if r["grpo.lr"] == 0.01]
    assert agg["policies.grpo.value"]["mean"] == pytest.approx(sum(vals) / 2)
    csv_lines = (tmp_path / "sw" / "sweep.csv").read_text().splitlines()
    assert len(csv_lines) == 5 and csv_lines[0].startswith("name,grpo.lr,seed,wall_s")
    with pytest.raises(FileExistsError):
        run_sweep(None, {"grpo.lr": [0.001]}, 1, workflow="train", out=tmp_path / "sw", overrides=TINY)


def test_sweep_cli(tmp_path):
    from typer.testing import CliRunner

    from grpokit.cli import app

    args = ["sweep", "--workflow", "train", "--out", str(tmp_path / "s"), "--seeds", "2", "--set-grid", "grpo.lr=0.001,0.003"]
    for o in TINY:
        args += ["--set", o]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "0.003" in r.output and (tmp_path / "s" / "sweep.csv").is_file()
    bad = CliRunner().invoke(app, ["sweep", "--workflow", "train", "--out", str(tmp_path / "t"), "--set-grid", "grpo.nope=1"])
    assert bad.exit_code == 2 and "nope" in bad.output


# -- rollouts ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from grpokit.runner import run_training

    out = tmp_path_factory.mktemp("run")
    run_training(load_config(None, TINY), out)
    from grpokit.scale.rollouts import load_run

    return load_run(out)


def test_rollouts_seeded_and_greedy_value_matches_evaluation(trained_run):
    from grpokit.evaluation.values import evaluate_policy
    from grpokit.runner import build_policy
    from grpokit.scale.rollouts import rollout, run_rollouts
    from grpokit.scenarios.registry import scenario_from_config

    config, state = trained_run
    a = run_rollouts(config, state, [0, 1], 500)
    assert a == run_rollouts(config, state, [0, 1], 500)
    assert a[0]["reward_mean"] != a[1]["reward_mean"]
    # greedy rollout's true value = evaluate_policy on the same seeded contexts (independent path)
    cfg = load_config(None, TINY)
    scenario = scenario_from_config(cfg.scenario)
    policy = build_policy(cfg, scenario)
    policy.load_state_dict(state)
    contexts = scenario.sample_contexts(500, torch.Generator().manual_seed(3))
    ref = evaluate_policy(policy, scenario, contexts)
    g = rollout(config, state, 3, 500, mode="greedy")
    assert g["value"] == pytest.approx(ref["value"], abs=1e-12)
    with pytest.raises(ValueError, match="mode"):
        rollout(config, state, 0, 10, mode="argmax")
    with pytest.raises(ValueError, match="n >= 1"):
        rollout(config, state, 0, 0)


# -- multi-worker training (in-process: num_workers=0, and W workers as threads) ---------------------

DDP = ["grpo.steps=6", "grpo.batch_size=32", "grpo.eval_size=128", "grpo.eval_every=3",
       "grpo.advantage.name=pgrpo", "grpo.advantage.min_history=8"]


def _threads(cfg: dict, world: int, n_chunks: int = 8) -> list[dict]:
    import threading

    from grpokit.scale.ddp import ThreadComm, _run_worker

    comms, outs = ThreadComm.group(world), [None] * world

    def go(r):
        outs[r] = _run_worker(cfg, comms[r], n_chunks, None, None)

    threads = [threading.Thread(target=go, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return outs


def test_merge_moments_equals_concatenation():
    """Chan's merge of two groups' (n, mean, M2) = the moments of the concatenated samples (numpy)."""
    import numpy as np

    from grpokit.grpo.advantages import merge_moments

    rng = np.random.default_rng(0)
    a, b = rng.normal(1, 2, 37), rng.normal(-3, 0.5, 11)
    t = lambda x: torch.tensor([float(x)], dtype=torch.float64)  # noqa: E731
    n, mean, m2 = merge_moments(t(len(a)), t(a.mean()), t(((a - a.mean()) ** 2).sum()),
                                t(len(b)), t(b.mean()), t(((b - b.mean()) ** 2).sum()))
    ab = np.concatenate([a, b])
    assert float(n) == 48 and float(mean) == pytest.approx(ab.mean(), rel=1e-12)
    assert float(m2) == pytest.approx(((ab - ab.mean()) ** 2).sum(), rel=1e-12)
    # an empty batch keeps the history
    n2, mean2, m22 = merge_moments(t(5), t(2.0), t(3.0), t(0), t(0.0), t(0.0))
    assert (float(n2), float(mean2), float(m22)) == (5.0, 2.0, 3.0)


def test_local_mode_pgrpo_stats_are_all_rewards_seen():
    """num_workers=0: the P-GRPO history equals the plain moments of every training reward."""
    from grpokit.scale.ddp import LocalComm, _build

    cfg = load_config(None, DDP).model_dump(mode="json")
    trainer = _build(cfg, LocalComm(), 4, None)
    seen_r, seen_g = [], []
    orig = trainer.advantages

    def spy(contexts, rewards):
        seen_r.append(rewards.detach().double().clone())
        seen_g.append(contexts.group.clone())
        return orig(contexts, rewards)

    trainer.advantages = spy
    for _ in range(4):
        trainer.train_step()
    r, g = torch.cat(seen_r), torch.cat(seen_g)
    est = trainer._estimators["total"]
    for p in range(trainer.n_groups):
        x = r[g == p].reshape(-1)
        assert float(est.count[p]) == x.numel()
        if x.numel():
            assert float(est.mean[p]) == pytest.approx(float(x.mean()), abs=1e-12)
            assert float(est.m2[p]) == pytest.approx(float(((x - x.mean()) ** 2).sum()), rel=1e-9, abs=1e-12)


def test_two_workers_equal_one_worker_same_global_batch():
    """W = 2 (threads, the same collectives as Ray Train's gloo workers) vs W = 1 with the same global
    batch and chunks: identical P-GRPO statistics and samples; weights equal to 1e-5 (float32 loss
    forward / gradient sums in another order); every worker holds the same weights and statistics."""
    from grpokit.scale.ddp import train_distributed

    cfg = load_config(None, DDP).model_dump(mode="json")
    one = train_distributed(cfg, num_workers=0)
    two = _threads(cfg, 2)
    for out in two:
        assert out["summary"]["workers"]["max_param_diff"] == 0.0
        assert out["summary"]["workers"]["max_stats_diff"] == 0.0
    p1, p2 = one["state"]["policy"], two[0]["state"]["policy"]
    assert max(float((p1[k] - p2[k]).abs().max()) for k in p1) < 1e-5
    s1, s2 = one["state"]["advantage"]["total"], two[0]["state"]["advantage"]["total"]
    assert torch.equal(s1["count"], s2["count"]) and float(s1["count"].sum()) == 6 * 32 * 4
    assert torch.allclose(s1["mean"], s2["mean"], rtol=1e-12, atol=1e-12)
    assert torch.allclose(s1["m2"], s2["m2"], rtol=1e-10, atol=1e-10)
    assert one["summary"]["policies"]["pgrpo"]["value"] == pytest.approx(two[0]["summary"]["policies"]["pgrpo"]["value"], abs=1e-6)
    # a different chunking is a different (valid) random stream: the check above is not vacuous
    other = train_distributed(cfg, num_workers=0, n_chunks=4)
    assert max(float((p1[k] - other["state"]["policy"][k]).abs().max()) for k in p1) > 1e-4


def test_sharded_training_rejects_bad_setups():
    from grpokit.scale.ddp import train_distributed

    cfg = load_config(None, DDP).model_dump(mode="json")
    with pytest.raises(ValueError, match="must divide grpo.batch_size"):
        train_distributed(cfg, num_workers=0, n_chunks=5)
    with pytest.raises(ValueError, match="num_workers"):
        train_distributed(cfg, num_workers=-1)
    from grpokit.scale.ddp import LocalComm, _build, _DryComm  # noqa: F401

    with pytest.raises(ValueError, match="multiple of the number of workers"):
        _build(cfg, _DryComm(3), 8, None)


# -- large logs in blocks: counterfactual reward table, OPE sums --------------------------------------


def _log(tmp_path, n=2400, seed=0):
    import numpy as np
    import pandas as pd

    from grpokit.offline.outcome import OutcomeModel

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    a = rng.integers(0, 3, n)
    r = (rng.random(n) < 0.2 + 0.1 * a + 0.1 * (x[:, 0] > 0)).astype(float)
    df = pd.DataFrame({"id": np.arange(n), "x0": x[:, 0], "x1": x[:, 1], "action": a, "reward": r,
                       "pscore": np.full(n, 1 / 3)})
    path = tmp_path / "log.parquet"
    df.to_parquet(path, row_group_size=500)
    return path, df, x, a, r, OutcomeModel(3, "linear", seed=0).fit(x, a, r)


def _target(d):
    import numpy as np

    s = np.stack([d["x0"].to_numpy(), -d["x0"].to_numpy(), 0.5 * d["x1"].to_numpy()], 1)
    e = np.exp(s)
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("improvement", [False, True])
def test_streamed_ope_equals_in_memory_estimators(tmp_path, improvement):
    from grpokit.offline.estimators import estimate_improvement, estimate_value
    from grpokit.scale.data import LogColumns, ope_from_parquet

    path, df, x, a, r, model = _log(tmp_path)
    cols = LogColumns(("x0", "x1"), id="id")
    methods = ("ips", "snips", "dm", "dr", "sndr")
    got = ope_from_parquet(path, cols, _target, methods=methods, model=model, clip=2.0, batch_rows=700,
                           improvement=improvement)
    ref_fn = estimate_improvement if improvement else estimate_value
    for m in methods:
        ref = ref_fn(m, reward=r, action=a, pscore=df["pscore"], target_probs=_target(df),
                     reward_hat=model.predict(x), ci="normal", clip=2.0)
        g = got[m]
        assert g.value == pytest.approx(ref.value, abs=1e-12)
        assert g.ci_low == pytest.approx(ref.ci_low, abs=1e-12) and g.ci_high == pytest.approx(ref.ci_high, abs=1e-12)
        for k, v in ref.diagnostics.items():
            assert g.diagnostics[k] == pytest.approx(v, rel=1e-12, abs=1e-12), (m, k)


def test_streamed_ope_errors_name_the_problem(tmp_path):
    from grpokit.scale.data import LogColumns, ope_from_parquet

    path, df, *_ , model = _log(tmp_path, n=600)
    with pytest.raises(ValueError, match="no column 'x9'"):
        ope_from_parquet(path, LogColumns(("x0", "x9")), _target, methods=("ips",))
    with pytest.raises(ValueError, match="needs the outcome model"):
        ope_from_parquet(path, LogColumns(("x0", "x1")), _target, methods=("dr",))
    df.loc[450, "pscore"] = 0.0
    df.to_parquet(tmp_path / "bad.parquet", row_group_size=500)
    with pytest.raises(ValueError, match=r"pscore must be in \(0, 1\]; row 450 has 0.0"):
        ope_from_parquet(tmp_path / "bad.parquet", LogColumns(("x0", "x1")), _target, methods=("ips",), batch_rows=200)


def test_counterfactual_table_equals_model_predict(tmp_path):
    import numpy as np
    import pandas as pd

    from grpokit.scale.data import LogColumns, counterfactual_table

    path, df, x, a, r, model = _log(tmp_path)
    out = counterfactual_table(path, model, LogColumns(("x0", "x1"), id="id"), tmp_path / "rhat.parquet", batch_rows=700)
    got = pd.read_parquet(out)
    assert list(got.columns) == ["id", "rhat_0", "rhat_1", "rhat_2"]
    assert np.array_equal(got["id"].to_numpy(), df["id"].to_numpy())
    assert np.allclose(got[["rhat_0", "rhat_1", "rhat_2"]].to_numpy(), model.predict(x), rtol=0, atol=1e-12)


def test_streamed_ope_of_a_saved_policy(tmp_path):
    """target = a policy.pt path: pi(.|x) is the deployed policy's own distribution."""
    from grpokit.offline.estimators import estimate_value
    from grpokit.policy import CategoricalHead, MLPTorso, Policy
    from grpokit.policy.deployed import DeployedPolicy
    from grpokit.policy.features import FeatureEncoder
    from grpokit.policy.io import save_policy
    from grpokit.scale.data import LogColumns, ope_from_parquet

    path, df, x, a, r, model = _log(tmp_path, n=1500)
    enc = FeatureEncoder.infer(df, ["x0", "x1"]).fit(df)
    torch.manual_seed(0)
    pol = Policy(MLPTorso(enc.dim, [8]), CategoricalHead(3))
    with torch.no_grad():
        pol.out.weight.mul_(5.0)
    pfile = save_policy(pol, tmp_path / "p.pt", {"action_labels": ["a", "b", "c"]}, encoder=enc)
    got = ope_from_parquet(path, LogColumns(("x0", "x1")), str(pfile), methods=("snips", "dr"), model=model, batch_rows=400)
    probs = DeployedPolicy.load(pfile).probabilities(df)
    for m in ("snips", "dr"):
        ref = estimate_value(m, reward=r, action=a, pscore=df["pscore"], target_probs=probs, reward_hat=model.predict(x), ci="normal")
        assert got[m].value == pytest.approx(ref.value, abs=1e-9)
        assert got[m].ci_high == pytest.approx(ref.ci_high, abs=1e-9)


def test_lightgbm_outcome_model_local_fits_the_log(tmp_path):
    """The local LightGBM fit of a parquet log: E[r | x, a] close to the planted rates, bad rows named."""
    import numpy as np
    import pandas as pd

    pytest.importorskip("lightgbm", reason="LightGBM comes with the ray extra")
    from grpokit.scale.data import LogColumns
    from grpokit.scale.outcome import fit_outcome_model

    path, df, x, a, r, _ = _log(tmp_path, n=6000)
    cols = LogColumns(("x0", "x1"), id="id")
    model = fit_outcome_model(path, cols, 3, batch_rows=700, params={"num_leaves": 7})
    assert model.task == "binary" and model.backend == "local"
    pred = model.predict(x)
    truth = 0.2 + 0.1 * np.arange(3)[None, :] + 0.1 * (x[:, [0]] > 0)
    assert pred.shape == (len(df), 3)
    mae, const = np.abs(pred - truth).mean(), np.abs(r.mean() - truth).mean()  # planted rates 0.2..0.5
    assert mae < 0.6 * const, (mae, const)  # it learned the action and x0 effects (const: one rate for all)
    assert np.abs(pred.mean(0) - truth.mean(0)).max() < 0.03
    bad = df.copy()
    bad.loc[4321, "action"] = 7
    bad.to_parquet(tmp_path / "bad.parquet", row_group_size=500)
    with pytest.raises(ValueError, match=r"column 'action', row 4321: action 7 is outside 0..2"):
        fit_outcome_model(tmp_path / "bad.parquet", cols, 3, num_boost_round=5)
    with pytest.raises(ValueError, match="kind"):
        fit_outcome_model(path, cols, 3, kind="catboost")
    pd.DataFrame({**df, "reward": 1.0}).to_parquet(tmp_path / "const.parquet")
    with pytest.raises(ValueError, match="every reward"):
        fit_outcome_model(tmp_path / "const.parquet", cols, 3)


def test_serve_ray_cli_is_registered_without_importing_ray():
    import subprocess
    import sys

    code = ("import sys; from typer.testing import CliRunner; from grpokit.cli import app; "
            "r = CliRunner().invoke(app, ['serve', 'ray', '--help']); "
            "print(r.exit_code, '--replicas' in r.output, 'ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["0", "True", "False"], out.stderr[-2000:]


def test_local_scoring_reader_holds_one_row_group_not_the_file(tmp_path):
    """grpokit score's local reader: Arrow memory stays at about one row group as the file grows (with
    pyarrow's default pre-buffering it grew to the whole file's column chunks: the 10M-row RSS drift)."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from grpokit.scoring import iter_batches

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.random(400_000), "b": rng.random(400_000)})  # 6.4 MB, incompressible
    df.to_parquet(tmp_path / "t.parquet", row_group_size=10_000)
    base, peak, rows = pa.total_allocated_bytes(), 0, 0
    for batch in iter_batches(tmp_path / "t.parquet", 4096):
        rows += batch.num_rows
        peak = max(peak, pa.total_allocated_bytes() - base)
    assert rows == 400_000
    assert peak < 2 * 2**20, peak  # one row group is 160 kB; the whole file 6.4 MB
