"""Learning a policy from logged decisions: GRPO on an outcome model's counterfactual rewards.

A business cannot try G actions on the same customer, but an outcome model r̂(x, a) fitted on the
logs (:class:`~grpokit.offline.outcome.OutcomeModel`) scores any action for any logged context.
GRPO then samples G actions per logged context and uses r̂(x, a) as their reward:
A_bi = (r̂(x_b, a_bi) − mean_i r̂(x_b, a_bi)) / std_i(...) — the policy climbs the model's
estimate of the value, and an off-policy estimator checks the result on held-out logs.

Group-relative components (``reward_components``, weights in ``grpo.reward_weights``, each logged
on its own as ``reward/<name>``): with ref_b the reference action of logged row b
(``improvement_reference``: ``"control"``, the log's first action, e.g. no offer; ``"logged"``, the
logging policy's action in that row; or an action label) and the cohort c(b) = the log's group
column::

    reward                    = r̂(x_b, a_bi)                      (the outcome model's predicted reward)
    improvement               = d_bi = r̂(x_b, a_bi) − r̂(x_b, ref_b) (predicted improvement)
    relative_to_cohort_median = d_bi − median{d_jk : c(j) = c(b)}
    cohort_percentile_rank    = (#{d_jk < d_bi} + #{d_jk = d_bi} / 2) / n_c

the median and the mid-ranks pooled over the B_c·G sampled actions of cohort c in the batch
(:func:`grpokit.rewards.components.group_relative_components`). The default (no components) is
r̂ as one number.
"""

from __future__ import annotations

import numpy as np
import torch

from grpokit.config import GRPOConfig, PolicyConfig
from grpokit.grpo.trainer import GRPOTrainer, resolve_device
from grpokit.policy.heads import CategoricalHead
from grpokit.policy.network import MLPTorso, Policy
from grpokit.rewards.components import GROUP_RELATIVE, check_component_names, group_relative_components
from grpokit.scenarios.base import TensorContextSampler

__all__ = ["learn_from_outcome_model", "action_probabilities", "RawFeaturePolicy", "LEARN_COMPONENTS",
           "REFERENCES", "reference_reward", "check_reference", "check_learn_rewards"]

#: the reward components learning from a log can train on (``reward_components``)
LEARN_COMPONENTS = ("reward", *GROUP_RELATIVE)
#: the named improvement references (besides any action label)
REFERENCES = ("control", "logged")


def reference_reward(reward_table: np.ndarray, reference: str = "control", action: np.ndarray | None = None,
                     labels: list[str] | None = None) -> np.ndarray:
    """``[n]``: r̂(x_b, ref_b), the predicted reward of each row's reference action.

    ``reference``: "control" (action 0, the log's first action, e.g. no offer; the control of
    :func:`~grpokit.offline.workflow.cohort_treated_share`), "logged" (``action[b]``, the logging
    policy's action) or one of ``labels`` (the same action for every row). The keywords win over
    a label of the same name.
    """
    table = np.asarray(reward_table)
    code = check_reference(reference, labels if labels is not None else list(range(table.shape[1])))
    if code is None:
        if action is None:
            raise ValueError('improvement_reference "logged" needs the logged actions')
        action = np.asarray(action, dtype=np.int64)
        return table[np.arange(len(table)), action]
    return table[:, code].copy()


def check_learn_rewards(reward_components, reward_weights, has_cohorts: bool) -> list[str]:
    """The component names as a list, or a ValueError naming an unknown component or weight, or the missing cohorts."""
    names = check_component_names(reward_components or [], LEARN_COMPONENTS, "reward_components")
    if names:
        unknown = sorted(set(reward_weights) - set(names))
        if unknown:
            raise ValueError(f"grpo.reward_weights: unknown component{'s' if len(unknown) > 1 else ''} {unknown}; "
                             f"the reward components are {names}")
    elif reward_weights:
        raise ValueError(f"grpo.reward_weights names {sorted(reward_weights)}, but the reward is r̂ alone (one "
                         f"number); name the components in reward_components (any of {list(LEARN_COMPONENTS)})")
    within = [n for n in names if n in GROUP_RELATIVE and n != "improvement"]
    if within and not has_cohorts:
        raise ValueError(f"reward components {within} are measured within cohorts: they need the log's group "
                         "column (the log has none, or groups were turned off)")
    return names


def check_reference(reference, labels) -> int | None:
    """The action code of ``reference`` (None for "logged"), or a ValueError naming it and the choices."""
    if reference == "control":
        return 0
    if reference == "logged":
        return None
    names = [str(a) for a in labels]
    if not isinstance(reference, str) or reference not in names:
        raise ValueError(f"improvement_reference {reference!r} is not {' or '.join(map(repr, REFERENCES))} or one of "
                         f"the log's actions {names}")
    return names.index(reference)


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
    reward_components: list[str] | None = None,
    reference: np.ndarray | None = None,
) -> tuple[Policy, dict]:
    """Train a categorical policy on logged contexts with rewards r̂ = ``reward_table[row, action]``.

    ``features: [n, d]`` logged contexts; ``reward_table: [n, n_actions]`` the outcome model's
    predicted reward of every action for every row; ``group: [n]`` optional group codes (for P-GRPO
    or a group embedding); ``out_dir``: where the trainer writes ``metrics.jsonl`` (per step:
    reward_mean, entropy, frac_zero_std, ...) and its checkpoint. Returns the trained policy and
    the trainer's summary. ``allowed [n_actions]`` (bool, optional): only these actions get probability
    (e.g. those the log shows; see :meth:`~grpokit.policy.heads.CategoricalHead.restrict`).

    ``reward_components`` (names from :data:`LEARN_COMPONENTS`; None or empty: r̂ as one number):
    the trainer's reward becomes ``{name: [B, G]}`` as in the module doc, weighed by
    ``config.reward_weights``; the group-relative ones need ``reference [n]`` (r̂ of each row's
    reference action, :func:`reference_reward`) and ``group`` (the cohorts).
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
    names = check_learn_rewards(reward_components, config.reward_weights, group is not None)
    relative = [n for n in names if n in GROUP_RELATIVE]
    if relative:
        if reference is None:
            raise ValueError(f"reward components {relative} need the reference reward r̂(x, ref) of every row")
        reference = np.asarray(reference, dtype=np.float32)
        if reference.shape != (len(reward_table),) or not np.all(np.isfinite(reference)):
            raise ValueError(f"reference must be a finite [n] = [{len(reward_table)}] array, got shape {reference.shape}")
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

    ref = None if not relative else torch.as_tensor(reference, device=device)

    def reward(contexts, actions):
        rows = contexts.extra["row"]
        r = table[rows.unsqueeze(1), actions]
        if not names:
            return r
        out = {"reward": r}
        if relative:
            out.update(group_relative_components(r - ref[rows].unsqueeze(1), contexts.group, n_groups, names))
        return {k: out[k] for k in names}

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
