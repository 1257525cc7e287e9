"""GRADE end to end (arXiv 2510.07919): personalized multi-task fusion weights with Dirichlet GRPO.

``grpokit fusion run CONFIG --out RUN_DIR`` calls :func:`run_fusion` on the marketplace-search
simulator (``[scenario] name = "search"``):

1. **logs**: a production ranker with the business's static default weights logs
   ``fusion.log_requests`` requests (every candidate with the model's predictions; labels for the
   shown top-k);
2. **baselines**: ``static_default``; ``static_tuned``, one weight vector found by black-box search
   (CMA-ES or random search over the simplex) on the composite reward; ``static_per_segment``, one
   such vector per user type. With ``fusion.prior_weight_grid`` the composite's prior weight λ is
   chosen first: one static vector per λ, scored by posterior + rules on held-out requests
   (:func:`grpokit.ranking.composite.select_prior_weight`);
3. **stage 1**: learning-to-rank initialization of the policy's mean weights with LambdaLoss on the
   logged labels (relevance = log(1 + logged GMV));
4. **stage 2**: GRPO with the Dirichlet head (adaptive exploration), G weight vectors per request,
   the composite reward (posterior + prior + rules, weights ``grpo.reward_weights``) and KL to the
   frozen stage-1 policy (``grpo.beta``). With a prior-weight grid and ``prior_weight_select =
   "policy"`` (default) one GRADE is trained per λ (``RUN_DIR/prior_weight_<λ>/``) and the one
   whose mean weights earn the most held-out posterior + rules is kept;
5. **ablations** (each a full stage 1 + 2 run with one change): ``gaussian_softmax`` head,
   ``fixed_concentration``, ``posterior_only`` and ``prior_only`` rewards, ``no_stage1``;
6. **evaluation**: true CTR / CVR / OPM / GPM (simulator ground truth, position bias included) on
   ``fusion.eval_size`` fresh requests, overall and per user type, and offline-auction NDCG@k and
   GAUC on the logged requests.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from pathlib import Path

import torch

from grpokit.atomic import atomic_write_json
from grpokit.config import RunConfig, config_to_toml
from grpokit.environment import environment_info
from grpokit.grpo.trainer import GRPOTrainer
from grpokit.ranking.composite import composite_objective, holdout_scores, paired_se, select_prior_weight
from grpokit.runner import build_policy
from grpokit.scenarios.registry import scenario_from_config

__all__ = ["run_fusion", "ABLATIONS"]

ABLATIONS = ("gaussian_softmax", "fixed_concentration", "posterior_only", "prior_only", "no_stage1")


def _log_tensors(scenario, cfg) -> dict:
    """The production log as tensors: request features, transformed scores, labels, mask."""
    from grpokit.ranking.logs import RankingSchema, read_ranking_log

    df = scenario.simulate_log(cfg.log_requests, seed=cfg.seed + 31)
    features = list(scenario.feature_names)  # the request features, in the order of Contexts.obs
    schema = RankingSchema(features=features, segment="user_type", position=None)
    log = read_ranking_log(df, schema)
    scores = scenario._transform(log.scores)  # the ranker's view: the same transform as in simulation
    codes = torch.as_tensor([scenario.group_names.index(str(lbl)) for lbl in log.segment_labels])
    group = codes[torch.as_tensor(log.segment)]  # user type of each logged request, as scenario group ids
    return {"log": log, "features": log.features, "scores": scores, "labels": log.labels, "mask": log.mask,
            "group": group}


def _mean_weights(policy, features: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """The policy's deterministic (mean) weights ``[B, K]``; ``group`` feeds a group embedding if it has one."""
    with torch.no_grad():
        return policy.eval()(features, group).mode().float()


def _train_grade(config: RunConfig, scenario, log: dict, *, stage1: bool, progress: bool, out_dir=None):
    """Stage 1 (LambdaLoss) then stage 2 (GRPO with KL to the frozen stage-1 policy)."""
    from grpokit.ranking.ltr import pretrain_fusion_policy

    fc = config.fusion
    torch.manual_seed(config.grpo.seed)
    policy = build_policy(config, scenario)
    pre = None
    if stage1:
        pre = pretrain_fusion_policy(
            # relevance log1p(GMV): LambdaLoss gains are 2^rel − 1, which overflow on raw order values
            policy, log["features"], log["scores"], torch.log1p(log["labels"][..., 2]), log["mask"],
            steps=fc.pretrain_steps, lr=fc.pretrain_lr, sigma=fc.pretrain_sigma, k=scenario.k, seed=fc.seed,
            group=log["group"] if config.policy.group_embedding_dim > 0 else None,
        )
    reference = copy.deepcopy(policy)
    trainer = GRPOTrainer(policy, scenario, config.grpo, reference=reference, out_dir=out_dir, progress=progress)
    trainer.summary_file = "train_summary.json"  # summary.json is the pipeline's, written last
    t0 = time.perf_counter()
    summary = trainer.train()
    return trainer.policy.cpu(), {"stage1": pre, "train_seconds": time.perf_counter() - t0, "steps": summary["steps"]}


def _select_grade_by_holdout(config: RunConfig, scenario, log: dict, holdout, out: Path, progress: bool):
    """Train GRADE once per ``fusion.prior_weight_grid`` value (each in ``out/prior_weight_<λ>/``), score each
    policy's mean weights by the unbiased reward (posterior + rules, shared draws) on the held-out requests,
    and return the best policy, its training info and the evidence; its curves and checkpoint are copied to ``out``."""
    fc = config.fusion
    trained = []
    for lam in fc.prior_weight_grid:
        cfg = config.model_copy(deep=True)
        cfg.grpo.reward_weights = {**cfg.grpo.reward_weights, "prior": float(lam)}
        sub = out / f"prior_weight_{lam:g}"
        sub.mkdir(exist_ok=True)
        (sub / "metrics.jsonl").write_text("")
        pol, info = _train_grade(cfg, scenario, log, stage1=True, progress=progress, out_dir=sub)
        trained.append((float(lam), pol, info, sub))
    w = torch.stack([_mean_weights(pol, holdout.obs, holdout.group) for _, pol, _, _ in trained], dim=1)  # [B, M, K]
    means, per_req = holdout_scores(scenario, holdout, w, dict(config.grpo.reward_weights), fc.seed + 1)
    best = int(means.argmax())
    se = paired_se(per_req, best)
    lam, policy, info, sub = trained[best]
    for name in ("metrics.jsonl", "train_summary.json", "checkpoint.pt"):
        if (sub / name).exists():
            shutil.copyfile(sub / name, out / name)
    evidence = {
        "chosen": lam,
        "holdout_score": {f"{lam_i:g}": float(means[i]) for i, (lam_i, *_rest) in enumerate(trained)},
        "se_vs_chosen": {f"{lam_i:g}": float(se[i]) for i, (lam_i, *_rest) in enumerate(trained)},
        "mean_weights": {f"{lam_i:g}": [float(x) for x in w[:, i].double().mean(0)] for i, (lam_i, *_rest) in enumerate(trained)},
    }
    return policy, info, evidence


def _variant(config: RunConfig, name: str) -> tuple[RunConfig, bool]:
    """The config of one ablation, and whether it runs stage 1."""
    cfg = config.model_copy(deep=True)
    if name == "gaussian_softmax":
        cfg.policy.head = "gaussian_softmax"
        cfg.policy.head_params = {"init_std": 0.5}
    elif name == "fixed_concentration":
        cfg.policy.head_params = {k: v for k, v in cfg.policy.head_params.items()
                                  if k not in ("target_spread", "target_spread_final", "adapt_rate")}
    elif name == "posterior_only":
        cfg.grpo.reward_weights = {**cfg.grpo.reward_weights, "prior": 0.0, "rules": 0.0}
    elif name == "prior_only":  # the prior alone, in its own (GMV) units whatever the composite's prior weight
        cfg.grpo.reward_weights = {**cfg.grpo.reward_weights, "posterior": 0.0, "prior": 1.0, "rules": 0.0}
    elif name != "no_stage1":
        raise ValueError(f"unknown ablation {name!r}; choose from {list(ABLATIONS)}")
    return cfg, name != "no_stage1"


def _evaluate(scenario, contexts, weights: torch.Tensor, log: dict, log_weights: torch.Tensor | None) -> dict:
    """True metrics on fresh requests; offline-auction NDCG@k and GAUC on the logged requests."""
    from grpokit.ranking.auction import auction, gauc
    from grpokit.ranking.fusion import fuse

    true = scenario.true_metrics(contexts, weights)
    per_type = true.pop("per_type")
    out = {
        "true": {k: true[k] for k in ("ctr", "cvr", "opm", "gpm")},
        "per_type": {t: (None if m is None else {k: m[k] for k in ("ctr", "cvr", "opm", "gpm")}) for t, m in per_type.items()},
        "mean_weights": [float(x) for x in weights.double().mean(0)] if weights.ndim == 2 else [float(x) for x in weights],
    }
    out.update(_intervals(scenario, contexts, weights))
    if log_weights is None:  # no weights for the logged requests (the per-request oracle needs the truth)
        out["auction"] = {"ndcg": None, "gauc": None}
        return out
    res = auction(log_weights.unsqueeze(1), (log["scores"], log["labels"], log["mask"]), k=scenario.k,
                  label_names=["click", "order", "gmv"], relevance="gmv")
    fused = fuse(log["scores"], log_weights.unsqueeze(1))[:, 0]
    g = gauc(fused, log["labels"][..., 0], log["mask"])
    out["auction"] = {"ndcg": float(res["ndcg"].mean()), "gauc": float(g)}
    return out


def _intervals(scenario, contexts, weights: torch.Tensor, z: float = 1.959964) -> dict:
    """95 % normal intervals of true GPM / OPM over the evaluation requests (population sampling),
    overall (``ci``) and per user type (``per_type_ci``); the mean weights per user type; and the
    per-request values (``_per_request``, popped before the summary is written) for paired CIs."""
    exp = scenario.expected_outcomes(contexts, weights)
    per_req = {"gpm": 1000.0 * exp["gmv"][:, 0].double(), "opm": 1000.0 * exp["orders"][:, 0].double()}

    def ci(v: torch.Tensor):
        if len(v) < 2:
            return None
        m, se = float(v.mean()), float(v.std()) / len(v) ** 0.5
        return [m - z * se, m + z * se]

    w = weights.double() if weights.ndim == 2 else weights.double().expand(len(contexts), -1)
    per_type_ci, per_type_w = {}, {}
    for t, name in enumerate(scenario.group_names):
        rows = contexts.group == t
        if bool(rows.any()):
            per_type_ci[name] = {k: ci(v[rows]) for k, v in per_req.items()}
            per_type_w[name] = [float(x) for x in w[rows].mean(0)]
    return {"ci": {k: ci(v) for k, v in per_req.items()}, "per_type_ci": per_type_ci,
            "weights_per_type": per_type_w, "_per_request": per_req}


def _paired_change(per_req: dict, base: dict, z: float = 1.959964) -> dict:
    """Relative change against the base policy on the same requests with a 95 % paired interval:
    (mean(v − v_base) ± z·se) / mean(v_base) (the base mean taken as known)."""
    out = {}
    for k in ("gpm", "opm"):
        d = per_req[k] - base[k]
        m0 = float(base[k].mean())
        se = float(d.std()) / len(d) ** 0.5 if len(d) > 1 else float("nan")
        out[k] = [(float(d.mean()) - z * se) / m0, (float(d.mean()) + z * se) / m0]
    return out


def fusion_headline(summary: dict) -> list[str]:
    """GRADE against the tuned static weights (relative changes with paired CIs), and every ablation
    or baseline that beats GRADE on GPM or OPM."""
    pol = summary["policies"]
    g = pol.get("grade")
    if g is None:
        return []
    ci = g.get("vs_static_tuned_ci") or {}

    def rel(v) -> str:
        return f"{100 * v:+.2f} %"

    def rel_ci(k: str) -> str:
        c = ci.get(k)
        return f"[{rel(c[0])}, {rel(c[1])}]" if c else ""

    lines = [f"GRADE vs the tuned static weights: GPM {rel(g['gpm_vs_static_tuned'])} {rel_ci('gpm')}, "
             f"OPM {rel(g['opm_vs_static_tuned'])} {rel_ci('opm')} (95 % paired intervals, same requests)"]
    for metric, label in (("gpm", "GPM"), ("opm", "OPM")):
        better = [(n, b["true"][metric]) for n, b in pol.items() if n not in ("grade", "oracle")
                  and b["true"][metric] > g["true"][metric]]
        for n, v in sorted(better, key=lambda t: -t[1]):
            lines.append(f"{n} beats GRADE on {label}: {v:,.1f} vs {g['true'][metric]:,.1f} "
                         f"({rel(v / g['true'][metric] - 1.0)})")
    return lines


def fusion_sections(summary: dict, task_names: list[str], k: int) -> list[tuple[str, str]]:
    """The fusion page's tables: every metric per policy, OPM per user type, learned weights per user type."""
    from grpokit.evaluation.report import table_html

    pol = summary["policies"]
    rows = []
    for n, b in pol.items():
        ci = b.get("ci") or {}
        pc = b.get("vs_static_tuned_ci") or {}
        rows.append([n, (b["true"]["gpm"], *(ci.get("gpm") or [None, None])), (b["true"]["opm"], *(ci.get("opm") or [None, None])),
                     b["true"]["ctr"], b["true"]["cvr"], b["auction"].get("ndcg"), b["auction"].get("gauc"),
                     (b["gpm_vs_static_tuned"], *(pc.get("gpm") or [None, None])),
                     (b["opm_vs_static_tuned"], *(pc.get("opm") or [None, None]))])
    metrics = table_html(["policy", "GPM [95 % CI]", "OPM [95 % CI]", "CTR", "CVR", f"NDCG@{k} (auction)", "GAUC (auction)",
                          "GPM vs static_tuned", "OPM vs static_tuned"], rows,
                         ["raw", "num", "num", "pct", "pct", "num", "num", "rel", "rel"])
    types = list(dict.fromkeys(t for b in pol.values() for t in (b.get("per_type") or {})))

    def opm(b, t):
        m = (b.get("per_type") or {}).get(t)
        c = ((b.get("per_type_ci") or {}).get(t) or {}).get("opm")
        return None if m is None else ((m["opm"], *c) if c else m["opm"])

    opm_table = table_html(["policy", *types], [[n, *[opm(b, t) for t in types]] for n, b in pol.items()])
    show = [n for n in ("grade", "static_per_segment", "static_tuned") if n in pol]
    header = ["user type", *[f"{n}: {task}" for n in show for task in task_names]]
    wrows = [[t, *[w for n in show for w in ((pol[n].get("weights_per_type") or {}).get(t) or [None] * len(task_names))]]
             for t in types]
    weights = ("<p class='note'>mean fusion weight of each task over the user type's evaluation requests "
               "(GRADE personalizes per request; static_per_segment has one vector per type)</p>" + table_html(header, wrows))
    return [("All metrics per policy", "<p class='note'>true GPM / OPM (per thousand requests), CTR, CVR on the evaluation "
             "requests; NDCG and GAUC by the offline auction on the logged requests</p>" + metrics),
            ("OPM per user type", opm_table), ("Learned weights per user type", weights)]


def run_fusion(config: RunConfig, out_dir: str | Path, *, progress: bool = False) -> dict:
    """Baselines, GRADE and its ablations on the search simulator; writes summary.json and report.html."""
    from grpokit.evaluation.report import write_report
    from grpokit.ranking.tuning import tune_per_segment, tune_static_weights

    if config.scenario.name != "search":
        raise ValueError(f"grpokit fusion run needs [scenario] name = \"search\", got {config.scenario.name!r}")
    fc = config.fusion
    out = Path(out_dir)
    if (out / "summary.json").exists():
        raise FileExistsError(f"{out} already holds a run: choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.toml").write_text(config_to_toml(config))
    (out / "metrics.jsonl").write_text("")  # a rerun after a crash starts the curves afresh
    t_start = time.perf_counter()
    scenario = scenario_from_config(config.scenario)
    log = _log_tensors(scenario, fc)
    contexts = scenario.sample_contexts(fc.eval_size, torch.Generator().manual_seed(fc.seed + 97))
    k_tasks = scenario.n_tasks
    weights: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # name -> (eval weights, log weights)

    def static(name: str, w: torch.Tensor) -> None:
        weights[name] = (w.float(), w.float().expand(len(log["features"]), -1))

    static("static_default", scenario.static_default_weights)
    tune_ctx = scenario.sample_contexts(fc.tune_requests, torch.Generator().manual_seed(fc.seed + 53))
    rw = dict(config.grpo.reward_weights)
    selection = chosen = None
    if fc.prior_weight_grid:  # choose the prior's weight by held-out feedback (docs/fusion.md)
        holdout = scenario.sample_contexts(fc.holdout_requests, torch.Generator().manual_seed(fc.seed + 71))
        selection = select_prior_weight(scenario, tune_ctx, holdout, rw, fc.prior_weight_grid, method=fc.tune_method,
                                        budget=fc.tune_budget, seed=fc.seed)
        rw["prior"] = selection.weight  # the static baselines' prior weight
        best_weights = selection.weights[selection.weight]
    else:
        best_weights = tune_static_weights(composite_objective(scenario, tune_ctx, rw, fc.seed), k_tasks,
                                           method=fc.tune_method, budget=fc.tune_budget, seed=fc.seed).best_weights
    static("static_tuned", best_weights)
    per_obj = {}
    for t, tname in enumerate(scenario.group_names):
        rows = torch.nonzero(tune_ctx.group == t)[:, 0]
        per_obj[tname] = composite_objective(scenario, tune_ctx.index(rows), rw, fc.seed)
    per_seg = tune_per_segment(per_obj, k_tasks, method=fc.tune_method, budget=fc.tune_budget, seed=fc.seed)
    seg_table = torch.stack([torch.as_tensor(per_seg[t]).float() for t in scenario.group_names])
    weights["static_per_segment"] = (seg_table[contexts.group], seg_table[log["group"]])

    runs: dict[str, dict] = {}
    if selection is not None and fc.prior_weight_select == "policy":
        # one GRADE per prior weight; keep the one whose mean weights earn the most held-out feedback
        policy, info, chosen = _select_grade_by_holdout(config, scenario, log, holdout, out, progress)
        rw_grade = {**rw, "prior": chosen["chosen"]}
    else:
        rw_grade = rw
    config = config.model_copy(deep=True)
    config.grpo.reward_weights = rw_grade  # GRADE's reward; the ablations change one thing each from it
    if chosen is None:
        policy, info = _train_grade(config, scenario, log, stage1=True, progress=progress, out_dir=out)
    runs["grade"] = info
    weights["grade"] = (_mean_weights(policy, contexts.obs, contexts.group), _mean_weights(policy, log["features"], log["group"]))
    for name in fc.ablations:
        cfg, stage1 = _variant(config, name)
        pol, info = _train_grade(cfg, scenario, log, stage1=stage1, progress=False)
        runs[name] = info
        weights[name] = (_mean_weights(pol, contexts.obs, contexts.group), _mean_weights(pol, log["features"], log["group"]))
    if fc.oracle:
        oracle = scenario.oracle_actions(contexts)
        weights["oracle"] = (oracle, None)

    policies = {name: _evaluate(scenario, contexts, w_eval, log, w_log) for name, (w_eval, w_log) in weights.items()}
    base = policies["static_tuned"]["true"]
    base_req = policies["static_tuned"]["_per_request"]
    for block in policies.values():
        block["gpm_vs_static_tuned"] = block["true"]["gpm"] / base["gpm"] - 1.0
        block["opm_vs_static_tuned"] = block["true"]["opm"] / base["opm"] - 1.0
        block["vs_static_tuned_ci"] = _paired_change(block["_per_request"], base_req)
    per_request = {name: block.pop("_per_request") for name, block in policies.items()}
    summary = {
        "scenario": "search",
        "seconds": time.perf_counter() - t_start,
        "environment": environment_info(),
        "training": {name: {k: v for k, v in r.items() if k != "stage1"} | (
            {"stage1_ndcg_before": r["stage1"]["ndcg_before"], "stage1_ndcg_after": r["stage1"]["ndcg_after"]}
            if r.get("stage1") else {}) for name, r in runs.items()},
        "reward_weights": rw_grade,
        "prior_weight_selection": None if selection is None else {
            "select": fc.prior_weight_select,
            "chosen": rw_grade.get("prior", 1.0),
            "static": selection.as_dict(),
            "policy": chosen,
        },
        "static_tuned_weights": [float(x) for x in best_weights],
        "static_per_segment_weights": {t: [float(x) for x in per_seg[t]] for t in scenario.group_names},
        "policies": policies,
    }
    base_gpm = per_request["static_tuned"]["gpm"]
    report_policies = {}
    for name, b in policies.items():
        d = per_request[name]["gpm"] - base_gpm
        se = float(d.std()) / len(d) ** 0.5
        report_policies[name] = {
            "value": b["true"]["gpm"], "ci_low": b["ci"]["gpm"][0], "ci_high": b["ci"]["gpm"][1],
            "ci_kind": "95 % normal intervals over the evaluation requests",
            "per_group": {t: (m or {}).get("gpm") for t, m in b["per_type"].items()},
            "per_group_ci": {t: c["gpm"] for t, c in b["per_type_ci"].items() if c.get("gpm")},
        }
        if name != "static_tuned":
            report_policies[name]["vs_current"] = {"policy": "static_tuned", "difference": float(d.mean()),
                                                   "ci_low": float(d.mean()) - 1.959964 * se, "ci_high": float(d.mean()) + 1.959964 * se}
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()] if (out / "metrics.jsonl").exists() else []
    curves = {name: [(r["step"], r[f"reward/{name}"]) for r in rows if f"reward/{name}" in r] for name in ("posterior", "prior")}
    write_report(out / "report.html", title="grpokit fusion run: GRADE on marketplace search",
                 summary={"policies": report_policies}, curves=curves, headline=fusion_headline(summary),
                 value_label="true GMV per thousand requests (GPM)", cohort_label="user type",
                 sections=fusion_sections(summary, list(scenario.config.tasks), scenario.k),
                 notes=["values are true expected outcomes (simulator ground truth, position bias included) on "
                        f"{fc.eval_size:,} fresh evaluation requests (fusion.seed {fc.seed}); {summary['seconds']:.0f} s in all"])
    summary["report"] = str(out / "report.html")
    atomic_write_json(out / "summary.json", summary)
    return summary
