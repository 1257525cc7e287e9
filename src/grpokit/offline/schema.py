"""The schema of logged decisions: which column of a log plays which role.

A log is one row per decision the logging policy took: the context it saw, the action it chose,
the probability it gave that action, and what came of it. :class:`LogSchema` names the columns
(the defaults below fit a log whose columns already carry these names) and
:func:`grpokit.offline.io.read_log` turns a DataFrame, a Parquet/CSV file or a DuckDB table into
validated arrays, a :class:`LoggedDecisions`.

==============  ==================  =========================================================================
role            default column      type and meaning
==============  ==================  =========================================================================
decision_id     ``decision_id``     unique id of the decision (int or str). Optional: when the column is
                                    absent the ids 0..n-1 are generated. Duplicates are an error.
features        every column not    context features the policy sees: numbers and booleans, read as float64
                otherwise assigned  ``[n, d]`` (``features``/``feature_names``), and text labels
                and not suspect     (``categorical``: name -> str ``[n]``, one-hot encoded by the policy's
                                    FeatureEncoder). By default every column that no other role takes,
                                    except outcome-like and id-like columns, timestamps and constants
                                    (:func:`grpokit.offline.roles.infer_roles` says why, in
                                    ``LoggedDecisions.roles``; those are in ``ignored_columns``). NaN/inf
                                    and a column mixing numbers and text are errors. A datetime column
                                    named in ``features`` is read as days since 1970-01-01.
group           ``group``           optional cohort / segment (any labels: int or str). Stored as int codes
                                    0..k-1 into ``group_labels`` (sorted labels, or the order of ``groups``).
action          ``action``          required. The logged action: int codes 0..n_actions-1, or labels listed
                                    in ``actions`` (mapped to codes in that order). Non-integer values,
                                    codes outside the range and labels not in ``actions`` are errors.
reward          ``reward``          the scalar reward, float64. Required unless ``outcomes`` names several
                                    outcome columns; then it is used only if present (or named).
outcomes        (none)              list of named outcome columns (float64 each), e.g. ``["revenue",
                                    "churn"]``, for rewards combined later with weights.
pscore          ``pscore``          required. The logging policy's probability of the logged action, in
                                    (0, 1]. Needed for off-policy estimates (IPS, DR, ...).
position        ``position``        optional slot / rank the action was shown in (integer).
timestamp       ``timestamp``       optional time of the decision: datetimes (text is parsed; stored as
                                    ``datetime64[us]``, time zones converted to UTC) or numbers (epochs).
==============  ==================  =========================================================================

Plus ``reward_unit`` (optional words for the reward in reports, e.g. ``"EUR profit per customer"``),
``n_actions`` (optional: ``len(actions)`` when labels are given, else max action + 1) and
``actions`` (optional list of action labels, code ``i`` is ``actions[i]``) and ``groups`` (optional
list of group labels fixing the code order).

How optional roles are found: a role left at its default name is used when the log has that
column and skipped otherwise; a role *set explicitly* (``LogSchema(group="cohort")``) must be
present; ``None`` switches a role off (the column then counts as an ordinary column). A column
listed in ``features`` is never taken by a role left at its default.

Example::

    schema = LogSchema(decision_id="event_id", action="offer", actions=["none", "10%", "20%"],
                       reward="revenue", pscore="p_logged", group="segment",
                       features=["age", "tenure", "spend_30d"])
    log = read_log("events.parquet", schema)
    log.features.shape, log.action, log.pscore
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["LogSchema", "LoggedDecisions", "ROLE_FIELDS"]

#: Schema fields that each name a single column.
ROLE_FIELDS = ("decision_id", "group", "action", "reward", "pscore", "position", "timestamp")

Label = str | int


class LogSchema(BaseModel):
    """Names the columns of a decision log (see the module docstring for the table of roles)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    decision_id: str | None = "decision_id"
    features: list[str] | None = None  #: None: every numeric column no other role takes
    group: str | None = "group"
    action: str = "action"
    reward: str | None = "reward"
    outcomes: list[str] = Field(default_factory=list)
    pscore: str = "pscore"
    position: str | None = "position"
    timestamp: str | None = "timestamp"
    n_actions: int | None = Field(None, ge=1)
    actions: list[Label] | None = None  #: action labels; code i is actions[i]
    groups: list[Label] | None = None  #: group labels; code i is groups[i]
    reward_unit: str | None = None  #: the reward in words for reports, e.g. "EUR profit per customer"

    OPTIONAL_ROLES: ClassVar[tuple[str, ...]] = ("decision_id", "group", "reward", "position", "timestamp")

    @model_validator(mode="after")
    def _consistent(self) -> "LogSchema":
        if self.reward is None and not self.outcomes:
            raise ValueError("a log needs a reward: name the reward column, or list outcome columns in outcomes")
        if self.actions is not None:
            if len(self.actions) == 0:
                raise ValueError("actions: give at least one action label (or leave it out)")
            _no_duplicates("actions", self.actions)
            if self.n_actions is not None and self.n_actions != len(self.actions):
                raise ValueError(
                    f"n_actions={self.n_actions} but actions lists {len(self.actions)} labels; "
                    "give one of them or make them agree"
                )
        if self.groups is not None:
            if len(self.groups) == 0:
                raise ValueError("groups: give at least one group label (or leave it out)")
            _no_duplicates("groups", self.groups)
        if self.features is not None:
            _no_duplicates("features", self.features)
        _no_duplicates("outcomes", self.outcomes)
        # Columns named on purpose must not play two roles.
        explicit = self.model_fields_set | {"action", "pscore"}
        owners: dict[str, str] = {}
        named = [(r, getattr(self, r)) for r in ROLE_FIELDS if r in explicit and getattr(self, r) is not None]
        named += [("outcomes", c) for c in self.outcomes]
        named += [("features", c) for c in (self.features or [])]
        for role, col in named:
            if role == "features" and owners.get(col) == "group":
                continue  # the group column may also be a feature
            if col in owners and owners[col] != role:
                raise ValueError(f"column {col!r} is given two roles: {owners[col]} and {role}")
            owners[col] = role
        return self


def _no_duplicates(name: str, values: list) -> None:
    seen = set()
    for v in values:
        if v in seen:
            raise ValueError(f"{name}: {v!r} is listed twice")
        seen.add(v)


@dataclass(eq=False, repr=False)
class LoggedDecisions:
    """Validated arrays of a decision log, one entry per decision (``n`` rows).

    ``decision_id [n]`` (int64, or object array of str), ``features [n, d]`` float64 with
    ``feature_names`` (d names), ``group [n]`` int64 codes into ``group_labels`` (or both None),
    ``action [n]`` int64 codes in ``0..n_actions-1`` (labels in ``action_labels`` when the schema
    gave them, else None), ``reward [n]`` float64 or None, ``outcomes`` name -> float64 ``[n]``,
    ``pscore [n]`` float64 in (0, 1], ``position [n]`` int64 or None, ``timestamp [n]``
    (datetime64[us] or numeric) or None.

    ``schema`` is the *resolved* schema: every role names the column :meth:`to_frame` writes, so
    ``validate_log(log.to_frame(), log.schema)`` rebuilds the same arrays.
    """

    decision_id: np.ndarray
    features: np.ndarray
    feature_names: list[str]
    action: np.ndarray
    pscore: np.ndarray
    n_actions: int
    reward: np.ndarray | None = None
    outcomes: dict[str, np.ndarray] = field(default_factory=dict)
    group: np.ndarray | None = None
    group_labels: list | None = None
    position: np.ndarray | None = None
    timestamp: np.ndarray | None = None
    action_labels: list | None = None
    schema: LogSchema = field(default_factory=LogSchema)
    ignored_columns: list[str] = field(default_factory=list)  #: columns left out of the features (see roles)
    categorical: dict[str, np.ndarray] = field(default_factory=dict)  #: text features: name -> str labels [n]
    feature_kinds: dict[str, str] = field(default_factory=dict)  #: feature -> "number" | "bool" | "category"
    roles: list[dict] = field(default_factory=list)  #: every input column's role, kind and reason

    def __post_init__(self) -> None:
        n = len(self.action)
        if self.features.ndim != 2 or self.features.shape[1] != len(self.feature_names):
            raise ValueError(
                f"features must be [n, {len(self.feature_names)}] to match feature_names, got {self.features.shape}"
            )
        arrays = {"decision_id": self.decision_id, "features": self.features, "pscore": self.pscore}
        arrays.update({k: v for k, v in [("reward", self.reward), ("group", self.group),
                                         ("position", self.position), ("timestamp", self.timestamp)] if v is not None})
        arrays.update({f"outcomes[{k!r}]": v for k, v in self.outcomes.items()})
        arrays.update({f"categorical[{k!r}]": v for k, v in self.categorical.items()})
        for name, arr in arrays.items():
            if len(arr) != n:
                raise ValueError(f"{name} has {len(arr)} rows but action has {n}")
        if (self.group is None) != (self.group_labels is None):
            raise ValueError("group and group_labels go together: give both or neither")
        if self.action_labels is not None and len(self.action_labels) != self.n_actions:
            raise ValueError(f"{len(self.action_labels)} action labels for n_actions={self.n_actions}")

    def __len__(self) -> int:
        return len(self.action)

    @property
    def n_features(self) -> int:
        return self.features.shape[1]

    @property
    def feature_columns(self) -> list[str]:
        """Every feature column (numeric, boolean and categorical) in the schema's order."""
        listed = self.schema.features
        every = [*self.feature_names, *self.categorical]
        if listed is not None and sorted(listed) == sorted(every):
            return list(listed)
        return every

    def kind_of(self, name: str) -> str:
        """``number``, ``bool`` or ``category``: how the policy's encoder treats feature ``name``."""
        if name in self.categorical:
            return "category"
        return self.feature_kinds.get(name, "number")

    def feature_frame(self) -> pd.DataFrame:
        """The raw features as named columns: numbers (float64), booleans (bool), categories (str)."""
        cols: dict[str, Any] = {}
        for name in self.feature_columns:
            if name in self.categorical:
                cols[name] = self.categorical[name]
            else:
                j = self.feature_names.index(name)
                x = self.features[:, j]
                cols[name] = x.astype(bool) if self.kind_of(name) == "bool" else x
        return pd.DataFrame(cols)

    def __repr__(self) -> str:
        parts = [f"n={len(self)}", f"d={self.n_features}", f"n_actions={self.n_actions}"]
        if self.reward is not None:
            parts.append("reward")
        if self.categorical:
            parts.append(f"categorical={list(self.categorical)}")
        if self.outcomes:
            parts.append(f"outcomes={list(self.outcomes)}")
        if self.group is not None:
            parts.append(f"groups={len(self.group_labels or [])}")
        for opt in ("position", "timestamp"):
            if getattr(self, opt) is not None:
                parts.append(opt)
        return f"LoggedDecisions({', '.join(parts)})"

    def to_frame(self) -> pd.DataFrame:
        """The log as a DataFrame in the schema's column names (labels for actions and groups)."""
        s = self.schema
        cols: dict[str, Any] = {s.decision_id or "decision_id": self.decision_id}
        if self.group is not None:
            cols[s.group or "group"] = _label_column(self.group_labels, self.group)
        for j, name in enumerate(self.feature_names):
            cols[name] = self.features[:, j].astype(bool) if self.kind_of(name) == "bool" else self.features[:, j]
        for name, labels in self.categorical.items():
            cols[name] = labels
        if self.action_labels is not None:
            cols[s.action] = _label_column(self.action_labels, self.action)
        else:
            cols[s.action] = self.action
        if self.reward is not None:
            cols[s.reward or "reward"] = self.reward
        for name, values in self.outcomes.items():
            cols[name] = values
        cols[s.pscore] = self.pscore
        if self.position is not None:
            cols[s.position or "position"] = self.position
        if self.timestamp is not None:
            cols[s.timestamp or "timestamp"] = self.timestamp
        return pd.DataFrame(cols)

    def subset(self, idx: Any) -> "LoggedDecisions":
        """The decisions at ``idx`` (int positions, a boolean mask or a slice); labels are kept whole."""
        if isinstance(idx, (int, np.integer)):
            idx = [int(idx)]
        if not isinstance(idx, slice):
            idx = np.asarray(idx)
            if idx.dtype == bool and idx.shape != (len(self),):
                raise ValueError(f"a boolean mask must have shape ({len(self)},), got {idx.shape}")

        def take(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[idx]

        return LoggedDecisions(
            decision_id=self.decision_id[idx],
            features=self.features[idx],
            feature_names=list(self.feature_names),
            action=self.action[idx],
            pscore=self.pscore[idx],
            n_actions=self.n_actions,
            reward=take(self.reward),
            outcomes={k: v[idx] for k, v in self.outcomes.items()},
            group=take(self.group),
            group_labels=None if self.group_labels is None else list(self.group_labels),
            position=take(self.position),
            timestamp=take(self.timestamp),
            action_labels=None if self.action_labels is None else list(self.action_labels),
            schema=self.schema,
            ignored_columns=list(self.ignored_columns),
            categorical={k: v[idx] for k, v in self.categorical.items()},
            feature_kinds=dict(self.feature_kinds),
            roles=list(self.roles),
        )


def _label_column(labels: list, codes: np.ndarray) -> np.ndarray:
    """Codes back to their labels: int64 when every label is an int, else an object array."""
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in labels):
        return np.asarray(labels, dtype=np.int64)[codes]
    return np.asarray(labels, dtype=object)[codes]
