"""A fitted cohort model as plain data (lists, floats, strings), and the assignment of new rows.

:func:`cohort_model_to_dict` turns a fitted :class:`~grpokit.groups.cohorts.CohortModel` into a
JSON-able dict (no pickle, no scikit-learn object), to store next to a policy (``metadata
["cohort_model"]``) or in the store; :func:`assign` recomputes the cohort of new rows from that
dict alone, identically to ``CohortModel.predict``:

* standardize: z = (x − mean) / scale (the fitted ``StandardScaler``; identity when off);
* k-means: raw = argmin_k ‖z − μ_k‖²;
* GMM: raw = argmax_k log w_k + log det L_k − ½‖(z − μ_k) L_k‖² (L_k the Cholesky factor of
  component k's precision matrix, sklearn's ``precisions_cholesky_``, stored as a full [d, d]
  matrix for every covariance type; the constant −d/2 log 2π is the same for every k);
* column: the code of the row's label in the sorted fitted labels (an unseen label is an error);

then code = code_of_raw[raw] (cohorts numbered by decreasing fitted size).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = ["FORMAT", "cohort_model_to_dict", "assign"]

FORMAT = "grpokit.cohort_model/1"


def _precision_cholesky_full(gmm) -> np.ndarray:
    """sklearn's ``precisions_cholesky_`` as ``[k, d, d]`` for any covariance type."""
    pc = np.asarray(gmm.precisions_cholesky_, dtype=np.float64)
    k, d = gmm.means_.shape
    kind = gmm.covariance_type
    if kind == "full":
        return pc
    if kind == "tied":
        return np.broadcast_to(pc, (k, d, d)).copy()
    if kind == "diag":
        return np.stack([np.diag(row) for row in pc])
    if kind == "spherical":
        return np.stack([s * np.eye(d) for s in pc])
    raise ValueError(f"unknown covariance_type {kind!r}")


def cohort_model_to_dict(model) -> dict:
    """Plain-data form of a fitted ``CohortModel`` (see the module doc); ``assign`` reads it back."""
    if not hasattr(model, "labels_"):
        raise ValueError("the cohort model is not fitted: call fit() first")
    out: dict[str, Any] = {"format": FORMAT, "method": model.method, "n_cohorts": int(model.n_cohorts_),
                           "cohort_names": list(model.cohort_names_)}
    if model.method == "column":
        labels = list(model.cohort_labels_)
        out.update(column=str(model.column), labels=[v.item() if hasattr(v, "item") else v for v in labels])
        return out
    out["features"] = list(model.feature_names_)
    out["standardize"] = model.scaler_ is not None
    if model.scaler_ is not None:
        out["mean"] = model.scaler_.mean_.astype(float).tolist()
        out["scale"] = model.scaler_.scale_.astype(float).tolist()
    out["code_of_raw"] = model._code_of_raw.astype(int).tolist()
    if model.method == "kmeans":
        out["centers"] = model.model_.cluster_centers_.astype(float).tolist()
    else:
        out["means"] = model.model_.means_.astype(float).tolist()
        out["weights"] = model.model_.weights_.astype(float).tolist()
        out["precisions_cholesky"] = _precision_cholesky_full(model.model_).tolist()
    out["scores"] = {str(k): float(v) for k, v in getattr(model, "scores_", {}).items()}
    out["criterion"] = getattr(model, "criterion_", None)
    return out


def _matrix(rows: Any, features: list[str]) -> np.ndarray:
    if isinstance(rows, pd.DataFrame):
        missing = [c for c in features if c not in rows.columns]
        if missing:
            raise ValueError(f"the rows lack the cohort model's feature columns {missing}")
        x = rows[features].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    else:
        x = np.asarray(rows, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(features):
            raise ValueError(f"rows must be [n, {len(features)}] ({features}), got shape {x.shape}")
    bad = np.argwhere(~np.isfinite(x))
    if len(bad):
        r, c = (int(v) for v in bad[0])
        raise ValueError(f"feature column {features[c]!r} has a missing or non-finite value at row {r}")
    return x


def assign(model: dict, rows: Any) -> np.ndarray:
    """Cohort code ``[n]`` (int64) of every row (a DataFrame with the model's columns, or an array)."""
    if not isinstance(model, dict) or model.get("format") != FORMAT:
        raise ValueError(f"not a cohort model dict (format {FORMAT!r} expected)")
    method = model["method"]
    if method == "column":
        col = model["column"]
        if isinstance(rows, pd.DataFrame):
            if col not in rows.columns:
                raise ValueError(f"the rows lack the cohort column {col!r}")
            values = rows[col].tolist()
        else:
            values = list(np.asarray(rows).reshape(-1).tolist())
        code = {lab: i for i, lab in enumerate(model["labels"])}
        out = np.empty(len(values), dtype=np.int64)
        for i, v in enumerate(values):
            if v not in code:
                raise ValueError(f"cohort column {col!r}: label {v!r} at row {i} was not seen at fit time; "
                                 f"known labels {model['labels']}")
            out[i] = code[v]
        return out
    x = _matrix(rows, list(model["features"]))
    if model["standardize"]:
        x = (x - np.asarray(model["mean"])) / np.asarray(model["scale"])
    if method == "kmeans":
        c = np.asarray(model["centers"])
        raw = ((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
    elif method == "gmm":
        mu, L = np.asarray(model["means"]), np.asarray(model["precisions_cholesky"])  # [k, d], [k, d, d]
        logdet = np.log(np.abs(np.diagonal(L, axis1=1, axis2=2))).sum(-1)  # [k]
        y = np.einsum("nd,kde->nke", x, L) - np.einsum("kd,kde->ke", mu, L)[None]
        score = np.log(np.asarray(model["weights"]))[None] + logdet[None] - 0.5 * (y**2).sum(-1)
        raw = score.argmax(1)
    else:
        raise ValueError(f"unknown cohort method {method!r}")
    return np.asarray(model["code_of_raw"], dtype=np.int64)[raw]
