"""outcome_model = "lightgbm": the in-process fit against lightgbm.train itself, the config and CLI paths
(learn, evaluate, loop), bad values named (the Ray Train fit against the local one is in tests/test_scale_ray.py)."""

import json

import numpy as np
import pandas as pd
import pytest

lightgbm = pytest.importorskip("lightgbm", reason="lightgbm is part of the optional extra 'ray'")

from typer.testing import CliRunner  # noqa: E402

from grpokit.cli import app  # noqa: E402
from grpokit.offline.outcome import LIGHTGBM_PARAMS, OutcomeModel  # noqa: E402

runner = CliRunner()


def _data(n=3000, seed=0, binary=True):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    a = rng.integers(0, 3, n)
    logit = 2 * x[:, 0] * (a - 1) - 0.5
    r = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float) if binary else logit + rng.normal(0, 0.5, n)
    return x, a, r


@pytest.mark.parametrize("binary", [True, False])
def test_local_fit_is_lightgbm_train_on_the_design(binary):
    x, a, r = _data(binary=binary)
    m = OutcomeModel(3, "lightgbm", seed=3).fit(x, a, r)
    design = np.column_stack([x, np.eye(3)[a]])
    p = {**LIGHTGBM_PARAMS, "objective": "binary" if binary else "regression", "seed": 3}
    ref = lightgbm.train(p, lightgbm.Dataset(design, label=r), num_boost_round=200)
    xs = x[:50]
    want = np.stack([ref.predict(np.column_stack([xs, np.tile(np.eye(3)[k], (50, 1))])) for k in range(3)], axis=1)
    np.testing.assert_allclose(m.predict(xs), want, rtol=0, atol=1e-6)
    assert m.binary_ is binary
    cf = m.predict_crossfit()
    assert cf.shape == (len(x), 3) and np.all(np.isfinite(cf))
    # cross-fitted predictions differ from in-sample ones (each row scored by a model that did not see it)
    assert np.abs(cf - m.predict(x)).mean() > 1e-4


def test_lightgbm_learns_the_planted_effect():
    x, a, r = _data(6000)
    cf = OutcomeModel(3, "lightgbm", seed=0).fit(x, a, r).predict_crossfit()
    truth = 1 / (1 + np.exp(-(2 * x[:, [0]] * (np.arange(3) - 1) - 0.5)))
    const = np.array([r[a == k].mean() for k in range(3)])  # the per-action rate, blind to x
    assert np.abs(cf - truth).mean() < 0.5 * np.abs(const[None, :] - truth).mean()
    # the effect's sign is recovered where it is large
    big = np.abs(x[:, 0]) > 1
    assert np.mean(np.sign(cf[big, 2] - cf[big, 0]) == np.sign(x[big, 0])) > 0.9


def test_bad_kind_and_backend_are_named():
    with pytest.raises(ValueError, match="unknown outcome model kind 'xgb'"):
        OutcomeModel(3, "xgb")
    with pytest.raises(ValueError, match="unknown outcome backend 'spark'"):
        OutcomeModel(3, "lightgbm", backend="spark")
    with pytest.raises(ValueError, match="backend 'ray' fits outcome_model = 'lightgbm' only"):
        OutcomeModel(3, "gbm", backend="ray")


def _log(tmp_path, n=3000, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    a = rng.integers(0, 3, n)
    p = 1 / (1 + np.exp(-(2 * x[:, 0] * (a == 1) - 2 * x[:, 0] * (a == 2) - 1.0)))
    df = pd.DataFrame({"decision_id": np.arange(n), "x0": x[:, 0], "x1": x[:, 1], "action": a,
                       "reward": (rng.random(n) < p).astype(float), "pscore": np.full(n, 1 / 3)})
    path = tmp_path / f"log{seed}.parquet"
    df.to_parquet(path)
    return path


def test_learn_and_evaluate_with_lightgbm(tmp_path):
    train, test = _log(tmp_path, seed=0), _log(tmp_path, seed=1)
    run = tmp_path / "run"
    r = runner.invoke(app, ["learn", "--log", str(train), "--out", str(run), "--outcome-model", "lightgbm",
                            "--set", "grpo.steps=80", "--no-progress"])
    assert r.exit_code == 0, r.output
    s = json.loads((run / "summary.json").read_text())
    assert s["outcome_model"] == "lightgbm"
    out = tmp_path / "v.json"
    r = runner.invoke(app, ["evaluate", "--log", str(test), "--policy", str(run / "policy.pt"), "--json", str(out),
                            "--outcome-model", "lightgbm", "--n-bootstrap", "100"])
    assert r.exit_code == 0, r.output
    v = json.loads(out.read_text())
    # uniform logging leaves a lot on the table: the learned policy is clearly better
    assert v["improvement"]["ci_low"] > 0, v


@pytest.mark.parametrize("args,msg", [
    (["--outcome-model", "xgb"], "--outcome-model 'xgb' is unknown"),
    (["--outcome-backend", "spark"], "--outcome-backend 'spark' is unknown"),
    (["--outcome-model", "gbm", "--outcome-backend", "ray"], "fits --outcome-model lightgbm only"),
])
def test_cli_bad_outcome_options(tmp_path, args, msg):
    train = _log(tmp_path)
    r = runner.invoke(app, ["learn", "--log", str(train), "--out", str(tmp_path / "run"), *args, "--no-progress"])
    assert r.exit_code != 0 and msg in " ".join(r.output.split()), r.output
    assert not (tmp_path / "run" / "policy.pt").exists()
    r = runner.invoke(app, ["evaluate", "--log", str(train), "--policy", str(tmp_path / "none.pt"), *args])
    assert r.exit_code != 0 and msg in " ".join(r.output.split()), r.output


def test_loop_config_outcome_keys():
    from grpokit.loop.config import LoopConfig

    cfg = LoopConfig(loop={"outcome_model": "lightgbm"})
    assert cfg.loop.outcome_model == "lightgbm" and cfg.loop.outcome_backend == "local"
    with pytest.raises(ValueError, match="fits loop.outcome_model = 'lightgbm' only"):
        LoopConfig(loop={"outcome_model": "gbm", "outcome_backend": "ray"})
    with pytest.raises(ValueError, match="outcome_model"):
        LoopConfig(loop={"outcome_model": "xgboost"})
