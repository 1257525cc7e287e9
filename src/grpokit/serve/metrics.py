"""Prometheus metrics of one service instance (its own registry, so several apps can live in one process).

``grpokit_requests_total{route,status}``, ``grpokit_request_seconds{route}`` (latency histogram),
``grpokit_decisions_total{action,arm}``, ``grpokit_rewards_total{outcome}`` (counted, duplicate,
late, not_activated), ``grpokit_log_queue_depth`` (records waiting for their fsync),
``grpokit_log_unflushed`` (acknowledged, not yet in DuckDB), ``grpokit_policy_info{version,role}``.
"""

from __future__ import annotations

from typing import Callable

__all__ = ["Metrics", "route_label"]

_ROUTES = ("/v1/decide", "/v1/rewards", "/v1/health", "/v1/policy", "/metrics")


def route_label(path: str) -> str:
    """A bounded route label for a request path (event ids are not labels)."""
    if path in _ROUTES:
        return path
    if path.startswith("/v1/events/"):
        return "/v1/events/{event_id}/" + path.rsplit("/", 1)[-1] if path.count("/") == 4 else "other"
    if path.startswith("/v1/admin/"):
        return path if path.count("/") == 3 else "other"
    return "other"


class Metrics:
    def __init__(self, queue_depth: Callable[[], float], unflushed: Callable[[], float]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

        disable_created_metrics()

        self.registry = r = CollectorRegistry()
        self.requests = Counter("grpokit_requests", "HTTP requests", ["route", "status"], registry=r)
        self.latency = Histogram("grpokit_request_seconds", "Request latency (seconds)", ["route"], registry=r,
                                 buckets=(.0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1.0, 2.5, 5.0))
        self.decisions = Counter("grpokit_decisions", "Decisions served", ["action", "arm"], registry=r)
        self.rewards = Counter("grpokit_rewards", "Rewards received", ["outcome"], registry=r)
        Gauge("grpokit_log_queue_depth", "Log records waiting for their fsync", registry=r).set_function(queue_depth)
        Gauge("grpokit_log_unflushed", "Acknowledged log records not yet in DuckDB", registry=r).set_function(unflushed)
        self.policy = Gauge("grpokit_policy_info", "Serving policy versions (1 = in use)", ["version", "role"],
                            registry=r)

        self._children: dict = {}

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        """Count one request and its latency (the labelled children are looked up once per label pair)."""
        key = (path, status)
        ch = self._children.get(key)
        if ch is None:
            route = route_label(path)
            if route not in _ROUTES:  # event ids, admin and unknown paths: not cached per path
                self.requests.labels(route, str(status)).inc()
                self.latency.labels(route).observe(seconds)
                return
            ch = self._children[key] = (self.requests.labels(route, str(status)), self.latency.labels(route))
        ch[0].inc()
        ch[1].observe(seconds)

    def set_policies(self, current: str, candidate: str | None) -> None:
        self.policy.clear()
        self.policy.labels(current, "current").set(1)
        if candidate:
            self.policy.labels(candidate, "candidate").set(1)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
