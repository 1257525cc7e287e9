"""Outcome models fitted with LightGBM, in this process or with Ray Train's ``LightGBMTrainer`` over a
Ray Dataset (``kind = "lightgbm"``, ``backend = "ray"``), for logs that do not fit on one machine.

The model is E[r | x, a] = f([x, onehot(a)]), one gradient-boosted tree ensemble over the design row
(the layout of :class:`grpokit.offline.outcome.OutcomeModel`'s ``gbm``): binary rewards fit the
logistic loss (f = P(r = 1 | x, a)), other rewards the squared loss. ``backend="local"`` reads the
parquet log in blocks into one design matrix in this process and calls ``lightgbm.train``;
``backend="ray"`` builds the design with ``ray.data.read_parquet(...).map_batches`` and trains
data-parallel (``tree_learner = "data_parallel"``): each Ray Train worker holds its shard of the log,
the workers exchange histograms, and the driver receives only the booster (a text model).

Both give a :class:`LightGBMOutcomeModel` whose :meth:`~LightGBMOutcomeModel.predict` gives the
``[n, n_actions]`` table that :func:`grpokit.scale.data.counterfactual_table` and
:func:`grpokit.scale.data.ope_from_parquet` take as ``model``. Distributed LightGBM finds its feature
bins on the workers' samples and sums histograms in another order, so the Ray fit is close to the
local fit of the same library, not bit-equal (tests/test_scale_ray.py states the tolerance).
No cross-fitting here: for DR on the training log itself, fit on one part and score another.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from grpokit.offline.outcome import LIGHTGBM_PARAMS, lightgbm_params, require_lightgbm
from grpokit.scale._ray import check_backend
from grpokit.scale.data import LogColumns, _schema_names

__all__ = ["LightGBMOutcomeModel", "fit_outcome_model", "train_design_ray", "DEFAULT_PARAMS"]

DEFAULT_PARAMS = LIGHTGBM_PARAMS  # one set of defaults for the in-memory and the parquet paths
KINDS = ("lightgbm",)


def _require_lightgbm():
    return require_lightgbm()


def design_frame(df: pd.DataFrame, cols: LogColumns, n_actions: int, row_offset: int | None = 0) -> pd.DataFrame:
    """The design [x, onehot(a)] and the label ``__y`` of a block of the log; a bad value names the
    column and the row (the log's row when ``row_offset`` is known, else the block's)."""
    where = (lambda i: f"row {i + row_offset}") if row_offset is not None else (lambda i: f"row {i} of a block")
    out = {}
    for c in cols.features:
        v = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(v))
        if len(bad):
            raise ValueError(f"column {c!r}, {where(int(bad[0]))}: {df[c].iloc[bad[0]]!r} is not a finite number")
        out[c] = v
    a = df[cols.action].to_numpy()
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"column {cols.action!r} must hold integer action codes, got dtype {a.dtype}")
    bad = np.flatnonzero((a < 0) | (a >= n_actions))
    if len(bad):
        raise ValueError(f"column {cols.action!r}, {where(int(bad[0]))}: action {a[bad[0]]} is outside 0..{n_actions - 1}")
    for k in range(n_actions):
        out[f"__a{k}"] = (a == k).astype(np.float64)
    y = df[cols.reward].to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(y))
    if len(bad):
        raise ValueError(f"column {cols.reward!r}, {where(int(bad[0]))}: reward {y[bad[0]]!r} is not finite")
    out["__y"] = y
    return pd.DataFrame(out)


def _design_block(df: pd.DataFrame, cols: LogColumns, n_actions: int) -> pd.DataFrame:
    return design_frame(df, cols, n_actions, row_offset=None)


def reward_task(log_path, column: str) -> str:
    """``"binary"`` if every reward in the log is 0 or 1, else ``"regression"`` (one streamed column)."""
    import pyarrow.parquet as pq

    values = set()
    for batch in pq.ParquetFile(log_path).iter_batches(batch_size=1 << 20, columns=[column]):
        values.update(np.unique(batch.column(0).to_numpy(zero_copy_only=False)).tolist())
        if not values <= {0, 1, 0.0, 1.0, True, False}:
            return "regression"
    if len(values) < 2:
        raise ValueError(f"column {column!r}: every reward is {sorted(values)}: nothing to learn an outcome model from")
    return "binary"


class LightGBMOutcomeModel:
    """A fitted booster and the design's layout; ``predict(x) -> [n, n_actions]`` E[r | x, a]."""

    def __init__(self, booster, n_actions: int, features: tuple[str, ...], task: str, backend: str):
        self.booster, self.n_actions, self.features = booster, n_actions, tuple(features)
        self.task, self.backend = task, backend
        self.n_features_ = len(self.features)

    def predict(self, x: np.ndarray, chunk: int = 65536) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features_:
            raise ValueError(f"x must be [n, {self.n_features_}] (features {list(self.features)}), got shape {x.shape}")
        out = np.empty((len(x), self.n_actions))
        eye = np.eye(self.n_actions)
        for s in range(0, len(x), chunk):
            xs = x[s:s + chunk]
            design = np.concatenate([np.repeat(xs, self.n_actions, axis=0), np.tile(eye, (len(xs), 1))], axis=1)
            out[s:s + len(xs)] = self.booster.predict(design, num_threads=1).reshape(len(xs), self.n_actions)
        return out

    # the booster travels as its text model (Ray's object store, worker pickles)
    def __getstate__(self):
        return {**self.__dict__, "booster": self.booster.model_to_string()}

    def __setstate__(self, state):
        lgb = _require_lightgbm()
        self.__dict__.update(state)
        self.booster = lgb.Booster(model_str=state["booster"])


def _params(task: str, seed: int, params: dict | None) -> dict:
    return lightgbm_params(task == "binary", seed, params)


def _train_worker(config: dict) -> None:
    """One Ray Train worker: its shard of the design as a LightGBM Dataset, then data-parallel training."""
    import lightgbm as lgb
    import ray.train
    from ray.train.lightgbm import get_network_params

    shard = ray.train.get_dataset_shard("train").materialize().to_pandas()
    y = shard.pop("__y").to_numpy()
    data = lgb.Dataset(shard.to_numpy(dtype=np.float64), label=y, free_raw_data=True)
    params = {**config["params"], "tree_learner": "data_parallel", "pre_partition": True, **get_network_params()}
    booster = lgb.train(params, data, num_boost_round=config["num_boost_round"])
    # one report at the end (Ray's per-iteration callback costs a synchronization per tree); every
    # worker holds the same trees, rank 0 sends them
    if ray.train.get_context().get_world_rank() == 0:
        tmp = tempfile.mkdtemp(prefix="grpokit_lightgbm_")  # Ray Train copies it into storage_path
        booster.save_model(str(Path(tmp) / "model.txt"))
        ray.train.report({"trees": booster.num_trees()}, checkpoint=ray.train.Checkpoint.from_directory(tmp))
    else:
        ray.train.report({"trees": booster.num_trees()})


def fit_outcome_model(log_path, cols: LogColumns, n_actions: int, *, kind: str = "lightgbm",
                      backend: str = "local", task: str = "auto", seed: int = 0, num_boost_round: int = 200,
                      params: dict | None = None, num_workers: int = 2, cpus_per_worker: float = 1.0,
                      batch_rows: int = 65536, address: str | None = None,
                      storage_path: str | None = None) -> LightGBMOutcomeModel:
    """Fit E[r | x, a] on the parquet log ``log_path`` (columns ``cols``) with LightGBM: in this process
    (``backend="local"``: the design matrix must fit in memory) or with Ray Train's ``LightGBMTrainer``
    on ``num_workers`` workers over a Ray Dataset (``backend="ray"``: only each worker's shard is in
    memory). ``task``: auto (binary if the rewards are all 0/1), binary or regression; ``params``
    override :data:`DEFAULT_PARAMS`. The design is materialized in Ray's object store (spread over the
    cluster, spilled to disk when full) before the workers start: read and design tasks would otherwise
    wait for CPUs that the training workers hold."""
    check_backend(backend)
    if kind not in KINDS:
        raise ValueError(f"unknown outcome model kind {kind!r} for a parquet log; choose one of {list(KINDS)}")
    if n_actions < 2:
        raise ValueError(f"n_actions must be >= 2, got {n_actions}")
    if task not in ("auto", "binary", "regression"):
        raise ValueError(f"task must be auto, binary or regression, got {task!r}")
    lgb = _require_lightgbm()
    cols.check(_schema_names(log_path))
    task = reward_task(log_path, cols.reward) if task == "auto" else task
    p = _params(task, seed, params)
    if backend == "local":
        from grpokit.scale.data import _blocks

        parts, offset = [], 0
        for df in _blocks(log_path, batch_rows):
            parts.append(design_frame(df, cols, n_actions, offset))
            offset += len(df)
        design = pd.concat(parts, ignore_index=True)
        y = design.pop("__y").to_numpy()
        booster = lgb.train(p, lgb.Dataset(design.to_numpy(dtype=np.float64), label=y), num_boost_round=num_boost_round)
        return LightGBMOutcomeModel(booster, n_actions, cols.features, task, "local")
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    from grpokit.scale._ray import init_ray

    ray = init_ray(address)
    ds = ray.data.read_parquet(str(log_path)).map_batches(
        _design_block, fn_kwargs={"cols": cols, "n_actions": n_actions}, batch_format="pandas",
        batch_size=batch_rows).materialize()
    booster = _train_ray(ds, p, num_boost_round, num_workers, cpus_per_worker, storage_path)
    return LightGBMOutcomeModel(booster, n_actions, cols.features, task, "ray")


def _train_ray(ds, p: dict, num_boost_round: int, num_workers: int, cpus_per_worker: float,
               storage_path: str | None):
    """Ray Train's ``LightGBMTrainer`` on the design Dataset ``ds`` (columns = design, ``__y`` = label)."""
    lgb = _require_lightgbm()
    from ray.train import RunConfig, ScalingConfig
    from ray.train.lightgbm import LightGBMTrainer

    storage = storage_path or tempfile.mkdtemp(prefix="grpokit_ray_lightgbm_")
    trainer = LightGBMTrainer(
        _train_worker, train_loop_config={"params": p, "num_boost_round": num_boost_round},
        datasets={"train": ds}, scaling_config=ScalingConfig(num_workers=num_workers, resources_per_worker={"CPU": cpus_per_worker}),
        run_config=RunConfig(storage_path=str(Path(storage).resolve()), name="grpokit_lightgbm"),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"Ray Train's LightGBM run finished without a model: {result.error}")
    with result.checkpoint.as_directory() as d:
        return lgb.Booster(model_file=str(Path(d) / "model.txt"))


def train_design_ray(X: np.ndarray, y: np.ndarray, params: dict, *, num_boost_round: int = 200,
                     num_workers: int = 2, cpus_per_worker: float = 1.0, address: str | None = None,
                     storage_path: str | None = None):
    """A LightGBM booster fitted by Ray Train on an in-memory design ``X`` (label ``y``): what
    ``OutcomeModel(kind="lightgbm", backend="ray")`` calls for its full and per-fold fits. The design
    is put into Ray's object store in blocks and each worker trains on its shard (data-parallel)."""
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    from grpokit.scale._ray import init_ray

    ray = init_ray(address)
    X = np.asarray(X, dtype=np.float64)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
    frame["__y"] = np.asarray(y, dtype=np.float64)
    ds = ray.data.from_pandas(frame).repartition(max(num_workers, 1)).materialize()
    return _train_ray(ds, params, num_boost_round, num_workers, cpus_per_worker, storage_path)
