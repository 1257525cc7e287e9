"""Fusion, re-ranking and the offline auction against brute-force Python sorting; NDCG, GAUC, transforms."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import rankdata
from sklearn.metrics import ndcg_score, roc_auc_score

from grpokit.ranking.auction import TRANSFORMS, apply_transforms, auction, auction_throughput, gauc, midranks
from grpokit.ranking.fusion import fuse, rerank
from grpokit.ranking.logs import RankingSchema, read_ranking_log

LABELS = ["click", "order", "gmv"]
TASKS = ["p_click", "p_order", "order_value"]


def random_case(B=5, N=7, K=3, G=4, seed=0, ties=False, pad=True):
    """Scores, labels, mask and simplex weights; ``ties``: dyadic grids so float sums are exact and tie."""
    g = torch.Generator().manual_seed(seed)
    if ties:
        scores = torch.randint(0, 5, (B, N, K), generator=g).float() / 4  # {0, .25, .5, .75, 1}
        weights = torch.randint(0, 3, (B, G, K), generator=g).float() / 4
    else:
        scores = torch.rand(B, N, K, generator=g)
        weights = torch.softmax(torch.randn(B, G, K, generator=g), -1)
    labels = (torch.rand(B, N, K, generator=g) < 0.35).float()
    labels[..., -1] *= torch.randint(1, 100, (B, N), generator=g).float()
    mask = torch.ones(B, N, dtype=torch.bool)
    if pad:
        n_real = torch.randint(2, N + 1, (B,), generator=g)
        n_real[0] = N
        mask = torch.arange(N) < n_real[:, None]
        scores = scores.masked_fill(~mask[..., None], 0.0)
        labels = labels.masked_fill(~mask[..., None], 0.0)
    return scores, labels, mask, weights


def brute_order(values, real):
    """Indices of real candidates by value descending, ties to the lower index."""
    return sorted((j for j in range(len(values)) if real[j]), key=lambda j: (-values[j], j))


def brute_auction(scores, labels, mask, weights, k, fused=None, relevance=2, discount="log2"):
    B, N, K = scores.shape
    G = weights.shape[1]
    out = {name: np.zeros((B, G)) for name in LABELS + ["ndcg"] + [f"prior_{t}" for t in TASKS]}
    for b in range(B):
        real = mask[b].tolist()
        rel = [max(labels[b, j, relevance].item(), 0.0) for j in range(N)]
        ideal_order = sorted((rel[j] for j in range(N) if real[j]), reverse=True)[:k]
        d = (lambda i: 1 / math.log2(i + 2)) if discount == "log2" else (lambda i: 1.0)
        idcg = sum(r * d(i) for i, r in enumerate(ideal_order))
        for gi in range(G):
            if fused is None:
                f = [sum(weights[b, gi, kk].item() * scores[b, j, kk].item() for kk in range(K)) for j in range(N)]
            else:
                f = fused[b, gi].tolist()
            top = brute_order(f, real)[:k]
            for kk in range(K):
                out[LABELS[kk]][b, gi] = sum(labels[b, j, kk].item() * d(i) for i, j in enumerate(top))
                out[f"prior_{TASKS[kk]}"][b, gi] = sum(scores[b, j, kk].item() * d(i) for i, j in enumerate(top))
            dcg = sum(rel[j] * d(i) for i, j in enumerate(top))
            out["ndcg"][b, gi] = dcg / idcg if idcg > 0 else 0.0
    return out


def assert_close(got: dict, want: dict, atol=1e-4):
    assert set(got) == set(want)
    for name in want:
        assert got[name].shape == want[name].shape, name
        np.testing.assert_allclose(got[name].double().numpy(), want[name], rtol=1e-5, atol=atol, err_msg=name)


# ------------------------------------------------------------------------------- fuse / rerank


@pytest.mark.parametrize("ties", [False, True])
def test_fuse_and_rerank_match_python_sorting(ties):
    scores, _, mask, weights = random_case(B=6, N=9, G=5, seed=1, ties=ties)
    fused = fuse(scores, weights, "linear")
    B, G, N = fused.shape
    for b in range(B):
        for g in range(G):
            want = [sum(weights[b, g, k].item() * scores[b, j, k].item() for k in range(3)) for j in range(N)]
            np.testing.assert_allclose(fused[b, g].numpy(), want, rtol=1e-6, atol=1e-6)
    top = rerank(fused, 4, mask)
    for b in range(B):
        for g in range(G):
            want = brute_order(fused[b, g].tolist(), mask[b].tolist())
            want = (want + [j for j in range(N) if not mask[b, j]])[:4]
            assert top[b, g].tolist() == want


def test_log_linear_ranks_by_the_product():
    g = torch.Generator().manual_seed(3)
    scores = 0.05 + 0.95 * torch.rand(8, 12, 3, generator=g, dtype=torch.float64)
    weights = torch.softmax(torch.randn(8, 4, 3, generator=g, dtype=torch.float64), -1)
    top = rerank(fuse(scores, weights, "log_linear"), 12)
    for b in range(8):
        for gi in range(4):
            prod = [math.prod(scores[b, j, k].item() ** weights[b, gi, k].item() for k in range(3)) for j in range(12)]
            assert top[b, gi].tolist() == brute_order(prod, [True] * 12)


# ------------------------------------------------------------------------------------ auction


@pytest.mark.parametrize("ties,pad,k", [(False, False, 3), (False, True, 4), (True, True, 3), (True, True, 10)])
def test_auction_matches_brute_force(ties, pad, k):
    scores, labels, mask, weights = random_case(B=6, N=7, G=4, seed=2, ties=ties, pad=pad)
    got = auction(weights, (scores, labels, mask), k=k)
    # dyadic grids: Python's own fused sums are exact, so ties are the same ties
    want = brute_auction(scores, labels, mask, weights, min(k, 7), fused=None if ties else fuse(scores, weights))
    assert_close(got, want)


def test_auction_log_linear_and_discount_none():
    scores, labels, mask, weights = random_case(B=4, N=6, G=3, seed=4)
    scores = scores.clamp_min(0.01)
    fused = fuse(scores, weights, "log_linear")
    got = auction(weights, (scores, labels, mask), k=3, fusion="log_linear", discount="none")
    assert_close(got, brute_auction(scores, labels, mask, weights, 3, fused=fused, discount="none"))
    got2 = auction(weights, (scores, labels, mask), k=3, fusion="log_linear", discount=torch.ones(5))
    for name in got:
        assert torch.allclose(got[name], got2[name])


def test_ndcg_hand_computed():
    # one request, 4 candidates; relevance (gmv) 3, 0, 2, 1; the weights rank by p_click only
    scores = torch.tensor([[[0.9, 0, 0], [0.8, 0, 0], [0.1, 0, 0], [0.5, 0, 0]]])
    labels = torch.zeros(1, 4, 3)
    labels[0, :, 2] = torch.tensor([3.0, 0.0, 2.0, 1.0])
    w = torch.tensor([[[1.0, 0.0, 0.0]]])
    out = auction(w, (scores, labels), k=3)
    # ranking 0, 1, 3: DCG = 3/1 + 0/log2(3) + 1/2; ideal 3, 2, 1: 3 + 2/log2(3) + 1/2
    want = (3 + 0.5) / (3 + 2 / math.log2(3) + 0.5)
    assert out["ndcg"].item() == pytest.approx(want, rel=1e-6)
    assert out["gmv"].item() == pytest.approx(3.5, rel=1e-6)
    assert out["prior_p_click"].item() == pytest.approx(0.9 + 0.8 / math.log2(3) + 0.25, rel=1e-6)
    # no relevant item: NDCG 0
    out = auction(w, (scores, torch.zeros(1, 4, 3)), k=3)
    assert out["ndcg"].item() == 0.0


@pytest.mark.parametrize("k", [1, 3, 5])
def test_ndcg_matches_sklearn(k):
    scores, labels, mask, weights = random_case(B=6, N=8, G=3, seed=5)
    out = auction(weights, (scores, labels, mask), k=k)
    fused = fuse(scores, weights)
    for b in range(6):
        real = mask[b]
        for g in range(3):
            rel = labels[b, real, 2].numpy()[None]
            want = ndcg_score(rel, fused[b, g, real].numpy()[None], k=k)
            assert out["ndcg"][b, g].item() == pytest.approx(want, abs=1e-5)


def test_relevance_choice_and_names_from_a_log():
    rng = np.random.default_rng(0)
    n = 12
    df = pd.DataFrame({"rid": np.repeat([1, 2, 3], 4), "p_ctr": rng.random(n), "p_buy": rng.random(n) * 0.1,
                       "clk": (rng.random(n) < 0.5).astype(int), "buy": (rng.random(n) < 0.3).astype(int)})
    log = read_ranking_log(df, RankingSchema(request_id="rid", tasks=["p_ctr", "p_buy"],
                                             labels={"p_ctr": "clk", "p_buy": "buy"}))
    w = torch.softmax(torch.randn(3, 2, 2), -1)
    out = auction(w, log, k=2)
    assert set(out) == {"clk", "buy", "ndcg", "prior_p_ctr", "prior_p_buy"}
    # neither a "gmv" nor an "order" label: relevance defaults to the last label column
    assert torch.allclose(out["ndcg"], auction(w, log, k=2, relevance="buy")["ndcg"])
    assert torch.allclose(auction(w, log, k=2, relevance="p_ctr")["ndcg"],
                          auction(w, log, k=2, relevance=log.labels[..., 0])["ndcg"])
    with pytest.raises(ValueError, match="relevance 'nope'"):
        auction(w, log, k=2, relevance="nope")


def test_default_relevance_is_gmv_then_order():
    scores, labels, mask, weights = random_case(seed=6)
    a = auction(weights, {"scores": scores, "labels": labels, "mask": mask}, k=3)
    assert torch.allclose(a["ndcg"], auction(weights, (scores, labels, mask), k=3, relevance="gmv")["ndcg"])
    b = auction(weights, {"scores": scores, "labels": labels, "mask": mask,
                          "label_names": ["click", "order", "value"]}, k=3)
    assert torch.allclose(b["ndcg"], auction(weights, (scores, labels, mask), k=3, relevance="order")["ndcg"])
    assert "value" in b


def test_shapes_broadcast_device_and_errors():
    scores, labels, mask, weights = random_case(B=5, N=6, G=3, seed=7)
    shared = weights[0]
    a = auction(shared, (scores, labels, mask), k=2)
    b = auction(shared.expand(5, 3, 3), (scores, labels, mask), k=2)
    assert all(torch.allclose(a[n], b[n]) for n in a) and a["click"].shape == (5, 3)
    assert a["click"].device == shared.device
    big = auction(weights, (scores, labels, mask), k=50)  # k clamped to N
    assert_close(big, brute_auction(scores, labels, mask, weights, 6, fused=fuse(scores, weights)))
    with pytest.raises(ValueError, match="weights must be"):
        auction(weights[..., :2], (scores, labels, mask))
    with pytest.raises(ValueError, match="k must be"):
        auction(weights, (scores, labels, mask), k=0)
    with pytest.raises(ValueError, match="unknown fusion"):
        auction(weights, (scores, labels, mask), fusion="max")
    with pytest.raises(ValueError, match="labels must have the shape"):
        auction(weights, (scores, labels[:, :3], mask))
    with pytest.raises(TypeError):
        auction(weights, scores)


# --------------------------------------------------------------------------------- transforms


def test_transforms_equal_pretransformed_scores():
    scores, labels, mask, weights = random_case(B=5, N=7, G=3, seed=8)
    scores[..., 2] *= 100
    pre = scores.clone()
    pre[..., 2] = torch.log1p(pre[..., 2])
    pre[..., 1] = torch.sqrt(pre[..., 1])
    got = auction(weights, (scores, labels, mask), k=3, transforms={"order_value": "log1p", "p_order": "sqrt"})
    ref = auction(weights, (pre, labels, mask), k=3)
    for name in ("click", "order", "gmv", "ndcg"):
        assert torch.allclose(got[name], ref[name], atol=1e-5), name
    # priors are of the raw predictions, whatever the transform
    assert_close(got, brute_auction(scores, labels, mask, weights, 3, fused=fuse(pre, weights)), atol=1e-3)


def test_rank_transform_is_per_request_percentile():
    scores, _, mask, _ = random_case(B=6, N=8, seed=9, ties=True)
    out = apply_transforms(scores, mask, TASKS, {"p_click": "rank", 2: "identity"})
    for b in range(6):
        real = mask[b].numpy()
        want = rankdata(scores[b, real, 0].numpy()) / real.sum()  # mid-ranks
        np.testing.assert_allclose(out[b, real, 0].numpy(), want, rtol=1e-6)
        assert (out[b, ~mask[b], 0] == 0).all()
    assert torch.equal(out[..., 1:], scores[..., 1:])
    r = midranks(torch.tensor([[3.0, 1.0, 3.0, 2.0, 9.0]]), torch.tensor([[True, True, True, True, False]]))
    assert r[0, :4].tolist() == [3.5, 1.0, 3.5, 2.0]


def test_transform_errors():
    scores, labels, mask, weights = random_case(seed=10)
    assert set(TRANSFORMS) == {"identity", "log1p", "sqrt", "rank"}
    with pytest.raises(ValueError, match="unknown transform 'exp'"):
        auction(weights, (scores, labels, mask), transforms={"order_value": "exp"})
    with pytest.raises(ValueError, match="unknown task 'p_view'"):
        auction(weights, (scores, labels, mask), transforms={"p_view": "log1p"})
    neg = scores.clone()
    neg[0, 0, 2] = -2.0
    with pytest.raises(ValueError, match="log1p .* > -1"):
        auction(weights, (neg, labels, mask), transforms={"order_value": "log1p"})
    with pytest.raises(ValueError, match="sqrt .* >= 0"):
        auction(weights, (neg, labels, mask), transforms={"order_value": "sqrt"})


# --------------------------------------------------------------------------------------- GAUC


@pytest.mark.parametrize("ties", [False, True])
def test_gauc_matches_sklearn_per_request(ties):
    scores, labels, mask, weights = random_case(B=10, N=9, G=3, seed=11, ties=ties)
    labels[1, :, 0] = 0  # a request with no positive
    labels[2, :, 0] = mask[2].float()  # a request with no negative
    fused = fuse(scores, weights)
    total, per = gauc(fused, labels[..., 0], mask, per_request=True)
    assert total.shape == (3,) and per.shape == (10, 3)
    for g in range(3):
        num = den = 0.0
        for b in range(10):
            real = mask[b].numpy()
            y = labels[b, real, 0].numpy()
            if y.min() == y.max():
                assert math.isnan(per[b, g].item())
                continue
            auc = roc_auc_score(y, fused[b, g, real].numpy())
            assert per[b, g].item() == pytest.approx(auc, abs=1e-9)
            num += real.sum() * auc
            den += real.sum()
        assert total[g].item() == pytest.approx(num / den, abs=1e-9)
    # a 2-D input gives the G=0 slice
    assert gauc(fused[:, 0], labels[..., 0], mask).item() == pytest.approx(total[0].item())


def test_gauc_no_request_with_both_classes_is_nan():
    assert math.isnan(gauc(torch.rand(3, 4), torch.zeros(3, 4)).item())
    with pytest.raises(ValueError, match="finite"):
        gauc(torch.tensor([[float("inf"), 0.0]]), torch.tensor([[1.0, 0.0]]))


def test_throughput_runs():
    assert auction_throughput(B=64, N=10, K=3, G=4, k=5, steps=1, warmup=0) > 0
