"""A scenario whose groups are discovered cohorts (a run's ``[cohorts]`` section).

:func:`with_cohorts` fits a :class:`~grpokit.groups.cohorts.CohortModel` (k-means or GMM, k fixed
or chosen by BIC / silhouette) on ``fit_size`` seeded contexts of the scenario, on the features the
policy sees (``cohorts.features``, by name; default all), and returns :class:`CohortScenario`: the
same scenario whose ``Contexts.group`` is each context's discovered cohort
(:func:`grpokit.groups.assign`, so a saved policy assigns new rows the same way from
``metadata["cohort_model"]``), with ``n_groups = k`` and ``group_names = c0..c{k-1}``. Everything that
reads ``group`` therefore uses the discovered cohorts: P-GRPO's preference groups, the group
embedding, group-relative rewards, the pilot's clusters and the per-cohort tables. The scenario's
own cohorts stay in ``extra["market"]``, where spillover acts (the market does not change because
an analyst clustered the customers). ``method = "column"`` keeps the scenario's own cohorts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from grpokit.groups.cohorts import CohortModel
from grpokit.groups.export import assign, cohort_model_to_dict
from grpokit.scenarios.base import Contexts, Scenario

__all__ = ["CohortScenario", "with_cohorts"]


class CohortScenario(Scenario):
    """``base`` with ``group`` replaced by the cohort of :func:`assign` (``model``: plain-data cohort model)."""

    def __init__(self, base: Scenario, model: dict, feature_names: list[str]):
        self.base, self.cohort_model = base, model
        self.name = base.name
        self.feature_names = feature_names
        self._cols = [feature_names.index(f) for f in model["features"]]
        self.n_groups = int(model["n_cohorts"])
        self.group_names = list(model["cohort_names"])

    def __getattr__(self, item):  # everything else is the base scenario's
        if item == "base":
            raise AttributeError(item)
        return getattr(self.base, item)

    def _regroup(self, ctx: Contexts) -> Contexts:
        x = ctx.obs.detach().double().cpu().numpy()[:, self._cols]
        cohort = torch.as_tensor(assign(self.cohort_model, x), device=ctx.group.device)
        extra = dict(ctx.extra)
        extra.setdefault("market", ctx.group)
        return Contexts(ctx.obs, cohort, ctx.mask, extra)

    def sample_contexts(self, n: int, generator: torch.Generator) -> Contexts:
        return self._regroup(self.base.sample_contexts(n, generator))

    def reward(self, contexts, actions, generator, step: int = 0):
        return self.base.reward(contexts, actions, generator, step)

    def expected_reward(self, contexts, actions):
        return self.base.expected_reward(contexts, actions)

    def oracle_actions(self, contexts):
        return self.base.oracle_actions(contexts)

    def true_value(self, contexts: Contexts, assignment: torch.Tensor) -> dict:
        """The base scenario's true value, with ``per_group`` over the discovered cohorts."""
        if hasattr(self.base, "true_value"):
            out = dict(self.base.true_value(contexts, assignment))
        else:
            from grpokit.evaluation.values import evaluate_actions

            out = dict(evaluate_actions(self.base, contexts, assignment))
        unit = self.base.expected_reward(contexts, assignment.unsqueeze(1))[:, 0].double()
        g = contexts.group.long()
        out["per_group"] = {name: (float(unit[g == i].mean()) if bool((g == i).any()) else None)
                            for i, name in enumerate(self.group_names)}
        return out


def with_cohorts(scenario: Scenario, cfg) -> Scenario:
    """``scenario`` itself for ``cfg.method == "column"``, else a :class:`CohortScenario` fitted as above."""
    if cfg is None or cfg.method == "column":
        return scenario
    names = list(getattr(scenario, "feature_names", None) or [f"x{j}" for j in range(scenario.obs_dim)])
    features = list(cfg.features) or names
    unknown = [f for f in features if f not in names]
    if unknown:
        raise ValueError(f"cohorts.features {unknown} are not features of scenario {scenario.name!r}: {names}")
    if isinstance(cfg.k, int) and cfg.k > cfg.fit_size:
        raise ValueError(f"cohorts.k = {cfg.k} is more than cohorts.fit_size = {cfg.fit_size}, the customers "
                         "the cohort model is fitted on")
    ctx = scenario.sample_contexts(cfg.fit_size, torch.Generator().manual_seed(cfg.seed + 4_242))
    frame = pd.DataFrame(ctx.obs.double().numpy(), columns=names)[features]
    try:
        cm = CohortModel(cfg.method, n_cohorts=cfg.k, select=cfg.select, features=features, seed=cfg.seed).fit(frame)
    except ValueError as err:
        raise ValueError(f"cohorts ({cfg.method}, k = {cfg.k!r}): {err}") from None
    if np.unique(cm.labels_).size < 1:
        raise ValueError("cohort discovery found no cohort")
    return CohortScenario(scenario, cohort_model_to_dict(cm), names)
