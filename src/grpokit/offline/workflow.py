"""Bring-your-own-logs workflow: learn a policy from a log, then gate it on a (held-out) log.

``learn_from_log``: split the log into training and held-out rows; fit the policy's
:class:`~grpokit.policy.features.FeatureEncoder` (standardized numbers, 0/1 booleans, one-hot
categories) on the training rows; a cross-fitted outcome model r̂(x, a) on the encoded features;
GRPO on the training contexts with r̂ as the reward of each sampled action (P-GRPO preference
groups = the log's group column when it has one); then, on the held-out rows, the learned policy
next to the best single action and the logging policy (off-policy values with CIs), a
degeneration check and the report. The policy is saved with its encoder, so it decides from raw
rows. ``evaluate_on_log``: the *served* rule of a saved policy, q = (1 − ε)·π + ε/A, on another
log collected by the current policy: an off-policy estimate of its value and the deployment
verdict of :func:`grpokit.offline.gate.deployment_gate`, overall and per group.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grpokit.config import GRPOConfig, PolicyConfig
from grpokit.environment import environment_info
from grpokit.offline.estimators import _Prepared
from grpokit.offline.gate import deployment_gate
from grpokit.offline.learn import action_probabilities, learn_from_outcome_model
from grpokit.offline.outcome import OutcomeModel
from grpokit.offline.schema import LoggedDecisions

__all__ = ["learn_from_log", "fit_policy_on_log", "LogFit", "cohort_treated_share", "evaluate_on_log", "fit_encoder", "compare_to", "degeneration", "DEFAULT_ADVANTAGE"]

NEEDS_MODEL = ("dm", "dr", "sndr")
#: learn's advantage when the config does not name one (benchmarks/learn_defaults.py, BENCHMARKS.md)
DEFAULT_ADVANTAGE = "grpo"
#: degeneration thresholds: mean entropy below this share of log(A), or frac_zero_std above this
ENTROPY_FLOOR = 0.05
ZERO_STD_CEILING = 0.9
CONSTANT_SHARE = 0.98


def _rewards(log: LoggedDecisions) -> np.ndarray:
    if log.reward is None:
        raise ValueError(
            "the log has no reward column; set the schema's reward (or combine its outcomes into one)"
        )
    return log.reward


def fit_encoder(log: LoggedDecisions, rows: np.ndarray | None = None, max_categories: int = 20):
    """A :class:`~grpokit.policy.features.FeatureEncoder` fitted on the log's raw features (at ``rows``)."""
    from grpokit.policy.features import FeatureEncoder

    frame = log.feature_frame()
    cols = log.feature_columns
    if not cols:
        raise ValueError("the log has no feature columns: name them in the schema's features (or --features)")
    enc = FeatureEncoder(
        numeric=[c for c in cols if log.kind_of(c) == "number"],
        categorical=[c for c in cols if log.kind_of(c) == "category"],
        boolean=[c for c in cols if log.kind_of(c) == "bool"],
        max_categories=max_categories,
    )
    return enc.fit(frame if rows is None else frame.iloc[rows].reset_index(drop=True))


def _split(n: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0.0 <= holdout < 1.0:
        raise ValueError(f"holdout must be in [0, 1), got {holdout}")
    perm = np.random.default_rng(seed + 7919).permutation(n)
    n_hold = int(round(holdout * n))
    if holdout > 0 and (n_hold < 50 or n - n_hold < 50):
        raise ValueError(f"{n} rows are too few for a held-out split of {holdout:.0%} (need >= 50 rows on each side)")
    return np.sort(perm[n_hold:]), np.sort(perm[:n_hold])


def compare_to(
    target: np.ndarray, other: np.ndarray, *, reward, action, pscore, reward_hat, method: str = "dr",
    alpha: float = 0.05, clip: float | None = None,
) -> dict:
    """V(target) − V(other) on the same rows with a normal CI of the paired per-row terms.

    Both values come from the same estimator (``dr`` by default): d_i = ψ_i(target) − ψ_i(other),
    CI = mean(d) ± z_{1−α/2} · sd(d) / √n, where ψ are the estimator's per-row (influence) terms.
    """
    from scipy.stats import norm

    if method not in ("dr", "ips", "dm", "snips", "sndr"):
        raise ValueError(f"unknown method {method!r}")
    a = _Prepared(method, reward, action, pscore, target, reward_hat if method in NEEDS_MODEL else None, clip)
    b = _Prepared(method, reward, action, pscore, other, reward_hat if method in NEEDS_MODEL else None, clip)
    d = a.influence_terms(a.point()) - b.influence_terms(b.point())
    value = a.point() - b.point()
    half = float(norm.ppf(1 - alpha / 2)) * float(d.std(ddof=1)) / math.sqrt(len(d))
    return {"value": value, "ci_low": value - half, "ci_high": value + half, "method": method, "alpha": alpha}


def _value(target, *, reward, action, pscore, reward_hat, method, alpha, n_bootstrap, seed) -> dict:
    from grpokit.offline.estimators import estimate_value

    r = estimate_value(method, reward=reward, action=action, pscore=pscore, target_probs=target,
                       reward_hat=reward_hat if method in NEEDS_MODEL else None, alpha=alpha,
                       n_bootstrap=n_bootstrap, seed=seed)
    return {"value": r.value, "ci_low": r.ci_low, "ci_high": r.ci_high, "ess": r.diagnostics.get("ess")}


def _on_policy(reward: np.ndarray, alpha: float) -> dict:
    from scipy.stats import norm

    m = float(reward.mean())
    half = float(norm.ppf(1 - alpha / 2)) * float(reward.std(ddof=1)) / math.sqrt(len(reward))
    return {"value": m, "ci_low": m - half, "ci_high": m + half}


def degeneration(probs: np.ndarray, last_metrics: dict, labels: list[str]) -> dict:
    """Is the policy (nearly) constant? Entropy, frac_zero_std and the greedy decision mix, with a warning."""
    n_actions = probs.shape[1]
    ent = float(-(probs * np.log(np.clip(probs, 1e-12, 1))).sum(1).mean())
    share = probs.mean(0)  # the expected decision mix (argmax shares would call a uniform policy constant)
    top = int(share.argmax())
    zero = last_metrics.get("frac_zero_std")
    reasons = []
    if ent < ENTROPY_FLOOR * math.log(n_actions):
        reasons.append(f"entropy {ent:.3f} (of at most {math.log(n_actions):.3f})")
    if zero is not None and zero > ZERO_STD_CEILING:
        reasons.append(f"frac_zero_std {zero:.2f} (the G sampled actions were all the same)")
    constant = bool(share[top] >= CONSTANT_SHARE)
    warning = None
    if constant:
        # a (near) deterministic policy is fine when it personalizes; one decision for everybody is not
        warning = (f"the policy degenerated: it gives {labels[top]} to {100 * share[top]:.1f} % of customers"
                   + (f" ({', '.join(reasons)})" if reasons else "")
                   + ". Compare it with the best single action; if that is as good, the log may not support "
                   "personalization, else try grpo.advantage.name=\"pgrpo\", grpo.ent_coef=0.01 or fewer grpo.steps")
    return {"entropy": ent, "max_entropy": math.log(n_actions), "frac_zero_std": zero, "constant": constant,
            "top_action": labels[top], "top_share": float(share[top]), "converged": bool(reasons),
            "signals": reasons, "warning": warning}


def _mix(probs: np.ndarray, labels: list[str]) -> dict[str, float]:
    """Expected share of each decision: mean of π(a | x) over rows."""
    return {labels[a]: float(probs[:, a].mean()) for a in range(probs.shape[1])}


def _raw_design(log: LoggedDecisions, encoder) -> tuple[np.ndarray, list[str]]:
    """Features in raw units for the explanation tree: numbers as logged, 0/1, one column per category level."""
    frame = log.feature_frame()
    cols, names = [], []
    for f in encoder.fields:
        name = f["name"]
        if f["type"] == "category":
            values = frame[name].astype(str).to_numpy()
            for level in f["categories"]:
                cols.append((values == level).astype(np.float64))
                names.append(f"{name} = {level}")
        else:
            cols.append(frame[name].to_numpy(dtype=np.float64))
            names.append(name)
    return np.stack(cols, axis=1), names


def _per_group(log: LoggedDecisions, target: np.ndarray, reward_hat, method, alpha, n_bootstrap, seed) -> dict:
    out: dict = {}
    if log.group is None:
        return out
    labels = log.group_labels or list(range(int(log.group.max()) + 1))
    for code, label in enumerate(labels):
        rows = np.flatnonzero(log.group == code)
        if len(rows) < 20:
            out[str(label)] = {"n_rows": int(len(rows)), "skipped": "fewer than 20 rows"}
            continue
        g = deployment_gate(reward=log.reward[rows], action=log.action[rows], pscore=log.pscore[rows],
                            target_probs=target[rows], reward_hat=None if reward_hat is None else reward_hat[rows],
                            method=method, alpha=alpha, n_bootstrap=n_bootstrap, seed=seed)
        out[str(label)] = {"n_rows": int(len(rows)), "candidate": g["candidate"], "current": g["current"],
                           "improvement": g["improvement"], "verdict": g["verdict"]}
    return out


def _learned_config(config: GRPOConfig | None, seed: int, has_groups: bool) -> GRPOConfig:
    """The user's config, with learn's default advantage when it names none."""
    config = config or GRPOConfig(device="cpu", seed=seed)
    if "advantage" not in config.model_fields_set:
        adv = config.advantage.model_copy(update={"name": DEFAULT_ADVANTAGE})
        config = config.model_copy(update={"advantage": adv})
    return config


def cohort_treated_share(group: np.ndarray, action: np.ndarray, control: int = 0) -> np.ndarray:
    """``[n]``: the share of the *other* units of each row's cohort that got an action other than ``control``.

    t_i = (Σ_{j in c(i)} [a_j ≠ control] − [a_i ≠ control]) / (n_c − 1) (0 for a cohort of one):
    the exposure of unit i to its peers' treatment, the quantity spillover acts through.
    """
    group = np.asarray(group, dtype=np.int64)
    treated = (np.asarray(action) != control).astype(np.float64)
    size = np.bincount(group)
    total = np.bincount(group, weights=treated, minlength=len(size))
    peers = size[group] - 1
    return np.where(peers > 0, (total[group] - treated) / np.maximum(peers, 1), 0.0)


@dataclass
class LogFit:
    """What :func:`fit_policy_on_log` learned: the policy, its encoder, the outcome model and GRPO's reward table."""

    policy: object
    encoder: object
    model: OutcomeModel
    table: np.ndarray  #: [n, A] GRPO's reward of every action for every training row
    x: np.ndarray  #: [n, d] the encoded training features
    config: GRPOConfig
    allowed: np.ndarray | None
    never: list[str]
    logged: np.ndarray
    summary: dict
    interference: dict | None = None

    def reward_hat(self, log: LoggedDecisions, x: np.ndarray) -> np.ndarray:
        """``[n, A]``: the outcome model's r̂(x, a) on another log's rows (their own cohort exposure if modeled)."""
        if self.interference is None:
            return self.model.predict(x)
        t = cohort_treated_share(log.group, log.action)
        return self.model.predict(np.column_stack([x, t]))


def _peer_credit(model: OutcomeModel, x: np.ndarray, t: np.ndarray, action: np.ndarray, group: np.ndarray,
                 delta: float = 0.05) -> np.ndarray:
    """Per cohort: P_c = mean_{j in c} ∂r̂(x_j, a_j, t)/∂t (central difference ± ``delta``).

    Treating one more unit of a cohort raises each peer's exposure by 1/(n_c − 1), so the n_c − 1
    peers gain about P_c in all: GRPO credits a treatment with r̂(x_i, a, t_i) + [a ≠ control] · P_c.
    """
    rows = np.arange(len(x))
    up = model.predict(np.column_stack([x, np.clip(t + delta, 0, 1)]))[rows, action]
    down = model.predict(np.column_stack([x, np.clip(t - delta, 0, 1)]))[rows, action]
    span = np.clip(t + delta, 0, 1) - np.clip(t - delta, 0, 1)
    slope = (up - down) / np.where(span > 0, span, 1.0)
    size = np.bincount(group)
    return np.bincount(group, weights=slope, minlength=len(size)) / np.maximum(size, 1)


def _assumption_line(info: dict | None) -> str:
    """What the held-out values assume about interference, in one line."""
    if info is None:
        return ("the held-out values assume no interference: a customer's outcome depends on its own decision only "
                "(no spillover within groups); if offers spread by word of mouth, judge the policy with a "
                "group-randomized pilot (--interference models the group's treated share)")
    return (f"interference modeled through the group's treated share, which ranges {info['share_min']:.2f}-"
            f"{info['share_max']:.2f} in this log (sd {info['share_sd']:.3f}); the held-out values still score each "
            "row at its logged exposure, not at the exposure the new policy would create")


def fit_policy_on_log(
    log: LoggedDecisions,
    *,
    outcome_model: str = "gbm",
    outcome_backend: str = "local",
    config: GRPOConfig | None = None,
    policy_config: PolicyConfig | None = None,
    seed: int = 0,
    use_groups: bool = True,
    progress: bool = False,
    out_dir: str | Path | None = None,
    on_stage=None,
    allow_unlogged: bool = False,
    interference: bool = False,
    reward_components: list[str] | None = None,
    improvement_reference: str = "control",
) -> LogFit:
    """The one learner from a log (``grpokit learn`` and ``grpokit run --set evaluation.train_on=logs``).

    Encoder fitted on ``log``'s rows; a cross-fitted outcome model r̂(x, a); GRPO on the logged
    contexts with r̂ as the reward of each sampled action, learn's default advantage
    (:data:`DEFAULT_ADVANTAGE`) unless the config names one, P-GRPO preference groups = the log's
    group column (one global group without it), never-logged actions masked unless ``allow_unlogged``.

    ``interference`` (needs a group column): the outcome model also sees t_i, the share of the
    unit's cohort treated (:func:`cohort_treated_share`), and GRPO's reward of a treatment adds the
    cohort's peer credit P_c (:func:`_peer_credit`). A log whose cohorts were all treated at about
    the same rate (a unit-randomized A/B test) cannot identify the effect of t: ``interference``
    in the result reports the spread of t the log offers.

    ``reward_components`` / ``improvement_reference``: GRPO's reward r̂ plus group-relative parts
    from the predicted improvement over a reference action, cohorts = the log's group column
    (:mod:`grpokit.offline.learn`; weights in ``config.reward_weights``).
    """
    from grpokit.offline.learn import check_learn_rewards, check_reference, reference_reward

    stage = on_stage or (lambda text: None)
    _rewards(log)
    labels = [str(a) for a in (log.action_labels or range(log.n_actions))]
    components = check_learn_rewards(reward_components, (config.reward_weights if config else {}),
                                     use_groups and log.group is not None)
    check_reference(improvement_reference, labels)
    stage("fitting the feature encoder")
    encoder = fit_encoder(log)
    x = encoder.transform(log.feature_frame())
    design, info, t = x, None, None
    if interference:
        if log.group is None:
            raise ValueError("interference needs a group (cohort) column: peers' treatment acts within a cohort")
        t = cohort_treated_share(log.group, log.action)
        design = np.column_stack([x, t])
    stage(f"fitting the outcome model ({outcome_model}, 5-fold cross-fit on {len(log):,} rows)")
    model = OutcomeModel(log.n_actions, outcome_model, seed=seed, backend=outcome_backend).fit(design, log.action, log.reward)
    table = model.predict_crossfit()
    if interference:
        credit = _peer_credit(model, x, t, log.action, log.group)
        table = table + np.where(np.arange(log.n_actions) != 0, 1.0, 0.0)[None, :] * credit[log.group][:, None]
        gl = log.group_labels or list(range(len(credit)))
        info = {"feature": "cohort_treated_share", "control": labels[0],
                "share_min": float(t.min()), "share_max": float(t.max()), "share_sd": float(t.std()),
                "peer_credit_per_cohort": {str(gl[c]): float(credit[c]) for c in range(len(credit))}}
    groups = log.group if (use_groups and log.group is not None) else None
    n_groups = len(log.group_labels) if groups is not None else None
    config = _learned_config(config, seed, groups is not None)
    if config.advantage.name == "pgrpo" and groups is None:
        groups, n_groups = np.zeros(len(log), dtype=np.int64), 1  # one preference group: a global history
    logged = np.bincount(log.action, minlength=log.n_actions) > 0
    never = [labels[a] for a in range(log.n_actions) if not logged[a]]
    allowed = None if (allow_unlogged or not never) else logged
    stage(f"GRPO ({config.advantage.name}, {config.steps} steps)")
    policy, summary = learn_from_outcome_model(x, table, config, policy_config, group=groups, n_groups=n_groups,
                                               progress=progress, out_dir=out_dir, allowed=allowed,
                                               reward_components=components,
                                               reference=reference_reward(table, improvement_reference, log.action, labels))
    return LogFit(policy=policy, encoder=encoder, model=model, table=table, x=x, config=config, allowed=allowed,
                  never=never, logged=logged, summary=summary, interference=info)


def learn_from_log(
    log: LoggedDecisions,
    out_dir: str | Path,
    *,
    outcome_model: str = "gbm",
    outcome_backend: str = "local",
    config: GRPOConfig | None = None,
    policy_config: PolicyConfig | None = None,
    seed: int = 0,
    holdout: float = 0.3,
    method: str = "dr",
    alpha: float = 0.05,
    n_bootstrap: int = 500,
    use_groups: bool = True,
    progress: bool = False,
    report: bool = True,
    tree_depth: int = 3,
    on_stage=None,
    allow_unlogged: bool = False,
    interference: bool = False,
    reward_components: list[str] | None = None,
    improvement_reference: str = "control",
    cohorts=None,
) -> dict:
    """Train a policy on ``log`` (its training rows), judge it on the held-out rows, save it.

    ``cohorts`` (a ``[cohorts]`` section, :class:`~grpokit.config.CohortsConfig`): with method
    kmeans | gmm the cohort model is fitted on the training rows and the discovered cohorts replace
    the group column everywhere (P-GRPO groups, group embedding, per-cohort tables); the policy
    file carries the model (``metadata["cohort_model"]``) so new rows are assigned the same way.

    Actions the training rows never show get no probability (their value would be the outcome
    model's extrapolation alone) unless ``allow_unlogged``; either way they are listed in the
    summary's ``never_logged_actions``.

    Writes ``out_dir/policy.pt`` (network + encoder + metadata), ``out_dir/training/metrics.jsonl``
    and (``report``) ``out_dir/report.html``; returns the summary (see docs/offline.md).
    ``on_stage(text)`` is called as each stage starts (progress for the CLI). ``interference``: see
    :func:`fit_policy_on_log`.
    """
    from grpokit.policy.io import save_policy

    stage = on_stage or (lambda text: None)
    _rewards(log)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = [str(a) for a in (log.action_labels or range(log.n_actions))]
    train, hold = _split(len(log), holdout, seed)
    tr, ho = log.subset(train), (log.subset(hold) if len(hold) else None)
    tr, ho, cohort_model = _discovered_cohorts(cohorts, tr, ho, stage)
    fit = fit_policy_on_log(tr, outcome_model=outcome_model, outcome_backend=outcome_backend, config=config, policy_config=policy_config, seed=seed,
                            use_groups=use_groups, progress=progress, out_dir=out / "training", on_stage=stage,
                            allow_unlogged=allow_unlogged, interference=interference,
                            reward_components=reward_components, improvement_reference=improvement_reference)
    policy, encoder, model, table, config = fit.policy, fit.encoder, fit.model, fit.table, fit.config
    x_tr, allowed, never, summary, logged = fit.x, fit.allowed, fit.never, fit.summary, fit.logged
    metadata = {
        "feature_names": encoder.names,
        "n_actions": int(log.n_actions),
        "action_labels": labels,
        "outcome_model": outcome_model,
        "reward": log.schema.reward,
        "reward_unit": log.schema.reward_unit,
        "advantage": config.advantage.name,
        "trained_on_rows": int(len(tr)),
        **_cohort_metadata(cohort_model, tr, use_groups),
    }
    save_policy(policy, out / "policy.pt", metadata, encoder=encoder)

    probs_tr = action_probabilities(policy, x_tr, _embedded(policy, tr))
    best_code = int(np.where(logged | (allowed is None), table.mean(0), -np.inf).argmax())
    result: dict = {
        "n_rows": len(log),
        "n_train": int(len(tr)),
        "n_holdout": int(len(hold)),
        "n_actions": int(log.n_actions),
        "action_labels": labels,
        "outcome_model": outcome_model,
        "reward": log.schema.reward,
        "reward_unit": log.schema.reward_unit,
        "features": encoder.fields,
        "roles": log.roles,
        "advantage": config.advantage.name,
        "preference_groups": None if tr.group is None or not use_groups else tr.schema.group,
        "cohorts": _cohorts_summary(cohort_model, tr),
        "model_value_of_policy": float((probs_tr * table).sum(1).mean()),
        "model_value_of_logging": float(tr.reward.mean()),
        "model_value_of_best_action_per_row": float(table.max(1).mean()),
        "best_single_action": labels[best_code],
        "never_logged_actions": never,
        "never_logged_get_mass": bool(never) and allowed is None,
        "interference": fit.interference,
        "off_policy_assumption": _assumption_line(fit.interference),
        "training": {"steps": summary["steps"], "last_metrics": summary["last_metrics"]},
        "policy_path": str(out / "policy.pt"),
        "grpo_config": config.model_dump(mode="json"),
        "reward_components": list(reward_components or []) or ["reward"],
        "improvement_reference": improvement_reference if reward_components else None,
        "environment": environment_info(),
    }
    eval_log = ho if ho is not None else tr
    x_ev = encoder.transform(eval_log.feature_frame())
    probs = action_probabilities(policy, x_ev, _embedded(policy, eval_log))
    result["degeneration"] = degeneration(probs, summary["last_metrics"], labels)
    result["decision_mix"] = _mix(probs, labels)
    result["logged_mix"] = {labels[a]: float((eval_log.action == a).mean()) for a in range(log.n_actions)}
    if eval_log.group is not None:
        gl = eval_log.group_labels
        result["decision_mix_per_group"] = {str(gl[c]): _mix(probs[eval_log.group == c], labels)
                                            for c in range(len(gl)) if (eval_log.group == c).any()}
    if ho is not None:
        stage(f"held-out comparison on {len(ho):,} rows ({method}, {int(round(100 * (1 - alpha)))} % CIs)")
        rhat = fit.reward_hat(ho, x_ev)
        kw = dict(reward=ho.reward, action=ho.action, pscore=ho.pscore, reward_hat=rhat, method=method)
        single = np.zeros_like(probs)
        single[:, best_code] = 1.0
        result["holdout"] = {
            "method": method,
            "alpha": alpha,
            "learned": _value(probs, alpha=alpha, n_bootstrap=n_bootstrap, seed=seed, **kw),
            "best_single": {"action": labels[best_code],
                            **_value(single, alpha=alpha, n_bootstrap=n_bootstrap, seed=seed, **kw)},
            "logging": _on_policy(ho.reward, alpha),
            "learned_minus_best_single": compare_to(probs, single, alpha=alpha, **kw),
            "every_single_action": {labels[a]: float(rhat[:, a].mean()) for a in range(log.n_actions)},
        }
        gate = deployment_gate(reward=ho.reward, action=ho.action, pscore=ho.pscore, target_probs=probs,
                               reward_hat=rhat if method in NEEDS_MODEL else None, method=method, alpha=alpha,
                               n_bootstrap=n_bootstrap, seed=seed)
        result["holdout"]["gate"] = gate
        result["holdout"]["per_group"] = _per_group(ho, probs, rhat if method in NEEDS_MODEL else None, method,
                                                    alpha, n_bootstrap, seed)
        diff = result["holdout"]["learned_minus_best_single"]
        if diff["ci_low"] <= 0:
            result["verdict_line"] = (
                f"not better than the best single action: giving everyone {labels[best_code]} is as good "
                f"(learned − {labels[best_code]} = {diff['value']:+.3f} [{diff['ci_low']:+.3f}, {diff['ci_high']:+.3f}] "
                f"{log.schema.reward_unit or 'per decision'} on {len(ho):,} held-out rows)")
        else:
            result["verdict_line"] = (
                f"personalized policy beats the best single action ({labels[best_code]}) by {diff['value']:+.3f} "
                f"[{diff['ci_low']:+.3f}, {diff['ci_high']:+.3f}] {log.schema.reward_unit or 'per decision'} "
                f"on {len(ho):,} held-out rows")
        result["uplift_curve"] = uplift_curve(probs, ho.reward, ho.action, ho.pscore, rhat)
    raw_x, raw_names = _raw_design(eval_log, encoder)
    if len(raw_x) >= 10:
        from grpokit.evaluation.explain import explain_policy

        stage("explaining the policy (decision tree in raw units)")
        result["explanation"] = explain_policy(raw_x, probs.argmax(1), raw_names, labels, max_depth=tree_depth,
                                               seed=seed)
    if report:
        from grpokit.evaluation.offline_report import write_offline_report

        write_offline_report(out / "report.html", result, kind="learn", curves=_curves(out / "training"))
        result["report_path"] = str(out / "report.html")
    return result


def _discovered_cohorts(cfg, train: LoggedDecisions, hold: LoggedDecisions | None, stage):
    """``(train, hold, model)``: both logs regrouped by cohorts discovered on ``train`` ([cohorts] kmeans
    | gmm), or unchanged with ``model`` None (see :func:`grpokit.groups.logs.learn_cohorts`)."""
    from grpokit.groups.logs import learn_cohorts

    if cfg is not None and cfg.method != "column":
        stage(f"discovering cohorts ({cfg.method}, k = {cfg.k})")
    return learn_cohorts(cfg, train, hold)


def _cohort_metadata(model: dict | None, train: LoggedDecisions, use_groups: bool) -> dict:
    """What a saved policy needs to read cohorts: the group labels, and the discovered cohort model."""
    out: dict = {}
    if train.group is not None and use_groups:
        out["group_labels"] = [str(g) for g in train.group_labels]
    if model is not None:
        out["cohort_model"] = model
    return out


def _cohorts_summary(model: dict | None, train: LoggedDecisions) -> dict | None:
    from grpokit.groups.logs import cohorts_block

    return cohorts_block(model, train)


def _policy_cohorts(dp, log: LoggedDecisions, result: dict) -> LoggedDecisions:
    """``log`` regrouped by the cohort model the policy carries (its per-cohort tables then use the
    cohorts the policy was trained and decides with); unchanged for a policy without one."""
    if getattr(dp, "cohort_model", None) is None:
        return log
    from grpokit.groups.logs import cohorts_block, regroup_log

    log = regroup_log(log, dp.cohort_model)
    result["cohorts"] = cohorts_block(dp.cohort_model, log)
    return log


def _embedded(policy, log: LoggedDecisions) -> np.ndarray | None:
    """The group codes a policy with a group embedding needs (None for one without)."""
    return log.group if getattr(policy.torso, "embedding", None) is not None else None


def _curves(training_dir: Path) -> dict[str, list[tuple[float, float]]]:
    path = training_dir / "metrics.jsonl"
    if not path.is_file():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    out: dict[str, list[tuple[float, float]]] = {}
    for key in ("reward_mean", "entropy", "frac_zero_std"):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        if pts:
            out[key] = pts
    return out


def uplift_curve(target: np.ndarray, reward, action, pscore, reward_hat, n_points: int = 21) -> dict:
    """Qini-style gain curve: switch the customers with the largest predicted gain first.

    Rows are sorted by the model's predicted gain u_i = Σ_a π(a|x_i) r̂(x_i, a) − r̂(x_i, a_i) (new
    decision vs the logged one); switching the top fraction k to the new policy and keeping the
    current decision for the rest is worth, per customer of the whole base,
    G(k) = (1/n) Σ_{i in top k} (ψ_i − r_i) with ψ_i the DR term of the new policy. G(1) is the DR
    improvement; a straight line from 0 to G(1) is what random targeting gives.
    """
    n = len(reward)
    rows = np.arange(n)
    dm = (target * reward_hat).sum(1)
    psi = dm + target[rows, action] / pscore * (reward - reward_hat[rows, action])
    gain = psi - reward
    order = np.argsort(-(dm - reward_hat[rows, action]), kind="stable")
    cum = np.concatenate([[0.0], np.cumsum(gain[order])]) / n
    ks = np.linspace(0, 1, n_points)
    idx = np.round(ks * n).astype(int)
    return {"fraction": ks.tolist(), "gain": cum[idx].tolist(), "random": (ks * cum[-1]).tolist()}


def _rows_for(policy, log: LoggedDecisions):
    """The raw rows the deployed policy's encoder needs, from the log's features."""
    return log.feature_frame()


def evaluate_on_log(
    log: LoggedDecisions,
    policy_path: str | Path,
    *,
    method: str = "dr",
    margin: float = 0.0,
    alpha: float = 0.05,
    outcome_model: str = "gbm",
    outcome_backend: str = "local",
    n_bootstrap: int = 1000,
    seed: int = 0,
    clip: float | None = None,
    epsilon: float = 0.0,
    mode: str = "sample",
) -> dict:
    """The deployment gate of the saved policy's served rule on ``log`` (collected by the current policy).

    The candidate is the rule ``grpokit score`` serves: q = (1 − ``epsilon``)·π + ``epsilon``/A
    (π one-hot at its argmax for ``mode="greedy"``), computed from the log's raw feature columns by
    the policy's own encoder (a missing field, or a value of the wrong type, is an error naming it).
    """
    from grpokit.policy.deployed import DeployedPolicy
    from grpokit.policy.features import FeatureError

    reward = _rewards(log)
    dp = DeployedPolicy.load(policy_path)
    if dp.kind != "categorical":
        raise ValueError(f"{policy_path} is a {dp.kind} policy; evaluate handles categorical (discrete) policies")
    if dp.n_actions != log.n_actions:
        raise ValueError(
            f"the policy chooses among {dp.n_actions} actions but the log has n_actions = {log.n_actions}"
            + (f"; if the log simply never shows actions {list(range(log.n_actions, dp.n_actions))}, declare the "
               f"action set: a schema file with n_actions = {dp.n_actions} (--schema FILE), or the action labels"
               if dp.n_actions > log.n_actions else "")
        )
    if log.action_labels is not None and dp.metadata.get("action_labels"):
        mine = [str(a) for a in log.action_labels]
        if mine != dp.action_labels:
            raise ValueError(f"the policy's actions {dp.action_labels} differ from the log's {mine} (same order needed)")
    if dp.encoder is None:
        raise ValueError(f"{policy_path} has no feature names or encoder: it cannot read a log's columns")
    frame = _rows_for(dp, log)
    missing = [f for f in dp.encoder.names if f not in frame.columns]
    if missing:
        raise ValueError(
            f"the log lacks feature column(s) {missing} that the policy was trained on; "
            f"the log's features are {list(frame.columns)} (name them in the schema's features or --features)"
        )
    try:
        target = dp.served_probabilities(frame, epsilon=epsilon, mode=mode)
    except FeatureError as err:
        raise ValueError(f"the log's rows do not fit the policy's features: {err}") from None
    x = dp.encoder.transform(frame)
    reward_hat = None
    if method in NEEDS_MODEL:
        reward_hat = OutcomeModel(log.n_actions, outcome_model, seed=seed, backend=outcome_backend).fit(
            x, log.action, reward).predict_crossfit()
    kw = dict(method=method, margin=margin, alpha=alpha, n_bootstrap=n_bootstrap, seed=seed, clip=clip)
    result = deployment_gate(
        reward=reward, action=log.action, pscore=log.pscore, target_probs=target, reward_hat=reward_hat, **kw
    )
    result["n_rows"] = len(log)
    result["policy_version"] = dp.version
    result["served_rule"] = {"epsilon": epsilon, "mode": mode}
    result["reward"] = log.schema.reward
    result["reward_unit"] = log.schema.reward_unit or dp.metadata.get("reward_unit")
    result["action_labels"] = dp.action_labels
    result["decision_mix"] = _mix(target, dp.action_labels)
    log = _policy_cohorts(dp, log, result)
    if log.group is not None:
        result["per_group"] = _per_group(log, target, reward_hat, method, alpha, n_bootstrap, seed)
        gl = log.group_labels
        result["decision_mix_per_group"] = {str(gl[c]): _mix(target[log.group == c], dp.action_labels)
                                            for c in range(len(gl)) if (log.group == c).any()}
    if reward_hat is not None:
        result["uplift_curve"] = uplift_curve(target, reward, log.action, log.pscore, reward_hat)
    if len(frame) >= 10:
        from grpokit.evaluation.explain import explain_policy

        raw_x, raw_names = _raw_design(log, dp.encoder) if hasattr(dp.encoder, "fields") else (None, None)
        if raw_x is not None:
            result["explanation"] = explain_policy(raw_x, dp.probabilities(frame).argmax(1), raw_names,
                                                   dp.action_labels, seed=seed)
    return result
