"""The persona benchmark: GRPO vs P-GRPO on a tiny causal LM, per persona, on a CPU, without downloads.

Per seed: a tiny GPT-2 (:mod:`grpokit.llm.tiny`) learns the task's language by a short supervised
stage on the generated corpus (:mod:`grpokit.llm.personas`); then every method starts from that
same model and is aligned with TRL on the same prompts (users drawn by persona share), the sparse
pass/fail persona reward, G completions per prompt:

``grpo`` / ``grpo_batch``  TRL's ``GRPOTrainer``, ``scale_rewards`` group / batch;
``dr_grpo``                TRL's ``GRPOTrainer``, ``scale_rewards="none"``, ``loss_type="dr_grpo"``;
``pgrpo``                  :class:`~grpokit.llm.trainer.PGRPOTrainer`, true persona labels;
``pgrpo_random_labels``    P-GRPO with each user's label shuffled among users (same shares; the paper's ablation);
``pgrpo_discovered``       P-GRPO with cohorts found by :class:`grpokit.groups.CohortModel` (k-means,
                           k by silhouette) from the users' feedback histories.

Every ``eval_every`` steps each persona's pass rate is measured on fixed prompts (its own seeded
sampling; the training RNG is restored after). Steps to 90 %: the first evaluated step where a
persona's pass rate reaches 0.9 x its best reachable reward, 1.0 (a pass on every completion:
each style is in the corpus); ``steps_to_90_of_best`` uses instead the best pass rate any method
reached on that persona in that seed. General quality: the per-token negative log-likelihood of a
held-out corpus under the aligned model (the supervised model's is ``sft_heldout_nll``).
"""

from __future__ import annotations

import copy
import math
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

from grpokit.llm.personas import PERSONAS, TOPICS, make_corpus, make_users, persona_reward, prompt_for

__all__ = ["LLMBenchConfig", "METHODS", "QUICK", "run_llm_preferences", "steps_to"]

METHODS = ("grpo", "grpo_batch", "dr_grpo", "pgrpo", "pgrpo_random_labels", "pgrpo_discovered")


@dataclass(frozen=True)
class LLMBenchConfig:
    steps: int = 300
    prompts_per_step: int = 16
    num_generations: int = 4
    learning_rate: float = 1e-3
    max_completion_length: int = 12
    eval_every: int = 10
    eval_per_topic: int = 8
    min_history: int = 16
    decay: float = 1.0
    n_users: int = 350
    sft_corpus: int = 6000
    sft_steps: int = 400
    sft_lr: float = 3e-3
    heldout: int = 600
    n_embd: int = 64
    n_layer: int = 2
    threads: int = 1


QUICK = LLMBenchConfig(steps=120, sft_steps=300)


def steps_to(curve: Sequence[tuple[int, float]], level: float) -> int | None:
    """The first evaluated step whose reward is >= ``level`` (None if never)."""
    for step, r in curve:
        if r >= level - 1e-12:
            return step
    return None


# ----------------------------------------------------------------------------- pieces


def _encode_pairs(tok, pairs, max_len: int):
    import torch

    ids, labels = [], []
    for prompt, completion in pairs:
        p = tok(prompt)["input_ids"]
        c = tok(completion)["input_ids"] + [tok.eos_token_id]
        seq = (p + c)[:max_len]
        lab = ([-100] * len(p) + c)[:max_len]
        ids.append(seq)
        labels.append(lab)
    n = max(len(s) for s in ids)
    input_ids = torch.full((len(ids), n), tok.pad_token_id)
    label_t = torch.full((len(ids), n), -100)
    mask = torch.zeros((len(ids), n), dtype=torch.long)
    for i, (s, lab) in enumerate(zip(ids, labels)):
        input_ids[i, : len(s)] = torch.tensor(s)
        label_t[i, : len(lab)] = torch.tensor(lab)
        mask[i, : len(s)] = 1
    return input_ids, mask, label_t


def supervised_stage(model, tok, pairs, steps: int, lr: float, seed: int, batch: int = 64):
    """Teach the language: next-token cross-entropy on the completions (prompt tokens masked)."""
    import torch

    ids, mask, labels = _encode_pairs(tok, pairs, 64)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    for step in range(steps):
        idx = torch.randint(0, ids.shape[0], (batch,), generator=gen)
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 20) * (1 - step / steps) ** 0.5
        out = model(input_ids=ids[idx], attention_mask=mask[idx], labels=labels[idx])
        opt.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    model.eval()
    return model


def heldout_nll(model, tok, pairs) -> float:
    """Mean negative log-likelihood per completion token (incl. the end token) of ``pairs``."""
    import torch

    ids, mask, labels = _encode_pairs(tok, pairs, 64)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        tgt = labels[:, 1:]
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=-100, reduction="sum")
    model.train(was_training)
    return float(nll / (tgt != -100).sum())


def eval_personas(model, tok, per_topic: int, max_new_tokens: int, seed: int) -> dict[str, float]:
    """Each persona's pass rate on ``per_topic`` sampled completions of each topic's prompt.

    Uses its own seed and restores the global RNG, so evaluating does not change training.
    """
    import torch

    state = torch.get_rng_state()
    was_training = model.training
    model.eval()
    try:
        torch.manual_seed(seed)
        prompts, who = [], []
        for p in PERSONAS:
            for t in TOPICS:
                prompts += [prompt_for(p.name, t)] * per_topic
                who += [p.name] * per_topic
        enc = tok(prompts, return_tensors="pt", padding=True)
        with torch.no_grad():
            out = model.generate(
                **enc, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens
            )
        texts = tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        r = persona_reward(texts, who)
        return {p.name: float(np.mean([x for x, w in zip(r, who) if w == p.name])) for p in PERSONAS}
    finally:
        model.train(was_training)
        torch.set_rng_state(state)


def _labels(method: str, users: dict, seed: int) -> tuple[list, list, dict]:
    """Per-user preference-group labels for a method, the label set, and what was found."""
    from sklearn.metrics import adjusted_rand_score

    persona = users["persona"]
    if method == "pgrpo":
        return list(persona), [p.name for p in PERSONAS], {}
    if method == "pgrpo_random_labels":
        shuffled = np.random.default_rng(seed + 7919).permutation(np.array(persona)).tolist()
        return shuffled, [p.name for p in PERSONAS], {"ari_vs_personas": float(adjusted_rand_score(persona, shuffled))}
    if method == "pgrpo_discovered":
        from grpokit.groups import CohortModel

        cm = CohortModel("kmeans", "auto", k_range=(2, 10), seed=seed)
        codes = cm.fit_predict(users["history"])
        labels = [f"c{int(c)}" for c in codes]
        return labels, [f"c{k}" for k in range(cm.n_cohorts_)], {
            "n_cohorts": int(cm.n_cohorts_),
            "ari_vs_personas": float(adjusted_rand_score(persona, labels)),
        }
    return [None] * len(persona), [], {}


def _dataset(users: dict, labels: list, n_rows: int, seed: int):
    from datasets import Dataset

    rng = np.random.default_rng(seed)
    u = rng.integers(0, len(users["persona"]), n_rows)
    t = rng.integers(0, len(TOPICS), n_rows)
    persona = [users["persona"][i] for i in u]
    data = {
        "prompt": [prompt_for(p, TOPICS[j]) for p, j in zip(persona, t)],
        "persona": persona,
        "user": [int(i) for i in u],
    }
    if labels[0] is not None:
        data["preference_group"] = [labels[i] for i in u]
    return Dataset.from_dict(data)


def _run_method(method: str, base_model, tok, users: dict, cfg: LLMBenchConfig, seed: int, heldout) -> dict:
    import torch
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from grpokit.llm.trainer import PGRPOTrainer

    labels, groups, found = _labels(method, users, seed)
    ds = _dataset(users, labels, cfg.steps * cfg.prompts_per_step, seed + 1)
    curve: list[tuple[int, dict]] = []
    step_times: list[float] = []

    class Probe(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            curve.append((0, eval_personas(model, tok, cfg.eval_per_topic, cfg.max_completion_length, seed * 7 + 1)))

        def on_step_begin(self, args, state, control, **kw):
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, model=None, **kw):
            step_times.append(time.perf_counter() - self._t)
            if state.global_step % cfg.eval_every == 0 or state.global_step == cfg.steps:
                r = eval_personas(model, tok, cfg.eval_per_topic, cfg.max_completion_length, seed * 7 + 1 + state.global_step)
                curve.append((state.global_step, r))

    scale = {"grpo_batch": "batch", "dr_grpo": "none"}.get(method, "group")
    with tempfile.TemporaryDirectory() as out:
        args = GRPOConfig(
            output_dir=out,
            use_cpu=True,
            bf16=False,
            seed=seed,
            data_seed=seed,
            per_device_train_batch_size=cfg.prompts_per_step * cfg.num_generations,
            num_generations=cfg.num_generations,
            max_completion_length=cfg.max_completion_length,
            max_steps=cfg.steps,
            learning_rate=cfg.learning_rate,
            lr_scheduler_type="constant",
            warmup_steps=0,
            scale_rewards=scale,
            loss_type="dr_grpo" if method == "dr_grpo" else "dapo",
            logging_strategy="no",
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            temperature=1.0,
        )
        model = copy.deepcopy(base_model)
        model.train()
        common = dict(model=model, reward_funcs=persona_reward, args=args, train_dataset=ds, processing_class=tok, callbacks=[Probe()])
        if method.startswith("pgrpo"):
            trainer = PGRPOTrainer(**common, groups=groups, min_history=cfg.min_history, decay=cfg.decay)
        else:
            trainer = GRPOTrainer(**common)
        t0 = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - t0
    prompt_share = {p.name: float(np.mean([x == p.name for x in ds["persona"]])) for p in PERSONAS}
    return {
        "curve": [{"step": s, **r} for s, r in curve],
        "final": curve[-1][1],
        "heldout_nll": heldout_nll(model, tok, heldout),
        "median_step_s": statistics.median(step_times),
        "wall_s": wall,
        "prompt_share": prompt_share,
        "groups": found,
    }


# ----------------------------------------------------------------------------- the workflow


def run_llm_preferences(
    methods: Sequence[str] = METHODS,
    seeds: Sequence[int] = (0, 1, 2),
    cfg: LLMBenchConfig = QUICK,
    on_result: Callable[[str, int, dict], None] | None = None,
) -> dict:
    """Every method on every seed; per persona: curves, steps to 90 %, final reward; quality check."""
    import torch

    from grpokit.llm.tiny import tiny_model, tiny_tokenizer
    from grpokit.llm.personas import WORDS

    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    if not seeds:
        raise ValueError("give at least one seed")
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        tok = tiny_tokenizer(WORDS)
        runs: dict[str, dict[int, dict]] = {m: {} for m in methods}
        sft: dict[int, dict] = {}
        for seed in seeds:
            t0 = time.perf_counter()
            base = tiny_model(tok, n_layer=cfg.n_layer, n_embd=cfg.n_embd, n_head=4, seed=seed)
            supervised_stage(base, tok, make_corpus(cfg.sft_corpus, seed), cfg.sft_steps, cfg.sft_lr, seed)
            heldout = make_corpus(cfg.heldout, 10_000 + seed)
            sft[seed] = {
                "heldout_nll": heldout_nll(base, tok, heldout),
                "pass_rate": eval_personas(base, tok, cfg.eval_per_topic, cfg.max_completion_length, seed * 7 + 1),
                "seconds": time.perf_counter() - t0,
            }
            users = make_users(cfg.n_users, seed)
            for m in methods:
                runs[m][seed] = _run_method(m, base, tok, users, cfg, seed, heldout)
                if on_result is not None:
                    on_result(m, seed, runs[m][seed])
    finally:
        torch.set_num_threads(threads)
    return _summarize(runs, sft, list(seeds), cfg)


def _median_steps(values: list[int | None]) -> float | None:
    """Median over seeds, a never (None) counting as infinitely many steps; None if the median is never."""
    med = statistics.median([math.inf if v is None else v for v in values])
    return None if math.isinf(med) else float(med)


def _summarize(runs: dict, sft: dict, seeds: list[int], cfg: LLMBenchConfig) -> dict:
    names = [p.name for p in PERSONAS]
    best = {s: {p: max(c[p] for m in runs for c in runs[m][s]["curve"]) for p in names} for s in seeds}
    methods = {}
    for m, by_seed in runs.items():
        per_group = {}
        for p in names:
            curves = {s: [(c["step"], c[p]) for c in by_seed[s]["curve"]] for s in seeds}
            s90 = [steps_to(curves[s], 0.9) for s in seeds]
            s90b = [steps_to(curves[s], 0.9 * best[s][p]) for s in seeds]
            steps = [c["step"] for c in by_seed[seeds[0]]["curve"]]
            per_group[p] = {
                "steps_to_90": _median_steps(s90),
                "steps_to_90_per_seed": s90,
                "steps_to_90_of_best": _median_steps(s90b),
                "steps_to_90_of_best_per_seed": s90b,
                "final_reward": float(np.mean([by_seed[s]["final"][p] for s in seeds])),
                "final_reward_per_seed": [by_seed[s]["final"][p] for s in seeds],
                "curve": {"step": steps, "reward": [float(np.mean([dict(curves[s])[st] for s in seeds])) for st in steps]},
            }
        shares = {p.name: p.share for p in PERSONAS}
        methods[m] = {
            "per_group": per_group,
            "shares": shares,
            "prompt_shares": {p: float(np.mean([by_seed[s]["prompt_share"][p] for s in seeds])) for p in names},
            "final_reward_mean": float(np.mean([np.mean([by_seed[s]["final"][p] for p in names]) for s in seeds])),
            "final_reward_weighted": float(np.mean([sum(shares[p] * by_seed[s]["final"][p] for p in names) for s in seeds])),
            "heldout_nll": float(np.mean([by_seed[s]["heldout_nll"] for s in seeds])),
            "heldout_nll_per_seed": [by_seed[s]["heldout_nll"] for s in seeds],
            "median_step_s": float(np.median([by_seed[s]["median_step_s"] for s in seeds])),
            "groups_found": [by_seed[s]["groups"] for s in seeds],
        }
    return {
        "config": asdict(cfg),
        "seeds": seeds,
        "personas": [{"name": p.name, "tag": p.tag, "share": p.share, "rule": p.rule} for p in PERSONAS],
        "reachable_reward": 1.0,
        "best_reached": {str(s): best[s] for s in seeds},
        "sft": {
            "heldout_nll": float(np.mean([sft[s]["heldout_nll"] for s in seeds])),
            "pass_rate": {p: float(np.mean([sft[s]["pass_rate"][p] for s in seeds])) for p in names},
        },
        "methods": methods,
        "targets": _targets(methods),
    }


def _targets(methods: dict) -> dict:
    """The issue's targets, computed (None where a method is missing or a persona never reached 90 %)."""
    if "grpo" not in methods or "pgrpo" not in methods:
        return {}
    small = [p.name for p in sorted(PERSONAS, key=lambda p: p.share)[:2]]
    major = max(PERSONAS, key=lambda p: p.share).name
    g, pg = methods["grpo"]["per_group"], methods["pgrpo"]["per_group"]
    out: dict = {"smallest_personas": small, "majority": major}
    for key in ("steps_to_90", "steps_to_90_of_best"):
        ratios = {}
        for p in small:
            a, b = pg[p][key], g[p][key]
            ratios[p] = None if a is None or b is None or b == 0 else a / b
        out[f"{key}_ratio_pgrpo_over_grpo"] = ratios
    fg, fp = g[major]["final_reward"], pg[major]["final_reward"]
    out["majority_final_rel_diff"] = (fp - fg) / fg if fg else None
    out["heldout_nll_pgrpo_minus_grpo"] = methods["pgrpo"]["heldout_nll"] - methods["grpo"]["heldout_nll"]
    if "pgrpo_random_labels" in methods:
        rl = methods["pgrpo_random_labels"]["per_group"]
        out["small_final_reward"] = {
            p: {m: methods[m]["per_group"][p]["final_reward"] for m in ("grpo", "pgrpo", "pgrpo_random_labels")} for p in small
        }
        out["small_steps_to_90_of_best"] = {
            p: {"grpo": g[p]["steps_to_90_of_best"], "pgrpo": pg[p]["steps_to_90_of_best"], "pgrpo_random_labels": rl[p]["steps_to_90_of_best"]}
            for p in small
        }
    return out


def with_overrides(cfg: LLMBenchConfig, **kw) -> LLMBenchConfig:
    return replace(cfg, **{k: v for k, v in kw.items() if v is not None})
