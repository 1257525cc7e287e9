"""Static fusion-weight baselines by black-box search over the simplex (src/grpokit/ranking/tuning.py)."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from grpokit.ranking.tuning import TuningResult, simplex_candidates, tune_per_segment, tune_static_weights

W_STAR = torch.tensor([0.5, 0.3, 0.15, 0.05])

# `cma` is an optional dependency (method="cma" only)
needs_cma = pytest.mark.skipif(importlib.util.find_spec("cma") is None, reason="the optional package cma is not installed")
METHODS = ["random", pytest.param("cma", marks=needs_cma)]


def _concave(w_star):
    def objective(w):
        return -((w - w_star.to(w.dtype)) ** 2).sum(-1)

    return objective


def test_simplex_candidates_cover_vertices_center_and_the_simplex():
    c = simplex_candidates(3, 50, seed=0)
    assert c.shape == (50, 3)
    assert torch.equal(c[:3], torch.eye(3, dtype=c.dtype))
    assert torch.allclose(c[3], torch.full((3,), 1 / 3, dtype=c.dtype))
    assert torch.all(c >= 0) and torch.allclose(c.sum(-1), torch.ones(50, dtype=c.dtype))
    assert torch.equal(c, simplex_candidates(3, 50, seed=0))
    assert not torch.equal(c, simplex_candidates(3, 50, seed=1))
    # Dirichlet(1) = uniform on the simplex: each coordinate has mean 1/K
    big = simplex_candidates(3, 20_004, seed=2)[4:]
    assert torch.allclose(big.mean(0), torch.full((3,), 1 / 3, dtype=big.dtype), atol=0.01)


def test_random_search_finds_the_maximizer_and_records_history():
    calls = []

    def objective(w):
        calls.append(w.shape[0])
        return _concave(W_STAR)(w)

    res = tune_static_weights(objective, 4, "random", budget=3000, seed=0, batch_size=500)
    assert isinstance(res, TuningResult)
    best, value, hist = res
    assert best.shape == (4,) and best.dtype == torch.float32
    assert torch.allclose(best, W_STAR, atol=0.05)
    assert value == pytest.approx(float(_concave(W_STAR)(best[None].double())[0]), abs=1e-6)
    assert calls == [500] * 6
    assert hist["weights"].shape == (3000, 4) and hist["values"].shape == (3000,)
    assert torch.all(hist["best_so_far"][1:] >= hist["best_so_far"][:-1])
    assert hist["best_so_far"][-1].item() == pytest.approx(value)


@needs_cma
def test_cma_finds_the_maximizer_within_budget():
    calls = []

    def objective(w):
        calls.append(w.shape[0])
        return _concave(W_STAR)(w)

    best, value, hist = tune_static_weights(objective, 4, "cma", budget=600, seed=0)
    assert torch.allclose(best, W_STAR, atol=1e-3)
    assert value > -1e-6
    assert sum(calls) == hist["weights"].shape[0] <= 600
    assert torch.allclose(hist["weights"].sum(-1), torch.ones(len(hist["values"]), dtype=torch.float64))
    # seeded
    again = tune_static_weights(_concave(W_STAR), 4, "cma", budget=600, seed=0)
    assert torch.equal(again.best_weights, best)
    other = tune_static_weights(_concave(W_STAR), 4, "cma", budget=60, seed=1)
    assert not torch.equal(other.history["weights"], hist["weights"][: other.history["weights"].shape[0]])


@pytest.mark.parametrize("method", METHODS)
def test_vertex_maximizer_and_minimization(method):
    # linear objective: the maximizer is a vertex (random search evaluates it exactly,
    # softmax reaches it only in the limit)
    lin = lambda w: w @ torch.tensor([0.2, 1.0, 0.4], dtype=w.dtype)  # noqa: E731
    best, value, _ = tune_static_weights(lin, 3, method, budget=400, seed=3)
    if method == "random":
        assert torch.equal(best, torch.tensor([0.0, 1.0, 0.0]))
        assert value == pytest.approx(1.0)
    else:
        assert best[1] > 0.99
    # minimize a convex bowl instead of maximizing a concave one
    target = W_STAR[:3].softmax(0)
    bowl = lambda w: ((w - target.to(w.dtype)) ** 2).sum(-1)  # noqa: E731
    best, value, hist = tune_static_weights(bowl, 3, method, budget=2000, maximize=False, seed=0)
    assert torch.allclose(best, target, atol=0.03)
    assert value == pytest.approx(float(hist["values"].min()))
    assert torch.all(hist["best_so_far"][1:] <= hist["best_so_far"][:-1])


@pytest.mark.parametrize("method", METHODS)
def test_per_segment_weights_follow_each_segments_maximizer(method):
    targets = {"new": torch.tensor([0.7, 0.2, 0.1]), "loyal": torch.tensor([0.1, 0.2, 0.7])}
    budget, tol = (2000, 0.05) if method == "random" else (400, 1e-3)
    out = tune_per_segment({s: _concave(w) for s, w in targets.items()}, 3, method, budget, seed=0)
    assert set(out) == set(targets)
    for s, w in targets.items():
        assert torch.allclose(out[s], w, atol=tol), (method, s, out[s])
    assert not torch.allclose(out["new"], out["loyal"], atol=0.3)
    # seeds derive from the segment name, not the dict order
    a = tune_per_segment({"x": _concave(W_STAR[:3]), "y": _concave(W_STAR[1:])}, 3, budget=100)
    b = tune_per_segment({"y": _concave(W_STAR[1:]), "x": _concave(W_STAR[:3])}, 3, budget=100)
    assert all(torch.equal(a[s], b[s]) for s in a)


def test_bad_inputs_give_clear_errors(monkeypatch):
    obj = _concave(W_STAR[:3])
    with pytest.raises(ValueError, match="K"):
        tune_static_weights(obj, 1)
    with pytest.raises(ValueError, match="unknown tuning method"):
        tune_static_weights(obj, 3, "grid")
    with pytest.raises(ValueError, match="K \\+ 1"):
        tune_static_weights(obj, 3, "random", budget=3)
    with pytest.raises(ValueError, match="budget"):
        tune_static_weights(obj, 3, "random", budget=0)
    with pytest.raises(TypeError, match="callable"):
        tune_static_weights("not a function", 3)
    with pytest.raises(ValueError, match=r"values \[M\]"):
        tune_static_weights(lambda w: w, 3, budget=10)
    with pytest.raises(ValueError, match="NaN"):
        tune_static_weights(lambda w: torch.full((w.shape[0],), float("nan")), 3, budget=10)
    if importlib.util.find_spec("cma") is not None:
        with pytest.raises(ValueError, match="generation"):
            tune_static_weights(obj, 3, "cma", budget=2)
    with pytest.raises(ValueError, match="sigma0"):
        tune_static_weights(obj, 3, "cma", sigma0=-1.0)
    with pytest.raises(ValueError, match="empty"):
        tune_per_segment({}, 3)
    with pytest.raises(TypeError, match="segment 'a'"):
        tune_per_segment({"a": 3}, 3)
    with pytest.raises(TypeError, match="mapping"):
        tune_per_segment([obj], 3)
    # the optional dependency is missing: a clear ImportError naming the package
    monkeypatch.setitem(sys.modules, "cma", None)
    with pytest.raises(ImportError, match="pip install cma"):
        tune_static_weights(obj, 3, "cma", budget=100)
