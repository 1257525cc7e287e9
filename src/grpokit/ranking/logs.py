"""Logged ranked requests: the schema, validation, and padded tensors for the offline auction.

A ranking log has **one row per candidate item** of a request: the request it belongs to, the
request/user features (repeated on every row of the request), the multi-task model's predictions
for that item (one column per task), the observed outcome per task, and optionally the position
the item was shown at and the user's type / segment. :class:`RankingSchema` names the columns and
:func:`read_ranking_log` turns a DataFrame, a Parquet/CSV file (or a DuckDB table) into a
:class:`RankingLog` of padded tensors, the input of :func:`grpokit.ranking.auction.auction`.

==============  ======================  ====================================================================
role            default column          type and meaning
==============  ======================  ====================================================================
request_id      ``request_id``          required. Which request (page view, query) the row belongs to (int
                                        or str). Requests keep the order of their first row.
item            (none)                  optional item id. When named, a (request, item) pair may occur
                                        only once.
features        (none)                  request / user features: numeric columns, read as float32
                                        ``[R, d]``. They must be **constant within a request** (they
                                        describe the request, not the item). Name them explicitly.
tasks           ``p_click``,            the multi-task model's predictions, one column per task, float32
                ``p_order``,            ``[R, N_max, K]`` in the order of ``tasks``. Tasks listed in
                ``order_value``         ``probability_tasks`` (default: names starting with ``p_``) must lie
                                        in [0, 1]; the others (values such as ``order_value``) may be any
                                        finite number.
labels          ``click``, ``order``,   the observed outcome of each task: ``labels`` maps task -> label
                ``gmv``                 column (every task needs one, label columns are distinct). Any
                                        finite number (clicks, orders, GMV), float32 ``[R, N_max, K]``.
position        ``position``            optional displayed position (non-negative integer), ``[R, N_max]``
                                        int64 (padding -1).
segment         ``segment``             optional user type / segment (int or str labels), constant within
                                        a request; stored as int64 codes ``[R]`` into ``segment_labels``
                                        (sorted labels, or the order of ``segments``).
==============  ======================  ====================================================================

Optional roles (``position``, ``segment``) follow :class:`grpokit.offline.schema.LogSchema`: left
at the default name, the role is used when the log has that column; *set explicitly* the column
must be there; ``None`` switches it off.

Padding: request r has ``n_r`` candidates, in the order of their rows; ``N_max = max n_r``.
Slots ``j >= n_r`` have ``mask[r, j] = False``, scores and labels 0, position -1 and
``row_index[r, j] = -1`` (``row_index`` maps every real slot back to its row in the input).

Every problem raises a :class:`RankingLogError` (a ``ValueError``) naming the column, the first
offending row (0-based position in the input) with its request id, and the value: missing columns
(listing the available ones), empty input, missing request ids, non-numeric / NaN / inf values,
probabilities outside [0, 1], non-integer or negative positions, features or segments that vary
within a request, requests with a single candidate (ranking needs at least two), duplicate
(request, item) pairs.

Example::

    schema = RankingSchema(request_id="rid", item="item_id", features=["age", "is_new"],
                           tasks=["p_click", "p_order", "order_value"],
                           labels={"p_click": "click", "p_order": "order", "order_value": "gmv"},
                           segment="user_type")
    log = read_ranking_log("ranked.parquet", schema)
    log.scores.shape     # [R, N_max, 3]
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from pandas.api import types as ptypes
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

from grpokit.offline.io import LogValidationError, _load_frame, _py, _Rows
from grpokit.offline.schema import _no_duplicates

__all__ = [
    "DEFAULT_LABELS",
    "DEFAULT_TASKS",
    "RankingLog",
    "RankingLogError",
    "RankingSchema",
    "read_ranking_log",
    "validate_ranking_log",
]

DEFAULT_TASKS = ["p_click", "p_order", "order_value"]
DEFAULT_LABELS = {"p_click": "click", "p_order": "order", "order_value": "gmv"}

Label = str | int


class RankingLogError(LogValidationError):
    """A ranking log that cannot be used; names the column, row, request id and value.

    The same facts are on the exception: ``column``, ``row``, ``request_id`` (also as
    ``decision_id``, as for :class:`~grpokit.offline.io.LogValidationError`) and ``value``.
    """

    def __init__(self, message: str, *, column: str | None = None, row: int | None = None,
                 request_id: Any = None, value: Any = None) -> None:
        super().__init__(message, column=column, row=row, decision_id=request_id, value=value)
        self.request_id = request_id


class RankingSchema(BaseModel):
    """Names the columns of a ranking log (see the module docstring for the table of roles)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    request_id: str = "request_id"
    item: str | None = None
    features: list[str] = Field(default_factory=list)
    tasks: list[str] = Field(default_factory=lambda: list(DEFAULT_TASKS), min_length=1)
    labels: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_LABELS))  #: task -> label column
    probability_tasks: list[str] | None = None  #: None: the tasks whose names start with "p_"
    position: str | None = "position"
    segment: str | None = "segment"
    segments: list[Label] | None = None  #: segment labels; code i is segments[i]

    #: keys a schema *file* must give (their defaults rarely fit a real log, and a silent default
    #: would read the wrong columns)
    FILE_REQUIRED: ClassVar[tuple[str, ...]] = ("request_id", "labels")

    @model_validator(mode="after")
    def _consistent(self) -> "RankingSchema":
        _no_duplicates("tasks", self.tasks)
        _no_duplicates("features", self.features)
        no_label = [t for t in self.tasks if t not in self.labels]
        unknown = [t for t in self.labels if t not in self.tasks]
        if no_label or unknown:
            parts = []
            if no_label:
                parts.append(f"no label column for task{'s' if len(no_label) > 1 else ''} {no_label}")
            if unknown:
                parts.append(f"labels given for unknown task{'s' if len(unknown) > 1 else ''} {unknown}")
            raise ValueError(
                "labels must map every task to its label column: " + "; ".join(parts)
                + f" (tasks: {self.tasks}, labels: {self.labels})"
            )
        _no_duplicates("label columns", [self.labels[t] for t in self.tasks])
        if self.probability_tasks is not None:
            _no_duplicates("probability_tasks", self.probability_tasks)
            bad = [t for t in self.probability_tasks if t not in self.tasks]
            if bad:
                raise ValueError(f"probability_tasks {bad} are not among the tasks {self.tasks}")
        if self.segments is not None:
            if not self.segments:
                raise ValueError("segments: give at least one segment label (or leave it out)")
            _no_duplicates("segments", self.segments)
        owners: dict[str, str] = {}
        named = [("request_id", self.request_id)]
        named += [("item", self.item)] if self.item is not None else []
        named += [("features", c) for c in self.features]
        named += [("tasks", t) for t in self.tasks]
        named += [("labels", self.labels[t]) for t in self.tasks]
        for role in ("position", "segment"):
            if role in self.model_fields_set and getattr(self, role) is not None:
                named.append((role, getattr(self, role)))
        for role, col in named:
            if col in owners:
                raise ValueError(f"column {col!r} is given two roles: {owners[col]} and {role}")
            owners[col] = role
        return self

    @property
    def label_columns(self) -> list[str]:
        """The label column of each task, in the order of ``tasks``."""
        return [self.labels[t] for t in self.tasks]

    @property
    def probability_task_names(self) -> list[str]:
        """The tasks whose predictions must lie in [0, 1]."""
        if self.probability_tasks is not None:
            return list(self.probability_tasks)
        return [t for t in self.tasks if t.startswith("p_")]


@dataclass(eq=False, repr=False)
class RankingLog:
    """Validated, padded tensors of a ranking log: R requests, up to ``N_max`` candidates, K tasks.

    ``features [R, d]`` float32 (``feature_names``), ``scores [R, N_max, K]`` float32 predictions
    (``tasks``), ``labels [R, N_max, K]`` float32 observed outcomes (``label_names``, label k belongs
    to task k), ``mask [R, N_max]`` bool (real candidates), ``position [R, N_max]`` int64 (padding
    -1) or None, ``request_ids [R]`` (numpy: int64 or object), ``segment [R]`` int64 codes into
    ``segment_labels`` (or both None), ``row_index [R, N_max]`` int64 row of the input (padding -1),
    ``item_ids [R, N_max]`` numpy object array (padding None) when the schema names an item column.
    """

    features: Tensor
    scores: Tensor
    labels: Tensor
    mask: Tensor
    request_ids: np.ndarray
    tasks: list[str]
    label_names: list[str]
    feature_names: list[str] = field(default_factory=list)
    position: Tensor | None = None
    segment: Tensor | None = None
    segment_labels: list | None = None
    row_index: Tensor | None = None
    item_ids: np.ndarray | None = None
    schema: RankingSchema = field(default_factory=RankingSchema)

    def __post_init__(self) -> None:
        if self.scores.ndim != 3:
            raise ValueError(f"scores must be [R, N, K], got {tuple(self.scores.shape)}")
        r, n, k = self.scores.shape
        if self.labels.shape != (r, n, k):
            raise ValueError(f"labels must have the shape of scores {(r, n, k)}, got {tuple(self.labels.shape)}")
        if self.mask.shape != (r, n):
            raise ValueError(f"mask must be [R, N] = {(r, n)}, got {tuple(self.mask.shape)}")
        if self.features.ndim != 2 or self.features.shape != (r, len(self.feature_names)):
            raise ValueError(f"features must be [R, d] = {(r, len(self.feature_names))}, "
                             f"got {tuple(self.features.shape)}")
        if len(self.tasks) != k or len(self.label_names) != k:
            raise ValueError(f"{len(self.tasks)} tasks and {len(self.label_names)} label names for K={k}")
        if len(self.request_ids) != r:
            raise ValueError(f"{len(self.request_ids)} request ids for R={r} requests")
        for name in ("position", "row_index"):
            t = getattr(self, name)
            if t is not None and t.shape != (r, n):
                raise ValueError(f"{name} must be [R, N] = {(r, n)}, got {tuple(t.shape)}")
        if (self.segment is None) != (self.segment_labels is None):
            raise ValueError("segment and segment_labels go together: give both or neither")
        if self.segment is not None and self.segment.shape != (r,):
            raise ValueError(f"segment must be [R] = [{r}], got {tuple(self.segment.shape)}")

    def __len__(self) -> int:
        return self.scores.shape[0]

    @property
    def n_candidates(self) -> Tensor:
        """``[R]`` number of real candidates per request."""
        return self.mask.sum(1)

    @property
    def device(self) -> torch.device:
        return self.scores.device

    def __repr__(self) -> str:
        r, n, k = self.scores.shape
        parts = [f"requests={r}", f"max_candidates={n}", f"tasks={self.tasks}", f"labels={self.label_names}",
                 f"d={len(self.feature_names)}"]
        if self.position is not None:
            parts.append("position")
        if self.segment is not None:
            parts.append(f"segments={len(self.segment_labels or [])}")
        return f"RankingLog({', '.join(parts)})"

    def to(self, device: Any) -> "RankingLog":
        """A copy with every tensor on ``device`` (numpy fields are shared)."""
        def mv(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device)
        return replace(self, features=mv(self.features), scores=mv(self.scores), labels=mv(self.labels),
                       mask=mv(self.mask), position=mv(self.position), segment=mv(self.segment),
                       row_index=mv(self.row_index))

    def select(self, index: Any) -> "RankingLog":
        """The requests ``index`` (int tensor / array / list, or a slice), e.g. a training batch."""
        if isinstance(index, slice):
            idx = torch.arange(len(self))[index]
        else:
            idx = torch.as_tensor(np.asarray(index.cpu() if isinstance(index, Tensor) else index), dtype=torch.long)
            if idx.ndim == 0:
                idx = idx.reshape(1)
        np_idx = idx.numpy()
        dev_idx = idx.to(self.device)

        def pick(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[dev_idx.to(t.device)]
        return replace(self, features=pick(self.features), scores=pick(self.scores), labels=pick(self.labels),
                       mask=pick(self.mask), position=pick(self.position), segment=pick(self.segment),
                       row_index=pick(self.row_index), request_ids=self.request_ids[np_idx],
                       item_ids=None if self.item_ids is None else self.item_ids[np_idx])


# --------------------------------------------------------------------------------------- reading


def read_ranking_log(source: Any, schema: RankingSchema | None = None, *, table: str | None = None,
                     con: Any = None) -> RankingLog:
    """Read and validate a ranking log into padded tensors (a :class:`RankingLog`).

    ``source``: a pandas DataFrame, a ``.parquet`` / ``.csv`` path, or a DuckDB table (``table=`` /
    ``con=`` as in :func:`grpokit.offline.io.read_log`). ``schema`` defaults to ``RankingSchema()``.
    """
    schema = RankingSchema() if schema is None else schema
    try:
        df = _load_frame(source, table=table, con=con)
    except RankingLogError:
        raise
    except LogValidationError as e:
        raise RankingLogError(str(e), column=e.column, row=e.row, value=e.value) from None
    return validate_ranking_log(df, schema)


class _Where(_Rows):
    """Words row references: the 0-based row of the input and its request id."""

    error = RankingLogError

    def __init__(self, rid: np.ndarray) -> None:
        super().__init__(None)
        self.rid = rid

    def where(self, i: int) -> tuple[str, dict]:
        rid = _py(self.rid[i])
        return f"row {i} (request {rid!r})", {"request_id": rid}


def _numbers(s: pd.Series, col: str, where: _Where, what: str) -> np.ndarray:
    """A numeric column as float64 without NaN/inf; text, dates and mixed columns are errors."""
    if ptypes.is_bool_dtype(s) or (ptypes.is_numeric_dtype(s) and not ptypes.is_complex_dtype(s)):
        values = s.to_numpy(dtype=np.float64, na_value=np.nan)
    elif ptypes.is_datetime64_any_dtype(s) or ptypes.is_timedelta64_dtype(s):
        raise where.fail(col, 0, f"{what} column holds dates ({s.iloc[0]!r}), not numbers", value=s.iloc[0])
    else:
        vals = s.to_numpy(dtype=object)
        coerced = pd.to_numeric(pd.Series(vals, dtype=object), errors="coerce").to_numpy(dtype=np.float64,
                                                                                          na_value=np.nan)
        present = ~pd.isna(vals)
        where.first(col, present & np.isnan(coerced), lambda v: f"{what} value {v!r} is not a number", vals,
                    hint="give numbers")
        values = coerced
    where.first(col, ~np.isfinite(values),
                lambda v: f"{what} value {v!r} is not finite (NaN, missing values and inf are not allowed)", values)
    return values


def _constant_within(values: np.ndarray, codes: np.ndarray, first: np.ndarray, col: str, where: _Where,
                     what: str, shown: np.ndarray | None = None) -> None:
    ref = values[first[codes]]
    bad = ref != values
    if bad.any():
        values = values if shown is None else shown
        j = int(np.flatnonzero(bad)[0])
        i = int(first[codes[j]])
        rid = _py(where.rid[j])
        raise RankingLogError(
            f"column {col!r}: {what} must be constant within a request, but request {rid!r} has "
            f"{_py(values[i])!r} at row {i} and {_py(values[j])!r} at row {j}"
            + ("; item-level columns are not request features" if what == "request feature" else ""),
            column=col, row=j, request_id=rid, value=_py(values[j]),
        )


def validate_ranking_log(df: pd.DataFrame, schema: RankingSchema | None = None) -> RankingLog:
    """Check a DataFrame against ``schema`` and return its padded tensors (see the module docstring)."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"validate_ranking_log takes a pandas DataFrame, got a {type(df).__name__}")
    schema = RankingSchema() if schema is None else schema
    cols = list(df.columns)
    if len(df) == 0:
        raise RankingLogError("the ranking log is empty: no rows" + (f" (columns: {cols})" if cols else " and no columns"))
    not_text = [c for c in cols if not isinstance(c, str)]
    if not_text:
        raise RankingLogError(f"column names must be text, got {not_text!r}")
    doubled = df.columns[df.columns.duplicated()].tolist()
    if doubled:
        raise RankingLogError(f"column {doubled[0]!r} appears more than once", column=doubled[0])

    # ---- which columns, all missing ones in one message
    present = set(cols)
    needed: list[tuple[str, str]] = [(schema.request_id, "request id")]
    if schema.item is not None:
        needed.append((schema.item, "item id"))
    needed += [(t, "task prediction") for t in schema.tasks]
    needed += [(schema.labels[t], f"label of task {t!r}") for t in schema.tasks]
    needed += [(c, "request feature") for c in schema.features]
    optional: dict[str, str | None] = {}
    claimed = {c for c, _ in needed}
    for role in ("position", "segment"):
        name = getattr(schema, role)
        if name is None:
            optional[role] = None
        elif role in schema.model_fields_set:
            optional[role] = name
            needed.append((name, role))
        else:
            optional[role] = name if name in present and name not in claimed else None
    missing = [(c, role) for c, role in needed if c not in present]
    if missing:
        listed = ", ".join(f"{c!r} ({role})" for c, role in missing)
        raise RankingLogError(
            f"missing column{'s' if len(missing) > 1 else ''} {listed}; available columns: {cols}",
            column=missing[0][0],
        )

    # ---- requests, in order of first appearance
    rid_col = schema.request_id
    raw_rid = df[rid_col].to_numpy(dtype=object)
    n_rows = len(df)
    if pd.isna(raw_rid).any():
        i = int(np.flatnonzero(pd.isna(raw_rid))[0])
        raise RankingLogError(f"column {rid_col!r}, row {i}: missing request id ({_py(raw_rid[i])!r})"
                              + (f" ({int(pd.isna(raw_rid).sum()) - 1} more rows with the same problem)"
                                 if pd.isna(raw_rid).sum() > 1 else ""),
                              column=rid_col, row=i, value=_py(raw_rid[i]))
    codes, uniques = pd.factorize(df[rid_col], sort=False)
    codes = np.asarray(codes, dtype=np.int64)
    rid_values = df[rid_col].to_numpy()
    where = _Where(rid_values)
    n_req = len(uniques)
    counts = np.bincount(codes, minlength=n_req)
    _, first = np.unique(codes, return_index=True)  # first row of each request (codes are 0..R-1)
    request_ids = rid_values[first]
    if request_ids.dtype.kind not in "iub":
        request_ids = request_ids.astype(object)

    # ---- predictions and labels
    prob = set(schema.probability_task_names)
    scores = np.zeros((n_rows, len(schema.tasks)), dtype=np.float64)
    labels = np.zeros_like(scores)
    for k, task in enumerate(schema.tasks):
        scores[:, k] = _numbers(df[task], task, where, "prediction")
        if task in prob:
            where.first(task, (scores[:, k] < 0) | (scores[:, k] > 1),
                        lambda v: f"prediction {v!r} is outside [0, 1]", scores[:, k],
                        hint=f"task {task!r} is a probability (set probability_tasks to change which tasks are)")
    for k, task in enumerate(schema.tasks):
        col = schema.labels[task]
        labels[:, k] = _numbers(df[col], col, where, "label")
        where.first(col, labels[:, k] < 0, lambda v: f"label {v!r} is negative", labels[:, k],
                    hint="labels are clicks, orders and amounts such as GMV, all >= 0 (net refunds out first); "
                    "negative ones make every policy's NDCG 0")
    if not labels.any():
        raise RankingLogError(
            f"the ranking log has no feedback at all: every label ({', '.join(map(repr, schema.label_columns))}) "
            "is 0 in every row, so there is nothing to learn or judge a ranking by; check the label columns "
            "(labels = {task = column} in the schema)", column=schema.label_columns[0])

    # ---- position
    position_rows = None
    if optional["position"] is not None:
        col = optional["position"]
        pos = _numbers(df[col], col, where, "position")
        where.first(col, pos != np.round(pos), lambda v: f"position {v!r} is not an integer", pos)
        position_rows = pos.astype(np.int64)
        where.first(col, position_rows < 0, lambda v: f"position {v!r} is negative", position_rows,
                    hint="positions are slots 0, 1, ... or 1, 2, ...")

    # ---- items: no (request, item) pair twice
    item_rows = None
    if schema.item is not None:
        col = schema.item
        item_rows = df[col].to_numpy(dtype=object)
        where.first(col, pd.isna(item_rows), lambda v: f"missing item id ({v!r})", item_rows)
        dup = pd.DataFrame({"r": codes, "i": df[col].to_numpy()}).duplicated(keep="first").to_numpy()
        if dup.any():
            j = int(np.flatnonzero(dup)[0])
            same = (codes == codes[j]) & (df[col].to_numpy() == df[col].to_numpy()[j])
            i = int(np.flatnonzero(same)[0])
            rid = _py(rid_values[j])
            extra = int(dup.sum()) - 1
            raise RankingLogError(
                f"column {col!r}: item {_py(item_rows[j])!r} appears twice in request {rid!r}, at rows {i} and {j}"
                + (f" ({extra} more duplicate row{'s' if extra > 1 else ''})" if extra else ""),
                column=col, row=j, request_id=rid, value=_py(item_rows[j]),
            )

    # ---- request features: numeric and constant within each request
    features = np.zeros((n_rows, len(schema.features)), dtype=np.float64)
    for j, col in enumerate(schema.features):
        features[:, j] = _numbers(df[col], col, where, "request feature")
        _constant_within(features[:, j], codes, first, col, where, "request feature")

    # ---- segment: labels -> codes, constant within each request
    segment = segment_labels = None
    if optional["segment"] is not None:
        col = optional["segment"]
        vals = df[col].to_numpy(dtype=object)
        where.first(col, pd.isna(vals), lambda v: f"missing segment ({v!r})", vals)
        seg_codes, seg_labels = _segment_codes(df[col], col, where, schema.segments)
        _constant_within(seg_codes, codes, first, col, where, "the segment", shown=vals)
        segment = torch.from_numpy(seg_codes[first].copy())
        segment_labels = seg_labels

    # ---- every request needs two candidates
    single = counts < 2
    if single.any():
        r = int(np.flatnonzero(single)[0])
        i = int(first[r])
        more = int(single.sum()) - 1
        raise RankingLogError(
            f"column {rid_col!r}: request {_py(request_ids[r])!r} (row {i}) has a single candidate; "
            "ranking needs at least 2 candidates per request"
            + (f" ({more} more request{'s' if more > 1 else ''} with one candidate)" if more else "")
            + "; drop such requests first",
            column=rid_col, row=i, request_id=_py(request_ids[r]), value=_py(request_ids[r]),
        )

    # ---- pad: slot = rank of the row within its request
    n_max = int(counts.max())
    order = np.argsort(codes, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.empty(n_rows, dtype=np.int64)
    slot[order] = np.arange(n_rows) - np.repeat(starts, counts)

    def pad(values: np.ndarray, fill: Any, dtype: Any) -> np.ndarray:
        out = np.full((n_req, n_max) + values.shape[1:], fill, dtype=dtype)
        out[codes, slot] = values
        return out

    mask = np.zeros((n_req, n_max), dtype=bool)
    mask[codes, slot] = True
    log = RankingLog(
        features=torch.from_numpy(features[first].astype(np.float32)),
        scores=torch.from_numpy(pad(scores, 0.0, np.float32)),
        labels=torch.from_numpy(pad(labels, 0.0, np.float32)),
        mask=torch.from_numpy(mask),
        request_ids=request_ids,
        tasks=list(schema.tasks),
        label_names=schema.label_columns,
        feature_names=list(schema.features),
        position=None if position_rows is None else torch.from_numpy(pad(position_rows, -1, np.int64)),
        segment=segment,
        segment_labels=segment_labels,
        row_index=torch.from_numpy(pad(np.arange(n_rows, dtype=np.int64), -1, np.int64)),
        item_ids=None if item_rows is None else pad(item_rows, None, object),
        schema=schema.model_copy(update={"position": optional["position"], "segment": optional["segment"]}),
    )
    return log


def _segment_codes(s: pd.Series, col: str, where: _Where, labels: list | None) -> tuple[np.ndarray, list]:
    vals = s.to_numpy(dtype=object)
    if labels is not None:
        mapping = {lab: i for i, lab in enumerate(labels)}
        by_text = {str(lab): i for i, lab in enumerate(labels)}
        codes = np.array([mapping.get(v, by_text.get(str(v), -1)) for v in vals], dtype=np.int64)
        where.first(col, codes < 0, lambda v: f"unknown segment {v!r}: not one of the labels {list(labels)}", vals,
                    hint="list every segment label in RankingSchema.segments")
        return codes, list(labels)
    uniq = list(pd.unique(pd.Series(vals, dtype=object)))
    try:
        uniq = sorted(uniq)
    except TypeError:  # mixed types: keep the order of first appearance
        pass
    uniq = [_py(u) for u in uniq]
    mapping = {lab: i for i, lab in enumerate(uniq)}
    codes = np.fromiter((mapping[_py(v)] for v in vals), np.int64, len(vals))
    return codes, uniq
