"""Bring-your-own-logs workflow: learn a policy from a log, then gate it on a (held-out) log.

``learn_from_log``: a cross-fitted outcome model r̂(x, a) on the log's features, then GRPO on the
logged contexts with r̂ as the reward of each sampled action; the policy is saved with the feature
names and action labels it expects. ``evaluate_on_log``: the saved policy's action probabilities
on another log collected by the current policy, an off-policy estimate of its value, and the
deployment verdict of :func:`grpokit.offline.gate.deployment_gate`, overall and per group.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from grpokit.config import GRPOConfig, PolicyConfig
from grpokit.offline.gate import deployment_gate
from grpokit.offline.learn import action_probabilities, learn_from_outcome_model
from grpokit.offline.outcome import OutcomeModel
from grpokit.offline.schema import LoggedDecisions
from grpokit.policy.io import load_policy, save_policy

__all__ = ["learn_from_log", "evaluate_on_log"]

NEEDS_MODEL = ("dm", "dr", "sndr")


def _rewards(log: LoggedDecisions) -> np.ndarray:
    if log.reward is None:
        raise ValueError(
            "the log has no reward column; set the schema's reward (or combine its outcomes into one)"
        )
    return log.reward


def learn_from_log(
    log: LoggedDecisions,
    out_dir: str | Path,
    *,
    outcome_model: str = "gbm",
    config: GRPOConfig | None = None,
    policy_config: PolicyConfig | None = None,
    seed: int = 0,
) -> dict:
    """Train a policy on ``log`` and save it to ``out_dir/policy.pt``; returns the summary."""
    reward = _rewards(log)
    model = OutcomeModel(log.n_actions, outcome_model, seed=seed).fit(log.features, log.action, reward)
    table = model.predict_crossfit()
    config = config or GRPOConfig(device="cpu", seed=seed)
    policy, summary = learn_from_outcome_model(log.features, table, config, policy_config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_policy(
        policy,
        out / "policy.pt",
        {
            "feature_names": list(log.feature_names),
            "n_actions": int(log.n_actions),
            "action_labels": None if log.action_labels is None else [str(a) for a in log.action_labels],
            "outcome_model": outcome_model,
        },
    )
    probs = action_probabilities(policy, log.features)
    return {
        "n_rows": len(log),
        "n_actions": int(log.n_actions),
        "outcome_model": outcome_model,
        "model_value_of_policy": float((probs * table).sum(1).mean()),
        "model_value_of_logging": float(reward.mean()),
        "model_value_of_best_action_per_row": float(table.max(1).mean()),
        "training": {"steps": summary["steps"], "last_metrics": summary["last_metrics"]},
        "policy_path": str(out / "policy.pt"),
        "grpo_config": config.model_dump(mode="json"),
    }


def _align_features(log: LoggedDecisions, feature_names: list[str]) -> np.ndarray:
    missing = [f for f in feature_names if f not in log.feature_names]
    if missing:
        raise ValueError(
            f"the log lacks feature column(s) {missing} that the policy was trained on; "
            f"the log has {list(log.feature_names)}"
        )
    index = [list(log.feature_names).index(f) for f in feature_names]
    return log.features[:, index]


def evaluate_on_log(
    log: LoggedDecisions,
    policy_path: str | Path,
    *,
    method: str = "dr",
    margin: float = 0.0,
    alpha: float = 0.05,
    outcome_model: str = "gbm",
    n_bootstrap: int = 1000,
    seed: int = 0,
    clip: float | None = None,
) -> dict:
    """The deployment gate of the saved policy on ``log`` (collected by the current policy)."""
    reward = _rewards(log)
    policy, meta = load_policy(policy_path)
    n_actions = int(meta.get("n_actions", log.n_actions))
    if n_actions != log.n_actions:
        raise ValueError(f"the policy chooses among {n_actions} actions but the log has n_actions = {log.n_actions}")
    x = _align_features(log, meta.get("feature_names", list(log.feature_names)))
    target = action_probabilities(policy, x)
    reward_hat = None
    if method in NEEDS_MODEL:
        reward_hat = OutcomeModel(log.n_actions, outcome_model, seed=seed).fit(x, log.action, reward).predict_crossfit()
    kw = dict(method=method, margin=margin, alpha=alpha, n_bootstrap=n_bootstrap, seed=seed, clip=clip)
    result = deployment_gate(
        reward=reward, action=log.action, pscore=log.pscore, target_probs=target, reward_hat=reward_hat, **kw
    )
    result["n_rows"] = len(log)
    if log.group is not None:
        result["per_group"] = {}
        labels = log.group_labels or list(range(int(log.group.max()) + 1))
        for code, label in enumerate(labels):
            rows = np.flatnonzero(log.group == code)
            if len(rows) < 20:
                result["per_group"][str(label)] = {"n_rows": int(len(rows)), "skipped": "fewer than 20 rows"}
                continue
            g = deployment_gate(
                reward=reward[rows],
                action=log.action[rows],
                pscore=log.pscore[rows],
                target_probs=target[rows],
                reward_hat=None if reward_hat is None else reward_hat[rows],
                **kw,
            )
            result["per_group"][str(label)] = {
                "n_rows": int(len(rows)),
                "candidate": g["candidate"],
                "current": g["current"],
                "improvement": g["improvement"],
                "verdict": g["verdict"],
            }
    return result
