"""Evaluation populations: which units a value was computed on, stated so that it can be checked.

A population is the scenario's seeded sample of ``n`` units: ``scenario.sample_contexts(n,
Generator().manual_seed(seed))``. ``grpokit scenario simulate --n N --seed S`` logs the same units
(its log's rows are those units, ``decision_id`` 0..N-1) and ``grpokit scenario evaluate --n N
--seed S`` scores decisions on them. The fingerprint is the first 16 hex digits of the SHA-256 of
the units' features (float32, row-major) and the scenario's own cohort codes (int64; under discovered
cohorts ``extra["market"]``, :func:`grpokit.scenarios.base.market`: clustering the units does not
make them other units, so a discovered-cohort run's decisions rescore on the plain scenario): two populations with the same
fingerprint hold the same units in the same order; decisions made for one population and scored
on another are refused (:func:`check_population`).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from grpokit.scenarios.base import Contexts, Scenario, market

__all__ = ["population", "population_fingerprint", "population_info", "check_population", "PopulationMismatch"]


class PopulationMismatch(ValueError):
    """Decisions made for one evaluation population offered for scoring on another."""


def population(scenario: Scenario, n: int, seed: int) -> Contexts:
    """The scenario's seeded evaluation population of ``n`` units."""
    if n < 1:
        raise ValueError(f"a population needs n >= 1 units, got {n}")
    return scenario.sample_contexts(int(n), torch.Generator().manual_seed(int(seed)))


def population_fingerprint(contexts: Contexts) -> str:
    """16 hex digits of SHA-256(features as float32 ‖ the scenario's own cohort codes as int64)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(contexts.obs.detach().cpu().to(torch.float32).numpy()).tobytes())
    h.update(np.ascontiguousarray(market(contexts).detach().cpu().to(torch.int64).numpy()).tobytes())
    return h.hexdigest()[:16]


def population_info(contexts: Contexts, seed: int) -> dict:
    """``{"n", "seed", "fingerprint"}``: what a summary or a decision file states about its units."""
    return {"n": len(contexts), "seed": int(seed), "fingerprint": population_fingerprint(contexts)}


def check_population(stated: dict | None, actual: dict, *, source: str) -> None:
    """Refuse decisions whose stated population (``{"fingerprint", "n"?, "seed"?}``) is not ``actual``.

    ``stated`` None (a file that states nothing, e.g. another tool's CSV) passes: only the row
    count and ids can be checked then.
    """
    if not stated or not stated.get("fingerprint"):
        return
    if str(stated["fingerprint"]) != actual["fingerprint"]:
        made = ", ".join(f"{k} {stated[k]}" for k in ("n", "seed") if stated.get(k) is not None)
        hint = (f": score it with --n {stated['n']} --seed {stated['seed']} (and the same scenario config)"
                if stated.get("n") is not None and stated.get("seed") is not None else "")
        raise PopulationMismatch(
            f"{source} holds decisions for population {stated['fingerprint']}"
            + (f" ({made})" if made else "")
            + f", not for the population being scored, {actual['fingerprint']} (n {actual['n']}, seed {actual['seed']})"
            + hint
        )
