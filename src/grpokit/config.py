"""Run configuration: pydantic models loaded from TOML, with ``section.key=value`` overrides.

A run file has the sections ``[scenario]`` (``name`` picks the scenario, the other keys are its
parameters), ``[policy]``, ``[grpo]`` and ``[grpo.advantage]``. Unknown keys and bad values are
errors that name the key.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializeAsAny,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from grpokit.scenarios.registry import SCENARIO_CONFIGS

__all__ = [
    "AdvantageConfig",
    "EvaluationConfig",
    "GRPOConfig",
    "PolicyConfig",
    "RunConfig",
    "ConfigError",
    "load_config",
    "apply_overrides",
]


class ConfigError(ValueError):
    """A configuration file or override that cannot be used; the message names the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _finite(cls, v: Any, info: ValidationInfo) -> Any:
        """No NaN or inf anywhere in a config (also inside lists and tables), no true/false for a number."""
        ann = cls.model_fields[info.field_name].annotation
        if isinstance(v, dict) and any(isinstance(a, type) and issubclass(a, BaseModel)
                                       for a in (ann, *get_args(ann))):
            return v  # a section: its own fields check themselves
        if _has_non_finite(v):
            raise ValueError(f"must be finite (no NaN or inf), got {v!r}")
        if isinstance(v, (bool, str)) and (ann is float or float in get_args(ann)):
            raise ValueError(f"must be a number, got {v!r}")
        return v


def _has_non_finite(v: Any) -> bool:
    if isinstance(v, float):
        return v != v or v in (float("inf"), float("-inf"))
    if isinstance(v, (list, tuple)):
        return any(_has_non_finite(x) for x in v)
    if isinstance(v, dict):
        return any(_has_non_finite(x) for x in v.values())
    return False


def _real(v: Any) -> Any:
    """A finite real number (an int or a float): no booleans, no text, no NaN/inf, nothing that overflows."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"must be a number, got {type(v).__name__} {v!r}")
    try:
        f = float(v)
    except OverflowError:
        raise ValueError(f"{v} is too large to be a number here") from None
    if f != f or f in (float("inf"), float("-inf")):
        raise ValueError(f"must be a finite number, got {v!r}")
    return f


#: an integer given as an integer (``true`` or ``1e1`` are refused, not coerced)
Int = Annotated[int, Strict()]
#: a finite float (ints are accepted; booleans, text, NaN and inf are refused)
Real = Annotated[float, BeforeValidator(_real)]
#: a seed: an integer every random generator takes (torch, numpy)
Seed = Annotated[int, Strict(), Field(ge=0, le=2**31 - 1)]
Bool = Annotated[bool, Strict()]


class AdvantageConfig(_Strict):
    """How rewards ``[B, G]`` become advantages (see :mod:`grpokit.grpo.advantages`)."""

    name: Literal["grpo", "dr_grpo", "rank", "pgrpo"] = "grpo"
    scale: Literal["group", "batch", "none"] = "group"
    eps: Real = Field(1e-6, gt=0)
    min_history: Int = Field(32, ge=2)
    decay: Real = Field(1.0, gt=0, le=1)


class GRPOConfig(_Strict):
    """Everything the trainer needs (TRL-style: one config object, every default documented)."""

    seed: Seed = 0
    device: str = "auto"  #: "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
    steps: Int = Field(300, ge=1)
    batch_size: Int = Field(256, ge=1)  #: B contexts per step
    group_size: Int = Field(4, ge=2)  #: G sampled actions per context
    lr: Real = Field(3e-3, gt=0, le=1)  #: Adam step size (above 1 is never meant)
    #: step size over the run, t = step / (steps − 1) for the 0-based update index (first update lr, last lr·f):
    #: constant lr, "linear" lr·(1 − (1 − f)·t) or "cosine" lr·(f + (1 − f)·(1 + cos πt)/2), f = lr_final_fraction
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"
    lr_final_fraction: Real = Field(0.0, ge=0, le=1)  #: f: the last step's lr as a fraction of lr
    num_iterations: Int = Field(1, ge=1)  #: optimizer passes over each sampled batch
    clip_low: Real = Field(0.2, ge=0, lt=1)
    clip_high: Real = Field(0.2, ge=0, le=10)
    beta: Real = Field(0.0, ge=0)  #: KL weight to the frozen reference; 0 loads no reference
    ent_coef: Real = 0.0
    max_grad_norm: Real = Field(1.0, gt=0)
    #: how each context's G actions are chosen: "sampled" (G draws from the policy) or "cover" (every
    #: discrete action once, the rest drawn; objective over all actions: grpokit.grpo.cover)
    group_sampling: Literal["sampled", "cover"] = "sampled"
    #: "cover" only: action weights (1 − ε)·π_old + ε/K; 0 = the exact policy gradient
    cover_floor: Real = Field(0.0, ge=0, le=1)
    advantage: AdvantageConfig = Field(default_factory=AdvantageConfig)
    reward_weights: dict[str, Real] = Field(default_factory=dict)  #: per named reward component
    reward_combine: Literal["sum_then_normalize", "normalize_then_sum"] = "sum_then_normalize"
    budget: Real | None = Field(None, gt=0)  #: allowed expected spend per decision (Lagrange-constrained)
    budget_lr: Real = Field(0.1, gt=0)  #: dual step: λ ← max(0, λ + budget_lr · (spend − budget) / budget)
    budget_kp: float = Field(1.0, ge=0)  #: proportional gain of the PI multiplier (0: plain dual ascent)
    budget_ema: float = Field(0.8, ge=0, lt=1)  #: smoothing of the overspend in the proportional term
    budget_decay: float = Field(0.01, ge=0)  #: dual step at update t: budget_lr / (1 + budget_decay · t)
    #: spend the multiplier tracks: "sampled" (the mean over the G sampled decisions: the policy being
    #: trained, a smooth function of its parameters), "deployed" (the mode decision of each batch context)
    #: or "blend" (sampled over the first half of the steps, then w·deployed + (1−w)·sampled, w: 0 → 1)
    budget_spend: Literal["deployed", "sampled", "blend"] = "sampled"
    #: held-out contexts of the final calibration of the deployed (mode) spend to the budget (0: off)
    budget_calibration_size: Int = Field(200_000, ge=0)
    eval_every: Int = Field(10, ge=1)
    eval_size: Int = Field(4096, ge=1)
    checkpoint_every: Int = Field(100, ge=1)

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v not in ("auto", "cpu", "cuda", "mps") and not re.fullmatch(r"cuda:[0-9]+", v):
            raise ValueError(f"device must be auto, cpu, mps, cuda or cuda:N (N a GPU index), got {v!r}")
        return v


#: what every trainer knob means; attached as pydantic Field descriptions (JSON schema) and listed in
#: help(GRPOConfig) / help(AdvantageConfig), as TRL documents its configs
_DESCRIPTIONS = {
    AdvantageConfig: {
        "name": "advantage estimator: grpo (per-context std), dr_grpo (no std division), rank (percentile "
                "ranks) or pgrpo (each preference group's reward history); 'grpokit learn' uses pgrpo unless set",
        "scale": "grpo only: divide by the std of the context's G rewards (group), of the batch, or not (none)",
        "eps": "added to the std before dividing",
        "min_history": "pgrpo: rewards a preference group needs before its history replaces the group baseline",
        "decay": "pgrpo: the history's old statistics are multiplied by this before each batch (1 = no forgetting)",
    },
    GRPOConfig: {
        "seed": "seeds torch, the context sampler and every random draw of the run",
        "device": "auto (CUDA when available), cpu, cuda, cuda:N or mps",
        "steps": "optimizer steps (one sampled batch each)",
        "batch_size": "B contexts sampled per step",
        "group_size": "G actions sampled per context; the advantages compare these G",
        "lr": "Adam learning rate",
        "lr_schedule": "constant, linear (lr down to lr·lr_final_fraction at the last step) or cosine (the same ends, "
                       "half a cosine between)",
        "lr_final_fraction": "linear/cosine only: the last step's learning rate as a fraction of lr",
        "num_iterations": "optimizer passes over each sampled batch (> 1 makes the clipping matter)",
        "clip_low": "PPO-style clip: the ratio may fall to 1 - clip_low",
        "clip_high": "PPO-style clip: the ratio may rise to 1 + clip_high",
        "beta": "weight of the k3 KL penalty to the frozen reference policy (0: no reference is built)",
        "ent_coef": "entropy bonus weight (> 0 keeps the policy exploring; guards against collapse)",
        "max_grad_norm": "gradient-norm clip",
        "group_sampling": "sampled (G draws from the policy) or cover (discrete actions only, group_size >= the "
                          "number of actions: every action once per context, the rest drawn, objective over all "
                          "actions weighted (1 - cover_floor)·π + cover_floor/K)",
        "cover_floor": "cover only: ε of the action weights (1 - ε)·π_old + ε/K; 0 is the exact policy gradient, "
                       "> 0 keeps a signal for actions the policy has pushed to ~0",
        "advantage": "how rewards [B, G] become advantages (AdvantageConfig)",
        "reward_weights": "weight of each named reward component in the total reward",
        "reward_combine": "sum the weighted components then normalize, or normalize each then sum",
        "budget": "allowed expected spend per decision (Lagrangian constraint); None: no budget",
        "budget_lr": "dual step of the budget multiplier λ",
        "budget_kp": "proportional gain of the PI multiplier (0: plain dual ascent)",
        "budget_ema": "smoothing of the overspend in the proportional term",
        "budget_decay": "dual step at update t: budget_lr / (1 + budget_decay · t)",
        "budget_spend": "spend the multiplier tracks: sampled (mean over the G samples), deployed (mode decision) "
                        "or blend (sampled, then ramping to deployed over the second half of the steps)",
        "budget_calibration_size": "held-out contexts on which the deployed spend is calibrated to the budget after "
                                   "the last step (0: no calibration)",
        "eval_every": "evaluate on the scenario's held-out contexts every this many steps",
        "eval_size": "held-out contexts of that evaluation",
        "checkpoint_every": "write checkpoint.pt every this many steps (with an out_dir)",
    },
}
for _model, _texts in _DESCRIPTIONS.items():
    for _name, _text in _texts.items():
        if _name in _model.model_fields:
            _model.model_fields[_name].description = _text
    _model.model_rebuild(force=True)
    _model.__doc__ = (_model.__doc__ or "") + "\n\n    Fields:\n\n" + "\n".join(
        f"    - ``{n}`` (default {f.default if f.default_factory is None else f.default_factory()!r}): "
        f"{f.description or ''}" for n, f in _model.model_fields.items())


class PolicyConfig(_Strict):
    """The policy network; the head defaults to the scenario's action type."""

    hidden: list[Int] = Field(default_factory=lambda: [64, 64], min_length=1)  #: at least one layer
    activation: Literal["tanh", "relu", "gelu", "silu"] = "tanh"
    group_embedding_dim: Int = Field(0, ge=0)
    head: Literal["categorical", "dirichlet", "beta", "gaussian_softmax"] | None = None
    head_params: dict[str, Int | Real | None] = Field(default_factory=dict)

    @field_validator("hidden")
    @classmethod
    def _hidden(cls, v: list[int]) -> list[int]:
        if any(w < 1 for w in v):
            raise ValueError(f"hidden layer widths must be >= 1, got {v}")
        return v


class EvaluationConfig(_Strict):
    """How ``grpokit run`` evaluates the trained policy (ignored by ``grpokit train``)."""

    seed: Seed = 0
    #: "simulation": GRPO trains on batch simulations; "logs": on the simulated A/B log only (outcome
    #: model + GRPO), and values are also estimated off-policy (DR, with CIs) on a held-out log
    train_on: Literal["simulation", "logs"] = "simulation"
    #: the log learner's advantage with train_on = "logs": "learn" = grpokit learn's default (grpo, the
    #: one stable over seeds on logs, BENCHMARKS "learn defaults"), "config" = grpo.advantage (the
    #: simulator's choice), or an advantage name (its other settings from grpo.advantage)
    logs_advantage: Literal["learn", "config", "grpo", "dr_grpo", "rank", "pgrpo"] = "learn"
    eval_size: Int = Field(20000, ge=100)  #: evaluation population (true values)
    log_size: Int = Field(20000, ge=100)  #: simulated A/B log the learned baselines are fitted on
    log_policy: Literal["uniform", "targeting"] = "uniform"
    baselines: list[Literal["random", "best_single", "propensity", "t_learner", "x_learner"]] = Field(
        default_factory=lambda: ["random", "best_single", "propensity", "t_learner", "x_learner"]
    )
    compare_ignore_spillover: Bool = True  #: also train the same method with spillover switched off
    pilot: Bool = True  #: cluster-randomized pilot (whole cohorts on the new or the current policy)
    pilot_size: Int = Field(20000, ge=100)
    current_policy: str = "best_single"  #: the pilot's control arm: a baseline name
    #: the pilot's design: "strata" (cohorts stratified in 4s on a pre-period of pilot_size decisions on the
    #: current policy, ANCOVA, randomization interval), "pairs", "complete", or "welch" (the older coin per
    #: cohort, Welch over cohorts, no pre-period); the Welch figure is reported beside the others
    pilot_design: Literal["strata", "pairs", "complete", "welch"] = "strata"
    tree_depth: Int = Field(3, ge=1, le=8)  #: depth of the explanation tree


class FusionConfig(_Strict):
    """How ``grpokit fusion run`` builds GRADE, its baselines and ablations (ignored elsewhere)."""

    seed: Seed = 0
    log_requests: Int = Field(3000, ge=10)  #: production-ranker log for stage 1 and the offline auction
    eval_size: Int = Field(5000, ge=100)  #: fresh requests for the true metrics
    tune_requests: Int = Field(3000, ge=100)  #: requests the static weights are tuned on
    tune_method: Literal["random", "cma"] = "cma"
    tune_budget: Int = Field(300, ge=10)  #: objective evaluations per black-box search
    pretrain_steps: Int = Field(200, ge=0)  #: stage 1 (LambdaLoss) steps
    pretrain_lr: Real = Field(0.01, gt=0, le=10)
    pretrain_sigma: Real = Field(10.0, gt=0)
    ablations: list[Literal["gaussian_softmax", "fixed_concentration", "posterior_only", "prior_only", "no_stage1"]] = Field(
        default_factory=lambda: ["gaussian_softmax", "fixed_concentration", "posterior_only", "prior_only", "no_stage1"]
    )
    oracle: Bool = True  #: also evaluate the per-request oracle weights (slow on large eval sets)
    #: choose the composite reward's prior weight from these values by held-out feedback
    #: (grpokit.ranking.composite.select_prior_weight); empty = use grpo.reward_weights.prior as given
    prior_weight_grid: list[Annotated[Real, Field(ge=0)]] = Field(default_factory=list)
    holdout_requests: Int = Field(20000, ge=100)  #: held-out requests that score each prior weight
    #: ``policy``: train GRADE once per grid value and keep the best on held-out feedback (the static
    #: baselines keep their own choice); ``static``: use the prior weight chosen for the static weights
    prior_weight_select: Literal["policy", "static"] = "policy"


class CohortsConfig(_Strict):
    """Which cohorts the run's groups are (P-GRPO groups, group embedding, pilot clusters, per-cohort
    tables, group-relative rewards): the scenario's own (``method = "column"``) or discovered by
    k-means / a Gaussian mixture on the features (see :mod:`grpokit.groups.scenario`)."""

    method: Literal["column", "kmeans", "gmm"] = "column"
    k: Int | Literal["auto"] = "auto"  #: number of cohorts, or "auto" (chosen by ``select`` over 2..8)
    select: Literal["bic", "silhouette"] | None = None  #: None: bic for gmm, silhouette for kmeans
    features: list[str] = Field(default_factory=list)  #: feature names to cluster on (empty: all)
    seed: Int = 0
    fit_size: Int = Field(5000, ge=50)  #: customers sampled (seeded) to fit the cohort model on

    @field_validator("k", mode="before")
    @classmethod
    def _k(cls, v):
        if v == "auto":
            return v
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"k must be \"auto\" or a whole number >= 1, got {v!r}")
        return v

    @model_validator(mode="after")
    def _select_fits_method(self):
        if self.method == "kmeans" and self.select == "bic" and self.k == "auto":
            raise ValueError('cohorts.select = "bic" needs a likelihood, which k-means does not have: '
                             'use cohorts.method = "gmm" with bic, or cohorts.select = "silhouette"')
        return self


class RunConfig(_Strict):
    """A whole run: scenario, policy, trainer and (for ``grpokit run``) evaluation."""

    scenario: SerializeAsAny[BaseModel]
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    grpo: GRPOConfig = Field(default_factory=GRPOConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    cohorts: CohortsConfig = Field(default_factory=CohortsConfig)

    @field_validator("scenario", mode="before")
    @classmethod
    def _scenario(cls, v: Any) -> BaseModel:
        if isinstance(v, BaseModel):
            return v
        if not isinstance(v, dict):
            raise ValueError("scenario must be a table with a 'name' key")
        name = v.get("name")
        if name not in SCENARIO_CONFIGS:
            raise ValueError(f"unknown scenario {name!r}; choose one of {sorted(SCENARIO_CONFIGS)}")
        return SCENARIO_CONFIGS[name](**v)

    @model_validator(mode="after")
    def _names(self) -> "RunConfig":
        """``policy.head_params`` and ``grpo.reward_weights`` may only name what exists (a typo is an error)."""
        kind = self.policy.head or _SCENARIO_HEADS.get(self.scenario.name)
        if kind is not None and self.policy.head_params:
            known = _head_params(kind)
            unknown = sorted(set(self.policy.head_params) - set(known))
            if unknown:
                raise ValueError(
                    f"policy.head_params: unknown parameter{'s' if len(unknown) > 1 else ''} {unknown} for the "
                    f"{kind} head; it takes {sorted(known)}"
                )
        components = _reward_components(self.scenario, self.grpo)
        if components is not None and self.grpo.reward_weights:
            unknown = sorted(set(self.grpo.reward_weights) - set(components))
            if unknown:
                have = (f"its reward components are {sorted(components)}" if components else
                        "its reward is a single number (no named components), so weights would be ignored")
                raise ValueError(
                    f"grpo.reward_weights: unknown component{'s' if len(unknown) > 1 else ''} {unknown} for "
                    f"scenario {self.scenario.name!r}; {have}"
                )
        return self


#: the head each scenario's actions need when ``policy.head`` is not set
_SCENARIO_HEADS = {"preferences": "categorical", "marketing": "categorical", "pricing": "beta",
                   "allocation": "dirichlet", "search": "dirichlet", "logged_ranking": "dirichlet"}
#: head parameters the scenario itself supplies (from its action_spec)
_SCENARIO_SUPPLIED = {"n_actions", "n_components", "low", "high"}


def _head_params(kind: str) -> list[str]:
    """The keyword parameters a head of this kind takes, less those the scenario supplies."""
    import inspect

    from grpokit.policy.heads import BetaHead, CategoricalHead, DirichletHead, GaussianSoftmaxHead

    cls = {"categorical": CategoricalHead, "dirichlet": DirichletHead, "beta": BetaHead,
           "gaussian_softmax": GaussianSoftmaxHead}[kind]
    names = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    supplied = _SCENARIO_SUPPLIED if kind != "beta" else set()  # a Beta head's low/high may be narrowed
    return [p for p in names if p not in supplied]


def _reward_components(scenario: BaseModel, grpo: "GRPOConfig") -> list[str] | None:
    """The named reward components of a scenario ([] for a single-number reward), or None when unknown."""
    name = getattr(scenario, "name", None)
    if name in ("pricing", "allocation") and hasattr(scenario, "component_names"):
        names: list[str] = scenario.component_names()  # their config knows ([]: a single number)
    elif name in ("preferences", "pricing"):
        names = []
    elif name == "marketing":
        names = list(getattr(scenario, "reward_components", []))
    elif name == "allocation":
        names = ["revenue", "target_penalty"] if getattr(scenario, "reward_components", False) else []
    elif name in ("search", "logged_ranking"):
        names = ["posterior", "prior", "rules"]
    else:
        return None
    if grpo.budget is not None:  # the trainer adds the Lagrangian penalty as its own component
        names = (names or ["reward"]) + ["budget_penalty"]
    return names


def _format_validation_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        value = e.get("input")
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] in ("int_type", "int_from_float"):
            msg = "must be an integer, written as one (like 10; not 1e1, 10.0, true or text)"
        elif e["type"] == "bool_type":
            msg = "must be true or false"
        shown = "" if isinstance(value, dict) or repr(value) in msg else f" (got {value!r})"
        lines.append(f"{loc}: {msg}{shown}" if loc else msg)
    return "; ".join(lines)


def _parse_value(text: str) -> Any:
    """Parse an override value as a TOML literal (1, 0.5, true, [1, 2], "x"); bare words are strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``section.key=value`` overrides to a raw config dict (a copy is returned)."""
    import copy

    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        path, text = item.split("=", 1)
        keys = [k.strip() for k in path.strip().split(".")]
        if len(keys) < 2 or not all(keys):
            raise ConfigError(f"override {item!r}: the key must name a section and a key, like grpo.lr=0.001")
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {k!r} is not a section")
        node[keys[-1]] = _parse_value(text.strip())
    return data


def build_config(data: dict) -> RunConfig:
    try:
        return RunConfig(**data)
    except ValidationError as err:
        raise ConfigError(f"invalid configuration: {_format_validation_error(err)}") from None
    except ValueError as err:  # raised by a scenario's own validator
        raise ConfigError(f"invalid configuration: {err}") from None


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Read a TOML run file (or start from the defaults when ``path`` is None), apply overrides, validate."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if path.is_dir():
            raise ConfigError(f"config file {path} is a folder; give a TOML run file")
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as err:
            raise ConfigError(
                f"{path} is not a text (UTF-8) TOML file: byte {err.object[err.start]:#04x} at offset {err.start} "
                "cannot be read; give a TOML run file saved as UTF-8"
            ) from None
        except OSError as err:
            raise ConfigError(f"cannot read config file {path}: {err.strerror or err}") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path} is not valid TOML: {err}") from None
    data.setdefault("scenario", {"name": "preferences"})
    return build_config(apply_overrides(data, overrides or []))


def config_to_toml(config: RunConfig) -> str:
    """Write a resolved config back as TOML (every key explicit), so a run is reproducible from it."""
    return _dump_toml(config.model_dump(mode="json"))


def _toml_value(v: Any) -> str:
    import json

    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):  # inside a list: an inline table
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items() if x is not None) + "}"
    raise TypeError(f"cannot write {v!r} to TOML")


def _dump_toml(data: dict, prefix: str = "") -> str:
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict) and v is not None}
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    out = []
    if prefix and (scalars or not tables):
        out.append(f"[{prefix}]")
    for k, v in scalars.items():
        out.append(f"{k} = {_toml_value(v)}")
    if out:
        out.append("")
    for k, v in tables.items():
        name = f"{prefix}.{k}" if prefix else k
        if v and all(not isinstance(x, dict) for x in v.values()) and any(x is None for x in v.values()):
            v = {kk: vv for kk, vv in v.items() if vv is not None}
        out.append(_dump_toml(v, name))
    return "\n".join(out)
