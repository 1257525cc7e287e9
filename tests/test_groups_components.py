"""Group-relative reward components in pricing, allocation and learning from logs, against
hand-computed numpy values (improvement by hand, np.median per cohort, scipy percentileofscore)
captured inside short training runs; bad settings named; zero weights reproduce the plain reward."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import percentileofscore

from grpokit.config import ConfigError, GRPOConfig, load_config
from grpokit.grpo.trainer import GRPOTrainer
from grpokit.offline.io import validate_log
from grpokit.offline.learn import learn_from_outcome_model
from grpokit.offline.schema import LogSchema
from grpokit.offline.workflow import fit_policy_on_log
from grpokit.runner import build_trainer
from grpokit.scenarios.allocation import AllocationScenario
from grpokit.scenarios.pricing import PricingScenario

GR = ["improvement", "relative_to_cohort_median", "cohort_percentile_rank"]
SHORT = ["grpo.steps=3", "grpo.batch_size=64", "grpo.eval_size=128", 'grpo.device="cpu"']


def _capture(monkeypatch):
    """Record (contexts, actions, rewards) of every score() and the total of every advantages() call."""
    calls, totals = [], []
    score, adv = GRPOTrainer.score, GRPOTrainer.advantages

    def spy_score(self, contexts, actions):
        state = self.generator.get_state() if getattr(self, "generator", None) is not None else None
        r = score(self, contexts, actions)
        calls.append((contexts, actions.detach().clone(), {k: v.detach().clone() for k, v in r.items()}, state))
        return r

    def spy_adv(self, contexts, rewards):
        a, total, m = adv(self, contexts, rewards)
        totals.append(total.detach().clone())
        return a, total, m

    monkeypatch.setattr(GRPOTrainer, "score", spy_score)
    monkeypatch.setattr(GRPOTrainer, "advantages", spy_adv)
    return calls, totals


def _check_relative(imp: np.ndarray, group: np.ndarray, rel: np.ndarray, rank: np.ndarray) -> int:
    """relative = imp − np.median of the cohort's pooled values; rank = scipy mid-rank percentile / 100."""
    n = 0
    for c in np.unique(group):
        vals = imp[group == c].ravel()
        np.testing.assert_allclose(rel[group == c], imp[group == c] - np.median(vals), atol=1e-4)
        want = [percentileofscore(vals, v, kind="mean") / 100 for v in vals]
        np.testing.assert_allclose(rank[group == c].ravel(), want, atol=1e-6)
        n += 1
    return n


def _last_metrics(path):
    return json.loads((path / "metrics.jsonl").read_text().splitlines()[-1])


# -- pricing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("reference, m_ref", [("list_price", [1.0, 1.0, 1.0]), ("[0.9, 1.1, 1.6]", [0.9, 1.1, 1.6])])
def test_pricing_components_by_hand_inside_training(tmp_path, monkeypatch, reference, m_ref):
    calls, totals = _capture(monkeypatch)
    cfg = load_config("examples/pricing.toml", SHORT + [
        f"scenario.reward_components=['profit', {', '.join(repr(n) for n in GR)}]",
        f"scenario.improvement_reference={reference}",
        "grpo.reward_weights={profit = 1.0, improvement = 0.0, relative_to_cohort_median = 0.5, "
        "cohort_percentile_rank = 2.0}"])
    trainer = build_trainer(cfg, tmp_path)
    trainer.train()
    assert len(calls) == 3
    sc = trainer.scenario
    for (ctx, actions, r, state), total in zip(calls, totals):
        # by hand: the draw u the scenario made (same generator state), bought = u < q, the reference
        # bought with the same u (paired), margins (p − cost), their difference
        u = torch.rand(actions.shape, generator=torch.Generator().set_state(state)).numpy()
        m = actions.clamp(sc.low, sc.high)
        g = ctx.group.numpy()
        mr = torch.tensor(m_ref, dtype=m.dtype)[ctx.group][:, None].expand_as(m)
        q, qr = sc.purchase_probability(ctx, m).numpy(), sc.purchase_probability(ctx, mr).numpy()
        margin = (u < q) * (m.numpy() * 10.0 - 6.0)
        imp = margin - (u < qr) * (mr.numpy() * 10.0 - 6.0)
        np.testing.assert_allclose(r["profit"].numpy(), margin, atol=1e-5)
        np.testing.assert_allclose(r["improvement"].numpy(), imp, atol=1e-5)
        assert np.any(imp != 0) and np.any(imp == 0)
        assert _check_relative(imp, g, r["relative_to_cohort_median"].numpy(), r["cohort_percentile_rank"].numpy()) >= 2
        torch.testing.assert_close(total, r["profit"] + 0.5 * r["relative_to_cohort_median"]
                                   + 2.0 * r["cohort_percentile_rank"])
    last = _last_metrics(tmp_path)
    for name in ["profit", *GR]:
        assert f"reward/{name}" in last, name
    assert last["reward/cohort_percentile_rank"] == pytest.approx(0.5, abs=1e-6)


def test_pricing_improvement_is_the_paired_difference():
    sc = PricingScenario(reward_components=["profit", *GR], improvement_reference=1.2)
    ctx = sc.sample_contexts(2000, torch.Generator().manual_seed(0))
    actions = 0.6 + 1.9 * torch.rand(2000, 4, generator=torch.Generator().manual_seed(1))
    r = sc.reward(ctx, actions, torch.Generator().manual_seed(2))
    same = sc.reward(ctx, torch.full_like(actions, 1.2), torch.Generator().manual_seed(2))
    torch.testing.assert_close(r["improvement"], r["profit"] - same["profit"])
    assert torch.all(same["improvement"] == 0)
    # in expectation: E[improvement] = q(m)(p − c) − q(m_ref)(p_ref − c)
    want = sc.expected_reward(ctx, actions) - sc.expected_reward(ctx, torch.full_like(actions, 1.2))
    imp = r["improvement"].double()
    se = float(imp.std() / imp.numel() ** 0.5)
    assert float(imp.mean()) == pytest.approx(float(want.mean()), abs=4 * se)  # 4 standard errors


# -- allocation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("reference", ["equal_split", "none", "[0.4, 0.3, 0.2, 0.1]"])
def test_allocation_components_by_hand_inside_training(tmp_path, monkeypatch, reference):
    calls, totals = _capture(monkeypatch)
    cfg = load_config("examples/allocation.toml", SHORT + [
        f"scenario.reward_components=['reward', {', '.join(repr(n) for n in GR)}]",
        f"scenario.improvement_reference={reference!r}" if not reference.startswith("[") else
        f"scenario.improvement_reference={reference}",
        "grpo.reward_weights={reward = 1.0, improvement = 0.0, relative_to_cohort_median = 0.3, "
        "cohort_percentile_rank = 5.0}"])
    trainer = build_trainer(cfg, tmp_path)
    trainer.train()
    sc = trainer.scenario
    w_ref = {"equal_split": [0.25] * 4, "none": [0.0] * 4}.get(reference, [0.4, 0.3, 0.2, 0.1])
    for (ctx, actions, r, _), total in zip(calls, totals):
        # improvement by hand: Σ_k R_k − λ Σ_k max(0, T − R_k) of the split minus that of w_ref (noise cancels)
        a = ctx.extra["productivity"].double().numpy()[:, None, :]
        budget = ctx.extra["budget"].double().numpy()[:, None, None]
        sat = sc.saturation.numpy()
        t = sc.targets.numpy()[ctx.group.numpy()][:, None, :]
        lam = sc.config.penalty

        def value(w):
            w = np.clip(w, 0, None)
            w = w / np.maximum(w.sum(-1, keepdims=True), np.finfo(np.float64).tiny)
            rk = a * -np.expm1(-w * budget / sat)
            return rk.sum(-1) - lam * np.clip(t - rk, 0, None).sum(-1)

        want = value(actions.double().numpy()) - value(np.array(w_ref)[None, None, :])
        imp = r["improvement"].numpy()
        np.testing.assert_allclose(imp, want, rtol=1e-4, atol=1e-3)
        g = ctx.group.numpy()
        assert _check_relative(imp, g, r["relative_to_cohort_median"].numpy(), r["cohort_percentile_rank"].numpy()) >= 2
        torch.testing.assert_close(total, r["reward"] + 0.3 * r["relative_to_cohort_median"]
                                   + 5.0 * r["cohort_percentile_rank"])
    last = _last_metrics(tmp_path)
    for name in ["reward", *GR]:
        assert f"reward/{name}" in last, name


def test_allocation_true_keeps_revenue_and_target_penalty():
    sc = AllocationScenario(reward_components=True)
    ctx = sc.sample_contexts(8, torch.Generator().manual_seed(0))
    r = sc.reward(ctx, torch.full((8, 3, 4), 0.25), torch.Generator().manual_seed(1))
    assert list(r) == ["revenue", "target_penalty"]


# -- zero weights reproduce the plain reward ----------------------------------------------------


@pytest.mark.parametrize("example, base, plain", [
    ("pricing", "profit", []),
    ("allocation", "reward", ["scenario.reward_components=false"]),
])
def test_zero_weights_reproduce_the_plain_run(tmp_path, example, base, plain):
    def run(out, extra):
        cfg = load_config(f"examples/{example}.toml", SHORT + ["grpo.steps=5"] + extra)
        trainer = build_trainer(cfg, out)
        trainer.train()
        return [p.detach().clone() for p in trainer.policy.parameters()], _last_metrics(out)

    p0, m0 = run(tmp_path / "plain", plain)
    zero = ", ".join(f"{n} = 0.0" for n in GR)
    p1, m1 = run(tmp_path / "zero", [f"scenario.reward_components=['{base}', {', '.join(repr(n) for n in GR)}]",
                                     f"grpo.reward_weights={{{base} = 1.0, {zero}}}"])
    for a, b in zip(p0, p1):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert m1["reward_mean"] == pytest.approx(m0["reward_mean"], abs=0)
    assert m1[f"reward/{base}"] == pytest.approx(m0["reward_mean"], rel=1e-6)


# -- learning from logs -------------------------------------------------------------------------


def _log(n=1200, seed=0):
    """Three actions (0 = no offer), two cohorts; action 1 pays in cohort 0, action 2 in cohort 1."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    group = np.where(x1 > 0, "young", "old")
    action = rng.integers(0, 3, n)
    mean = np.where(action == 1, 1.0 + (x1 > 0), np.where(action == 2, 1.0 + 0.5 * (x1 <= 0), 0.2))
    df = pd.DataFrame({"x1": x1, "x2": x2, "segment": group,
                       "action": np.array(["none", "discount", "gift"])[action], "pscore": np.full(n, 1 / 3),
                       "reward": mean + 0.1 * rng.normal(size=n)})
    return validate_log(df, LogSchema(n_actions=3, features=["x1", "x2"], group="segment",
                                      actions=["none", "discount", "gift"]))


@pytest.mark.parametrize("reference", ["control", "logged", "gift"])
def test_learn_components_by_hand_inside_training(tmp_path, monkeypatch, reference):
    calls, totals = _capture(monkeypatch)
    log = _log()
    cfg = GRPOConfig(device="cpu", steps=3, batch_size=64, seed=0,
                     reward_weights={"reward": 1.0, "improvement": 0.25, "relative_to_cohort_median": 0.5,
                                     "cohort_percentile_rank": 2.0})
    fit = fit_policy_on_log(log, outcome_model="linear", config=cfg, out_dir=tmp_path,
                            reward_components=["reward", *GR], improvement_reference=reference)
    table = fit.table
    ref = {"control": table[:, 0], "gift": table[:, 2],
           "logged": table[np.arange(len(table)), log.action]}[reference]
    assert len(calls) == 3
    for (ctx, actions, r, _), total in zip(calls, totals):
        rows, a = ctx.extra["row"].numpy(), actions.numpy()
        np.testing.assert_allclose(r["reward"].numpy(), table[rows[:, None], a], rtol=1e-6)
        imp = table[rows[:, None], a] - ref[rows][:, None]
        np.testing.assert_allclose(r["improvement"].numpy(), imp, rtol=1e-5, atol=1e-6)
        g = ctx.group.numpy()
        np.testing.assert_array_equal(g, log.group[rows])  # cohorts = the log's group column
        assert _check_relative(r["improvement"].numpy(), g, r["relative_to_cohort_median"].numpy(),
                               r["cohort_percentile_rank"].numpy()) == 2
        torch.testing.assert_close(total, r["reward"] + 0.25 * r["improvement"] + 0.5 * r["relative_to_cohort_median"]
                                   + 2.0 * r["cohort_percentile_rank"])
    last = _last_metrics(tmp_path)
    for name in ["reward", *GR]:
        assert f"reward/{name}" in last, name


def test_learn_zero_weights_reproduce_the_plain_reward():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(500, 3)).astype(np.float32)
    table = rng.normal(size=(500, 4)).astype(np.float32)
    group = (x[:, 0] > 0).astype(np.int64)
    cfg = GRPOConfig(device="cpu", steps=5, batch_size=64, seed=0)
    p0, s0 = learn_from_outcome_model(x, table, cfg, group=group, n_groups=2)
    zero = cfg.model_copy(update={"reward_weights": {"reward": 1.0, **{n: 0.0 for n in GR}}})
    p1, s1 = learn_from_outcome_model(x, table, zero, group=group, n_groups=2, reward_components=["reward", *GR],
                                      reference=table[:, 0])
    for a, b in zip(p0.parameters(), p1.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert s1["last_metrics"]["reward/reward"] == pytest.approx(s0["last_metrics"]["reward_mean"], rel=1e-6)


def test_learn_bad_settings_are_named():
    log = _log(300)
    cfg = GRPOConfig(device="cpu", steps=2, batch_size=32)
    with pytest.raises(ValueError, match=r"reward_components: unknown component \['rank_in_cohort'\]"):
        fit_policy_on_log(log, outcome_model="linear", config=cfg, reward_components=["reward", "rank_in_cohort"])
    with pytest.raises(ValueError, match="improvement_reference 'coupon' is not 'control' or 'logged' or one of"):
        fit_policy_on_log(log, outcome_model="linear", config=cfg, reward_components=["reward", "improvement"],
                          improvement_reference="coupon")
    weights = cfg.model_copy(update={"reward_weights": {"reward": 1.0, "profit": 0.5}})
    with pytest.raises(ValueError, match=r"grpo.reward_weights: unknown component \['profit'\]"):
        fit_policy_on_log(log, outcome_model="linear", config=weights, reward_components=["reward"])
    with pytest.raises(ValueError, match="reward_components"):
        fit_policy_on_log(log, outcome_model="linear", config=weights)
    with pytest.raises(ValueError, match=r"\['cohort_percentile_rank'\] are measured within cohorts"):
        fit_policy_on_log(log, outcome_model="linear", config=cfg, use_groups=False,
                          reward_components=["reward", "cohort_percentile_rank"])
    with pytest.raises(ValueError, match="listed|more than once"):
        fit_policy_on_log(log, outcome_model="linear", config=cfg, reward_components=["reward", "reward"])


# -- bad configs --------------------------------------------------------------------------------


@pytest.mark.parametrize("example, override, match", [
    ("pricing", "scenario.reward_components=['profit', 'rank_in_cohort']", r"reward_components: unknown component \['rank_in_cohort'\]"),
    ("pricing", "scenario.improvement_reference='current'", "improvement_reference 'current' is not \"list_price\""),
    ("pricing", "scenario.improvement_reference=3.0", r"improvement_reference = 3.0: \[3.0, 3.0, 3.0\] is outside"),
    ("pricing", "scenario.improvement_reference=[1.0, 1.1]", "improvement_reference has 2 multipliers, expected one per group"),
    ("pricing", "scenario.improvement_reference=true", "improvement_reference must be"),
    ("pricing", "grpo.reward_weights={cohort_percentile_rank = 1.0}", r"grpo.reward_weights: unknown component"),
    ("allocation", "scenario.reward_components=['reward', 'profit']", r"reward_components: unknown component \['profit'\]"),
    ("allocation", "scenario.improvement_reference='current'", "improvement_reference 'current' is not \"equal_split\""),
    ("allocation", "scenario.improvement_reference=[0.5, 0.5]", "improvement_reference has 2 shares, expected 4"),
    ("allocation", "scenario.improvement_reference=[0.5, 0.5, 0.5, 0.5]", "must be >= 0 and sum to 1"),
])
def test_bad_configs_are_named(example, override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(f"examples/{example}.toml", [override])


def test_pricing_list_price_outside_bounds_only_matters_when_used():
    load_config("examples/pricing.toml", ["scenario.low=1.2"])  # no group-relative component: fine
    with pytest.raises(ConfigError, match="list price multiplier 1.0 is outside"):
        load_config("examples/pricing.toml", ["scenario.low=1.2", "scenario.reward_components=['profit', 'improvement']"])


# -- the learn command --------------------------------------------------------------------------


def test_learn_cli_trains_on_the_components_and_names_bad_ones(tmp_path):
    from typer.testing import CliRunner

    from grpokit.cli import app

    runner = CliRunner()
    rng = np.random.default_rng(0)
    n = 600
    x = rng.normal(size=(n, 2))
    a = rng.integers(0, 3, n)
    df = pd.DataFrame({"x0": x[:, 0], "x1": x[:, 1], "action": a, "pscore": np.full(n, 1 / 3),
                       "reward": (a == 1) * (x[:, 0] > 0) + 0.1 * rng.normal(size=n),
                       "group": np.where(x[:, 1] > 0, "north", "south")})
    path = tmp_path / "log.csv"
    df.to_csv(path, index=False)
    base = ["learn", "--log", str(path), "--outcome-model", "linear", "--holdout", "0", "--no-progress",
            "--set", "grpo.steps=3", "--set", "grpo.batch_size=64"]
    run = tmp_path / "run"
    r = runner.invoke(app, base + ["--out", str(run), "--reward-components", "reward,relative_to_cohort_median",
                                   "--improvement-reference", "logged",
                                   "--set", "grpo.reward_weights={reward = 1.0, relative_to_cohort_median = 0.5}"])
    assert r.exit_code == 0, r.output
    s = json.loads((run / "summary.json").read_text())
    assert s["reward_components"] == ["reward", "relative_to_cohort_median"] and s["improvement_reference"] == "logged"
    assert s["grpo_config"]["reward_weights"] == {"reward": 1.0, "relative_to_cohort_median": 0.5}
    last = _last_metrics(run / "training")
    assert "reward/reward" in last and "reward/relative_to_cohort_median" in last
    r = runner.invoke(app, base + ["--out", str(tmp_path / "bad1"), "--reward-components", "reward,uplift"])
    assert r.exit_code != 0 and "unknown component ['uplift']" in r.output
    r = runner.invoke(app, base + ["--out", str(tmp_path / "bad2"), "--reward-components", "reward",
                                   "--set", "grpo.reward_weights={profit = 1.0}"])
    assert r.exit_code != 0 and "grpo.reward_weights: unknown component ['profit']" in r.output
    r = runner.invoke(app, base + ["--out", str(tmp_path / "bad3"), "--reward-components", "reward,improvement",
                                   "--improvement-reference", "coupon"])
    assert r.exit_code != 0 and "improvement_reference 'coupon'" in r.output


def test_the_observed_outcome_stays_the_base_component():
    """Pilots and the gym environment take "profit" (pricing) or "reward" (allocation), never the sum."""
    from grpokit.loop.pilot_sim import sampled_outcome

    pricing = PricingScenario(reward_components=["profit", *GR])
    ctx = pricing.sample_contexts(50, torch.Generator().manual_seed(0))
    m = torch.full((50,), 1.7)
    got = sampled_outcome(pricing, ctx, m, torch.Generator().manual_seed(1))
    plain = PricingScenario().reward(ctx, m.unsqueeze(1), torch.Generator().manual_seed(1))[:, 0]
    np.testing.assert_allclose(got, plain.double().numpy())
    alloc = AllocationScenario(reward_components=["reward", *GR])
    ctx = alloc.sample_contexts(50, torch.Generator().manual_seed(0))
    w = torch.full((50, 4), 0.25)
    got = sampled_outcome(alloc, ctx, w, torch.Generator().manual_seed(1))
    plain = AllocationScenario().reward(ctx, w.unsqueeze(1), torch.Generator().manual_seed(1))[:, 0]
    np.testing.assert_allclose(got, plain.double().numpy(), rtol=1e-6)
    for cls, names, match in [(PricingScenario, ["improvement"], "must include 'profit'"),
                              (AllocationScenario, ["revenue", "cohort_percentile_rank"], "must include 'reward'")]:
        with pytest.raises(ValueError, match=match):
            cls(reward_components=names)


def test_gym_env_reward_is_the_total_not_the_sum_of_components():
    from grpokit.scenarios.gym_env import ScenarioEnv

    env = ScenarioEnv(AllocationScenario(reward_components=["reward", *GR], noise_std=0.0))
    env.reset(seed=0)
    _, reward, *_, info = env.step(np.array([0.4, 0.3, 0.2, 0.1], dtype=np.float32))
    assert reward == pytest.approx(info["expected_reward"], rel=1e-5)
