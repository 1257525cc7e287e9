"""Prometheus metrics of one service instance (its own registry, so several apps can live in one process).

``grpokit_requests_total{route,status}``, ``grpokit_request_seconds{route}`` (latency histogram),
``grpokit_decisions_total{action,arm}``, ``grpokit_rewards_total{outcome}`` (counted, duplicate,
late, not_activated), ``grpokit_log_queue_depth`` (records waiting for their fsync),
``grpokit_log_unflushed`` (acknowledged, not yet in DuckDB), ``grpokit_policy_info{version,role}``.
"""

from __future__ import annotations

from bisect import bisect_left
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


_BUCKETS = (.0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1.0, 2.5, 5.0)


class _Requests:
    """Requests and their latency histogram, counted in plain Python on the event loop (the hot path:
    a dict look-up, a bisect and three additions per request, no lock) and exposed to the registry
    by :meth:`collect` as ``grpokit_requests_total`` and ``grpokit_request_seconds``."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}  #: (route, status) -> requests
        self.hist: dict[str, list] = {}  #: route -> [bucket counts (len(_BUCKETS) + 1), sum of seconds]

    def add(self, route: str, status: str, seconds: float) -> None:
        key = (route, status)
        self.counts[key] = self.counts.get(key, 0) + 1
        h = self.hist.get(route)
        if h is None:
            h = self.hist[route] = [[0] * (len(_BUCKETS) + 1), 0.0]
        h[0][bisect_left(_BUCKETS, seconds)] += 1  # le semantics: a value equal to a bound counts in it
        h[1] += seconds

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import HistogramMetricFamily

        req = _counter_family("grpokit_requests", "HTTP requests", ["route", "status"], self.counts)
        lat = HistogramMetricFamily("grpokit_request_seconds", "Request latency (seconds)", labels=["route"])
        for route, (counts, total) in sorted(self.hist.items()):
            cum, buckets = 0, []
            for bound, n in zip((*map(_bound, _BUCKETS), "+Inf"), counts):
                cum += n
                buckets.append((bound, float(cum)))
            lat.add_metric([route], buckets, total)
        return [req, lat]


def _counter_family(name: str, doc: str, labels: list[str], counts: dict[tuple[str, ...], int]):
    """A Prometheus counter family of plain-Python ``counts`` (label values tuple -> count), sorted by labels."""
    from prometheus_client.core import CounterMetricFamily

    fam = CounterMetricFamily(name, doc, labels=labels)
    for key, n in sorted(counts.items()):
        fam.add_metric(list(key), float(n))
    return fam


def _bound(x: float) -> str:
    from prometheus_client.utils import floatToGoString

    return floatToGoString(x)


class _Decisions:
    """Decisions served per (action, arm), counted in plain Python, exposed as ``grpokit_decisions_total``."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}

    def describe(self):
        return []

    def collect(self):
        return [_counter_family("grpokit_decisions", "Decisions served", ["action", "arm"], self.counts)]


class Metrics:
    def __init__(self, queue_depth: Callable[[], float], unflushed: Callable[[], float]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics

        disable_created_metrics()

        self.registry = r = CollectorRegistry()
        self._requests = _Requests()
        self._decisions = _Decisions()
        r.register(self._requests)
        r.register(self._decisions)
        self.rewards = Counter("grpokit_rewards", "Rewards received", ["outcome"], registry=r)
        Gauge("grpokit_log_queue_depth", "Log records waiting for their fsync", registry=r).set_function(queue_depth)
        Gauge("grpokit_log_unflushed", "Acknowledged log records not yet in DuckDB", registry=r).set_function(unflushed)
        self.policy = Gauge("grpokit_policy_info", "Serving policy versions (1 = in use)", ["version", "role"],
                            registry=r)
        self._labels: dict = {}  #: (path, status) -> (route label, status label), for the known routes

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        """Count one request and its latency (called on the event loop thread only)."""
        key = (path, status)
        lab = self._labels.get(key)
        if lab is None:
            lab = (route_label(path), str(status))
            if lab[0] in _ROUTES:  # event ids, admin and unknown paths: not cached per path
                self._labels[key] = lab
        self._requests.add(lab[0], lab[1], seconds)

    def count_decisions(self, action: str, arm: str, n: int) -> None:
        """``n`` more decisions of ``action`` in ``arm`` (event loop thread only)."""
        key = (action, arm)
        c = self._decisions.counts
        c[key] = c.get(key, 0) + n

    def set_policies(self, current: str, candidate: str | None) -> None:
        self.policy.clear()
        self.policy.labels(current, "current").set(1)
        if candidate:
            self.policy.labels(candidate, "candidate").set(1)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
