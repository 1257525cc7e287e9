"""The simulated application: customers ask the service for a decision, their outcome is drawn from
the world's ground truth for the action served, and the reward is posted back, imperfectly.

Each decision has a client event id ``{tag}-{i}`` (so every phase's rows are found exactly in the
log) and carries the customer's cohort. Continuous actions (a price multiplier, a budget split) are read
from the answer's ``action`` value and scored as they were served. Rewards of decide batch k are posted after batch
k + ``delay_batches``, shuffled (out of order), a share ``loss`` never, a share ``duplicate`` a second
time at the end of the phase (a retry: under ``first`` the service keeps the first, a summed
duplicate would double the reward).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["play"]


def play(client, scenario, n: int, *, tag: str, seed: int, batch: int = 1000, delivery=None) -> dict:
    """Serve ``n`` fresh customers of ``scenario`` through ``client``; returns what happened (truth included)."""
    loss = getattr(delivery, "loss", 0.0)
    dup = getattr(delivery, "duplicate", 0.0)
    delay = getattr(delivery, "delay_batches", 0)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    ctx = scenario.sample_contexts(n, gen)
    obs = ctx.obs.double().numpy()
    names = scenario.feature_names
    cohorts = [scenario.group_names[g] for g in ctx.group.tolist()]
    ids = [f"{tag}-{i}" for i in range(n)]
    continuous = getattr(scenario, "action_spec", {}).get("kind") in ("beta", "dirichlet")
    k = len(getattr(scenario, "action_names", [])) if continuous and scenario.action_spec["kind"] == "dirichlet" else 0
    actions = np.empty((n, k) if k else n, dtype=np.float64 if continuous else np.int64)
    prop = np.empty(n)
    arms = np.empty(n, dtype=object)
    versions = np.empty(n, dtype=object)
    outcome = np.empty(n)
    pending: list[list] = []
    retries: list[dict] = []
    posted = {"rewards": 0, "lost": 0, "duplicates": 0}

    def flush(items):
        if items:
            client.reward_batch(items)

    for start in range(0, n, batch):
        stop = min(start + batch, n)
        rows = [dict(zip(names, map(float, obs[i]))) for i in range(start, stop)]
        out = client.decide_batch(rows, event_ids=ids[start:stop], cohorts=cohorts[start:stop],
                                  unit_ids=[f"{tag}-u{i}" for i in range(start, stop)])
        if continuous:  # the served value: a price multiplier, or the K shares of a split
            a = np.array([d["action"] for d in out], dtype=np.float64)
            act = torch.as_tensor(a).unsqueeze(1)  # [b, 1] or [b, 1, K]
        else:
            a = np.array([d["action_code"] for d in out], dtype=np.int64)
            act = torch.as_tensor(a).unsqueeze(1)
        actions[start:stop] = a
        prop[start:stop] = [d["propensity"] for d in out]
        arms[start:stop] = [d["arm"] for d in out]
        versions[start:stop] = [d["policy_version"] for d in out]
        sub = ctx.index(torch.arange(start, stop))
        r = scenario.reward(sub, act, gen)
        y = (r["profit"] if isinstance(r, dict) else r)[:, 0].double().numpy()
        outcome[start:stop] = y
        items = []
        for j, i in enumerate(range(start, stop)):
            u = rng.random()
            if u < loss:
                posted["lost"] += 1
                continue
            items.append({"event_id": ids[i], "reward": float(y[j])})
            if rng.random() < dup:
                retries.append({"event_id": ids[i], "reward": float(y[j])})
                posted["duplicates"] += 1
        rng.shuffle(items)
        posted["rewards"] += len(items)
        pending.append(items)
        if len(pending) > delay:
            flush(pending.pop(0))
    for items in pending:
        flush(items)
    for k in range(0, len(retries), batch):
        flush(retries[k:k + batch])
    return {"contexts": ctx, "event_ids": ids, "cohorts": np.array(cohorts), "actions": actions,
            "propensity": prop, "arms": arms, "versions": versions, "outcome": outcome, "posted": posted}
