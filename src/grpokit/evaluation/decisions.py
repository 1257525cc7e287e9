"""Decision files: one decision per unit of an evaluation population, in one format for every tool.

Columns: ``decision_id`` (the unit, 0..n-1, the same id ``grpokit scenario simulate`` writes;
``unit_id`` is accepted as another name for it), ``action`` (an offer code 0..A-1 or its name,
e.g. ``"free shipping"``, for categorical scenarios; a number for scalar ones) and optionally
``population`` (the fingerprint of the population the decisions were made for, see
:mod:`grpokit.evaluation.population`). Files grpokit writes also carry ``action_name`` and, in
parquet, the population and seeds in the file's metadata (key ``grpokit``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["ID_COLUMN", "ID_ALIASES", "action_codes", "read_decisions", "write_decisions", "DecisionFileError"]

ID_COLUMN = "decision_id"
ID_ALIASES = ("unit_id",)
_META_KEY = b"grpokit"


class DecisionFileError(ValueError):
    """A decision file that cannot be scored; the message names the column, the row and the value."""


def action_codes(values, names: list[str] | None, n_actions: int, *, ids=None, column: str = "action") -> np.ndarray:
    """Map actions given as codes (``2``, ``"2"``) or labels (``"10% off"``) to int codes 0..n_actions-1.

    A label wins over a code when a label is itself a number. Unknown values raise
    :class:`DecisionFileError` naming the first bad row, its id and value, and what is accepted.
    """
    vals = np.asarray(values, dtype=object)
    by_name = {str(n): i for i, n in enumerate(names or [])}
    out = np.empty(len(vals), dtype=np.int64)
    for i, v in enumerate(vals):
        code = None
        if v is not None and not (isinstance(v, float) and np.isnan(v)):
            s = str(v).strip()
            if s in by_name:
                code = by_name[s]
            else:
                try:
                    f = float(s)
                    if f.is_integer() and 0 <= int(f) < n_actions:
                        code = int(f)
                except ValueError:
                    pass
        if code is None:
            uid = ids[i].item() if ids is not None and hasattr(ids[i], "item") else (None if ids is None else ids[i])
            where = f"row {i}" if ids is None else f"{ID_COLUMN} {uid!r}"
            accepted = f"a code 0..{n_actions - 1}" + (f" or one of the names {list(names)}" if names else "")
            raise DecisionFileError(f"{column}, {where}: {v!r} is not {accepted}")
        out[i] = code
    return out


def _read_frame(path: Path) -> tuple[pd.DataFrame, dict]:
    if not path.exists():
        raise DecisionFileError(f"decision file {path} does not exist")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        meta = (table.schema.metadata or {}).get(_META_KEY)
        return table.to_pandas(), (json.loads(meta) if meta else {})
    if path.suffix == ".csv":
        return pd.read_csv(path), {}
    raise DecisionFileError(f"decision file {path.name}: use .parquet or .csv")


def read_decisions(path: str | Path, n: int) -> tuple[pd.DataFrame, dict | None]:
    """Read a decision file for ``n`` units: ``(frame sorted by decision_id with columns decision_id
    and action, the population the file states or None)``. Checks one row per id 0..n-1."""
    path = Path(path)
    df, meta = _read_frame(path)
    present = [c for c in (ID_COLUMN, *ID_ALIASES) if c in df.columns]
    if not present:
        raise DecisionFileError(f"{path.name} has no {ID_COLUMN!r} column (or {', '.join(map(repr, ID_ALIASES))}); "
                                f"columns: {list(df.columns)}")
    id_col = present[0]
    for other in present[1:]:
        if not df[other].equals(df[id_col]):
            raise DecisionFileError(f"{path.name}: columns {id_col!r} and {other!r} both name the unit but differ")
    if "action" not in df.columns:
        raise DecisionFileError(f"{path.name} has no 'action' column; columns: {list(df.columns)}")
    ids = pd.to_numeric(df[id_col], errors="coerce")
    bad = ids.isna() | (ids % 1 != 0)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DecisionFileError(f"{id_col}, row {i}: {df[id_col].iloc[i]!r} is not an integer unit id 0..{n - 1}")
    ids = ids.astype(np.int64)
    out_of_range = (ids < 0) | (ids >= n)
    if out_of_range.any():
        i = int(np.flatnonzero(out_of_range.to_numpy())[0])
        raise DecisionFileError(f"{id_col}, row {i}: unit {int(ids.iloc[i])} is outside the population's ids "
                                f"0..{n - 1} (--n {n})")
    dup = ids.duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise DecisionFileError(f"{id_col}, row {i}: unit {int(ids.iloc[i])} has two decisions")
    if len(df) != n:
        missing = sorted(set(range(n)) - set(ids.tolist()))[:5]
        raise DecisionFileError(f"{path.name} gives decisions to {len(df)} units, the population has {n} "
                                f"(ids 0..{n - 1}; missing e.g. {missing})")
    missing_action = df["action"].isna().to_numpy()
    if missing_action.any():
        i = int(np.flatnonzero(missing_action)[0])
        raise DecisionFileError(f"action, row {i} ({ID_COLUMN} {int(ids.iloc[i])}): the action is missing")
    stated = meta.get("population")
    if "population" in df.columns:
        fps = pd.unique(df["population"].astype(str))
        if len(fps) != 1:
            raise DecisionFileError(f"{path.name}: column 'population' holds {len(fps)} fingerprints ({list(fps[:3])}); "
                                    "a decision file covers one population")
        if stated and stated.get("fingerprint") != fps[0]:
            raise DecisionFileError(f"{path.name}: its metadata says population {stated.get('fingerprint')}, "
                                    f"its 'population' column {fps[0]}")
        stated = stated or {"fingerprint": str(fps[0])}
    frame = pd.DataFrame({ID_COLUMN: ids.to_numpy(), "action": df["action"].to_numpy()})
    frame = frame.sort_values(ID_COLUMN, kind="stable").reset_index(drop=True)
    return frame, stated


def write_decisions(path: str | Path, actions, *, population: dict, action_names: list[str] | None = None,
                    policy: str | None = None, seeds: dict | None = None) -> Path:
    """Write one decision per unit (``actions[i]`` for ``decision_id`` i) with the population's
    fingerprint (column ``population``; in parquet also the metadata ``grpokit``)."""
    path = Path(path)
    a = np.asarray(actions)
    cols = {ID_COLUMN: np.arange(len(a), dtype=np.int64), "action": a}
    if action_names is not None:
        cols["action_name"] = np.asarray(action_names, dtype=object)[a.astype(np.int64)]
    cols["population"] = np.full(len(a), population["fingerprint"], dtype=object)
    df = pd.DataFrame(cols)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(df, preserve_index=False)
        meta = {"population": population, "policy": policy, "seeds": seeds or {}}
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), _META_KEY: json.dumps(meta).encode()})
        pq.write_table(table, tmp)
    else:
        df.to_csv(tmp, index=False)
    tmp.replace(path)
    return path
