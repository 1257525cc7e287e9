"""The Open Bandit Dataset checks: off-policy estimates of BTS from random logs, and a GRPO policy
learned from the random logs, valued with a confidence interval.

The decision per logged impression is the item shown at that impression's position; the policy's
context is the user features, the user-item affinities and the one-hot position (so it may choose
differently per slot). Outcome models use the same context plus the item's features.
"""

from __future__ import annotations

import time

import numpy as np

from grpokit.config import GRPOConfig, PolicyConfig
from grpokit.datasets.obd import bts_action_dist, load_bts_prior, load_obd, obd_target_probs
from grpokit.offline.estimators import ESTIMATORS, estimate_improvement, estimate_value
from grpokit.offline.learn import action_probabilities, learn_from_outcome_model
from grpokit.offline.outcome import OutcomeModel

__all__ = ["validate_obd", "learn_obd", "obd_policy_features"]


def obd_policy_features(log) -> np.ndarray:
    """``[n, d + len_list]``: the log's context with the one-hot position appended."""
    pos = np.zeros((log.n_rounds, log.len_list))
    pos[np.arange(log.n_rounds), log.position] = 1.0
    return np.concatenate([log.context, pos], axis=1)


def _mean_ci(x: np.ndarray, alpha: float) -> dict:
    from scipy.stats import norm

    m, se = float(np.mean(x)), float(np.std(x, ddof=1) / np.sqrt(len(x)))
    z = float(norm.ppf(1 - alpha / 2))
    return {"value": m, "ci_low": m - z * se, "ci_high": m + z * se}


def validate_obd(
    root,
    campaign: str = "all",
    *,
    n_sim: int = 100_000,
    outcome_model: str = "gbm",
    alpha: float = 0.05,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict:
    """Estimate the BTS policy's value from the uniform-random log with each estimator.

    Returns ``on_policy_value`` (mean click of the BTS log, with a normal CI) and
    ``estimators.<method>.{value, ci_low, ci_high, relative_error}``, relative_error = |V̂ − V| / V.
    """
    t0 = time.perf_counter()
    random_log = load_obd(root, "random", campaign)
    bts_log = load_obd(root, "bts", campaign)
    dist = bts_action_dist(load_bts_prior(root, campaign, random_log.n_actions), n_sim=n_sim, seed=seed,
                           len_list=random_log.len_list)
    target = obd_target_probs(dist, random_log.position)
    x = obd_policy_features(random_log)
    model = OutcomeModel(
        random_log.n_actions, outcome_model, action_context=random_log.action_context, n_folds=5, seed=seed
    ).fit(x, random_log.action, random_log.reward)
    reward_hat = model.predict_crossfit()
    truth = bts_log.on_policy_value
    out = {
        "campaign": campaign,
        "n_random": random_log.n_rounds,
        "n_bts": bts_log.n_rounds,
        "on_policy_value": truth,
        "on_policy_ci": _mean_ci(bts_log.reward, alpha),
        "random_policy_value": random_log.on_policy_value,
        "outcome_model": outcome_model,
        "alpha": alpha,
        "n_bootstrap": n_bootstrap,
        "estimators": {},
    }
    for method in ESTIMATORS:
        res = estimate_value(
            method,
            reward=random_log.reward,
            action=random_log.action,
            pscore=random_log.pscore,
            target_probs=target,
            reward_hat=reward_hat,
            alpha=alpha,
            n_bootstrap=n_bootstrap,
            seed=seed,
        ).to_dict()
        res["relative_error"] = abs(res["value"] - truth) / truth
        res["ci_covers_on_policy"] = bool(res["ci_low"] <= truth <= res["ci_high"])
        out["estimators"][method] = res
    out["seconds"] = time.perf_counter() - t0
    return out


def learn_obd(
    root,
    campaign: str = "all",
    *,
    test_fraction: float = 0.5,
    outcome_model: str = "gbm",
    config: GRPOConfig | None = None,
    policy_config: PolicyConfig | None = None,
    method: str = "dr",
    n_sim: int = 100_000,
    alpha: float = 0.05,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict:
    """Learn a GRPO policy from the random log's training split and value it on the held-out split.

    Training: an outcome model fitted on the training rows (cross-fitted predictions) scores the G
    items GRPO samples for each training context. Evaluation, on held-out rows only: a fresh
    cross-fitted outcome model and ``method`` (default DR) give the learned policy's value with a
    CI, next to the random policy (mean click of the held-out rows), the BTS policy (the same
    estimator on the same rows, and its on-policy value from the BTS log), and the improvement
    over random with a paired CI.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    t0 = time.perf_counter()
    log = load_obd(root, "random", campaign)
    bts_log = load_obd(root, "bts", campaign)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(log.n_rounds)
    n_test = int(round(test_fraction * log.n_rounds))
    test, train = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    x = obd_policy_features(log)

    train_model = OutcomeModel(log.n_actions, outcome_model, action_context=log.action_context, seed=seed).fit(
        x[train], log.action[train], log.reward[train]
    )
    config = config or GRPOConfig(steps=300, batch_size=512, group_size=8, lr=1e-3, device="cpu", seed=seed)
    policy, summary = learn_from_outcome_model(x[train], train_model.predict_crossfit(), config, policy_config)

    test_model = OutcomeModel(log.n_actions, outcome_model, action_context=log.action_context, seed=seed + 1).fit(
        x[test], log.action[test], log.reward[test]
    )
    reward_hat = test_model.predict_crossfit()
    common = dict(
        reward=log.reward[test],
        action=log.action[test],
        pscore=log.pscore[test],
        reward_hat=reward_hat,
        alpha=alpha,
        n_bootstrap=n_bootstrap,
        seed=seed,
    )
    grpo_probs = action_probabilities(policy, x[test])
    dist = bts_action_dist(load_bts_prior(root, campaign, log.n_actions), n_sim=n_sim, seed=seed, len_list=log.len_list)
    bts_probs = obd_target_probs(dist, log.position[test])
    by_estimator = {m: estimate_value(m, target_probs=grpo_probs, **common).to_dict() for m in ESTIMATORS}
    grpo = by_estimator[method]
    bts = estimate_value(method, target_probs=bts_probs, **common).to_dict()
    bts["on_policy_value"] = bts_log.on_policy_value
    improvement = estimate_improvement(method, target_probs=grpo_probs, **common).to_dict()
    return {
        "campaign": campaign,
        "method": method,
        "n_train": len(train),
        "n_test": len(test),
        "outcome_model": outcome_model,
        "grpo_config": config.model_dump(mode="json"),
        "policies": {
            "grpo": grpo,
            "random": _mean_ci(log.reward[test], alpha),
            "bts": bts,
        },
        "improvement_over_random": improvement,
        "grpo_by_estimator": by_estimator,
        "policy_concentration": {
            "mean_max_prob": float(grpo_probs.max(1).mean()),
            "distinct_top_items": int(len(np.unique(grpo_probs.argmax(1)))),
        },
        "training": {"steps": summary["steps"], "final_model_reward": summary["last_metrics"].get("reward_mean")},
        "seconds": time.perf_counter() - t0,
    }
