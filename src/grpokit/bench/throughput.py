"""Training throughput in decisions per second.

A decision = one sampled action that is scored and used in an update. The engine is timed through
:meth:`GRPOTrainer.train_step` (sample, score, advantages, clipped loss, one Adam step) on the
preference scenario with a categorical head on a 2×64 MLP; a minimal hand-written loop doing the
same work is timed beside it, so the cost of the engine's generality is visible.
"""

from __future__ import annotations

import time

import torch

from grpokit.config import load_config
from grpokit.grpo.trainer import resolve_device
from grpokit.runner import build_trainer

__all__ = ["measure_engine", "measure_minimal", "run_throughput"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_engine(batch_size: int, group_size: int, device: str, steps: int, warmup: int, advantage: str = "grpo") -> dict:
    cfg = load_config(
        None,
        [
            f"grpo.batch_size={batch_size}",
            f"grpo.group_size={group_size}",
            f'grpo.device="{device}"',
            f'grpo.advantage.name="{advantage}"',
            "grpo.eval_size=16",
            "policy.hidden=[64, 64]",
        ],
    )
    trainer = build_trainer(cfg)
    dev = trainer.device
    for _ in range(warmup):
        trainer.train_step()
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    _sync(dev)
    seconds = time.perf_counter() - t0
    return {
        "decisions_per_second": steps * batch_size * group_size / seconds,
        "seconds_per_step": seconds / steps,
        "steps": steps,
    }


def measure_minimal(batch_size: int, group_size: int, device: str, steps: int, warmup: int) -> dict:
    """The floor: a fully vectorized loop with no configuration, metrics or checks."""
    dev = resolve_device(device)
    cfg = load_config(None, [])
    from grpokit.scenarios.registry import scenario_from_config

    scenario = scenario_from_config(cfg.scenario)
    gen = torch.Generator(device=dev).manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(scenario.obs_dim, 64),
        torch.nn.Tanh(),
        torch.nn.Linear(64, 64),
        torch.nn.Tanh(),
        torch.nn.Linear(64, scenario.n_actions),
    ).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def step():
        ctx = scenario.sample_contexts(batch_size, gen)
        logp_all = torch.log_softmax(net(ctx.obs), -1)
        a = torch.multinomial(logp_all.detach().exp(), group_size, replacement=True, generator=gen)
        r = scenario.reward(ctx, a, gen)
        adv = (r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-6)
        logp = logp_all.gather(1, a)
        ratio = torch.exp(logp - logp.detach())
        loss = -torch.minimum(ratio * adv, ratio.clamp(0.8, 1.2) * adv).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(dev)
    seconds = time.perf_counter() - t0
    return {"decisions_per_second": steps * batch_size * group_size / seconds, "seconds_per_step": seconds / steps, "steps": steps}


def run_throughput(device: str = "auto", steps: int = 200, warmup: int = 20) -> dict:
    """B = 4096 × G = 8 on the chosen device; on CUDA also B = 262144 × G = 16."""
    dev = resolve_device(device)
    shapes = [(4096, 8)]
    if dev.type == "cuda":
        shapes.append((262144, 16))
    out = {
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "results": [],
    }
    for b, g in shapes:
        out["results"].append(
            {
                "batch_size": b,
                "group_size": g,
                "engine": measure_engine(b, g, str(dev), steps, warmup),
                "engine_pgrpo": measure_engine(b, g, str(dev), steps, warmup, advantage="pgrpo"),
                "minimal_loop": measure_minimal(b, g, str(dev), steps, warmup),
            }
        )
    return out
