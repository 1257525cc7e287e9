"""Discovered cohorts on a decision log (a ``[cohorts]`` section for ``grpokit learn``, and ``grpokit
run --set evaluation.train_on=logs``).

:func:`fit_log_cohorts` fits a :class:`~grpokit.groups.cohorts.CohortModel` (k-means or GMM, k
fixed or chosen by BIC / silhouette) on at most ``fit_size`` seeded rows of a log's numeric
features (``features``, by name; default all) and returns its plain-data model;
:func:`regroup_log` replaces a log's group column by the cohorts :func:`~grpokit.groups.assign`
gives its rows (c_i = assign(model, x_i)), so every consumer of ``log.group`` (P-GRPO's preference
groups, the group embedding, the per-cohort tables) uses the discovered cohorts, and a saved
policy carrying the model assigns new rows the same way.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from grpokit.groups.export import assign, cohort_model_to_dict

__all__ = ["fit_log_cohorts", "regroup_log", "learn_cohorts", "cohorts_block", "COHORT_COLUMN"]

#: the group column's name in a log regrouped by discovered cohorts
COHORT_COLUMN = "cohort"


def fit_log_cohorts(log, cfg) -> dict:
    """The plain-data cohort model fitted on ``log`` with the ``[cohorts]`` settings ``cfg``
    (``method`` kmeans | gmm, ``k``, ``select``, ``features``, ``seed``, ``fit_size``)."""
    import pandas as pd

    from grpokit.groups.cohorts import CohortModel

    if cfg.method == "column":
        raise ValueError("cohorts.method = 'column' keeps the log's own group column: there is nothing to fit")
    names = list(log.feature_names)
    features = list(cfg.features) or names
    unknown = [f for f in features if f not in names]
    if unknown:
        cats = [f for f in unknown if f in log.categorical]
        raise ValueError(f"cohorts.features {unknown} are not numeric feature columns of the log"
                         + (f" ({cats} are categories: clustering needs numbers)" if cats else "")
                         + f"; its numeric features: {names}")
    n = len(log)
    rows = np.arange(n)
    if n > cfg.fit_size:
        rows = np.sort(np.random.default_rng(cfg.seed + 4_243).choice(n, size=cfg.fit_size, replace=False))
    if isinstance(cfg.k, int) and cfg.k > len(rows):
        raise ValueError(f"cohorts.k = {cfg.k} is more than the {len(rows)} rows the cohort model is fitted on")
    frame = pd.DataFrame(log.features[rows], columns=names)[features]
    try:
        cm = CohortModel(cfg.method, n_cohorts=cfg.k, select=cfg.select, features=features, seed=cfg.seed).fit(frame)
    except ValueError as err:
        raise ValueError(f"cohorts ({cfg.method}, k = {cfg.k!r}): {err}") from None
    return cohort_model_to_dict(cm)


def regroup_log(log, model: dict):
    """``log`` with its group column = the cohort of every row under ``model`` (labels = cohort names)."""
    import pandas as pd

    frame = pd.DataFrame(log.features, columns=list(log.feature_names))
    codes = assign(model, frame)
    schema = log.schema.model_copy(update={"group": COHORT_COLUMN})
    return dataclasses.replace(log, group=codes.astype(np.int64), group_labels=list(model["cohort_names"]),
                               schema=schema)


def learn_cohorts(cfg, train, *others):
    """``(train, *others, model)``: with discovered cohorts (``cfg.method`` kmeans | gmm) the model is
    fitted on ``train`` alone and every log is regrouped by it; with ``cfg`` None or method "column"
    the logs come back unchanged and ``model`` is None (the log's own group column stays)."""
    if cfg is None or cfg.method == "column":
        return (train, *others, None)
    model = fit_log_cohorts(train, cfg)
    return (regroup_log(train, model), *(None if o is None else regroup_log(o, model) for o in others), model)


def cohorts_block(model: dict | None, log) -> dict | None:
    """The summary's ``cohorts``: method, number, names, features and each cohort's size in ``log``."""
    if model is None:
        return None
    sizes = np.bincount(log.group, minlength=int(model["n_cohorts"])).tolist()
    return {"method": model["method"], "n_cohorts": int(model["n_cohorts"]), "names": list(model["cohort_names"]),
            "features": list(model["features"]), "criterion": model.get("criterion"),
            "sizes": dict(zip(model["cohort_names"], sizes))}
