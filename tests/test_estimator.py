"""The scikit-learn facade: fit/predict on a log with a known best action, clone, Pipeline, GridSearchCV."""

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

import grpokit
from grpokit import GRPOPolicyLearner

FAST = dict(outcome_model="linear", steps=60, batch_size=128, n_folds=2)


def _log(n=800, seed=0):
    """Action 1 pays when x0 > 0, action 0 otherwise (rewards 0/1 noise-free)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    action = rng.integers(0, 2, n)
    best = (x[:, 0] > 0).astype(int)
    reward = (action == best).astype(float)
    return x, action, reward, np.full(n, 0.5)


def test_fit_predict_learns_the_rule_and_probabilities_sum_to_one():
    x, a, r, p = _log()
    est = GRPOPolicyLearner(**FAST).fit(x, a, r, p)
    probs = est.predict_proba(x)
    assert probs.shape == (800, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)
    accuracy = (est.predict(x) == (x[:, 0] > 0)).mean()
    assert accuracy > 0.9, accuracy
    # score = SNIPS value on the log; the learned rule is worth far more than the logging policy's 0.5
    assert est.score(x, np.column_stack([a, r, p])) > 0.85


def test_dataframe_with_text_column_and_labels():
    x, a, r, p = _log(600, 1)
    df = pd.DataFrame({"x0": x[:, 0], "colour": np.where(x[:, 1] > 0, "red", "blue")})
    labels = np.array(["mail", "sms"])[a]
    est = GRPOPolicyLearner(**FAST).fit(df, labels, r, p, groups=df["colour"])
    assert set(est.predict(df)) <= {"mail", "sms"} and list(est.classes_) == ["mail", "sms"]
    assert "colour=red" in est.encoder_.output_names


def test_clone_get_set_params():
    est = GRPOPolicyLearner(steps=5, lr=0.01)
    c = clone(est)
    assert c.get_params() == est.get_params() and c is not est
    c.set_params(steps=7)
    assert c.steps == 7 and est.steps == 5
    assert "steps" in GRPOPolicyLearner().get_params()


def test_pipeline_and_grid_search():
    x, a, r, p = _log(600, 2)
    y = np.column_stack([a, r, p])
    pipe = Pipeline([("scale", FunctionTransformer(lambda z: 2.0 * z)), ("learner", GRPOPolicyLearner(**FAST))])
    pipe.fit(x, y)
    assert pipe.predict(x).shape == (600,)
    grid = GridSearchCV(GRPOPolicyLearner(**FAST), {"lr": [1e-4, 3e-3]}, cv=2).fit(x, y)
    assert grid.best_params_["lr"] == 3e-3  # a tiny learning rate barely moves from uniform in 60 steps
    assert np.isfinite(grid.cv_results_["mean_test_score"]).all()


def test_bad_input_and_not_fitted():
    x, a, r, p = _log(100)
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        GRPOPolicyLearner().predict(x)
    with pytest.raises(ValueError, match="pscore in row 3"):
        p2 = p.copy()
        p2[3] = 0.0
        GRPOPolicyLearner(**FAST).fit(x, a, r, p2)
    with pytest.raises(ValueError, match="both reward and pscore"):
        GRPOPolicyLearner(**FAST).fit(x, a, r)
    with pytest.raises(ValueError, match="single action"):
        GRPOPolicyLearner(**FAST).fit(x, np.zeros(100, int), r, p)


def test_version():
    assert isinstance(grpokit.__version__, str) and grpokit.__version__


def test_every_trainer_field_is_documented():
    from grpokit.config import AdvantageConfig, GRPOConfig

    for model in (GRPOConfig, AdvantageConfig):
        missing = [n for n, f in model.model_fields.items() if not f.description]
        assert not missing, f"{model.__name__} fields without a description: {missing}"
        assert all(f"``{n}``" in model.__doc__ for n in model.model_fields)  # listed in help()
