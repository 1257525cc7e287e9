"""A fitted cohort model as plain data: assign() reproduces CohortModel.predict on new rows, also
after a trip through a saved policy's metadata (torch.load weights_only=True) and JSON."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from grpokit.groups import CohortModel, assign, cohort_model_to_dict


def _frame(n, seed):
    rng = np.random.default_rng(seed)
    centers = np.array([[0, 0, 0], [4, 0, 1], [0, 5, -2]])
    lab = rng.integers(0, 3, n)
    x = centers[lab] + rng.normal(size=(n, 3)) * np.array([1.0, 0.5, 2.0])
    return pd.DataFrame({"recency": x[:, 0], "frequency": x[:, 1], "monetary": x[:, 2],
                         "region": rng.choice(["north", "south", "east"], n)})


@pytest.mark.parametrize("method,kw", [("kmeans", {}), ("gmm", {"covariance_type": "full"}),
                                       ("gmm", {"covariance_type": "diag"}), ("gmm", {"covariance_type": "tied"}),
                                       ("gmm", {"covariance_type": "spherical"}), ("column", {"column": "region"})])
def test_assign_matches_predict(method, kw):
    train, new = _frame(600, 0), _frame(400, 1)
    feats = None if method == "column" else ["recency", "frequency", "monetary"]
    cm = CohortModel(method, n_cohorts="auto" if method != "column" else "auto", features=feats, seed=3,
                     k_range=(2, 5), **kw).fit(train)
    d = json.loads(json.dumps(cohort_model_to_dict(cm)))  # plain data: survives JSON
    np.testing.assert_array_equal(assign(d, new), cm.predict(new))
    np.testing.assert_array_equal(assign(d, train), cm.labels_)


def test_cohort_model_travels_in_a_saved_policy(tmp_path):
    from grpokit.policy import CategoricalHead, MLPTorso, Policy
    from grpokit.policy.io import load_policy, save_policy

    train, new = _frame(500, 0), _frame(300, 2)
    cm = CohortModel("gmm", n_cohorts=3, features=["recency", "frequency", "monetary"], seed=0).fit(train)
    policy = Policy(MLPTorso(3, [8], n_groups=3, group_embedding_dim=2), CategoricalHead(4))
    path = save_policy(policy, tmp_path / "p.pt", {"cohort_model": cohort_model_to_dict(cm)})
    torch.load(path, weights_only=True)  # no pickle needed
    loaded, meta = load_policy(path)
    groups = assign(meta["cohort_model"], new)
    np.testing.assert_array_equal(groups, cm.predict(new))
    x = torch.tensor(new[["recency", "frequency", "monetary"]].to_numpy(), dtype=torch.float32)
    g = torch.as_tensor(groups)
    assert torch.equal(loaded.act(x, g), policy.act(x, g))


def test_assign_errors_name_the_problem():
    cm = CohortModel("kmeans", n_cohorts=2, features=["recency", "frequency"], seed=0).fit(_frame(100, 0))
    d = cohort_model_to_dict(cm)
    with pytest.raises(ValueError, match="monetary|frequency"):
        assign(d, _frame(10, 1).drop(columns=["frequency"]))
    bad = _frame(10, 1)
    bad.loc[4, "recency"] = np.nan
    with pytest.raises(ValueError, match="'recency'.*row 4"):
        assign(d, bad)
    col = cohort_model_to_dict(CohortModel("column", column="region").fit(_frame(50, 0)))
    with pytest.raises(ValueError, match="'west' at row 0"):
        assign(col, pd.DataFrame({"region": ["west"]}))
    with pytest.raises(ValueError, match="format"):
        assign({"method": "kmeans"}, np.zeros((1, 2)))
    with pytest.raises(ValueError, match="not fitted"):
        cohort_model_to_dict(CohortModel())
