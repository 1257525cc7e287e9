"""A small Python client of the decision service, over httpx.

Example::

    from grpokit.serve import Client

    with Client("http://127.0.0.1:8000", token=os.environ.get("GRPOKIT_API_TOKEN")) as c:
        d = c.decide({"recency": 0.3, "frequency": 1.2, ...}, unit_id="customer-17")
        d["event_id"], d["action"], d["action_code"], d["propensity"], d["policy_version"], d["arm"]
        c.reward(d["event_id"], 12.5)                       # or components={"revenue": 20, "cost": -7.5}
        ds = c.decide_batch([ctx1, ctx2], unit_ids=["u1", "u2"])   # list of decisions, same order
        c.reward_batch([(d["event_id"], 1.0) for d in ds])

Every call returns the decoded JSON answer; any answer other than 2xx raises :class:`ServeError`
with ``status`` and the server's message (``error``), e.g. ``ServeError(422, "context.age: expected
a number, got a str ('x')")``. Network failures raise httpx's own errors (``httpx.TransportError``):
retrying a decide with the same ``event_id`` is safe (the server returns the stored decision), and
the client does it once itself when the server dropped a kept-alive connection as the request went
out (decides whose items all carry an event_id, reads, rollout settings; reward posts with
``retry_rewards=True``, right for the server's default reward aggregation "first").
``http=`` takes a ready httpx.Client (for instance FastAPI's ``TestClient(app)``) instead of a URL.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

__all__ = ["Client", "ServeError"]


class ServeError(RuntimeError):
    """A non-2xx answer: ``status`` (int), ``message`` (the server's ``error``), ``body`` (decoded JSON or text)."""

    def __init__(self, status: int, message: str, body: Any = None):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.body = body


class Client:
    """Synchronous client: ``decide``, ``decide_batch``, ``reward``, ``reward_batch``, ``activate``,
    ``policy``, ``health``, ``metrics``; admin: ``promote``, ``rollback``, ``set_rollout``, ``reload``."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", *, token: str | None = None,
                 admin_token: str | None = None, timeout: float = 10.0, http=None, retry_rewards: bool = False) -> None:
        if http is None:
            import httpx

            http = httpx.Client(base_url=base_url, timeout=timeout)
            self._owns = True
        else:
            self._owns = False
        self.http = http
        self.token = token
        self.admin_token = admin_token
        #: retry a reward post once after a dropped connection: safe with the server's reward
        #: aggregation "first" (a repeat is kept aside as a duplicate), not with "sum" (it would add twice)
        self.retry_rewards = retry_rewards

    # ------------------------------------------------------------------ plumbing
    def _headers(self, admin: bool = False) -> dict:
        tok = self.admin_token if admin else self.token
        return {"Authorization": f"Bearer {tok}"} if tok else {}

    def _call(self, method: str, path: str, json: Any = None, admin: bool = False, idempotent: bool = False) -> Any:
        """One request. ``idempotent`` (the server answers a repeat as the first: a decide whose items all
        carry an event_id, rewards, reads, rollout settings) allows one retry when the server closed a
        kept-alive connection as the request went out (``httpx.RemoteProtocolError``: uvicorn drops idle
        connections after its keep-alive timeout, and a client idle that long can race it)."""
        import httpx

        try:
            r = self.http.request(method, path, json=json, headers=self._headers(admin))
        except httpx.RemoteProtocolError:
            if not idempotent:
                raise
            r = self.http.request(method, path, json=json, headers=self._headers(admin))
        ctype = r.headers.get("content-type", "")
        body = r.json() if ctype.startswith("application/json") else r.text
        if r.status_code >= 300:
            msg = body.get("error") or body.get("detail") if isinstance(body, dict) else str(body)
            raise ServeError(r.status_code, str(msg), body)
        return body

    def close(self) -> None:
        if self._owns:
            self.http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ decisions
    def decide(self, context: Mapping[str, Any], *, event_id: str | None = None, unit_id: str | None = None,
               cohort: str | None = None, probabilities: bool = False, defer_activation: bool = False) -> dict:
        """One decision: ``event_id``, ``action`` (label), ``action_code``, ``propensity``, ``policy_version``,
        ``arm`` (+ ``probabilities``, the served distribution, when asked)."""
        body = _item(context, event_id, unit_id, cohort, defer_activation)
        if probabilities:
            body["probabilities"] = True
        return self._call("POST", "/v1/decide", body, idempotent=event_id is not None)

    def decide_batch(self, contexts: Sequence[Mapping[str, Any]], *, event_ids: Sequence[str | None] | None = None,
                     unit_ids: Sequence[str | None] | None = None, cohorts: Sequence[str | None] | None = None,
                     probabilities: bool = False, chunk: int = 1000) -> list[dict]:
        """Decisions for many contexts (same order as ``contexts``), ``chunk`` contexts per request."""
        n = len(contexts)
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        for name, seq in (("event_ids", event_ids), ("unit_ids", unit_ids), ("cohorts", cohorts)):
            if seq is not None and len(seq) != n:
                raise ValueError(f"{name} has {len(seq)} entries for {n} contexts")
        batch = [_item(c, event_ids[i] if event_ids else None, unit_ids[i] if unit_ids else None,
                       cohorts[i] if cohorts else None, False) for i, c in enumerate(contexts)]
        out: list[dict] = []
        for lo in range(0, n, chunk):
            body = {"batch": batch[lo:lo + chunk], "probabilities": probabilities}
            out += self._call("POST", "/v1/decide", body,
                              idempotent=all("event_id" in it for it in body["batch"]))["decisions"]
        return out

    def activate(self, event_id: str) -> dict:
        """Activate a decision made with ``defer_activation=True`` (it was shown after all)."""
        return self._call("POST", f"/v1/events/{event_id}/activate", idempotent=True)

    # ------------------------------------------------------------------ rewards
    def reward(self, event_id: str, value: float | None = None, *, components: Mapping[str, float] | None = None) -> dict:
        """Report what came of a decision: a number, or named components (weighted by the server's
        ``reward.weights``). Answers ``counted``, ``duplicate``, ``late``, ``value``, ``reward_id``."""
        return self._call("POST", f"/v1/events/{event_id}/reward", _reward(value, components),
                          idempotent=self.retry_rewards)

    def reward_batch(self, rewards: Iterable[tuple[str, float] | Mapping[str, Any]], chunk: int = 1000) -> list[dict]:
        """Many rewards: ``(event_id, value)`` pairs or ``{"event_id", "reward" | "components"}`` dicts,
        ``chunk`` per request."""
        items = []
        for r in rewards:
            if isinstance(r, Mapping):
                items.append(dict(r))
            else:
                eid, value = r
                items.append({"event_id": eid, "reward": value})
        out: list[dict] = []
        for lo in range(0, len(items), chunk):
            out += self._call("POST", "/v1/rewards", {"rewards": items[lo:lo + chunk]},
                              idempotent=self.retry_rewards)["results"]
        return out

    # ------------------------------------------------------------------ status
    def policy(self) -> dict:
        """The serving policy: version, fields (name, type), actions, epsilon, mode, rollout."""
        return self._call("GET", "/v1/policy", idempotent=True)

    def health(self) -> dict:
        return self._call("GET", "/v1/health", idempotent=True)

    def metrics(self) -> str:
        """The Prometheus text exposition."""
        return self._call("GET", "/metrics", idempotent=True)

    # ------------------------------------------------------------------ admin (needs the admin token)
    def promote(self, version: str) -> dict:
        return self._call("POST", "/v1/admin/promote", {"version": version}, admin=True)

    def rollback(self) -> dict:
        return self._call("POST", "/v1/admin/rollback", {}, admin=True)

    def set_rollout(self, mode: str, candidate: str | None = None, fraction: float = 0.0,
                    cohorts: Sequence[str] = (), salt: str = "grpokit") -> dict:
        body = {"mode": mode, "candidate": candidate, "fraction": fraction, "cohorts": list(cohorts), "salt": salt}
        return self._call("POST", "/v1/admin/rollout", body, admin=True, idempotent=True)

    def reload(self) -> dict:
        """Re-read the current version and rollout from the store now (instead of at the next flush)."""
        return self._call("POST", "/v1/admin/reload", {}, admin=True, idempotent=True)


def _item(context, event_id, unit_id, cohort, defer) -> dict:
    item: dict = {"context": dict(context)}
    if event_id is not None:
        item["event_id"] = event_id
    if unit_id is not None:
        item["unit_id"] = unit_id
    if cohort is not None:
        item["cohort"] = cohort
    if defer:
        item["defer_activation"] = True
    return item


def _reward(value, components) -> dict:
    if (value is None) == (components is None):
        raise ValueError("give exactly one of value or components")
    return {"reward": value} if value is not None else {"components": dict(components)}
