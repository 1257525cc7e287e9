"""Batch scoring: one logged-ready decision per row of a table, streamed in bounded memory.

``score_table(policy, input, out)`` reads the input (parquet or CSV) in record batches of
``batch_rows`` rows, decides each row with :meth:`DeployedPolicy.decide` (the served distribution
``q = (1 - ε) π + ε / A`` and a per-row uniform from ``(seed, row index)``), and appends to a
parquet file written atomically: the id column (when there is one), ``action`` (label),
``action_code``, ``propensity`` (= q[action], the probability of what was chosen), ``policy_version``,
``epsilon``, ``mode`` and, with ``probabilities=True``, one ``prob_<label>`` column per action.
Memory holds one batch at a time, so it stays flat as the table grows. Because the draw depends
only on the seed and the global row index, any chunking (or the Ray backend in
:mod:`grpokit.scale`) gives the same decisions.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from grpokit.policy.deployed import DeployedPolicy

__all__ = ["score_table", "score_frame", "iter_batches", "DecisionWriter", "ID_COLUMNS"]

ID_COLUMNS = ("unit_id", "customer_id", "event_id", "decision_id", "user_id", "id")


def iter_batches(path: str | Path, batch_rows: int = 65_536) -> Iterator[pa.RecordBatch]:
    """Record batches of a parquet or CSV file, without reading the whole file."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder: give a .parquet or .csv file")
    if not path.is_file():
        raise FileNotFoundError(f"input file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            # pre_buffer=False: with pyarrow's default pre-buffering, iter_batches keeps every row group's
            # column chunks read so far until the iteration ends (Arrow memory grew with the file: 173 MB
            # for a 166 MB, 10M-row input); without it the reader holds one row group at a time
            pf = pq.ParquetFile(path, pre_buffer=False)
        except (pa.ArrowInvalid, OSError) as err:
            raise ValueError(f"{path} is not a readable parquet file: {err}") from None
        yield from pf.iter_batches(batch_size=batch_rows)
    elif suffix == ".csv":
        import pyarrow.csv as pcsv

        try:
            reader = pcsv.open_csv(path, read_options=pcsv.ReadOptions(block_size=1 << 22))
            for batch in reader:
                for start in range(0, batch.num_rows, batch_rows):
                    yield batch.slice(start, batch_rows)
        except pa.ArrowInvalid as err:
            raise ValueError(f"{path}: cannot parse the CSV ({err})") from None
    else:
        raise ValueError(f"--input must be a .parquet or .csv file, got {path.name}")


def _id_column(columns: list[str], id_column: str | None) -> str | None:
    if id_column is not None:
        if id_column not in columns:
            raise ValueError(f"--id-column {id_column!r} is not a column of the input (columns: {columns})")
        return id_column
    return next((c for c in ID_COLUMNS if c in columns), None)


def score_frame(policy: DeployedPolicy, df: pd.DataFrame, *, start: int, epsilon: float, mode: str, seed: int,
                id_column: str | None, probabilities: bool) -> pd.DataFrame:
    """The decisions of rows ``start .. start + len(df) - 1`` of a table, as a DataFrame."""
    index = np.arange(start, start + len(df), dtype=np.int64)
    try:
        d = policy.decide(df, epsilon=epsilon, mode=mode, seed=seed, row_index=index)
    except ValueError as err:
        row = getattr(err, "row", None)
        if row is not None:
            raise type(err)(str(err).replace(f"row {row}", f"row {start + row}", 1)) from None
        raise
    out = {}
    if id_column is not None:
        out[id_column] = df[id_column].to_numpy()
    if policy.kind == "categorical":
        out["action"] = np.asarray(d.labels, dtype=object)
        out["action_code"] = d.actions
    elif d.actions.ndim == 1:
        out["action"] = d.actions
    else:
        for k in range(d.actions.shape[1]):
            out[f"action_{k}"] = d.actions[:, k]
    out["propensity"] = d.propensities
    out["policy_version"] = np.full(len(df), policy.version, dtype=object)
    if policy.kind == "categorical":
        out["epsilon"] = np.full(len(df), float(epsilon))
        out["mode"] = np.full(len(df), mode, dtype=object)
        if probabilities:
            for a, label in enumerate(policy.action_labels):
                out[f"prob_{label}"] = d.probabilities[:, a]
    else:
        out["log_density"] = d.log_density
    return pd.DataFrame(out)


class DecisionWriter:
    """Append decision tables to ``out`` (parquet) through a sibling ``.tmp`` renamed on success, so a
    failed run leaves no partial file; counts the decision mix of categorical actions as it goes."""

    def __init__(self, out: Path, categorical: bool, source: str | Path = "the input"):
        self.out, self.categorical, self.source = Path(out), categorical, source
        self.tmp = self.out.with_name(self.out.name + ".tmp")
        self.rows = 0
        self.counts: dict[str, int] = {}
        self._writer: pq.ParquetWriter | None = None

    def __enter__(self) -> "DecisionWriter":
        self.out.parent.mkdir(parents=True, exist_ok=True)
        return self

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.tmp, table.schema)
        self._writer.write_table(table)
        self.rows += table.num_rows
        if self.categorical:
            labels = table.column("action").to_numpy(zero_copy_only=False).astype(str)
            for label, c in zip(*np.unique(labels, return_counts=True)):
                self.counts[str(label)] = self.counts.get(str(label), 0) + int(c)

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
            if exc_type is None:
                if self._writer is None:
                    raise ValueError(f"input file {self.source} has no rows")
                os.replace(self.tmp, self.out)
        finally:
            if self.tmp.exists():
                self.tmp.unlink()

    def summary(self, policy: DeployedPolicy, *, seconds: float, **fields) -> dict:
        n = self.rows
        return {"rows": n, "out": str(self.out), "policy_version": policy.version, **fields, "seconds": seconds,
                "rows_per_second": n / seconds if seconds > 0 else None,
                "decision_mix": {k: v / n for k, v in sorted(self.counts.items())} if self.counts else None}


def score_table(
    policy: str | Path | DeployedPolicy,
    input: str | Path,
    out: str | Path,
    *,
    epsilon: float = 0.05,
    mode: str = "sample",
    seed: int = 0,
    id_column: str | None = None,
    batch_rows: int = 65_536,
    probabilities: bool = False,
    backend: str = "local",
    on_batch: Callable[[int], None] | None = None,
    **backend_options,
) -> dict:
    """Score every row of ``input`` into the parquet file ``out``; returns a summary (rows, seconds, mix)."""
    if backend not in ("local", "ray"):
        raise ValueError(f"backend must be 'local' or 'ray', got {backend!r}")
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    if mode not in ("sample", "greedy"):
        raise ValueError(f"mode must be 'sample' or 'greedy', got {mode!r}")
    out = Path(out)
    if out.suffix.lower() != ".parquet":
        raise ValueError(f"--out must end in .parquet, got {out.name}")
    if Path(input).resolve() == out.resolve():
        raise ValueError("--out must differ from --input")
    deployed = policy if isinstance(policy, DeployedPolicy) else DeployedPolicy.load(policy)
    if backend == "ray":
        from grpokit.scale.score import score_table_ray  # optional extra 'ray'

        return score_table_ray(deployed, input, out, epsilon=epsilon, mode=mode, seed=seed, id_column=id_column,
                               batch_rows=batch_rows, probabilities=probabilities, **backend_options)
    if backend_options:
        raise ValueError(f"unknown option(s) for the local backend: {sorted(backend_options)}")
    t0 = time.perf_counter()
    id_col: str | None = None
    with DecisionWriter(out, deployed.kind == "categorical", input) as sink:
        for i, batch in enumerate(iter_batches(input, batch_rows)):
            df = batch.to_pandas()
            if i == 0:
                id_col = _id_column(list(df.columns), id_column)
            frame = score_frame(deployed, df, start=sink.rows, epsilon=epsilon, mode=mode, seed=seed,
                                id_column=id_col, probabilities=probabilities)
            sink.write(pa.Table.from_pandas(frame, preserve_index=False))
            if on_batch is not None:
                on_batch(sink.rows)
    return sink.summary(deployed, seconds=time.perf_counter() - t0, epsilon=epsilon, mode=mode, seed=seed,
                        id_column=id_col, backend="local")
