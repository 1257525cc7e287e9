"""Discovered cohorts on every scenario (issue 16 item 1): a ``[cohorts]`` section with k-means or
GMM re-partitions the customers for P-GRPO's groups, the group embedding, the pilot's clusters and
the per-cohort tables, and must not change which market (segment) a customer is in: the
simulator's truth. Before the fix, pricing and allocation looked their per-segment parameters up by
the cohort id: k = 5 crashed (index 4 out of bounds for 3 segments) and k <= 3 silently priced
customers as another segment."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from grpokit.cli import app
from grpokit.config import CohortsConfig
from grpokit.groups.scenario import CohortScenario, with_cohorts
from grpokit.scenarios.allocation import AllocationScenario
from grpokit.scenarios.base import market
from grpokit.scenarios.marketing import MarketingScenario
from grpokit.scenarios.pricing import PricingScenario

runner = CliRunner()

SCENARIOS = {
    "pricing": lambda **kw: PricingScenario(**kw),
    "allocation": lambda **kw: AllocationScenario(**kw),
    "marketing": lambda **kw: MarketingScenario(**kw),
}


def _actions(sc, n: int, gen: torch.Generator) -> torch.Tensor:
    """Random actions ``[n, 1, *event]`` of the scenario's kind."""
    spec = sc.action_spec
    if spec["kind"] == "beta":
        return spec["low"] + (spec["high"] - spec["low"]) * torch.rand(n, 1, generator=gen)
    if spec["kind"] == "dirichlet":
        e = -torch.rand(n, 1, spec["n_components"], generator=gen).log()  # Dirichlet(1, ..., 1), seeded
        return e / e.sum(-1, keepdim=True)
    return torch.randint(spec["n_actions"], (n, 1), generator=gen)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
@pytest.mark.parametrize("method, k", [("kmeans", 5), ("gmm", 2), ("kmeans", 3)])
def test_discovered_cohorts_keep_each_customers_market(name, method, k):
    base = SCENARIOS[name]()
    sc = with_cohorts(base, CohortsConfig(method=method, k=k, fit_size=800, seed=0,
                                          select="silhouette" if method == "kmeans" else None))
    assert isinstance(sc, CohortScenario) and sc.n_groups == k and len(sc.group_names) == k
    ctx = sc.sample_contexts(3000, torch.Generator().manual_seed(5))
    ref = base.sample_contexts(3000, torch.Generator().manual_seed(5))
    assert torch.equal(ctx.obs, ref.obs)
    assert int(ctx.group.max()) == k - 1 and int(ctx.group.min()) == 0  # every cohort id occurs
    # the market is the scenario's own group, unchanged by discovery (same draw, same shares)
    assert torch.equal(market(ctx), ref.group.long())
    assert torch.equal(torch.bincount(market(ctx), minlength=base.n_groups),
                       torch.bincount(ref.group, minlength=base.n_groups))
    if k <= base.n_groups:  # ids that fit the market tables: reading them as markets would be wrong, not a crash
        assert not torch.equal(ctx.group.long(), ref.group.long())
    # the truth: expected rewards and the oracle equal the given-cohort scenario's, customer by customer
    a = _actions(base, len(ctx), torch.Generator().manual_seed(6))
    assert torch.allclose(sc.expected_reward(ctx, a), base.expected_reward(ref, a), rtol=1e-6, atol=1e-6)
    oracle = sc.oracle_actions(ctx)
    assert torch.allclose(oracle.double(), base.oracle_actions(ref).double(), rtol=1e-6, atol=1e-6)
    tv, tv_ref = sc.true_value(ctx, oracle), base.true_value(ref, oracle) if hasattr(base, "true_value") else None
    assert list(tv["per_group"]) == sc.group_names  # the per-cohort table: k rows
    assert all(v is not None and math.isfinite(v) for v in tv["per_group"].values())
    if tv_ref is not None:
        assert tv["value"] == pytest.approx(tv_ref["value"], rel=1e-9)
        # the market table (what business.py reports as per_market) is over the scenario's own groups
        per_market = base.true_value(ctx, oracle)["per_group"]
        assert per_market == pytest.approx(tv_ref["per_group"], rel=1e-9)
        assert list(per_market) == base.group_names


@pytest.mark.parametrize("name", ["pricing", "allocation"])
def test_group_relative_components_use_discovered_cohorts(name):
    """The group-relative parts are relative to the discovered cohort (each of the k cohorts' own
    median, computed here by hand), while the improvement itself (the customer's margin against a
    per-segment reference price) is the given-cohort scenario's, customer by customer."""
    first = "profit" if name == "pricing" else "reward"
    comps = [first, "improvement", "relative_to_cohort_median"]
    kw = {"reward_components": comps}
    if name == "pricing":
        kw["improvement_reference"] = [0.9, 1.1, 1.6]  # one per segment: must be indexed by the market
    base = SCENARIOS[name](**kw)
    sc = with_cohorts(base, CohortsConfig(method="kmeans", k=5, select="silhouette", fit_size=800))
    ctx = sc.sample_contexts(2000, torch.Generator().manual_seed(1))
    ref = base.sample_contexts(2000, torch.Generator().manual_seed(1))
    a = _actions(base, len(ctx), torch.Generator().manual_seed(2))
    a = a.expand(len(ctx), 4, *a.shape[2:]).contiguous()
    out = sc.reward(ctx, a, torch.Generator().manual_seed(3))
    given = base.reward(ref, a, torch.Generator().manual_seed(3))
    assert set(out) == set(comps)
    assert torch.allclose(out["improvement"], given["improvement"])  # same draws, same segment references
    assert torch.allclose(out[first], given[first])
    imp, rel = out["improvement"].double(), out["relative_to_cohort_median"].double()
    assert rel.shape == (len(ctx), 4) and bool(torch.isfinite(rel).all())
    medians = []
    for c in range(5):
        rows = ctx.group == c
        assert bool(rows.any())
        med = float(np.median(imp[rows].flatten().numpy()))  # the cohort's median, even counts averaged
        medians.append(med)
        assert torch.allclose(rel[rows], imp[rows] - med, atol=1e-4)
    assert len({round(m, 6) for m in medians}) > 1  # the cohorts differ: relative to the cohort, not the batch


SMALL = ["--set", "grpo.steps=4", "--set", "grpo.batch_size=64", "--set", "grpo.eval_size=256",
         "--set", "grpo.eval_every=100", "--set", 'grpo.device="cpu"', "--set", "evaluation.eval_size=1500",
         "--set", "evaluation.pilot_size=1500", "--set", "evaluation.log_size=1500"]


def _run(tmp_path, example: str, tag: str, *extra: str) -> dict:
    out = tmp_path / tag
    r = runner.invoke(app, ["run", example, "--out", str(out), "--store", str(tmp_path / "s.duckdb"), "--no-progress",
                            *SMALL, *extra])
    assert r.exit_code == 0, r.output
    return json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize("name, fixed", [("pricing", "best_fixed_price"), ("allocation", "best_fixed_split")])
def test_run_with_discovered_cohorts_on_continuous_scenarios(tmp_path, name, fixed):
    """`grpokit run examples/{pricing,allocation}.toml --set cohorts.method=kmeans --set cohorts.k=5`
    (crashed before: IndexError in the scenario's tables) runs, with a per-cohort table of 5 rows,
    the market table of the scenario's 3 segments, and the same oracle and baselines as the
    given-cohort run on the same population; 5 cohorts are enough for the pilot, whose default
    current policy is the scenario's best single decision."""
    example = f"examples/{name}.toml"
    given = _run(tmp_path, example, "given")
    disc = _run(tmp_path, example, "kmeans5", "--set", 'cohorts.method="kmeans"', "--set", "cohorts.k=5",
                "--set", 'cohorts.select="silhouette"', "--set", "cohorts.fit_size=1000")
    assert disc["cohorts"]["method"] == "kmeans" and disc["cohorts"]["n_cohorts"] == 5
    for pol, block in disc["policies"].items():
        assert math.isfinite(block["value"]), pol
        assert list(block["per_group"]) == disc["cohorts"]["names"] and len(block["per_group"]) == 5
        assert all(v is not None and math.isfinite(v) for v in block["per_group"].values())
        assert list(block["per_market"]) == list(given["policies"]["oracle"]["per_group"])  # the 3 segments
    # the simulator's truth does not depend on how an analyst clustered the customers
    for pol in ("oracle", fixed):
        assert disc["policies"][pol]["value"] == pytest.approx(given["policies"][pol]["value"], rel=1e-9)
        assert disc["policies"][pol]["per_market"] == pytest.approx(given["policies"][pol]["per_group"], rel=1e-9)
    assert "pilot" not in given  # 3 segments: too few cohorts to pilot
    assert disc["pilot"]["current_policy"] == fixed
    assert sorted(disc["pilot"]["cohorts"]) == sorted(disc["cohorts"]["names"])
    assert math.isfinite(disc["pilot"]["difference"])
    # the same customers: the run's population fingerprint is the given run's, and its decisions
    # rescore on the plain scenario (`grpokit scenario evaluate`) to the run's value
    assert disc["population"]["fingerprint"] == given["population"]["fingerprint"]
    if name == "pricing":  # decision files are written for categorical and beta decisions
        pop = disc["population"]
        r = runner.invoke(app, ["scenario", "evaluate", example, "--assignment", str(tmp_path / "kmeans5" / "decisions" /
                                "grpo.parquet"), "--n", str(pop["n"]), "--seed", str(pop["seed"]),
                                "--json", str(tmp_path / "ev.json")])
        assert r.exit_code == 0, r.output
        rescored = json.loads((tmp_path / "ev.json").read_text())["value"]
        assert rescored == pytest.approx(disc["policies"]["grpo"]["value"], rel=1e-9)


def test_loop_configs_refuse_a_cohorts_section_by_name(tmp_path):
    """The loop's cohorts are its own observable ones (docs/loop.md): a [cohorts] key is an error naming it."""
    r = runner.invoke(app, ["loop", "examples/pricing_loop.toml", "--out", str(tmp_path / "loop"),
                            "--set", 'cohorts.method="kmeans"'])
    assert r.exit_code != 0
    assert "cohorts" in " ".join(r.output.split())
    assert not (tmp_path / "loop" / "summary.json").exists()


@pytest.mark.parametrize("example", ["examples/pricing.toml", "examples/allocation.toml"])
def test_trainer_groups_are_the_discovered_cohorts(example):
    """`grpokit run` and `train` build one trainer: its P-GRPO groups and the policy's group embedding
    have the k discovered cohorts, and a few training steps stay finite."""
    from grpokit.config import load_config
    from grpokit.runner import build_trainer

    cfg = load_config(example, ['cohorts.method="gmm"', "cohorts.k=6", "cohorts.fit_size=800",
                                'grpo.advantage.name="pgrpo"', "policy.group_embedding_dim=3", "grpo.steps=3",
                                "grpo.batch_size=64", "grpo.eval_size=256", "grpo.eval_every=100", 'grpo.device="cpu"'])
    trainer = build_trainer(cfg)
    assert trainer.n_groups == 6 and trainer.scenario.n_groups == 6
    assert trainer.policy.torso.embedding.num_embeddings == 6
    summary = trainer.train()
    assert summary["steps"] == 3
    assert all(math.isfinite(float(p.detach().abs().sum())) for p in trainer.policy.parameters())
