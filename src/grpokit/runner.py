"""Build a policy and a trainer from a :class:`~grpokit.config.RunConfig` and run it into a directory.

A run directory holds ``config.toml`` (the resolved config: the run is reproducible from it),
``metrics.jsonl`` (one JSON object per step), ``summary.json`` and ``checkpoint.pt``.
"""

from __future__ import annotations

from pathlib import Path

from grpokit.atomic import atomic_write_text, check_writable
from grpokit.config import RunConfig, config_to_toml, load_config
from grpokit.grpo.trainer import GRPOTrainer
from grpokit.policy.heads import make_head
from grpokit.policy.network import MLPTorso, Policy
from grpokit.scenarios.registry import scenario_from_config

__all__ = ["build_policy", "build_trainer", "run_training"]


def build_policy(config: RunConfig, scenario) -> Policy:
    """The policy network for ``scenario`` with the head its actions need (or ``policy.head``)."""
    pc = config.policy
    spec = dict(scenario.action_spec)
    kind = pc.head or spec.pop("kind")
    if pc.head is not None:
        spec.pop("kind", None)
        if pc.head != scenario.action_spec["kind"] and {pc.head, scenario.action_spec["kind"]} != {
            "dirichlet",
            "gaussian_softmax",
        }:
            raise ValueError(
                f"policy.head = {pc.head!r} cannot produce the actions of scenario "
                f"{scenario.name!r} ({scenario.action_spec['kind']})"
            )
    params = {**spec, **{k: v for k, v in pc.head_params.items() if v is not None}}
    try:
        head = make_head(kind, **params)
    except TypeError as err:
        raise ValueError(f"policy.head_params: {err}") from None
    torso = MLPTorso(
        scenario.obs_dim,
        pc.hidden,
        pc.activation,
        n_groups=scenario.n_groups,
        group_embedding_dim=pc.group_embedding_dim,
    )
    return Policy(torso, head)


def build_trainer(config: RunConfig, out_dir: str | Path | None = None, progress: bool = False) -> GRPOTrainer:
    import torch

    from grpokit.groups.scenario import with_cohorts

    # [cohorts]: the scenario's own cohorts, or discovered ones (k-means / GMM) as the run's groups
    scenario = with_cohorts(scenario_from_config(config.scenario), getattr(config, "cohorts", None))
    torch.manual_seed(config.grpo.seed)  # the initial weights are part of the run: seeded by the config
    policy = build_policy(config, scenario)
    return GRPOTrainer(policy, scenario, config.grpo, out_dir=out_dir, progress=progress)


def run_training(
    config: RunConfig | str | Path,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = False,
    overrides: list[str] | None = None,
) -> dict:
    """Train from a config into ``out_dir``; ``resume`` continues from ``out_dir/checkpoint.pt``."""
    if not isinstance(config, RunConfig):
        config = load_config(config, overrides)
    out = Path(out_dir)
    if resume:
        saved = out / "config.toml"
        if not saved.is_file():
            raise FileNotFoundError(f"cannot resume: {saved} does not exist")
        if not (out / "checkpoint.pt").is_file():
            raise FileNotFoundError(
                f"cannot resume: {out / 'checkpoint.pt'} does not exist (the run stopped before its first "
                "checkpoint); start it again in a new --out, or delete the folder"
            )
    else:
        held = [n for n in _RUN_FILES if (out / n).exists()]
        if held:
            raise FileExistsError(
                f"{out} already holds a run ({', '.join(held)}); pass --resume to continue it or choose another --out"
            )
    check_writable(out, "the run folder (--out)")  # fail before any work, not at the first checkpoint
    trainer = build_trainer(config, out, progress)
    if resume:
        trainer.resume()
    else:
        atomic_write_text(out / "config.toml", config_to_toml(config))
        atomic_write_text(out / "metrics.jsonl", "")
    return trainer.train()


#: the files a run directory holds (any of them means --out is taken)
_RUN_FILES = ("checkpoint.pt", "config.toml", "metrics.jsonl", "summary.json")
