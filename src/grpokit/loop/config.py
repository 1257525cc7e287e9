"""The closed loop's settings: one validated TOML file (``[loop]``, ``[loop.rewards]``, ``[scenario]``,
``[grpo]``, ``[policy]``); unknown keys are errors that name the key."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from grpokit.config import GRPOConfig, PolicyConfig

__all__ = ["LoopConfig", "LoopSettings", "RewardDelivery", "load_loop_config", "CONTINUOUS_SCENARIOS"]

#: scenarios with continuous actions the loop runs (Beta head: pricing; Dirichlet head: allocation)
CONTINUOUS_SCENARIOS = ("pricing", "allocation")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RewardDelivery(_Strict):
    """How the simulated application reports outcomes: some never arrive, some twice, all out of order."""

    loss: float = Field(0.0, ge=0, lt=1)  #: share of rewards never posted (left out of learning)
    duplicate: float = Field(0.0, ge=0, le=1)  #: share posted twice (the service keeps the first)
    delay_batches: int = Field(1, ge=0)  #: rewards of a decide batch are posted after this many later batches


class LoopSettings(_Strict):
    seed: int = 0
    rounds: int = Field(5, ge=1)
    decisions: int = Field(20_000, ge=100)  #: served per round by the live policy (all cohorts)
    shadow_decisions: int = Field(2_000, ge=0)  #: served in shadow (live answers, candidate logged)
    pilot_decisions: int = Field(20_000, ge=100)  #: served in the cohort pilot (canary by cohort); the least when pilot_effect is set
    pilot_effect: float | None = Field(None, gt=0)  #: size the pilot so its MDE (80 % power, level alpha) is this effect, from the pre-period's variance
    pilot_max_decisions: int = Field(100_000, ge=100)  #: the most decisions a pilot sized from pilot_effect may take
    epsilon: float = Field(0.05, ge=0, le=1)  #: exploration: served q = (1 - eps) pi + eps / A (continuous: + eps u, u uniform on the range / simplex)
    start_policy: Literal["best_single", "uniform", "reference"] = "best_single"  #: round 0's live policy (reference: continuous only, the list price / the equal split)
    start_concentration: float = Field(400.0, gt=2)  #: continuous start rules: the Beta's a + b / the Dirichlet's total concentration (large: close to the fixed action)
    dm_samples: int = Field(16, ge=1)  #: continuous: Monte-Carlo draws of each target per row for the DR's model term
    truth_samples: int = Field(64, ge=1)  #: continuous: draws per evaluation customer for the true value
    holdout: float = Field(0.3, gt=0, lt=1)  #: share of served decisions (fixed hash split of the id) never trained on, for gates
    train_window: int = Field(60_000, ge=100)  #: learn from at most this many of the latest non-held-out served rows
    gate_window: int = Field(30_000, ge=100)  #: gate on at most this many of the latest held-out served rows
    outcome_model: Literal["gbm", "linear", "lightgbm"] = "gbm"
    outcome_backend: Literal["local", "ray"] = "local"  #: ray: each lightgbm fit on Ray Train workers
    outcome_params: dict[str, bool | int | float | str] = Field(default_factory=dict)  #: passed to the scikit-learn model
    gate_margin: float = 0.0  #: the gate passes when the DR improvement's lower bound is above this
    gate_screen: Literal["better", "not_worse"] = "better"  #: better: lower end of the (1 - gate_alpha) interval > gate_margin; not_worse: its upper end > gate_margin (the log does not show the candidate worse)
    gate_alpha: float = Field(0.2, gt=0, le=1)  #: the gate's bound: lower end of the (1 - gate_alpha) interval (a screen; the pilot decides at alpha); 1: the point estimate
    pilot_design: Literal["strata", "pairs", "complete"] = "strata"
    stratum_size: int = Field(4, ge=2)
    pilot_adjust: Literal["none", "outcome_model"] = "outcome_model"  #: unit outcome minus m(x) fitted on the pre-period (CUPAC)
    pilot_margin: float = 0.0  #: decision "pilot": promote when the pilot interval lies above this
    combined_weights: Literal["equal", "precision"] = "equal"  #: Stouffer's weights: equal, or 1 / se of each estimate (the pilot's OLS se over cohorts)
    decision: Literal["pilot", "combined"] = "pilot"  #: pilot: the pilot's interval alone; combined: Stouffer's z of the held-out DR and the pilot's one-sided randomization p
    alpha: float = Field(0.05, gt=0, lt=1)
    guardrail_alpha: float = Field(0.05, gt=0, lt=1)  #: family-wise over cohorts (Bonferroni)
    batch: int = Field(1000, ge=1)  #: contexts per decide request
    eval_size: int = Field(20_000, ge=1000)  #: customers on which true values are computed
    n_bootstrap: int = Field(500, ge=50)
    drift: float = Field(0.0, ge=0, le=0.25)  #: per-round drift of responsiveness and costs (0: a fixed world)
    plant_bad_policy_round: int | None = Field(None, ge=1)  #: fault injection: force a bad policy live then
    flush_interval_s: float = Field(0.2, gt=0)
    rewards: RewardDelivery = Field(default_factory=RewardDelivery)


class LoopConfig(_Strict):
    loop: LoopSettings = Field(default_factory=LoopSettings)
    scenario: dict = Field(default_factory=lambda: {"name": "marketing"})
    grpo: GRPOConfig = Field(default_factory=lambda: GRPOConfig(device="cpu", steps=300, group_size=8))
    policy: PolicyConfig = Field(default_factory=PolicyConfig)

    @model_validator(mode="after")
    def _check(self) -> "LoopConfig":
        name = self.scenario.get("name", "marketing")
        if name in CONTINUOUS_SCENARIOS:
            return self._check_continuous(name)
        if name != "marketing":
            raise ValueError(f"scenario.name = {name!r}: the loop runs 'marketing' (categorical offers) and "
                             f"{' and '.join(map(repr, CONTINUOUS_SCENARIOS))} (continuous actions)")
        if self.loop.start_policy == "reference":
            raise ValueError("loop.start_policy = 'reference' (the list price / the equal split) is for pricing "
                             "and allocation; marketing starts from 'best_single' or 'uniform'")
        from grpokit.scenarios.marketing import MarketingConfig

        if self.loop.outcome_backend == "ray" and self.loop.outcome_model != "lightgbm":
            raise ValueError(f"loop.outcome_backend = 'ray' fits loop.outcome_model = 'lightgbm' only, "
                             f"got {self.loop.outcome_model!r}")
        if self.loop.pilot_max_decisions < self.loop.pilot_decisions:
            raise ValueError(f"loop.pilot_max_decisions = {self.loop.pilot_max_decisions} must be >= "
                             f"loop.pilot_decisions = {self.loop.pilot_decisions}")
        cfg = MarketingConfig(**self.scenario)
        if cfg.spillover != 0:
            raise ValueError("scenario.spillover must be 0 in the loop: off-policy estimates assume no interference")
        return self


    def _check_continuous(self, name: str) -> "LoopConfig":
        from grpokit.scenarios.registry import SCENARIO_CONFIGS

        s = self.loop
        if s.drift != 0:
            raise ValueError(f"loop.drift = {s.drift}: drift is a marketing world; scenario {name!r} runs a fixed world")
        if s.outcome_model not in ("gbm", "linear"):
            raise ValueError(f"loop.outcome_model = {s.outcome_model!r}: continuous actions take 'gbm' or 'linear' "
                             "(an outcome model on the features and the action's value)")
        if s.outcome_backend != "local":
            raise ValueError(f"loop.outcome_backend = {s.outcome_backend!r}: continuous actions fit locally")
        if s.pilot_max_decisions < s.pilot_decisions:
            raise ValueError(f"loop.pilot_max_decisions = {s.pilot_max_decisions} must be >= "
                             f"loop.pilot_decisions = {s.pilot_decisions}")
        if s.epsilon <= 0:
            raise ValueError("loop.epsilon must be > 0 for continuous actions: the uniform component keeps the "
                             "density ratios of the next candidate bounded")
        params = {k: v for k, v in self.scenario.items() if k != "name"}
        cfg = SCENARIO_CONFIGS[name](name=name, **params)
        if cfg.reward_components:
            raise ValueError(f"scenario.reward_components = {cfg.reward_components!r}: the loop posts one reward "
                             "per decision (leave it empty)")
        if getattr(cfg, "mean_spend_cap", None) is not None or getattr(cfg, "reserve", False):
            raise ValueError("scenario.reserve / mean_spend_cap: the loop has no budget constraint; leave them unset")
        if self.policy.head not in (None, "beta" if name == "pricing" else "dirichlet"):
            raise ValueError(f"policy.head = {self.policy.head!r}: scenario {name!r} is served by a "
                             f"{'beta' if name == 'pricing' else 'dirichlet'} head")
        return self


def load_loop_config(path: str | Path | None, overrides: list[str] | None = None) -> LoopConfig:
    """Read ``path`` (None: defaults), apply ``section.key=value`` overrides (TOML values), validate."""
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"loop config {p} does not exist")
        try:
            data = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"{p}: {err}") from None
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected section.key=value")
        key, value = item.split("=", 1)
        try:
            parsed = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = value
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = parsed
    try:
        return LoopConfig(**data)
    except ValidationError as err:
        msgs = ["loop config " + ".".join(str(x) for x in e["loc"]) + f": {e['msg']}" for e in err.errors()]
        raise ValueError("; ".join(msgs)) from None
