"""Multi-worker GRPO: contexts sharded over workers, gradients all-reduced, P-GRPO statistics merged.

The global batch of B contexts per step is cut into ``n_chunks`` fixed chunks of B / n_chunks
contexts; worker w of W takes chunks [w·n_chunks/W, (w+1)·n_chunks/W). Chunk k of step t draws its
contexts, its G actions per context (torch's RNG forked and seeded) and its reward noise from one
seed, SeedSequence([seed, t, k]), so every context keeps its G samples on one worker and the draws
do not depend on W. Each worker's loss is the GRPO loss's mean over its contexts; gradients are
summed across workers and divided by W (equal shards: the mean over the global batch), then clipped
and applied by Adam on every worker (same weights everywhere). P-GRPO: each worker computes its
batch's per-group (count, mean, M2), all workers gather them and merge them in rank order with
Chan's formula (:func:`grpokit.grpo.advantages.merge_moments`), then merge the result into the
history, so every worker holds identical statistics, those of one worker seeing the whole batch.
Logged metrics are averaged across workers.

Hence W workers give the one-worker result (same ``n_chunks``, same global batch) up to float
rounding: the loss forward and the gradient sum run in another order. A scenario whose rewards couple
the contexts of a batch (marketing's spillover) couples them within a chunk. Not supported here yet:
``grpo.budget`` (a Lagrange multiplier on spend), heads with adaptive exploration (``target_spread``).

``num_workers=0`` runs the same loop in this process (the default suite tests it); ``num_workers >= 1``
runs it under Ray Train's ``TorchTrainer`` (gloo on CPU, NCCL where the workers have GPUs).
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from grpokit.grpo.advantages import PGRPOAdvantage, merge_moments
from grpokit.grpo.objective import grpo_loss
from grpokit.grpo.trainer import GRPOTrainer, NonFiniteError
from grpokit.scenarios.base import Contexts

__all__ = ["ShardedTrainer", "LocalComm", "ThreadComm", "TorchComm", "train_distributed", "chunk_seed"]


# -- communication --------------------------------------------------------------------------------


class LocalComm:
    """One worker: every collective is the identity."""

    rank, world = 0, 1

    def all_gather(self, t: Tensor) -> list[Tensor]:
        return [t]

    def all_reduce_sum(self, t: Tensor) -> Tensor:
        return t


class _DryComm(LocalComm):
    """Rank 0 of ``world`` workers that all hold the same tensors (checks a setup on the driver)."""

    def __init__(self, world: int):
        self.world = world

    def all_gather(self, t: Tensor) -> list[Tensor]:
        return [t] * self.world


class TorchComm:
    """torch.distributed (the process group Ray Train sets up): all-gather, and a sum computed from
    the gathered tensors in rank order so that every worker gets the same bits."""

    def __init__(self):
        import torch.distributed as dist

        self.dist = dist
        self.rank, self.world = dist.get_rank(), dist.get_world_size()

    def all_gather(self, t: Tensor) -> list[Tensor]:
        out = [torch.empty_like(t) for _ in range(self.world)]
        self.dist.all_gather(out, t.contiguous())
        return out

    def all_reduce_sum(self, t: Tensor) -> Tensor:
        parts = self.all_gather(t)
        total = parts[0].clone()
        for p in parts[1:]:
            total += p
        return total


class ThreadComm:
    """W workers as threads of one process (tests, and a check of the sharding without Ray): make one
    with ``ThreadComm.group(W)``; collectives meet at a barrier and combine in rank order."""

    def __init__(self, rank: int, shared: dict):
        self.rank, self.world, self._s = rank, shared["world"], shared

    @classmethod
    def group(cls, world: int) -> list["ThreadComm"]:
        shared = {"world": world, "slots": [None] * world, "barrier": threading.Barrier(world)}
        return [cls(r, shared) for r in range(world)]

    def all_gather(self, t: Tensor) -> list[Tensor]:
        s = self._s
        s["slots"][self.rank] = t.detach().clone()
        s["barrier"].wait()
        out = [x.clone() for x in s["slots"]]
        s["barrier"].wait()
        return out

    def all_reduce_sum(self, t: Tensor) -> Tensor:
        parts = self.all_gather(t)
        total = parts[0].clone()
        for p in parts[1:]:
            total += p
        return total


# -- the sharded trainer ----------------------------------------------------------------------------


#: torch's global RNG is per process: workers that are threads (ThreadComm) take turns at seeding it
_RNG_LOCK = threading.Lock()


def chunk_seed(seed: int, step: int, chunk: int) -> int:
    """The seed of chunk ``chunk`` at step ``step``: SeedSequence([seed, step, chunk]) as a 63-bit int."""
    return int(np.random.SeedSequence([int(seed), int(step), int(chunk)]).generate_state(1, np.uint64)[0] >> np.uint64(1))


class _MergedPGRPO(PGRPOAdvantage):
    """P-GRPO whose batch statistics are those of all workers' batches (gathered, Chan-merged)."""

    comm = LocalComm()

    def update(self, rewards: Tensor, group_ids: Tensor) -> None:
        mine = torch.stack(self.batch_moments(rewards, group_ids))  # [3, n_groups]
        parts = self.comm.all_gather(mine)
        n, mean, m2 = parts[0]
        for p in parts[1:]:
            n, mean, m2 = merge_moments(n, mean, m2, p[0], p[1], p[2])
        self.merge(n, mean, m2)


def _cat_contexts(parts: list[Contexts]) -> Contexts:
    if len(parts) == 1:
        return parts[0]
    mask = None if parts[0].mask is None else torch.cat([p.mask for p in parts])
    extra = {k: torch.cat([p.extra[k] for p in parts]) for k in parts[0].extra}
    return Contexts(torch.cat([p.obs for p in parts]), torch.cat([p.group for p in parts]), mask, extra)


def _cat_rewards(parts: list):
    if isinstance(parts[0], dict):
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    return torch.cat(parts)


class ShardedTrainer(GRPOTrainer):
    """:class:`~grpokit.grpo.trainer.GRPOTrainer` for one worker of a sharded run (see the module
    docstring); ``comm`` connects the workers; only rank 0 writes ``out_dir``."""

    def __init__(self, policy, scenario, config, *, comm=None, n_chunks: int = 8, out_dir=None):
        comm = comm or LocalComm()
        if config.budget is not None:
            raise ValueError("grpo.budget is not supported by multi-worker training yet; train it with one process")
        if getattr(policy.head, "target_spread", None) is not None:
            raise ValueError("policy.head_params.target_spread (adaptive exploration) is not supported by "
                             "multi-worker training yet")
        if n_chunks < 1 or config.batch_size % n_chunks:
            raise ValueError(f"n_chunks = {n_chunks} must divide grpo.batch_size = {config.batch_size}")
        if n_chunks % comm.world:
            raise ValueError(f"n_chunks = {n_chunks} must be a multiple of the number of workers ({comm.world})")
        super().__init__(policy, scenario, config, out_dir=out_dir if comm.rank == 0 else None)
        self.comm, self.n_chunks = comm, n_chunks
        self._broadcast(self.policy)  # rank 0's initial weights everywhere (as DDP does)
        if self.reference is not None:
            self._broadcast(self.reference)

    def _broadcast(self, module) -> None:
        with torch.no_grad():
            for p in module.parameters():
                p.copy_(self.comm.all_gather(p.detach())[0])

    def _estimator(self, component: str):
        a = self.config.advantage
        if component not in self._estimators and a.name == "pgrpo":
            est = _MergedPGRPO(self.n_groups, a.min_history, a.decay, a.eps, device=self.device)
            est.comm = self.comm
            self._estimators[component] = est
        return super()._estimator(component)

    def _sample_chunks(self):
        c, rank, world = self.config, self.comm.rank, self.comm.world
        per, size = self.n_chunks // world, c.batch_size // self.n_chunks
        parts = []
        for k in range(rank * per, (rank + 1) * per):
            s = chunk_seed(c.seed, self.step, k)
            gen = torch.Generator(device=self.device).manual_seed(s)
            ctx = self.sampler.sample_contexts(size, gen)
            with _RNG_LOCK, torch.no_grad(), torch.random.fork_rng(devices=[] if self.device.type == "cpu" else [self.device]):
                torch.manual_seed(s)
                actions, logp_old = self.policy(ctx.obs, ctx.group, ctx.mask).sample(c.group_size)
            rewards = (self.scenario.reward(ctx, actions, gen, step=self.step) if self.scenario is not None
                       else self.reward_fn(ctx, actions))
            parts.append((ctx, actions, logp_old, rewards))
        return (_cat_contexts([p[0] for p in parts]), torch.cat([p[1] for p in parts]),
                torch.cat([p[2] for p in parts]), _cat_rewards([p[3] for p in parts]))

    def _all_reduce_grads(self) -> None:
        params = [p for p in self.policy.parameters() if p.requires_grad]
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
        flat = self.comm.all_reduce_sum(flat) / self.comm.world
        i = 0
        for p in params:
            n = p.numel()
            p.grad = flat[i : i + n].view_as(p).clone()
            i += n

    def train_step(self) -> dict[str, Tensor]:
        c = self.config
        self.policy.head.step_schedule(self.step)
        contexts, actions, logp_old, rewards = self._sample_chunks()
        self.policy.head.observe(actions)
        adv, total, metrics = self.advantages(contexts, rewards)
        logp_ref = None
        if self.reference is not None:
            with torch.no_grad():
                logp_ref = self.reference(contexts.obs, contexts.group, contexts.mask).log_prob(actions)
        for _ in range(c.num_iterations):
            dist = self.policy(contexts.obs, contexts.group, contexts.mask)
            logp = dist.log_prob(actions)
            if c.ent_coef != 0.0:
                entropy = dist.entropy()
            else:
                with torch.no_grad():
                    entropy = dist.entropy()
            loss, m = grpo_loss(logp, logp_old, adv, clip_low=c.clip_low, clip_high=c.clip_high, logp_ref=logp_ref,
                                beta=c.beta, entropy=entropy, ent_coef=c.ent_coef)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self._all_reduce_grads()
            grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), c.max_grad_norm)
            if not bool(torch.isfinite(loss) & torch.isfinite(grad_norm)):
                raise NonFiniteError(f"step {self.step}: the loss or the gradient norm is not finite on worker "
                                     f"{self.comm.rank}; the update was not applied")
            self.optimizer.step()
        metrics.update(m)
        metrics["loss"] = loss.detach()
        metrics["grad_norm"] = grad_norm.detach()
        metrics["reward_mean"] = total.mean()
        metrics["adv_abs_mean"] = adv.abs().mean()
        keys = list(metrics)
        mean = self.comm.all_reduce_sum(torch.stack([metrics[k].detach().float() for k in keys])) / self.comm.world
        self.step += 1
        return dict(zip(keys, mean))

    def worker_check(self) -> dict:
        """Largest difference across workers of the policy's weights and of the P-GRPO statistics (0.0:
        every worker holds the same)."""
        flat = torch.cat([p.detach().reshape(-1).double() for p in self.policy.parameters()])
        stats = [torch.stack([est.count, est.mean, est.m2]).reshape(-1) for est in self._estimators.values()
                 if isinstance(est, PGRPOAdvantage)]
        stats = torch.cat(stats) if stats else torch.zeros(1, dtype=torch.float64)
        pw, sw = self.comm.all_gather(flat), self.comm.all_gather(stats)
        return {"max_param_diff": max(float((p - pw[0]).abs().max()) for p in pw),
                "max_stats_diff": max(float((s - sw[0]).abs().max()) for s in sw)}


# -- entry points ---------------------------------------------------------------------------------


def _build(config_dict: dict, comm, n_chunks: int, out_dir):
    from grpokit.config import build_config
    from grpokit.runner import build_policy
    from grpokit.scenarios.registry import scenario_from_config

    cfg = build_config(config_dict)
    with _RNG_LOCK:  # worker threads (ThreadComm) share torch's global RNG
        scenario = scenario_from_config(cfg.scenario)
        torch.manual_seed(cfg.grpo.seed)  # the same initial weights on every worker
        policy = build_policy(cfg, scenario)
        trainer = ShardedTrainer.__new__(ShardedTrainer)
    trainer.__init__(policy, scenario, cfg.grpo, comm=comm, n_chunks=n_chunks, out_dir=out_dir)
    return trainer


def _run_worker(config_dict: dict, comm, n_chunks: int, out_dir, threads: int | None) -> dict:
    if threads is not None:
        torch.set_num_threads(threads)
    trainer = _build(config_dict, comm, n_chunks, out_dir)
    t0 = time.perf_counter()
    summary = trainer.train()
    wall = time.perf_counter() - t0
    summary["workers"] = {"num_workers": comm.world, "n_chunks": n_chunks, "train_wall_s": wall,
                          "steps_per_second": trainer.step / wall, **trainer.worker_check()}
    state = {"policy": trainer.policy.state_dict(),
             "advantage": {k: est.state_dict() for k, est in trainer._estimators.items()}}
    return {"summary": summary, "state": state}


def _ray_train_loop(loop_config: dict) -> None:
    import json
    import os

    import ray.train

    comm = TorchComm()
    out = _run_worker(loop_config["config"], comm, loop_config["n_chunks"], None, loop_config["threads"])
    if comm.rank == 0:
        tmp = tempfile.mkdtemp(prefix="grpokit_ddp_")
        torch.save(out["state"], os.path.join(tmp, "state.pt"))
        Path(tmp, "summary.json").write_text(json.dumps(out["summary"]))
        ray.train.report({"steps": out["summary"]["steps"]}, checkpoint=ray.train.Checkpoint.from_directory(tmp))
    else:
        ray.train.report({"steps": out["summary"]["steps"]})


def train_distributed(
    config,
    *,
    num_workers: int = 0,
    n_chunks: int = 8,
    out_dir: str | Path | None = None,
    threads_per_worker: int | None = 1,
    address: str | None = None,
    storage_path: str | None = None,
    use_gpu: bool = False,
) -> dict:
    """Train ``config`` (a RunConfig, a TOML path or a resolved dict) sharded over ``num_workers`` Ray
    Train workers (0: in this process). Returns ``{"summary", "state"}``: rank 0's training summary
    (with ``workers``: the worker count, steps/s and the cross-worker check) and the final policy and
    P-GRPO state. ``n_chunks`` fixes the randomness (see the module docstring): runs with the same
    ``n_chunks`` and any worker count that divides it give the same result. ``out_dir`` (num_workers=0)
    gets the trainer's metrics and checkpoint; ``storage_path``: where Ray Train keeps its checkpoint
    (default a temporary directory; on a cluster a path every node can reach)."""
    from grpokit.config import RunConfig, load_config

    if not isinstance(config, (RunConfig, dict)):
        config = load_config(config)
    config_dict = config.model_dump(mode="json") if isinstance(config, RunConfig) else config
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    if num_workers == 0:
        return _run_worker(config_dict, LocalComm(), n_chunks, out_dir, threads_per_worker)
    _build(config_dict, _DryComm(num_workers), n_chunks, None)  # fail here, naming the key, not in a worker

    from grpokit.scale._ray import init_ray

    init_ray(address)
    import json
    import os

    from ray.train import RunConfig as RayRunConfig
    from ray.train import ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    storage = storage_path or tempfile.mkdtemp(prefix="grpokit_ray_train_")
    trainer = TorchTrainer(
        _ray_train_loop,
        train_loop_config={"config": config_dict, "n_chunks": n_chunks, "threads": threads_per_worker},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": 1}),
        run_config=RayRunConfig(storage_path=storage, name="grpokit_ddp"),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"Ray Train finished without a checkpoint from rank 0: {result.error}")
    with result.checkpoint.as_directory() as d:
        state = torch.load(os.path.join(d, "state.pt"), map_location="cpu", weights_only=True)
        summary = json.loads(Path(d, "summary.json").read_text())
    return {"summary": summary, "state": state}
