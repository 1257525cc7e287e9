"""Policy heads: map raw network outputs to a distribution over decisions.

Every head turns ``raw: [B, param_dim]`` (one row per context) into a *distribution object*
with one interface, so the GRPO engine never needs to know which kind of decision it optimizes:

* ``sample(G) -> (actions, log_prob)``: G actions per context, ``actions: [B, G, *event]``,
  ``log_prob: [B, G]``;
* ``log_prob(actions) -> [B, G]`` for given actions of that shape;
* ``entropy() -> [B]``;
* ``mode() -> [B, *event]``: the deterministic action used in production (argmax for
  discrete heads, the mean for continuous heads, whose mode can sit on the boundary);
* ``kl(other) -> [B]``: KL(self || other) to another output of the same head.

The network is evaluated once per context; the G samples share it (that is where GRPO's
speed on decision problems comes from).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Beta, Dirichlet, kl_divergence

__all__ = [
    "PolicyHead",
    "Decision",
    "CategoricalHead",
    "DirichletHead",
    "BetaHead",
    "GaussianSoftmaxHead",
    "make_head",
]


class Decision(ABC):
    """A batch of B per-context distributions over decisions."""

    @abstractmethod
    def sample(self, group_size: int) -> tuple[Tensor, Tensor]:
        """Draw ``group_size`` actions per context: ``(actions [B, G, *event], log_prob [B, G])``."""

    @abstractmethod
    def log_prob(self, actions: Tensor) -> Tensor:
        """Log-density of ``actions: [B, G, *event]`` under each context's distribution: ``[B, G]``."""

    @abstractmethod
    def entropy(self) -> Tensor:
        """Entropy per context: ``[B]``."""

    @abstractmethod
    def mode(self) -> Tensor:
        """Deterministic production action per context: ``[B, *event]``."""

    @abstractmethod
    def kl(self, other: "Decision") -> Tensor:
        """KL(self || other) per context: ``[B]``."""


class PolicyHead(torch.nn.Module, ABC):
    """Maps ``raw: [B, param_dim]`` to a :class:`Decision`. Subclasses define ``param_dim``."""

    param_dim: int
    #: shape of one action (``()`` for a discrete or scalar decision, ``(K,)`` for a simplex point)
    event_shape: tuple[int, ...] = ()

    @abstractmethod
    def forward(self, raw: Tensor, mask: Tensor | None = None) -> Decision:  # noqa: D401
        """Build the distribution for a batch of raw outputs."""

    def step_schedule(self, step: int) -> None:
        """Hook called by the trainer before each step (exploration schedules). Default: no-op."""

    def observe(self, actions: Tensor) -> None:
        """Hook called by the trainer with each step's sampled actions ``[B, G, *event]`` (adaptive
        exploration rules). Default: no-op."""


# --------------------------------------------------------------------------------------------
# Categorical
# --------------------------------------------------------------------------------------------


class CategoricalDecision(Decision):
    """π(a|x) = softmax(logits)_a over eligible actions (masked logits are -inf)."""

    def __init__(self, logits: Tensor, mask: Tensor | None = None):
        if mask is not None:
            if mask.shape != logits.shape:
                raise ValueError(f"action mask has shape {tuple(mask.shape)}, expected {tuple(logits.shape)}")
            if not bool(mask.any(dim=-1).all()):
                row = int((~mask.any(dim=-1)).nonzero()[0])
                raise ValueError(f"action mask row {row} allows no action: every context needs one eligible action")
            logits = logits.masked_fill(~mask, float("-inf"))
        self.logits = logits
        self.log_probs = torch.log_softmax(logits, dim=-1)

    def sample(self, group_size: int) -> tuple[Tensor, Tensor]:
        probs = self.log_probs.detach().exp()
        actions = torch.multinomial(probs, group_size, replacement=True)
        return actions, self.log_prob(actions)

    def log_prob(self, actions: Tensor) -> Tensor:
        return self.log_probs.gather(-1, actions.long())

    def entropy(self) -> Tensor:
        p = self.log_probs.exp()
        # masked actions have p = 0 and log p = -inf: their term is 0
        return -(p * self.log_probs.masked_fill(p == 0, 0.0)).sum(-1)

    def mode(self) -> Tensor:
        return self.log_probs.argmax(-1)

    def kl(self, other: "Decision") -> Tensor:
        assert isinstance(other, CategoricalDecision)
        p = self.log_probs.exp()
        diff = (self.log_probs - other.log_probs).masked_fill(p == 0, 0.0)
        return (p * diff).sum(-1)


class CategoricalHead(PolicyHead):
    """Discrete actions ``0..n_actions-1`` with an optional eligibility mask ``[B, n_actions]``.

    :meth:`restrict` removes actions for good: π(a|x) = 0 for every a not allowed, in training and
    wherever the policy is loaded (e.g. actions a log never shows, whose value only an extrapolation
    knows). The restriction is a bool buffer ``allowed [n_actions]`` in the state dict, present only
    on a restricted head (an unrestricted head's state dict is unchanged)."""

    def __init__(self, n_actions: int):
        super().__init__()
        if n_actions < 2:
            raise ValueError(f"the policy needs at least 2 actions to choose between, got n_actions={n_actions}")
        self.n_actions = n_actions
        self.param_dim = n_actions

    def restrict(self, allowed) -> None:
        """Give probability only to the actions where ``allowed [n_actions]`` (bool) is True."""
        allowed = torch.as_tensor(allowed, dtype=torch.bool)
        if allowed.shape != (self.n_actions,) or not bool(allowed.any()):
            raise ValueError(f"allowed must be {self.n_actions} booleans with at least one True, got {allowed.tolist()}")
        if bool(allowed.all()):
            self._buffers.pop("allowed", None)
            return
        device = next((t.device for t in self.buffers()), allowed.device)
        self.register_buffer("allowed", allowed.to(device))

    def forward(self, raw: Tensor, mask: Tensor | None = None) -> CategoricalDecision:
        allowed = self._buffers.get("allowed")
        if allowed is not None:
            allowed = allowed.expand_as(raw)
            mask = allowed if mask is None else mask & allowed
        return CategoricalDecision(raw, mask)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if prefix + "allowed" in state_dict and "allowed" not in self._buffers:  # a restricted policy's file
            self.register_buffer("allowed", torch.ones(self.n_actions, dtype=torch.bool))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


# --------------------------------------------------------------------------------------------
# Dirichlet
# --------------------------------------------------------------------------------------------


class DirichletDecision(Decision):
    """w ~ Dir(α) on the simplex; log p(w) = Σ(α_k−1) log w_k − log B(α)."""

    def __init__(self, concentration: Tensor, eps: float = 1e-6):
        self.concentration = concentration
        self.eps = eps
        self._dist = Dirichlet(concentration, validate_args=False)

    def _clamp(self, w: Tensor) -> Tensor:
        # float samples can hit exactly 0 for small α; keep them inside the open simplex
        w = w.clamp_min(self.eps)
        return w / w.sum(-1, keepdim=True)

    def sample(self, group_size: int) -> tuple[Tensor, Tensor]:
        w = self._dist.sample((group_size,)).transpose(0, 1)  # [B, G, K]
        w = self._clamp(w)
        return w, self.log_prob(w)

    def log_prob(self, actions: Tensor) -> Tensor:
        return self._dist.log_prob(actions.transpose(0, 1)).transpose(0, 1)

    def entropy(self) -> Tensor:
        return self._dist.entropy()

    def mode(self) -> Tensor:
        """The mean α / Σα (the mode lies on the boundary when some α_k < 1)."""
        return self.concentration / self.concentration.sum(-1, keepdim=True)

    def kl(self, other: "Decision") -> Tensor:
        assert isinstance(other, DirichletDecision)
        return kl_divergence(self._dist, other._dist)


class DirichletHead(PolicyHead):
    """Simplex decisions (fusion weights, budget shares) from a Dirichlet policy.

    α = softplus(raw) + floor. The exploration knob is the *total concentration* c = Σα:
    with the mean m = α/Σα fixed, Var(w_k) = m_k (1 − m_k) / (c + 1), so a small c explores
    widely and a large c samples close to the mean. If ``concentration`` is None the network
    learns c; otherwise α is rescaled to α · c / Σα. ``concentration_final`` and
    ``anneal_steps`` move c geometrically from ``concentration`` to ``concentration_final``
    during training (``step_schedule``), and :meth:`set_concentration` lets any rule
    (e.g. an adaptive controller) set it.

    **Adaptive exploration** (``target_spread``): instead of a fixed schedule for c, steer the
    *spread of the sampled weights* — the mean over requests and components of the standard
    deviation of the G weight vectors of a request — towards a target that decays geometrically
    from ``target_spread`` to ``target_spread_final`` over ``anneal_steps``: after each step,
    c ← clip(c · exp(rate · (spread − target) / target), c_min, c_max). More spread than wanted
    raises c (narrower sampling), less lowers it. Why this rule: the spread is what GRPO's group
    comparison sees, it is measured in weight units a business can read ("explore ±0.1 around the
    mean weights"), and it stays meaningful when the network moves the mean towards a corner,
    where a fixed c would give a very different spread.
    """

    def __init__(
        self,
        n_components: int,
        floor: float = 1e-3,
        concentration: float | None = None,
        concentration_final: float | None = None,
        anneal_steps: int = 0,
        target_spread: float | None = None,
        target_spread_final: float | None = None,
        adapt_rate: float = 0.1,
        concentration_min: float = 0.5,
        concentration_max: float = 1e4,
    ):
        super().__init__()
        if n_components < 2:
            raise ValueError(f"a simplex needs n_components >= 2, got {n_components}")
        if floor <= 0:
            raise ValueError(f"floor must be > 0, got {floor}")
        if concentration is not None and concentration <= 0:
            raise ValueError(f"concentration must be > 0, got {concentration}")
        if concentration_final is not None and concentration is None:
            raise ValueError("concentration_final needs a starting concentration")
        if concentration_final is not None and not (concentration_final > 0 and math.isfinite(concentration_final)):
            raise ValueError(f"concentration_final must be a positive finite number, got {concentration_final}")
        if target_spread is not None:
            if concentration is None:
                raise ValueError("target_spread adapts the total concentration: give a starting concentration")
            if concentration_final is not None:
                raise ValueError("choose either a concentration schedule (concentration_final) or target_spread")
            for name, v in (("target_spread", target_spread), ("target_spread_final", target_spread_final)):
                if v is not None and not 0 < v < 0.5:
                    raise ValueError(f"{name} must be in (0, 0.5) (a standard deviation of simplex weights), got {v}")
            if adapt_rate <= 0 or not 0 < concentration_min < concentration_max:
                raise ValueError("need adapt_rate > 0 and 0 < concentration_min < concentration_max")
        self.n_components = n_components
        self.param_dim = n_components
        self.event_shape = (n_components,)
        self.floor = floor
        self.target_spread_start = target_spread
        self.target_spread_final = target_spread_final if target_spread_final is not None else target_spread
        self.adapt_rate = adapt_rate
        self.concentration_min, self.concentration_max = concentration_min, concentration_max
        self.target_spread = target_spread
        self.last_spread: float | None = None
        self.concentration_start = concentration
        self.concentration_final = concentration_final
        self.anneal_steps = anneal_steps
        self.register_buffer(
            "total_concentration", torch.tensor(float("nan") if concentration is None else concentration)
        )

    def set_concentration(self, value: float) -> None:
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"total concentration must be a positive finite number, got {value}")
        self.total_concentration.fill_(value)

    def step_schedule(self, step: int) -> None:
        if self.target_spread_start is not None:
            t = min(1.0, step / max(1, self.anneal_steps))
            s0, s1 = self.target_spread_start, self.target_spread_final
            self.target_spread = s0 * (s1 / s0) ** t
            return
        if self.concentration_final is None or self.concentration_start is None:
            return
        t = min(1.0, step / max(1, self.anneal_steps))
        c0, c1 = self.concentration_start, self.concentration_final
        self.set_concentration(c0 * (c1 / c0) ** t)

    def observe(self, actions: Tensor) -> None:
        """The adaptive rule (see the class docstring): one multiplicative step of c from the spread."""
        if self.target_spread is None:
            return
        spread = float(actions.detach().std(dim=1).mean())
        self.last_spread = spread
        c = float(self.total_concentration) * math.exp(self.adapt_rate * (spread - self.target_spread) / self.target_spread)
        self.set_concentration(min(max(c, self.concentration_min), self.concentration_max))

    def forward(self, raw: Tensor, mask: Tensor | None = None) -> DirichletDecision:
        alpha = F.softplus(raw) + self.floor
        if not torch.isnan(self.total_concentration):
            # a copy: adaptive rules update the buffer in place between the forward and the backward pass
            alpha = alpha * (self.total_concentration.clone() / alpha.sum(-1, keepdim=True))
        return DirichletDecision(alpha)


# --------------------------------------------------------------------------------------------
# Beta on [low, high]
# --------------------------------------------------------------------------------------------


class BetaDecision(Decision):
    """y = low + (high − low) x, x ~ Beta(a, b); log p(y) = log Beta(x; a, b) − log(high − low)."""

    def __init__(self, a: Tensor, b: Tensor, low: float, high: float, eps: float = 1e-6):
        self.a, self.b, self.low, self.high, self.eps = a, b, low, high, eps
        self._dist = Beta(a, b, validate_args=False)
        self._log_width = math.log(high - low)

    def _to_unit(self, y: Tensor) -> Tensor:
        return ((y - self.low) / (self.high - self.low)).clamp(self.eps, 1 - self.eps)

    def sample(self, group_size: int) -> tuple[Tensor, Tensor]:
        x = self._dist.sample((group_size,)).transpose(0, 1).clamp(self.eps, 1 - self.eps)  # [B, G]
        y = self.low + (self.high - self.low) * x
        return y, self.log_prob(y)

    def log_prob(self, actions: Tensor) -> Tensor:
        x = self._to_unit(actions).transpose(0, 1)
        return self._dist.log_prob(x).transpose(0, 1) - self._log_width

    def entropy(self) -> Tensor:
        return self._dist.entropy() + self._log_width

    def mode(self) -> Tensor:
        """The mean low + (high − low) a / (a + b)."""
        return self.low + (self.high - self.low) * self.a / (self.a + self.b)

    def kl(self, other: "Decision") -> Tensor:
        assert isinstance(other, BetaDecision)
        return kl_divergence(self._dist, other._dist)


class BetaHead(PolicyHead):
    """A bounded scalar decision (price multiplier, discount depth) in [low, high].

    a, b = softplus(raw) + floor. ``floor = 1`` (default) keeps the density unimodal and
    bounded, which is what a price policy usually wants; lower it to allow U-shaped policies.
    """

    def __init__(self, low: float = 0.0, high: float = 1.0, floor: float = 1.0):
        super().__init__()
        if not (math.isfinite(low) and math.isfinite(high) and high > low):
            raise ValueError(f"need finite low < high, got low={low}, high={high}")
        if floor <= 0:
            raise ValueError(f"floor must be > 0, got {floor}")
        self.low, self.high, self.floor = float(low), float(high), floor
        self.param_dim = 2

    def forward(self, raw: Tensor, mask: Tensor | None = None) -> BetaDecision:
        ab = F.softplus(raw) + self.floor
        return BetaDecision(ab[..., 0], ab[..., 1], self.low, self.high)


# --------------------------------------------------------------------------------------------
# Gaussian-softmax (logistic-normal) on the simplex
# --------------------------------------------------------------------------------------------


class GaussianSoftmaxDecision(Decision):
    """w = softmax([z, 0]), z ~ N(μ, diag σ²) in R^{K−1} (additive logistic-normal).

    The map z ↦ w is a bijection onto the open simplex with z_k = log(w_k / w_K), so
    log p(w) = log N(z; μ, σ²) − Σ_{k=1..K} log w_k, and KL between two such policies equals
    the KL between their Gaussians (KL is invariant under a shared bijection).
    ``entropy()`` is the Gaussian's entropy in logit coordinates (the simplex entropy has no
    closed form; the two differ by E[Σ log w_k]).
    """

    def __init__(self, mean: Tensor, log_std: Tensor, eps: float = 1e-6):
        self.mean, self.log_std, self.eps = mean, log_std, eps
        self.std = log_std.exp()

    def _to_simplex(self, z: Tensor) -> Tensor:
        return torch.softmax(F.pad(z, (0, 1)), dim=-1)

    def sample(self, group_size: int) -> tuple[Tensor, Tensor]:
        noise = torch.randn(
            (self.mean.shape[0], group_size, self.mean.shape[-1]), dtype=self.mean.dtype, device=self.mean.device
        )
        z = self.mean.detach().unsqueeze(1) + self.std.detach().unsqueeze(1) * noise
        w = self._to_simplex(z)
        return w, self.log_prob(w)

    def log_prob(self, actions: Tensor) -> Tensor:
        logw = actions.clamp_min(self.eps).log()
        z = logw[..., :-1] - logw[..., -1:]
        mu, log_std = self.mean.unsqueeze(1), self.log_std.unsqueeze(1)
        gauss = -0.5 * ((z - mu) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
        return gauss.sum(-1) - logw.sum(-1)

    def entropy(self) -> Tensor:
        return (self.log_std + 0.5 * math.log(2 * math.pi * math.e)).sum(-1)

    def mode(self) -> Tensor:
        """softmax([μ, 0]): the image of the Gaussian's mean (and median)."""
        return self._to_simplex(self.mean)

    def kl(self, other: "Decision") -> Tensor:
        assert isinstance(other, GaussianSoftmaxDecision)
        var_ratio = (2 * (self.log_std - other.log_std)).exp()
        t = ((self.mean - other.mean) / other.std) ** 2
        return 0.5 * (var_ratio + t - 1 - 2 * (self.log_std - other.log_std)).sum(-1)


class GaussianSoftmaxHead(PolicyHead):
    """Simplex decisions from a logistic-normal policy, an ablation against :class:`DirichletHead`.

    The network gives μ ∈ R^{K−1}; log σ is a state-independent learned vector (as in PPO's
    Gaussian policies), initialised at ``log(init_std)`` and clamped to [log_std_min, log_std_max].
    """

    def __init__(
        self, n_components: int, init_std: float = 1.0, log_std_min: float = -5.0, log_std_max: float = 2.0
    ):
        super().__init__()
        if n_components < 2:
            raise ValueError(f"a simplex needs n_components >= 2, got {n_components}")
        if init_std <= 0:
            raise ValueError(f"init_std must be > 0, got {init_std}")
        self.n_components = n_components
        self.param_dim = n_components - 1
        self.event_shape = (n_components,)
        self.log_std_min, self.log_std_max = log_std_min, log_std_max
        self.log_std = torch.nn.Parameter(torch.full((n_components - 1,), math.log(init_std)))

    def forward(self, raw: Tensor, mask: Tensor | None = None) -> GaussianSoftmaxDecision:
        log_std = self.log_std.clamp(self.log_std_min, self.log_std_max).expand_as(raw)
        return GaussianSoftmaxDecision(raw, log_std)


def make_head(kind: str, **params) -> PolicyHead:
    """Build a head by name: ``categorical``, ``dirichlet``, ``beta`` or ``gaussian_softmax``."""
    heads = {
        "categorical": CategoricalHead,
        "dirichlet": DirichletHead,
        "beta": BetaHead,
        "gaussian_softmax": GaussianSoftmaxHead,
    }
    if kind not in heads:
        raise ValueError(f"unknown policy head {kind!r}; choose one of {sorted(heads)}")
    return heads[kind](**params)
