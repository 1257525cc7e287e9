"""Learning a policy from logged decisions: GRPO on an outcome model's counterfactual rewards.

A business cannot try G actions on the same customer, but an outcome model r̂(x, a) fitted on the
logs (:class:`~grpokit.offline.outcome.OutcomeModel`) scores any action for any logged context.
GRPO then samples G actions per logged context and uses r̂(x, a) as their reward:
A_bi = (r̂(x_b, a_bi) − mean_i r̂(x_b, a_bi)) / std_i(...) — the policy climbs the model's
estimate of the value, and an off-policy estimator checks the result on held-out logs.
"""

from __future__ import annotations

import numpy as np
import torch

from grpokit.config import GRPOConfig, PolicyConfig
from grpokit.grpo.trainer import GRPOTrainer, resolve_device
from grpokit.policy.heads import CategoricalHead
from grpokit.policy.network import MLPTorso, Policy
from grpokit.scenarios.base import TensorContextSampler

__all__ = ["learn_from_outcome_model", "action_probabilities", "RawFeaturePolicy"]


def learn_from_outcome_model(
    features: np.ndarray,
    reward_table: np.ndarray,
    config: GRPOConfig | None = None,
    policy_config: PolicyConfig | None = None,
    *,
    group: np.ndarray | None = None,
    n_groups: int | None = None,
    progress: bool = False,
    out_dir=None,
    allowed=None,
) -> tuple[Policy, dict]:
    """Train a categorical policy on logged contexts with rewards r̂ = ``reward_table[row, action]``.

    ``features: [n, d]`` logged contexts; ``reward_table: [n, n_actions]`` the outcome model's
    predicted reward of every action for every row; ``group: [n]`` optional group codes (for P-GRPO
    or a group embedding); ``out_dir``: where the trainer writes ``metrics.jsonl`` (per step:
    reward_mean, entropy, frac_zero_std, ...) and its checkpoint. Returns the trained policy and
    the trainer's summary. ``allowed [n_actions]`` (bool, optional): only these actions get probability
    (e.g. those the log shows; see :meth:`~grpokit.policy.heads.CategoricalHead.restrict`).
    """
    features = np.asarray(features, dtype=np.float32)
    reward_table = np.asarray(reward_table, dtype=np.float32)
    if features.ndim != 2 or reward_table.ndim != 2 or len(features) != len(reward_table):
        raise ValueError(
            f"features [n, d] and reward_table [n, n_actions] must share n, got {features.shape} and {reward_table.shape}"
        )
    if not np.all(np.isfinite(reward_table)):
        row = int(np.argwhere(~np.isfinite(reward_table))[0][0])
        raise ValueError(f"reward_table has a NaN or inf in row {row}")
    config = config or GRPOConfig()
    policy_config = policy_config or PolicyConfig()
    torch.manual_seed(config.seed)
    g = None if group is None else torch.tensor(np.asarray(group), dtype=torch.long)
    n_groups = n_groups or (int(g.max()) + 1 if g is not None else 1)
    torso = MLPTorso(
        features.shape[1],
        policy_config.hidden,
        policy_config.activation,
        n_groups=n_groups,
        group_embedding_dim=policy_config.group_embedding_dim,
    )
    policy = Policy(torso, CategoricalHead(reward_table.shape[1]))
    if allowed is not None:
        policy.head.restrict(np.asarray(allowed, dtype=bool))
    device = resolve_device(config.device)
    table = torch.as_tensor(reward_table, device=device)
    sampler = TensorContextSampler(torch.as_tensor(features, device=device), None if g is None else g.to(device))

    def reward(contexts, actions):
        return table[contexts.extra["row"].unsqueeze(1), actions]

    trainer = GRPOTrainer(policy, reward, config, context_sampler=sampler, n_groups=n_groups, progress=progress,
                          out_dir=out_dir)
    summary = trainer.train()
    return trainer.policy.cpu(), summary


@torch.no_grad()
def action_probabilities(policy: Policy, features: np.ndarray, group: np.ndarray | None = None) -> np.ndarray:
    """``[n, n_actions]``: the (stochastic) policy's probability of each action for each context."""
    obs = torch.as_tensor(np.asarray(features, dtype=np.float32))
    g = None if group is None else torch.tensor(np.asarray(group), dtype=torch.long)
    policy.eval()
    dist = policy(obs, g)
    return dist.log_probs.exp().double().numpy()


class RawFeaturePolicy(torch.nn.Module):
    """A policy trained on standardized numeric features that decides from raw ones:
    π(· | x) = π_std(· | (x − μ) / σ), with μ, σ the encoder's (fitted on the training log).

    For simulators whose contexts are numeric tensors (``grpokit run --set evaluation.train_on=logs``).
    """

    def __init__(self, policy: Policy, encoder):
        super().__init__()
        kinds = {f["type"] for f in encoder.fields}
        if kinds != {"number"}:
            raise ValueError(f"RawFeaturePolicy needs numeric features only, the encoder has {sorted(kinds)}")
        self.policy = policy
        self.register_buffer("mean", torch.tensor([f["mean"] for f in encoder.fields], dtype=torch.float32))
        self.register_buffer("std", torch.tensor([f["std"] for f in encoder.fields], dtype=torch.float32))

    def forward(self, obs, group=None, mask=None):
        return self.policy((obs.float() - self.mean) / self.std, group, mask)

    @torch.no_grad()
    def act(self, obs, group=None, mask=None):
        """The deterministic production decision per raw context (``Decision.mode``)."""
        return self.forward(obs, group, mask).mode()
