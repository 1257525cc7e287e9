"""Advantage estimators (src/grpokit/grpo/advantages.py) against hand-computed numbers and numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats as st
import torch

from grpokit.grpo.advantages import (
    ADVANTAGES,
    GRPOAdvantage,
    PGRPOAdvantage,
    RankAdvantage,
    grpo_advantages,
    make_advantage,
    rank_advantages,
)

DT = torch.float64
EPS = 1e-6

# Rows with different means, so that per-context centering and the batch std can be told apart.
#   row 0: mean 2,  centered [-1, 0, 1],  unbiased var (1 + 0 + 1) / 2 = 1         -> std 1
#   row 1: mean 12, centered [-2, -2, 4], unbiased var (4 + 4 + 16) / 2 = 12       -> std 2*sqrt(3)
#   all 6: mean 7,  deviations [-6, -5, -4, 3, 3, 9], squares sum 176, var 176 / 5 = 35.2
R = torch.tensor([[1.0, 2.0, 3.0], [10.0, 10.0, 16.0]], dtype=DT)
CENTERED = [[-1.0, 0.0, 1.0], [-2.0, -2.0, 4.0]]


# ============================================================================================
# grpo_advantages / GRPOAdvantage
# ============================================================================================


def test_grpo_group_scale_by_hand():
    adv = grpo_advantages(R, "group", EPS)
    expected = torch.tensor(
        [[-1 / (1 + EPS), 0.0, 1 / (1 + EPS)], [v / (2 * math.sqrt(3) + EPS) for v in (-2.0, -2.0, 4.0)]], dtype=DT
    )
    torch.testing.assert_close(adv, expected, rtol=1e-12, atol=1e-14)
    # Bessel's correction: the population std would give row 0 values ±sqrt(3/2)
    assert adv[0, 2].item() == pytest.approx(1.0, abs=1e-5)
    assert adv[0, 2].item() != pytest.approx(math.sqrt(1.5), abs=1e-3)


def test_grpo_batch_scale_by_hand():
    adv = grpo_advantages(R, "batch", EPS)
    expected = torch.tensor(CENTERED, dtype=DT) / (math.sqrt(35.2) + EPS)
    torch.testing.assert_close(adv, expected, rtol=1e-12, atol=1e-14)


def test_grpo_no_scale_by_hand():
    torch.testing.assert_close(grpo_advantages(R, "none", EPS), torch.tensor(CENTERED, dtype=DT), rtol=0, atol=1e-14)


def test_grpo_random_against_numpy():
    rng = np.random.default_rng(0)
    r = rng.normal(size=(5, 8)) * rng.uniform(0.5, 3, size=(5, 1)) + rng.normal(size=(5, 1))
    c = r - r.mean(1, keepdims=True)
    t = torch.tensor(r)
    np.testing.assert_allclose(grpo_advantages(t, "group").numpy(), c / (r.std(1, ddof=1, keepdims=True) + EPS))
    np.testing.assert_allclose(grpo_advantages(t, "batch").numpy(), c / (r.std(ddof=1) + EPS))
    np.testing.assert_allclose(grpo_advantages(t, "none").numpy(), c)
    # every scale sums to 0 within each context
    for scale in ("group", "batch", "none"):
        np.testing.assert_allclose(grpo_advantages(t, scale).sum(1).numpy(), 0.0, atol=1e-12)


def test_grpo_bad_scale():
    with pytest.raises(ValueError, match="unknown scale"):
        grpo_advantages(R, "bogus")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown scale"):
        GRPOAdvantage("bogus")  # type: ignore[arg-type]


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_grpo_zero_variance_rows_are_exactly_zero(scale):
    r = torch.tensor([[2.0, 2.0, 2.0], [1.0, 2.0, 3.0], [5.0, 5.0, 5.0], [0.0, 1.0, 0.0]], dtype=DT)
    adv, metrics = GRPOAdvantage(scale)(r)
    assert torch.all(adv[0] == 0) and torch.all(adv[2] == 0)
    assert adv[1].abs().sum() > 0 and adv[3].abs().sum() > 0
    assert metrics["frac_zero_std"].item() == pytest.approx(0.5)
    # the non-zero rows equal the plain function
    torch.testing.assert_close(adv[[1, 3]], grpo_advantages(r, scale)[[1, 3]])


def test_grpo_near_constant_rows_within_tolerance_are_zero():
    r = torch.tensor([[1.0, 1.0 + 1e-9, 1.0], [0.0, 1.0, 2.0]], dtype=DT)
    adv, metrics = GRPOAdvantage("group")(r)
    assert torch.all(adv[0] == 0)
    assert metrics["frac_zero_std"].item() == pytest.approx(0.5)
    # without the mask the near-constant row would get (tiny, noise-driven) non-zero advantages
    assert grpo_advantages(r, "group")[0].abs().max() > 0
    # a looser tolerance counts more rows
    _, m = GRPOAdvantage("group", zero_tol=10.0)(r)
    assert m["frac_zero_std"].item() == 1.0


def test_grpo_advantage_is_stateless():
    est = GRPOAdvantage()
    assert est.state_dict() == {}
    est.load_state_dict({})
    with pytest.raises(ValueError, match="no state"):
        est.load_state_dict({"count": torch.zeros(1)})
    with pytest.raises(ValueError, match="no state"):
        RankAdvantage().load_state_dict({"mean": torch.zeros(1)})


# ============================================================================================
# rank_advantages / RankAdvantage
# ============================================================================================


def test_rank_by_hand_with_ties():
    # row 0: 3,1,3,2 -> ranks 2.5, 0, 2.5, 1 -> /3 − 1/2 = 1/3, −1/2, 1/3, −1/6
    # row 1: 0,4,4,4 -> ranks 0, 2, 2, 2     -> −1/2, 1/6, 1/6, 1/6
    r = torch.tensor([[3.0, 1.0, 3.0, 2.0], [0.0, 4.0, 4.0, 4.0]], dtype=DT)
    expected = torch.tensor([[1 / 3, -1 / 2, 1 / 3, -1 / 6], [-1 / 2, 1 / 6, 1 / 6, 1 / 6]], dtype=DT)
    torch.testing.assert_close(rank_advantages(r), expected, rtol=0, atol=1e-15)


def test_rank_without_ties_and_scale_invariance():
    r = torch.tensor([[10.0, -5.0, 1e6]], dtype=DT)  # ranks 1, 0, 2 -> 0, −1/2, 1/2
    torch.testing.assert_close(rank_advantages(r), torch.tensor([[0.0, -0.5, 0.5]], dtype=DT))
    torch.testing.assert_close(rank_advantages(3 * r + 7), rank_advantages(r))


def test_rank_against_scipy_rankdata():
    rng = np.random.default_rng(1)
    r = rng.integers(0, 4, size=(6, 7)).astype(float)  # many ties
    expected = (st.rankdata(r, axis=1, method="average") - 1) / (r.shape[1] - 1) - 0.5
    adv = rank_advantages(torch.tensor(r)).numpy()
    np.testing.assert_allclose(adv, expected, atol=1e-12)
    np.testing.assert_allclose(adv.sum(1), 0.0, atol=1e-12)
    assert adv.min() >= -0.5 and adv.max() <= 0.5


def test_rank_zero_variance_rows_exactly_zero():
    r = torch.tensor([[4.0, 4.0, 4.0, 4.0], [1.0, 2.0, 3.0, 4.0], [7.0, 7.0, 7.0, 7.0]], dtype=DT)
    adv, metrics = RankAdvantage()(r)
    assert torch.all(adv[0] == 0) and torch.all(adv[2] == 0)
    assert adv[1].abs().sum() > 0
    assert metrics["frac_zero_std"].item() == pytest.approx(2 / 3)


def test_rank_near_constant_rows_within_tolerance_are_zero():
    r = torch.tensor([[1.0, 1.0 + 1e-9, 1.0], [0.0, 1.0, 2.0]], dtype=DT)
    adv, metrics = RankAdvantage()(r)
    assert metrics["frac_zero_std"].item() == pytest.approx(0.5)  # counted as zero-variance ...
    assert torch.all(adv[0] == 0)  # ... so, as documented, it must get advantage exactly 0


# ============================================================================================
# input validation
# ============================================================================================


def _estimators():
    return [GRPOAdvantage("group"), GRPOAdvantage("none"), RankAdvantage(), PGRPOAdvantage(2, min_history=2)]


@pytest.mark.parametrize("est", _estimators(), ids=lambda e: type(e).__name__ + getattr(e, "scale", ""))
def test_bad_rewards_raise(est):
    gid = torch.tensor([0, 1])
    nan = torch.tensor([[1.0, 2.0], [3.0, float("nan")]], dtype=DT)
    with pytest.raises(ValueError, match=r"context 1, sample 1\] is nan"):
        est(nan, gid)
    inf = torch.tensor([[1.0, float("inf")], [3.0, 4.0]], dtype=DT)
    with pytest.raises(ValueError, match=r"context 0, sample 1\] is inf"):
        est(inf, gid)
    with pytest.raises(ValueError, match="G >= 2.*G=1"):
        est(torch.ones(2, 1, dtype=DT), gid)
    with pytest.raises(ValueError, match=r"shape \[B, G\]"):
        est(torch.ones(4, dtype=DT), gid)


def test_functions_validate_rewards():
    for fn in (grpo_advantages, rank_advantages):
        with pytest.raises(ValueError, match="nan"):
            fn(torch.tensor([[0.0, float("nan")]]))
        with pytest.raises(ValueError, match="G >= 2"):
            fn(torch.ones(3, 1))


def test_pgrpo_group_id_errors_and_state_untouched():
    est = PGRPOAdvantage(3, min_history=2)
    r = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=DT)
    with pytest.raises(ValueError, match="group id 3 outside 0..2"):
        est(r, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="group id -1 outside"):
        est(r, torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match="group_ids"):
        est(r)
    with pytest.raises(ValueError, match=r"group_ids must have shape \[2\]"):
        est(r, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="nan"):
        est(torch.tensor([[1.0, float("nan")], [3.0, 4.0]], dtype=DT), torch.tensor([0, 1]))
    # nothing was merged by the failed calls
    assert torch.all(est.count == 0) and torch.all(est.mean == 0) and torch.all(est.m2 == 0)


def test_pgrpo_bad_constructor_args():
    with pytest.raises(ValueError, match="n_groups"):
        PGRPOAdvantage(0)
    for decay in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="decay"):
            PGRPOAdvantage(2, decay=decay)
    with pytest.raises(ValueError, match="min_history"):
        PGRPOAdvantage(2, min_history=1)


# ============================================================================================
# P-GRPO
# ============================================================================================


def _random_batches(seed: int, n_batches: int, n_groups: int, g: int):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_batches):
        b = int(rng.integers(1, 7))
        gid = rng.integers(0, n_groups, size=b)
        # group-dependent reward levels and spreads
        r = rng.normal(size=(b, g)) * (1 + gid[:, None]) + 3.0 * gid[:, None]
        out.append((r, gid))
    return out


def test_pgrpo_hand_example_uses_statistics_from_before_the_batch():
    est = PGRPOAdvantage(1, min_history=2, eps=EPS)
    gid = torch.tensor([0])
    # batch 1: no history -> GRPO fallback: centered [-1, 1] / unbiased std sqrt(2)
    adv, m = est(torch.tensor([[1.0, 3.0]], dtype=DT), gid)
    torch.testing.assert_close(adv, torch.tensor([[-1.0, 1.0]], dtype=DT) / (math.sqrt(2) + EPS))
    assert m["frac_history"].item() == 0.0
    # history {1, 3}: n = 2, mean 2, population std 1
    assert (est.count.item(), est.mean.item(), est.std.item()) == pytest.approx((2.0, 2.0, 1.0))
    # batch 2: (r − 2) / (1 + eps), NOT the stats including {4, 0} (which are mean 2, std sqrt(2.5))
    adv, m = est(torch.tensor([[4.0, 0.0]], dtype=DT), gid)
    torch.testing.assert_close(adv, torch.tensor([[2.0, -2.0]], dtype=DT) / (1 + EPS))
    assert m["frac_history"].item() == 1.0
    # history {1, 3, 4, 0}: mean 2, population var (1 + 1 + 4 + 4) / 4 = 2.5
    assert (est.count.item(), est.mean.item(), est.std.item()) == pytest.approx((4.0, 2.0, math.sqrt(2.5)))
    # batch 3: a zero-variance group still gets a history signal: (5 − 2) / sqrt(2.5)
    adv, m = est(torch.tensor([[5.0, 5.0]], dtype=DT), gid)
    torch.testing.assert_close(adv, torch.full((1, 2), 3.0 / (math.sqrt(2.5) + EPS), dtype=DT))
    assert m["frac_zero_std"].item() == 1.0 and m["frac_history"].item() == 1.0
    # history {1, 3, 4, 0, 5, 5}: mean 3, population var (4 + 0 + 1 + 9 + 4 + 4) / 6 = 22 / 6
    assert est.mean.item() == pytest.approx(3.0)
    assert est.std.item() == pytest.approx(math.sqrt(22 / 6))


def test_pgrpo_fallback_until_min_history():
    est = PGRPOAdvantage(2, min_history=6)
    gid = torch.tensor([0, 1])
    r1 = torch.tensor([[0.0, 1.0, 5.0], [2.0, 2.0, 2.0]], dtype=DT)
    adv, m = est(r1, gid)
    expected = grpo_advantages(r1, "group")
    expected[1] = 0.0  # zero-variance row in the fallback
    torch.testing.assert_close(adv, expected)
    assert m["frac_history"].item() == 0.0 and m["frac_zero_std"].item() == 0.5
    # count 3 per group < 6: still fallback
    r2 = torch.tensor([[1.0, 2.0, 4.0], [9.0, 9.0, 3.0]], dtype=DT)
    adv, m = est(r2, gid)
    torch.testing.assert_close(adv, grpo_advantages(r2, "group"))
    assert m["frac_history"].item() == 0.0
    # now group 0 has 6 rewards but only group 0 is used for context 0; group 1 also has 6
    r3 = torch.tensor([[3.0, 1.0, 2.0], [0.0, 0.0, 1.0]], dtype=DT)
    h0 = np.array([0.0, 1.0, 5.0, 1.0, 2.0, 4.0])
    h1 = np.array([2.0, 2.0, 2.0, 9.0, 9.0, 3.0])
    adv, m = est(r3, gid)
    expected = torch.stack(
        [(r3[0] - h0.mean()) / (h0.std() + 1e-6), (r3[1] - h1.mean()) / (h1.std() + 1e-6)]
    )
    torch.testing.assert_close(adv, expected)
    assert m["frac_history"].item() == 1.0


def test_pgrpo_mixed_ready_and_fallback_in_one_batch():
    est = PGRPOAdvantage(2, min_history=4)
    est(torch.tensor([[0.0, 2.0], [1.0, 1.0]], dtype=DT), torch.tensor([0, 0]))  # group 0: 4 rewards
    r = torch.tensor([[3.0, 1.0], [5.0, 7.0]], dtype=DT)
    adv, m = est(r, torch.tensor([0, 1]))
    h0 = np.array([0.0, 2.0, 1.0, 1.0])  # mean 1, pop std sqrt(0.5)
    torch.testing.assert_close(adv[0], (r[0] - 1.0) / (math.sqrt(0.5) + 1e-6))
    torch.testing.assert_close(adv[1], grpo_advantages(r, "group")[1])
    assert h0.std() == pytest.approx(math.sqrt(0.5))
    assert m["frac_history"].item() == 0.5


def _check_sequence(decay: float, seed: int):
    n_groups, g, min_history = 3, 4, 8
    batches = _random_batches(seed, 12, n_groups, g)
    est = PGRPOAdvantage(n_groups, min_history=min_history, decay=decay)
    history: list[list[tuple[float, int]]] = [[] for _ in range(n_groups)]  # (reward, batch index)

    def stats(t: int):
        """numpy weighted stats with weight decay^(number of batches after the reward's batch) at time t."""
        n, mu, sd = np.zeros(n_groups), np.zeros(n_groups), np.zeros(n_groups)
        for p in range(n_groups):
            if not history[p]:
                continue
            vals = np.array([v for v, _ in history[p]])
            w = np.array([decay ** (t - 1 - k) for _, k in history[p]])
            n[p] = w.sum()
            mu[p] = np.average(vals, weights=w)
            sd[p] = math.sqrt(np.average((vals - mu[p]) ** 2, weights=w))
            if decay == 1.0:  # the unweighted statistics of the concatenated history
                assert mu[p] == pytest.approx(vals.mean(), rel=1e-12, abs=1e-12)
                assert sd[p] == pytest.approx(vals.std(ddof=0), rel=1e-12)
        return n, mu, sd

    for t, (r, gid) in enumerate(batches):
        n, mu, sd = stats(t)
        rt = torch.tensor(r)
        adv, metrics = est(rt, torch.tensor(gid))
        # advantages use the statistics from before this batch
        expected = grpo_advantages(rt, "group").numpy()
        ready = n[gid] >= min_history
        expected[ready] = (r[ready] - mu[gid[ready], None]) / (sd[gid[ready], None] + 1e-6)
        np.testing.assert_allclose(adv.numpy(), expected, rtol=1e-9, atol=1e-12)
        assert metrics["frac_history"].item() == pytest.approx(ready.mean())
        for b, p in enumerate(gid):
            history[p].extend((float(v), t) for v in r[b])
        n, mu, sd = stats(t + 1)
        np.testing.assert_allclose(est.count.numpy(), n, rtol=1e-12)
        np.testing.assert_allclose(est.mean.numpy(), mu, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(est.std.numpy(), sd, rtol=1e-10, atol=1e-12)
    assert all(len(h) > min_history for h in history)  # the test exercised the history branch
    return est


def test_pgrpo_statistics_match_numpy_no_decay():
    est = _check_sequence(1.0, seed=2)
    assert est.count.sum().item() == pytest.approx(sum(r.size for r, _ in _random_batches(2, 12, 3, 4)))


def test_pgrpo_statistics_match_numpy_with_decay():
    _check_sequence(0.8, seed=3)


def test_pgrpo_decay_weights_by_hand():
    # γ = 0.5; batch 1 {0, 2}, batch 2 {4, 4}: weights 0.5, 0.5, 1, 1
    est = PGRPOAdvantage(2, min_history=2, decay=0.5)
    est(torch.tensor([[0.0, 2.0]], dtype=DT), torch.tensor([0]))
    est(torch.tensor([[4.0, 4.0]], dtype=DT), torch.tensor([0]))
    mean = (0.5 * 0 + 0.5 * 2 + 4 + 4) / 3.0  # = 3
    var = (0.5 * 9 + 0.5 * 1 + 1 + 1) / 3.0  # = 7 / 3
    assert est.count[0].item() == pytest.approx(3.0)
    assert est.mean[0].item() == pytest.approx(mean)
    assert est.std[0].item() == pytest.approx(math.sqrt(var))
    # group 1 never seen: zeros
    assert est.count[1].item() == 0 and est.std[1].item() == 0 and est.mean[1].item() == 0
    # a batch without group 0 still ages its history: n -> 1.5, mean and std unchanged
    est(torch.tensor([[1.0, 2.0]], dtype=DT), torch.tensor([1]))
    assert est.count[0].item() == pytest.approx(1.5)
    assert est.mean[0].item() == pytest.approx(mean)
    assert est.std[0].item() == pytest.approx(math.sqrt(var))


def test_pgrpo_state_dict_round_trip():
    batches = _random_batches(4, 6, 3, 4)
    est = PGRPOAdvantage(3, min_history=4, decay=0.9)
    for r, gid in batches[:5]:
        est(torch.tensor(r), torch.tensor(gid))
    state = est.state_dict()
    assert set(state) == {"count", "mean", "m2"}
    # the state is a copy, not a view of the live buffers
    state_copy = {k: v.clone() for k, v in state.items()}
    est2 = PGRPOAdvantage(3, min_history=4, decay=0.9)
    est2.load_state_dict(state)
    r, gid = batches[5]
    a1, m1 = est(torch.tensor(r), torch.tensor(gid))
    for k in state:
        torch.testing.assert_close(state[k], state_copy[k], rtol=0, atol=0)
    a2, m2 = est2(torch.tensor(r), torch.tensor(gid))
    torch.testing.assert_close(a1, a2, rtol=0, atol=0)
    assert m1["frac_history"].item() == m2["frac_history"].item() > 0
    for k in ("count", "mean", "m2"):
        torch.testing.assert_close(getattr(est, k), getattr(est2, k), rtol=0, atol=0)
    # float32 state is accepted and stored as float64
    est3 = PGRPOAdvantage(3)
    est3.load_state_dict({k: v.float() for k, v in state.items()})
    assert est3.count.dtype == torch.float64


def test_pgrpo_load_state_dict_errors():
    est = PGRPOAdvantage(3)
    good = est.state_dict()
    with pytest.raises(ValueError, match=r"'mean' has shape \(4,\), expected \(3,\)"):
        est.load_state_dict({**good, "mean": torch.zeros(4)})
    with pytest.raises(ValueError, match="'m2' has shape"):
        est.load_state_dict({**good, "m2": torch.zeros(3, 1)})
    with pytest.raises(ValueError, match="missing 'count'"):
        est.load_state_dict({"mean": torch.zeros(3), "m2": torch.zeros(3)})


# ============================================================================================
# make_advantage
# ============================================================================================


def test_make_advantage_by_name():
    assert ADVANTAGES == ("grpo", "dr_grpo", "rank", "pgrpo")
    grpo = make_advantage("grpo", scale="batch", eps=1e-3)
    assert isinstance(grpo, GRPOAdvantage) and grpo.scale == "batch" and grpo.eps == 1e-3
    dr = make_advantage("dr_grpo", scale="group")
    assert isinstance(dr, GRPOAdvantage) and dr.scale == "none"
    adv, _ = dr(R)
    torch.testing.assert_close(adv, torch.tensor(CENTERED, dtype=DT))
    assert isinstance(make_advantage("rank"), RankAdvantage)
    pg = make_advantage("pgrpo", n_groups=5, min_history=10, decay=0.7)
    assert isinstance(pg, PGRPOAdvantage)
    assert (pg.n_groups, pg.min_history, pg.decay) == (5, 10, 0.7)
    assert pg.count.shape == (5,)


def test_make_advantage_unknown_name():
    with pytest.raises(ValueError, match="unknown advantage 'ppo'"):
        make_advantage("ppo")
