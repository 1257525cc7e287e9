"""A ranking log as a GRPO scenario: GRADE on your own logs, scored by the offline auction.

Each context is a logged request (its request features, its segment); an action is a fusion weight
vector per request ``[B, G, K]``; the reward parts are those of the search simulator, read from the
log instead of a simulator:

* ``posterior``: Σ_label a_label · (position-discounted sum of the *logged* labels of the re-ranked
  top-k) (:func:`grpokit.ranking.auction.auction`; coefficients ``posterior``, default GMV when the
  log has a ``gmv`` label, else the last label);
* ``prior``: the discounted sum over the re-ranked top-k of the model's predicted utility, the
  product of the ``prior_tasks`` predictions (default: every task, e.g. p̂c · p̂o · v̂);
* ``rules``: the weight-format penalty of :func:`grpokit.ranking.composite.rule_penalty`.

The rewards are deterministic (the labels are fixed), so the G weight vectors of a request are
compared on the same feedback. The offline auction is the standard, and biased, replay: a
candidate that was not shown has no observed label, so a ranking that promotes unshown candidates
earns nothing for them and is judged conservatively; and labels observed at one position are
discounted at the new one as if position bias were the ``discount`` curve.
:meth:`LoggedRankingScenario.expected_reward` is that posterior (there is no other truth in a log).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

from grpokit.scenarios.base import Contexts, Scenario

__all__ = ["LoggedRankingConfig", "LoggedRankingScenario"]


class LoggedRankingConfig(BaseModel):
    """How a ranking log is replayed (``[scenario] name = "logged_ranking"`` for ``grpokit fusion learn``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: Literal["logged_ranking"] = "logged_ranking"
    k: int = Field(10, ge=1)  #: slots shown
    fusion: Literal["linear", "log_linear"] = "linear"
    #: per-task score transform before fusion (identity, log1p, sqrt, rank); default rank (scale-free)
    transforms: dict[str, Literal["identity", "log1p", "sqrt", "rank"]] | Literal["identity", "log1p", "sqrt", "rank"] = "rank"
    discount: Literal["log2", "none"] = "log2"
    #: label column -> coefficient of the posterior (default: gmv if logged, else the last label)
    posterior: dict[str, float] | None = None
    #: tasks whose predictions multiply into the prior's per-candidate utility (default: all tasks)
    prior_tasks: list[str] | None = None
    #: the business's production weights, one per task (default: uniform)
    default_weights: list[float] | None = None
    rule_floor: float = Field(0.05, ge=0)
    rule_floor_penalty: float = Field(10.0, ge=0)
    rule_default_penalty: float = Field(2.0, ge=0)
    rule_default_tolerance: float = Field(0.3, ge=0, le=1)
    rule_onehot_penalty: float = Field(10.0, ge=0)
    rule_onehot_threshold: float = Field(0.9, gt=0, le=1)
    holdout_fraction: float = Field(0.2, gt=0, lt=1)  #: share of requests held out for the final comparison

    @model_validator(mode="after")
    def _check(self) -> "LoggedRankingConfig":
        if self.default_weights is not None:
            w = self.default_weights
            if any(x < 0 for x in w) or abs(sum(w) - 1) > 1e-6:
                raise ValueError(f"scenario.default_weights must be >= 0 and sum to 1, got {w}")
        return self


class LoggedRankingScenario(Scenario):
    """Logged requests as contexts, offline-auction rewards (see the module docstring)."""

    name = "logged_ranking"
    config_class = LoggedRankingConfig

    def __init__(self, log, config: LoggedRankingConfig | None = None, **params):
        from grpokit.ranking.auction import apply_transforms

        config = self._config_from(config, params)
        self.config = c = config
        self.log = log
        tasks, labels = list(log.tasks), list(log.label_names)
        self.tasks, self.label_names, self.n_tasks = tasks, labels, len(tasks)
        if len(log) < 2:
            raise ValueError(f"the log has {len(log)} request(s); GRADE needs at least 2")
        if not log.feature_names:
            raise ValueError("the ranking log has no request features (schema.features): a personalized "
                             "policy needs at least one feature per request")
        self.obs_dim = len(log.feature_names)
        self.feature_names = list(log.feature_names)
        if log.segment is not None:
            self.group_names = [str(s) for s in log.segment_labels]
            self._group = log.segment.long()
        else:
            self.group_names = ["all"]
            self._group = torch.zeros(len(log), dtype=torch.long)
        self.n_groups = len(self.group_names)
        self.action_spec = {"kind": "dirichlet", "n_components": self.n_tasks}
        self.k = c.k
        # posterior coefficients
        post = c.posterior if c.posterior is not None else {("gmv" if "gmv" in labels else labels[-1]): 1.0}
        unknown = [name for name in post if name not in labels]
        if unknown or not post:
            raise ValueError(f"scenario.posterior names unknown label columns {unknown}; the log's labels are {labels}")
        self.posterior_coef = {name: float(v) for name, v in post.items()}
        prior_tasks = c.prior_tasks if c.prior_tasks is not None else tasks
        bad = [t for t in prior_tasks if t not in tasks]
        if bad or not prior_tasks:
            raise ValueError(f"scenario.prior_tasks names unknown tasks {bad}; the log's tasks are {tasks}")
        if c.default_weights is not None and len(c.default_weights) != self.n_tasks:
            raise ValueError(f"scenario.default_weights has {len(c.default_weights)} entries for {self.n_tasks} tasks {tasks}")
        self.static_default_weights = (torch.tensor(c.default_weights, dtype=torch.float32) if c.default_weights is not None
                                       else torch.full((self.n_tasks,), 1.0 / self.n_tasks))
        if c.rule_floor * self.n_tasks > 1:
            raise ValueError(f"scenario.rule_floor = {c.rule_floor} x {self.n_tasks} tasks exceeds 1")
        self.rule_floors = torch.full((self.n_tasks,), c.rule_floor)
        transforms = {t: c.transforms for t in tasks} if isinstance(c.transforms, str) else dict(c.transforms)
        bad = [t for t in transforms if t not in tasks]
        if bad:
            raise ValueError(f"scenario.transforms names unknown tasks {bad}; the log's tasks are {tasks}")
        mask = log.mask
        #: the fused inputs (transformed predictions) [R, N, K]; padding stays out of every ranking
        self.inputs = apply_transforms(log.scores.float(), mask, tasks, transforms).float()
        u = torch.ones_like(log.scores[..., 0], dtype=torch.float32)
        for t in prior_tasks:
            u = u * log.scores[..., tasks.index(t)].float()
        self.utility = torch.where(mask, u, torch.zeros_like(u))
        self.labels, self.mask, self.features = log.labels.float(), mask, log.features.float()

    # -- the scenario interface ---------------------------------------------------------------

    def sample_contexts(self, n: int, generator: torch.Generator) -> Contexts:
        """``n`` logged requests drawn uniformly with replacement; ``extra["row"]`` is the request's index."""
        dev = generator.device
        rows = torch.randint(len(self.log), (n,), generator=generator, device=dev)
        return self.contexts(rows)

    def contexts(self, rows: Tensor | None = None) -> Contexts:
        """The logged requests ``rows`` (all of them by default) as contexts."""
        rows = torch.arange(len(self.log)) if rows is None else rows
        dev = rows.device
        cpu = rows.cpu()
        return Contexts(self.features[cpu].to(dev), self._group[cpu].to(dev), None, {"row": rows})

    def _weights(self, contexts: Contexts, actions: Tensor) -> Tensor:
        """``actions`` as ``[B, G, K]`` (``[B, K]`` and ``[K]`` broadcast)."""
        b = len(contexts)
        w = actions.float()
        if w.ndim == 1:
            w = w.expand(b, -1)
        if w.ndim == 2:
            w = w.unsqueeze(1)
        if w.ndim != 3 or w.shape[0] != b or w.shape[-1] != self.n_tasks:
            raise ValueError(f"weights must be [B={b}, G, K={self.n_tasks}], got {tuple(actions.shape)}")
        return w

    def auction(self, contexts: Contexts, actions: Tensor) -> dict[str, Tensor]:
        """The offline auction of ``actions [B, G, K]`` (or ``[B, K]``, ``[K]``) on the contexts' logged requests."""
        from grpokit.ranking.auction import auction

        rows = contexts.extra["row"].cpu()
        w = self._weights(contexts, actions)
        dev = w.device
        tensors = (self.inputs[rows].to(dev), self.labels[rows].to(dev), self.mask[rows].to(dev))
        return auction(w, tensors, k=self.k, fusion=self.config.fusion, discount=self.config.discount,
                       tasks=self.tasks, label_names=self.label_names, utilities={"prior": self.utility[rows].to(dev)})

    def rule_penalty(self, weights: Tensor) -> Tensor:
        """The (≤ 0) weight-format penalty (:func:`grpokit.ranking.composite.rule_penalty`) with this config's rules."""
        from grpokit.ranking.composite import rule_penalty_from

        return rule_penalty_from(self.config, weights, self.rule_floors, self.static_default_weights)

    def _posterior(self, out: dict[str, Tensor]) -> Tensor:
        return sum(a * out[name] for name, a in self.posterior_coef.items())

    def reward(self, contexts: Contexts, actions: Tensor, generator: torch.Generator | None = None, step: int = 0) -> dict[str, Tensor]:
        """``{"posterior", "prior", "rules"}``, each ``[B, G]`` (deterministic: the log's labels are fixed)."""
        w = self._weights(contexts, actions)
        out = self.auction(contexts, w)
        return {"posterior": self._posterior(out), "prior": out["prior"], "rules": self.rule_penalty(w)}

    def expected_reward(self, contexts: Contexts, actions: Tensor) -> Tensor:
        """The posterior of the offline auction ``[B, G]`` (the only ground truth a log has)."""
        return self._posterior(self.auction(contexts, actions))
