"""The GRPO training loop for decision policies (CleanRL-style: one readable loop).

Per step: draw B contexts; sample G actions each from the current policy (one network pass per
context); score them; turn rewards ``[B, G]`` into advantages; take ``num_iterations`` clipped
policy-gradient steps with a k3 KL penalty to the frozen reference.
"""

from __future__ import annotations

import copy
import json
import math
import signal
import threading
import time
import warnings
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import Tensor

from grpokit.atomic import atomic_write, atomic_write_json, atomic_write_text
from grpokit.config import GRPOConfig
from grpokit.environment import environment_info
from grpokit.evaluation.values import evaluate_policy, oracle_values, steps_to_fraction
from grpokit.grpo.advantages import make_advantage
from grpokit.grpo.cover import cover_actions, cover_advantages, cover_weights, per_action_mean
from grpokit.grpo.objective import grpo_loss
from grpokit.policy.heads import CategoricalDecision
from grpokit.policy.network import Policy
from grpokit.scenarios.base import Contexts, Scenario

__all__ = ["CheckpointError", "GRPOTrainer", "NonFiniteError", "TrainingInterrupted", "resolve_device"]

RewardFn = Callable[[Contexts, Tensor], "Tensor | Mapping[str, Tensor]"]


class NonFiniteError(RuntimeError):
    """The loss or the gradients became NaN/inf; the optimizer step was not taken."""


class CheckpointError(ValueError):
    """A checkpoint or metrics file that cannot be resumed from; the message names the file and why."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during :meth:`GRPOTrainer.train`: the finished steps were checkpointed at ``path``."""

    def __init__(self, step: int, path: Path | None):
        super().__init__(f"interrupted after step {step}" + (f"; checkpoint at {path}" if path else ""))
        self.step = step
        self.path = path


def load_checkpoint(path: Path) -> dict:
    """A checkpoint's state dict, loaded with ``weights_only=True`` (tensors and plain data only).

    Raises :class:`CheckpointError` naming the file for a truncated, garbage or foreign file."""
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err.strerror or err}") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a bad file (pickle, zip, EOF, ...)
        raise CheckpointError(
            f"checkpoint {path} is damaged or not a grpokit checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'unreadable'}); it cannot be resumed: start a new run "
            "in another --out"
        ) from None
    missing = [k for k in ("step", "policy", "optimizer", "advantage", "torch_rng", "generator")
               if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} is not a grpokit training checkpoint: it lacks {missing}")
    return state


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but CUDA is not available on this machine")
    return device


def _atomic_torch_save(obj, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


class GRPOTrainer:
    """Train ``policy`` with GRPO on a scenario, or on a reward function over a context sampler.

    ``scenario_or_reward_fn``: a :class:`~grpokit.scenarios.base.Scenario` (contexts, rewards and
    ground truth), or a callable ``reward(contexts, actions) -> [B, G]`` (or a dict of named
    ``[B, G]`` components) used with ``context_sampler`` (any object with
    ``sample_contexts(n, generator)``, e.g. :class:`~grpokit.scenarios.base.TensorContextSampler`).
    ``reference``: the frozen policy of the KL term (default: a copy of ``policy`` at the start);
    it is only built when ``config.beta > 0``. ``out_dir``: where metrics and checkpoints go
    (None keeps everything in memory).
    """

    def __init__(
        self,
        policy: Policy,
        scenario_or_reward_fn: Scenario | RewardFn,
        config: GRPOConfig | None = None,
        *,
        context_sampler=None,
        spend_fn: Callable[[Contexts, Tensor], Tensor] | None = None,
        reference: Policy | None = None,
        out_dir: str | Path | None = None,
        n_groups: int | None = None,
        progress: bool = False,
    ):
        self.config = c = config or GRPOConfig()
        self.device = resolve_device(c.device)
        if isinstance(scenario_or_reward_fn, Scenario):
            self.scenario: Scenario | None = scenario_or_reward_fn
            self.reward_fn = None
            self.sampler = context_sampler or scenario_or_reward_fn
            n_groups = scenario_or_reward_fn.n_groups
        elif callable(scenario_or_reward_fn):
            if context_sampler is None:
                raise ValueError("a reward function needs a context_sampler (e.g. TensorContextSampler)")
            self.scenario = None
            self.reward_fn = scenario_or_reward_fn
            self.sampler = context_sampler
        else:
            raise TypeError("scenario_or_reward_fn must be a Scenario or a callable reward(contexts, actions)")
        self.n_groups = n_groups or 1
        self.policy = policy.to(self.device)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=c.lr)
        self.reference = None
        if c.beta > 0:
            self.reference = copy.deepcopy(reference if reference is not None else policy).to(self.device)
            self.reference.requires_grad_(False).eval()
        self._estimators: dict[str, object] = {}
        self.budget = None
        self.spend_fn = spend_fn
        if c.budget is not None:
            from grpokit.rewards import BudgetMultiplier

            if self.spend_fn is None and self.scenario is not None:
                self.spend_fn = getattr(self.scenario, "spend", None)
            if self.spend_fn is None:
                raise ValueError(
                    "grpo.budget is set, but this run has no spend to constrain (its scenario or log defines "
                    "no cost per decision); remove grpo.budget (from Python, pass spend_fn= to GRPOTrainer)"
                )
            self.budget = BudgetMultiplier(c.budget, c.budget_lr, normalized=True, kp=c.budget_kp,
                                           ema=c.budget_ema, decay=c.budget_decay)
        #: the final calibration of the deployed spend (:meth:`calibrate_budget`); None until it ran
        self.budget_calibration: dict | None = None
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.progress = progress
        self.step = 0
        #: where train() writes its summary in out_dir (pipelines that write their own use another name)
        self.summary_file = "summary.json"
        torch.manual_seed(c.seed)
        self.generator = torch.Generator(device=self.device).manual_seed(c.seed)
        self.eval_contexts = None
        self.oracle = None
        if self.scenario is not None:
            eval_gen = torch.Generator(device=self.device).manual_seed(c.seed + 1_000_003)
            self.eval_contexts = self.scenario.sample_contexts(c.eval_size, eval_gen)
            self.oracle = oracle_values(self.scenario, self.eval_contexts)
        self.eval_history: list[dict] = []
        self._last_metrics: dict[str, float] = {}

    # -- rewards and advantages ---------------------------------------------------------------

    def _estimator(self, component: str):
        if component not in self._estimators:
            a = self.config.advantage
            self._estimators[component] = make_advantage(
                a.name,
                scale=a.scale,
                n_groups=self.n_groups,
                min_history=a.min_history,
                decay=a.decay,
                eps=a.eps,
                device=self.device,
            )
        return self._estimators[component]

    def score(self, contexts: Contexts, actions: Tensor) -> Tensor | Mapping[str, Tensor]:
        if self.scenario is not None:
            return self.scenario.reward(contexts, actions, self.generator, step=self.step)
        return self.reward_fn(contexts, actions)

    def advantages(self, contexts: Contexts, rewards) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Combine reward components and compute advantages: ``(adv [B, G], total reward [B, G], metrics)``.

        ``sum_then_normalize``: A = est(Σ_c w_c r_c); ``normalize_then_sum``: A = Σ_c w_c est_c(r_c)
        (one estimator, with its own P-GRPO history, per component). Missing weights are 1.
        """
        metrics: dict[str, Tensor] = {}
        if isinstance(rewards, Mapping):
            weights = self.config.reward_weights
            unknown = set(weights) - set(rewards)
            if unknown:
                raise ValueError(f"grpo.reward_weights names unknown components {sorted(unknown)}; "
                                 f"the reward's components are {sorted(rewards)}")
            for name, r in rewards.items():
                metrics[f"reward/{name}"] = r.mean()
            total = sum(weights.get(name, 1.0) * r for name, r in rewards.items())
            if self.config.reward_combine == "normalize_then_sum":
                adv = 0
                for name, r in rewards.items():
                    a, m = self._estimator(name)(r, contexts.group)
                    adv = adv + weights.get(name, 1.0) * a
                    metrics.update({f"{k}/{name}": v for k, v in m.items()})
                return adv, total, metrics
        else:
            if self.config.reward_weights:
                raise ValueError(
                    f"grpo.reward_weights names {sorted(self.config.reward_weights)}, but the reward is a single "
                    "number per decision (no named components), so the weights would be ignored; remove them "
                    "or return a dict of named components from the reward"
                )
            total = rewards
        adv, m = self._estimator("total")(total, contexts.group)
        metrics.update(m)
        return adv, total, metrics

    # -- one step -------------------------------------------------------------------------------

    def learning_rate(self, step: int | None = None) -> float:
        """The Adam step size of update ``step`` (0-based; default: the next update) under ``grpo.lr_schedule``;
        t = step / (steps − 1), so the first update uses lr and the last lr·f: linear lr·(1 − (1 − f)·t),
        cosine lr·(f + (1 − f)·(1 + cos πt)/2)."""
        c = self.config
        t = min(1.0, (self.step if step is None else step) / max(1, c.steps - 1))
        f = c.lr_final_fraction
        if c.lr_schedule == "linear":
            return c.lr * (1.0 - (1.0 - f) * t)
        if c.lr_schedule == "cosine":
            return c.lr * (f + (1.0 - f) * 0.5 * (1.0 + math.cos(math.pi * t)))
        return c.lr

    def train_step(self) -> dict[str, Tensor]:
        c = self.config
        self.policy.head.step_schedule(self.step)
        for group in self.optimizer.param_groups:  # every schedule, constant too: a resumed run takes the config's
            group["lr"] = self.learning_rate()
        contexts = self.sampler.sample_contexts(c.batch_size, self.generator)
        dist = self.policy(contexts.obs, contexts.group, contexts.mask)
        cover = c.group_sampling != "sampled"
        if cover and not isinstance(dist, CategoricalDecision):
            raise ValueError(f"grpo.group_sampling = {c.group_sampling!r} needs discrete actions (a categorical "
                             f"head); this policy's head gives {type(dist).__name__}: use 'sampled'")
        with torch.no_grad():
            try:
                if cover:
                    probs_old = dist.log_probs.detach().exp()
                    actions = cover_actions(probs_old, c.group_size, contexts.mask)
                    logp_old = dist.log_prob(actions)
                else:
                    actions, logp_old = dist.sample(c.group_size)
            except RuntimeError as err:
                if all(bool(torch.isfinite(p).all()) for p in self.policy.parameters()):
                    raise
                raise NonFiniteError(
                    f"step {self.step}: the policy's parameters are not finite (NaN/inf), so it cannot sample"
                    + self._checkpoint_hint()
                ) from err
        self.policy.head.observe(actions)
        rewards = self.score(contexts, actions)
        spend = None
        if self.budget is not None:
            # Lagrangian reward: r − λ·spend, with λ from before this batch (then updated below)
            spend = self.spend_fn(contexts, actions)
            if cover:  # the policy's expected spend, Σ_a π_old(a) · mean spend of action a's samples
                policy_spend = (probs_old * per_action_mean(spend.to(probs_old.dtype), actions,
                                                            probs_old.shape[1])[0]).sum(1).mean()
            else:
                policy_spend = spend.detach().float().mean()
            rewards = dict(rewards) if isinstance(rewards, Mapping) else {"reward": rewards}
            rewards["budget_penalty"] = self.budget.penalty(spend)
        adv, total, metrics = self.advantages(contexts, rewards)
        if tuple(total.shape) != (c.batch_size, c.group_size):
            raise ValueError(f"rewards must have shape [B, G] = [{c.batch_size}, {c.group_size}], got {tuple(total.shape)}")
        logp_ref = None
        if self.reference is not None:
            with torch.no_grad():
                logp_ref = self.reference(contexts.obs, contexts.group, contexts.mask).log_prob(actions)
        weights = None
        if cover:  # the objective over all K actions (grpokit.grpo.cover)
            weights = cover_weights(probs_old, actions, c.cover_floor)
            adv_all = cover_advantages(adv, actions, weights)
            live = weights > 0  # ineligible (masked) actions: log π = −inf, weight 0
            logp_old_all = torch.where(live, dist.log_probs.detach(), torch.zeros_like(probs_old))
            if logp_ref is not None:
                with torch.no_grad():
                    ref_all = self.reference(contexts.obs, contexts.group, contexts.mask).log_probs
                logp_ref = torch.where(live, ref_all, torch.zeros_like(ref_all))
        for it in range(c.num_iterations):
            if it > 0:
                dist = self.policy(contexts.obs, contexts.group, contexts.mask)
            if cover:
                logp = torch.where(live, dist.log_probs, torch.zeros_like(probs_old))
                loss_old, loss_adv = logp_old_all, adv_all
            else:
                logp = dist.log_prob(actions)
                loss_old, loss_adv = logp_old, adv
            if c.ent_coef != 0.0:
                entropy = dist.entropy()
            else:  # logged only: keep it out of the autograd graph
                with torch.no_grad():
                    entropy = dist.entropy()
            loss, m = grpo_loss(
                logp,
                loss_old,
                loss_adv,
                clip_low=c.clip_low,
                clip_high=c.clip_high,
                logp_ref=logp_ref,
                beta=c.beta,
                entropy=entropy,
                ent_coef=c.ent_coef,
                weights=weights,
            )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), c.max_grad_norm)
            if not bool(torch.isfinite(loss) & torch.isfinite(grad_norm)):
                what = "loss" if not bool(torch.isfinite(loss)) else "gradient norm"
                raise NonFiniteError(
                    f"step {self.step}: the {what} is {float(loss if what == 'loss' else grad_norm)}; "
                    "the update was not applied" + self._checkpoint_hint()
                )
            self.optimizer.step()
        metrics.update(m)
        head = self.policy.head
        if getattr(head, "target_spread", None) is not None and head.last_spread is not None:
            metrics["exploration/concentration"] = head.total_concentration.detach().float().clone().to(self.device)
            metrics["exploration/spread"] = torch.tensor(head.last_spread, device=self.device)
        if self.budget is not None:
            metrics["budget/spend"] = policy_spend.detach().float()
            metrics["budget/lambda"] = torch.tensor(self.budget.value, device=self.device)
            with torch.no_grad():  # what production would spend on this batch: each context's mode decision
                mode = self.policy(contexts.obs, contexts.group, contexts.mask).mode().unsqueeze(1)
                metrics["budget/deployed_spend"] = self.spend_fn(contexts, mode).float().mean()
            if c.budget_spend == "blend":  # sampled spend early, ramping to the deployed spend over the 2nd half
                w = min(1.0, max(0.0, 2.0 * (self.step + 1) / max(c.steps, 1) - 1.0))  # 1 at the last step
                tracked = (1 - w) * metrics["budget/spend"] + w * metrics["budget/deployed_spend"]
            else:
                tracked = metrics["budget/deployed_spend" if c.budget_spend == "deployed" else "budget/spend"]
            self.budget.update(float(tracked))
        metrics["loss"] = loss.detach()
        metrics["grad_norm"] = grad_norm.detach()
        if cover:  # the policy's expected reward, not the covering group's mean
            metrics["reward_mean"] = (probs_old * per_action_mean(total.detach().to(probs_old.dtype), actions,
                                                                  probs_old.shape[1])[0]).sum(1).mean().float()
        else:
            metrics["reward_mean"] = total.mean()
        metrics["adv_abs_mean"] = adv.abs().mean()
        if c.lr_schedule != "constant":
            metrics["lr"] = torch.tensor(self.optimizer.param_groups[0]["lr"], device=self.device)
        self.step += 1
        return metrics

    def _checkpoint_hint(self) -> str:
        if self.out_dir is None:
            return ""
        path = self.out_dir / "checkpoint.pt"
        if path.exists():
            try:
                step = load_checkpoint(path)["step"]
            except CheckpointError:
                return f"; the checkpoint at {path} cannot be read"
            return f"; the last good checkpoint is kept at {path} (step {step})"
        return "; no checkpoint had been written yet"

    # -- the budget's final calibration ----------------------------------------------------------

    def calibrate_budget(self, size: int | None = None) -> dict:
        """Post-hoc threshold: move the deployed (mode) spend onto the budget; returns what it did.

        The multiplier λ prices spend for the *sampled* policy; production deploys its mode, whose spend
        is a step function of λ (a PI controller on it oscillates, and sampled and mode spend differ).
        So after the last step the output bias b is shifted to b + μ·d, d_k = −s̄_k / max_j |s̄_j| with s̄_k
        the mean spend of pure action k (offer k for everyone; the vertex e_k of a simplex), and μ is
        bisected on a held-out calibration batch (``budget_calibration_size`` fresh contexts, seed
        ``grpo.seed + 2_000_003``, never the evaluation contexts) to the smallest μ whose mean mode spend
        is <= budget: μ > 0 cuts an overspend; μ < 0 raises an underspend only while λ > 0 (the budget
        binds: complementary slackness, λ > 0 ⇒ spend = budget). μ lives in the policy's parameters,
        so every saved, evaluated and served copy of the policy decides with it.
        """
        c = self.config
        if self.budget is None:
            raise ValueError("calibrate_budget needs grpo.budget")
        n = int(size if size is not None else c.budget_calibration_size)
        budget, lam = float(c.budget), float(self.budget.value)
        info: dict = {"size": n, "seed": c.seed + 2_000_003, "lambda": lam, "offset": 0.0}
        policy, head = self.policy, self.policy.head
        out = getattr(policy, "out", None)
        from grpokit.policy.heads import CategoricalHead, DirichletHead, GaussianSoftmaxHead

        if isinstance(head, CategoricalHead):
            pure = torch.arange(head.n_actions, device=self.device)
        elif isinstance(head, (DirichletHead, GaussianSoftmaxHead)):
            k = head.n_components
            pure = torch.eye(k, device=self.device)
        else:
            pure = None
        if pure is None or not isinstance(out, torch.nn.Linear) or out.bias is None or not hasattr(policy, "torso") \
                or n < 1:
            info["skipped"] = "the policy has no output bias over a finite set of pure actions to shift" if n >= 1 \
                else "budget_calibration_size = 0"
            self.budget_calibration = info
            return info
        gen = torch.Generator(device=self.device).manual_seed(c.seed + 2_000_003)
        ctx = self.sampler.sample_contexts(n, gen)
        was_training = policy.training
        policy.eval()
        try:
            with torch.no_grad():
                raw = out(policy.torso(ctx.obs, ctx.group))
                actions = pure.expand(n, *pure.shape)  # [n, K] (K columns: one pure action each) or [n, K, K]
                s_pure = self.spend_fn(ctx, actions).double().mean(0)  # [K]
                if isinstance(head, GaussianSoftmaxHead):  # raw holds K − 1 logits against the last component
                    s_pure = s_pure[:-1] - s_pure[-1]
                scale = float(s_pure.abs().max())
                if not math.isfinite(scale) or scale <= 0:
                    info["skipped"] = "every pure action spends the same: no offset moves the spend"
                    self.budget_calibration = info
                    return info
                d = (-s_pure / scale).to(raw.dtype)

                def spend(mu: float) -> float:
                    a = head(raw + mu * d, ctx.mask).mode().unsqueeze(1)
                    return float(self.spend_fn(ctx, a).double().mean())

                def ok(mu: float) -> bool:
                    return spend(mu) <= budget

                s0 = spend(0.0)
                info["spend_before"] = s0
                lo = hi = 0.0  # invariant of the bisection: spend(lo) > budget >= spend(hi)
                if s0 > budget:  # overspend: bracket the smallest μ > 0 within budget
                    hi = 1.0
                    while not ok(hi) and hi < 1e6:
                        lo, hi = hi, 2.0 * hi
                elif lam > 0:  # underspend while the budget binds: bracket the most negative μ within budget
                    lo = -1.0
                    while ok(lo) and lo > -1e6:
                        lo, hi = 2.0 * lo, lo
                    if ok(lo):  # within budget whatever the offset: the budget does not bind
                        lo = hi = 0.0
                feasible = ok(hi)
                if lo != hi and feasible:
                    for _ in range(50):  # until the spend is within 0.01 % below the budget
                        mid = 0.5 * (lo + hi)
                        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
                        if spend(hi) >= budget * (1 - 1e-4):
                            break
                mu = hi
                if mu != 0.0:
                    out.bias.add_(mu * d)
                info.update(offset=float(mu), direction=[float(x) for x in d], spend=spend(mu),
                            feasible=bool(feasible))
        finally:
            policy.train(was_training)
        self.budget_calibration = info
        return info

    # -- evaluation -----------------------------------------------------------------------------

    def evaluate(self) -> dict | None:
        if self.scenario is None:
            return None
        result = evaluate_policy(self.policy, self.scenario, self.eval_contexts)
        result["step"] = self.step
        self.eval_history.append(result)
        return result

    # -- the loop -------------------------------------------------------------------------------

    def train(self, steps: int | None = None) -> dict:
        """Run until ``config.steps`` (or ``steps`` more); writes metrics and checkpoints; returns the summary."""
        c = self.config
        end = c.steps if steps is None else self.step + steps
        if self.out_dir is not None and self.step >= end and self.step > 0 and steps is None:
            done = self._finished_summary()
            if done is not None:  # a finished run resumed again: nothing to do, its summary stands
                return done
        metrics_file = None
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            # line-buffered: every finished step is on disk (in the OS) before the next starts, so a
            # kill -9 loses at most the step in progress, never rows before the last checkpoint
            metrics_file = open(self.out_dir / "metrics.jsonl", "a", buffering=1, encoding="utf-8")
        interrupted: list[int] = []
        previous_handler = None
        if self.out_dir is not None and threading.current_thread() is threading.main_thread():
            def on_sigint(signum, frame):  # finish the step, checkpoint, then stop (twice: stop now)
                if interrupted:
                    raise KeyboardInterrupt
                interrupted.append(signum)

            previous_handler = signal.signal(signal.SIGINT, on_sigint)
        progress = None
        if self.progress:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            progress = Progress(
                TextColumn("[bold]GRPO"),
                BarColumn(),
                TextColumn("step {task.completed}/{task.total}"),
                TextColumn("reward {task.fields[reward]:.4f}"),
                TimeRemainingColumn(),
            )
            task = progress.add_task("train", total=end, completed=self.step, reward=float("nan"))
            progress.start()
        start_time = time.perf_counter()
        start_step = self.step
        try:
            if self.step == 0 and self.scenario is not None and not self.eval_history:
                self._log(metrics_file, {"step": 0, **self._eval_metrics(self.evaluate())})
            while self.step < end:
                metrics = self.train_step()
                row = {"step": self.step, "decisions": self.step * c.batch_size * c.group_size}
                row.update({k: float(v) for k, v in zip(metrics, torch.stack(list(metrics.values())).tolist())})
                if self.step == c.steps and self.budget is not None and self.budget_calibration is None \
                        and c.budget_calibration_size > 0:
                    cal = self.calibrate_budget()
                    row.update({f"budget/calibration_{k}": cal[k] for k in ("offset", "spend_before", "spend")
                                if isinstance(cal.get(k), float)})
                if self.scenario is not None and (self.step % c.eval_every == 0 or self.step == end):
                    row.update(self._eval_metrics(self.evaluate()))
                self._last_metrics = row
                self._log(metrics_file, row)
                if progress is not None:
                    progress.update(task, completed=self.step, reward=row["reward_mean"])
                if self.out_dir is not None and (self.step % c.checkpoint_every == 0 or self.step == end):
                    self.save_checkpoint()
                if interrupted and self.step < end:
                    raise TrainingInterrupted(self.step, self.save_checkpoint())
        finally:
            if previous_handler is not None:
                signal.signal(signal.SIGINT, previous_handler)
            if progress is not None:
                progress.stop()
            if metrics_file is not None:
                metrics_file.close()
        elapsed = time.perf_counter() - start_time
        summary = self.summary(elapsed=elapsed, steps_run=self.step - start_step)
        summary["environment"] = environment_info()
        if self.out_dir is not None:
            atomic_write_json(self.out_dir / self.summary_file, summary)
        return summary

    def _finished_summary(self) -> dict | None:
        """The summary a finished run already wrote (None when there is none to keep)."""
        path = self.out_dir / self.summary_file
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return summary if isinstance(summary, dict) and summary.get("steps") == self.step else None

    @staticmethod
    def _eval_metrics(result: dict | None) -> dict[str, float]:
        if result is None:
            return {}
        out = {"eval/value": result["value"]}
        out.update({f"eval/{k}": v for k, v in result["per_group"].items()})
        return out

    @staticmethod
    def _log(file, row: dict) -> None:
        if file is not None:
            file.write(json.dumps(row) + "\n")

    def summary(self, elapsed: float | None = None, steps_run: int | None = None, name: str | None = None) -> dict:
        """Final values per group against the oracle and the first step reaching 90 % of it.

        The trained policy is listed under ``name`` (default: the advantage estimator's name)."""
        c = self.config
        name = name or c.advantage.name
        out: dict = {"steps": self.step, "decisions": self.step * c.batch_size * c.group_size}
        if elapsed is not None and steps_run:
            out["seconds"] = elapsed
            out["decisions_per_second"] = steps_run * c.batch_size * c.group_size / elapsed
        out["last_metrics"] = self._last_metrics
        if self.scenario is None:
            return out
        final = self.eval_history[-1] if self.eval_history and self.eval_history[-1]["step"] == self.step else self.evaluate()
        out["policies"] = {name: {"value": final["value"], "per_group": final["per_group"]}}
        if self.oracle is not None:
            out["oracle"] = self.oracle
            history = [(h["step"], h["value"]) for h in self.eval_history]
            out["steps_to_90pct"] = {"overall": steps_to_fraction(history, self.oracle["value"])}
            for g, target in self.oracle["per_group"].items():
                hist = [(h["step"], h["per_group"][g]) for h in self.eval_history]
                out["steps_to_90pct"][g] = steps_to_fraction(hist, target)
        return out

    # -- checkpoints ----------------------------------------------------------------------------

    def state_dict(self) -> dict:
        state = {
            "step": self.step,
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "advantage": {k: est.state_dict() for k, est in self._estimators.items()},
            "torch_rng": torch.get_rng_state(),
            "generator": self.generator.get_state(),
            "eval_history": self.eval_history,
            "config": self.config.model_dump(mode="json"),
        }
        if self.reference is not None:
            state["reference"] = self.reference.state_dict()
        if self.budget is not None:
            state["budget"] = self.budget.state_dict()
            state["budget_calibration"] = self.budget_calibration
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        for k, est_state in state["advantage"].items():
            self._estimator(k).load_state_dict(est_state)
        torch.set_rng_state(state["torch_rng"])
        self.generator.set_state(state["generator"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        if self.reference is not None:
            if "reference" not in state:
                raise ValueError("the checkpoint has no reference policy but beta > 0")
            self.reference.load_state_dict(state["reference"])
        self.eval_history = list(state.get("eval_history", []))
        if self.budget is not None:
            if "budget" not in state:
                raise ValueError("the checkpoint has no budget multiplier but grpo.budget is set")
            self.budget.load_state_dict(state["budget"])
            self.budget_calibration = state.get("budget_calibration")

    def save_checkpoint(self, path: str | Path | None = None) -> Path:
        """Write the full training state atomically (a crash mid-write keeps the previous file)."""
        if path is None:
            if self.out_dir is None:
                raise ValueError("no out_dir: pass a path")
            path = self.out_dir / "checkpoint.pt"
        path = Path(path)
        _atomic_torch_save(self.state_dict(), path)
        return path

    def resume(self, path: str | Path | None = None) -> None:
        """Continue exactly from a checkpoint (policy, optimizer, RNGs, P-GRPO statistics);
        metrics.jsonl is cut back to the checkpoint's step."""
        if path is None:
            if self.out_dir is None:
                raise ValueError("no out_dir: pass a checkpoint path")
            path = self.out_dir / "checkpoint.pt"
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint at {path}: nothing to resume")
        state = load_checkpoint(path)
        try:
            self.load_state_dict(state)
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as err:
            first = str(err).strip().splitlines()
            raise CheckpointError(
                f"checkpoint {path} does not fit this run (it was written for another policy, scenario or "
                f"config): {first[-1].strip() if first else type(err).__name__}"
            ) from None
        if self.out_dir is not None and (self.out_dir / "metrics.jsonl").exists():
            kept = self._metrics_up_to(self.out_dir / "metrics.jsonl", self.step)
            atomic_write_text(self.out_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in kept))
            if kept:
                self._last_metrics = kept[-1]

    @staticmethod
    def _metrics_up_to(path: Path, step: int) -> list[dict]:
        """The rows of ``metrics.jsonl`` up to ``step``; a torn last line (a crash mid-write) is dropped
        when it lies after the checkpoint. Any other unreadable line is an error naming it."""
        try:
            lines = path.read_text(encoding="utf-8").split("\n")
        except (OSError, UnicodeDecodeError) as err:
            raise CheckpointError(f"cannot read {path}: {err}") from None
        rows: list[dict] = []
        last = max((i for i, ln in enumerate(lines) if ln.strip()), default=-1)
        for i, ln in enumerate(lines):
            if not ln.strip():
                continue
            try:
                row = json.loads(ln)
                ok = isinstance(row, dict) and isinstance(row.get("step"), int)
            except ValueError:
                ok = False
            if not ok:
                if i == last and (rows[-1]["step"] if rows else -1) >= step:
                    break  # a partial row written after the checkpoint: the resumed run writes it again
                raise CheckpointError(
                    f"{path}, line {i + 1}: not a metrics row ({ln[:60]!r}); the metrics up to the "
                    f"checkpoint's step {step} must be readable to resume: repair or delete that line"
                )
            if row["step"] <= step:
                rows.append(row)
        have = [r["step"] for r in rows]
        missing = sorted(set(range(have[0], step + 1)) - set(have)) if have else []
        if missing:
            warnings.warn(f"{path} lacks the rows of steps {missing[:10]}{'...' if len(missing) > 10 else ''} "
                          "(written before grpokit kept every row); the resumed metrics will have that gap",
                          stacklevel=3)
        return rows
