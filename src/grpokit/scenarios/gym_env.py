"""A one-step ``gymnasium.Env`` over any grpokit :class:`~grpokit.scenarios.base.Scenario`.

grpokit scenarios are batch simulators: the GRPO trainer draws ``B`` contexts at once and scores
``G`` actions for each. Peers such as Stable-Baselines3 PPO expect the single-episode
``gymnasium`` interface instead. :class:`ScenarioEnv` poses *the same problem* to them, as a
contextual bandit:

* ``reset(seed=...)`` draws one context from the scenario and returns its features (float32),
  optionally with the one-hot group id appended (``include_group=True``);
* ``step(action)`` scores the action with the scenario's sampled (noisy) reward and ends the
  episode (``terminated=True``, ``truncated=False``). ``info`` holds the context's ``group``, the
  action's true ``expected_reward`` (ground truth, for evaluation only) and, when the scenario
  knows it, the ``oracle_action`` and its ``oracle_reward``.

Randomness: every draw (context and reward noise) comes from one ``torch.Generator`` that is
seeded from the env's ``np_random`` whenever ``reset`` gets a seed (and on the first reset), so
``reset(seed=s)`` followed by the same actions reproduces the same episodes.

Action spaces follow ``scenario.action_spec["kind"]``: ``categorical`` maps to
``Discrete(n_actions)`` (with an eligibility mask, if the context has one, in
``info["action_mask"]`` of both ``reset`` and ``step``); ``dirichlet`` and ``gaussian_softmax``
(simplex decisions) to ``Box([0, 1]^K)``, renormalized to sum to 1; ``beta`` to
``Box([low, high])``. Register a builder in :data:`ACTION_SPACE_BUILDERS` for a new kind.

Reward drift: a scenario whose rewards depend on the training step ``t`` reads
:attr:`ScenarioEnv.scenario_step` (default 0; set it from a callback to reproduce a drift).
"""

from __future__ import annotations

from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from grpokit.scenarios.base import Contexts, Scenario

__all__ = ["ACTION_SPACE_BUILDERS", "ScenarioEnv", "make_env"]


def _categorical_space(spec: dict) -> spaces.Space:
    n = spec.get("n_actions")
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"a categorical action_spec needs an integer n_actions >= 1, got {spec!r}")
    return spaces.Discrete(int(n))


def _categorical_to_tensor(action: Any, space: spaces.Space) -> torch.Tensor:
    """A Discrete action (int, numpy scalar or 0-d/1-element array) as a ``[1, 1]`` long tensor."""
    arr = np.asarray(action)
    value = arr.reshape(-1)[0] if arr.size == 1 else None
    integral = value is not None and (
        np.issubdtype(arr.dtype, np.integer) or (np.issubdtype(arr.dtype, np.floating) and float(value).is_integer())
    )
    if not integral:
        raise ValueError(f"a Discrete action must be a single integer, got {action!r}")
    a = int(value)
    if not space.contains(a):
        raise ValueError(f"action {a} is outside the action space {space}")
    return torch.tensor([[a]], dtype=torch.long)


def _simplex_space(spec: dict) -> spaces.Space:
    k = spec.get("n_components")
    if not isinstance(k, (int, np.integer)) or k < 2:
        raise ValueError(f"a simplex action_spec needs an integer n_components >= 2, got {spec!r}")
    return spaces.Box(0.0, 1.0, shape=(int(k),), dtype=np.float32)


def _simplex_to_tensor(action: Any, space: spaces.Space) -> torch.Tensor:
    """A point of [0, 1]^K, renormalized onto the simplex (w / Σw; all-zero becomes uniform): ``[1, 1, K]``."""
    w = np.asarray(action, dtype=np.float64).reshape(-1)
    if w.shape != space.shape or not np.all(np.isfinite(w)):
        raise ValueError(f"a simplex action must be {space.shape[0]} finite numbers, got {action!r}")
    w = np.clip(w, 0.0, None)
    w = w / w.sum() if w.sum() > 0 else np.full_like(w, 1.0 / len(w))
    return torch.tensor(w, dtype=torch.float32).view(1, 1, -1)


def _interval_space(spec: dict) -> spaces.Space:
    low, high = spec.get("low", 0.0), spec.get("high", 1.0)
    if not (np.isfinite(low) and np.isfinite(high) and high > low):
        raise ValueError(f"a bounded action_spec needs finite low < high, got {spec!r}")
    return spaces.Box(float(low), float(high), shape=(1,), dtype=np.float32)


def _interval_to_tensor(action: Any, space: spaces.Space) -> torch.Tensor:
    """A scalar in [low, high] (clipped, as SB3 clips Box actions): ``[1, 1]``."""
    a = np.asarray(action, dtype=np.float64).reshape(-1)
    if a.size != 1 or not np.isfinite(a[0]):
        raise ValueError(f"a bounded action must be one finite number, got {action!r}")
    return torch.tensor([[float(np.clip(a[0], space.low[0], space.high[0]))]], dtype=torch.float32)


#: ``kind -> (build the gymnasium space from the action_spec, convert one env action to a
#: [1, 1, *event] tensor the scenario can score)``. Simplex kinds are Box([0, 1]^K) actions
#: renormalized to sum to 1; ``beta`` is Box([low, high]).
ACTION_SPACE_BUILDERS: dict[str, tuple[Callable[[dict], spaces.Space], Callable[[Any, spaces.Space], torch.Tensor]]] = {
    "categorical": (_categorical_space, _categorical_to_tensor),
    "dirichlet": (_simplex_space, _simplex_to_tensor),
    "gaussian_softmax": (_simplex_space, _simplex_to_tensor),
    "beta": (_interval_space, _interval_to_tensor),
}


class ScenarioEnv(gym.Env):
    """One-step contextual-bandit view of a grpokit scenario (see the module docstring).

    ``scenario``: any :class:`~grpokit.scenarios.base.Scenario`; ``include_group``: append the
    one-hot group id to the observation (the policy then sees what a grpokit policy with a group
    embedding sees); ``device``: where the scenario computes (CPU by default).
    """

    metadata = {"render_modes": []}

    def __init__(self, scenario: Scenario, include_group: bool = False, device: str | torch.device = "cpu"):
        super().__init__()
        if not isinstance(scenario, Scenario):
            raise TypeError(f"scenario must be a grpokit Scenario, got {type(scenario).__name__}")
        self.scenario = scenario
        self.include_group = bool(include_group)
        self.device = torch.device(device)
        spec = dict(getattr(scenario, "action_spec", None) or {})
        kind = spec.get("kind")
        if kind not in ACTION_SPACE_BUILDERS:
            raise ValueError(
                f"scenario {getattr(scenario, 'name', type(scenario).__name__)!r} has an action_spec with "
                f"unknown kind {kind!r}; supported: {sorted(ACTION_SPACE_BUILDERS)}"
            )
        build_space, self._to_tensor = ACTION_SPACE_BUILDERS[kind]
        self.action_kind = kind
        self.action_space = build_space(spec)
        self.obs_dim = int(scenario.obs_dim) + (int(scenario.n_groups) if self.include_group else 0)
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(self.obs_dim,), dtype=np.float32)
        self.scenario_step = 0  #: the training step ``t`` passed to ``scenario.reward`` (drift)
        self._generator: torch.Generator | None = None
        self._context: Contexts | None = None

    # -- helpers --------------------------------------------------------------------------------

    def observe(self, contexts: Contexts) -> np.ndarray:
        """Observations ``[B, obs_dim (+ n_groups)]`` (float32) of a batch of contexts, as the env shows them.

        Useful to evaluate a policy trained on this env on a fixed set of contexts.
        """
        obs = contexts.obs.detach().to("cpu", torch.float32)
        if self.include_group:
            onehot = torch.nn.functional.one_hot(contexts.group.to("cpu").long(), self.scenario.n_groups)
            obs = torch.cat([obs, onehot.to(torch.float32)], dim=1)
        return obs.numpy().copy()  # never a view of the scenario's tensors

    def _info(self, ctx: Contexts) -> dict:
        info: dict[str, Any] = {"group": int(ctx.group[0])}
        if ctx.mask is not None:
            info["action_mask"] = ctx.mask[0].detach().to("cpu").numpy().astype(bool)
        return info

    # -- gymnasium API --------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None or self._generator is None:
            self._generator = torch.Generator(device=self.device)
            self._generator.manual_seed(int(self.np_random.integers(0, 2**63 - 1)))
        self._context = self.scenario.sample_contexts(1, self._generator)
        return self.observe(self._context)[0], self._info(self._context)

    def step(self, action):
        if self._context is None:
            raise RuntimeError("call reset() before step(): each episode is one decision")
        ctx = self._context
        a = self._to_tensor(action, self.action_space).to(self.device)
        sampled = self.scenario.reward(ctx, a, self._generator, step=self.scenario_step)
        if isinstance(sampled, dict):  # named components: "profit" (or the total "reward") when there is one, else their sum
            key = next((k for k in ("profit", "reward") if k in sampled), None)
            sampled = sampled[key] if key is not None else sum(sampled.values())
        reward = float(sampled[0, 0])
        info = self._info(ctx)
        info["expected_reward"] = float(self.scenario.expected_reward(ctx, a)[0, 0])
        best = self.scenario.oracle_actions(ctx)
        if best is not None:
            best = best.to(self.device)
            info["oracle_action"] = best[0].tolist()
            info["oracle_reward"] = float(self.scenario.expected_reward(ctx, best.unsqueeze(1))[0, 0])
        obs = self.observe(ctx)[0].copy()  # one-step episodes: the terminal observation is the context itself
        self._context = None
        return obs, reward, True, False, info


def make_env(name: str, include_group: bool = False, **params) -> ScenarioEnv:
    """Build scenario ``name`` with its parameters (validated; unknown names are ``ValueError``) and wrap it."""
    from grpokit.scenarios.registry import make_scenario

    return ScenarioEnv(make_scenario(name, **params), include_group=include_group)
