"""The decision service's FastAPI application: decide, reward, activate, policy, health, metrics, admin.

:func:`create_app` builds the app around a :class:`ServeState` that owns the serving policies, the
durable :class:`~grpokit.serve.decision_log.DecisionLog` and an in-memory index of recent events
(event id -> decision, reward count), used for idempotent retries and the reward join.

A decision: the served distribution is ``q = (1 - eps) pi + eps / A`` (``mode = "greedy"``: pi
one-hot at its argmax); the action is the first ``a`` with ``cumsum(q)[a] > u``, ``u = H(seed,
event_id)``; the answer carries ``propensity = q[a]``. It is answered only after its log record is
fsync'd. A client-supplied ``event_id`` seen before returns the stored decision.

A reward joins its decision by event id: under ``first`` only the first on-time reward counts
(later ones are stored with ``duplicate = true``), under ``sum`` every on-time reward counts; a
reward after ``decision time (or activation) + reward.window_s`` is stored with ``late = true``
and does not count. Unknown event ids are answered 404.
"""

from __future__ import annotations

import asyncio
import collections
import json
import gc
import logging
import os
import sys
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel

from grpokit.policy.deployed import Decisions, DeployedPolicy
from grpokit.policy.numpy_forward import draw_served, numpy_forward
from grpokit.serve.auth import Tokens, check_request, error_body
from grpokit.serve.config import RolloutConfig, ServeConfig
from grpokit.serve.decision_log import DecisionLog
from grpokit.serve.metrics import Metrics
from grpokit.serve.requests import (ApiError, ClientGone, parse_decide, parse_reward, parse_rewards, read_asgi_json,
                                    read_json)
from grpokit.serve.rollout import assign_arm, event_uniforms
from grpokit.serve.tables import connect
from grpokit.serve import jsonio, versions

__all__ = ["create_app", "ServeState", "StartupError", "SWITCH_INTERVAL_S"]

#: the interpreter's GIL switch interval while the service runs (``sys.setswitchinterval``; Python's
#: default is 5 ms): how long a thread that wants the GIL waits before the holder is asked to drop it
SWITCH_INTERVAL_S = 0.0005


class PromoteBody(BaseModel):
    version: str

log = logging.getLogger("grpokit.serve")


class StartupError(RuntimeError):
    """The service cannot start (no policy, unreadable store, ...); the message says what to do."""


class _Event:
    __slots__ = ("ts", "deferred", "activated_at", "rewarded", "response", "fut", "last_reward_at")

    def __init__(self, ts, deferred, activated_at, rewarded, response, fut=None):
        self.ts = ts
        self.deferred = deferred
        self.activated_at = activated_at
        self.rewarded = rewarded
        self.response = response
        self.fut = fut
        self.last_reward_at = None


@dataclass(frozen=True)
class Policies:
    """An immutable snapshot of what serves: swapped whole on a promotion."""

    current: object
    candidate: object | None
    rollout: RolloutConfig


_INDEX_SQL = """
SELECT d.event_id, epoch_ms(d.ts) / 1000.0, d.deferred, epoch_ms(a.activated_at) / 1000.0, coalesce(r.n, 0),
       d.policy_version, d.arm, d.action_code, d.action_label, d.action_value, d.propensity, d.probabilities
FROM decisions d LEFT JOIN activations a USING (event_id)
LEFT JOIN (SELECT event_id, count(*) AS n FROM rewards WHERE counted GROUP BY event_id) r USING (event_id)
"""


def _response_from_row(row) -> dict:
    _, _, deferred, _, _, version, arm, code, label, value, prop, probs = row
    out = {"event_id": row[0], "action": label if value is None else json.loads(value),
           "action_code": code, "propensity": prop, "policy_version": version, "arm": arm}
    if deferred:
        out["deferred"] = True
    return out, (json.loads(probs) if probs else None)


def _event_from_row(row) -> _Event:
    return _Event(row[1], bool(row[2]), row[3], int(row[4]), _response_from_row(row))


def _public(resp: tuple[dict, list | None], want_probs: bool, replay: bool = False) -> dict:
    """The answer of a stored ``(public fields, served probabilities)``: the shared dict itself when
    nothing is added (it is only read afterwards), else a copy with the additions."""
    pub, probs = resp
    if not want_probs and not replay:
        return pub
    out = dict(pub)
    if want_probs:
        out["probabilities"] = probs
    if replay:
        out["replayed"] = True
    return out


def _shared(col: list):
    """A log column's one shared value when every entry is that (a columnar block stores it once), else the list."""
    return col[0] if col.count(col[0]) == len(col) else col


def _json(obj, status: int = 200):
    return Response(jsonio.dumps(obj), status_code=status, media_type="application/json")


class ServeState:
    """Policies, log, event index and metrics of one running service."""

    def __init__(self, config: ServeConfig, policy_path: str | Path | None = None, *, tokens: Tokens | None = None,
                 loader: Callable = versions.load_deployed) -> None:
        self.config = config
        self.policy_path = policy_path
        self.tokens = tokens or Tokens()
        self.loader = loader
        self.store = Path(config.store)
        self.index: dict[str, _Event] = {}
        self._pending: list = []  #: single decisions waiting for the gathering group
        self._order: collections.deque = collections.deque()
        self.old_ids: set[str] = set()
        self.policies: Policies | None = None
        self._forwards: dict[int, tuple] = {}  #: id(policy) -> (policy, its numpy forward or None)
        self.policy_error: str | None = None
        self.started_at = time.time()
        self.recovered: dict = {}
        self.started = False
        c = config.log
        self.log = DecisionLog(self.store, config.wal_dir, group_commit_ms=c.group_commit_ms, fsync=c.fsync,
                               flush_interval_s=c.flush_interval_s, poll_interval_s=c.poll_interval_s,
                               segment_max_bytes=c.segment_max_bytes,
                               lock_timeout_s=c.store_lock_timeout_s, on_flush=self._poll, writers=c.writers, preallocate_bytes=c.preallocate_bytes)
        self.metrics = Metrics(lambda: self.log.queued, lambda: self.log.unflushed)

    # ------------------------------------------------------------------ start and stop
    def startup(self) -> None:
        """Open the store, register/promote ``policy_path``, load the policies, replay the write-ahead
        segments left by a previous process, build the event index, start the log threads."""
        if self.started:
            return
        try:
            con = connect(self.store, self.config.log.store_lock_timeout_s)
        except Exception as err:  # noqa: BLE001
            raise StartupError(f"cannot open the store {self.store}: {err}") from None
        try:
            versions.ensure_version_tables(con)
            if self.policy_path is not None:
                reg = versions.register(con, self.store, self.policy_path, loader=self.loader,
                                        note="grpokit serve --policy")
                versions.promote(con, reg["version"], note="grpokit serve --policy")
            if "rollout" in self.config.model_fields_set:
                versions.set_rollout(con, self.config.rollout)
            if versions.current_version(con) is None:
                raise StartupError(f"the store {self.store} has no current policy version: pass --policy FILE, or "
                                   "'grpokit policy register FILE' then 'grpokit policy promote VERSION'")
            self._poll(con, initial=True)
        finally:
            con.close()
        self.recovered = self.log.recover()
        if self.recovered.get("records"):
            log.warning("replayed %d acknowledged records from %d write-ahead segments into %s",
                        self.recovered["records"], self.recovered["segments"], self.store)
        self._load_index()
        self.log.start()
        self.started = True

    def shutdown(self) -> None:
        self.log.stop()

    def _load_index(self) -> None:
        cutoff = time.time() - self.config.index_retention_s
        con = connect(self.store, self.config.log.store_lock_timeout_s)
        try:
            rows = con.execute(_INDEX_SQL + " WHERE d.ts >= to_timestamp(?)::TIMESTAMP ORDER BY d.ts",
                               [cutoff]).fetchall()
            old = con.execute("SELECT event_id FROM decisions WHERE ts < to_timestamp(?)::TIMESTAMP", [cutoff]).fetchall()
        finally:
            con.close()
        for row in rows:
            self.index[row[0]] = _event_from_row(row)
            self._order.append((row[1], row[0]))
        self.old_ids = {r[0] for r in old}

    # ------------------------------------------------------------------ policy versions
    def _poll(self, con, initial: bool = False) -> None:
        """Read the current version and rollout from the store; swap the policies if they changed."""
        cur = versions.current_version(con)
        rollout = versions.get_rollout(con) or RolloutConfig()
        old = self.policies
        if cur is None:
            return
        if old is not None and old.current.version == cur and old.rollout == rollout:
            return
        try:
            current = old.current if old is not None and old.current.version == cur else \
                self.loader(versions.version_path(con, cur))
            candidate = None
            if rollout.mode != "live" and rollout.candidate:
                if old is not None and old.candidate is not None and old.candidate.version == rollout.candidate:
                    candidate = old.candidate
                elif rollout.candidate == current.version:
                    candidate = current
                else:
                    candidate = self.loader(versions.version_path(con, rollout.candidate))
        except Exception as err:  # noqa: BLE001 - keep serving what works; report the problem
            self.policy_error = f"cannot load version {cur!r} / rollout {rollout.model_dump()}: {err}"
            if initial:
                raise StartupError(self.policy_error) from None
            log.error(self.policy_error)
            return
        self.policies = Policies(current, candidate, rollout)
        self._forwards = {k: v for k, v in self._forwards.items() if v[0] is current or v[0] is candidate}
        self.policy_error = None
        self.metrics.set_policies(current.version, None if candidate is None else candidate.version)
        if not initial:
            log.warning("now serving %s (rollout %s, candidate %s)", current.version, rollout.mode, rollout.candidate)

    def admin(self, fn: Callable) -> dict:
        """Run ``fn(con)`` on the store (serialized with the flusher), then reload the policies."""
        with self.log._flush_lock:
            con = connect(self.store, self.config.log.store_lock_timeout_s)
            try:
                out = fn(con)
                self._poll(con)
            finally:
                con.close()
        return out

    # ------------------------------------------------------------------ event index
    def remember(self, eid: str, ev: _Event) -> None:
        self.index[eid] = ev
        self._order.append((ev.ts, eid))

    def forget(self, eid: str) -> None:
        self.index.pop(eid, None)

    def prune(self) -> int:
        """Move fully flushed events older than the retention from the index to ``old_ids``."""
        last = self.log.last_move_at
        if last is None:
            return 0
        cutoff = min(time.time() - self.config.index_retention_s, last - 1.0)
        n = 0
        while self._order and self._order[0][0] < cutoff:
            ts, eid = self._order[0]
            ev = self.index.get(eid)
            if ev is not None and (ev.fut is not None and not ev.fut.done() or
                                   ev.last_reward_at is not None and ev.last_reward_at > last - 1.0):
                break
            self._order.popleft()
            if ev is not None and ev.ts == ts:
                del self.index[eid]
                self.old_ids.add(eid)
                n += 1
        return n

    def _lookup_db(self, eid: str) -> _Event | None:
        con = connect(self.store, self.config.log.store_lock_timeout_s)
        try:
            row = con.execute(_INDEX_SQL + " WHERE d.event_id = ?", [eid]).fetchone()
        finally:
            con.close()
        return None if row is None else _event_from_row(row)

    async def find(self, eid: str) -> _Event | None:
        """The event ``eid`` (waiting for its log commit if pending), or None if never decided."""
        ev = self.index.get(eid)
        if ev is None and eid in self.old_ids:
            ev = await asyncio.to_thread(self._lookup_db, eid)
            if ev is not None and eid not in self.index:
                self.remember(eid, ev)
            ev = self.index.get(eid, ev)
        if ev is not None and ev.fut is not None and not ev.fut.done():
            await (ev.fut if asyncio.isfuture(ev.fut) else asyncio.wrap_future(ev.fut))
        return ev

    # ------------------------------------------------------------------ decisions
    async def decide(self, body) -> dict | list:
        cfg = self.config
        items, is_batch, want_probs = parse_decide(body, cfg.limits.max_batch)
        if not is_batch:
            eid = items[0].event_id
            if eid is None or (eid not in self.index and eid not in self.old_ids):
                return _public(await self._decide_single(items[0], eid), want_probs)
        pol = self.policies
        now = time.time()
        out: list = [None] * len(items)
        replays: list[tuple[int, str]] = []
        new: list[tuple[int, str]] = []
        batch_ids: dict[str, int] = {}
        fresh = os.urandom(16 * len(items)).hex()  # one random 128-bit id per item (used when none is given)
        for i, it in enumerate(items):
            eid = it.event_id
            if eid is not None:
                if eid in batch_ids or eid in self.index or eid in self.old_ids:
                    replays.append((i, eid))
                    continue
                batch_ids[eid] = i
            else:
                eid = fresh[32 * i:32 * i + 32]
            new.append((i, eid))
        records, responses = [], []
        if new:
            records, responses = self._draw(items, new, pol, now, is_batch)
            fut = asyncio.wrap_future(self.log.submit(records))
            events = [_Event(now, items[i].defer, None, 0, resp, fut) for (i, _), resp in zip(new, responses)]
            eids = [eid for _, eid in new]
            self.index.update(zip(eids, events))
            self._order.extend(zip([now] * len(eids), eids))
            try:
                await fut
            except OSError as err:
                for _, eid in new:
                    self.forget(eid)
                raise ApiError(503, f"the decision log could not be written ({err}); nothing was decided") from None
            counts = collections.Counter((r["action"] if isinstance(r["action"], str) else "continuous", r["arm"])
                                         for r, _ in responses)
            for (label, arm), n in counts.items():
                self.metrics.count_decisions(label, arm, n)
            for (i, _), resp in zip(new, responses):
                out[i] = _public(resp, want_probs)
        for i, eid in replays:
            ev = await self.find(eid)
            if ev is None:  # the first of a duplicate pair inside this batch failed
                raise ApiError(503, f"event {eid!r} could not be decided")
            out[i] = _public(ev.response, want_probs, replay=(eid not in batch_ids or batch_ids[eid] != i))
        return {"decisions": out} if is_batch else out[0]

    # ------------------------------------------------------------------ single decisions, micro-batched
    async def _decide_single(self, item, eid: str | None) -> tuple[dict, list | None]:
        """Decide one new event together with the other single requests that reach the event loop while
        the group gathers (see :meth:`_gather_pending`): one forward pass, one log submission and one fsync'd group commit for all of
        them (each still gets its own uniform, arm, record and answer). The event enters the index at
        once (a concurrent retry of the same id waits for it, then replays it)."""
        loop = asyncio.get_running_loop()
        if eid is None:
            eid = self._new_id()
        ev = _Event(time.time(), item.defer, None, 0, None, loop.create_future())
        self.remember(eid, ev)
        self._pending.append((item, eid, ev))
        if not self._pending_scheduled:
            self._pending_scheduled = True
            loop.call_soon(self._gather_pending, loop, 0, 0)
        await ev.fut
        return ev.response

    _pending_scheduled = False
    _ids: list = []

    def _new_id(self) -> str:
        """A fresh random 128-bit event id (hex), from a pool filled 512 at a time (one getrandom call)."""
        ids = self._ids
        if not ids:
            pool = os.urandom(16 * 512).hex()
            ids = self._ids = [pool[k:k + 32] for k in range(0, len(pool), 32)]
        return ids.pop()

    _GATHER_TURNS = 4  #: at most this many event-loop turns gather a group of single decisions

    def _gather_pending(self, loop, seen: int, turns: int) -> None:
        """Draw the pending group, or give it one more event-loop turn while it still grows (at most
        ``_GATHER_TURNS``): the requests whose bytes arrive in that turn's poll join it, so under load a
        group is bigger (fewer forwards, log submissions and fsyncs per request) and alone a request
        waits one turn (microseconds)."""
        n = len(self._pending)
        if n > seen and turns < self._GATHER_TURNS:
            loop.call_soon(self._gather_pending, loop, n, turns + 1)
        else:
            self._run_pending()

    def _run_pending(self) -> None:
        """Draw the pending single decisions as one group and submit their records (see _decide_single)."""
        self._pending_scheduled = False
        group, self._pending = self._pending, []
        if not group:
            return
        try:
            records, responses = self._draw_group(group)
        except BaseException as err:  # noqa: BLE001 - every waiting request gets the error
            for _, eid, ev in group:
                self._fail(eid, ev, err)
            return
        ok = [(g, resp) for g, resp in zip(group, responses) if resp is not None]
        if not ok:
            return
        for ((_, _, ev), resp) in ok:
            ev.response = resp
        loop = asyncio.get_running_loop()

        def done(fut, ok=ok):  # on a log writer thread, once the group is fsync'd (or failed)
            err = OSError("the log submission was cancelled") if fut.cancelled() else fut.exception()
            try:
                loop.call_soon_threadsafe(self._settle, ok, err)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass

        self.log.submit(records).add_done_callback(done)  # (no asyncio future chained to it: one hop)

    def _draw_group(self, group):
        """``(records, responses)`` of a group of single decisions; a row whose context the policy refuses
        fails its own request only (the group is then drawn one by one, for each row's exact error)."""
        items = [it for it, _, _ in group]
        new = [(k, eid) for k, (_, eid, _) in enumerate(group)]
        ts = [ev.ts for _, _, ev in group]
        try:
            return self._draw(items, new, self.policies, ts, False)
        except Exception:  # noqa: BLE001 - whatever one row raised, it must not fail the others
            if len(group) == 1:
                raise
        records, responses = [], [None] * len(group)
        for k, (it, eid, ev) in enumerate(group):
            try:
                recs, (resp,) = self._draw([it], [(0, eid)], self.policies, [ev.ts], False)
            except Exception as err:  # noqa: BLE001 - this request's own error (422, or 500 if unexpected)
                self._fail(eid, ev, err)
                continue
            records += recs
            responses[k] = resp
        return records, responses

    def _fail(self, eid: str, ev: _Event, err: BaseException) -> None:
        if self.index.get(eid) is ev:
            self.forget(eid)
        if not ev.fut.done():
            ev.fut.set_exception(err)

    def _settle(self, ok: list, err: BaseException | None) -> None:
        """On the event loop: answer the group's requests once its records are fsync'd (``err`` None)."""
        if err is not None:
            if isinstance(err, OSError):
                err = ApiError(503, f"the decision log could not be written ({err}); nothing was decided")
            for (_, eid, ev), _ in ok:
                self._fail(eid, ev, err)
            return
        counts = collections.Counter((r["action"] if isinstance(r["action"], str) else "continuous", r["arm"])
                                     for (r, _) in (resp for _, resp in ok))
        for (label, arm), n in counts.items():
            self.metrics.count_decisions(label, arm, n)
        for (_, _, ev), _ in ok:
            if not ev.fut.done():
                ev.fut.set_result(None)

    def _draw(self, items, new, pol: Policies, now: float | list[float], is_batch: bool):
        from grpokit.policy.features import FeatureError

        cfg = self.config
        per_item_ts = now if isinstance(now, list) else None
        rollout = pol.rollout
        cur, cand = pol.current, pol.candidate
        group_field = getattr(cur, "group_field", "cohort")
        cohorts = []
        for i, _ in new:
            it = items[i]
            cohort = it.cohort
            if cohort is None and group_field in it.context:
                cohort = str(it.context[group_field])
            cohorts.append(cohort)
        # a customer sent without a cohort gets the live policy's stored cohort model's (as in training):
        # logged with the decision and used by a canary by cohort
        assigned: set[int] = set()
        model = getattr(cur, "cohort_model", None)
        if model is not None:
            missing = [k for k, c in enumerate(cohorts) if c is None]
            if missing:
                try:
                    codes = cur.assign_cohorts([items[new[k][0]].context for k in missing])
                except FeatureError as err:
                    raise self._feature_error(err, new, missing, is_batch) from None
                names = model["cohort_names"]
                for k, c in zip(missing, codes):
                    cohorts[k] = str(names[int(c)])
                assigned.update(missing)
        arms = [assign_arm(rollout, items[i].unit_id, cohorts[k], eid) if cand is not None else "live"
                for k, (i, eid) in enumerate(new)]
        by_policy: dict[int, list[int]] = {}
        for k, arm in enumerate(arms):
            by_policy.setdefault(1 if arm == "candidate" else 0, []).append(k)
        records: list = []  # one columnar block ("k": "D") per policy
        responses: list = [None] * len(new)
        for which, ks in by_policy.items():
            dp = cand if which == 1 else cur
            its = [items[new[k][0]] for k in ks]
            rows = [self._row(dp, it, None if (k in assigned and dp is not cur) else cohorts[k]) for it, k in zip(its, ks)]
            eids = [new[k][1] for k in ks]
            u = event_uniforms(cfg.seed, eids)
            try:
                d = self._decide_rows(dp, rows, u, small=not is_batch)
            except FeatureError as err:
                raise self._feature_error(err, new, ks, is_batch) from None
            shadow = None
            if which == 0 and cand is not None and rollout.mode == "shadow":
                try:
                    shadow = cand.decide([self._row(cand, it, None if k in assigned else cohorts[k]) for it, k in zip(its, ks)],
                                         epsilon=cfg.epsilon, mode=cfg.mode, seed=cfg.seed, uniforms=u)
                except (FeatureError, ValueError) as err:
                    log.warning("shadow candidate %s could not decide: %s", cand.version, err)
            categorical = d.labels is not None
            n = len(ks)
            probs = d.probabilities.tolist() if d.probabilities is not None else None
            actions = d.actions.tolist()
            props = d.propensities.tolist()
            arm_k = [arms[k] for k in ks]
            defer = [it.defer for it in its]
            labels = d.labels if categorical else None
            version = dp.version
            rec = {
                "k": "D", "n": n, "event_id": eids,
                "ts": now if per_item_ts is None else [per_item_ts[new[k][0]] for k in ks],
                "policy_version": version, "arm": _shared(arm_k), "unit_id": _shared([it.unit_id for it in its]),
                "cohort": _shared([cohorts[k] for k in ks]), "context": [it.context for it in its],
                "action_code": actions if categorical else None, "action_label": labels,
                "action_value": None if categorical else [json.dumps(a) for a in actions],
                "propensity": props, "probabilities": probs,
                "epsilon": cfg.epsilon if categorical else None, "mode": cfg.mode,
                "deferred": defer if any(defer) else False,
            }
            if shadow is not None:
                rec["shadow_version"] = cand.version
                rec["shadow_action_code"] = shadow.actions.tolist() if shadow.labels is not None else None
                rec["shadow_propensity"] = shadow.propensities.tolist()
            records.append(rec)
            if categorical:
                out = [({"event_id": e, "action": lab, "action_code": a, "propensity": pr, "policy_version": version,
                         "arm": arm}, q) for e, lab, a, pr, arm, q in zip(eids, labels, actions, props, arm_k, probs)]
            else:
                out = [({"event_id": e, "action": a, "action_code": None, "propensity": pr, "policy_version": version,
                         "arm": arm}, None) for e, a, pr, arm in zip(eids, actions, props, arm_k)]
            if rec["deferred"] is not False:
                for (resp, _), dfr in zip(out, defer):
                    if dfr:
                        resp["deferred"] = True
            if len(ks) == len(new):  # one policy answers every item: ks is 0..n-1
                responses = out
            else:
                for k, r in zip(ks, out):
                    responses[k] = r
        return records, responses

    def _decide_rows(self, dp, rows: list, u: np.ndarray, small: bool):
        """``dp.decide(rows, uniforms=u)``; for the few rows of a group of single requests (``small``) of a
        plain categorical policy, the same draw on the numpy forward's π (equal to torch's to float32
        rounding, see :mod:`grpokit.policy.numpy_forward`), without torch's per-call cost."""
        cfg = self.config
        if small and dp.kind == "categorical" and type(dp) is DeployedPolicy and "decide" not in vars(dp):
            # (a policy whose decide is its own, a subclass's or one replaced on the instance, decides itself)
            fwd = self._forward(dp)
            if fwd is not None:
                x, group = dp.features(rows)
                actions, props, q = draw_served(fwd.probabilities(x, group), cfg.epsilon, cfg.mode, u)
                labels = dp.action_labels
                return Decisions(actions=actions, propensities=props, probabilities=q,
                                 labels=[labels[a] for a in actions.tolist()])
        return dp.decide(rows, epsilon=cfg.epsilon, mode=cfg.mode, seed=cfg.seed, uniforms=u)

    def _forward(self, dp):
        """The numpy forward of a serving policy (None: not a plain categorical MLP), found once per policy."""
        hit = self._forwards.get(id(dp))
        if hit is None or hit[0] is not dp:
            pol = getattr(dp, "policy", None)
            hit = self._forwards[id(dp)] = (dp, numpy_forward(pol) if pol is not None else None)
        return hit[1]

    @staticmethod
    def _row(dp, item, cohort) -> dict:
        if getattr(dp, "needs_group", False):
            field = dp.group_field
            if field not in item.context and cohort is not None:
                return {**item.context, field: cohort}
        return item.context

    @staticmethod
    def _feature_error(err, new, ks, is_batch: bool) -> ApiError:
        row = getattr(err, "row", None)
        field = getattr(err, "field", None)
        msg = str(err)
        prefix = ", ".join(([f"row {row}"] if row is not None else []) + ([f"field {field!r}"] if field is not None else []))
        if prefix and msg.startswith(prefix + ": "):
            msg = msg[len(prefix) + 2:]
        k = ks[row] if row is not None and 0 <= row < len(ks) else (ks[0] if len(ks) == 1 else None)
        loc: list = ["batch", new[k][0]] if is_batch and k is not None else []
        return ApiError(422, msg, loc + ["context"] + ([field] if field is not None else []), "value_error")

    # ------------------------------------------------------------------ rewards
    async def rewards(self, entries: list[tuple[str, float, dict | None]]) -> list[dict]:
        events = []
        for i, (eid, _, _) in enumerate(entries):
            ev = await self.find(eid)
            if ev is None:
                where = f"rewards[{i}].event_id: " if len(entries) > 1 else ""
                raise ApiError(404, f"{where}unknown event_id {eid!r}: no decision was made with this id")
            events.append(ev)
        cfg = self.config.reward
        now = time.time()
        records, results, counted_events = [], [], []
        for (eid, value, comps), ev in zip(entries, events):
            activated = (not ev.deferred) or ev.activated_at is not None
            start = ev.activated_at if ev.deferred and ev.activated_at is not None else ev.ts
            late = now > start + cfg.window_s
            duplicate = cfg.aggregation == "first" and ev.rewarded > 0
            counted = activated and not late and not duplicate
            if counted:
                ev.rewarded += 1
                counted_events.append(ev)
            ev.last_reward_at = now
            rid = uuid.uuid4().hex
            records.append({"k": "r", "reward_id": rid, "event_id": eid, "received_at": now, "value": value,
                            "components": comps, "late": late,
                            "duplicate": duplicate, "counted": counted})
            outcome = "counted" if counted else "late" if late else "duplicate" if duplicate else "not_activated"
            results.append({"event_id": eid, "reward_id": rid, "value": value, "counted": counted,
                            "duplicate": duplicate, "late": late, "activated": activated, "outcome": outcome})
        try:
            await asyncio.wrap_future(self.log.submit(records))
        except OSError as err:
            for ev in counted_events:
                ev.rewarded -= 1
            raise ApiError(503, f"the reward log could not be written ({err}); nothing was recorded") from None
        for outcome, n in collections.Counter(r["outcome"] for r in results).items():
            self.metrics.rewards.labels(outcome).inc(n)
        return results

    async def activate(self, eid: str) -> dict:
        ev = await self.find(eid)
        if ev is None:
            raise ApiError(404, f"unknown event_id {eid!r}: no decision was made with this id")
        if not ev.deferred:
            return {"event_id": eid, "activated": True, "deferred": False,
                    "note": "this decision was not deferred: it was active from the start"}
        if ev.activated_at is not None:
            return {"event_id": eid, "activated": True, "deferred": True, "already": True}
        now = time.time()
        ev.activated_at = now
        try:
            await asyncio.wrap_future(self.log.submit([{"k": "a", "event_id": eid, "activated_at": now}]))
        except OSError as err:
            ev.activated_at = None
            raise ApiError(503, f"the activation could not be logged ({err})") from None
        return {"event_id": eid, "activated": True, "deferred": True, "already": False}

    # ------------------------------------------------------------------ reports
    def describe(self) -> dict:
        pol = self.policies
        cfg = self.config
        cur = pol.current
        out = cur.describe() if hasattr(cur, "describe") else {"version": cur.version}
        out.update({
            "epsilon": cfg.epsilon, "mode": cfg.mode,
            "log_supports_evaluation": cfg.epsilon > 0 or cur.kind != "categorical",
            "rollout": pol.rollout.model_dump(),
            "candidate": None if pol.candidate is None else (
                pol.candidate.describe() if hasattr(pol.candidate, "describe") else {"version": pol.candidate.version}),
            "reward": cfg.reward.model_dump(),
        })
        if cfg.epsilon == 0 and cur.kind == "categorical":
            out["warning"] = ("epsilon = 0: actions the policy never picks get propensity 0, so this log cannot "
                              "evaluate other policies off-policy")
        return out

    def health(self) -> dict:
        lg = self.log
        return {"status": "ok" if lg.last_flush_error is None and self.policy_error is None else "degraded",
                "policy_version": self.policies.current.version if self.policies else None,
                "uptime_s": round(time.time() - self.started_at, 3),
                "log": {"queued": lg.queued, "unflushed": lg.unflushed, "acked": lg.acked,
                        "last_moved_to_store_at": lg.last_move_at, "last_flush_error": lg.last_flush_error,
                        "replayed_at_start": self.recovered.get("records", 0)},
                "policy_error": self.policy_error}


def _middleware(app, state: ServeState):
    """Auth, request counting and latency (pure ASGI: cheaper than BaseHTTPMiddleware), and ``POST
    /v1/decide`` itself."""
    max_body = state.config.limits.max_body_bytes

    async def mw(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        t0 = time.perf_counter()
        path = scope["path"]
        status = [500]
        try:
            auth = None
            for k, v in scope["headers"]:
                if k == b"authorization":
                    auth = v.decode("latin-1")
                    break
            denied = check_request(path, auth, state.tokens)
            if denied is not None:
                status[0] = denied[0]
                headers = [(b"content-type", b"application/json")]
                if denied[0] == 401:
                    headers.append((b"www-authenticate", b'Bearer realm="grpokit"'))
                await send({"type": "http.response.start", "status": denied[0], "headers": headers})
                await send({"type": "http.response.body", "body": error_body(denied[1])})
                return
            if path == "/v1/decide" and scope["method"] == "POST":
                # the hot path, answered here (the route below documents it and is never reached): the
                # same reading, checks and answers, without the router's and Request's per-call objects
                try:
                    obj = await read_asgi_json(scope, receive, max_body)
                    payload, code = jsonio.dumps(await state.decide(obj)), 200
                except ApiError as err:
                    payload, code = jsonio.dumps(err.body()), err.status
                except ClientGone:
                    status[0] = 499
                    return
                status[0] = code
                await send({"type": "http.response.start", "status": code,
                            "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]})
                await send({"type": "http.response.body", "body": payload})
                return

            async def _send(msg):
                if msg["type"] == "http.response.start":
                    status[0] = msg["status"]
                await send(msg)

            await app(scope, receive, _send)
        finally:
            state.metrics.observe_request(path, status[0], time.perf_counter() - t0)

    return mw


def create_app(config: ServeConfig, policy_path: str | Path | None = None, *, tokens: Tokens | None = None,
               loader: Callable = versions.load_deployed):
    """The FastAPI app; the store, the log and the policies are set up at startup (lifespan)."""
    state = ServeState(config, policy_path, tokens=tokens, loader=loader)

    @asynccontextmanager
    async def lifespan(app):
        # the event loop gives up the GIL at every callback and syscall; a log writer whose fsync returned
        # (or the flusher, busy in Python) then holds it until the interpreter's switch interval (5 ms by
        # default) forces it back, which delays every answer waiting for that writer: 0.5 ms while serving
        previous_switch = sys.getswitchinterval()
        sys.setswitchinterval(min(previous_switch, SWITCH_INTERVAL_S))
        await asyncio.to_thread(state.startup)

        async def pruner():
            k = 0
            while True:
                await asyncio.sleep(1)
                k += 1
                if k % 10 == 0:
                    state.prune()
                # the event index is long-lived: move it out of the cyclic GC's reach every second, so
                # that collections stay proportional to one second's allocations, not to the index's
                # size (under batch load a 10 s window of index entries made full collections costly)
                gc.freeze()

        task = asyncio.create_task(pruner())
        try:
            yield
        finally:
            task.cancel()
            await asyncio.to_thread(state.shutdown)
            sys.setswitchinterval(previous_switch)

    app = _ServeApp(title="grpokit decision service", version="1", lifespan=lifespan,
                    description="Decisions with propensities, rewards joined by event id. See docs/serving.md.")
    app.state.serve = state
    app.decide_fast = _middleware(None, state)

    @app.exception_handler(ApiError)
    async def _api_error(request, err: ApiError):
        return JSONResponse(err.body(), status_code=err.status)

    @app.post("/v1/decide")
    async def decide(request: Request):
        """One ``{"context": {...}, "event_id"?, "unit_id"?, "cohort"?, "defer_activation"?}`` or
        ``{"batch": [...]}``; ``"probabilities": true`` adds the served distribution."""
        body = await read_json(request, config.limits.max_body_bytes)
        return _json(await state.decide(body))

    @app.post("/v1/events/{event_id}/reward")
    async def reward(event_id: str, request: Request):
        """``{"reward": x}`` or ``{"components": {name: x}}`` for a decided event."""
        body = await read_json(request, config.limits.max_body_bytes)
        value, comps = parse_reward(body, config.reward.weights)
        return _json((await state.rewards([(event_id, value, comps)]))[0])

    @app.post("/v1/rewards")
    async def rewards(request: Request):
        """``{"rewards": [{"event_id", "reward" | "components"}, ...]}``."""
        body = await read_json(request, config.limits.max_body_bytes)
        entries = parse_rewards(body, config.reward.weights, config.limits.max_batch)
        return _json({"results": await state.rewards(entries)})

    @app.post("/v1/events/{event_id}/activate")
    async def activate(event_id: str):
        """Activate a decision made with ``defer_activation``: only then do its rewards count."""
        return _json(await state.activate(event_id))

    @app.get("/v1/health")
    async def health():
        return _json(state.health())

    @app.get("/v1/policy")
    async def policy():
        return _json(state.describe())

    @app.get("/metrics")
    async def metrics():
        body, ctype = state.metrics.render()
        return PlainTextResponse(body, media_type=ctype)

    @app.post("/v1/admin/promote")
    async def admin_promote(body: PromoteBody):
        try:
            out = await asyncio.to_thread(state.admin, lambda con: versions.promote(con, body.version, "admin endpoint"))
        except versions.VersionError as err:
            raise ApiError(404, str(err)) from None
        return _json({**out, "serving": state.policies.current.version})

    @app.post("/v1/admin/rollback")
    async def admin_rollback():
        try:
            out = await asyncio.to_thread(state.admin, lambda con: versions.rollback(con, "admin endpoint"))
        except versions.VersionError as err:
            raise ApiError(409, str(err)) from None
        return _json({**out, "serving": state.policies.current.version})

    @app.post("/v1/admin/rollout")
    async def admin_rollout(body: RolloutConfig):
        try:
            await asyncio.to_thread(state.admin, lambda con: versions.set_rollout(con, body))
        except versions.VersionError as err:
            raise ApiError(404, str(err)) from None
        return _json({"rollout": state.policies.rollout.model_dump(), "serving": state.policies.current.version})

    @app.post("/v1/admin/reload")
    async def admin_reload():
        await asyncio.to_thread(state.admin, lambda con: None)
        return _json({"serving": state.policies.current.version, "rollout": state.policies.rollout.model_dump()})

    app.add_middleware(_MiddlewareFactory, state=state)
    return app


class _ServeApp(FastAPI):
    """The FastAPI app, with ``POST /v1/decide`` (the hot path) handed to :func:`_middleware` before the
    framework's own middleware stack (the same auth, metrics, checks and answers; an unexpected error
    reaches the server, which answers 500 as the stack would)."""

    decide_fast = None

    async def __call__(self, scope, receive, send):
        if (self.decide_fast is not None and scope["type"] == "http" and scope["path"] == "/v1/decide"
                and scope["method"] == "POST"):
            scope["app"] = self
            return await self.decide_fast(scope, receive, send)
        await super().__call__(scope, receive, send)


class _MiddlewareFactory:
    """Starlette middleware class around :func:`_middleware` (auth, request metrics)."""

    def __init__(self, app, state: ServeState):
        self._mw = _middleware(app, state)

    async def __call__(self, scope, receive, send):
        await self._mw(scope, receive, send)
