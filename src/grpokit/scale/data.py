"""Large logs in blocks: the counterfactual reward table and off-policy estimates, in this process
(pyarrow record batches) or in parallel with Ray Data (``ray.data.read_parquet(...).map_batches``).

**Counterfactual reward table**: for every logged context x_i and every action a, the outcome model's
rhat(x_i, a) (:meth:`grpokit.offline.outcome.OutcomeModel.predict`), written as columns
``rhat_<a>`` beside the log's id column.

**OPE sums**: every estimator of :mod:`grpokit.offline.estimators` is a function of the sums of a few
per-row columns c_i (ips: w r; snips: w r, w; dm: dm; dr: dm + w e; sndr: dm, w e, w, with
e = r − rhat(x, a)), computed per block by the estimators' own code (``_Prepared``). A block returns
its row count, the mean vector and the M2 matrix of [c_i, r_i] (and the weight sums, max and clipped
count); blocks are merged with Chan's formula (the vector form of P-GRPO's), so V and the normal
(delta-method) CI are those of :func:`~grpokit.offline.estimators.estimate_value` with
``ci="normal"`` on the whole log: each influence term is an affine function of the columns,
psi_i = const + b·[c_i, r_i], so sd(psi) = sqrt(b' Cov b) with Cov = M2 / (n − 1):
ips, dm, dr: b = e_0; snips: b = (1, −V) / wbar; sndr: b = (1, 1/wbar, −S/wbar); the improvement over
the logging policy subtracts r (b_r = −1). The percentile bootstrap needs every row at once and is
not offered here.

What stays on the driver: the fitted outcome model and the target policy (sent to each worker once),
and per block a few numbers; the log itself is never gathered.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from grpokit.scale._ray import check_backend

__all__ = ["LogColumns", "PolicyTarget", "counterfactual_table", "ope_from_parquet", "block_moments",
           "merge_block_moments"]


@dataclass(frozen=True)
class LogColumns:
    """Where the log keeps each field: the feature columns (numeric, in the model's order), the
    integer action code, the reward, the logging propensity and an optional id column."""

    features: tuple[str, ...]
    action: str = "action"
    reward: str = "reward"
    pscore: str = "pscore"
    id: str | None = None

    def check(self, names) -> None:
        need = [*self.features, self.action, self.reward, self.pscore] + ([self.id] if self.id else [])
        missing = [c for c in need if c not in names]
        if missing:
            raise ValueError(f"the log has no column {missing[0]!r} (has {sorted(names)})")


def _features(df: pd.DataFrame, cols: LogColumns) -> np.ndarray:
    return df[list(cols.features)].to_numpy(dtype=np.float64)


def _blocks(path, batch_rows: int):
    """This process's streaming reader: pandas frames of at most ``batch_rows`` rows."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path, pre_buffer=False)  # pre-buffering keeps every row group read until the end
    for batch in pf.iter_batches(batch_size=batch_rows):
        yield batch.to_pandas()


def _schema_names(path) -> list[str]:
    import pyarrow.parquet as pq

    return list(pq.read_schema(path).names)


# -- counterfactual reward table ------------------------------------------------------------------


class _Predictor:
    """Ray Data's stateful callable: holds the outcome model; rows in, rhat columns out."""

    def __init__(self, model, cols: LogColumns):
        self.model, self.cols = model, cols

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        rhat = self.model.predict(_features(df, self.cols))
        out = pd.DataFrame({f"rhat_{a}": rhat[:, a] for a in range(rhat.shape[1])})
        if self.cols.id:
            out.insert(0, self.cols.id, df[self.cols.id].to_numpy())
        return out


def _predict_block(df: pd.DataFrame, model, cols: LogColumns) -> pd.DataFrame:
    import ray

    if isinstance(model, ray.ObjectRef):  # fn_kwargs pass the reference as it is
        model = ray.get(model)
    return _Predictor(model, cols)(df)


def counterfactual_table(log_path, model, cols: LogColumns, out, *, backend: str = "local",
                         batch_rows: int = 65536, address: str | None = None) -> Path:
    """Write rhat(x_i, a) for every logged row and action to ``out`` (a parquet file for ``local``, a
    directory of parquet files for ``ray``); returns the path."""
    check_backend(backend)
    cols.check(_schema_names(log_path))
    out = Path(out)
    if backend == "local":
        import pyarrow as pa
        import pyarrow.parquet as pq

        writer, pred = None, _Predictor(model, cols)
        tmp = out.with_name(out.name + ".tmp")
        try:
            for df in _blocks(log_path, batch_rows):
                table = pa.Table.from_pandas(pred(df), preserve_index=False)
                writer = writer or pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
        finally:
            if writer is not None:
                writer.close()
        tmp.replace(out)
        return out
    from grpokit.scale._ray import init_ray

    ray = init_ray(address)
    ds = ray.data.read_parquet(str(log_path))
    # tasks, not actors: they share the CPUs with Ray Data's read tasks (actors holding every CPU
    # would leave none to read with); the model goes to the object store once
    ds.map_batches(_predict_block, fn_kwargs={"model": ray.put(model), "cols": cols}, batch_format="pandas",
                   batch_size=batch_rows).write_parquet(str(out))
    return out


# -- OPE sums -------------------------------------------------------------------------------------


def block_moments(method: str, df: pd.DataFrame, cols: LogColumns, target: Callable, model=None,
                  clip: float | None = None, row_offset: int | None = None) -> dict:
    """One block's sufficient statistics for ``method``: n, the mean and M2 of [c_i, r_i], the weight
    sum, sum of squares and max, and the clipped count. ``target(df) -> [n, A]`` gives pi(.|x_i)."""
    from grpokit.offline.estimators import _Prepared, _validate

    x = _features(df, cols)
    probs = np.asarray(target(df), dtype=np.float64)
    rhat = model.predict(x) if model is not None else None
    try:
        reward, action, pscore, probs, rhat = _validate(
            method, df[cols.reward].to_numpy(), df[cols.action].to_numpy(), df[cols.pscore].to_numpy(), probs, rhat,
            0.05, clip, "normal", 1,
        )
    except ValueError as err:
        raise ValueError(_global_rows(str(err), row_offset)) from None
    prep = _Prepared(method, reward, action, pscore, probs, rhat, clip)
    z = np.column_stack([prep.columns, reward])  # [n, k + 1]
    mean = z.mean(axis=0)
    d = z - mean
    return {"n": prep.n, "mean": mean, "m2": d.T @ d, "sum_w": float(prep.w.sum()),
            "sum_w2": float((prep.w * prep.w).sum()), "max_w": float(prep.w.max()),
            "clipped": prep.diagnostics["clipped_fraction"] * prep.n}


def _global_rows(message: str, offset: int | None) -> str:
    """The estimators name block rows; name the log's rows instead (or say it was one block)."""
    import re

    if offset is None:
        return message + " (row numbers are within one block of the log: the Ray backend does not know its offset)"
    return re.sub(r"\brow (\d+)", lambda m: f"row {int(m.group(1)) + offset}", message)


def merge_block_moments(a: dict, b: dict) -> dict:
    """Chan's parallel merge of two blocks' (n, mean, M2) (vector form), plus the weight sums."""
    n = a["n"] + b["n"]
    delta = b["mean"] - a["mean"]
    mean = a["mean"] + delta * (b["n"] / n)
    m2 = a["m2"] + b["m2"] + np.outer(delta, delta) * (a["n"] * b["n"] / n)
    return {"n": n, "mean": mean, "m2": m2, "sum_w": a["sum_w"] + b["sum_w"], "sum_w2": a["sum_w2"] + b["sum_w2"],
            "max_w": max(a["max_w"], b["max_w"]), "clipped": a["clipped"] + b["clipped"]}


def _result(method: str, m: dict, alpha: float, improvement: bool, clip):
    from statistics import NormalDist

    from grpokit.offline.estimators import OPEResult, _Prepared

    n, mean = m["n"], m["mean"]
    k = len(mean) - 1
    sums = mean[:k] * n
    shell = _Prepared.__new__(_Prepared)  # the estimators' own value(sums) map
    shell.n, shell.method = n, method
    v = float(shell.value(sums))
    if method in ("snips", "sndr") and m["sum_w"] <= 0:
        raise ValueError(f"{method} is undefined: every importance weight is 0")
    wbar = m["sum_w"] / n
    b = np.zeros(k + 1)
    if method in ("ips", "dm", "dr"):
        b[0] = 1.0
    elif method == "snips":
        b[0], b[1] = 1.0 / wbar, -v / wbar
    else:
        s = sums[1] / sums[2]
        b[0], b[1], b[2] = 1.0, 1.0 / wbar, -s / wbar
    logging_value = float(mean[k])
    if improvement:
        b[k] = -1.0
    value = v - logging_value if improvement else v
    if n >= 2:
        var = float(b @ (m["m2"] / (n - 1)) @ b)
        half = NormalDist().inv_cdf(1 - alpha / 2) * math.sqrt(max(var, 0.0)) / math.sqrt(n)
        lo, hi = value - half, value + half
    else:
        lo = hi = math.nan
    diagnostics = {"n": int(n), "ess": m["sum_w"] ** 2 / m["sum_w2"] if m["sum_w2"] > 0 else 0.0,
                   "max_weight": m["max_w"], "mean_weight": wbar,
                   "clipped_fraction": 0.0 if clip is None else m["clipped"] / n}
    if improvement:
        diagnostics.update(target_value=v, logging_value=logging_value)
    return OPEResult(value=value, ci_low=lo, ci_high=hi, method=method, alpha=float(alpha),
                     diagnostics=diagnostics, ci="normal")


class PolicyTarget:
    """The target policy of a saved ``policy.pt``: pi(.|x) = its own distribution on a block's rows
    (:meth:`~grpokit.policy.deployed.DeployedPolicy.probabilities`), loaded once per worker."""

    def __init__(self, path):
        self.path, self._policy = str(path), None

    def __call__(self, df: pd.DataFrame) -> np.ndarray:
        if self._policy is None:
            from grpokit.policy.deployed import DeployedPolicy

            self._policy = DeployedPolicy.load(self.path)
        return self._policy.probabilities(df)

    def __getstate__(self):
        return {"path": self.path, "_policy": None}


def _block_stats(df: pd.DataFrame, methods, cols, target, model, clip) -> dict:
    """A Ray Data task: one row of pickled block statistics (every method) per batch."""
    import pickle

    import ray

    if isinstance(model, ray.ObjectRef):
        model = ray.get(model)
    stats = {m: block_moments(m, df, cols, target, model, clip) for m in methods}
    return {"stats": np.array([pickle.dumps(stats)], dtype=object)}


def ope_from_parquet(log_path, cols: LogColumns, target: Callable, *, methods=("ips", "snips", "dr"),
                     model=None, clip: float | None = None, alpha: float = 0.05, improvement: bool = False,
                     backend: str = "local", batch_rows: int = 65536, address: str | None = None) -> dict:
    """``{method: OPEResult}`` (normal CIs) over a parquet log read in blocks; ``target(df) -> [n, A]``
    the target policy's probabilities on a block's rows (a callable, or the path of a saved policy:
    :class:`PolicyTarget`); ``model``: the fitted outcome model (needed by
    dm, dr, sndr). ``improvement``: estimate V(pi) − mean(r) with the paired CI instead."""
    from grpokit.offline.estimators import ESTIMATORS

    check_backend(backend)
    if isinstance(target, (str, Path)):
        target = PolicyTarget(target)
    for m in methods:
        if m not in ESTIMATORS:
            raise ValueError(f"unknown method {m!r}; choose from {list(ESTIMATORS)}")
        if m in ("dm", "dr", "sndr") and model is None:
            raise ValueError(f"method {m!r} needs the outcome model (model=...)")
    cols.check(_schema_names(log_path))
    per_block: list[dict] = []
    if backend == "local":
        offset = 0
        for df in _blocks(log_path, batch_rows):
            per_block.append({m: block_moments(m, df, cols, target, model, clip, offset) for m in methods})
            offset += len(df)
    else:
        import pickle

        from grpokit.scale._ray import init_ray

        ray = init_ray(address)
        ds = ray.data.read_parquet(str(log_path))
        out = ds.map_batches(_block_stats, fn_kwargs={"methods": tuple(methods), "cols": cols, "target": target,
                                                      "model": ray.put(model), "clip": clip},
                             batch_format="pandas", batch_size=batch_rows)
        per_block = [pickle.loads(r["stats"]) for r in out.take_all()]  # noqa: S301 - our own stats, this run
    if not per_block:
        raise ValueError(f"the log {log_path} has no rows")
    results = {}
    for m in methods:
        acc = per_block[0][m]
        for blk in per_block[1:]:
            acc = merge_block_moments(acc, blk[m])
        results[m] = _result(m, acc, alpha, improvement, clip)
    return results
