"""LambdaLoss and GRADE stage-1 pre-training (src/grpokit/ranking/ltr.py).

The pair weights and the loss are checked against brute-force, loop-based references (NDCG of
an explicit permutation, recomputed after swapping two candidates); gradients against their
expected signs and against finite differences; pre-training against a known weight vector.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from grpokit.policy.heads import CategoricalHead, DirichletHead, GaussianSoftmaxHead
from grpokit.policy.network import MLPTorso, Policy
from grpokit.ranking.fusion import fuse
from grpokit.ranking.ltr import delta_ndcg, lambda_loss, ndcg, pretrain_fusion_policy

DT = torch.float64


# --------------------------------------------------------------------------------------------
# brute-force references (plain python / numpy, independent of the implementation)
# --------------------------------------------------------------------------------------------


def _ranking(scores, valid):
    """Positions -> candidate index, best first, ties by lower index, padded candidates dropped."""
    idx = [i for i in range(len(scores)) if valid[i]]
    return sorted(idx, key=lambda i: (-scores[i], i))


def _dcg(order, rel, k):
    total = 0.0
    for pos, i in enumerate(order, start=1):
        if k is not None and pos > k:
            break
        total += (2.0 ** rel[i] - 1.0) / math.log2(pos + 1)
    return total


def _ndcg_of_order(order, rel, k):
    ideal = sorted(order, key=lambda i: -rel[i])
    idcg = _dcg(ideal, rel, k)
    return 0.0 if idcg == 0 else _dcg(order, rel, k) / idcg


def _brute_delta(scores, rel, valid, k):
    n = len(scores)
    out = np.zeros((n, n))
    order = _ranking(scores, valid)
    base = _ndcg_of_order(order, rel, k)
    for a in range(len(order)):
        for b in range(len(order)):
            if a == b:
                continue
            swapped = list(order)
            swapped[a], swapped[b] = swapped[b], swapped[a]
            out[order[a], order[b]] = abs(_ndcg_of_order(swapped, rel, k) - base)
    return out


def _brute_loss(scores, rel, valid, k, sigma):
    """Per-request loss and whether it has an ordered pair."""
    w = _brute_delta(scores, rel, valid, k)
    total, has_pair = 0.0, False
    for i in range(len(scores)):
        for j in range(len(scores)):
            if valid[i] and valid[j] and rel[i] > rel[j]:
                has_pair = True
                total += w[i, j] * math.log1p(math.exp(-sigma * (scores[i] - scores[j])))
    return total, has_pair


def _random_batch(b=5, n=7, seed=0, pad=True):
    g = torch.Generator().manual_seed(seed)
    fused = torch.randn(b, n, generator=g, dtype=DT)
    rel = torch.randint(0, 4, (b, n), generator=g).to(DT)
    mask = torch.ones(b, n, dtype=torch.bool)
    if pad:
        mask[1, -2:] = False
        mask[3, -3:] = False
    rel[2] = 0.0  # a request with no relevant item
    return fused, rel, mask


# --------------------------------------------------------------------------------------------
# gradient direction and loss values on a toy list
# --------------------------------------------------------------------------------------------


def test_relevant_item_ranked_last_is_pushed_up_and_others_down():
    s = torch.tensor([[2.0, 1.0, 0.0]], dtype=DT, requires_grad=True)
    rel = torch.tensor([[0.0, 0.0, 1.0]], dtype=DT)
    loss = lambda_loss(s, rel)
    loss.backward()
    g = s.grad[0]
    # gradient descent moves s along -grad: the relevant item up, the others down
    assert g[2] < 0
    assert g[0] > 0 and g[1] > 0
    assert torch.isclose(g.sum(), torch.zeros((), dtype=DT), atol=1e-12)  # pairwise: differences only
    # the item ranked first (largest |ΔNDCG| with the relevant one) is pushed down hardest
    assert g[0] > g[1]


def test_ideal_ordering_has_lower_loss_and_a_large_margin_gives_near_zero():
    rel = torch.tensor([[0.0, 0.0, 1.0]], dtype=DT)
    worst = lambda_loss(torch.tensor([[2.0, 1.0, 0.0]], dtype=DT), rel)
    ideal = lambda_loss(torch.tensor([[1.0, 0.0, 2.0]], dtype=DT), rel)  # relevant item now first
    assert ideal < worst
    perfect = lambda_loss(torch.tensor([[0.0, -50.0, 50.0]], dtype=DT), rel)
    assert 0 <= float(perfect) < 1e-15
    # graded relevance, perfectly ordered with margin 40
    rel3 = torch.tensor([[3.0, 2.0, 1.0, 0.0]], dtype=DT)
    assert float(lambda_loss(torch.tensor([[120.0, 80.0, 40.0, 0.0]], dtype=DT), rel3)) < 1e-15


def test_equal_relevance_pairs_contribute_nothing():
    # all items equally relevant: no ordered pair, loss 0 and no gradient
    s = torch.randn(2, 5, dtype=DT, requires_grad=True)
    loss = lambda_loss(s, torch.ones(2, 5, dtype=DT))
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert torch.all(s.grad == 0)
    # two relevant items and one irrelevant: only the pairs (0, 2) and (1, 2) count
    s = torch.tensor([[0.3, -0.4, 1.1]], dtype=DT)
    rel = torch.tensor([[1.0, 1.0, 0.0]], dtype=DT)
    w = delta_ndcg(s, rel)[0]
    sp = torch.nn.functional.softplus
    expected = w[0, 2] * sp(-(s[0, 0] - s[0, 2])) + w[1, 2] * sp(-(s[0, 1] - s[0, 2]))
    assert torch.isclose(lambda_loss(s, rel), expected)
    assert w[0, 1] == 0 and w[1, 0] == 0  # |G_i - G_j| = 0 between equally relevant items
    # the gradient has no component along s_0 - s_1 coming from a (0, 1) pair: it is the sum
    # of the two (i, 2) pair gradients only
    g = s.clone().requires_grad_(True)
    lambda_loss(g, rel).backward()
    d0 = -w[0, 2] * torch.sigmoid(-(s[0, 0] - s[0, 2]))
    d1 = -w[1, 2] * torch.sigmoid(-(s[0, 1] - s[0, 2]))
    assert torch.allclose(g.grad[0], torch.stack([d0, d1, -(d0 + d1)]))


def test_padding_is_ignored():
    s_real = torch.tensor([[0.5, 2.0, -1.0]], dtype=DT, requires_grad=True)
    rel_real = torch.tensor([[2.0, 0.0, 1.0]], dtype=DT)
    ref = lambda_loss(s_real, rel_real, k=2)
    ref.backward()

    # same request padded to N = 6 with garbage scores (huge, -inf, nan) and relevances
    s_pad = torch.tensor([[0.5, 1e9, 2.0, float("-inf"), -1.0, float("nan")]], dtype=DT, requires_grad=True)
    rel_pad = torch.tensor([[2.0, 7.0, 0.0, 3.0, 1.0, float("nan")]], dtype=DT)
    mask = torch.tensor([[True, False, True, False, True, False]])
    out = lambda_loss(s_pad, rel_pad, mask, k=2)
    out.backward()
    assert torch.isclose(out, ref)
    assert torch.allclose(s_pad.grad[0, mask[0]], s_real.grad[0])
    assert torch.all(s_pad.grad[0, ~mask[0]] == 0)
    assert torch.allclose(ndcg(s_pad, rel_pad, mask, k=2), ndcg(s_real, rel_real, k=2))


# --------------------------------------------------------------------------------------------
# against brute force
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [None, 1, 3])
def test_delta_ndcg_matches_brute_force_swaps(k):
    fused, rel, mask = _random_batch(seed=1)
    fused[0, 3] = fused[0, 5]  # a tie: broken by the lower index
    w = delta_ndcg(fused, rel, mask, k)
    for b in range(fused.shape[0]):
        ref = _brute_delta(fused[b].tolist(), rel[b].tolist(), mask[b].tolist(), k)
        np.testing.assert_allclose(w[b].numpy(), ref, atol=1e-12)


@pytest.mark.parametrize("k", [None, 2])
def test_ndcg_matches_brute_force(k):
    fused, rel, mask = _random_batch(seed=2)
    got = ndcg(fused, rel, mask, k)
    for b in range(fused.shape[0]):
        order = _ranking(fused[b].tolist(), mask[b].tolist())
        assert got[b].item() == pytest.approx(_ndcg_of_order(order, rel[b].tolist(), k), abs=1e-12)


@pytest.mark.parametrize("k,sigma", [(None, 1.0), (3, 2.5)])
def test_loss_and_reductions_match_brute_force(k, sigma):
    fused, rel, mask = _random_batch(seed=3)
    per = lambda_loss(fused, rel, mask, k, sigma, reduction="none")
    refs = [_brute_loss(fused[b].tolist(), rel[b].tolist(), mask[b].tolist(), k, sigma) for b in range(5)]
    np.testing.assert_allclose(per.numpy(), [r[0] for r in refs], rtol=1e-10, atol=1e-12)
    assert per[2] == 0  # the request without a relevant item
    n_informative = sum(r[1] for r in refs)
    assert n_informative == 4
    assert lambda_loss(fused, rel, mask, k, sigma, reduction="sum").item() == pytest.approx(sum(r[0] for r in refs))
    assert lambda_loss(fused, rel, mask, k, sigma).item() == pytest.approx(sum(r[0] for r in refs) / n_informative)


def test_no_relevant_item_anywhere_gives_zero_with_a_graph():
    s = torch.randn(3, 4, dtype=DT, requires_grad=True)
    loss = lambda_loss(s, torch.zeros(3, 4, dtype=DT))
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.all(s.grad == 0)


def test_ndcg_loss2_weights_match_the_formula():
    fused, rel, mask = _random_batch(seed=4, pad=False)
    per = lambda_loss(fused, rel, mask, weighting="ndcg_loss2", reduction="none")
    for b in range(fused.shape[0]):
        s, r = fused[b].tolist(), rel[b].tolist()
        order = _ranking(s, [True] * len(s))
        rank = {i: pos for pos, i in enumerate(order, start=1)}
        idcg = _dcg(sorted(order, key=lambda i: -r[i]), r, None)
        total = 0.0
        for i in range(len(s)):
            for j in range(len(s)):
                if r[i] > r[j]:
                    d = abs(rank[i] - rank[j])
                    delta = abs(1 / math.log2(d + 1) - 1 / math.log2(d + 2))
                    w = abs(2 ** r[i] - 2 ** r[j]) * delta / idcg
                    total += w * math.log1p(math.exp(-(s[i] - s[j])))
        assert per[b].item() == pytest.approx(total, rel=1e-10, abs=1e-12)


def test_gradient_matches_finite_differences_through_fusion_weights():
    g = torch.Generator().manual_seed(5)
    scores = torch.rand(4, 8, 3, generator=g, dtype=DT)
    rel = torch.randint(0, 3, (4, 8), generator=g).to(DT)
    w = torch.tensor([[0.5, 0.3, 0.2]], dtype=DT).expand(4, 3).clone().requires_grad_(True)

    def f(weights):
        return lambda_loss(fuse(scores, weights.unsqueeze(1)).squeeze(1), rel, k=5, sigma=3.0)

    # the |ΔNDCG| weights are piecewise constant; eps is far below the smallest score gap
    assert torch.autograd.gradcheck(f, (w,), eps=1e-7, atol=1e-6)


def test_bad_inputs_give_clear_errors():
    s = torch.randn(2, 3)
    rel = torch.ones(2, 3)
    with pytest.raises(ValueError, match=r"\[B, N\]"):
        lambda_loss(s[0], rel[0])
    with pytest.raises(ValueError, match="relevance must have the shape"):
        lambda_loss(s, torch.ones(2, 4))
    with pytest.raises(ValueError, match="mask must have the shape"):
        lambda_loss(s, rel, torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool"):
        lambda_loss(s, rel, torch.ones(2, 3))
    with pytest.raises(ValueError, match=">= 0"):
        lambda_loss(s, -rel)
    with pytest.raises(ValueError, match="sigma"):
        lambda_loss(s, rel, sigma=0.0)
    with pytest.raises(ValueError, match="k must be"):
        lambda_loss(s, rel, k=0)
    with pytest.raises(ValueError, match="weighting"):
        lambda_loss(s, rel, weighting="listnet")
    with pytest.raises(ValueError, match="reduction"):
        lambda_loss(s, rel, reduction="max")
    with pytest.raises(ValueError, match="non-finite"):
        lambda_loss(torch.tensor([[0.0, float("nan")]]), torch.ones(1, 2))
    with pytest.raises(TypeError, match="floating"):
        lambda_loss(torch.ones(2, 3, dtype=torch.long), rel)


# --------------------------------------------------------------------------------------------
# pre-training the mean weights (GRADE stage 1)
# --------------------------------------------------------------------------------------------

W_STAR = torch.tensor([[0.6, 0.3, 0.1], [0.1, 0.2, 0.7]])


def _toy_problem(r=512, n=20, seed=0):
    """Two user segments, each with its own w*; relevance = 1 for the top-3 items under w*."""
    g = torch.Generator().manual_seed(seed)
    seg = torch.randint(0, 2, (r,), generator=g)
    scores = torch.rand(r, n, 3, generator=g)
    fused = torch.einsum("rnk,rk->rn", scores, W_STAR[seg])
    rel = torch.zeros(r, n).scatter_(1, fused.topk(3, dim=-1).indices, 1.0)
    features = torch.nn.functional.one_hot(seg, 2).float()
    return features, scores, rel


def _policy(head, seed=0):
    torch.manual_seed(seed)
    return Policy(MLPTorso(2, (32,)), head)


def test_pretraining_recovers_the_generating_weights_with_a_dirichlet_head():
    features, scores, rel = _toy_problem()
    policy = _policy(DirichletHead(3))
    out = pretrain_fusion_policy(policy, features, scores, rel, steps=300, lr=3e-2, batch_size=128, sigma=30.0, seed=0)
    with torch.no_grad():
        w = policy(torch.eye(2)).mode()
    cos = torch.nn.functional.cosine_similarity(w, W_STAR, dim=-1)
    assert torch.all(cos > 0.95), (w, cos)
    assert len(out["loss"]) == 300
    assert np.mean(out["loss"][-20:]) < 0.5 * np.mean(out["loss"][:20])
    assert out["ndcg_after"] > out["ndcg_before"] and out["ndcg_after"] > 0.97


def test_pretraining_is_seeded_and_works_for_other_differentiable_heads():
    features, scores, rel = _toy_problem(r=128, n=10)
    mask = torch.ones(128, 10, dtype=torch.bool)
    mask[:, -2:] = False
    runs = []
    for _ in range(2):
        policy = _policy(GaussianSoftmaxHead(3), seed=1)
        runs.append(
            pretrain_fusion_policy(
                policy, features, scores, rel, mask, steps=20, lr=1e-2, batch_size=32, seed=7, fusion="log_linear", k=5
            )
        )
    assert runs[0]["loss"] == runs[1]["loss"]
    assert all(math.isfinite(x) for x in runs[0]["loss"])
    other = pretrain_fusion_policy(
        _policy(GaussianSoftmaxHead(3), seed=1), features, scores, rel, mask, steps=20, batch_size=32, seed=8,
        fusion="log_linear", k=5, lr=1e-2,
    )
    assert other["loss"] != runs[0]["loss"]


def test_pretraining_bad_inputs():
    features, scores, rel = _toy_problem(r=16, n=5)
    policy = _policy(DirichletHead(3))
    with pytest.raises(TypeError, match="mode"):
        pretrain_fusion_policy(_policy(CategoricalHead(3)), features, scores, rel, steps=1)
    with pytest.raises(ValueError, match="fusion"):
        pretrain_fusion_policy(policy, features, scores, rel, steps=1, fusion="max")
    with pytest.raises(ValueError, match="features have"):
        pretrain_fusion_policy(policy, features[:3], scores, rel, steps=1)
    with pytest.raises(ValueError, match="relevance must be"):
        pretrain_fusion_policy(policy, features, scores, rel[:, :3], steps=1)
    with pytest.raises(ValueError, match="steps"):
        pretrain_fusion_policy(policy, features, scores, rel, steps=0)
    with pytest.raises(TypeError, match=r"mode\(\)"):  # K of the head (3) != K of the scores (4)
        pretrain_fusion_policy(policy, features, torch.rand(16, 5, 4), rel, steps=1)
