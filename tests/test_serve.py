"""The decision service through the real app (FastAPI TestClient): decisions, propensities, rewards,
bad input, auth, versions, rollout, the write-ahead log."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytestmark = pytest.mark.serve

from fastapi.testclient import TestClient  # noqa: E402

from grpokit.policy import CategoricalHead, MLPTorso, Policy  # noqa: E402
from grpokit.policy.io import save_policy  # noqa: E402
from grpokit.serve import Client, ServeError  # noqa: E402
from grpokit.serve.app import create_app  # noqa: E402
from grpokit.serve.auth import AuthError, Tokens, check_bind  # noqa: E402
from grpokit.serve.config import ServeConfig  # noqa: E402
from grpokit.serve.decision_log import DecisionLog, read_segment  # noqa: E402
from grpokit.serve.export import served_frame  # noqa: E402

FIELDS = ["a", "b", "c"]
ACTIONS = ["none", "small", "big", "ship"]
CTX = {"a": 0.5, "b": -1.0, "c": 2.0}


def make_policy(path: Path, seed: int = 0, bias=(1.5, 0.0, -1.0, 0.3)) -> Path:
    torch.manual_seed(seed)
    p = Policy(MLPTorso(3, [8]), CategoricalHead(4))
    with torch.no_grad():
        last = [m for m in p.modules() if isinstance(m, torch.nn.Linear)][-1]
        last.bias.copy_(torch.tensor(bias))
    save_policy(p, path, {"feature_names": FIELDS, "action_labels": ACTIONS})
    return path


def pi_by_hand(path: Path, ctx: dict) -> np.ndarray:
    """pi(a | x) from the saved weights: softmax of the MLP's logits, computed here with numpy."""
    sd = torch.load(path, weights_only=True)["state_dict"]
    ws = [(k, v.double().numpy()) for k, v in sd.items()]
    lin = [v for k, v in ws if k.endswith("weight")]
    bias = [v for k, v in ws if k.endswith("bias")]
    h = np.array([ctx[f] for f in FIELDS], dtype=np.float64)
    for i, (w, b) in enumerate(zip(lin, bias)):
        h = w @ h + b
        if i < len(lin) - 1:
            h = np.tanh(h)
    z = np.exp(h - h.max())
    return z / z.sum()


def uniform_by_hand(seed: int, event_id: str) -> float:
    h = int.from_bytes(hashlib.blake2b(f"{seed}\x00{event_id}".encode(), digest_size=8).digest(), "big")
    return (h >> 11) / 2.0**53


@pytest.fixture
def policy_file(tmp_path):
    return make_policy(tmp_path / "p1.pt")


def cfg(tmp_path, **kw) -> ServeConfig:
    kw.setdefault("store", str(tmp_path / "s.duckdb"))
    kw.setdefault("log", {"flush_interval_s": 0.2})
    return ServeConfig(**kw)


def rows(store, sql):
    con = duckdb.connect(str(store), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


# ---------------------------------------------------------------------------------- decisions


def test_propensity_is_the_served_distribution_by_hand(tmp_path, policy_file):
    eps = 0.2
    app = create_app(cfg(tmp_path, epsilon=eps, seed=7), policy_file)
    pi = pi_by_hand(policy_file, CTX)
    q = (1 - eps) * pi + eps / 4
    with TestClient(app) as http:
        c = Client(http=http)
        for k in range(30):
            d = c.decide(CTX, event_id=f"e{k}", probabilities=True)
            np.testing.assert_allclose(d["probabilities"], q, rtol=1e-5)
            u = uniform_by_hand(7, f"e{k}")
            expected = int(np.argmax(np.cumsum(q) > u))
            assert d["action_code"] == expected and d["action"] == ACTIONS[expected]
            assert d["propensity"] == pytest.approx(q[expected], rel=1e-5)
            assert d["arm"] == "live" and d["policy_version"].startswith("sha256:")
        # the draws follow q: 2000 decisions of one context
        ds = c.decide_batch([CTX] * 2000)
        freq = np.bincount([d["action_code"] for d in ds], minlength=4) / 2000
        se = np.sqrt(q * (1 - q) / 2000)
        assert np.all(np.abs(freq - q) < 4 * se), (freq, q)
    # the logged propensity is the answered one
    logged = dict(rows(tmp_path / "s.duckdb", "SELECT event_id, propensity FROM decisions WHERE regexp_matches(event_id, '^e[0-9]+$')"))
    assert len(logged) == 30
    assert logged["e3"] == pytest.approx(q[int(np.argmax(np.cumsum(q) > uniform_by_hand(7, "e3")))], rel=1e-5)


def test_greedy_mode_mixes_the_argmax_with_uniform(tmp_path, policy_file):
    app = create_app(cfg(tmp_path, epsilon=0.1, mode="greedy"), policy_file)
    pi = pi_by_hand(policy_file, CTX)
    q = np.full(4, 0.1 / 4)
    q[np.argmax(pi)] += 0.9
    with TestClient(app) as http:
        d = Client(http=http).decide(CTX, probabilities=True)
        np.testing.assert_allclose(d["probabilities"], q, rtol=1e-6)
        assert d["propensity"] == pytest.approx(q[d["action_code"]])
        assert http.get("/v1/policy").json()["log_supports_evaluation"] is True
    app = create_app(cfg(tmp_path, store=str(tmp_path / "s2.duckdb"), epsilon=0.0, mode="greedy"), policy_file)
    with TestClient(app) as http:
        info = http.get("/v1/policy").json()
        assert info["log_supports_evaluation"] is False and "cannot evaluate other policies" in info["warning"]


def test_round_trip_idempotent_ids_and_restart(tmp_path, policy_file):
    config = cfg(tmp_path)
    with TestClient(create_app(config, policy_file)) as http:
        c = Client(http=http)
        d1 = c.decide(CTX, event_id="order-1", unit_id="u1", cohort="north")
        d2 = c.decide({"a": 9.0, "b": 9.0, "c": 9.0}, event_id="order-1")  # a retry: same answer, no new draw
        assert d2["replayed"] is True
        assert {k: d2[k] for k in d1} == d1
        batch = c.decide_batch([CTX, CTX, CTX], event_ids=["x", "x", "order-1"])
        assert batch[0]["event_id"] == batch[1]["event_id"] == "x" and batch[1]["replayed"]
        assert batch[2]["action_code"] == d1["action_code"]
        r = c.reward("order-1", 3.5)
        assert r["counted"] and not r["duplicate"] and not r["late"]
    # restart on the same store: the event is still known, the retry still answers the stored decision
    with TestClient(create_app(config)) as http:
        c = Client(http=http)
        d3 = c.decide(CTX, event_id="order-1")
        assert d3["action_code"] == d1["action_code"] and d3["replayed"]
        assert c.reward("order-1", 1.0)["duplicate"] is True
    assert rows(tmp_path / "s.duckdb", "SELECT count(*), count(DISTINCT event_id) FROM decisions") == [(2, 2)]
    frame, info = served_frame(tmp_path / "s.duckdb")
    assert info["rows"] == 1 and info["duplicate_rewards_ignored"] == 1
    row = frame.iloc[0]
    assert row["decision_id"] == "order-1" and row["reward"] == 3.5 and row["group"] == "north"
    assert row["action"] == d1["action_code"] and row["pscore"] == pytest.approx(d1["propensity"])
    assert row["unit_id"] == "u1" and row["policy_version"] == d1["policy_version"]


def test_reward_aggregation_first_and_sum_and_concurrent_duplicates(tmp_path, policy_file):
    config = cfg(tmp_path)
    with TestClient(create_app(config, policy_file)) as http:
        c = Client(http=http)
        eid = c.decide(CTX)["event_id"]
        state = http.app.state.serve

        async def many():
            return await asyncio.gather(*[state.rewards([(eid, 1.0 + k, None)]) for k in range(25)])

        results = http.portal.call(many)
        counted = [r[0] for r in results if r[0]["counted"]]
        assert len(counted) == 1 and sum(r[0]["duplicate"] for r in results) == 24
        comp = c.reward(c.decide(CTX, event_id="comp")["event_id"], components={"revenue": 10.0, "cost": -4.0})
        assert comp["value"] == 6.0
    frame, info = served_frame(tmp_path / "s.duckdb")
    assert frame.set_index("decision_id").loc[eid, "reward"] == counted[0]["value"]
    assert info["duplicate_rewards_ignored"] == 24

    summed = cfg(tmp_path, store=str(tmp_path / "sum.duckdb"), reward={"aggregation": "sum", "weights": {"cost": 2.0}})
    with TestClient(create_app(summed, policy_file)) as http:
        c = Client(http=http)
        eid = c.decide(CTX)["event_id"]
        assert all(c.reward(eid, v)["counted"] for v in (1.0, 2.0, 4.0))
        assert c.reward(c.decide(CTX, event_id="w")["event_id"], components={"revenue": 10.0, "cost": -4.0})["value"] == 2.0
    frame, _ = served_frame(tmp_path / "sum.duckdb", summed.reward)
    assert frame.set_index("decision_id").loc[eid, "reward"] == 7.0


def test_reward_window_default_and_late(tmp_path, policy_file):
    config = cfg(tmp_path, reward={"window_s": 0.4, "default": -1.0})
    with TestClient(create_app(config, policy_file)) as http:
        c = Client(http=http)
        on_time = c.decide(CTX)["event_id"]
        late = c.decide(CTX)["event_id"]
        silent = c.decide(CTX)["event_id"]
        assert c.reward(on_time, 5.0)["counted"]
        time.sleep(0.5)
        r = c.reward(late, 9.0)
        assert r["late"] and not r["counted"] and r["outcome"] == "late"
        pending = c.decide(CTX)["event_id"]
        at = pd.Timestamp.now(tz="UTC").tz_localize(None)  # the export's clock: the pending window is open
    frame, info = served_frame(tmp_path / "s.duckdb", config.reward, now=at)
    got = frame.set_index("decision_id")
    assert got.loc[on_time, "reward"] == 5.0 and got.loc[on_time, "reward_source"] == "observed"
    assert got.loc[late, "reward"] == -1.0 and got.loc[late, "reward_source"] == "default"  # late one excluded
    assert got.loc[silent, "reward"] == -1.0
    assert pending not in got.index and info["left_out_pending"] == 1 and info["late_rewards_ignored"] == 1
    late_rows = rows(tmp_path / "s.duckdb", f"SELECT late, counted, value FROM rewards WHERE event_id = '{late}'")
    assert late_rows == [(True, False, 9.0)]  # stored, flagged, not counted
    # without a default, a closed window without reward is left out
    _, info = served_frame(tmp_path / "s.duckdb", config.reward.model_copy(update={"default": None}), now=at)
    assert info["rows"] == 1 and info["left_out_no_reward"] == 2


def test_deferred_activation(tmp_path, policy_file):
    with TestClient(create_app(cfg(tmp_path), policy_file)) as http:
        c = Client(http=http)
        d = c.decide(CTX, defer_activation=True)
        assert d["deferred"] is True
        r = c.reward(d["event_id"], 1.0)
        assert not r["counted"] and r["outcome"] == "not_activated"
        assert c.activate(d["event_id"])["already"] is False
        assert c.activate(d["event_id"])["already"] is True
        assert c.reward(d["event_id"], 2.0)["counted"]
        never = c.decide(CTX, defer_activation=True)["event_id"]
        c.reward(never, 1.0)
    frame, info = served_frame(tmp_path / "s.duckdb")
    assert list(frame["decision_id"]) == [d["event_id"]] and frame["reward"][0] == 2.0
    assert info["left_out_not_activated"] == 1


# ---------------------------------------------------------------------------------- bad input


BAD = [
    ({"context": {"a": 1, "b": 2}}, 422, "context.c", "missing"),
    ({"context": {"a": 1, "b": 2, "c": 3, "zz": 1}}, 422, "zz", "unknown"),
    ({"context": {"a": "x", "b": 2, "c": 3}}, 422, "context.a", "number"),
    ({"context": {"a": None, "b": 2, "c": 3}}, 422, "context.a", "missing"),
    ({"context": [1, 2, 3]}, 422, "context", "object"),
    ({"ctx": {}}, 422, "ctx", "unknown key"),
    ({}, 422, "context", "required"),
    ({"batch": []}, 422, "batch", "empty"),
    ({"batch": [{"context": {"a": 1, "b": 2, "c": 3}}, {"context": {"a": 1, "b": True, "c": 3}}]}, 422,
     "batch[1].context.b", "number"),
    ({"batch": {"context": {}}}, 422, "batch", "list"),
    ({"context": CTX, "event_id": 1.5}, 422, "event_id", "string"),
    ({"context": CTX, "event_id": "x" * 300}, 422, "event_id", "characters"),
    ({"context": CTX, "probabilities": "yes"}, 422, "probabilities", "true or false"),
    ({"batch": [{"context": CTX}] * 6}, 413, "batch has 6", "max_batch"),
]


@pytest.mark.parametrize("body,status,where,what", BAD)
def test_bad_decide_bodies(tmp_path, policy_file, body, status, where, what):
    config = cfg(tmp_path, limits={"max_batch": 5, "max_body_bytes": 4096})
    with TestClient(create_app(config, policy_file)) as http:
        r = http.post("/v1/decide", json=body)
        assert r.status_code == status, r.text
        err = r.json()["error"]
        assert where in err and what in err, err
        assert http.post("/v1/decide", json={"context": CTX}).status_code == 200  # still serving


def test_bad_raw_bodies_and_rewards(tmp_path, policy_file):
    config = cfg(tmp_path, limits={"max_batch": 5, "max_body_bytes": 4096})
    with TestClient(create_app(config, policy_file)) as http:
        post = lambda path, data: http.post(path, content=data, headers={"content-type": "application/json"})  # noqa: E731
        for token in ("NaN", "Infinity", "-Infinity"):
            r = post("/v1/decide", '{"context": {"a": %s, "b": 1, "c": 2}}' % token)
            assert r.status_code == 422 and "context.a" in r.json()["error"] and "finite" in r.json()["error"]
        r = post("/v1/decide", '{"context": {"a": 1,')
        assert r.status_code == 422 and "malformed JSON" in r.json()["error"]
        r = post("/v1/decide", "")
        assert r.status_code == 422 and "empty body" in r.json()["error"]
        r = post("/v1/decide", json.dumps({"context": CTX, "event_id": "y" * 150}) + " " * 5000)
        assert r.status_code == 413 and "limit is 4096" in r.json()["error"]
        eid = http.post("/v1/decide", json={"context": CTX}).json()["event_id"]
        cases = [
            (f"/v1/events/{eid}/reward", {"reward": "1"}, 422, "reward", "number"),
            (f"/v1/events/{eid}/reward", {"reward": True}, 422, "reward", "number"),
            (f"/v1/events/{eid}/reward", {}, 422, "reward", "exactly one"),
            (f"/v1/events/{eid}/reward", {"reward": 1, "components": {"x": 1}}, 422, "reward", "exactly one"),
            (f"/v1/events/{eid}/reward", {"components": {"x": "a"}}, 422, "components.x", "number"),
            (f"/v1/events/{eid}/reward", {"reward": 1, "extra": 2}, 422, "extra", "unknown"),
            ("/v1/events/nope/reward", {"reward": 1.0}, 404, "unknown event_id 'nope'", ""),
            ("/v1/events/nope/activate", None, 404, "unknown event_id 'nope'", ""),
            ("/v1/rewards", {"rewards": [{"event_id": eid, "reward": 1}, {"event_id": "zz", "reward": 1}]}, 404,
             "rewards[1].event_id", "unknown"),
            ("/v1/rewards", {"rewards": [{"reward": 1}]}, 422, "rewards[0].event_id", "required"),
        ]
        for path, body, status, where, what in cases:
            r = http.post(path, json=body)
            assert r.status_code == status, (path, body, r.text)
            assert where in r.json()["error"] and what in r.json()["error"], r.json()
        r = post(f"/v1/events/{eid}/reward", '{"reward": NaN}')
        assert r.status_code == 422 and "finite" in r.json()["error"]
        assert http.get("/v1/health").json()["status"] == "ok"
        with pytest.raises(ServeError) as info:
            Client(http=http).decide({"a": 1})
        assert info.value.status == 422 and "context.b" in info.value.message


# ---------------------------------------------------------------------------------- auth


API, ADMIN = "a" * 32, "b" * 32


def test_auth_refusals(tmp_path, policy_file):
    app = create_app(cfg(tmp_path), policy_file, tokens=Tokens(API, ADMIN))
    with TestClient(app) as http:
        assert http.get("/v1/health").status_code == 200  # open
        for path in ("/v1/policy", "/metrics"):
            r = http.get(path)
            assert r.status_code == 401 and "missing bearer token" in r.json()["error"]
            assert r.headers["www-authenticate"].startswith("Bearer")
        r = http.post("/v1/decide", json={"context": CTX}, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.json()["error"] == "invalid token"
        r = http.post("/v1/decide", json={"context": CTX}, headers={"Authorization": f"Basic {API}"})
        assert r.status_code == 401
        c = Client(http=http, token=API)
        assert c.decide(CTX)["arm"] == "live"
        with pytest.raises(ServeError) as err:
            Client(http=http, admin_token=API).reload()
        assert err.value.status == 403 and "admin token" in err.value.message
        assert Client(http=http, admin_token=ADMIN).reload()["serving"].startswith("sha256:")
    app = create_app(cfg(tmp_path, store=str(tmp_path / "s2.duckdb")), policy_file, tokens=Tokens(API, None))
    with TestClient(app) as http:
        r = http.post("/v1/admin/reload", headers={"Authorization": f"Bearer {API}"})
        assert r.status_code == 403 and "disabled" in r.json()["error"]


def test_bind_rule_and_tokens(tmp_path, policy_file, monkeypatch):
    with pytest.raises(AuthError, match="refusing to bind '0.0.0.0'"):
        check_bind("0.0.0.0", Tokens())
    check_bind("127.0.0.1", Tokens())
    check_bind("::1", Tokens())
    check_bind("0.0.0.0", Tokens(API))
    from typer.testing import CliRunner

    from grpokit.cli import app as cli

    monkeypatch.delenv("GRPOKIT_API_TOKEN", raising=False)
    r = CliRunner().invoke(cli, ["serve", "--policy", str(policy_file), "--store", str(tmp_path / "x.duckdb"),
                                 "--host", "0.0.0.0", "--port", "1"])
    assert r.exit_code == 2 and "refusing to bind" in r.output
    short = tmp_path / "short.txt"
    short.write_text("abc\n")
    r = CliRunner().invoke(cli, ["serve", "--policy", str(policy_file), "--store", str(tmp_path / "x.duckdb"),
                                 "--token-file", str(short), "--port", "1"])
    assert r.exit_code == 2 and "at least 16" in r.output


# ---------------------------------------------------------------------------------- versions and rollout


def test_promotion_mid_run_and_rollback(tmp_path, policy_file):
    from typer.testing import CliRunner

    from grpokit.cli import app as cli

    p2 = make_policy(tmp_path / "p2.pt", seed=1, bias=(-2.0, 0.0, 2.0, 0.0))
    store = tmp_path / "s.duckdb"
    with TestClient(create_app(cfg(tmp_path), policy_file)) as http:
        c = Client(http=http)
        v1 = c.decide(CTX)["policy_version"]
        r = CliRunner().invoke(cli, ["policy", "register", str(p2), "--store", str(store)])
        assert r.exit_code == 0, r.output
        v2 = r.output.split("registered: ")[1].split()[0]
        assert v2 != v1
        r = CliRunner().invoke(cli, ["policy", "promote", v2.split(":")[1][:6], "--store", str(store)])
        assert r.exit_code == 0, r.output
        deadline = time.time() + 60  # a bound on the wait (the poll is 1 s), not a speed claim
        while c.decide(CTX)["policy_version"] != v2:  # picked up at the next flush (0.2 s), no restart
            assert time.time() < deadline, "the promotion was not picked up"
            time.sleep(0.05)
        d = c.decide(CTX, probabilities=True)
        np.testing.assert_allclose(d["probabilities"], 0.95 * pi_by_hand(p2, CTX) + 0.05 / 4, rtol=1e-5)
        assert c.policy()["version"] == v2
        back = Client(http=http).rollback()
        assert back["serving"] == v1 and c.decide(CTX)["policy_version"] == v1
        r = CliRunner().invoke(cli, ["policy", "list", "--store", str(store), "--json"])
        listed = {x["version"]: x for x in json.loads(r.output)}
        assert listed[v1]["current"] and not listed[v2]["current"]
    versions_logged = {v for (v,) in rows(store, "SELECT DISTINCT policy_version FROM decisions")}
    assert versions_logged == {v1, v2}
    r = CliRunner().invoke(cli, ["policy", "promote", "sha256:nope", "--store", str(store)])
    assert r.exit_code == 2 and "not registered" in r.output


def test_rollout_canary_and_shadow(tmp_path, policy_file):
    p2 = make_policy(tmp_path / "p2.pt", seed=1, bias=(-2.0, 0.0, 2.0, 0.0))
    store = tmp_path / "s.duckdb"
    with TestClient(create_app(cfg(tmp_path), policy_file)) as http:
        c = Client(http=http)
        v1 = c.decide(CTX)["policy_version"]
        state = http.app.state.serve
        from grpokit.serve import versions

        v2 = state.admin(lambda con: versions.register(con, store, p2))["version"]
        c.set_rollout("canary", candidate=v2, fraction=0.3, cohorts=["vip"])
        units = [f"u{k}" for k in range(600)]
        first = c.decide_batch([CTX] * 600, unit_ids=units)
        again = c.decide_batch([CTX] * 600, unit_ids=units)
        assert [d["arm"] for d in first] == [d["arm"] for d in again]  # a unit stays in its arm
        share = np.mean([d["arm"] == "candidate" for d in first])
        assert abs(share - 0.3) < 4 * math.sqrt(0.3 * 0.7 / 600)
        assert all((d["policy_version"] == v2) == (d["arm"] == "candidate") for d in first)
        assert {d["arm"] for d in c.decide_batch([CTX] * 20, cohorts=["vip"] * 20)} == {"candidate"}
        c.set_rollout("shadow", candidate=v2)
        sh = c.decide(CTX, event_id="s1")
        assert sh["arm"] == "shadow" and sh["policy_version"] == v1
    (sv, sa, sp), = rows(store, "SELECT shadow_version, shadow_action_code, shadow_propensity FROM decisions "
                               "WHERE event_id = 's1'")
    q2 = 0.95 * pi_by_hand(p2, CTX) + 0.05 / 4
    assert sv == v2 and sa == int(np.argmax(np.cumsum(q2) > uniform_by_hand(0, "s1"))) and sp == pytest.approx(q2[sa])


def test_metrics_and_policy_endpoints(tmp_path, policy_file):
    with TestClient(create_app(cfg(tmp_path), policy_file)) as http:
        c = Client(http=http)
        c.decide_batch([CTX] * 10)
        c.reward(c.decide(CTX)["event_id"], 1.0)
        http.post("/v1/decide", json={"context": {}})
        text = c.metrics()
        assert 'grpokit_requests_total{route="/v1/decide",status="200"} 2.0' in text
        assert 'grpokit_requests_total{route="/v1/decide",status="422"} 1.0' in text
        assert 'grpokit_rewards_total{outcome="counted"} 1.0' in text
        total = sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("grpokit_decisions_total{"))
        assert total == 11
        assert "grpokit_request_seconds_bucket" in text and "grpokit_log_queue_depth" in text
        info = c.policy()
        assert [f["name"] for f in info["fields"]] == FIELDS and info["actions"] == ACTIONS and info["epsilon"] == 0.05


def test_pickled_policy_is_refused(tmp_path):
    bad = tmp_path / "evil.pt"
    torch.save({"format": "grpokit.policy/1", "obj": Path("x")}, bad)  # needs pickle to load
    with pytest.raises(Exception, match="weights_only|unpickl|pickle"):
        with TestClient(create_app(cfg(tmp_path), bad)):
            pass


# ---------------------------------------------------------------------------------- the write-ahead log


def _decision(eid: str) -> dict:
    return {"k": "d", "event_id": eid, "ts": time.time(), "policy_version": "v", "arm": "live", "context": "{}",
            "action_code": 0, "action_label": "none", "propensity": 0.5, "deferred": False}


def test_wal_replay_is_exactly_once(tmp_path):
    store, wal = tmp_path / "s.duckdb", tmp_path / "wal"
    log = DecisionLog(store, wal, flush_interval_s=3600)
    log.recover()
    log.start()
    for k in range(50):
        log.submit([_decision(f"d{k}")]).result(timeout=5)
    assert log.acked == 50
    # a crash: the threads die without flushing; the segment is on disk (and the kernel drops the lock)
    log._unlock()
    seg = sorted(wal.glob("seg-*.wal"))[-1]
    copy = seg.read_bytes()
    assert copy.count(b"\n") == 50
    log2 = DecisionLog(store, wal)
    info = log2.recover()
    assert info["records"] == 50 and info["inserted"] == 50
    with pytest.raises(RuntimeError, match="in use by another process"):  # one writer per decision log
        DecisionLog(store, wal).recover()
    log2._unlock()
    # crash between DuckDB's commit and the segment's deletion: the same segment again
    (wal / "seg-000000000001.wal").write_bytes(copy + b'{"k":"d","event_id":"torn"')  # + a torn last line
    log3 = DecisionLog(store, wal)
    info = log3.recover()
    assert info["torn"] == 1 and info["inserted"] == 0
    assert rows(store, "SELECT count(*), count(DISTINCT event_id) FROM decisions") == [(50, 50)]
    assert list(wal.glob("seg-*.wal")) == []
    records, torn = read_segment(_write(tmp_path / "x.wal", b'{"k":"d"}\n{"k":'))
    assert len(records) == 1 and torn


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_export_cli_and_dataset(tmp_path, policy_file):
    from typer.testing import CliRunner

    from grpokit.cli import app as cli
    from grpokit.store import Store

    store = tmp_path / "s.duckdb"
    with TestClient(create_app(cfg(tmp_path), policy_file)) as http:
        c = Client(http=http)
        ds = c.decide_batch([{"a": float(k), "b": 1.0, "c": -1.0} for k in range(40)], cohorts=["n", "s"] * 20)
        c.reward_batch([(d["event_id"], float(k)) for k, d in enumerate(ds)])
    r = CliRunner().invoke(cli, ["serve", "export", "--store", str(store), "--out", str(tmp_path / "served.parquet"),
                                 "--dataset", "served"])
    assert r.exit_code == 0, r.output
    with Store(store) as st:
        log = st.load_log("served")
    assert len(log) == 40 and log.feature_names == FIELDS and log.n_actions == 4
    assert sorted(log.reward.tolist()) == [float(k) for k in range(40)]
    assert set(log.group_labels) == {"n", "s"}


def test_large_batches_use_the_vectorized_encoder_with_the_same_answers(tmp_path, policy_file):
    import pandas as pd

    from grpokit.policy.deployed import DeployedPolicy

    dp = DeployedPolicy.load(policy_file)
    rng = np.random.default_rng(0)
    ctxs = [{"a": float(x), "b": int(y), "c": float(z)} for x, y, z in rng.normal(size=(64, 3)) * [1, 10, 1]]
    assert dp.encoder._transform_records_fast(ctxs, False) is not None  # the column-block path takes them
    np.testing.assert_array_equal(dp.probabilities(pd.DataFrame(ctxs)), dp.probabilities(ctxs))
    for bad in ({"a": 1.0, "b": "2", "c": 0.0}, {"a": 1.0, "b": True, "c": 0.0}, {"a": 1.0, "c": 0.0},
                {"a": 1.0, "b": 2.0, "c": float("nan")}):
        # the per-record loop takes over, for its exact error naming row and field
        assert dp.encoder._transform_records_fast(ctxs[:40] + [bad] + ctxs[40:], False) is None
    with TestClient(create_app(cfg(tmp_path), policy_file)) as http:
        body = {"batch": [{"context": c} for c in ctxs[:40]] + [{"context": {"a": 1.0, "b": "2", "c": 0.0}}]}
        r = http.post("/v1/decide", json=body)
        assert r.status_code == 422 and "batch[40].context.b" in r.json()["error"]
        ds = Client(http=http).decide_batch(ctxs, probabilities=True)
        np.testing.assert_allclose([d["probabilities"] for d in ds], 0.95 * dp.probabilities(ctxs) + 0.05 / 4, rtol=1e-12)
