"""Deployable policies: the feature encoder, weights_only files, decisions with propensities, `grpokit score`."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from grpokit.cli import app
from grpokit.policy import BetaHead, CategoricalHead, MLPTorso, Policy
from grpokit.policy.deployed import DeployedPolicy, row_uniforms
from grpokit.policy.features import FeatureEncoder, FeatureError
from grpokit.policy.io import load_policy, save_policy
from grpokit.scoring import score_table

runner = CliRunner()


def _frame(n=300, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "customer_id": np.arange(1000, 1000 + n),
        "age": rng.normal(40, 12, n).round(),
        "basket": rng.gamma(2.0, 30.0, n),
        "region": rng.choice(["north", "south", "east", "west", "rare"], n, p=[0.4, 0.3, 0.15, 0.14, 0.01]),
        "is_member": rng.random(n) < 0.3,
    })


def _encoder(df, **kw):
    return FeatureEncoder.infer(df, ["age", "basket", "region", "is_member"], **kw).fit(df)


def _policy(enc, n_actions=4, seed=0, head=None):
    torch.manual_seed(seed)
    pol = Policy(MLPTorso(enc.dim, [16]), head or CategoricalHead(n_actions))
    with torch.no_grad():  # a policy far from uniform, so the checks below can fail
        pol.out.weight.mul_(300.0)
    return pol


# ----------------------------------------------------------------------------- encoder

def test_encoder_standardizes_and_one_hot_encodes_by_hand():
    df = _frame()
    enc = _encoder(df, max_categories=4)
    x = enc.transform(df)
    assert enc.names == ["age", "basket", "region", "is_member"]
    # 3 most frequent levels kept (max_categories - 1), the rest go to "other"
    assert enc.output_names == ["age", "basket", "region=east", "region=north", "region=south",
                                "region=__other__", "is_member"]
    from sklearn.preprocessing import StandardScaler  # an independent reference (population std)

    np.testing.assert_allclose(x[:, :2], StandardScaler().fit_transform(df[["age", "basket"]]), rtol=1e-5, atol=1e-5)
    other = ~df["region"].isin(["east", "north", "south"])
    np.testing.assert_array_equal(x[:, 5], other.astype(np.float32))
    np.testing.assert_array_equal(x[:, 2:6].sum(1), np.ones(len(df)))
    np.testing.assert_array_equal(x[:, 6], df["is_member"].astype(np.float32))


def test_records_and_frames_encode_identically_and_unseen_levels_are_other():
    df = _frame()
    enc = _encoder(df)
    records = df.drop(columns="customer_id").to_dict("records")
    np.testing.assert_allclose(enc.transform(records), enc.transform(df), rtol=1e-6)
    one = enc.transform({"age": 30, "basket": 10.0, "region": "mars", "is_member": "yes"})
    assert one.shape == (1, enc.dim)
    assert one[0, enc.output_names.index("region=__other__")] == 1.0
    assert one[0, enc.output_names.index("is_member")] == 1.0


@pytest.mark.parametrize(
    "row, field, words",
    [
        ({"basket": 1.0, "region": "north", "is_member": True}, "age", "missing field"),
        ({"age": 30, "basket": 1.0, "region": "north", "is_member": True, "agee": 3}, "agee", "unknown field"),
        ({"age": float("nan"), "basket": 1.0, "region": "north", "is_member": True}, "age", "finite"),
        ({"age": "thirty", "basket": 1.0, "region": "north", "is_member": True}, "age", "expected a number"),
        ({"age": 30, "basket": 1e39, "region": "north", "is_member": True}, "basket", "float32"),
        ({"age": 30, "basket": 1.0, "region": None, "is_member": True}, "region", "missing value"),
        ({"age": 30, "basket": 1.0, "region": "north", "is_member": "maybe"}, "is_member", "true/false"),
        ({"age": True, "basket": 1.0, "region": "north", "is_member": True}, "age", "expected a number"),
    ],
)
def test_bad_rows_are_refused_by_field_and_row(row, field, words):
    enc = _encoder(_frame())
    ok = {"age": 30, "basket": 1.0, "region": "north", "is_member": False}
    with pytest.raises(FeatureError) as info:
        enc.transform([ok, row])
    assert info.value.field == field and info.value.row == 1
    assert words in str(info.value) and repr(field) in str(info.value)


def test_frame_missing_column_and_nan_are_named():
    df = _frame()
    enc = _encoder(df)
    with pytest.raises(FeatureError, match="'basket'"):
        enc.transform(df.drop(columns="basket"))
    bad = df.copy()
    bad.loc[7, "age"] = np.nan
    with pytest.raises(FeatureError, match="row 7, field 'age'"):
        enc.transform(bad)


def test_timestamps_are_not_inferred_as_features():
    df = _frame().assign(when=pd.Timestamp("2026-01-01"))
    with pytest.raises(FeatureError, match="timestamp"):
        FeatureEncoder.infer(df, ["age", "when"])


# ----------------------------------------------------------------------------- files

def test_policy_file_round_trip_with_encoder_under_weights_only(tmp_path):
    df = _frame()
    enc = _encoder(df)
    pol = _policy(enc)
    path = save_policy(pol, tmp_path / "p.pt", {"action_labels": ["none", "a", "b", "c"], "n": np.int64(4)}, encoder=enc)
    raw = torch.load(path, weights_only=True)  # must not need pickle
    assert raw["features"]["fields"][2]["type"] == "category"
    loaded, meta = load_policy(path)
    assert meta["n"] == 4 and meta["feature_names"] == enc.names
    restored = FeatureEncoder.from_dict(meta["features"])
    np.testing.assert_array_equal(restored.transform(df), enc.transform(df))
    dp = DeployedPolicy.load(path)
    with torch.no_grad():
        want = pol(torch.as_tensor(enc.transform(df))).log_probs.exp().double().numpy()
    np.testing.assert_allclose(dp.probabilities(df), want, rtol=1e-6)
    assert dp.version.startswith("sha256:") and len(dp.version) == 19
    assert [f["name"] for f in dp.fields] == enc.names


class _Evil:  # a pickled object: loading it would run code under weights_only=False
    def __reduce__(self):
        return (print, ("pwned",))


def test_a_policy_file_that_needs_pickle_is_refused(tmp_path):
    df = _frame()
    enc = _encoder(df)
    path = save_policy(_policy(enc), tmp_path / "p.pt", encoder=enc)
    payload = torch.load(path, weights_only=True)
    payload["metadata"]["evil"] = _Evil()
    torch.save(payload, tmp_path / "evil.pt")
    for loader in (load_policy, DeployedPolicy.load):
        with pytest.raises(ValueError, match="pickled Python object .*print.*weights_only"):
            loader(tmp_path / "evil.pt")
    (tmp_path / "plain.pkl").write_bytes(pickle.dumps({"format": "x"}))
    with pytest.raises(ValueError, match="not a grpokit policy file"):
        DeployedPolicy.load(tmp_path / "plain.pkl")


def test_metadata_that_cannot_be_stored_plainly_is_refused(tmp_path):
    enc = _encoder(_frame())
    with pytest.raises(TypeError, match=r"metadata.bad"):
        save_policy(_policy(enc), tmp_path / "p.pt", {"bad": object()}, encoder=enc)
    with pytest.raises(ValueError, match="encoder makes"):
        save_policy(Policy(MLPTorso(3, [4]), CategoricalHead(2)), tmp_path / "q.pt", encoder=enc)


# ----------------------------------------------------------------------------- decisions

def test_served_distribution_and_propensities_by_hand(tmp_path):
    df = _frame(2000)
    enc = _encoder(df)
    pol = _policy(enc)
    dp = DeployedPolicy.load(save_policy(pol, tmp_path / "p.pt", encoder=enc))
    with torch.no_grad():
        pi = torch.softmax(pol.out(pol.torso(torch.as_tensor(enc.transform(df)))), -1).double().numpy()
    assert pi.max(1).mean() > 0.6  # far from uniform: epsilon matters below
    eps = 0.2
    d = dp.decide(df, epsilon=eps, seed=3)
    q = 0.8 * pi + 0.2 / 4
    np.testing.assert_allclose(d.probabilities, q, rtol=1e-6)
    np.testing.assert_allclose(d.propensities, q[np.arange(len(df)), d.actions], rtol=1e-6)
    assert d.propensities.min() >= eps / 4 - 1e-12
    # the draws follow q: sum over rows of q[:, a] vs counts, within 4 sd
    counts = np.bincount(d.actions, minlength=4)
    expected = q.sum(0)
    sd = np.sqrt((q * (1 - q)).sum(0))
    assert np.all(np.abs(counts - expected) < 4 * sd), (counts, expected)
    g = dp.decide(df, epsilon=eps, mode="greedy", seed=3)
    top = pi.argmax(1)
    np.testing.assert_allclose(g.probabilities[np.arange(len(df)), top], 0.8 + 0.05)
    assert dp.decide(df, epsilon=0.0, mode="greedy").actions.tolist() == top.tolist()


def test_decisions_do_not_depend_on_chunking_and_follow_the_seed(tmp_path):
    df = _frame(500)
    enc = _encoder(df)
    dp = DeployedPolicy.load(save_policy(_policy(enc), tmp_path / "p.pt", encoder=enc))
    whole = dp.decide(df, seed=11)
    parts = [dp.decide(df.iloc[a:b], seed=11, row_index=np.arange(a, b)).actions for a, b in ((0, 123), (123, 500))]
    np.testing.assert_array_equal(np.concatenate(parts), whole.actions)
    assert not np.array_equal(dp.decide(df, seed=12, epsilon=1.0).actions, dp.decide(df, seed=11, epsilon=1.0).actions)


def test_row_uniforms_are_uniform_and_deterministic():
    u = row_uniforms(5, np.arange(200_000))
    assert u.min() >= 0 and u.max() < 1
    hist = np.bincount((u * 20).astype(int), minlength=20)
    assert np.all(np.abs(hist - 10_000) < 5 * np.sqrt(10_000 * 0.95))
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 0.01
    np.testing.assert_array_equal(row_uniforms(5, [3, 4]), u[[3, 4]])
    assert not np.array_equal(row_uniforms(6, [3, 4]), u[[3, 4]])


def test_beta_policy_reports_the_density_of_its_sample(tmp_path):
    df = _frame(50)
    enc = _encoder(df)
    pol = _policy(enc, head=BetaHead(0.8, 1.2))
    dp = DeployedPolicy.load(save_policy(pol, tmp_path / "b.pt", encoder=enc))
    d = dp.decide(df, seed=1)
    assert d.actions.shape == (50,) and np.all((d.actions >= 0.8) & (d.actions <= 1.2))
    with torch.no_grad():
        dist = pol(torch.as_tensor(enc.transform(df)))
        lp = dist.log_prob(torch.as_tensor(d.actions, dtype=torch.float32).unsqueeze(1))[:, 0].double().numpy()
    np.testing.assert_allclose(d.log_density, lp, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dp.decide(df.iloc[10:20], seed=1, row_index=np.arange(10, 20)).actions, d.actions[10:20])
    with pytest.raises(ValueError, match="continuous"):
        dp.probabilities(df)


def test_group_embedding_policies_need_the_cohort(tmp_path):
    df = _frame(40)
    enc = _encoder(df)
    pol = Policy(MLPTorso(enc.dim, [8], n_groups=2, group_embedding_dim=2), CategoricalHead(3))
    dp = DeployedPolicy.load(save_policy(pol, tmp_path / "g.pt", {"group_labels": ["a", "b"]}, encoder=enc))
    assert dp.needs_group and dp.fields[-1]["name"] == "cohort"
    with pytest.raises(FeatureError, match="'cohort'"):
        dp.decide(df)
    d = dp.decide(df.assign(cohort=["a", "b"] * 20))
    assert len(d.actions) == 40
    with pytest.raises(FeatureError, match="unknown cohort 'c'"):
        dp.decide([{**df.drop(columns="customer_id").iloc[0].to_dict(), "cohort": "c"}])


# ----------------------------------------------------------------------------- grpokit score

def test_score_cli_writes_propensities_equal_to_the_served_distribution(tmp_path):
    df = _frame(1000)
    enc = _encoder(df)
    path = save_policy(_policy(enc), tmp_path / "p.pt", {"action_labels": ["none", "a", "b", "c"]}, encoder=enc)
    df.to_parquet(tmp_path / "rows.parquet", index=False)
    res = runner.invoke(app, ["score", "--policy", str(path), "--input", str(tmp_path / "rows.parquet"),
                              "--out", str(tmp_path / "d.parquet"), "--epsilon", "0.1", "--seed", "4",
                              "--batch-rows", "77", "--probabilities"])
    assert res.exit_code == 0, res.output
    out = pd.read_parquet(tmp_path / "d.parquet")
    assert list(out.columns[:5]) == ["customer_id", "action", "action_code", "propensity", "policy_version"]
    np.testing.assert_array_equal(out["customer_id"], df["customer_id"])
    dp = DeployedPolicy.load(path)
    q = dp.served_probabilities(df, epsilon=0.1)
    np.testing.assert_allclose(out["propensity"], q[np.arange(1000), out["action_code"]], rtol=1e-6)
    np.testing.assert_allclose(out[[f"prob_{a}" for a in dp.action_labels]].to_numpy(), q, rtol=1e-6)
    assert set(out["policy_version"]) == {dp.version}
    assert (out["action"] == np.array(dp.action_labels)[out["action_code"]]).all()
    # one pass, CSV input: the same decisions
    df.to_csv(tmp_path / "rows.csv", index=False)
    summary = score_table(path, tmp_path / "rows.csv", tmp_path / "d2.parquet", epsilon=0.1, seed=4)
    assert summary["rows"] == 1000
    np.testing.assert_array_equal(pd.read_parquet(tmp_path / "d2.parquet")["action_code"], out["action_code"])


def test_score_cli_bad_input_names_the_problem(tmp_path):
    df = _frame(30)
    enc = _encoder(df)
    path = save_policy(_policy(enc), tmp_path / "p.pt", encoder=enc)
    df.drop(columns="region").to_parquet(tmp_path / "noregion.parquet", index=False)
    bad = df.copy()
    bad["age"] = bad["age"].astype(object)
    bad.loc[25, "age"] = "n/a"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    cases = [
        (["--input", str(tmp_path / "noregion.parquet"), "--out", str(tmp_path / "o.parquet")], "'region'"),
        (["--input", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "o.parquet"), "--batch-rows", "10"],
         "row 25, field 'age'"),
        (["--input", str(tmp_path / "missing.parquet"), "--out", str(tmp_path / "o.parquet")], "does not exist"),
        (["--input", str(tmp_path / "noregion.parquet"), "--out", str(tmp_path / "o.csv")], "must end in .parquet"),
        (["--input", str(tmp_path / "noregion.parquet"), "--out", str(tmp_path / "o.parquet"), "--epsilon", "2"], "epsilon"),
    ]
    for args, words in cases:
        res = runner.invoke(app, ["score", "--policy", str(path), *args])
        assert res.exit_code == 2, (args, res.output)
        assert words in res.output, (args, res.output)
        assert not (tmp_path / "o.parquet").exists()
    res = runner.invoke(app, ["score", "--policy", str(tmp_path), "--input", str(tmp_path / "bad.csv"),
                              "--out", str(tmp_path / "o.parquet")])
    assert res.exit_code == 2 and "folder" in res.output
