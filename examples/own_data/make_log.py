"""A realistic A/B log of offers to customers, with its ground truth (the walk-through of docs/offline.md).

One row per customer contacted: ``customer_id, event_date, region, channel, age, tenure,
orders_90d, avg_basket, days_since_last_order, is_member`` (the context), ``offer`` (one of
``none, 10%, 20%, free_shipping``) drawn by the current targeting rule with probability
``propensity``, and what came of it: ``converted`` (0/1), ``revenue`` and ``profit`` (EUR).

The truth, known here and nowhere in the log: P(convert | x, offer) = sigmoid(base(x) + lift(x, offer)),
profit = converted * (margin * basket - discount * basket - shipping) so that
E[profit | x, offer] = P(convert | x, offer) * (0.35 B - d_offer B - c_offer) with B = the
customer's basket. The offers work on different customers: 10 % on big baskets, 20 % on lapsed
customers, free shipping on app users and the south, and not at all on members (who already ship
free); frequent buyers convert anyway ("sure things"). ``converted`` and ``revenue`` are outcomes
of the offer (post-treatment): a policy must never see them.

Usage::

    python examples/own_data/make_log.py --out offers.parquet                 # the 30,000-row log
    python examples/own_data/make_log.py --customers new.parquet --rows 10000 # customers to score
    python examples/own_data/make_log.py --outcomes decisions.parquet --customers new.parquet \\
        --out served.parquet                # what the served decisions earned (for grpokit evaluate)
    python examples/own_data/make_log.py --truth offers.parquet               # values of every rule

Import it (``importlib``) for :func:`expected_profit`, :func:`truth` and friends.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

OFFERS = ["none", "10%", "20%", "free_shipping"]
DISCOUNT = np.array([0.0, 0.10, 0.20, 0.0])
SHIPPING_COST = np.array([0.0, 0.0, 0.0, 4.0])
MARGIN = 0.35
REGIONS = ["north", "south", "east", "west"]
CHANNELS = ["web", "app", "store"]


def make_customers(n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` customers (the context columns only), reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    tenure = np.round(np.minimum(rng.exponential(3.0, n), 20.0), 2)
    orders = rng.poisson(0.6 + 0.35 * tenure)
    days = np.round(np.where(orders > 0, rng.exponential(25.0, n), 60 + rng.exponential(80.0, n))).astype(int)
    start = np.datetime64("2026-03-01")
    return pd.DataFrame({
        "customer_id": rng.choice(np.arange(100_000, 900_000), n, replace=False),
        "event_date": (start + rng.integers(0, 31, n).astype("timedelta64[D]")).astype("datetime64[us]"),
        "region": rng.choice(REGIONS, n, p=[0.3, 0.25, 0.25, 0.2]),
        "channel": rng.choice(CHANNELS, n, p=[0.45, 0.4, 0.15]),
        "age": rng.integers(18, 76, n),
        "tenure": tenure,
        "orders_90d": orders,
        "avg_basket": np.round(rng.lognormal(np.log(42.0), 0.45, n), 2),
        "days_since_last_order": days,
        "is_member": rng.random(n) < 0.3,
    })


def _columns(c: pd.DataFrame) -> dict[str, np.ndarray]:
    return {k: c[k].to_numpy() for k in ("age", "tenure", "orders_90d", "avg_basket", "days_since_last_order")} | {
        "member": c["is_member"].to_numpy(dtype=bool),
        "app": (c["channel"] == "app").to_numpy(),
        "south": (c["region"] == "south").to_numpy(),
        "store": (c["channel"] == "store").to_numpy(),
    }


def conversion_probability(customers: pd.DataFrame) -> np.ndarray:
    """``[n, 4]``: P(convert | x, offer) for every offer (the truth)."""
    v = _columns(customers)
    base = (-1.6 + 0.28 * np.minimum(v["orders_90d"], 6) - 0.012 * np.minimum(v["days_since_last_order"], 200)
            + 0.3 * v["member"] - 0.004 * (v["age"] - 45) + 0.25 * v["store"])
    big = v["avg_basket"] > 55
    lapsed = v["days_since_last_order"] > 60
    sure = v["orders_90d"] >= 4
    lift = np.zeros((len(customers), 4))
    lift[:, 1] = 0.10 + 0.75 * big
    lift[:, 2] = 0.20 + 1.10 * lapsed + 0.3 * big
    lift[:, 3] = np.where(v["member"], 0.0, 0.55 + 0.8 * v["app"] + 0.5 * v["south"])
    lift[sure, 1:] *= 0.2  # sure things buy anyway
    return 1.0 / (1.0 + np.exp(-(base[:, None] + lift)))


def margin_if_converted(customers: pd.DataFrame) -> np.ndarray:
    """``[n, 4]``: profit of a conversion under each offer (EUR)."""
    b = customers["avg_basket"].to_numpy()[:, None]
    return MARGIN * b - DISCOUNT[None, :] * b - SHIPPING_COST[None, :]


def expected_profit(customers: pd.DataFrame, offers: np.ndarray | None = None) -> np.ndarray:
    """E[profit | x, offer]: ``[n, 4]`` for every offer, or ``[n]`` for the given offer codes."""
    table = conversion_probability(customers) * margin_if_converted(customers)
    if offers is None:
        return table
    return table[np.arange(len(customers)), np.asarray(offers, dtype=np.int64)]


def logging_probabilities(customers: pd.DataFrame) -> np.ndarray:
    """``[n, 4]``: the current targeting rule (free shipping pushed on the app, 20 % on the lapsed)."""
    v = _columns(customers)
    score = np.zeros((len(customers), 4))
    score[:, 1] = 0.2
    score[:, 2] = 0.6 * (v["days_since_last_order"] > 60)
    score[:, 3] = 0.5 + 0.6 * v["app"]
    p = np.exp(score)
    p /= p.sum(1, keepdims=True)
    return 0.9 * p + 0.1 / 4  # every offer keeps >= 2.5 %: the log covers any policy


def outcomes(customers: pd.DataFrame, offers: np.ndarray, seed: int = 0) -> pd.DataFrame:
    """Draw converted / revenue / profit for the given offer codes (the truth's noise, seeded)."""
    rng = np.random.default_rng(seed)
    offers = np.asarray(offers, dtype=np.int64)
    rows = np.arange(len(customers))
    p = conversion_probability(customers)[rows, offers]
    converted = (rng.random(len(customers)) < p).astype(np.int64)
    basket = customers["avg_basket"].to_numpy() * rng.lognormal(0.0, 0.1, len(customers))
    basket = basket * np.exp(-0.005)  # E[lognormal(0, 0.1)] = exp(0.005): the mean basket is avg_basket
    paid = basket * (1 - DISCOUNT[offers])
    profit = converted * (MARGIN * basket - DISCOUNT[offers] * basket - SHIPPING_COST[offers])
    return pd.DataFrame({"converted": converted, "revenue": np.round(converted * paid, 2),
                         "profit": np.round(profit, 4)})


def make_log(n: int = 30_000, seed: int = 0) -> pd.DataFrame:
    """The A/B log: customers, the offer the targeting rule drew, its propensity, the outcomes."""
    customers = make_customers(n, seed)
    q = logging_probabilities(customers)
    rng = np.random.default_rng(seed + 1)
    offer = (q.cumsum(1) > rng.random(n)[:, None]).argmax(1)
    log = customers.copy()
    log["offer"] = np.asarray(OFFERS, dtype=object)[offer]
    log["propensity"] = np.round(q[np.arange(n), offer], 6)
    return pd.concat([log, outcomes(customers, offer, seed + 2)], axis=1)


def truth(customers: pd.DataFrame) -> dict:
    """True expected profit per customer of every single offer, the logging rule and the oracle."""
    table = expected_profit(customers)
    q = logging_probabilities(customers)
    single = {OFFERS[a]: float(table[:, a].mean()) for a in range(4)}
    best = max(single, key=single.get)
    oracle = table.argmax(1)
    return {
        "n": len(customers),
        "single_offer": single,
        "best_single_offer": best,
        "best_single_value": single[best],
        "logging_value": float((q * table).sum(1).mean()),
        "oracle_value": float(table.max(1).mean()),
        "oracle_mix": {OFFERS[a]: float((oracle == a).mean()) for a in range(4)},
    }


def policy_value(customers: pd.DataFrame, probabilities: np.ndarray) -> float:
    """The true value of a (stochastic) policy: mean over customers of sum_a pi(a|x) E[profit|x, a]."""
    return float((np.asarray(probabilities) * expected_profit(customers)).sum(1).mean())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=30_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="where to write the log (or the served log with --outcomes)")
    ap.add_argument("--customers", type=Path, help="write (or, with --outcomes, read) a table of customers")
    ap.add_argument("--outcomes", type=Path, help="decisions (customer_id, action, propensity) to draw outcomes for")
    ap.add_argument("--truth", type=Path, help="print the true values of the rules on this log/customer table")
    a = ap.parse_args(argv)
    if a.truth is not None:
        print(json.dumps(truth(pd.read_parquet(a.truth)), indent=2))
        return
    if a.outcomes is not None:
        if a.customers is None or a.out is None:
            ap.error("--outcomes needs --customers (the scored table) and --out")
        customers = pd.read_parquet(a.customers)
        decisions = pd.read_parquet(a.outcomes)
        merged = customers.merge(decisions, on="customer_id", how="inner", validate="one_to_one")
        if len(merged) != len(customers):
            ap.error(f"{len(customers) - len(merged)} customers have no decision in {a.outcomes}")
        codes = merged["action"].map({o: i for i, o in enumerate(OFFERS)}).to_numpy()
        served = merged[list(customers.columns)].copy()
        served["offer"] = merged["action"].to_numpy()
        served["propensity"] = merged["propensity"].to_numpy()
        served = pd.concat([served, outcomes(merged, codes, a.seed + 7).set_axis(served.index)], axis=1)
        served.to_parquet(a.out, index=False)
        print(f"wrote {a.out}: {len(served):,} served decisions with outcomes; true value of what was served "
              f"{expected_profit(merged, codes).mean():.4f} EUR profit per customer")
        return
    if a.customers is not None:
        c = make_customers(a.rows, a.seed)
        c.to_parquet(a.customers, index=False)
        print(f"wrote {a.customers}: {len(c):,} customers (no offers yet)")
        return
    if a.out is None:
        ap.error("give --out (the log), --customers, --outcomes or --truth")
    log = make_log(a.rows, a.seed)
    log.to_parquet(a.out, index=False)
    t = truth(log)
    print(f"wrote {a.out}: {len(log):,} rows; true profit per customer: logging {t['logging_value']:.3f}, "
          f"best single offer ({t['best_single_offer']}) {t['best_single_value']:.3f}, oracle {t['oracle_value']:.3f}")


if __name__ == "__main__":
    main()
