"""GRADE on your own ranking log: ``grpokit fusion learn CONFIG --log LOG --schema SCHEMA --out RUN_DIR``.

1. **split**: the log's requests are split (seeded by ``fusion.seed``) into a training part and a
   held-out part (``scenario.holdout_fraction``) that only the final comparison reads;
2. **baselines** on the training part: ``static_default`` (``scenario.default_weights``) and
   ``static_tuned`` (CMA-ES or random search on the composite reward over the training requests),
   ``static_per_segment`` when the log has a segment column;
3. **stage 1**: LambdaLoss on the training requests, relevance log(1 + posterior utility of each
   logged candidate), utility = Σ_label a_label · label;
4. **stage 2**: GRPO with the composite reward replayed by the offline auction
   (:class:`~grpokit.ranking.logged.LoggedRankingScenario`) and KL to the frozen stage-1 policy;
5. **comparison** on the held-out requests, by the offline auction: per policy the discounted
   labels per thousand requests, the posterior per request, NDCG@k, GAUC, per segment; and the
   paired difference of the posterior against ``static_default`` and ``static_tuned`` with a 95 %
   normal confidence interval over requests. The offline auction judges rankings that promote
   unshown candidates conservatively (they have no label): read the comparison as a lower bound
   for such policies, and confirm a promotion with an online A/B test.

Writes ``policy.pt`` (loadable with :func:`grpokit.policy.io.load_policy`; its metadata names the
request features and tasks), ``summary.json``, ``config.toml``, ``metrics.jsonl``.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import torch

from grpokit.atomic import atomic_write_json
from grpokit.config import RunConfig, config_to_toml
from grpokit.grpo.trainer import GRPOTrainer
from grpokit.ranking.composite import composite_objective
from grpokit.ranking.grade import _mean_weights
from grpokit.ranking.logged import LoggedRankingConfig, LoggedRankingScenario
from grpokit.runner import build_policy

__all__ = ["learn_fusion_from_log", "split_log"]


def split_log(log, holdout_fraction: float, seed: int):
    """``(train, holdout)`` sub-logs: a seeded random split of the requests."""
    r = len(log)
    n_hold = int(round(holdout_fraction * r))
    if n_hold < 2 or r - n_hold < 2:
        raise ValueError(f"the log has {r} requests: too few to hold out {holdout_fraction:.0%} and still train "
                         "(need at least 2 requests on each side)")
    perm = torch.randperm(r, generator=torch.Generator().manual_seed(seed))
    return log.select(perm[n_hold:].sort().values), log.select(perm[:n_hold].sort().values)


def _finite_or_none(x) -> float | None:
    """A float, or None (JSON null) where it is NaN: GAUC is undefined when no request has both classes."""
    v = float(x)
    return v if math.isfinite(v) else None


def _paired_ci(diff: torch.Tensor) -> dict:
    """Mean of per-request differences with a 95 % normal confidence interval."""
    d = diff.double()
    m, se = float(d.mean()), float(d.std() / math.sqrt(len(d)))
    return {"mean": m, "ci_low": m - 1.959964 * se, "ci_high": m + 1.959964 * se, "se": se}


def _compare(scenario: LoggedRankingScenario, weights: dict[str, torch.Tensor]) -> dict:
    """Offline-auction metrics of each policy's per-request weights ``[B, K]`` on the held-out requests."""
    from grpokit.ranking.auction import gauc
    from grpokit.ranking.fusion import fuse

    ctx = scenario.contexts()
    click = "click" if "click" in scenario.label_names else scenario.label_names[0]
    out, posterior = {}, {}
    for name, w in weights.items():
        w = scenario._weights(ctx, w)  # [B, 1, K]
        res = scenario.auction(ctx, w)
        post = scenario._posterior(res)[:, 0]
        posterior[name] = post
        fused = fuse(scenario.inputs, w, scenario.config.fusion)[:, 0]
        per_segment = {}
        for g, gname in enumerate(scenario.group_names):
            rows = ctx.group == g
            per_segment[gname] = float(post[rows].double().mean()) if bool(rows.any()) else None
        out[name] = {
            "per_thousand": {lbl: 1000.0 * float(res[lbl][:, 0].double().mean()) for lbl in scenario.label_names},
            "posterior": float(post.double().mean()),
            "ndcg": float(res["ndcg"][:, 0].double().mean()),
            "gauc": _finite_or_none(gauc(fused, scenario.labels[..., scenario.label_names.index(click)], scenario.mask)),
            "per_segment": per_segment,
            "mean_weights": [float(x) for x in w[:, 0].double().mean(0)],
        }
    for name in out:
        for base in ("static_default", "static_tuned"):
            if base in posterior and name != base:
                out[name][f"vs_{base}"] = _paired_ci(posterior[name] - posterior[base])
    return out


def learn_fusion_from_log(log, config: RunConfig, out_dir: str | Path, *, progress: bool = False) -> dict:
    """Train GRADE on a :class:`~grpokit.ranking.logs.RankingLog` and compare it offline (module docstring)."""
    from grpokit.policy.io import save_policy
    from grpokit.ranking.ltr import pretrain_fusion_policy
    from grpokit.ranking.tuning import tune_per_segment, tune_static_weights

    if not isinstance(config.scenario, LoggedRankingConfig):
        raise ValueError(f"grpokit fusion learn needs [scenario] name = \"logged_ranking\", got {config.scenario.name!r}")
    sc_cfg, fc = config.scenario, config.fusion
    out = Path(out_dir)
    if (out / "summary.json").exists():
        raise FileExistsError(f"{out} already holds a run: choose another --out")
    t0 = time.perf_counter()
    train_log, hold_log = split_log(log, sc_cfg.holdout_fraction, fc.seed)
    train, hold = LoggedRankingScenario(train_log, sc_cfg), LoggedRankingScenario(hold_log, sc_cfg)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.toml").write_text(config_to_toml(config))
    (out / "metrics.jsonl").write_text("")
    rw = dict(config.grpo.reward_weights)
    k_tasks = train.n_tasks
    weights: dict[str, torch.Tensor] = {"static_default": train.static_default_weights.expand(len(hold_log), -1)}
    n_tune = min(fc.tune_requests, len(train_log))
    tune_rows = torch.randperm(len(train_log), generator=torch.Generator().manual_seed(fc.seed + 53))[:n_tune]
    tune_ctx = train.contexts(tune_rows)
    tuned = tune_static_weights(composite_objective(train, tune_ctx, rw, fc.seed), k_tasks, method=fc.tune_method,
                                budget=fc.tune_budget, seed=fc.seed).best_weights.float()
    weights["static_tuned"] = tuned.expand(len(hold_log), -1)
    per_seg = None
    if train.n_groups > 1:
        objs = {}
        for g, gname in enumerate(train.group_names):
            rows = tune_rows[tune_ctx.group == g]
            if len(rows):
                objs[gname] = composite_objective(train, train.contexts(rows), rw, fc.seed)
        per_seg = tune_per_segment(objs, k_tasks, method=fc.tune_method, budget=fc.tune_budget, seed=fc.seed)
        table = torch.stack([torch.as_tensor(per_seg.get(gname, tuned)).float() for gname in train.group_names])
        weights["static_per_segment"] = table[hold.contexts().group]

    torch.manual_seed(config.grpo.seed)
    policy = build_policy(config, train)
    utility = sum(a * train.labels[..., train.label_names.index(name)] for name, a in train.posterior_coef.items())
    stage1 = pretrain_fusion_policy(
        policy, train.features, train.inputs, torch.log1p(utility.clamp_min(0)), train.mask,
        steps=fc.pretrain_steps, lr=fc.pretrain_lr, sigma=fc.pretrain_sigma, k=train.k, seed=fc.seed,
        fusion=sc_cfg.fusion, group=train.contexts().group if config.policy.group_embedding_dim > 0 else None,
    ) if fc.pretrain_steps > 0 else None
    reference = copy.deepcopy(policy)
    trainer = GRPOTrainer(policy, train, config.grpo, reference=reference, out_dir=out, progress=progress)
    trainer.summary_file = "train_summary.json"
    t_train = time.perf_counter()
    trainer.train()
    policy = trainer.policy.cpu()
    train_seconds = time.perf_counter() - t_train
    hold_ctx = hold.contexts()
    weights["grade"] = _mean_weights(policy, hold_ctx.obs, hold_ctx.group)
    policies = _compare(hold, weights)
    save_policy(policy, out / "policy.pt", metadata={"feature_names": train.feature_names, "tasks": train.tasks,
                                                     "segments": train.group_names, "fusion": sc_cfg.fusion,
                                                     "transforms": sc_cfg.transforms})
    summary = {
        "scenario": "logged_ranking",
        "requests": {"train": len(train_log), "holdout": len(hold_log)},
        "seconds": time.perf_counter() - t0,
        "training": {"train_seconds": train_seconds, "steps": config.grpo.steps,
                     **({"stage1_ndcg_before": stage1["ndcg_before"], "stage1_ndcg_after": stage1["ndcg_after"]} if stage1 else {})},
        "posterior": train.posterior_coef,
        "reward_weights": rw,
        "static_tuned_weights": [float(x) for x in tuned],
        "static_per_segment_weights": None if per_seg is None else {g: [float(x) for x in w] for g, w in per_seg.items()},
        "policies": policies,
        "policy_path": str(out / "policy.pt"),
    }
    atomic_write_json(out / "summary.json", summary)
    return summary
