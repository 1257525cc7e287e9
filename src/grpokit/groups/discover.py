"""Discover cohorts in a decision log: fit a :class:`CohortModel` on the log's features, assign every
row, and profile the cohorts (size, share, feature means, baseline outcome: the mean reward of the
rows whose logged action is the control, action 0, when there are any, else of all rows).

The settings are those of a run config's ``[cohorts]`` section: ``method`` ("column" | "kmeans" |
"gmm"), ``k`` ("auto" or a number), ``select`` ("bic" | "silhouette"), ``features`` (default: every
numeric feature of the log), ``column`` (for method "column"; default the log's group column), ``seed``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from grpokit.groups.cohorts import CohortModel, cohort_profile
from grpokit.groups.export import cohort_model_to_dict

__all__ = ["discover_cohorts"]


def discover_cohorts(log, *, method: str = "gmm", k: int | str = "auto", select: str | None = None,
                     features: list[str] | None = None, column: str | None = None, seed: int = 0,
                     k_range: tuple[int, int] = (2, 8)) -> dict:
    """``{"labels": [n] int64, "model": plain-data model, "profile": DataFrame, "scores": {k: score}}``."""
    frame = pd.DataFrame(log.features, columns=log.feature_names)
    if method == "column":
        if column is None or column == "group":
            if log.group is None:
                raise ValueError("cohorts.method = 'column' needs cohorts.column, and the log has no group column")
            labels = np.asarray(log.group_labels, dtype=object)[log.group] if log.group_labels else log.group
            frame["group"] = [str(v) for v in labels]
            column = "group"
        elif column not in frame.columns and column not in log.categorical:
            raise ValueError(f"cohorts.column {column!r} is not a column of the log; features: {log.feature_names}")
        elif column in log.categorical:
            frame[column] = log.categorical[column]
        cm = CohortModel("column", column=column, seed=seed)
        fit_on = frame
    else:
        use = list(features) if features else list(log.feature_names)
        unknown = [f for f in use if f not in frame.columns]
        if unknown:
            raise ValueError(f"cohorts.features {unknown} are not numeric feature columns of the log; "
                             f"features: {log.feature_names}")
        cm = CohortModel(method, n_cohorts=k, select=select, features=use, seed=seed, k_range=k_range)
        fit_on = frame
    cm.fit(fit_on)
    labels = cm.labels_
    outcome = None
    if log.reward is not None:
        control = log.action == 0
        outcome = np.where(control, log.reward, np.nan) if control.any() else log.reward
    prof_feats = [f for f in (features or log.feature_names) if f in frame.columns and f != column]
    profile = cohort_profile(frame[prof_feats], labels, outcome=outcome)
    profile.index = [cm.cohort_names_[int(i)] for i in profile.index]
    profile.index.name = "cohort"
    return {"labels": labels, "model": cohort_model_to_dict(cm), "profile": profile, "scores": dict(cm.scores_),
            "n_cohorts": int(cm.n_cohorts_)}
