"""Rollout arms: which policy answers a request, assigned deterministically.

- ``live``: every request gets the current version (arm ``"live"``).
- ``shadow``: the current version answers (arm ``"shadow"``); the candidate's choice under the same
  uniform draw (common random numbers) and its probability are logged beside it.
- ``canary``: a request whose cohort is in ``cohorts`` gets the candidate; otherwise the unit's
  bucket ``b = H(salt, unit_id) in [0, 1)`` (the first 8 bytes of BLAKE2b as a fraction of 2^64)
  decides: ``b < fraction`` -> arm ``"candidate"``, else ``"control"``. A unit therefore stays in its
  arm for as long as ``salt`` and ``fraction`` stay (raising the fraction only moves units from
  control to candidate). Without a unit id the event id is hashed (per-decision assignment).

Event uniforms: the draw of event ``e`` uses ``u = H(seed, e)`` (53 bits), so a retried or replayed
event draws the same action and a served decision can be re-derived from the log.
"""

from __future__ import annotations

import hashlib

import numpy as np

from grpokit.serve.config import RolloutConfig

__all__ = ["unit_bucket", "assign_arm", "event_uniforms", "ARMS"]

ARMS = ("live", "shadow", "control", "candidate")
_TWO64 = float(2**64)


def _h64(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


def unit_bucket(salt: str, unit: str) -> float:
    """``H(salt, unit) in [0, 1)``."""
    return _h64(f"{salt}\x00{unit}") / _TWO64


def assign_arm(rollout: RolloutConfig, unit_id: str | None, cohort: str | None, event_id: str) -> str:
    """The arm of one request (see the module docstring)."""
    if rollout.mode == "live":
        return "live"
    if rollout.mode == "shadow":
        return "shadow"
    if cohort is not None and cohort in rollout.cohorts:
        return "candidate"
    if rollout.fraction <= 0.0:
        return "control"
    key = unit_id if unit_id is not None else event_id
    return "candidate" if unit_bucket(rollout.salt, key) < rollout.fraction else "control"


def event_uniforms(seed: int, event_ids: list[str]) -> np.ndarray:
    """``float64 [n]`` in [0, 1): ``u = (H(seed, e) >> 11) / 2^53`` per event id."""
    prefix = f"{int(seed)}\x00"
    return np.fromiter(((_h64(prefix + e) >> 11) * (1.0 / 9007199254740992.0) for e in event_ids),
                       dtype=np.float64, count=len(event_ids))
