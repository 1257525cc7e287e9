"""Overhead of PGRPOTrainer over plain TRL GRPOTrainer on the same tiny run.

    python benchmarks/llm_overhead.py --steps 30 --repeats 3 --json runs/bench/llm_overhead.json

The persona task's tiny GPT-2 (no supervised stage: speed does not depend on it), 16 prompts x G=4
per step. Each repeat runs GRPOTrainer and PGRPOTrainer (P-GRPO, true persona groups) for the same
steps from the same seed, in alternating order (ABBA...) so that load drift on a shared machine
hits both. Two figures: the ratio of median step times (noisy on a loaded CPU), and the time spent
in PGRPOTrainer's own code (group-id gathering and checks, advantages, metrics), timed inside the
trainer, as a share of its median step time (the direct measure of what P-GRPO adds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def run(kind: str, steps: int, seed: int, threads: int) -> dict:
    import torch
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from grpokit.llm.benchmark import _dataset
    from grpokit.llm.personas import PERSONAS, WORDS, make_users, persona_reward
    from grpokit.llm.tiny import tiny_model, tiny_tokenizer
    from grpokit.llm.trainer import PGRPOTrainer

    torch.set_num_threads(threads)
    tok = tiny_tokenizer(WORDS)
    users = make_users(350, seed)
    ds = _dataset(users, list(users["persona"]), steps * 16, seed + 1)
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t)

    own: list[float] = []

    class Timed(PGRPOTrainer):
        def _gathered_group_codes(self, *a, **k):
            t = time.perf_counter()
            try:
                return super()._gathered_group_codes(*a, **k)
            finally:
                own.append(time.perf_counter() - t)

        def _advantages(self, *a, **k):
            t = time.perf_counter()
            try:
                return super()._advantages(*a, **k)
            finally:
                own.append(time.perf_counter() - t)

    with tempfile.TemporaryDirectory() as out:
        args = GRPOConfig(
            output_dir=out, use_cpu=True, bf16=False, seed=seed, per_device_train_batch_size=64, num_generations=4,
            max_completion_length=12, max_steps=steps, learning_rate=1e-3, logging_strategy="no", save_strategy="no",
            report_to="none", disable_tqdm=True,
        )
        common = dict(model=tiny_model(tok, n_embd=64, n_head=4, seed=seed), reward_funcs=persona_reward, args=args,
                      train_dataset=ds, processing_class=tok, callbacks=[Clock()])
        if kind == "pgrpo":
            tr = Timed(**common, groups=[p.name for p in PERSONAS], min_history=16)
        else:
            tr = GRPOTrainer(**common)
        tr.train()
    times = times[2:]  # warm-up
    return {"median_step_s": statistics.median(times), "own_s_per_step": sum(own) / steps if own else 0.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    res: dict[str, list] = {"grpo": [], "pgrpo": []}
    for r in range(a.repeats):
        order = ("grpo", "pgrpo") if r % 2 == 0 else ("pgrpo", "grpo")
        for kind in order:
            res[kind].append(run(kind, a.steps, 0, a.threads))
            print(kind, res[kind][-1], flush=True)
    g = statistics.median(x["median_step_s"] for x in res["grpo"])
    p = statistics.median(x["median_step_s"] for x in res["pgrpo"])
    own = statistics.median(x["own_s_per_step"] for x in res["pgrpo"])
    out = {
        "steps": a.steps,
        "repeats": a.repeats,
        "grpo_median_step_s": g,
        "pgrpo_median_step_s": p,
        "step_time_ratio": p / g,
        "pgrpo_own_s_per_step": own,
        "pgrpo_own_share_of_step": own / p,
        "runs": res,
    }
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=1))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
