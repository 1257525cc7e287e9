"""Import Ray lazily, with an error that says how to install it; join or start a Ray cluster."""

from __future__ import annotations

import os

__all__ = ["require_ray", "init_ray", "BACKENDS"]

BACKENDS = ("local", "ray")


def require_ray():
    """``import ray``, or a clear ImportError naming the extra that provides it."""
    try:
        import ray
    except ImportError:  # pragma: no cover - exercised only where the extra is absent
        raise ImportError(
            "this needs Ray, grpokit's optional extra 'ray': pip install -c constraints.txt -e '.[ray]' "
            "(or pip install 'ray[data,train]>=2.50')"
        ) from None
    return ray


def init_ray(address: str | None = None, num_cpus: int | None = None):
    """Connect to a Ray cluster once per process: ``address`` (or ``$RAY_ADDRESS``), e.g. ``"auto"`` or
    ``"ray://head:10001"``; without one, start a local cluster with ``num_cpus`` CPUs. Reuses a
    connection that is already open (so tests and notebooks can call ``ray.init`` themselves)."""
    ray = require_ray()
    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS")
    kwargs = {"include_dashboard": False, "log_to_driver": False}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, **kwargs)
    return ray


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {list(BACKENDS)}")
    return backend
