"""Cohorts (groups of customers): find them, and describe them.

:class:`CohortModel` assigns every row a cohort code ``0..k-1`` by k-means or a Gaussian mixture on
standardized features (with ``n_cohorts="auto"``: k chosen by BIC or silhouette over ``k_range``),
or by taking an existing column; :func:`cohort_profile` gives one row per cohort with its size,
share, feature means and mean baseline outcome. See :mod:`grpokit.groups.cohorts`.
:func:`cohort_model_to_dict` / :func:`assign` store a fitted model as plain data (kept in a saved
policy's ``metadata["cohort_model"]``) and assign new rows from it identically.
"""

from grpokit.groups.cohorts import CohortModel, cohort_profile
from grpokit.groups.export import assign, cohort_model_to_dict

__all__ = ["CohortModel", "assign", "cohort_model_to_dict", "cohort_profile"]
