"""Seeded simulator rollouts and evaluations of a trained policy, serially or as parallel Ray tasks.

One rollout with seed s: n contexts drawn with ``torch.Generator().manual_seed(s)``, one action per
context sampled from the policy (torch's global RNG forked and seeded with s, so it touches nothing
outside) or its greedy decision (``mode="greedy"``), rewards sampled by the scenario with the same
generator. It returns the mean sampled reward (components summed with ``grpo.reward_weights``, missing
weights 1), its standard error, and the true value (mean expected reward, overall and per group, as
:func:`grpokit.evaluation.values.evaluate_actions`). A rollout depends only on (config, policy
weights, seed, n, mode), so Ray tasks return exactly what the serial loop returns.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from grpokit.scale._ray import check_backend

__all__ = ["rollout", "run_rollouts", "load_run"]

MODES = ("sample", "greedy")


def load_run(run_dir: str | Path) -> tuple[dict, dict]:
    """``(config dict, policy state_dict)`` of a run directory: its ``config.toml`` and the policy of its
    ``checkpoint.pt`` (loaded with ``weights_only=True``)."""
    import torch

    from grpokit.config import load_config

    path = Path(run_dir) / "checkpoint.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: train a run there first (grpokit train/run)")
    config = load_config(Path(run_dir) / "config.toml").model_dump(mode="json")
    state = torch.load(path, map_location="cpu", weights_only=True)
    return config, state["policy"]


def rollout(config: dict, policy_state: dict, seed: int, n: int, mode: str = "sample", threads: int = 1) -> dict:
    """One seeded rollout of ``n`` contexts (see the module docstring): a dict of plain floats."""
    import torch

    from grpokit.config import build_config
    from grpokit.evaluation.values import evaluate_actions
    from grpokit.runner import build_policy
    from grpokit.scenarios.registry import scenario_from_config

    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {list(MODES)}")
    if n < 1:
        raise ValueError(f"a rollout needs n >= 1 contexts, got {n}")
    torch.set_num_threads(threads)
    cfg = build_config(config)
    scenario = scenario_from_config(cfg.scenario)
    policy = build_policy(cfg, scenario)
    policy.load_state_dict(policy_state)
    policy.eval()
    gen = torch.Generator().manual_seed(int(seed))
    contexts = scenario.sample_contexts(n, gen)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        if mode == "greedy":
            actions = policy.act(contexts.obs, contexts.group, contexts.mask)
        else:
            actions = policy(contexts.obs, contexts.group, contexts.mask).sample(1)[0][:, 0]
        rewards = scenario.reward(contexts, actions.unsqueeze(1), gen)
    weights = cfg.grpo.reward_weights
    if isinstance(rewards, Mapping):
        total = sum(weights.get(k, 1.0) * r for k, r in rewards.items())
    else:
        total = rewards
    r = total[:, 0].double()
    truth = evaluate_actions(scenario, contexts, actions)
    sd = float(r.std()) if n > 1 else math.nan
    return {"seed": int(seed), "n": n, "mode": mode, "reward_mean": float(r.mean()), "reward_se": sd / math.sqrt(n),
            "value": truth["value"], "per_group": truth["per_group"]}


def run_rollouts(
    config: dict,
    policy_state: dict,
    seeds: list[int],
    n: int,
    *,
    mode: str = "sample",
    backend: str = "local",
    address: str | None = None,
    num_cpus: int | None = None,
) -> list[dict]:
    """:func:`rollout` for every seed, in seed order; ``backend="ray"``: one Ray task per seed (the
    policy's weights are put in the object store once)."""
    check_backend(backend)
    if backend == "local":
        return [rollout(config, policy_state, s, n, mode) for s in seeds]
    from grpokit.scale._ray import init_ray

    ray = init_ray(address, num_cpus)
    task = ray.remote(num_cpus=1)(rollout)
    cfg_ref, state_ref = ray.put(config), ray.put(policy_state)
    return ray.get([task.remote(cfg_ref, state_ref, s, n, mode) for s in seeds])
