"""The decision service's throughput paths give what one request alone gets: single decisions drawn
together in one event-loop turn (micro-batching), the pipelined group commit of the decision log
(several writer threads, fsync outside the file lock), the flusher's Arrow tables."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import hashlib
import json
import threading
import time
from pathlib import Path

import duckdb
import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
pytestmark = pytest.mark.serve

from grpokit.policy import CategoricalHead, MLPTorso, Policy  # noqa: E402
from grpokit.policy.deployed import DeployedPolicy  # noqa: E402
from grpokit.policy.io import save_policy  # noqa: E402
from grpokit.serve.app import ServeState  # noqa: E402
from grpokit.serve.config import ServeConfig  # noqa: E402
from grpokit.serve.decision_log import DecisionLog, n_rows  # noqa: E402
from grpokit.serve.requests import ApiError  # noqa: E402

FIELDS = ["a", "b", "c"]
ACTIONS = ["none", "small", "big", "ship"]


@pytest.fixture
def policy_file(tmp_path) -> Path:
    torch.manual_seed(0)
    p = Policy(MLPTorso(3, [8]), CategoricalHead(4))
    with torch.no_grad():
        p.out.bias.copy_(torch.tensor([1.5, 0.0, -1.0, 0.3]))
    path = tmp_path / "p.pt"
    save_policy(p, path, {"feature_names": FIELDS, "action_labels": ACTIONS})
    return path


def _state(tmp_path, policy_file, **kw) -> ServeState:
    st = ServeState(ServeConfig(store=str(tmp_path / "s.duckdb"), log={"flush_interval_s": 0.2}, **kw), policy_file)
    st.startup()
    return st


def _expected(dp: DeployedPolicy, ctx: dict, eid: str, seed: int = 0, eps: float = 0.05) -> tuple[int, float]:
    """The action and propensity of event ``eid`` by hand: q = (1 - eps) pi + eps / A, first a with cdf > u."""
    q = (1 - eps) * dp.probabilities([ctx])[0] + eps / len(ACTIONS)
    h = int.from_bytes(hashlib.blake2b(f"{seed}\x00{eid}".encode(), digest_size=8).digest(), "big")
    u = (h >> 11) / 2.0**53
    a = int(np.argmax(np.cumsum(q) > u))
    return a, float(q[a])


def _contexts(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [dict(zip(FIELDS, map(float, r))) for r in rng.normal(0, 2, (n, 3))]


def _count_submissions(state: ServeState) -> list[int]:
    sizes: list[int] = []
    submit = state.log.submit

    def counted(records):
        sizes.append(n_rows(records))
        return submit(records)

    state.log.submit = counted
    return sizes


def test_concurrent_single_decisions_are_drawn_together_and_each_is_its_own(tmp_path, policy_file):
    st = _state(tmp_path, policy_file)
    dp = DeployedPolicy.load(policy_file)
    ctxs = _contexts(40)
    sizes = _count_submissions(st)

    async def go():
        return await asyncio.gather(*[st.decide({"context": c, "event_id": f"m{k}", "probabilities": k % 2 == 0})
                                      for k, c in enumerate(ctxs)])

    try:
        answers = asyncio.run(go())
    finally:
        st.shutdown()
    assert sizes == [40]  # one group: one forward pass, one log submission, one group commit
    for k, (c, d) in enumerate(zip(ctxs, answers)):
        a, prop = _expected(dp, c, f"m{k}")
        assert d["event_id"] == f"m{k}" and d["action_code"] == a and d["action"] == ACTIONS[a]
        assert d["propensity"] == pytest.approx(prop, rel=1e-6)
        assert ("probabilities" in d) == (k % 2 == 0) and "replayed" not in d
    con = duckdb.connect(str(tmp_path / "s.duckdb"), read_only=True)
    logged = dict(con.execute("SELECT event_id, propensity FROM decisions").fetchall())
    ts = con.execute("SELECT count(DISTINCT ts) FROM decisions").fetchone()[0]
    con.close()
    assert logged == {d["event_id"]: d["propensity"] for d in answers}  # logged = answered, exactly
    assert ts == 40  # each decision keeps its own arrival time


def test_requests_arriving_over_the_next_turns_join_the_group_and_the_gathering_is_bounded(tmp_path, policy_file):
    st = _state(tmp_path, policy_file)
    ctxs = _contexts(30)
    sizes = _count_submissions(st)
    turns = ServeState._GATHER_TURNS

    async def staggered(k0: int, n_turns: int):
        """one new request per event-loop turn for ``n_turns`` turns (as bytes arriving under load)"""
        tasks = []
        for k in range(n_turns):
            tasks.append(asyncio.ensure_future(st.decide({"context": ctxs[k0 + k], "event_id": f"s{k0 + k}"})))
            await asyncio.sleep(0)
        return await asyncio.gather(*tasks)

    async def lone():
        return await st.decide({"context": ctxs[29], "event_id": "alone"})

    try:
        a = asyncio.run(staggered(0, 3))  # arrivals in 3 consecutive turns: one group
        b = asyncio.run(staggered(10, 2 * turns + 2))  # a stream longer than the bound: more than one group
        c = asyncio.run(lone())
    finally:
        st.shutdown()
    assert len(a) == 3 and sizes[0] == 3
    assert sum(sizes[1:-1]) == 2 * turns + 2 and len(sizes[1:-1]) >= 2 and max(sizes[1:-1]) <= turns + 1
    assert sizes[-1] == 1 and c["event_id"] == "alone"
    assert [d["event_id"] for d in a + b] == [f"s{k}" for k in range(3)] + [f"s{k}" for k in range(10, 12 + 2 * turns)]


def test_a_bad_context_in_a_group_fails_only_its_own_request(tmp_path, policy_file):
    st = _state(tmp_path, policy_file)
    good = _contexts(5)
    bodies = [{"context": c, "event_id": f"g{k}"} for k, c in enumerate(good)]
    bodies.insert(2, {"context": {"a": 1.0, "b": "x", "c": 0.0}, "event_id": "bad"})
    bodies.insert(4, {"context": {"a": 1.0, "c": 0.0}, "event_id": "missing"})

    async def go():
        return await asyncio.gather(*[st.decide(b) for b in bodies], return_exceptions=True)

    try:
        out = asyncio.run(go())
        errors = {b["event_id"]: r for b, r in zip(bodies, out) if isinstance(r, Exception)}
        assert set(errors) == {"bad", "missing"}
        assert all(isinstance(e, ApiError) and e.status == 422 for e in errors.values())
        assert errors["bad"].loc == ["context", "b"] and errors["missing"].loc == ["context", "b"]
        assert "context.b" in errors["bad"].body()["error"]
        assert [r["event_id"] for r in out if not isinstance(r, Exception)] == [f"g{k}" for k in range(5)]
        # the refused ids were not decided: a corrected retry is a new decision, not a replay
        d = asyncio.run(st.decide({"context": good[0], "event_id": "bad"}))
        assert "replayed" not in d and d["action_code"] == _expected(DeployedPolicy.load(policy_file), good[0], "bad")[0]
    finally:
        st.shutdown()


def test_concurrent_duplicates_of_a_new_event_id_draw_once(tmp_path, policy_file):
    st = _state(tmp_path, policy_file)
    ctx = _contexts(1)[0]

    async def go():
        return await asyncio.gather(*[st.decide({"context": ctx, "event_id": "dup"}) for _ in range(5)])

    try:
        out = asyncio.run(go())
    finally:
        st.shutdown()
    assert sum("replayed" not in d for d in out) == 1 and sum(d.get("replayed", False) for d in out) == 4
    assert len({(d["action_code"], d["propensity"]) for d in out}) == 1
    con = duckdb.connect(str(tmp_path / "s.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM decisions WHERE event_id = 'dup'").fetchone()[0] == 1
    con.close()


def test_a_failed_group_commit_answers_503_and_decides_nothing(tmp_path, policy_file):
    st = _state(tmp_path, policy_file)

    def failing(records):
        fut: cf.Future = cf.Future()
        threading.Timer(0.01, fut.set_exception, [OSError(28, "No space left on device")]).start()
        return fut

    ctxs = _contexts(3)
    real = st.log.submit
    st.log.submit = failing
    try:
        async def go():
            return await asyncio.gather(*[st.decide({"context": c, "event_id": f"f{k}"}) for k, c in enumerate(ctxs)],
                                        return_exceptions=True)

        out = asyncio.run(go())
        assert all(isinstance(e, ApiError) and e.status == 503 and "No space left" in e.message for e in out)
        assert not any(f"f{k}" in st.index for k in range(3))
        st.log.submit = real
        d = asyncio.run(st.decide({"context": ctxs[0], "event_id": "f0"}))
        assert "replayed" not in d  # nothing was decided the first time
    finally:
        st.log.submit = real
        st.shutdown()


# ---------------------------------------------------------------------------------- the decision log


def _decision(eid: str, ctx: dict | None = None) -> dict:
    return {"k": "d", "event_id": eid, "ts": time.time(), "policy_version": "v", "arm": "live",
            "context": ctx or {"a": 1.0}, "action_code": 0, "action_label": "none", "propensity": 0.5,
            "probabilities": [0.5, 0.5], "deferred": False}


@pytest.mark.parametrize("writers", [1, 3])
def test_pipelined_writers_acknowledge_every_record_once_across_rotations(tmp_path, writers):
    store, wal = tmp_path / "s.duckdb", tmp_path / "wal"
    # tiny segments and a fast flusher: rotations and moves happen while fsyncs are running
    log = DecisionLog(store, wal, flush_interval_s=0.05, poll_interval_s=0.05, segment_max_bytes=4096,
                      group_commit_ms=0, writers=writers)
    log.recover()
    log.start()
    futs: list = []

    def client(c: int):
        for k in range(150):  # closed loop: small groups, so the 4 KB segments rotate under running fsyncs
            futs.append(log.submit([_decision(f"c{c}-{k}")]))
            futs[-1].result(timeout=30)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for f in futs:
        f.result(timeout=30)
    assert log.acked == 600 and log.queued == 0
    log.stop()
    assert list(wal.glob("seg-*.wal")) == []  # a clean stop moves everything into DuckDB
    con = duckdb.connect(str(store), read_only=True)
    n, nd = con.execute("SELECT count(*), count(DISTINCT event_id) FROM decisions").fetchone()
    segs = con.execute("SELECT count(*), sum(n_records) FROM serve_segments").fetchone()
    con.close()
    assert (n, nd) == (600, 600)
    assert segs[0] > 5 and segs[1] == 600  # many segments, each record in exactly one


def test_flushed_rows_keep_the_record_values(tmp_path):
    store, wal = tmp_path / "s.duckdb", tmp_path / "wal"
    log = DecisionLog(store, wal, flush_interval_s=3600)
    log.recover()
    log.start()
    ts = 1764700000.123456
    recs = [dict(_decision("x1", {"a": 0.1, "b": "n"}), ts=ts, unit_id="u1", cohort="c", action_value=None),
            dict(_decision("x1", {"a": 9.0}), ts=ts + 1),  # a duplicate id in the same flush: the first is kept
            dict(_decision("x2"), action_code=None, action_label=None, action_value=json.dumps([0.2, 0.8]),
                 probabilities=None, propensity=1.7),
            {"k": "r", "reward_id": "r1", "event_id": "x1", "received_at": ts + 2, "value": 1.5,
             "components": {"click": 1.0}, "late": False, "duplicate": False, "counted": True},
            {"k": "a", "event_id": "x2", "activated_at": ts + 3}]
    log.submit(recs).result(timeout=10)
    log.stop()
    con = duckdb.connect(str(store), read_only=True)
    d = con.execute("SELECT event_id, epoch_us(ts), unit_id, cohort, context, action_code, action_value, propensity, "
                    "probabilities, deferred FROM decisions ORDER BY event_id").fetchall()
    r = con.execute("SELECT reward_id, event_id, epoch_us(received_at), value, components, counted FROM rewards").fetchall()
    a = con.execute("SELECT event_id, epoch_us(activated_at) FROM activations").fetchall()
    con.close()
    us = int(np.floor(ts * 1e6))
    assert d[0] == ("x1", us, "u1", "c", '{"a":0.1,"b":"n"}', 0, None, 0.5, "[0.5,0.5]", False)
    assert d[1][0] == "x2" and d[1][5] is None and json.loads(d[1][6]) == [0.2, 0.8] and d[1][7] == 1.7
    assert r == [("r1", "x1", int(np.floor((ts + 2) * 1e6)), 1.5, '{"click":1.0}', True)]
    assert a == [("x2", int(np.floor((ts + 3) * 1e6)))]


def test_columnar_blocks_and_row_records_flush_to_the_same_rows(tmp_path):
    store, wal = tmp_path / "s.duckdb", tmp_path / "wal"
    log = DecisionLog(store, wal, flush_interval_s=3600)
    log.recover()
    log.start()
    block = {"k": "D", "n": 3, "event_id": ["b0", "b1", "b2"], "ts": 1764700000.5, "policy_version": "v2",
             "arm": ["live", "candidate", "live"], "unit_id": ["u0", None, "u2"], "cohort": None,
             "context": [{"a": 0.0}, {"a": 1.0}, {"a": 2.0}], "action_code": [1, 0, 1],
             "action_label": ["small", "none", "small"], "action_value": None, "propensity": [0.2, 0.3, 0.4],
             "probabilities": [[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]], "epsilon": 0.05, "mode": "sample",
             "deferred": [False, True, False], "shadow_version": "v3", "shadow_action_code": [0, 0, 1],
             "shadow_propensity": [0.5, 0.6, 0.7]}
    again = {**block, **{k: v[:1] for k, v in block.items() if isinstance(v, list)}, "n": 1}  # b0 once more
    fut = log.submit([block, _decision("r0"), again])
    fut.result(timeout=10)
    assert log.acked == 5  # rows, not records: the block counts its n
    log.stop()
    con = duckdb.connect(str(store), read_only=True)
    got = con.execute("SELECT event_id, policy_version, arm, unit_id, cohort, context, action_code, propensity, "
                      "probabilities, epsilon, deferred, shadow_version, shadow_action_code, shadow_propensity "
                      "FROM decisions ORDER BY event_id").fetchall()
    n_seg = con.execute("SELECT sum(n_records) FROM serve_segments").fetchone()[0]
    con.close()
    assert got == [
        ("b0", "v2", "live", "u0", None, '{"a":0.0}', 1, 0.2, "[0.8,0.2]", 0.05, False, "v3", 0, 0.5),
        ("b1", "v2", "candidate", None, None, '{"a":1.0}', 0, 0.3, "[0.3,0.7]", 0.05, True, "v3", 0, 0.6),
        ("b2", "v2", "live", "u2", None, '{"a":2.0}', 1, 0.4, "[0.6,0.4]", 0.05, False, "v3", 1, 0.7),
        ("r0", "v", "live", None, None, '{"a":1.0}', 0, 0.5, "[0.5,0.5]", None, False, None, None, None)]
    assert n_seg == 5


def test_an_unexpected_error_on_one_row_fails_only_its_own_request(tmp_path, policy_file):
    st = _state(tmp_path, policy_file)
    dp = st.policies.current
    real = dp.decide

    def fragile(rows, **kw):
        if any(r.get("a") == 999.0 for r in rows):
            raise RuntimeError("boom on the marked row")
        return real(rows, **kw)

    dp.decide = fragile
    ctxs = _contexts(4)
    ctxs[1] = {"a": 999.0, "b": 0.0, "c": 0.0}

    async def go():
        return await asyncio.gather(*[st.decide({"context": c, "event_id": f"u{k}"}) for k, c in enumerate(ctxs)],
                                    return_exceptions=True)

    try:
        out = asyncio.run(go())
    finally:
        dp.decide = real
        st.shutdown()
    assert isinstance(out[1], RuntimeError) and "u1" not in st.index
    assert [d["event_id"] for k, d in enumerate(out) if k != 1] == ["u0", "u2", "u3"]
