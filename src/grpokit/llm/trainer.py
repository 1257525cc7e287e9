"""``PGRPOTrainer``: TRL's ``GRPOTrainer`` with advantages from grpokit's estimators (P-GRPO by default).

P-GRPO (arXiv 2603.10009) normalizes each completion's reward against its *preference group's*
reward history instead of its prompt's G concurrent completions:
A = (R − μ_p) / (σ_p + eps), with (n_p, μ_p, σ_p) a running count/mean/std per preference group
(:class:`grpokit.grpo.advantages.PGRPOAdvantage`; its ``decay`` and ``min_history`` warm-up are
grpokit's additions, not the paper's).

Where it hooks into TRL (1.16): TRL computes advantages inline in
``_generate_and_score_completions``. This class leaves that method whole and

1. reads every prompt's preference-group id from a dataset column (``group_column``) *before*
   generation, gathers the ids across processes (``gather_object``, the order TRL's ``gather``
   gives the rewards), and rejects a prompt whose G completions carry different ids;
2. keeps the gathered reward matrix that TRL's ``_calculate_rewards`` returns;
3. after TRL's method returns, recomputes the advantages of the whole gathered batch with the
   grpokit estimator (rewards summed with ``reward_weights``, as TRL's ``sum_then_normalize``),
   slices this process's part, and replaces ``output["advantages"]`` and the advantages TRL put in
   its completion log (so logged advantages are the ones trained on).

During evaluation the estimator runs on a copy of its state (the statistics never change).
Statistics are saved in each checkpoint as ``pgrpo_state.pt`` and restored on resume, the way
TRL saves its own extra state. Completions that no reward function scored (all ``None``) get
advantage 0, as in TRL; for the statistics their reward is imputed by their prompt's mean reward.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Sequence
from typing import Any

import torch
from accelerate.utils import gather_object
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import GRPOTrainer

from grpokit.grpo.advantages import ADVANTAGES, make_advantage

__all__ = ["PGRPOTrainer", "STATE_FILE"]

logger = logging.getLogger(__name__)

STATE_FILE = "pgrpo_state.pt"


class PGRPOTrainer(GRPOTrainer):
    """A ``trl.GRPOTrainer`` whose advantages come from a grpokit estimator.

    Extra arguments (everything else is ``GRPOTrainer``'s):

    ``advantage``
        ``"pgrpo"`` (default), ``"grpo"`` (scale from ``args.scale_rewards``), ``"dr_grpo"`` or
        ``"rank"`` (:data:`grpokit.grpo.advantages.ADVANTAGES`), or an estimator object
        ``est(rewards [B, G], group_ids [B]) -> (adv, metrics)`` with ``state_dict``/``load_state_dict``.
    ``group_column``
        the dataset column holding each prompt's preference-group id (default ``preference_group``).
    ``groups``
        the group labels, in the order of their codes 0..k-1; default: the sorted distinct labels of
        the train dataset's ``group_column``. A label outside ``groups`` is an error.
    ``min_history``, ``decay``, ``eps``
        P-GRPO's warm-up count (fall back to GRPO until a group has seen that many rewards), the
        history's decay per batch (1 = none) and the denominator's eps (1e-4, TRL's).
    """

    def __init__(
        self,
        *args: Any,
        advantage: str | Any = "pgrpo",
        group_column: str = "preference_group",
        groups: Sequence[Any] | None = None,
        min_history: int = 32,
        decay: float = 1.0,
        eps: float = 1e-4,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        if self.multi_objective_aggregation != "sum_then_normalize":
            raise ValueError(
                "PGRPOTrainer normalizes the weighted sum of the rewards: set "
                f"multi_objective_aggregation='sum_then_normalize' (got {self.multi_objective_aggregation!r})"
            )
        self.group_column = group_column
        if groups is None:
            groups = self._groups_from_dataset(group_column)
        groups = list(groups)
        if not groups:
            raise ValueError("groups is empty: give at least one preference-group label")
        dup = sorted({str(g) for g in groups if groups.count(g) > 1})
        if dup:
            raise ValueError(f"groups lists label(s) more than once: {dup}")
        self.group_names = groups
        self._group_index = {g: i for i, g in enumerate(groups)}
        if isinstance(advantage, str):
            if advantage not in ADVANTAGES:
                raise ValueError(f"unknown advantage {advantage!r}; choose one of {list(ADVANTAGES)}")
            self.advantage_name = advantage
            self.advantage_estimator = make_advantage(
                advantage,
                scale=self.scale_rewards,
                n_groups=len(groups),
                min_history=min_history,
                decay=decay,
                eps=eps,
            )
        else:
            if not callable(advantage) or not hasattr(advantage, "state_dict"):
                raise ValueError("advantage must be a name or an estimator (callable with state_dict/load_state_dict)")
            self.advantage_name = type(advantage).__name__
            self.advantage_estimator = advantage
        self._pgrpo_rewards_per_func: torch.Tensor | None = None

    # -- groups -------------------------------------------------------------------------------

    def _groups_from_dataset(self, column: str) -> list:
        ds = self.train_dataset
        names = getattr(ds, "column_names", None)
        if ds is None or names is None or not hasattr(ds, "__getitem__") or not hasattr(ds, "__len__"):
            raise ValueError("pass groups=[...] (the preference-group labels): they cannot be read from this dataset")
        if column not in names:
            raise ValueError(f"the train dataset has no preference-group column {column!r}; columns: {list(names)}")
        values = ds[column]
        missing = [i for i, v in enumerate(values) if v is None]
        if missing:
            raise ValueError(f"preference-group column {column!r} is empty at row {missing[0]} ({len(missing)} rows)")
        try:
            return sorted(set(values))
        except TypeError as err:
            raise ValueError(f"preference-group column {column!r} mixes label types: {err}") from err

    def _gathered_group_codes(self, inputs: list[dict], num_generations: int) -> torch.Tensor:
        """Codes ``[B]`` of the gathered batch's B prompts (each repeated G times), checked."""
        local = []
        for i, row in enumerate(inputs):
            if self.group_column not in row:
                raise ValueError(f"batch row {i} has no preference-group column {self.group_column!r}; keys: {sorted(row)}")
            label = row[self.group_column]
            if label not in self._group_index:
                raise ValueError(
                    f"preference group {label!r} (column {self.group_column!r}, batch row {i}) is not among the "
                    f"groups {self.group_names}"
                )
            local.append(self._group_index[label])
        codes = torch.tensor(gather_object(local), dtype=torch.long)
        if codes.numel() % num_generations:
            raise ValueError(f"the gathered batch of {codes.numel()} completions is not a multiple of G={num_generations}")
        per_prompt = codes.view(-1, num_generations)
        mixed = (per_prompt != per_prompt[:, :1]).any(1)
        if bool(mixed.any()):
            b = int(mixed.nonzero()[0, 0])
            labels = sorted({str(self.group_names[c]) for c in per_prompt[b].tolist()})
            raise ValueError(
                f"prompt {b} of the batch has G={num_generations} completions with different preference groups "
                f"{labels} (column {self.group_column!r}); a prompt's completions must share one group"
            )
        return per_prompt[:, 0]

    # -- TRL hooks ------------------------------------------------------------------------------

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._pgrpo_rewards_per_func = rewards_per_func  # gathered across processes by TRL
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        mode = "train" if self.model.training else "eval"
        num_generations = self.num_generations if mode == "train" else self.num_generations_eval
        codes = self._gathered_group_codes(inputs, num_generations)  # before generating: fail fast
        self._pgrpo_rewards_per_func = None
        output = super()._generate_and_score_completions(inputs)
        rewards_per_func, self._pgrpo_rewards_per_func = self._pgrpo_rewards_per_func, None
        if rewards_per_func is None:
            raise RuntimeError("TRL did not call _calculate_rewards: this TRL version is not supported by PGRPOTrainer")
        if num_generations < 2:  # eval with one completion per prompt: no group-relative advantage
            return output
        adv = self._advantages(rewards_per_func, codes, num_generations, mode)
        n_local = len(inputs)
        start = self.accelerator.process_index * n_local
        local = adv[start : start + n_local]
        output["advantages"] = local.to(output["advantages"].device, output["advantages"].dtype)
        logged = self._logs["advantages"]
        k = min(adv.numel(), len(logged))
        for _ in range(k):
            logged.pop()
        logged.extend(adv[adv.numel() - k :].tolist())
        return output

    def _advantages(self, rewards_per_func: torch.Tensor, codes: torch.Tensor, g: int, mode: str) -> torch.Tensor:
        """Estimator advantages ``[B*G]`` of the gathered batch; logs the group metrics."""
        rpf = rewards_per_func.detach().float().cpu()
        rewards = (rpf * self.reward_weights.cpu().unsqueeze(0)).nansum(1)
        unscorable = torch.isnan(rpf).all(1)
        rewards = rewards.masked_fill(unscorable, float("nan")).view(-1, g)
        if bool(unscorable.any()):
            row_mean = torch.nanmean(rewards, 1, keepdim=True).nan_to_num(0.0)
            rewards = torch.where(torch.isnan(rewards), row_mean.expand_as(rewards), rewards)
        est = self.advantage_estimator
        if mode == "train":
            adv, metrics = est(rewards, codes)
        else:
            saved = copy.deepcopy(est.state_dict())
            try:
                adv, metrics = est(rewards, codes)
            finally:
                est.load_state_dict(saved)
        adv = adv.reshape(-1).masked_fill(unscorable, 0.0)
        self._log_group_metrics(mode, rewards, codes, metrics)
        return adv

    def _log_group_metrics(self, mode: str, rewards: torch.Tensor, codes: torch.Tensor, metrics: dict) -> None:
        m = self._metrics[mode]
        for key, value in metrics.items():
            m[f"pgrpo/{key}"].append(float(value))
        est = self.advantage_estimator
        k = len(self.group_names)
        r = rewards.double()
        n = torch.zeros(k, dtype=torch.float64).index_add_(0, codes, torch.full((codes.numel(),), float(r.shape[1]), dtype=torch.float64))
        s1 = torch.zeros(k, dtype=torch.float64).index_add_(0, codes, r.sum(1))
        s2 = torch.zeros(k, dtype=torch.float64).index_add_(0, codes, r.square().sum(1))
        mean = s1 / n.clamp_min(1)
        std = (s2 / n.clamp_min(1) - mean.square()).clamp_min(0).sqrt()  # population std of the batch's rewards
        batch = [x.tolist() for x in (n, mean, std)]
        history = all(hasattr(est, a) for a in ("count", "mean", "std"))
        hist = [est.count.tolist(), est.mean.tolist(), est.std.tolist()] if history else None
        for c, name in enumerate(self.group_names):
            if batch[0][c] > 0:
                m[f"pgrpo/{name}/reward_mean"].append(batch[1][c])
                m[f"pgrpo/{name}/reward_std"].append(batch[2][c])
                m[f"pgrpo/{name}/count"].append(batch[0][c])
            if hist is not None:
                m[f"pgrpo/{name}/history_count"].append(hist[0][c])
                m[f"pgrpo/{name}/history_mean"].append(hist[1][c])
                m[f"pgrpo/{name}/history_std"].append(hist[2][c])

    # -- checkpoints ----------------------------------------------------------------------------

    def pgrpo_state(self) -> dict:
        """What a checkpoint holds: the estimator's name, the group labels and its state."""
        return {
            "advantage": self.advantage_name,
            "groups": [str(g) for g in self.group_names],
            "state": self.advantage_estimator.state_dict(),
        }

    def load_pgrpo_state(self, saved: dict) -> None:
        if saved.get("advantage") != self.advantage_name:
            raise ValueError(f"checkpoint holds {saved.get('advantage')!r} statistics, this trainer uses {self.advantage_name!r}")
        if saved.get("groups") != [str(g) for g in self.group_names]:
            raise ValueError(f"checkpoint groups {saved.get('groups')} differ from this trainer's {self.group_names}")
        self.advantage_estimator.load_state_dict(saved["state"])

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            os.makedirs(folder, exist_ok=True)
            torch.save(self.pgrpo_state(), os.path.join(folder, STATE_FILE))

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        path = os.path.join(checkpoint, STATE_FILE)
        if not os.path.exists(path):
            logger.warning("checkpoint %s has no %s: the preference-group statistics start empty", checkpoint, STATE_FILE)
            return
        self.load_pgrpo_state(torch.load(path, weights_only=True, map_location="cpu"))
