"""Run configuration: pydantic models loaded from TOML, with ``section.key=value`` overrides.

A run file has the sections ``[scenario]`` (``name`` picks the scenario, the other keys are its
parameters), ``[policy]``, ``[grpo]`` and ``[grpo.advantage]``. Unknown keys and bad values are
errors that name the key.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator

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


class AdvantageConfig(_Strict):
    """How rewards ``[B, G]`` become advantages (see :mod:`grpokit.grpo.advantages`)."""

    name: Literal["grpo", "dr_grpo", "rank", "pgrpo"] = "grpo"
    scale: Literal["group", "batch", "none"] = "group"
    eps: float = Field(1e-6, gt=0)
    min_history: int = Field(32, ge=2)
    decay: float = Field(1.0, gt=0, le=1)


class GRPOConfig(_Strict):
    """Everything the trainer needs (TRL-style: one config object, every default documented)."""

    seed: int = 0
    device: str = "auto"  #: "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
    steps: int = Field(300, ge=1)
    batch_size: int = Field(256, ge=1)  #: B contexts per step
    group_size: int = Field(4, ge=2)  #: G sampled actions per context
    lr: float = Field(3e-3, gt=0)
    num_iterations: int = Field(1, ge=1)  #: optimizer passes over each sampled batch
    clip_low: float = Field(0.2, ge=0, lt=1)
    clip_high: float = Field(0.2, ge=0)
    beta: float = Field(0.0, ge=0)  #: KL weight to the frozen reference; 0 loads no reference
    ent_coef: float = 0.0
    max_grad_norm: float = Field(1.0, gt=0)
    advantage: AdvantageConfig = Field(default_factory=AdvantageConfig)
    reward_weights: dict[str, float] = Field(default_factory=dict)  #: per named reward component
    reward_combine: Literal["sum_then_normalize", "normalize_then_sum"] = "sum_then_normalize"
    budget: float | None = Field(None, gt=0)  #: allowed expected spend per decision (Lagrange-constrained)
    budget_lr: float = Field(0.5, gt=0)  #: dual step: λ ← max(0, λ + budget_lr · (spend − budget) / budget)
    eval_every: int = Field(10, ge=1)
    eval_size: int = Field(4096, ge=1)
    checkpoint_every: int = Field(100, ge=1)

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v != "auto" and not (v == "cpu" or v == "cuda" or v.startswith("cuda:") or v == "mps"):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {v!r}")
        return v


class PolicyConfig(_Strict):
    """The policy network; the head defaults to the scenario's action type."""

    hidden: list[int] = Field(default_factory=lambda: [64, 64])
    activation: Literal["tanh", "relu", "gelu", "silu"] = "tanh"
    group_embedding_dim: int = Field(0, ge=0)
    head: Literal["categorical", "dirichlet", "beta", "gaussian_softmax"] | None = None
    head_params: dict[str, float | int | None] = Field(default_factory=dict)

    @field_validator("hidden")
    @classmethod
    def _hidden(cls, v: list[int]) -> list[int]:
        if any(w < 1 for w in v):
            raise ValueError(f"hidden layer widths must be >= 1, got {v}")
        return v


class EvaluationConfig(_Strict):
    """How ``grpokit run`` evaluates the trained policy (ignored by ``grpokit train``)."""

    seed: int = 0
    #: "simulation": GRPO trains on batch simulations; "logs": on the simulated A/B log only (outcome
    #: model + GRPO), and values are also estimated off-policy (DR, with CIs) on a held-out log
    train_on: Literal["simulation", "logs"] = "simulation"
    eval_size: int = Field(20000, ge=100)  #: evaluation population (true values)
    log_size: int = Field(20000, ge=100)  #: simulated A/B log the learned baselines are fitted on
    log_policy: Literal["uniform", "targeting"] = "uniform"
    baselines: list[Literal["random", "best_single", "propensity", "t_learner", "x_learner"]] = Field(
        default_factory=lambda: ["random", "best_single", "propensity", "t_learner", "x_learner"]
    )
    compare_ignore_spillover: bool = True  #: also train the same method with spillover switched off
    pilot: bool = True  #: cluster-randomized pilot (whole cohorts on the new or the current policy)
    pilot_size: int = Field(20000, ge=100)
    current_policy: str = "best_single"  #: the pilot's control arm: a baseline name
    tree_depth: int = Field(3, ge=1, le=8)  #: depth of the explanation tree


class FusionConfig(_Strict):
    """How ``grpokit fusion run`` builds GRADE, its baselines and ablations (ignored elsewhere)."""

    seed: int = 0
    log_requests: int = Field(3000, ge=10)  #: production-ranker log for stage 1 and the offline auction
    eval_size: int = Field(5000, ge=100)  #: fresh requests for the true metrics
    tune_requests: int = Field(3000, ge=100)  #: requests the static weights are tuned on
    tune_method: Literal["random", "cma"] = "cma"
    tune_budget: int = Field(300, ge=10)  #: objective evaluations per black-box search
    pretrain_steps: int = Field(200, ge=0)  #: stage 1 (LambdaLoss) steps
    pretrain_lr: float = Field(0.01, gt=0)
    pretrain_sigma: float = Field(10.0, gt=0)
    ablations: list[Literal["gaussian_softmax", "fixed_concentration", "posterior_only", "prior_only", "no_stage1"]] = Field(
        default_factory=lambda: ["gaussian_softmax", "fixed_concentration", "posterior_only", "prior_only", "no_stage1"]
    )
    oracle: bool = True  #: also evaluate the per-request oracle weights (slow on large eval sets)
    #: choose the composite reward's prior weight from these values by held-out feedback
    #: (grpokit.ranking.composite.select_prior_weight); empty = use grpo.reward_weights.prior as given
    prior_weight_grid: list[Annotated[float, Field(ge=0)]] = Field(default_factory=list)
    holdout_requests: int = Field(20000, ge=100)  #: held-out requests that score each prior weight
    #: ``policy``: train GRADE once per grid value and keep the best on held-out feedback (the static
    #: baselines keep their own choice); ``static``: use the prior weight chosen for the static weights
    prior_weight_select: Literal["policy", "static"] = "policy"


class RunConfig(_Strict):
    """A whole run: scenario, policy, trainer and (for ``grpokit run``) evaluation."""

    scenario: SerializeAsAny[BaseModel]
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    grpo: GRPOConfig = Field(default_factory=GRPOConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    fusion: FusionConfig = Field(default_factory=FusionConfig)

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


def _format_validation_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        value = e.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"{loc}: {e['msg']}{shown}")
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
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = tomllib.loads(path.read_text())
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
