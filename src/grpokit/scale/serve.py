"""Serving replicas on Ray Serve: the decision service's own handlers in N shard replicas, one store.

Each shard replica runs :class:`grpokit.serve.app.ServeState` (the handlers of ``grpokit serve``:
``decide``, ``rewards``, ``activate``, the policy polling, the event index) with its **own**
write-ahead decision log, ``<wal_dir>/shard-<i>/`` (segments ``seg-<i·10^10 + k>.wal``, so segment
numbers never collide across shards), and every shard flushes its segments into the same DuckDB
store: the store's ``decisions`` / ``rewards`` / ``activations`` tables hold all of them, one table
each (``grpokit serve export``, ``grpokit evaluate`` read it as usual).

An ingress replica (stateless; ``ingress_replicas`` of them) checks the token and the body, gives
every decision without an ``event_id`` a fresh random one, and routes event e to shard
``H(e) mod N`` (BLAKE2b): a decision, its retries, its rewards and its activation all reach the shard
that holds e in its index, so idempotent retries and the reward join behave as in one process. A
draw depends only on (seed, event id) (``u = H(seed, e)``), so a shard decides exactly what the single
process would for the same event id and context.

Said plainly: a batch is split across shards; if one shard refuses its part (a context that fails
the policy's features: 422), the other shards' parts are already decided and logged, with their
event ids (send event ids to retry idempotently). Rewards are checked on every shard first, so an
unknown event id refuses the whole reward batch, as in one process. The admin endpoints are not
served here: promote with ``grpokit policy promote`` on the store; every shard picks the new version
up within ``log.poll_interval_s``. ``/metrics`` is not aggregated (Ray Serve exports its own).
The single-process ``grpokit serve`` stays the default.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path

__all__ = ["shard_of", "ServeReplicas", "start_replicas", "SEQ_STRIDE"]

SEQ_STRIDE = 10**10  #: shard i numbers its segments from i * SEQ_STRIDE + 1
APP_NAME = "grpokit"


def shard_of(event_id: str, n_shards: int) -> int:
    """The shard of event ``event_id``: BLAKE2b-64 of the id mod ``n_shards``."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "big") % n_shards


def _shard_log_class():
    from grpokit.serve.decision_log import DecisionLog

    class ShardLog(DecisionLog):
        """A decision log whose segment numbers start at ``seq_base`` (unique across shards)."""

        seq_base = 0

        def recover(self) -> dict:
            info = super().recover()
            self._seq = max(self._seq, self.seq_base)
            return info

    return ShardLog


def _shard_config(config_dict: dict, shard: int):
    from grpokit.serve.config import ServeConfig

    base = ServeConfig(**config_dict)
    log = {**config_dict.get("log", {}), "wal_dir": str(base.wal_dir / f"shard-{shard:02d}")}
    return ServeConfig(**{**{k: v for k, v in config_dict.items() if k != "rollout"}, "log": log})


class DecisionShard:
    """One shard replica: the service's :class:`ServeState` with its own decision log (a Ray Serve
    deployment class; methods answer ``("ok", payload)`` or ``("error", status, message, loc, kind)``)."""

    def __init__(self, config_dict: dict, shard: int):
        import torch

        from grpokit.serve.app import ServeState

        cfg = _shard_config(config_dict, shard)
        torch.set_num_threads(cfg.torch_threads)
        self.shard = shard
        self.state = ServeState(cfg)  # the store already has the current version (the driver promoted it)
        c = cfg.log
        log = _shard_log_class()(cfg.store, cfg.wal_dir, group_commit_ms=c.group_commit_ms, fsync=c.fsync,
                                 flush_interval_s=c.flush_interval_s, poll_interval_s=c.poll_interval_s,
                                 segment_max_bytes=c.segment_max_bytes, lock_timeout_s=c.store_lock_timeout_s,
                                 on_flush=self.state._poll,
                                 preallocate_bytes=c.preallocate_bytes)
        log.seq_base = shard * SEQ_STRIDE
        self.state.log = log
        self.state.startup()
        self.closed = False

    @staticmethod
    def _error(err) -> tuple:
        return ("error", err.status, err.message, err.loc, err.kind)

    async def decide(self, body) -> tuple:
        from grpokit.serve.requests import ApiError

        try:
            return ("ok", await self.state.decide(body))
        except ApiError as err:
            return self._error(err)

    async def unknown(self, event_ids: list[str]) -> list[str]:
        """The ids of ``event_ids`` this shard never decided."""
        return [e for e in event_ids if await self.state.find(e) is None]

    async def rewards(self, entries: list) -> tuple:
        from grpokit.serve.requests import ApiError

        try:
            return ("ok", await self.state.rewards([tuple(e) for e in entries]))
        except ApiError as err:
            return self._error(err)

    async def activate(self, event_id: str) -> tuple:
        from grpokit.serve.requests import ApiError

        try:
            return ("ok", await self.state.activate(event_id))
        except ApiError as err:
            return self._error(err)

    def health(self) -> dict:
        return {**self.state.health(), "shard": self.shard, "wal_dir": str(self.state.log.wal_dir),
                "pid": os.getpid()}

    def describe(self) -> dict:
        return self.state.describe()

    def close(self) -> dict:
        """Acknowledge what is queued and move every segment into the store (idempotent)."""
        if not self.closed:
            self.closed = True
            self.state.shutdown()
        return {"shard": self.shard, "flushed": self.state.log.flushed}

    def __del__(self):  # Ray Serve calls it when the replica is stopped
        try:
            self.close()
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass


def _json(obj, status: int = 200):
    from starlette.responses import Response

    return Response(json.dumps(obj, separators=(",", ":")).encode(), status_code=status, media_type="application/json")


class Ingress:
    """Auth, body checks, event ids and routing to the shards (a Ray Serve deployment class)."""

    def __init__(self, shards: list, config_dict: dict, tokens):
        from grpokit.serve.config import ServeConfig

        self.shards, self.config, self.tokens = shards, ServeConfig(**config_dict), tokens
        self.n = len(shards)

    async def __call__(self, request):
        from grpokit.serve.auth import check_request, error_body
        from grpokit.serve.requests import ApiError

        path, method = request.url.path, request.method
        denied = check_request(path, request.headers.get("authorization"), self.tokens)
        if denied is not None:
            from starlette.responses import Response

            headers = {"www-authenticate": 'Bearer realm="grpokit"'} if denied[0] == 401 else {}
            return Response(error_body(denied[1]), status_code=denied[0], media_type="application/json", headers=headers)
        try:
            parts = path.strip("/").split("/")
            if method == "POST" and path == "/v1/decide":
                return _json(await self._decide(request))
            if method == "POST" and len(parts) == 4 and parts[:2] == ["v1", "events"] and parts[3] == "reward":
                return _json((await self._reward_one(parts[2], request)))
            if method == "POST" and path == "/v1/rewards":
                return _json(await self._rewards(request))
            if method == "POST" and len(parts) == 4 and parts[:2] == ["v1", "events"] and parts[3] == "activate":
                return _json(self._unwrap(await self.shards[shard_of(parts[2], self.n)].activate.remote(parts[2])))
            if method == "GET" and path == "/v1/health":
                shards = await asyncio.gather(*(s.health.remote() for s in self.shards))
                ok = all(h["status"] == "ok" for h in shards)
                return _json({"status": "ok" if ok else "degraded", "replicas": self.n,
                              "policy_version": shards[0]["policy_version"], "shards": shards})
            if method == "GET" and path == "/v1/policy":
                return _json({**(await self.shards[0].describe.remote()), "replicas": self.n})
            raise ApiError(404, f"{method} {path} is not served by the replicated service "
                                "(admin: use 'grpokit policy' on the store)")
        except ApiError as err:
            return _json(err.body(), err.status)

    @staticmethod
    def _unwrap(res: tuple, remap=None):
        from grpokit.serve.requests import ApiError

        if res[0] == "ok":
            return res[1]
        _, status, message, loc, kind = res
        raise ApiError(status, message, remap(loc) if remap and loc else loc, kind)

    async def _decide(self, request):
        from grpokit.serve.requests import parse_decide, read_json

        c = self.config
        body = await read_json(request, c.limits.max_body_bytes)
        items, is_batch, want = parse_decide(body, c.limits.max_batch)  # 422/413 before any shard decides
        raw = body["batch"] if is_batch else [{k: v for k, v in body.items() if k != "probabilities"}]
        fresh = os.urandom(16 * len(items)).hex()
        groups: dict[int, list[int]] = {}
        sent = []
        for i, it in enumerate(items):
            eid = it.event_id if it.event_id is not None else fresh[32 * i:32 * i + 32]
            sent.append({**raw[i], "event_id": eid})
            groups.setdefault(shard_of(eid, self.n), []).append(i)
        if not is_batch:
            s = next(iter(groups))
            return self._unwrap(await self.shards[s].decide.remote({**sent[0], "probabilities": want}))
        order = list(groups.items())
        answers = await asyncio.gather(*(self.shards[s].decide.remote(
            {"batch": [sent[i] for i in idx], "probabilities": want}) for s, idx in order))
        out: list = [None] * len(items)
        for (s, idx), res in zip(order, answers):
            remap = (lambda loc, idx=idx: [loc[0], idx[loc[1]], *loc[2:]] if len(loc) > 1 and loc[0] == "batch" else loc)
            decisions = self._unwrap(res, remap)["decisions"]
            for i, d in zip(idx, decisions):
                out[i] = d
        return {"decisions": out}

    async def _reward_one(self, event_id: str, request):
        from grpokit.serve.requests import parse_reward, read_json

        c = self.config
        value, comps = parse_reward(await read_json(request, c.limits.max_body_bytes), c.reward.weights)
        return self._unwrap(await self.shards[shard_of(event_id, self.n)].rewards.remote([(event_id, value, comps)]))[0]

    async def _rewards(self, request):
        from grpokit.serve.requests import ApiError, parse_rewards, read_json

        c = self.config
        entries = parse_rewards(await read_json(request, c.limits.max_body_bytes), c.reward.weights, c.limits.max_batch)
        groups: dict[int, list[int]] = {}
        for i, (eid, _, _) in enumerate(entries):
            groups.setdefault(shard_of(eid, self.n), []).append(i)
        order = list(groups.items())
        unknown = await asyncio.gather(*(self.shards[s].unknown.remote([entries[i][0] for i in idx]) for s, idx in order))
        missing = {e for u in unknown for e in u}
        if missing:  # nothing is recorded, as in one process
            i = next(i for i, e in enumerate(entries) if e[0] in missing)
            where = f"rewards[{i}].event_id: " if len(entries) > 1 else ""
            raise ApiError(404, f"{where}unknown event_id {entries[i][0]!r}: no decision was made with this id")
        answers = await asyncio.gather(*(self.shards[s].rewards.remote([entries[i] for i in idx]) for s, idx in order))
        out: list = [None] * len(entries)
        for (s, idx), res in zip(order, answers):
            for i, r in zip(idx, self._unwrap(res)):
                out[i] = r
        return {"results": out}


class ServeReplicas:
    """A running replicated service: ``url``, ``shards``; :meth:`stop` flushes every shard's log into
    the store and removes the Ray Serve application."""

    def __init__(self, url: str, shards: list, store: str):
        self.url, self.shards, self.store = url, shards, store

    def stop(self) -> list[dict]:
        from ray import serve

        out = [h.close.remote().result(timeout_s=120) for h in self.shards]
        serve.delete(APP_NAME)
        serve.shutdown()
        return out


def _recover_orphans(config, n_shards: int) -> int:
    """Move the segments of shard folders beyond ``n_shards`` (a run with more shards that crashed)
    into the store, so that nothing acknowledged is left behind when the shard count shrinks."""
    from grpokit.serve.decision_log import DecisionLog

    moved = 0
    root = config.wal_dir
    for d in sorted(root.glob("shard-*")) if root.is_dir() else []:
        try:
            i = int(d.name.split("-", 1)[1])
        except ValueError:
            continue
        if i >= n_shards and any(d.glob("seg-*.wal")):
            log = DecisionLog(config.store, d, lock_timeout_s=config.log.store_lock_timeout_s)
            moved += log.recover()["records"]
            log._unlock()
    return moved


def start_replicas(config, policy_path: str | Path | None = None, *, replicas: int = 2, ingress_replicas: int = 1,
                   cpus_per_replica: float = 1.0, token_file: str | None = None, admin_token_file: str | None = None,
                   address: str | None = None) -> ServeReplicas:
    """Register and promote ``policy_path`` (if given) in ``config.store``, then serve ``replicas``
    shard replicas behind ``ingress_replicas`` ingress replicas on ``config.host:config.port`` with
    Ray Serve; returns the running service (``.stop()`` it)."""
    from grpokit.scale._ray import init_ray
    from grpokit.serve.app import StartupError
    from grpokit.serve.auth import check_bind, load_tokens
    from grpokit.serve.tables import connect
    from grpokit.serve import versions

    if replicas < 1 or ingress_replicas < 1:
        raise ValueError(f"replicas and ingress_replicas must be >= 1, got {replicas} and {ingress_replicas}")
    tokens = load_tokens(config.auth, token_file, admin_token_file)
    check_bind(config.host, tokens)
    con = connect(config.store, config.log.store_lock_timeout_s)
    try:
        versions.ensure_version_tables(con)
        if policy_path is not None:
            reg = versions.register(con, config.store, policy_path, loader=versions.load_deployed,
                                    note="grpokit serve ray --policy")
            versions.promote(con, reg["version"], note="grpokit serve ray --policy")
        if "rollout" in config.model_fields_set:
            versions.set_rollout(con, config.rollout)
        if versions.current_version(con) is None:
            raise StartupError(f"the store {config.store} has no current policy version: pass --policy FILE")
    finally:
        con.close()
    _recover_orphans(config, replicas)
    init_ray(address)
    from ray import serve

    cfg = config.model_dump(mode="json")
    serve.start(http_options={"host": config.host, "port": config.port})
    opts = {"num_cpus": cpus_per_replica}
    shards = [serve.deployment(DecisionShard, name=f"shard-{i:02d}", num_replicas=1, ray_actor_options=opts,
                               max_ongoing_requests=256).bind(cfg, i) for i in range(replicas)]
    ingress = serve.deployment(Ingress, name="ingress", num_replicas=ingress_replicas,
                               ray_actor_options={"num_cpus": min(cpus_per_replica, 0.5)},
                               max_ongoing_requests=256).bind(shards, cfg, tokens)
    serve.run(ingress, name=APP_NAME, route_prefix="/")
    app = serve.get_app_handle(APP_NAME)  # noqa: F841 - waits until the application is running
    handles = [serve.get_deployment_handle(f"shard-{i:02d}", app_name=APP_NAME) for i in range(replicas)]
    return ServeReplicas(f"http://{config.host}:{config.port}", handles, str(config.store))
