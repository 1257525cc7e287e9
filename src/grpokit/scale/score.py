"""The Ray backend of ``grpokit score`` (:func:`grpokit.scoring.score_table` with ``backend="ray"``).

The input parquet file is cut into pieces of at most ``batch_rows`` rows inside its row groups;
each piece, with its global row offset, is one item of a Ray Dataset, and
``map_batches(<stateful scorer>, concurrency=k)`` decides it: each of the k scorer actors loads the
policy once, reads its piece's rows (one row group at a time) and calls the local backend's
:func:`grpokit.scoring.score_frame` with ``start`` = the piece's offset. A row's draw depends only on
(seed, global row index) (:func:`grpokit.policy.deployed.row_uniforms`), so the decisions equal the
local backend's for the same seed. The driver streams the decided batches in input order into the
output parquet file (written atomically), so its memory holds a few batches, not the table.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

__all__ = ["score_table_ray", "plan_pieces"]


def plan_pieces(path, batch_rows: int) -> list[dict]:
    """``[{"row_group", "start" (within the group), "stop", "offset" (global row index)}]``."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    pieces, offset = [], 0
    for g in range(meta.num_row_groups):
        n = meta.row_group(g).num_rows
        for s in range(0, n, batch_rows):
            e = min(n, s + batch_rows)
            pieces.append({"row_group": g, "start": s, "stop": e, "offset": offset + s})
        offset += n
    return pieces


class _Scorer:
    """One Ray Data actor: the policy loaded once; a batch of pieces in, their decisions out."""

    def __init__(self, policy, path: str, options: dict):
        import pyarrow.parquet as pq

        self.policy, self.file, self.options = policy, pq.ParquetFile(path), options
        self._group, self._table = None, None

    def _rows(self, group: int, start: int, stop: int) -> pd.DataFrame:
        if group != self._group:  # consecutive pieces of one row group read it once
            self._group, self._table = group, self.file.read_row_group(group)
        return self._table.slice(start, stop - start).to_pandas()

    def __call__(self, batch: dict) -> pd.DataFrame:
        from grpokit.scoring import score_frame

        frames = [score_frame(self.policy, self._rows(int(g), int(s), int(e)), start=int(o), **self.options)
                  for g, s, e, o in zip(batch["row_group"], batch["start"], batch["stop"], batch["offset"])]
        return pd.concat(frames, ignore_index=True)


def score_table_ray(policy, input, out, *, epsilon: float, mode: str, seed: int, id_column: str | None,
                    batch_rows: int, probabilities: bool, concurrency: int = 2, address: str | None = None) -> dict:
    """Score ``input`` (parquet) into ``out`` with ``concurrency`` scorer actors; the summary of the
    local backend with ``backend="ray"`` and ``concurrency``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from grpokit.scale._ray import init_ray
    from grpokit.scoring import DecisionWriter, _id_column

    path, out = Path(input), Path(out)
    if not path.is_file():
        raise FileNotFoundError(f"input file {path} does not exist")
    if path.suffix.lower() != ".parquet":
        raise ValueError(f"the ray backend reads parquet input; {path.name} is not (use --backend local for CSV)")
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    try:
        schema_names = list(pq.read_schema(path).names)
    except (pa.ArrowInvalid, OSError) as err:
        raise ValueError(f"{path} is not a readable parquet file: {err}") from None
    id_col = _id_column(schema_names, id_column)
    pieces = plan_pieces(path, batch_rows)
    if not pieces:
        raise ValueError(f"input file {input} has no rows")
    ray = init_ray(address)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # decisions come back in input order
    options = {"epsilon": epsilon, "mode": mode, "seed": seed, "id_column": id_col, "probabilities": probabilities}
    ds = ray.data.from_items(pieces).map_batches(
        _Scorer, fn_constructor_args=(policy, str(path.resolve()), options), batch_size=1,
        batch_format="numpy", concurrency=concurrency,
    )
    t0 = time.perf_counter()
    with DecisionWriter(out, policy.kind == "categorical", input) as sink:
        for table in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            if table.num_rows:
                sink.write(table.replace_schema_metadata(None))
    return sink.summary(policy, seconds=time.perf_counter() - t0, epsilon=epsilon, mode=mode, seed=seed,
                        id_column=id_col, backend="ray", concurrency=concurrency)
