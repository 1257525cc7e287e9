"""The decision service's settings: one validated pydantic model, read from a TOML file's ``[serve]`` table.

Every key has a default, so ``grpokit serve --policy P`` needs no file. Unknown keys are errors
that name the key. Durations are seconds (``reward.window_s = 2`` in tests, 86400 by default).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = ["ServeConfig", "RewardConfig", "LogConfig", "RolloutConfig", "AuthConfig", "LimitsConfig",
           "load_serve_config", "ServeConfigError"]


class ServeConfigError(ValueError):
    """A serve config that cannot be used; the message names the key."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RewardConfig(_Model):
    """How rewards join decisions: ``first`` keeps the first reward per event (later ones are stored as
    duplicates, not added), ``sum`` adds every reward received within the window."""

    aggregation: Literal["first", "sum"] = "first"
    window_s: float = Field(86400.0, gt=0)  #: rewards after decision (or activation) + window are late
    default: float | None = None  #: reward of an event whose window closed without one (None: left out)
    weights: dict[str, float] = Field(default_factory=dict)  #: component weights (missing weight = 1)


class LogConfig(_Model):
    """The write-ahead decision log: segment files fsync'd in group commits, flushed into DuckDB."""

    wal_dir: str | None = None  #: default: "<store>.decision-log" next to the store
    group_commit_ms: float = Field(0.0, ge=0, le=100)  #: extra wait to gather a group before fsync (0: none;
    #: what queues while the writers are busy forms the next group anyway)
    writers: int = Field(4, ge=1, le=16)  #: writer threads: one group's fsync overlaps the next groups'
    fsync: bool = True  #: False only for throwaway experiments: acknowledged decisions may then be lost
    flush_interval_s: float = Field(5.0, gt=0, le=3600)  #: how often segments move into DuckDB
    poll_interval_s: float = Field(1.0, gt=0, le=3600)  #: how often the store is checked for promotions
    segment_max_bytes: int = Field(64 * 1024 * 1024, ge=4096)
    preallocate_bytes: int = Field(1024 * 1024, ge=0, le=256 * 1024 * 1024)  #: zero-filled chunk a segment is
    #: extended by ahead of its writes, so most fsyncs change no file size (0: plain appends)
    index_retention_s: float | None = None  #: in-memory event index horizon (default 2 x reward window)
    store_lock_timeout_s: float = Field(10.0, gt=0)  #: how long to wait for the store file's lock


class RolloutConfig(_Model):
    """Which policy answers: ``live`` (the current version), ``shadow`` (current answers, the candidate's
    choice is logged beside it) or ``canary`` (a deterministic share of units or a list of cohorts get
    the candidate). Changed at run time by ``grpokit policy rollout``."""

    mode: Literal["live", "shadow", "canary"] = "live"
    candidate: str | None = None  #: a registered version (needed by shadow and canary)
    fraction: float = Field(0.0, ge=0, le=1)  #: canary: share of hashed unit ids on the candidate
    cohorts: list[str] = Field(default_factory=list)  #: canary: cohorts that all get the candidate
    salt: str = "grpokit"  #: hash salt of unit assignment (change it to reshuffle units)

    @model_validator(mode="after")
    def _needs_candidate(self) -> "RolloutConfig":
        if self.mode != "live" and not self.candidate:
            raise ValueError(f"rollout.mode = {self.mode!r} needs rollout.candidate (a registered version)")
        return self


class AuthConfig(_Model):
    """Bearer tokens: from the environment (names below) or files (one token, whitespace stripped)."""

    token_env: str = "GRPOKIT_API_TOKEN"
    token_file: str | None = None
    admin_token_env: str = "GRPOKIT_ADMIN_TOKEN"
    admin_token_file: str | None = None


class LimitsConfig(_Model):
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)  #: larger bodies are answered 413
    max_batch: int = Field(10_000, ge=1)  #: larger batches are answered 413


class ServeConfig(_Model):
    """Everything ``grpokit serve`` needs besides the policy file."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    store: str = "grpokit.duckdb"
    epsilon: float = Field(0.05, ge=0, le=1)  #: served q = (1 - eps) pi + eps / A
    mode: Literal["sample", "greedy"] = "sample"
    seed: int = 0  #: the draw of event e uses u = hash(seed, e): retries and replays draw the same
    torch_threads: int = Field(1, ge=1)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)

    @property
    def wal_dir(self) -> Path:
        return Path(self.log.wal_dir) if self.log.wal_dir else Path(str(self.store) + ".decision-log")

    @property
    def index_retention_s(self) -> float:
        r = self.log.index_retention_s
        return 2.0 * self.reward.window_s if r is None else r


def _format(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "serve"
        parts.append(f"serve.{loc}: {e['msg']}" + (f" (got {e['input']!r})" if e["type"] != "missing" else ""))
    return "; ".join(parts)


def load_serve_config(path: str | Path | None = None, **overrides) -> ServeConfig:
    """A :class:`ServeConfig` from the ``[serve]`` table of a TOML file (or defaults), then ``overrides``
    (top-level keys such as ``host``, ``port``, ``store``; None values are ignored)."""
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ServeConfigError(f"serve config {p} does not exist")
        try:
            raw = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as err:
            raise ServeConfigError(f"serve config {p}: {err}") from None
        data = raw.get("serve", raw)
        if not isinstance(data, dict):
            raise ServeConfigError(f"serve config {p}: [serve] must be a table")
    data = {**data, **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return ServeConfig(**data)
    except ValidationError as err:
        raise ServeConfigError(_format(err)) from None
