"""Tests for grpokit.datasets.obd (Open Bandit Dataset loader + BTS action distribution).

Tests that need the real OBD sample are skipped with a message when it is absent
(``GRPOKIT_OBD_ROOT`` or ``<repo>/../shared/data/obd``); the synthetic-folder and
synthetic-prior tests always run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from grpokit.datasets import (
    OBDLog,
    bts_action_dist,
    load_bts_prior,
    load_obd,
    obd_target_probs,
)


def _obd_root() -> Path:
    env = os.environ.get("GRPOKIT_OBD_ROOT")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "obd"


OBD_ROOT = _obd_root()
HAVE_OBD = (OBD_ROOT / "random" / "all" / "all.csv").is_file() and (
    OBD_ROOT / "bts" / "all" / "all.csv"
).is_file()
requires_obd = pytest.mark.skipif(
    not HAVE_OBD,
    reason=f"Open Bandit Dataset sample not found at {OBD_ROOT} (set GRPOKIT_OBD_ROOT)",
)


# --------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def random_log() -> OBDLog:
    return load_obd(OBD_ROOT, "random", "all")


@pytest.fixture(scope="module")
def bts_log() -> OBDLog:
    return load_obd(OBD_ROOT, "bts", "all")


@pytest.fixture(scope="module")
def bts_dist() -> np.ndarray:
    return bts_action_dist(OBD_ROOT / "bts" / "all" / "prior_bts.json", n_sim=100_000, seed=0)


@requires_obd
@pytest.mark.parametrize("behavior", ["random", "bts"])
def test_shapes_and_dtypes(behavior, random_log, bts_log):
    log = random_log if behavior == "random" else bts_log
    n = log.n_rounds
    assert n == 10_000
    assert log.behavior == behavior and log.campaign == "all"
    assert (log.n_actions, log.len_list) == (80, 3)
    assert log.context.dtype == np.float64 and log.context.shape[0] == n
    assert log.context.shape[1] == len(log.context_names)
    # one-hot user features then the 80 affinity columns
    assert log.context_names[-80:] == [f"user-item_affinity_{i}" for i in range(80)]
    n_user = log.context.shape[1] - 80
    assert all(name.startswith("user_feature_") for name in log.context_names[:n_user])
    np.testing.assert_array_equal(log.context[:, :n_user].sum(axis=1), 4.0)  # one level per feature
    assert np.isfinite(log.context).all()
    for arr, dt in [(log.action, np.int64), (log.position, np.int64), (log.reward, np.float64), (log.pscore, np.float64)]:
        assert arr.dtype == dt and arr.shape == (n,)
    assert log.action.min() >= 0 and log.action.max() <= 79
    assert set(np.unique(log.position)) == {0, 1, 2}
    assert set(np.unique(log.reward)) <= {0.0, 1.0}
    assert np.issubdtype(log.timestamp.dtype, np.datetime64) and log.timestamp.shape == (n,)
    assert (np.diff(log.timestamp.astype(np.int64)) >= 0).all()
    assert log.action_context.shape == (80, len(log.action_context_names))
    assert log.action_context_names[0] == "item_feature_0"
    np.testing.assert_array_equal(log.action_context[:, 1:].sum(axis=1), 3.0)  # 3 one-hot groups
    assert len(log.item_context) == 80


@requires_obd
def test_action_context_same_for_both_logs(random_log, bts_log):
    # hashed item-feature strings differ between the two folders, the encoding does not
    np.testing.assert_array_equal(random_log.action_context, bts_log.action_context)
    assert set(random_log.item_context["item_feature_1"]).isdisjoint(bts_log.item_context["item_feature_1"])


@requires_obd
def test_shared_user_categories(random_log):
    bts_aligned = load_obd(OBD_ROOT, "bts", user_categories=random_log.user_categories)
    assert bts_aligned.context_names == random_log.context_names
    # the bts log has a few user-feature levels never seen in the random log -> all-zero group
    n_user = random_log.context.shape[1] - 80
    assert (bts_aligned.context[:, :n_user].sum(axis=1) <= 4).all()
    dropped = load_obd(OBD_ROOT, "random", drop_first=True)
    assert dropped.context.shape[1] == random_log.context.shape[1] - 4


@requires_obd
def test_random_log_pscore_is_uniform(random_log):
    np.testing.assert_allclose(random_log.pscore, 1.0 / 80, rtol=0, atol=1e-12)


@requires_obd
def test_bts_log_pscore_not_uniform(bts_log):
    assert bts_log.pscore.min() > 0 and bts_log.pscore.max() <= 1
    assert bts_log.pscore.std() > 0.01


@requires_obd
def test_on_policy_click_rates(random_log, bts_log):
    for log in (random_log, bts_log):
        v = log.on_policy_value
        se = np.sqrt(v * (1 - v) / log.n_rounds)
        print(f"{log.behavior}: on-policy click rate {v:.4f} ± {1.96 * se:.4f} (95% CI), clicks={int(log.reward.sum())}")
        assert 0.001 < v < 0.02
    assert random_log.on_policy_value == pytest.approx(0.0038)
    assert bts_log.on_policy_value == pytest.approx(0.0042)


@requires_obd
def test_to_frame(random_log):
    df = random_log.to_frame()
    assert list(df.columns[:6]) == ["decision_id", "action", "reward", "pscore", "position", "timestamp"]
    assert list(df.columns[6:]) == random_log.context_names
    assert len(df) == random_log.n_rounds
    np.testing.assert_array_equal(df["action"].to_numpy(), random_log.action)
    np.testing.assert_array_equal(df[random_log.context_names].to_numpy(), random_log.context)
    assert df["decision_id"].is_unique


@requires_obd
def test_bts_dist_real_prior(bts_dist):
    alpha, beta = load_bts_prior(OBD_ROOT, "all")
    assert alpha.shape == beta.shape == (80,)
    assert bts_dist.shape == (80, 3)
    np.testing.assert_allclose(bts_dist.sum(axis=0), 1.0, atol=1e-12)
    mean = alpha / (alpha + beta)
    assert int(np.argmax(bts_dist[:, 0])) == int(np.argmax(mean))
    assert pd.Series(mean).corr(pd.Series(bts_dist[:, 0]), method="spearman") > 0.5
    # the top-10% items by posterior mean are first far more often than the bottom half
    hi, lo = mean > np.quantile(mean, 0.9), mean < np.quantile(mean, 0.5)
    assert bts_dist[hi, 0].mean() > 5 * bts_dist[lo, 0].mean()


@requires_obd
def test_bts_dist_seed():
    """Same seed, same distribution; another seed, another Monte-Carlo draw (timing: benchmarks/obd_bts_speed.py)."""
    path = OBD_ROOT / "bts" / "all" / "prior_bts.json"
    d1 = bts_action_dist(path, n_sim=100_000, seed=3)
    np.testing.assert_array_equal(d1, bts_action_dist(path, n_sim=100_000, seed=3))
    assert not np.array_equal(d1, bts_action_dist(path, n_sim=100_000, seed=4))


@requires_obd
def test_bts_dist_matches_python_loop_real_prior(bts_dist):
    alpha, beta = load_bts_prior(OBD_ROOT)
    loop = _loop_dist(alpha, beta, n_sim=2_000, seed=12345)
    _assert_mc_close(bts_dist, 100_000, loop, 2_000)


@requires_obd
def test_bts_logged_pscore_vs_monte_carlo(bts_log, bts_dist):
    mc = bts_dist[bts_log.action, bts_log.position]
    corr = float(np.corrcoef(mc, bts_log.pscore)[0, 1])
    spearman = float(pd.Series(mc).corr(pd.Series(bts_log.pscore), method="spearman"))
    print(f"BTS logged pscore vs MC dist at logged (item, position): pearson={corr:.3f} spearman={spearman:.3f}")
    # The README: only approximately equal (the production policy was updated in batches).
    # Measured: weak but positive agreement.
    assert corr > 0.0 and spearman > 0.2
    # every logged (item, position) has positive MC probability
    assert (mc > 0).all()


@requires_obd
def test_target_probs_on_real_logs(random_log, bts_dist):
    tp = obd_target_probs(bts_dist, random_log.position)
    assert tp.shape == (random_log.n_rounds, 80)
    np.testing.assert_allclose(tp.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(tp[random_log.position == 1][0], bts_dist[:, 1])


@requires_obd
def test_bad_arguments_real_root():
    with pytest.raises(ValueError, match="behavior"):
        load_obd(OBD_ROOT, "uniform")
    with pytest.raises(ValueError, match="campaign"):
        load_obd(OBD_ROOT, "random", "kids")
    for campaign in ("men", "women"):
        with pytest.raises(FileNotFoundError, match=rf"random[/\\]{campaign}[/\\]{campaign}\.csv"):
            load_obd(OBD_ROOT, "random", campaign)
        with pytest.raises(FileNotFoundError, match="prior_bts.json"):
            load_bts_prior(OBD_ROOT, campaign)


# --------------------------------------------------------------------------- always run


def test_bad_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="root"):
        load_obd(tmp_path / "nope", "random")
    with pytest.raises(FileNotFoundError, match="all.csv"):
        load_obd(tmp_path, "random")
    with pytest.raises(TypeError):
        load_obd(123, "random")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="behavior"):
        load_obd(tmp_path, None)  # type: ignore[arg-type]


def _loop_dist(alpha, beta, n_sim, seed, len_list=3):
    rng = np.random.default_rng(seed)
    counts = np.zeros((len(alpha), len_list))
    for _ in range(n_sim):
        draw = rng.beta(alpha, beta)
        ranked = np.argsort(-draw)[:len_list]
        for pos in range(len_list):
            counts[ranked[pos], pos] += 1
    return counts / n_sim


def _assert_mc_close(d_a, n_a, d_b, n_b, z=5.0):
    p = np.clip((d_a * n_a + d_b * n_b) / (n_a + n_b), 1e-4, None)
    tol = z * np.sqrt(p * (1 - p) * (1 / n_a + 1 / n_b)) + 1e-3
    assert (np.abs(d_a - d_b) <= tol).all(), np.max(np.abs(d_a - d_b) - tol)


def test_bts_dist_synthetic_prior_matches_loop():
    rng = np.random.default_rng(0)
    alpha = rng.uniform(1, 30, size=12)
    beta = rng.uniform(20, 200, size=12)
    d = bts_action_dist((alpha, beta), n_sim=50_000, seed=1, chunk_size=7_000)
    np.testing.assert_allclose(d.sum(axis=0), 1.0, atol=1e-12)
    assert (d.sum(axis=1) <= 1 + 1e-12).all()  # an item takes at most one position per sim
    _assert_mc_close(d, 50_000, _loop_dist(alpha, beta, 2_000, seed=99), 2_000)


def test_bts_dist_seed_and_inputs(tmp_path):
    alpha, beta = [2.0, 5.0, 9.0, 1.0], [8.0, 5.0, 1.0, 9.0]
    p = tmp_path / "prior_bts.json"
    p.write_text(json.dumps({"alpha": alpha, "beta": beta}))
    a = bts_action_dist(p, n_sim=5_000, seed=7, len_list=2)
    np.testing.assert_array_equal(a, bts_action_dist({"alpha": alpha, "beta": beta}, n_sim=5_000, seed=7, len_list=2))
    np.testing.assert_array_equal(a, bts_action_dist(str(p), n_sim=5_000, seed=7, len_list=2))
    assert not np.array_equal(a, bts_action_dist(p, n_sim=5_000, seed=8, len_list=2))
    assert a.shape == (4, 2)
    full = bts_action_dist((alpha, beta), n_sim=3_000, seed=0, len_list=4)
    np.testing.assert_allclose(full.sum(axis=0), 1.0)
    np.testing.assert_allclose(full.sum(axis=1), 1.0)  # full ranking: each item somewhere


def test_bts_dist_larger_mean_ranks_first():
    # items 0..4 with clearly increasing means and equal concentration
    means = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    conc = 20.0
    d = bts_action_dist((means * conc, (1 - means) * conc), n_sim=20_000, seed=0)
    assert np.all(np.diff(d[:, 0]) > 0)  # P(first) increases with the mean
    assert d[4, 0] > 0.5
    assert np.argmax(d[:, 1]) == 3 and np.argmax(d[:, 2]) == 2
    # much more concentrated posteriors: the best item is (almost) always first
    d_sharp = bts_action_dist((means * 2_000, (1 - means) * 2_000), n_sim=5_000, seed=0)
    np.testing.assert_array_equal(np.argmax(d_sharp, axis=0), [4, 3, 2])
    assert d_sharp[4, 0] > 0.99


def test_bts_prior_errors(tmp_path):
    root = tmp_path
    folder = root / "bts" / "all"
    folder.mkdir(parents=True)
    f = folder / "prior_bts.json"
    with pytest.raises(FileNotFoundError, match="prior_bts.json"):
        load_bts_prior(root, "all")
    with pytest.raises(ValueError, match="campaign"):
        load_bts_prior(root, "kids")
    f.write_text("{not json")
    with pytest.raises(ValueError, match="JSON"):
        load_bts_prior(root)
    f.write_text(json.dumps({"alpha": [1, 2]}))
    with pytest.raises(ValueError, match="'alpha' and 'beta'"):
        load_bts_prior(root)
    f.write_text(json.dumps({"alpha": [1, 2, 3], "beta": [1, 2]}))
    with pytest.raises(ValueError, match="lengths differ"):
        load_bts_prior(root)
    f.write_text(json.dumps({"alpha": [1, 0], "beta": [1, 2]}))
    with pytest.raises(ValueError, match="positive"):
        load_bts_prior(root)
    f.write_text(json.dumps({"alpha": [1, 2], "beta": [1, -2]}))
    with pytest.raises(ValueError, match="positive"):
        bts_action_dist(f)
    f.write_text(json.dumps({"alpha": [1.0, 2.0], "beta": [3.0, 4.0]}))
    a, b = load_bts_prior(root)
    np.testing.assert_array_equal(a, [1.0, 2.0])
    with pytest.raises(ValueError, match="len_list"):
        bts_action_dist(f, len_list=3)
    with pytest.raises(ValueError, match="n_sim"):
        bts_action_dist(f, n_sim=0)
    with pytest.raises(TypeError):
        bts_action_dist(42)  # type: ignore[arg-type]


def test_target_probs_synthetic():
    dist = np.array([[0.5, 0.2, 0.1], [0.3, 0.3, 0.3], [0.2, 0.5, 0.6]])
    pos = np.array([0, 2, 1, 0])
    tp = obd_target_probs(dist, pos)
    assert tp.shape == (4, 3)
    np.testing.assert_array_equal(tp[1], dist[:, 2])
    np.testing.assert_array_equal(tp[2], dist[:, 1])
    with pytest.raises(ValueError, match="position"):
        obd_target_probs(dist, np.array([0, 3]))
    with pytest.raises(ValueError, match="position"):
        obd_target_probs(dist, np.array([-1]))
    with pytest.raises(ValueError, match="2-D"):
        obd_target_probs(dist[:, 0], pos)


# ---------------------------------------------------------------- synthetic OBD folder


def _write_synthetic_obd(root: Path, behavior="random", campaign="all", n=30, seed=0, mutate=None):
    rng = np.random.default_rng(seed)
    folder = root / behavior / campaign
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "timestamp": pd.date_range("2019-11-24", periods=n, freq="min", tz="UTC").astype(str),
        "item_id": rng.integers(0, 80, n),
        "position": rng.integers(1, 4, n),
        "click": rng.integers(0, 2, n),
        "propensity_score": np.full(n, 1 / 80),
        "user_feature_0": rng.choice(["u0a", "u0b"], n),
        "user_feature_1": rng.choice(["u1a", "u1b", "u1c"], n),
        "user_feature_2": rng.choice(["u2a"], n),
        "user_feature_3": rng.choice(["u3a", "u3b"], n),
    }
    for i in range(80):
        data[f"user-item_affinity_{i}"] = rng.integers(0, 3, n).astype(float)
    df = pd.DataFrame(data)
    if mutate is not None:
        df = mutate(df)
    df.to_csv(folder / f"{campaign}.csv")
    items = pd.DataFrame(
        {
            "item_id": np.arange(80),
            "item_feature_0": rng.normal(size=80),
            "item_feature_1": rng.choice(["h1", "h2", "h3"], 80),
            "item_feature_2": rng.choice(["g1", "g2"], 80),
            "item_feature_3": rng.choice(["k1", "k2", "k3", "k4"], 80),
        }
    )
    items.to_csv(folder / "item_context.csv")
    return df, items


def test_synthetic_folder_loads(tmp_path):
    df, items = _write_synthetic_obd(tmp_path, "bts", "men")
    log = load_obd(tmp_path, "bts", "men")
    assert (log.n_rounds, log.n_actions, log.len_list) == (30, 80, 3)
    assert log.context.shape == (30, 2 + 3 + 1 + 2 + 80)
    np.testing.assert_array_equal(log.position, df["position"].to_numpy() - 1)
    np.testing.assert_array_equal(log.action, df["item_id"].to_numpy())
    assert log.position.dtype == np.int64 and log.action.dtype == np.int64
    np.testing.assert_allclose(log.reward, df["click"].to_numpy(dtype=float))
    np.testing.assert_allclose(log.context[:, -80:], df[[f"user-item_affinity_{i}" for i in range(80)]].to_numpy())
    assert log.action_context.shape == (80, 1 + items[["item_feature_1", "item_feature_2", "item_feature_3"]].nunique().sum())
    np.testing.assert_allclose(log.action_context[:, 0], items["item_feature_0"].to_numpy())
    assert log.on_policy_value == pytest.approx(df["click"].mean())
    frame = log.to_frame()
    assert frame.shape == (30, 6 + log.context.shape[1])
    # user-feature one-hot: column "user_feature_1=u1b" equals the indicator
    col = log.context_names.index("user_feature_1=u1b")
    np.testing.assert_array_equal(log.context[:, col], (df["user_feature_1"] == "u1b").to_numpy(dtype=float))


@pytest.mark.parametrize("bad", [0, 4, -1])
def test_synthetic_bad_position(tmp_path, bad):
    def mutate(df):
        df.loc[3, "position"] = bad
        return df

    _write_synthetic_obd(tmp_path, mutate=mutate)
    with pytest.raises(ValueError, match=rf"position must lie in 1\.\.3.*{bad}"):
        load_obd(tmp_path, "random")


@pytest.mark.parametrize(
    "column, match",
    [
        ("position", "missing columns"),
        ("propensity_score", "missing columns"),
        ("user_feature_2", "missing columns"),
        ("user-item_affinity_17", "affinity"),
    ],
)
def test_synthetic_missing_columns(tmp_path, column, match):
    _write_synthetic_obd(tmp_path, mutate=lambda df: df.drop(columns=[column]))
    with pytest.raises(ValueError, match=match):
        load_obd(tmp_path, "random")


def test_synthetic_bad_values(tmp_path):
    def bad_item(df):
        df.loc[0, "item_id"] = 80
        return df

    _write_synthetic_obd(tmp_path / "a", mutate=bad_item)
    with pytest.raises(ValueError, match="item_id"):
        load_obd(tmp_path / "a", "random")

    def bad_ps(df):
        df.loc[0, "propensity_score"] = 0.0
        return df

    _write_synthetic_obd(tmp_path / "b", mutate=bad_ps)
    with pytest.raises(ValueError, match="propensity_score"):
        load_obd(tmp_path / "b", "random")

    def bad_click(df):
        df.loc[0, "click"] = 2
        return df

    _write_synthetic_obd(tmp_path / "c", mutate=bad_click)
    with pytest.raises(ValueError, match="click"):
        load_obd(tmp_path / "c", "random")


def test_synthetic_missing_item_context(tmp_path):
    _write_synthetic_obd(tmp_path)
    (tmp_path / "random" / "all" / "item_context.csv").unlink()
    with pytest.raises(FileNotFoundError, match="item_context.csv"):
        load_obd(tmp_path, "random")
