"""Diagnose the loop's learning step offline (no server): how good a candidate can the served log give?

Simulates what the loop's service does (served q = (1 - eps) pi + eps / A, actions drawn from q, profit
drawn from the marketing truth), then learns a candidate the loop's way (cross-fitted outcome model +
GRPO) or by the outcome model's greedy argmax, and prints each one's true share of the oracle.

    python benchmarks/loop_learning.py --eps 0.2 --n 14000 --model gbm
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from grpokit.loop.world import World


def serve(sc, q_fn, n, seed):
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    ctx = sc.sample_contexts(n, gen)
    x = ctx.obs.double().numpy()
    q = q_fn(x)
    a = (np.cumsum(q, 1) > rng.random(n)[:, None]).argmax(1)
    r = sc.reward(ctx, torch.as_tensor(a).unsqueeze(1), gen)["profit"][:, 0].double().numpy()
    return x, a, r, q[np.arange(n), a], ctx.group.numpy()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--eps", type=float, default=0.2)
    ap.add_argument("--n", type=int, default=14000)
    ap.add_argument("--model", default="gbm")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=0.003)
    ap.add_argument("--logging", default="best_single", choices=["best_single", "uniform"])
    ap.add_argument("--advantage", default="grpo", choices=["grpo", "pgrpo", "rank", "dr_grpo"])
    ap.add_argument("--params", default="", help="extra OutcomeModel kwargs k=v,k=v")
    args = ap.parse_args()
    from grpokit.config import GRPOConfig, PolicyConfig
    from grpokit.offline.learn import learn_from_outcome_model
    from grpokit.offline.outcome import OutcomeModel

    w = World({"name": "marketing"}, eval_size=20000, seed=args.seed)
    sc, ctx, table, _ = w._at(0)
    A = sc.n_offers
    best = int(table.mean(0).argmax())
    eps = args.eps

    def q_log(x):
        pi = np.zeros((len(x), A))
        if args.logging == "uniform":
            pi[:] = 1.0 / A
        else:
            pi[:, best] = 1
        return (1 - eps) * pi + eps / A

    x, a, r, p, g = serve(sc, q_log, args.n, args.seed + 1)
    print(f"reward mean {r.mean():.2f} sd {r.std():.2f}; actions {np.bincount(a, minlength=A)}")
    params = {}
    for kv in filter(None, args.params.split(",")):
        k, v = kv.split("=")
        params[k] = {"False": False, "True": True}.get(v) if v in ("False", "True") else (float(v) if "." in v else int(v))
    t0 = time.perf_counter()
    om = OutcomeModel(A, args.model, seed=args.seed, **params).fit(x, a, r)
    tab = om.predict_crossfit()
    t1 = time.perf_counter()
    X = ctx.obs.double().numpy()
    oracle = table.max(1).mean()

    def share(pi):
        q = (1 - eps) * pi + eps / A
        return (q * table).sum(1).mean() / oracle, (pi * table).sum(1).mean() / oracle

    pred = om.predict(X)
    greedy = np.eye(A)[pred.argmax(1)]
    print(f"outcome model ({t1 - t0:.1f} s): greedy argmax share served/pure %.3f / %.3f" % share(greedy))
    grpo = GRPOConfig(device="cpu", steps=args.steps, batch_size=256, group_size=8, lr=args.lr, seed=args.seed,
                      advantage={"name": args.advantage})
    t2 = time.perf_counter()
    pol, _ = learn_from_outcome_model(x, tab, grpo, PolicyConfig(hidden=[64, 64], activation="tanh"), group=g,
                                      n_groups=len(sc.group_names))
    with torch.no_grad():
        pi = pol(torch.as_tensor(X, dtype=torch.float32)).log_probs.exp().double().numpy()
    print(f"GRPO on crossfit table ({time.perf_counter() - t2:.1f} s): share served/pure %.3f / %.3f" % share(pi))
    print("GRPO mean max prob %.3f" % pi.max(1).mean())


if __name__ == "__main__":
    main()
