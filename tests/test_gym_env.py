"""The gymnasium adapter: a one-step contextual bandit over any grpokit scenario."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from grpokit.scenarios import make_env as lazy_make_env
from grpokit.scenarios.base import Contexts, Scenario
from grpokit.scenarios.gym_env import ScenarioEnv, make_env
from grpokit.scenarios.registry import make_scenario


def _check(env) -> None:
    with warnings.catch_warnings():
        # Gaussian features are unbounded: the Box is (-inf, inf) on purpose.
        warnings.filterwarnings("ignore", message=".*Box observation space (minimum|maximum) value.*")
        check_env(env, skip_render_check=True)


class MaskedScenario(Scenario):
    """A tiny categorical scenario whose contexts carry an eligibility mask."""

    name = "masked"
    obs_dim = 2
    n_groups = 2
    group_names = ["a", "b"]
    action_spec = {"kind": "categorical", "n_actions": 3}

    def sample_contexts(self, n, generator):
        group = torch.randint(2, (n,), generator=generator)
        obs = torch.randn(n, 2, generator=generator)
        mask = torch.ones(n, 3, dtype=torch.bool)
        mask[:, 2] = group == 1  # action 2 only for group b
        return Contexts(obs, group, mask)

    def expected_reward(self, contexts, actions):
        return (actions == contexts.group.unsqueeze(1)).float()

    def reward(self, contexts, actions, generator, step=0):
        return self.expected_reward(contexts, actions)


class KindScenario(MaskedScenario):
    def __init__(self, kind):
        self.action_spec = {"kind": kind, "n_actions": 3}


@pytest.mark.parametrize("include_group", [False, True])
def test_check_env_passes(include_group):
    _check(make_env("preferences", include_group=include_group))


def test_check_env_passes_with_mask():
    _check(ScenarioEnv(MaskedScenario()))


def test_same_seed_same_episodes():
    def rollout(env, seed, n=30):
        out = []
        obs, info = env.reset(seed=seed)
        for i in range(n):
            nxt, r, term, trunc, step_info = env.step(i % env.action_space.n)
            out.append((obs.copy(), info["group"], r, step_info["expected_reward"]))
            obs, info = env.reset()
        return out

    a = rollout(make_env("preferences"), 7)
    b = rollout(make_env("preferences"), 7)
    c = rollout(make_env("preferences"), 8)
    for (oa, ga, ra, ea), (ob, gb, rb, eb) in zip(a, b):
        np.testing.assert_array_equal(oa, ob)
        assert (ga, ra, ea) == (gb, rb, eb)
    assert not all(np.array_equal(x[0], y[0]) for x, y in zip(a, c))
    # re-seeding the same env restarts the same stream
    env = make_env("preferences")
    rollout(env, 3)
    first = rollout(env, 7)
    assert all(np.array_equal(x[0], y[0]) and x[1:] == y[1:] for x, y in zip(first, a))


def test_obs_is_float32_and_in_space():
    env = make_env("preferences")
    obs, info = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.shape == (env.scenario.obs_dim,)
    assert env.observation_space.contains(obs)
    assert env.action_space.n == env.scenario.action_spec["n_actions"]


def test_reward_and_info_match_the_scenario():
    # noise-free gaussian rewards: the sampled reward is the expected reward
    env = make_env("preferences", reward="gaussian", noise=[0.0, 0.0, 0.0])
    scenario = env.scenario
    env.reset(seed=1)
    seen_groups = set()
    for i in range(200):
        obs, info = env.reset()
        ctx = env._context
        action = i % env.action_space.n
        _, reward, terminated, truncated, step_info = env.step(action)
        assert terminated is True and truncated is False
        assert step_info["group"] == info["group"] == int(ctx.group[0])
        expected = float(scenario.expected_reward(ctx, torch.tensor([[action]]))[0, 0])
        assert step_info["expected_reward"] == pytest.approx(expected)
        assert step_info["expected_reward"] == pytest.approx(float(scenario.mean_table[info["group"], action]))
        assert reward == pytest.approx(expected)
        assert step_info["oracle_action"] == int(scenario.best_actions[info["group"]])
        assert step_info["oracle_reward"] >= step_info["expected_reward"]
        seen_groups.add(info["group"])
    assert seen_groups == set(range(scenario.n_groups))


def test_bernoulli_rewards_average_to_the_expected_reward():
    env = make_env("preferences", shares=[0.5, 0.3, 0.2])
    env.reset(seed=2)
    rewards, expected = [], []
    for _ in range(4000):
        env.reset()
        _, r, _, _, info = env.step(int(env.scenario.best_actions[0]))
        assert r in (0.0, 1.0)
        rewards.append(r)
        expected.append(info["expected_reward"])
    assert np.mean(rewards) == pytest.approx(np.mean(expected), abs=0.03)


def test_include_group_appends_the_one_hot_group():
    plain = make_env("preferences")
    with_group = make_env("preferences", include_group=True)
    n_groups = plain.scenario.n_groups
    assert with_group.observation_space.shape[0] == plain.observation_space.shape[0] + n_groups
    obs_p, info_p = plain.reset(seed=5)
    obs_g, info_g = with_group.reset(seed=5)
    np.testing.assert_array_equal(obs_g[: plain.scenario.obs_dim], obs_p)
    onehot = np.zeros(n_groups, dtype=np.float32)
    onehot[info_g["group"]] = 1.0
    np.testing.assert_array_equal(obs_g[plain.scenario.obs_dim :], onehot)


def test_observe_matches_reset_observations():
    env = make_env("preferences", include_group=True)
    env.reset(seed=0)
    ctx = env._context
    batch = env.observe(make_scenario("preferences").sample_contexts(5, torch.Generator().manual_seed(0)))
    assert batch.shape == (5, env.observation_space.shape[0]) and batch.dtype == np.float32
    np.testing.assert_array_equal(env.observe(ctx)[0], env.step(0)[0])


def test_action_mask_in_info():
    env = ScenarioEnv(MaskedScenario())
    obs, info = env.reset(seed=0)
    for _ in range(20):
        assert info["action_mask"].dtype == bool and info["action_mask"].shape == (3,)
        assert info["action_mask"][2] == (info["group"] == 1)
        _, _, _, _, step_info = env.step(0)
        np.testing.assert_array_equal(step_info["action_mask"], info["action_mask"])
        obs, info = env.reset()
    assert "action_mask" not in make_env("preferences").reset(seed=0)[1]


def test_unknown_scenario_name():
    with pytest.raises(ValueError, match="unknown scenario"):
        make_env("no-such-scenario")


def test_bad_scenario_parameters_are_errors():
    with pytest.raises(ValueError):
        make_env("preferences", n_groups=2)  # shares etc. still have 3 entries


def test_continuous_action_kinds_map_to_boxes():
    from gymnasium import spaces

    from grpokit.scenarios.gym_env import ACTION_SPACE_BUILDERS

    build, convert = ACTION_SPACE_BUILDERS["dirichlet"]
    space = build({"kind": "dirichlet", "n_components": 3})
    assert isinstance(space, spaces.Box) and space.shape == (3,)
    w = convert(np.array([1.0, 1.0, 2.0]), space)
    assert w.shape == (1, 1, 3) and torch.allclose(w, torch.tensor([[[0.25, 0.25, 0.5]]]))
    assert torch.allclose(convert(np.zeros(3), space), torch.full((1, 1, 3), 1 / 3))
    with pytest.raises(ValueError, match="3 finite numbers"):
        convert(np.array([1.0, np.nan, 0.0]), space)
    build, convert = ACTION_SPACE_BUILDERS["beta"]
    space = build({"kind": "beta", "low": 0.8, "high": 1.2})
    assert float(space.low[0]) == pytest.approx(0.8) and float(space.high[0]) == pytest.approx(1.2)
    assert float(convert(5.0, space)) == pytest.approx(1.2)
    with pytest.raises(ValueError, match="low < high"):
        build({"kind": "beta", "low": 1.0, "high": 1.0})
    with pytest.raises(ValueError, match="n_components >= 2"):
        ACTION_SPACE_BUILDERS["dirichlet"][0]({"kind": "dirichlet"})


def test_unsupported_action_kinds():
    with pytest.raises(ValueError, match="unknown kind 'weird'"):
        ScenarioEnv(KindScenario("weird"))
    with pytest.raises(TypeError):
        ScenarioEnv(object())


def test_bad_actions_and_step_before_reset():
    env = make_env("preferences")
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="outside"):
        env.step(env.action_space.n)
    with pytest.raises(ValueError, match="single integer"):
        env.step(0.5)
    env.step(np.int64(1))  # numpy scalars are fine
    with pytest.raises(RuntimeError):  # one decision per episode
        env.step(0)


def test_lazy_make_env_in_package():
    env = lazy_make_env("preferences", include_group=True, n_actions=5)
    assert isinstance(env, ScenarioEnv) and env.action_space.n == 5 and env.include_group


def test_sb3_env_checker():
    sb3_checker = pytest.importorskip("stable_baselines3.common.env_checker")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sb3_checker.check_env(make_env("preferences"), warn=False)


def test_every_registered_scenario_is_an_env():
    for name in ("marketing", "pricing", "allocation"):
        env = make_env(name)
        obs, info = env.reset(seed=0)
        assert obs.shape == env.observation_space.shape
        _, reward, terminated, _, step_info = env.step(env.action_space.sample())
        assert terminated and np.isfinite(reward) and np.isfinite(step_info["expected_reward"])
