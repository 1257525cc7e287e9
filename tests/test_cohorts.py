"""CohortModel and cohort_profile: planted segments are found, labels are stable, bad input is named."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.metrics import adjusted_rand_score
from threadpoolctl import threadpool_limits

from grpokit.groups import CohortModel, cohort_profile

SIZES = [120, 220, 360, 500]  # unequal segments
STDS = [0.8, 1.0, 1.2, 0.9]
FEATS = ["age", "tenure", "spend", "visits", "basket"]


def _blobs(seed: int = 0, sep: float = 7.0) -> tuple[np.ndarray, np.ndarray]:
    """4 Gaussian blobs in 5-d, every pair of centres ``sep`` apart (about 7 standard deviations)."""
    rng = np.random.default_rng(seed)
    centers = np.eye(4, 5) * sep / np.sqrt(2)
    X = np.vstack([rng.normal(c, s, (m, 5)) for c, s, m in zip(centers, STDS, SIZES)])
    y = np.repeat(np.arange(4), SIZES)
    perm = rng.permutation(len(y))
    return X[perm], y[perm]


@pytest.fixture(scope="module", autouse=True)
def _one_blas_thread():
    """One BLAS/OpenMP thread (as conftest does for torch): small EM steps on 2 busy cores are
    many times slower when two thread pools (torch's and scikit-learn's) compete."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    return _blobs()


@pytest.fixture(scope="module")
def frame(blobs) -> pd.DataFrame:
    X, y = blobs
    df = pd.DataFrame(X, columns=FEATS)
    df["segment"] = np.array(["north", "east", "south", "west"])[y]
    df["revenue"] = 10.0 * y + np.random.default_rng(1).normal(0, 1, len(y))
    return df


@pytest.fixture(scope="module")
def kmeans_auto(blobs) -> CohortModel:
    return CohortModel("kmeans", "auto", seed=0).fit(blobs[0])


@pytest.fixture(scope="module")
def gmm_bic(blobs) -> CohortModel:
    return CohortModel("gmm", "auto", select="bic", seed=0).fit(blobs[0])


# ----------------------------------------------------------------------------- auto selection


def test_kmeans_silhouette_finds_four_segments(blobs, kmeans_auto):
    _, y = blobs
    assert kmeans_auto.criterion_ == "silhouette"  # the default for k-means
    assert kmeans_auto.n_cohorts_ == 4
    assert set(kmeans_auto.scores_) == set(range(2, 9))
    assert max(kmeans_auto.scores_, key=kmeans_auto.scores_.get) == 4
    assert adjusted_rand_score(y, kmeans_auto.labels_) > 0.9


def test_gmm_bic_finds_four_segments(blobs, gmm_bic):
    _, y = blobs
    assert gmm_bic.n_cohorts_ == 4
    assert set(gmm_bic.scores_) == set(range(2, 9))
    assert min(gmm_bic.scores_, key=gmm_bic.scores_.get) == 4  # lower BIC is better
    assert gmm_bic.scores_[4] == pytest.approx(gmm_bic.model_.bic(gmm_bic.scaler_.transform(blobs[0])))
    assert adjusted_rand_score(y, gmm_bic.labels_) > 0.9


def test_gmm_default_select_is_bic(blobs):
    cm = CohortModel("gmm", "auto", k_range=(3, 5), seed=0).fit(blobs[0])
    assert cm.criterion_ == "bic" and cm.n_cohorts_ == 4 and set(cm.scores_) == {3, 4, 5}


def test_gmm_silhouette_finds_four_segments(blobs):
    X, y = blobs
    cm = CohortModel("gmm", "auto", select="silhouette", k_range=(2, 6), n_init=2, seed=0).fit(X)
    assert cm.n_cohorts_ == 4
    assert adjusted_rand_score(y, cm.labels_) > 0.9


def test_silhouette_on_seeded_subsample(blobs, kmeans_auto):
    X, y = blobs
    a = CohortModel("kmeans", "auto", k_range=(3, 5), max_silhouette_rows=300, seed=0).fit(X)
    b = CohortModel("kmeans", "auto", k_range=(3, 5), max_silhouette_rows=300, seed=0).fit(X)
    assert a.scores_ == b.scores_  # same subsample for the same seed
    assert a.scores_[4] != kmeans_auto.scores_[4]  # a subsample, not all 1200 rows
    assert a.n_cohorts_ == 4 and adjusted_rand_score(y, a.labels_) > 0.9


# ----------------------------------------------------------------------------- fixed k, order, seed


@pytest.mark.parametrize("method", ["kmeans", "gmm"])
def test_fixed_k(blobs, method):
    X, y = blobs
    cm = CohortModel(method, 4, seed=0).fit(X)
    assert cm.n_cohorts_ == 4 and cm.scores_ == {} and cm.criterion_ is None
    assert cm.cohort_names_ == ["c0", "c1", "c2", "c3"]
    assert adjusted_rand_score(y, cm.labels_) > 0.9
    two = CohortModel(method, 2, seed=0).fit(X)
    assert two.n_cohorts_ == 2 and set(np.unique(two.labels_)) == {0, 1}
    one = CohortModel(method, 1, seed=0).fit(X)
    assert one.n_cohorts_ == 1 and (one.labels_ == 0).all()


def test_cohorts_numbered_by_decreasing_size(kmeans_auto, gmm_bic):
    for cm in (kmeans_auto, gmm_bic):
        counts = np.bincount(cm.labels_, minlength=cm.n_cohorts_)
        assert (np.diff(counts) <= 0).all()
        np.testing.assert_allclose(counts, sorted(SIZES, reverse=True), rtol=0.05)  # c0 = the largest segment


@pytest.mark.parametrize("method", ["kmeans", "gmm"])
def test_reproducible_with_seed(blobs, method):
    X, _ = blobs
    kw = dict(k_range=(3, 5), n_init=2)
    a = CohortModel(method, "auto", seed=7, **kw).fit(X)
    b = clone(a).fit(X)  # sklearn-style params: clone gives the same settings
    assert b.get_params()["seed"] == 7
    np.testing.assert_array_equal(a.labels_, b.labels_)
    assert a.scores_ == b.scores_


def test_standardization(blobs):
    X, y = blobs
    Xs = X * np.array([1.0, 1000.0, 0.01, 1.0, 50.0])  # units must not matter
    cm = CohortModel("kmeans", 4, seed=0).fit(Xs)
    np.testing.assert_allclose(cm.scaler_.scale_, Xs.std(axis=0))
    assert adjusted_rand_score(y, cm.labels_) > 0.9
    assert CohortModel("kmeans", 4, standardize=False, seed=0).fit(X).scaler_ is None


# ----------------------------------------------------------------------------- DataFrames and predict


def test_dataframe_features_match_array(frame, blobs):
    cm_df = CohortModel("kmeans", 4, features=FEATS, seed=0).fit(frame)  # ignores segment/revenue
    cm_np = CohortModel("kmeans", 4, seed=0).fit(blobs[0])
    np.testing.assert_array_equal(cm_df.labels_, cm_np.labels_)
    assert cm_df.feature_names_ == FEATS and cm_np.feature_names_ == [f"x{j}" for j in range(5)]


def test_predict_new_rows_equals_labels(frame, blobs, kmeans_auto, gmm_bic):
    X, _ = blobs
    for cm in (kmeans_auto, gmm_bic):
        np.testing.assert_array_equal(cm.predict(X), cm.labels_)
        np.testing.assert_array_equal(cm.predict(X[100:160].copy()), cm.labels_[100:160])
    cm = CohortModel("gmm", 4, features=FEATS, seed=0).fit(frame)
    new = frame.iloc[::7][["revenue"] + FEATS[::-1]]  # other column order, extra column
    np.testing.assert_array_equal(cm.predict(new), cm.labels_[::7])
    np.testing.assert_array_equal(cm.fit_predict(frame), cm.labels_)


# ----------------------------------------------------------------------------- column method


def test_column_method_maps_sorted_labels(frame):
    cm = CohortModel("column", column="segment").fit(frame)
    assert cm.cohort_names_ == ["east", "north", "south", "west"]
    assert cm.n_cohorts_ == 4 and cm.model_ is None and cm.scaler_ is None
    expected = frame["segment"].map({"east": 0, "north": 1, "south": 2, "west": 3}).to_numpy()
    np.testing.assert_array_equal(cm.labels_, expected)
    new = pd.DataFrame({"segment": ["west", "east", "west"]})
    np.testing.assert_array_equal(cm.predict(new), [3, 0, 3])
    np.testing.assert_array_equal(cm.predict(np.array(["south", "north"])), [2, 1])
    ints = CohortModel("column", column="g").fit(pd.DataFrame({"g": [30, 10, 20, 10]}))
    assert ints.cohort_names_ == ["10", "20", "30"] and ints.labels_.tolist() == [2, 0, 1, 0]


def test_column_method_unseen_label_is_an_error(frame):
    cm = CohortModel("column", column="segment").fit(frame)
    with pytest.raises(ValueError, match=r"not seen at fit time: 'central'.*row 1"):
        cm.predict(pd.DataFrame({"segment": ["east", "central"]}))


# ----------------------------------------------------------------------------- profile


def test_profile_matches_pandas_groupby(frame, kmeans_auto):
    labels = kmeans_auto.labels_
    prof = cohort_profile(frame, labels, outcome="revenue", feature_names=FEATS)
    ref = frame[FEATS + ["revenue"]].groupby(labels).mean()
    sizes = pd.Series(labels).value_counts().sort_index()
    assert list(prof.index) == list(range(4)) and prof.index.name == "cohort"
    assert list(prof.columns) == ["size", "share", *[f"mean_{f}" for f in FEATS], "outcome_mean"]
    np.testing.assert_array_equal(prof["size"].to_numpy(), sizes.to_numpy())
    np.testing.assert_allclose(prof["share"].to_numpy(), sizes.to_numpy() / len(frame))
    assert prof["share"].sum() == pytest.approx(1.0)
    for f in FEATS:
        np.testing.assert_allclose(prof[f"mean_{f}"].to_numpy(), ref[f].to_numpy())
    np.testing.assert_allclose(prof["outcome_mean"].to_numpy(), ref["revenue"].to_numpy())


def test_profile_other_inputs(frame, blobs):
    X, _ = blobs
    rev = frame["revenue"].to_numpy()
    # a column name for cohorts; default features = numeric columns other than cohort / outcome
    by_seg = cohort_profile(frame, "segment", outcome="revenue")
    assert list(by_seg.index) == ["east", "north", "south", "west"]
    assert [c for c in by_seg.columns if c.startswith("mean_")] == [f"mean_{f}" for f in FEATS]
    np.testing.assert_allclose(by_seg["outcome_mean"], frame.groupby("segment")["revenue"].mean())
    # a fitted model: rows named by cohort_names_
    cm = CohortModel("column", column="segment").fit(frame)
    by_model = cohort_profile(frame, cm, outcome=rev)
    assert list(by_model.index) == cm.cohort_names_
    np.testing.assert_allclose(by_model["outcome_mean"].to_numpy(), by_seg["outcome_mean"].to_numpy())
    # an array with names
    arr = cohort_profile(X, frame["segment"], feature_names=FEATS)
    np.testing.assert_allclose(arr[[f"mean_{f}" for f in FEATS]].to_numpy(), by_seg[[f"mean_{f}" for f in FEATS]])
    assert list(cohort_profile(X, frame["segment"]).columns[2:4]) == ["mean_x0", "mean_x1"]


# ----------------------------------------------------------------------------- bad input


def _small() -> pd.DataFrame:
    return pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [0.5, 0.1, 0.2, 0.9], "name": list("wxyz")})


@pytest.mark.parametrize(
    ("model", "data", "pattern"),
    [
        (CohortModel(n_cohorts=2), pd.DataFrame({"a": []}, dtype=float), r"empty input"),
        (CohortModel(n_cohorts=2), np.empty((0, 3)), r"empty input"),
        (CohortModel(n_cohorts=2), np.ones(5), r"2-D"),
        (CohortModel(n_cohorts=2, features=["a", "b"]), _small().assign(b=[0.1, np.nan, 0.3, 0.4]),
         r"column 'b' has NaN at row 1"),
        (CohortModel(n_cohorts=2), np.array([[0.0, 1.0], [1.0, np.inf], [2.0, 0.0]]), r"column 'x1' has inf at row 1"),
        (CohortModel(n_cohorts=2, features=["a", "b"]), _small().set_index(pd.Index(list("pqrs"))).assign(
            a=[1.0, 2.0, 3.0, -np.inf]), r"'a' has -inf at row 3 \(index label 's'\)"),
        (CohortModel(n_cohorts=2), _small(), r"non-numeric feature column\(s\): 'name'"),
        (CohortModel(n_cohorts=2, features=["a", "when"]), _small().assign(when=pd.Timestamp("2024-01-01")),
         r"non-numeric .*'when'"),
        (CohortModel(n_cohorts=2, features=["a", "zz"]), _small(), r"\['zz'\] not in the data"),
        (CohortModel(n_cohorts=2, features=["a"]), np.ones((4, 2)), r"features= names DataFrame columns"),
        (CohortModel(n_cohorts=0), np.ones((4, 2)), r"n_cohorts must be at least 1"),
        (CohortModel(n_cohorts=5), np.arange(8.0).reshape(4, 2), r"n_cohorts=5 is more than the 4 rows"),
        (CohortModel(n_cohorts="three"), np.ones((4, 2)), r"n_cohorts must be a positive int or 'auto'"),
        (CohortModel(n_cohorts=2.0), np.ones((4, 2)), r"n_cohorts must be a positive int"),
        (CohortModel(method="dbscan"), np.ones((4, 2)), r"unknown method 'dbscan'"),
        (CohortModel(select="aic"), np.ones((4, 2)), r"unknown select 'aic'"),
        (CohortModel("kmeans", select="bic"), np.ones((4, 2)), r"select='bic' needs a likelihood"),
        (CohortModel(k_range=(5, 3)), np.ones((10, 2)), r"k_range \(5, 3\) is empty"),
        (CohortModel(k_range=(1, 3)), np.ones((10, 2)), r"k_range \(1, 3\) starts below 2"),
        (CohortModel("gmm", k_range=(0, 3)), np.ones((10, 2)), r"starts below 1"),
        (CohortModel(k_range=(2, 3, 4)), np.ones((10, 2)), r"k_range must be a pair of ints"),
        (CohortModel(k_range=(2.0, 4)), np.ones((10, 2)), r"k_range must be a pair of ints"),
        (CohortModel(k_range=(2, 8)), np.arange(10.0).reshape(5, 2), r"up to 8 cohorts but the data has only 5 rows"),
        (CohortModel("column"), _small(), r"needs column="),
        (CohortModel("column", column="nope"), _small(), r"cohort column 'nope' not in the data"),
        (CohortModel("column", column="name", n_cohorts=3), _small(), r"n_cohorts=3 but column 'name' has 4"),
        (CohortModel("column", column="g"), pd.DataFrame({"g": ["a", None, "b"]}), r"missing label at row 1"),
        (CohortModel("column", column="g"), pd.DataFrame({"g": ["a", 1, "b"]}), r"mixes label types"),
    ],
)
def test_bad_input_raises_naming_the_problem(model, data, pattern):
    with pytest.raises(ValueError, match=pattern):
        model.fit(data)


def test_bad_predict_and_profile_input(frame, blobs, kmeans_auto):
    X, _ = blobs
    with pytest.raises(ValueError, match=r"3 feature columns; the model was fitted on 5"):
        kmeans_auto.predict(X[:, :3])
    with pytest.raises(ValueError, match=r"'x2' has NaN at row 0"):
        kmeans_auto.predict(np.where(np.arange(5) == 2, np.nan, X[:1]))
    with pytest.raises(ValueError, match=r"not fitted"):
        CohortModel().predict(X)
    with pytest.raises(ValueError, match=r"cohorts has 3 entries but the data has 1200 rows"):
        cohort_profile(X, [0, 1, 0])
    with pytest.raises(ValueError, match=r"outcome column 'profit' not in the data"):
        cohort_profile(frame, "segment", outcome="profit")
    with pytest.raises(ValueError, match=r"empty input"):
        cohort_profile(frame.iloc[:0], [])
    with pytest.raises(ValueError, match=r"non-numeric feature column\(s\): \['segment'\]"):
        cohort_profile(frame, kmeans_auto.labels_, feature_names=["age", "segment"])
