"""The preprocessing a deployed policy carries: raw named fields -> the network's input vector.

Fitted on the training rows, saved inside ``policy.pt`` as plain Python data (safe to load with
``torch.load(weights_only=True)``), applied identically at scoring and serving time:

- number: ``z = (x - mean) / std`` (population std, as scikit-learn's StandardScaler; 1 where the
  column is constant);
- bool: ``1.0`` / ``0.0`` (True/False, 1/0, "true"/"false", "yes"/"no");
- category: one-hot over the ``max_categories - 1`` most frequent training levels plus an ``other``
  column that catches the rare levels and any level first seen after training.

A row with a missing field, an unknown field (for mappings), a NaN/inf, or a value of the wrong
type raises :class:`FeatureError`, which names the field and the row.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["FeatureEncoder", "FeatureError", "IdentityEncoder", "encoder_from_dict"]

FORMAT = "grpokit.features/1"
OTHER = "__other__"
_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}
_NUMBER_TYPES = frozenset({int, float})
_BOOL_TYPES = {bool}
_STR_TYPES = {str}


class FeatureError(ValueError):
    """A row that cannot be encoded; ``field`` and ``row`` say where."""

    def __init__(self, message: str, *, field: str | None = None, row: int | None = None):
        where = []
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__((", ".join(where) + ": " if where else "") + message)
        self.field = field
        self.row = row


def _as_float(value: Any, field: str, row: int) -> float:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        kind = "missing" if value is None else f"a {type(value).__name__} ({value!r})"
        raise FeatureError(f"expected a number, got {kind}", field=field, row=row)
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise FeatureError(f"expected a number, got {type(value).__name__} {value!r}", field=field, row=row) from None
    if not math.isfinite(x):
        raise FeatureError(f"expected a finite number, got {value!r}", field=field, row=row)
    if abs(x) > 3.0e38:
        raise FeatureError(f"{value!r} does not fit in float32", field=field, row=row)
    return x


def _as_bool(value: Any, field: str, row: int) -> float:
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return float(value)
    if isinstance(value, (float, np.floating)) and value in (0.0, 1.0):
        return float(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return 1.0 if value.strip().lower() in _TRUE else 0.0
    raise FeatureError(f"expected true/false, got {value!r}", field=field, row=row)


def _as_category(value: Any, field: str, row: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise FeatureError("missing value (a category is expected)", field=field, row=row)
    if isinstance(value, (dict, list, tuple)):
        raise FeatureError(f"expected a category label, got {type(value).__name__}", field=field, row=row)
    return str(value)


class FeatureEncoder:
    """Standardize numbers, encode booleans as 0/1 and categories one-hot with an ``other`` level.

    Use :meth:`infer` to pick each column's kind from a DataFrame's dtypes (strings and categoricals
    -> category, booleans -> bool, other numbers -> number), or pass the lists yourself.
    """

    def __init__(
        self,
        numeric: Sequence[str] = (),
        categorical: Sequence[str] = (),
        boolean: Sequence[str] = (),
        *,
        max_categories: int = 20,
        standardize: bool = True,
    ):
        names = [*numeric, *categorical, *boolean]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"feature(s) {dup} are listed under more than one kind")
        if not names:
            raise ValueError("a FeatureEncoder needs at least one feature")
        if max_categories < 2:
            raise ValueError(f"max_categories must be >= 2, got {max_categories}")
        self.numeric = list(numeric)
        self.categorical = list(categorical)
        self.boolean = list(boolean)
        self.max_categories = int(max_categories)
        self.standardize = bool(standardize)
        self.fields: list[dict] = []

    # ------------------------------------------------------------------ fitting
    @classmethod
    def infer(cls, df: pd.DataFrame, columns: Sequence[str], **kw) -> "FeatureEncoder":
        """An (unfitted) encoder with each of ``columns`` given the kind its dtype suggests."""
        numeric, categorical, boolean = [], [], []
        for c in columns:
            if c not in df.columns:
                raise FeatureError(f"no such column (columns: {list(df.columns)})", field=c)
            s = df[c]
            if pd.api.types.is_bool_dtype(s):
                boolean.append(c)
            elif pd.api.types.is_numeric_dtype(s):
                numeric.append(c)
            elif pd.api.types.is_datetime64_any_dtype(s):
                raise FeatureError("is a timestamp; derive numbers from it (e.g. days since) to use it", field=c)
            else:
                categorical.append(c)
        return cls(numeric, categorical, boolean, **kw)

    def fit(self, df: pd.DataFrame) -> "FeatureEncoder":
        """Learn means/stds and category levels from the training rows ``df``."""
        fields: list[dict] = []
        for c in self.numeric:
            x = self._frame_numeric(df, c)
            mean = float(x.mean()) if self.standardize else 0.0
            std = float(x.std()) if self.standardize else 1.0
            fields.append({"name": c, "type": "number", "mean": mean, "std": std if std > 1e-12 else 1.0})
        for c in self.categorical:
            s = self._column(df, c)
            if s.isna().any():
                raise FeatureError("missing value (a category is expected)", field=c, row=int(np.flatnonzero(s.isna())[0]))
            counts = s.astype(str).value_counts(sort=True)
            levels = sorted(counts.index[: self.max_categories - 1].tolist()) if len(counts) > self.max_categories - 1 \
                else sorted(counts.index.tolist())
            fields.append({"name": c, "type": "category", "categories": [str(v) for v in levels]})
        for c in self.boolean:
            self._frame_bool(df, c)
            fields.append({"name": c, "type": "bool"})
        order = {n: i for i, n in enumerate(df.columns)}
        self.fields = sorted(fields, key=lambda f: order.get(f["name"], 0))
        return self

    # ------------------------------------------------------------------ introspection
    @property
    def names(self) -> list[str]:
        """The raw input fields, in the order they were seen."""
        return [f["name"] for f in self.fields]

    @property
    def output_names(self) -> list[str]:
        """One name per column of :meth:`transform`'s output (``region=north``, ``region=__other__``)."""
        out = []
        for f in self.fields:
            if f["type"] == "category":
                out += [f"{f['name']}={v}" for v in f["categories"]] + [f"{f['name']}={OTHER}"]
            else:
                out.append(f["name"])
        return out

    @property
    def dim(self) -> int:
        return len(self.output_names)

    def _check_fitted(self) -> None:
        if not self.fields:
            raise RuntimeError("this FeatureEncoder is not fitted yet: call fit(df) first")

    # ------------------------------------------------------------------ transform
    def transform(self, rows: pd.DataFrame | Mapping | Sequence[Mapping], *, allow_extra: bool | None = None) -> np.ndarray:
        """``float32 [n, dim]`` from a DataFrame, one mapping, or a list of mappings.

        Extra columns are ignored in a DataFrame (ids, outcomes); in mappings they are refused
        unless ``allow_extra`` (a typo in a field name must not pass silently).
        """
        self._check_fitted()
        if isinstance(rows, pd.DataFrame):
            return self._transform_frame(rows)
        if isinstance(rows, Mapping):
            rows = [rows]
        return self._transform_records(list(rows), bool(allow_extra))

    def _transform_records(self, rows: list, allow_extra: bool) -> np.ndarray:
        fast = self._transform_records_fast(rows, allow_extra) if len(rows) > 2 else None
        return fast if fast is not None else self._transform_records_loop(rows, allow_extra)

    def _transform_records_fast(self, rows: list, allow_extra: bool) -> np.ndarray | None:
        """The column-block (numpy) encoding of ``rows``, or None when any row is not plainly valid
        (not a dict, a missing or extra field, a value not of the plain JSON type of its field: bool
        for bool, int/float for number, str for category, a non-finite or float32-overflowing
        number). The per-record loop then encodes it, or raises the error naming row and field;
        on plainly valid rows both give the same array, bit for bit (the same float64 operations,
        one rounding to float32)."""
        n, nf = len(rows), len(self.fields)
        if not n:
            return None
        for r in rows:
            if type(r) is not dict or (not allow_extra and len(r) != nf):
                return None
        num_names, num_cols, means, stds, bool_names, bool_cols, cats = [], [], [], [], [], [], []
        j = 0
        for f in self.fields:
            if f["type"] == "number":
                num_names.append(f["name"])
                num_cols.append(j)
                means.append(f["mean"])
                stds.append(f["std"])
                j += 1
            elif f["type"] == "bool":
                bool_names.append(f["name"])
                bool_cols.append(j)
                j += 1
            else:
                cats.append((f["name"], j, f["categories"]))
                j += len(f["categories"]) + 1
        out = np.zeros((n, j), dtype=np.float32)
        try:
            if num_names:
                vals = [r[name] for r in rows for name in num_names]
                if not set(map(type, vals)) <= _NUMBER_TYPES:
                    return None
                x = np.array(vals, dtype=np.float64).reshape(n, len(num_names))
                if not (np.abs(x) <= 3.0e38).all():  # NaN compares False: caught here too
                    return None
                out[:, num_cols] = (x - np.array(means)) / np.array(stds)
            if bool_names:
                vals = [r[name] for r in rows for name in bool_names]
                if set(map(type, vals)) != _BOOL_TYPES:
                    return None
                out[:, bool_cols] = np.array(vals, dtype=np.float32).reshape(n, len(bool_names))
            for name, start, levels in cats:
                col = [r[name] for r in rows]
                if set(map(type, col)) != _STR_TYPES:
                    return None
                lut: dict = {}
                for k, c in enumerate(levels):
                    lut.setdefault(c, k)  # the first match, as list.index
                other = len(levels)
                codes = np.fromiter((lut.get(v, other) for v in col), dtype=np.int64, count=n)
                out[np.arange(n), start + codes] = 1.0
        except (KeyError, OverflowError):  # a missing field; an int too large for a float
            return None
        return out

    def _transform_records_loop(self, rows: list, allow_extra: bool) -> np.ndarray:
        out = np.zeros((len(rows), self.dim), dtype=np.float32)
        known = set(self.names)
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise FeatureError(f"expected an object of named fields, got {type(row).__name__}", row=i)
            if not allow_extra:
                extra = [k for k in row if k not in known]
                if extra:
                    raise FeatureError(f"unknown field(s) {sorted(map(str, extra))}; expected {self.names}", row=i,
                                       field=str(extra[0]))
            j = 0
            for f in self.fields:
                name = f["name"]
                if name not in row:
                    raise FeatureError("missing field", field=name, row=i)
                v = row[name]
                if f["type"] == "number":
                    out[i, j] = (_as_float(v, name, i) - f["mean"]) / f["std"]
                    j += 1
                elif f["type"] == "bool":
                    out[i, j] = _as_bool(v, name, i)
                    j += 1
                else:
                    label = _as_category(v, name, i)
                    cats = f["categories"]
                    k = _index(cats, label)
                    out[i, j + (len(cats) if k < 0 else k)] = 1.0
                    j += len(cats) + 1
        return out

    def _column(self, df: pd.DataFrame, name: str) -> pd.Series:
        if name not in df.columns:
            raise FeatureError(f"missing column (the policy was trained on {self.names or self.numeric + self.categorical + self.boolean})",
                               field=name)
        return df[name]

    def _frame_numeric(self, df: pd.DataFrame, name: str) -> np.ndarray:
        s = self._column(df, name)
        if pd.api.types.is_bool_dtype(s):
            raise FeatureError("expected numbers, got true/false values (declare the column as a boolean feature)",
                               field=name, row=0)
        if not pd.api.types.is_numeric_dtype(s):
            coerced = pd.to_numeric(s, errors="coerce")
            bad = (coerced.isna() & s.notna()).to_numpy()
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise FeatureError(f"expected a number, got {s.iloc[row]!r}", field=name, row=row)
            s = coerced
        x = s.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(x) | (np.abs(np.nan_to_num(x)) > 3.0e38)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise FeatureError(f"expected a finite number that fits float32, got {x[row]!r}", field=name, row=row)
        return x

    def _frame_bool(self, df: pd.DataFrame, name: str) -> np.ndarray:
        s = self._column(df, name)
        if pd.api.types.is_bool_dtype(s) and not s.isna().any():
            return s.to_numpy(dtype=np.float32)
        return np.array([_as_bool(v, name, i) for i, v in enumerate(s.tolist())], dtype=np.float32)

    def _transform_frame(self, df: pd.DataFrame) -> np.ndarray:
        cols = []
        for f in self.fields:
            name = f["name"]
            if f["type"] == "number":
                cols.append(((self._frame_numeric(df, name) - f["mean"]) / f["std"])[:, None])
            elif f["type"] == "bool":
                cols.append(self._frame_bool(df, name)[:, None])
            else:
                s = self._column(df, name)
                if s.isna().any():
                    raise FeatureError("missing value (a category is expected)", field=name,
                                       row=int(np.flatnonzero(s.isna().to_numpy())[0]))
                cats = f["categories"]
                codes = pd.Index(cats).get_indexer(s.astype(str)).astype(np.int64)
                codes[codes < 0] = len(cats)
                block = np.zeros((len(df), len(cats) + 1), dtype=np.float32)
                block[np.arange(len(df)), codes] = 1.0
                cols.append(block)
        return np.concatenate(cols, axis=1).astype(np.float32, copy=False) if cols else np.zeros((len(df), 0), np.float32)

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        """Plain data (str, float, list, dict) that ``torch.load(weights_only=True)`` accepts."""
        self._check_fitted()
        return {"format": FORMAT, "max_categories": self.max_categories, "standardize": self.standardize,
                "fields": [dict(f) for f in self.fields]}

    @classmethod
    def from_dict(cls, data: Mapping) -> "FeatureEncoder":
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise ValueError(f"not a grpokit feature encoder (format {FORMAT} expected)")
        fields = [dict(f) for f in data["fields"]]
        kinds = {"number": [], "category": [], "bool": []}
        for f in fields:
            if f.get("type") not in kinds or not isinstance(f.get("name"), str):
                raise ValueError(f"bad feature field {f!r}")
            kinds[f["type"]].append(f["name"])
        enc = cls(kinds["number"], kinds["category"], kinds["bool"],
                  max_categories=int(data.get("max_categories", 20)), standardize=bool(data.get("standardize", True)))
        enc.fields = fields
        return enc

    def __repr__(self) -> str:
        return (f"FeatureEncoder(numeric={self.numeric}, categorical={self.categorical}, boolean={self.boolean}, "
                f"dim={self.dim if self.fields else '?'})")


def _index(seq: list[str], value: str) -> int:
    try:
        return seq.index(value)
    except ValueError:
        return -1


class IdentityEncoder(FeatureEncoder):
    """The features as given (numbers, no scaling): policies saved before encoders existed."""

    def __init__(self, names: Sequence[str]):
        super().__init__(list(names), standardize=False)
        self.fields = [{"name": n, "type": "number", "mean": 0.0, "std": 1.0} for n in names]

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["identity"] = True
        return d


def encoder_from_dict(data: Mapping | None, feature_names: Sequence[str] | None) -> FeatureEncoder | None:
    """The encoder stored in a policy file, an identity encoder on ``feature_names``, or None."""
    if data:
        return FeatureEncoder.from_dict(data)
    if feature_names:
        return IdentityEncoder(list(feature_names))
    return None
