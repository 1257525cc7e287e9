"""Cohorts: split customers into groups, and describe each group.

Cohorts are first-class in grpokit -- they feed the policy (a group embedding), group-relative
rewards, P-GRPO's preference groups and every report. :class:`CohortModel` assigns every row a
cohort code ``0..k-1``; :func:`cohort_profile` tabulates what the cohorts look like.

Methods (``CohortModel(method=...)``)
-------------------------------------
``"kmeans"``
    k-means (scikit-learn ``KMeans``, k-means++ starts, ``n_init`` restarts, the best inertia
    kept) on the standardized features. Hard, roughly spherical cohorts of similar spread.
``"gmm"``
    a Gaussian mixture (scikit-learn ``GaussianMixture``, ``covariance_type="full"`` by default,
    fitted by EM with ``n_init`` restarts) on the standardized features; each row goes to the
    component of highest posterior probability. Allows elongated cohorts of different spreads.
``"column"``
    no clustering: the cohorts are an existing column (``column="segment"``), e.g. a business
    segment or region. Its labels are sorted and mapped to codes ``0..k-1`` (``cohort_names_``
    holds the labels as strings); a label not seen at fit time is an error at predict time.

For k-means and GMM the features are standardized first (``StandardScaler``: zero mean, unit
variance per column, so no feature dominates because of its unit); ``standardize=False`` skips it.
Cohorts are numbered by decreasing size in the fitted data (``c0`` is the largest), so the
numbering does not depend on the arbitrary order the clustering algorithm returns.

Choosing the number of cohorts (``n_cohorts="auto"``)
-----------------------------------------------------
Every ``k`` in ``k_range`` (inclusive, ``(2, 8)`` by default) is fitted and scored, the scores
are kept in ``scores_`` (``{k: value}``) and the best ``k`` wins (ties: the smaller ``k``):

``select="bic"`` (GMM only; the default for GMM)
    Bayesian information criterion, lower is better:
    ``BIC(k) = -2 ln L_k + p_k ln n``, with ``L_k`` the maximized likelihood of the k-component
    mixture and ``p_k = (k-1) + k d + k d(d+1)/2`` free parameters (full covariances, ``d``
    features, ``n`` rows). It needs a likelihood, so k-means cannot use it.
``select="silhouette"`` (k-means or GMM; the default for k-means)
    mean silhouette ``s_i = (b_i - a_i) / max(a_i, b_i)``, higher is better, where ``a_i`` is the
    mean distance of row ``i`` to its own cohort and ``b_i`` to the nearest other cohort, in the
    standardized space. Computing it costs O(n^2), so it is taken on one seeded random subsample
    of at most ``max_silhouette_rows`` rows (the same rows for every ``k``). A ``k`` whose
    labelling leaves fewer than two cohorts in the subsample scores ``nan`` and cannot win.

Everything is deterministic given ``seed`` (k-means/GMM initialisation and the subsample).
Bad input is a ``ValueError`` that says what is wrong: empty input, NaN/inf (naming the column and
the row), non-numeric feature columns (naming them), ``n_cohorts`` outside ``1..n_rows``, an
unknown ``method``/``select``, an invalid ``k_range``.

Example::

    cm = CohortModel(method="gmm", n_cohorts="auto", features=["age", "tenure", "spend_30d"])
    df["cohort"] = cm.fit_predict(df)
    cm.n_cohorts_, cm.scores_                 # chosen k and the BIC of every k tried
    cohort_profile(df, cm, outcome="revenue")  # size, share, feature means, mean outcome
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

__all__ = ["CohortModel", "cohort_profile"]

_METHODS = ("kmeans", "gmm", "column")
_SELECTS = ("bic", "silhouette")


# ----------------------------------------------------------------------------- input checks


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, (bool, np.bool_))


def _numeric_kind_ok(dtype: Any) -> bool:
    """Real numbers and booleans count as numeric; text, dates, categories, complex do not."""
    if isinstance(dtype, pd.CategoricalDtype):
        return False
    if not pd.api.types.is_numeric_dtype(dtype):
        return False
    return not pd.api.types.is_complex_dtype(dtype)


def _check_finite(values: np.ndarray, names: Sequence[str], index: pd.Index | None, what: str) -> None:
    """Raise naming the column and row of the first NaN/inf in ``values`` ``[n, d]``."""
    bad = ~np.isfinite(values)
    if not bad.any():
        return
    row, col = (int(v) for v in np.argwhere(bad)[0])
    value = values[row, col]
    kind = "NaN" if np.isnan(value) else str(value)
    where = f"row {row}"
    if index is not None and not (isinstance(index, pd.RangeIndex) and index[row] == row):
        where += f" (index label {index[row]!r})"
    more = int(bad.sum()) - 1
    tail = f"; {more} more non-finite value(s) in the input" if more else ""
    raise ValueError(f"{what} column {names[col]!r} has {kind} at {where}{tail}. Fill or drop missing values first.")


def _feature_matrix(
    X: Any, features: Sequence[str] | None, what: str = "feature"
) -> tuple[np.ndarray, list[str], bool, pd.Index | None]:
    """Validated float64 ``[n, d]`` from a DataFrame (columns ``features`` or all) or an array.

    Returns the matrix, the column names, whether the input was a DataFrame, and its index.
    """
    if isinstance(X, pd.DataFrame):
        if features is None:
            cols = list(X.columns)
        else:
            if isinstance(features, str):
                raise ValueError(f"features must be a list of column names, got the string {features!r}")
            cols = list(features)
            if not cols:
                raise ValueError("features is an empty list: name at least one column")
            dup = sorted({str(c) for c in cols if cols.count(c) > 1})
            if dup:
                raise ValueError(f"features lists column(s) more than once: {dup}")
            missing = [c for c in cols if c not in X.columns]
            if missing:
                raise ValueError(f"feature column(s) {missing} not in the data; available: {list(X.columns)}")
        if len(X) == 0:
            raise ValueError("empty input: the DataFrame has 0 rows")
        if not cols:
            raise ValueError("empty input: the DataFrame has no columns")
        bad = [c for c in cols if not _numeric_kind_ok(X[c].dtype)]
        if bad:
            kinds = ", ".join(f"{c!r} ({X[c].dtype})" for c in bad)
            hint = "" if features is not None else " (or pass features=[...] to use only the numeric ones)"
            raise ValueError(
                f"non-numeric {what} column(s): {kinds}. Encode them as numbers (one-hot or codes) first{hint}."
            )
        values = X[cols].to_numpy(dtype=np.float64, na_value=np.nan)
        names = [str(c) for c in cols]
        _check_finite(values, names, X.index, what)
        return values, names, True, X.index
    if features is not None:
        raise ValueError("features= names DataFrame columns; pass a pandas DataFrame, or features=None for an array")
    arr = np.asarray(X)
    if arr.ndim != 2:
        raise ValueError(f"X must be 2-D [n_rows, n_features]; got {arr.ndim}-D with shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError("empty input: X has 0 rows")
    if arr.shape[1] == 0:
        raise ValueError("empty input: X has 0 feature columns")
    names = [f"x{j}" for j in range(arr.shape[1])]
    if not (arr.dtype.kind in "biuf"):
        raise ValueError(f"X must hold numbers (int, float, bool); got dtype {arr.dtype}")
    values = arr.astype(np.float64, copy=False)
    _check_finite(values, names, None, what)
    return values, names, False, None


def _label_series(X: Any, column: Any) -> pd.Series:
    """The cohort labels for method='column': ``X[column]`` of a DataFrame, or a 1-D array/Series."""
    if isinstance(X, pd.DataFrame):
        if column not in X.columns:
            raise ValueError(f"cohort column {column!r} not in the data; available: {list(X.columns)}")
        s = X[column]
    else:
        arr = X if isinstance(X, pd.Series) else np.asarray(X, dtype=object)
        if getattr(arr, "ndim", 1) != 1:
            raise ValueError(
                "method='column' needs a DataFrame holding the cohort column, or a 1-D array of labels; "
                f"got shape {np.shape(X)}"
            )
        s = pd.Series(arr) if not isinstance(arr, pd.Series) else arr
    if len(s) == 0:
        raise ValueError("empty input: 0 rows")
    missing = s.isna().to_numpy()
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise ValueError(f"cohort column {column!r} has a missing label at row {row} ({int(missing.sum())} in all)")
    return s


# ----------------------------------------------------------------------------- the model


class CohortModel(BaseEstimator):
    """Assign rows (customers) to cohorts by k-means, a Gaussian mixture, or an existing column.

    Parameters
    ----------
    method : {"kmeans", "gmm", "column"}
    n_cohorts : int or "auto"
        Number of cohorts; ``"auto"`` tries every k in ``k_range`` and keeps the best by ``select``.
        Ignored by ``method="column"`` unless an int that disagrees with the column.
    select : {"bic", "silhouette"} or None
        Criterion for ``"auto"``. None: ``"bic"`` for GMM, ``"silhouette"`` for k-means.
    k_range : (int, int)
        Inclusive range of k tried by ``"auto"``.
    max_silhouette_rows : int
        Silhouette is computed on a seeded subsample of at most this many rows.
    features : list of str or None
        DataFrame columns to cluster on (None: every column, all of which must be numeric).
        Arrays are used whole.
    column : str or None
        The column holding the cohorts for ``method="column"``.
    standardize : bool
        Standardize the features (``StandardScaler``) before clustering.
    covariance_type : str
        GMM covariance type (``"full"``, ``"tied"``, ``"diag"``, ``"spherical"``).
    n_init : int
        Restarts of k-means / EM; the best is kept.
    seed : int or None
        Seed of the initialisations and of the silhouette subsample.

    Attributes (after ``fit``)
    --------------------------
    n_cohorts_ : int
    labels_ : ndarray of int, shape (n_rows,) -- cohort code of every fitted row
    cohort_names_ : list of str -- ``"c0".."c{k-1}"``, or the column's labels as strings
    cohort_labels_ : list -- the column's original labels (method="column"), else the names
    scores_ : dict {k: criterion value} (``"auto"`` only; empty otherwise)
    criterion_ : "bic", "silhouette" or None
    scaler_ : the fitted ``StandardScaler`` (None for "column" or ``standardize=False``)
    model_ : the fitted ``KMeans`` / ``GaussianMixture`` (None for "column")
    feature_names_ : list of str -- the columns clustered on (``x0..`` for arrays)
    n_features_in_ : int
    """

    def __init__(
        self,
        method: str = "kmeans",
        n_cohorts: int | str = "auto",
        *,
        select: str | None = None,
        k_range: tuple[int, int] = (2, 8),
        max_silhouette_rows: int = 5000,
        features: list[str] | None = None,
        column: str | None = None,
        standardize: bool = True,
        covariance_type: str = "full",
        n_init: int = 5,
        seed: int | None = 0,
    ) -> None:
        self.method = method
        self.n_cohorts = n_cohorts
        self.select = select
        self.k_range = k_range
        self.max_silhouette_rows = max_silhouette_rows
        self.features = features
        self.column = column
        self.standardize = standardize
        self.covariance_type = covariance_type
        self.n_init = n_init
        self.seed = seed

    # -- parameter checks

    def _check_params(self) -> str | None:
        """Validate the settings; returns the selection criterion (None for a fixed k)."""
        if self.method not in _METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {list(_METHODS)}")
        if self.select is not None and self.select not in _SELECTS:
            raise ValueError(f"unknown select {self.select!r}; choose one of {list(_SELECTS)} (or None)")
        auto = isinstance(self.n_cohorts, str) and self.n_cohorts == "auto"
        if not auto:
            if not _is_int(self.n_cohorts):
                raise ValueError(f"n_cohorts must be a positive int or 'auto'; got {self.n_cohorts!r}")
            if self.n_cohorts < 1:
                raise ValueError(f"n_cohorts must be at least 1; got {self.n_cohorts}")
        if self.method == "column":
            if self.column is None:
                raise ValueError("method='column' needs column=<name of the column holding the cohorts>")
            return None
        if not _is_int(self.n_init) or self.n_init < 1:
            raise ValueError(f"n_init must be a positive int; got {self.n_init!r}")
        if not auto:
            return None
        select = self.select or ("bic" if self.method == "gmm" else "silhouette")
        if select == "bic" and self.method == "kmeans":
            raise ValueError(
                "select='bic' needs a likelihood, which k-means does not have: "
                "use method='gmm' with BIC, or select='silhouette'"
            )
        kr = self.k_range
        if (
            not isinstance(kr, (tuple, list))
            or len(kr) != 2
            or not all(_is_int(k) for k in kr)
        ):
            raise ValueError(f"k_range must be a pair of ints (k_min, k_max); got {kr!r}")
        lo, hi = int(kr[0]), int(kr[1])
        if lo > hi:
            raise ValueError(f"k_range {tuple(kr)} is empty: k_min > k_max")
        k_min = 2 if select == "silhouette" else 1
        if lo < k_min:
            why = "the silhouette needs at least 2 cohorts" if select == "silhouette" else "k must be >= 1"
            raise ValueError(f"k_range {tuple(kr)} starts below {k_min}: {why}")
        if select == "silhouette" and (not _is_int(self.max_silhouette_rows) or self.max_silhouette_rows < 3):
            raise ValueError(f"max_silhouette_rows must be an int >= 3; got {self.max_silhouette_rows!r}")
        return select

    # -- fitting

    def _make_model(self, k: int) -> KMeans | GaussianMixture:
        if self.method == "kmeans":
            return KMeans(n_clusters=k, n_init=self.n_init, random_state=self.seed)
        return GaussianMixture(
            n_components=k, covariance_type=self.covariance_type, n_init=self.n_init, random_state=self.seed
        )

    def fit(self, X: Any, y: Any = None) -> CohortModel:
        """Fit on a DataFrame (``features`` columns, or ``column`` for method='column') or an array."""
        select = self._check_params()
        if self.method == "column":
            return self._fit_column(X)
        values, names, from_frame, _ = _feature_matrix(X, self.features)
        self._feature_columns = list(self.features) if self.features is not None else (
            list(X.columns) if from_frame else None
        )
        n = values.shape[0]
        auto = select is not None
        if not auto and self.n_cohorts > n:
            raise ValueError(f"n_cohorts={self.n_cohorts} is more than the {n} rows to split")
        if auto:
            lo, hi = int(self.k_range[0]), int(self.k_range[1])
            limit = n - 1 if select == "silhouette" else n
            if hi > limit:
                raise ValueError(
                    f"k_range {tuple(self.k_range)} asks for up to {hi} cohorts but the data has only {n} rows"
                    + (" (the silhouette needs k <= n_rows - 1)" if select == "silhouette" else "")
                )
        self.scaler_ = StandardScaler().fit(values) if self.standardize else None
        Z = self.scaler_.transform(values) if self.scaler_ is not None else values

        self.scores_: dict[int, float] = {}
        self.criterion_ = select
        if not auto:
            best_k, best_model = int(self.n_cohorts), self._make_model(int(self.n_cohorts)).fit(Z)
        else:
            sub = None
            if select == "silhouette" and n > self.max_silhouette_rows:
                rng = np.random.default_rng(self.seed)
                sub = np.sort(rng.choice(n, size=int(self.max_silhouette_rows), replace=False))
            best_k, best_model, best_score = -1, None, np.nan
            for k in range(lo, hi + 1):
                model = self._make_model(k).fit(Z)
                if select == "bic":
                    score = float(model.bic(Z))
                    better = np.isnan(best_score) or score < best_score
                else:
                    labels = model.predict(Z)
                    Zs, ls = (Z, labels) if sub is None else (Z[sub], labels[sub])
                    n_lab = len(np.unique(ls))
                    score = float(silhouette_score(Zs, ls)) if 2 <= n_lab <= len(ls) - 1 else float("nan")
                    better = not np.isnan(score) and (np.isnan(best_score) or score > best_score)
                self.scores_[k] = score
                if better:
                    best_k, best_model, best_score = k, model, score
            if best_model is None:
                raise ValueError(
                    f"no k in k_range {tuple(self.k_range)} gave at least two non-empty cohorts; "
                    "the data may have too few distinct rows"
                )
        self.model_ = best_model
        raw = np.asarray(best_model.predict(Z), dtype=np.int64)
        counts = np.bincount(raw, minlength=best_k)
        order = np.argsort(-counts, kind="stable")  # order[new] = raw
        self._code_of_raw = np.empty(best_k, dtype=np.int64)
        self._code_of_raw[order] = np.arange(best_k)
        self.n_cohorts_ = best_k
        self.cohort_names_ = [f"c{i}" for i in range(best_k)]
        self.cohort_labels_ = list(self.cohort_names_)
        self.feature_names_ = names
        self._fitted_on_frame = from_frame
        self.n_features_in_ = len(names)
        self.labels_ = self._code_of_raw[raw]
        return self

    def _fit_column(self, X: Any) -> CohortModel:
        s = _label_series(X, self.column)
        uniq = list(pd.unique(s.to_numpy(dtype=object)))
        try:
            labels = sorted(uniq)
        except TypeError:
            kinds = sorted({type(v).__name__ for v in uniq})
            raise ValueError(
                f"cohort column {self.column!r} mixes label types {kinds} that cannot be sorted; "
                "make them all strings or all numbers"
            ) from None
        if _is_int(self.n_cohorts) and self.n_cohorts != len(labels):
            raise ValueError(
                f"n_cohorts={self.n_cohorts} but column {self.column!r} has {len(labels)} distinct labels"
            )
        self._code_of_label = {lab: i for i, lab in enumerate(labels)}
        self.n_cohorts_ = len(labels)
        self.cohort_labels_ = labels
        self.cohort_names_ = [str(lab) for lab in labels]
        self.scores_ = {}
        self.criterion_ = None
        self.scaler_ = None
        self.model_ = None
        self.feature_names_ = [str(self.column)]
        self._fitted_on_frame = isinstance(X, pd.DataFrame)
        self.n_features_in_ = 1
        self.labels_ = self._map_labels(s)
        return self

    # -- prediction

    def _map_labels(self, s: pd.Series) -> np.ndarray:
        codes = s.map(self._code_of_label)
        unseen_mask = codes.isna().to_numpy()
        if unseen_mask.any():
            unseen = list(pd.unique(s[unseen_mask].to_numpy(dtype=object)))
            shown = ", ".join(repr(v) for v in unseen[:10]) + (", ..." if len(unseen) > 10 else "")
            raise ValueError(
                f"cohort column {self.column!r} has label(s) not seen at fit time: {shown} "
                f"(first at row {int(np.flatnonzero(unseen_mask)[0])}); known labels: {self.cohort_labels_}"
            )
        return codes.to_numpy(dtype=np.int64)

    def predict(self, X: Any) -> np.ndarray:
        """Cohort code (0..n_cohorts_-1) of every row of ``X``."""
        check_is_fitted(self, "labels_")
        if self.method == "column":
            return self._map_labels(_label_series(X, self.column))
        if isinstance(X, pd.DataFrame) and self._fitted_on_frame:
            values, _, _, _ = _feature_matrix(X, self._feature_columns)
        else:
            frame = X if isinstance(X, pd.DataFrame) else None
            values, _, _, _ = _feature_matrix(X if frame is None else frame, None)
        if values.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {values.shape[1]} feature columns; the model was fitted on {self.n_features_in_}")
        Z = self.scaler_.transform(values) if self.scaler_ is not None else values
        return self._code_of_raw[np.asarray(self.model_.predict(Z), dtype=np.int64)]

    def fit_predict(self, X: Any, y: Any = None) -> np.ndarray:
        """Fit, then return ``labels_``."""
        return self.fit(X).labels_


# ----------------------------------------------------------------------------- profile


def cohort_profile(
    df_or_X: Any,
    cohorts: Any,
    outcome: Any = None,
    feature_names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per cohort: ``size``, ``share``, ``mean_<feature>`` for each feature, ``outcome_mean``.

    Parameters
    ----------
    df_or_X : DataFrame or 2-D array [n, d]
    cohorts : cohort of every row -- an array-like of labels (any hashable), the name of a column of
        the DataFrame, or a fitted :class:`CohortModel` (its ``predict``; rows are then named by
        ``cohort_names_`` and every cohort is listed, an empty one with size 0 and NaN means).
    outcome : optional baseline outcome of every row -- an array-like, or a column name.
        Adds ``outcome_mean``.
    feature_names : DataFrame: the columns to average (default: every numeric column other than the
        cohort and outcome columns). Array: names of its columns (default ``x0..``).

    The index (named ``cohort``) holds the cohort labels in sorted order (codes for a model).
    ``share`` is size / n. Means skip NaN, as pandas does.
    """
    is_frame = isinstance(df_or_X, pd.DataFrame)
    n = len(df_or_X) if is_frame else (np.shape(df_or_X)[0] if np.ndim(df_or_X) >= 1 else 0)
    if n == 0:
        raise ValueError("empty input: 0 rows")

    # cohorts
    index_values: list[Any] | None = None
    names_for_model: list[str] | None = None
    cohort_col = None
    if isinstance(cohorts, CohortModel):
        check_is_fitted(cohorts, "labels_")
        codes = cohorts.predict(df_or_X)
        index_values = list(range(cohorts.n_cohorts_))
        names_for_model = list(cohorts.cohort_names_)
        if cohorts.method == "column":
            cohort_col = cohorts.column
        labels = pd.Series(codes)
    elif isinstance(cohorts, str) or (is_frame and np.ndim(cohorts) == 0 and cohorts in df_or_X.columns):
        if not is_frame:
            raise ValueError(f"cohorts={cohorts!r} names a column, but the data is an array, not a DataFrame")
        if cohorts not in df_or_X.columns:
            raise ValueError(f"cohort column {cohorts!r} not in the data; available: {list(df_or_X.columns)}")
        cohort_col = cohorts
        labels = df_or_X[cohorts].reset_index(drop=True)
    else:
        arr = np.asarray(cohorts)
        if arr.ndim != 1:
            raise ValueError(f"cohorts must be 1-D (one label per row); got shape {arr.shape}")
        labels = pd.Series(cohorts.to_numpy() if isinstance(cohorts, pd.Series) else arr)
    if len(labels) != n:
        raise ValueError(f"cohorts has {len(labels)} entries but the data has {n} rows")
    if labels.isna().any():
        row = int(np.flatnonzero(labels.isna().to_numpy())[0])
        raise ValueError(f"cohorts has a missing label at row {row}")

    # outcome
    out_values = None
    out_col = None
    if outcome is not None:
        if isinstance(outcome, str):
            if not is_frame or outcome not in df_or_X.columns:
                where = list(df_or_X.columns) if is_frame else "an array has no named columns"
                raise ValueError(f"outcome column {outcome!r} not in the data; available: {where}")
            out_col = outcome
            if not _numeric_kind_ok(df_or_X[outcome].dtype):
                raise ValueError(f"outcome column {outcome!r} is not numeric ({df_or_X[outcome].dtype})")
            out_values = df_or_X[outcome].to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            o = np.asarray(outcome)
            if o.ndim != 1 or len(o) != n:
                raise ValueError(f"outcome must be 1-D with one value per row ({n}); got shape {o.shape}")
            if o.dtype.kind not in "biuf":
                raise ValueError(f"outcome must be numeric; got dtype {o.dtype}")
            out_values = o.astype(np.float64)

    # features
    if is_frame:
        if feature_names is None:
            skip = {c for c in (cohort_col, out_col) if c is not None}
            cols = [c for c in df_or_X.columns if c not in skip and _numeric_kind_ok(df_or_X[c].dtype)]
        else:
            cols = list(feature_names)
            missing = [c for c in cols if c not in df_or_X.columns]
            if missing:
                raise ValueError(f"feature column(s) {missing} not in the data; available: {list(df_or_X.columns)}")
            bad = [c for c in cols if not _numeric_kind_ok(df_or_X[c].dtype)]
            if bad:
                raise ValueError(f"non-numeric feature column(s): {bad}")
        feats = pd.DataFrame(
            df_or_X[cols].to_numpy(dtype=np.float64, na_value=np.nan), columns=[str(c) for c in cols]
        )
    else:
        arr = np.asarray(df_or_X)
        if arr.ndim != 2:
            raise ValueError(f"X must be 2-D [n_rows, n_features]; got shape {arr.shape}")
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"X must hold numbers; got dtype {arr.dtype}")
        names = [f"x{j}" for j in range(arr.shape[1])] if feature_names is None else [str(c) for c in feature_names]
        if len(names) != arr.shape[1]:
            raise ValueError(f"feature_names has {len(names)} names but X has {arr.shape[1]} columns")
        feats = pd.DataFrame(arr.astype(np.float64), columns=names)

    table = feats.add_prefix("mean_")
    if out_values is not None:
        table["outcome_mean"] = out_values
    grouped = table.groupby(labels.to_numpy(), sort=True)
    size = grouped.size()
    means = grouped.mean()
    result = pd.concat([size.rename("size"), (size / n).rename("share"), means], axis=1)
    if index_values is not None:
        result = result.reindex(index_values)
        result["size"] = result["size"].fillna(0).astype(np.int64)
        result["share"] = result["share"].fillna(0.0)
        result.index = pd.Index(names_for_model, name="cohort")
    else:
        result["size"] = result["size"].astype(np.int64)
        result.index.name = "cohort"
    return result
