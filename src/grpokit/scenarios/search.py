"""Marketplace search with ground truth: personalized multi-task fusion weights (GRADE, arXiv 2510.07919).

The decision is a weight vector w on the simplex over K tasks (action_spec ``{"kind": "dirichlet",
"n_components": K}``; default tasks ``p_click``, ``p_order``, ``order_value``). For each request the
ranker fuses the multi-task model's per-candidate scores with w (:func:`grpokit.ranking.fuse`,
``linear``), shows the top-k candidates (:func:`grpokit.ranking.rerank`), and the user reacts to
the shown list under position bias. Everything is simulated, so every quantity has a ground truth.

**Users.** A request comes from a user of a latent type t (default: ``price_sensitive``,
``quality_seeking``, ``browser``, ``buyer``; shares s_t). A type has click and order coefficients
(:class:`UserType`) and a basket quantity q_t.

**Queries and candidates.** Each request has a query with a price level z_p ~ N(0, 1), a price
dispersion z_d ~ N(0, 1), a specificity σ ~ U[0, 1] and a purchase intent ι ~ N(0, 1), and N
candidates (default 30) drawn for that request. Candidate i has a price z-score r_i ~ N(0, 1)
within the query, a relative log price ℓ_i = price_item_spread · exp(price_dispersion_spread ·
z_d) · r_i = log(price_i / the query's median price), price_i = price_median ·
exp(price_query_spread · z_p + ℓ_i), a quality z-score qual_i = ρ_q r_i + √(1 − ρ_q²) ε (expensive
items tend to be better; shown in the log as a rating 1–5), a popularity z-score pop_i = ρ_p r_i
+ √(1 − ρ_p²) ε' (cheap items sell more) and a query relevance rel_i ~ N(0, 1). The truth, for a
user of type t::

    logit P(click | examined)  = c0_t + c_rel,t (0.5 + σ) rel + c_qual,t qual + c_pop,t pop + c_price,t ℓ
    logit P(order | click)     = o0_t + o_intent,t ι + o_qual,t qual + o_pop,t pop + o_price,t ℓ
    order value                = q_t · price

The defaults put the tasks in tension (cheap items are clicked and ordered more, dear ones are
worth more) in type-specific ways, so the best fusion weights differ by type (price-sensitive
users: clicks and orders; browsers: almost only clicks; buyers: orders and value) and, through σ
and z_d, by request.

P(click | examined) is the click probability at position 1 (whose examination probability is 1).

**Position bias** (examination hypothesis). The slot j = 0..k−1 is examined with probability
e_j (``position_bias``: ``log2`` e_j = 1 / log2(j + 2), ``power`` e_j = (j + 1)^−decay,
``geometric`` e_j = decay^j, ``none`` e_j = 1; or an explicit ``examination`` list). An examined
item is clicked with P(click | examined), a click turns into an order with P(order | click), an
order is worth the order value. So for a shown list (i_0, …, i_{k−1})::

    E[clicks] = Σ_j e_j pc_{i_j},  E[orders] = Σ_j e_j pc_{i_j} po_{i_j},  E[GMV] = Σ_j e_j pc_{i_j} po_{i_j} v_{i_j}.

Candidates outside the top-k are never examined.

**The multi-task model** predicts per candidate p̂c = σ(logit pc + noise_click · ε),
p̂o = σ(logit po + noise_order · ε), v̂ = v · exp(noise_value · ε) (independent N(0, 1) ε), plus a
systematic miscalibration: on *expensive* candidates (ℓ_i > ``expensive_threshold``, default
0.25: at least 28% dearer than the query's median) the prediction of ``miscalibrated_task`` is multiplied by ``miscalibration``
(probabilities capped at 0.999). With the default 2.0 on ``p_order`` the model believes expensive
items convert twice as well as they do, so a ranker that trusts predicted GMV over-promotes them.
The draws do not depend on ``miscalibration``: two scenarios that differ only there produce the
same requests and the same noise.

**What the ranker sees.** ``Contexts.extra["scores"]: [B, N, K]`` holds the K task scores the
fusion uses, transformed per ``score_transform``: ``log_zscore`` (default) standardizes
log(prediction) over the request's candidates (scale-free, so each task's weight matters);
``log`` (linear fusion of log scores = the product form Π p̂_k^{w_k}; equal weights then rank by
predicted p̂c · p̂o · v̂ when the tasks are the default three); ``zscore`` (raw predictions
standardized per request); ``raw``. Task ``p_ctcvr`` is p̂c · p̂o. The ranking of a weight vector w
(clipped at 0 and renormalized; all-zero → uniform) is the top-k by Σ_k w_k scores_k.

``Contexts.obs`` (``obs_dim = n_types + 4``, + 3 with ``list_features``): the type one-hot plus N(0, feature_noise²) noise
(a noisy type signal), z_p, z_d, 2σ − 1 and ι. ``Contexts.group`` is the true type (per-type reports).
``Contexts.extra`` also holds ``pred`` [B, N, 3] (p̂c, p̂o, v̂), the truth ``p_click``,
``p_order``, ``value`` [B, N] and the attributes ``price``, ``quality``, ``popularity``,
``relevance``, ``rel_price`` (ℓ) [B, N], all hidden from the policy.

**Rewards** (:meth:`SearchScenario.reward`, a dict of [B, G] components, all in GMV units):

* ``posterior`` — observed feedback on the re-ranked top-k: clicks ~ Bernoulli(e_j pc), orders ~
  Bernoulli(po) given a click, GMV = Σ order · v; the component is
  ``posterior_click`` · clicks + ``posterior_order`` · orders + ``posterior_gmv`` · GMV (default:
  the sampled GMV, so E[posterior] = :meth:`expected_reward`). Sparse: most requests order nothing.
  ``posterior_coupling = "shared"`` (default) draws each candidate's feedback uniforms once per
  request and lets all G rankings of the group read them (common random numbers, like an offline
  auction replaying one set of labels): every ranking's posterior keeps its distribution, but the
  differences within a group are far less noisy (two rankings that show the same items in the same
  slots get the same posterior). ``independent`` draws afresh per ranking and slot.
* ``prior`` — the model's predicted utility of the re-ranked top-k: Σ_j e_j û with û = a_c p̂c +
  a_o p̂c p̂o + a_g p̂c p̂o v̂, the posterior's coefficients on the model's predictions (default:
  predicted GMV Σ_j e_j p̂c p̂o v̂; the same examination curve as the discount), dense but biased
  where the model is miscalibrated.
* ``rules`` — ≤ 0, a penalty on the weight vector's format: ``rule_floor_penalty`` · Σ_k max(0,
  floor_k − w_k) (each task keeps at least ``rule_floor``) + ``rule_default_penalty`` · max(0,
  TV(w, w_default) − ``rule_default_tolerance``) (TV = ½‖w − w_default‖₁ ∈ [0, 1], distance from
  the business's default weights) + ``rule_onehot_penalty`` · max(0, max_k w_k −
  ``rule_onehot_threshold``) (near-one-hot weights). Computed on the renormalized weights.

The trainer sums the components with ``grpo.reward_weights`` (1 each by default).

**Ground truth.** :meth:`expected_reward` is the true expected posterior per request of each weight
vector's ranking (position bias included; the true expected GMV with the default coefficients); :meth:`true_metrics` reports CTR (expected clicks per
shown slot, i.e. E[clicks] / k), CVR (E[orders] / E[clicks]), OPM and GPM (expected orders / GMV
per thousand requests) overall and per type. :meth:`oracle_actions` is the per-request best weight
vector found by a search over the simplex: a fixed grid (step ``oracle_step``, default 0.05: 231
points for K = 3) plus ``oracle_random_points`` seeded Dirichlet(1) points plus the default
weights (so the oracle is never below them), then ``oracle_refine`` rounds of a local lattice 5× finer than the last
(steps 0.01, then 0.002, ±5 steps per coordinate) around each request's incumbent. It is the best
*fused-weight* ranking that search finds (the ranking is piecewise constant in w, so a region
thinner than the lattice can hide a better one), not the best arbitrary ranking (that would sort by pc · po · v; see
:meth:`ideal_gmv`). It picks per request with the truth of that request's candidates, so it also
exploits the model's noise on them: an upper bound, not fully learnable from ``obs``.
:meth:`best_static_weights` (alias :meth:`best_fixed_split`) is the single
grid weight vector with the highest mean true expected posterior (GMV by default) (optionally per type), ``static_default_weights``
the business's production weights.

**Logs.** :meth:`simulate_log` replays a production ranker with the static default weights and
writes one row per (request, candidate) — every candidate, shown or not, because re-ranking
offline needs the unshown candidates' predictions. ``position`` is the displayed slot 1..k for
shown candidates and 0 for the others (``shown`` False; their labels are 0: never examined).
"""

from __future__ import annotations

import itertools
import math
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

from grpokit.ranking.fusion import fuse, rerank
from grpokit.scenarios.base import Contexts, Scenario

__all__ = ["LIST_FEATURES", "SEARCH_TASKS", "SearchConfig", "SearchScenario", "UserType", "list_shape", "simplex_grid"]

#: the task scores a fusion can use: the model's three predictions and their product p̂c · p̂o
SEARCH_TASKS = ("p_click", "p_order", "order_value", "p_ctcvr")
_PRED = {"p_click": 0, "p_order": 1, "order_value": 2}
_PROB_CAP = 0.999
#: the request-level list-shape features (log sd over candidates of the log of each prediction)
LIST_FEATURES = ("list_logsd_p_click", "list_logsd_p_order", "list_logsd_order_value")


def list_shape(pred: Tensor, mask: Tensor | None = None) -> Tensor:
    """``[B, 3]``: log sd over a request's candidates of log p̂c, log p̂o, log v̂ (``pred [B, N, 3]``).

    With ``mask [B, N]`` (True = a real candidate) padded slots are ignored. A request's GMV-best
    linear fusion of z-scored log scores weighs each task by the spread of its log score, so these
    spreads tell a policy how to weigh the tasks for this list.
    """
    x = torch.log(pred.clamp_min(1e-12))
    if mask is None:
        sd = x.std(1)
    else:
        m = mask.to(x.dtype)[..., None]
        n = m.sum(1).clamp_min(2.0)
        mean = (x * m).sum(1) / n
        sd = (((x - mean[:, None]) ** 2 * m).sum(1) / (n - 1)).sqrt()
    return torch.log(sd.clamp_min(1e-6))


class UserType(BaseModel):
    """One latent user type: its share of requests and its true click / order behaviour (logit coefficients)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str
    share: float = Field(gt=0)
    click_intercept: float = -2.0
    click_relevance: float = 0.6  #: times (0.5 + query specificity)
    click_quality: float = 0.3
    click_popularity: float = 0.3
    click_price: float = 0.0  #: per unit of relative log price ℓ = log(price / the query's median price)
    order_intercept: float = -2.0
    order_intent: float = 0.4
    order_quality: float = 0.3
    order_popularity: float = 0.2
    order_price: float = -1.0  #: per unit of ℓ
    quantity: float = Field(1.0, gt=0)  #: items per order: order value = quantity · price


def _default_types() -> list[UserType]:
    return [
        # clicks and orders cheap items
        UserType(name="price_sensitive", share=0.35, click_intercept=-2.6, click_relevance=0.5, click_quality=0.2,
                 click_popularity=0.3, click_price=-1.5, order_intercept=-4.4, order_intent=0.4, order_quality=0.1,
                 order_popularity=0.3, order_price=-3.0),
        # values quality and does not mind (even likes) a higher price
        UserType(name="quality_seeking", share=0.25, click_intercept=-2.8, click_relevance=0.5, click_quality=1.2,
                 click_popularity=0.0, click_price=0.0, order_intercept=-5.0, order_intent=0.4, order_quality=1.8,
                 order_popularity=0.0, order_price=-0.5),
        # clicks a lot (relevant, popular items), rarely orders
        UserType(name="browser", share=0.25, click_intercept=-1.8, click_relevance=1.5, click_quality=0.1,
                 click_popularity=1.2, click_price=0.0, order_intercept=-5.8, order_intent=0.2, order_quality=0.0,
                 order_popularity=0.0, order_price=-0.6),
        # orders often, in bigger baskets; trusts popular items
        UserType(name="buyer", share=0.15, click_intercept=-1.6, click_relevance=0.3, click_quality=0.1,
                 click_popularity=0.3, click_price=0.0, order_intercept=-2.4, order_intent=0.6, order_quality=0.3,
                 order_popularity=1.0, order_price=-0.8, quantity=1.5),
    ]


class SearchConfig(BaseModel):
    """Every parameter of the marketplace-search scenario (validated; unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: Literal["search"] = "search"
    user_types: list[UserType] = Field(default_factory=_default_types)
    #: the K task scores fused by the ranker (from SEARCH_TASKS)
    tasks: list[Literal["p_click", "p_order", "order_value", "p_ctcvr"]] = Field(
        default_factory=lambda: ["p_click", "p_order", "order_value"]
    )
    #: the business's production fusion weights (one per task, on the simplex)
    default_weights: list[float] = Field(default_factory=lambda: [0.6, 0.25, 0.15])
    n_candidates: int = Field(30, ge=2)  #: N candidates per request
    k: int = Field(10, ge=1)  #: slots shown
    # -- items -------------------------------------------------------------------------------
    price_median: float = Field(30.0, gt=0)
    price_query_spread: float = Field(0.6, ge=0)  #: log-sd of the query price level
    price_item_spread: float = Field(0.5, ge=0)  #: median log-sd of the price within a query
    price_dispersion_spread: float = Field(0.3, ge=0)  #: log-sd across queries of the within-query price spread
    quality_price_corr: float = Field(0.4, ge=-1, le=1)
    popularity_price_corr: float = Field(-0.3, ge=-1, le=1)
    # -- position bias -----------------------------------------------------------------------
    position_bias: Literal["log2", "power", "geometric", "none"] = "log2"
    position_decay: float = Field(0.85, gt=0)  #: power: exponent; geometric: ratio (≤ 1)
    examination: list[float] | None = None  #: explicit e_0..e_{k−1} (overrides position_bias)
    # -- the multi-task model ----------------------------------------------------------------
    noise_click: float = Field(0.3, ge=0)  #: sd of the logit noise on p̂c
    noise_order: float = Field(0.3, ge=0)  #: sd of the logit noise on p̂o
    noise_value: float = Field(0.1, ge=0)  #: log-sd of the noise on v̂
    miscalibration: float = Field(2.0, ge=0)  #: multiplier on the miscalibrated task for expensive items (1 = calibrated)
    miscalibrated_task: Literal["p_click", "p_order", "order_value"] = "p_order"
    expensive_threshold: float = 0.25  #: relative log price ℓ above which a candidate is "expensive"
    score_transform: Literal["log_zscore", "log", "zscore", "raw"] = "log_zscore"
    # -- observations ------------------------------------------------------------------------
    feature_noise: float = Field(0.5, ge=0)  #: sd of the noise on the type indicators
    #: add the request's list shape to the observations: log sd over the candidates of log p̂c, log p̂o,
    #: log v̂ (what the ranker knows at serving time; the GMV-best weights of a request scale with them)
    list_features: bool = True
    # -- rewards -----------------------------------------------------------------------------
    posterior_click: float = 0.0
    posterior_order: float = 0.0
    posterior_gmv: float = 1.0
    #: how the G rankings of one request draw feedback: ``shared`` (each candidate's feedback uniforms are
    #: drawn once per request and reused by every ranking: common random numbers, as in an offline auction
    #: on one set of labels) or ``independent`` (a fresh draw per ranking and slot)
    posterior_coupling: Literal["shared", "independent"] = "shared"
    rule_floor: float | list[float] = 0.05  #: per-task weight floor (one value or one per task)
    rule_floor_penalty: float = Field(10.0, ge=0)
    rule_default_penalty: float = Field(2.0, ge=0)
    rule_default_tolerance: float = Field(0.3, ge=0, le=1)
    rule_onehot_penalty: float = Field(10.0, ge=0)
    rule_onehot_threshold: float = Field(0.9, gt=0, le=1)
    # -- ground truth ------------------------------------------------------------------------
    oracle_step: float = Field(0.05, gt=0, le=1)  #: simplex-grid step of the oracle and the static search
    oracle_random_points: int = Field(32, ge=0)  #: extra seeded Dirichlet(1) candidates of the oracle
    oracle_refine: int = Field(2, ge=0)  #: rounds of local refinement (each a 5× finer lattice) after the grid
    seed: int = 0  #: seeds the oracle's random points and the baseline context sample

    @model_validator(mode="after")
    def _check(self) -> "SearchConfig":
        t = len(self.user_types)
        if t < 1:
            raise ValueError("scenario.user_types needs at least one type")
        names = [u.name for u in self.user_types]
        if len(set(names)) != t:
            raise ValueError(f"scenario.user_types names must be distinct, got {names}")
        shares = [u.share for u in self.user_types]
        if abs(sum(shares) - 1.0) > 1e-6:
            raise ValueError(f"scenario.user_types shares must sum to 1, got {shares} (sum {sum(shares):.6g})")
        kt = len(self.tasks)
        if kt < 2:
            raise ValueError(f"scenario.tasks needs at least two tasks to fuse, got {self.tasks}")
        if len(set(self.tasks)) != kt:
            raise ValueError(f"scenario.tasks must be distinct, got {self.tasks}")
        if len(self.default_weights) != kt:
            raise ValueError(
                f"scenario.default_weights has {len(self.default_weights)} entries, expected one per task "
                f"({kt}: {self.tasks})"
            )
        if any(w < 0 for w in self.default_weights) or abs(sum(self.default_weights) - 1.0) > 1e-6:
            raise ValueError(f"scenario.default_weights must be >= 0 and sum to 1, got {self.default_weights}")
        if self.k > self.n_candidates:
            raise ValueError(f"scenario.k = {self.k} exceeds scenario.n_candidates = {self.n_candidates}")
        if self.position_bias == "geometric" and self.position_decay > 1:
            raise ValueError(f"scenario.position_decay must be in (0, 1] for geometric position bias, got {self.position_decay}")
        if self.examination is not None:
            if len(self.examination) != self.k:
                raise ValueError(f"scenario.examination has {len(self.examination)} entries, expected k = {self.k}")
            if any(not 0 <= e <= 1 for e in self.examination):
                raise ValueError(f"scenario.examination entries must be probabilities in [0, 1], got {self.examination}")
        floors = self.rule_floor if isinstance(self.rule_floor, list) else [self.rule_floor] * kt
        if len(floors) != kt:
            raise ValueError(f"scenario.rule_floor has {len(floors)} entries, expected one per task ({kt})")
        if any(f < 0 for f in floors) or sum(floors) > 1:
            raise ValueError(f"scenario.rule_floor must be >= 0 and sum to at most 1, got {floors}")
        n_grid = math.comb(round(1 / self.oracle_step) + kt - 1, kt - 1)
        if abs(1 / self.oracle_step - round(1 / self.oracle_step)) > 1e-9:
            raise ValueError(f"scenario.oracle_step must be 1 / an integer, got {self.oracle_step}")
        if n_grid > 50_000:
            raise ValueError(
                f"scenario.oracle_step = {self.oracle_step} gives {n_grid} grid points for K = {kt}; use a larger step"
            )
        return self


def simplex_grid(k: int, step: float, dtype=torch.float64) -> Tensor:
    """Every point of the simplex in K dimensions whose coordinates are multiples of ``step`` (1 / integer): [P, K]."""
    m = round(1 / step)
    if m < 1 or abs(1 / step - m) > 1e-9:
        raise ValueError(f"step must be 1 / a positive integer, got {step}")
    rows = []
    for bars in itertools.combinations(range(m + k - 1), k - 1):  # stars and bars
        edges = (-1, *bars, m + k - 1)
        rows.append([edges[i + 1] - edges[i] - 1 for i in range(k)])
    return torch.tensor(rows, dtype=dtype) / m


class SearchScenario(Scenario):
    """Marketplace search ranked by fused multi-task scores; the action is the fusion weight vector."""

    name = "search"
    config_class = SearchConfig

    def __init__(self, config: SearchConfig | None = None, **params):
        config = self._config_from(config, params)
        self.config = c = config
        self.types = list(c.user_types)
        self.n_groups = len(self.types)
        self.group_names = [u.name for u in self.types]
        self.tasks = list(c.tasks)
        self.n_tasks = len(self.tasks)
        #: the names of the ``obs`` columns (the request-feature columns of :meth:`simulate_log`)
        self.feature_names = ([f"type_signal_{t}" for t in self.group_names]
                              + ["query_price_level", "query_price_dispersion", "query_specificity", "query_intent"]
                              + (list(LIST_FEATURES) if c.list_features else []))
        self.obs_dim = len(self.feature_names)
        self.action_spec = {"kind": "dirichlet", "n_components": self.n_tasks}
        self.fusion = "linear"
        self.k = c.k
        self.static_default_weights = torch.tensor(c.default_weights, dtype=torch.float32)
        f64 = torch.float64
        self.shares = torch.tensor([u.share for u in self.types], dtype=f64)
        keys = ("click_intercept", "click_relevance", "click_quality", "click_popularity", "click_price",
                "order_intercept", "order_intent", "order_quality", "order_popularity", "order_price", "quantity")
        self.coef = {key: torch.tensor([getattr(u, key) for u in self.types], dtype=f64) for key in keys}
        self.examination = self._examination()
        floors = c.rule_floor if isinstance(c.rule_floor, list) else [c.rule_floor] * self.n_tasks
        self.rule_floors = torch.tensor(floors, dtype=torch.float32)
        grid = simplex_grid(self.n_tasks, c.oracle_step)
        gen = torch.Generator().manual_seed(c.seed + 31_337)
        # Dirichlet(1) points: normalized Exp(1) draws from the seeded generator
        e = -torch.log1p(-torch.rand(c.oracle_random_points, self.n_tasks, generator=gen, dtype=f64))
        extra = e / e.sum(1, keepdim=True).clamp_min(1e-300)
        self.static_grid = grid.float()
        # integer offsets in [−m, m]^K summing to 0 (the local lattice of the oracle's refinement)
        m = max([1] + [mm for mm in range(1, 6) if (2 * mm + 1) ** (self.n_tasks - 1) <= 2_000])
        lattice = torch.cartesian_prod(*[torch.arange(-m, m + 1, dtype=torch.float32)] * self.n_tasks)
        self._local_offsets = lattice[(lattice.sum(1) == 0) & (lattice.abs().sum(1) > 0)]
        self.oracle_candidates = torch.cat([grid, extra, self.static_default_weights[None].double()]).float()

    def _examination(self) -> Tensor:
        c = self.config
        if c.examination is not None:
            return torch.tensor(c.examination, dtype=torch.float32)
        j = torch.arange(c.k, dtype=torch.float64)
        if c.position_bias == "log2":
            e = 1.0 / torch.log2(j + 2.0)
        elif c.position_bias == "power":
            e = (j + 1.0) ** -c.position_decay
        elif c.position_bias == "geometric":
            e = c.position_decay**j
        else:
            e = torch.ones_like(j)
        return e.float()

    # -- contexts -----------------------------------------------------------------------------

    def sample_contexts(self, n: int, generator: torch.Generator) -> Contexts:
        c = self.config
        dev = generator.device
        f32 = torch.float32
        nc = c.n_candidates

        def randn(*shape):
            return torch.randn(*shape, generator=generator, device=dev, dtype=f32)

        group = torch.multinomial(self.shares.to(dev, f32), n, replacement=True, generator=generator)
        signal = torch.nn.functional.one_hot(group, self.n_groups).to(f32) + c.feature_noise * randn(n, self.n_groups)
        zp, spec, intent = randn(n), torch.rand(n, generator=generator, device=dev, dtype=f32), randn(n)
        zd = randn(n)  # the query's price dispersion
        r = randn(n, nc)
        quality = c.quality_price_corr * r + math.sqrt(1 - c.quality_price_corr**2) * randn(n, nc)
        popularity = c.popularity_price_corr * r + math.sqrt(1 - c.popularity_price_corr**2) * randn(n, nc)
        relevance = randn(n, nc)
        eps = randn(n, nc, 3)  # model noise (drawn whatever the noise levels and miscalibration)
        ell = c.price_item_spread * torch.exp(c.price_dispersion_spread * zd)[:, None] * r  # log(price / query median)
        price = c.price_median * torch.exp(c.price_query_spread * zp[:, None] + ell)

        co = {key: v.to(dev, f32)[group][:, None] for key, v in self.coef.items()}
        logit_c = (co["click_intercept"] + co["click_relevance"] * (0.5 + spec[:, None]) * relevance
                   + co["click_quality"] * quality + co["click_popularity"] * popularity + co["click_price"] * ell)
        logit_o = (co["order_intercept"] + co["order_intent"] * intent[:, None] + co["order_quality"] * quality
                   + co["order_popularity"] * popularity + co["order_price"] * ell)
        p_click, p_order = torch.sigmoid(logit_c), torch.sigmoid(logit_o)
        value = co["quantity"] * price

        pred = torch.stack(
            [
                torch.sigmoid(logit_c + c.noise_click * eps[..., 0]),
                torch.sigmoid(logit_o + c.noise_order * eps[..., 1]),
                value * torch.exp(c.noise_value * eps[..., 2]),
            ],
            dim=-1,
        )
        expensive = ell > c.expensive_threshold
        t = _PRED[c.miscalibrated_task]
        col = torch.where(expensive, pred[..., t] * c.miscalibration, pred[..., t])
        if c.miscalibrated_task != "order_value":
            col = col.clamp(max=_PROB_CAP)
        pred = torch.cat([pred[..., :t], col[..., None], pred[..., t + 1 :]], dim=-1)

        obs = [signal, zp[:, None], zd[:, None], 2 * spec[:, None] - 1, intent[:, None]]
        if c.list_features:
            obs.append(list_shape(pred))
        obs = torch.cat(obs, dim=1)
        extra = {
            "scores": self._transform(pred),
            "pred": pred,
            "p_click": p_click,
            "p_order": p_order,
            "value": value,
            "price": price,
            "quality": quality,
            "popularity": popularity,
            "relevance": relevance,
            "rel_price": ell,
        }
        return Contexts(obs=obs, group=group, extra=extra)

    def _transform(self, pred: Tensor) -> Tensor:
        cols = []
        for task in self.tasks:
            cols.append(pred[..., 0] * pred[..., 1] if task == "p_ctcvr" else pred[..., _PRED[task]])
        s = torch.stack(cols, dim=-1)
        how = self.config.score_transform
        if how in ("log_zscore", "log"):
            s = torch.log(s.clamp_min(1e-12))
        if how in ("log_zscore", "zscore"):
            s = (s - s.mean(1, keepdim=True)) / s.std(1, keepdim=True).clamp_min(1e-6)
        return s

    # -- rankings and their outcomes ----------------------------------------------------------

    def _weights(self, contexts: Contexts, weights: Tensor) -> Tensor:
        """Weights as ``[B, G, K]`` on the simplex (clipped at 0, renormalized; all-zero → uniform)."""
        b = len(contexts)
        if weights.ndim == 1:
            weights = weights.expand(b, -1)
        if weights.ndim == 2:
            weights = weights.unsqueeze(1)
        if weights.ndim != 3 or weights.shape[0] != b or weights.shape[-1] != self.n_tasks:
            raise ValueError(f"weights must be [B={b}, G, K={self.n_tasks}], got {tuple(weights.shape)}")
        w = weights.to(contexts.extra["scores"].device, torch.float32).clamp_min(0)
        total = w.sum(-1, keepdim=True)
        return torch.where(total > 0, w / total.clamp_min(1e-30), torch.full_like(w, 1.0 / self.n_tasks))

    def rank(self, contexts: Contexts, weights: Tensor) -> Tensor:
        """Indices ``[B, G, k]`` of the shown candidates (best first) of each weight vector ``[B, G, K]``."""
        w = self._weights(contexts, weights)
        return rerank(fuse(contexts.extra["scores"], w, self.fusion), self.k)

    @staticmethod
    def _take(x: Tensor, idx: Tensor) -> Tensor:
        """``x [B, N]`` at ``idx [B, G, k]``."""
        b, g, k = idx.shape
        return torch.gather(x, 1, idx.reshape(b, g * k)).reshape(b, g, k)

    def ranking_outcomes(self, contexts: Contexts, idx: Tensor) -> dict[str, Tensor]:
        """True expected ``clicks``, ``orders``, ``gmv`` ``[B, G]`` of shown lists ``idx [B, G, k]`` (slot 0 first)."""
        if idx.ndim != 3 or idx.shape[-1] != self.k:
            raise ValueError(f"idx must be [B, G, k={self.k}], got {tuple(idx.shape)}")
        e = self.examination.to(idx.device)
        pc = self._take(contexts.extra["p_click"], idx) * e
        po = self._take(contexts.extra["p_order"], idx)
        v = self._take(contexts.extra["value"], idx)
        return {"clicks": pc.sum(-1), "orders": (pc * po).sum(-1), "gmv": (pc * po * v).sum(-1)}

    def expected_outcomes(self, contexts: Contexts, weights: Tensor) -> dict[str, Tensor]:
        """True expected ``clicks``, ``orders``, ``gmv`` ``[B, G]`` of each weight vector's ranking."""
        return self.ranking_outcomes(contexts, self.rank(contexts, weights))

    def sample_outcomes(self, contexts: Contexts, weights: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """Sampled ``clicks``, ``orders``, ``gmv`` ``[B, G]`` of each weight vector's ranking (position bias included)."""
        return self._sample_ranking(contexts, self.rank(contexts, weights), generator)[0]

    def _sample_ranking(self, contexts: Contexts, idx: Tensor, generator: torch.Generator, shared: bool = False):
        """Sampled feedback of shown lists ``idx [B, G, k]``; ``shared`` draws one pair of uniforms per candidate.

        Click at slot j iff u_click,i < e_j pc_i, order iff also u_order,i < po_i. With ``shared`` the
        uniforms belong to the candidate, so all G rankings of a request see coupled feedback (the
        same item at the same slot gets the same outcome; a higher slot can only add clicks); each
        ranking's outcome keeps exactly the independent-sampling distribution.
        """
        e = self.examination.to(idx.device)
        pc = self._take(contexts.extra["p_click"], idx) * e
        po = self._take(contexts.extra["p_order"], idx)
        v = self._take(contexts.extra["value"], idx)
        if shared:
            b, n = contexts.extra["p_click"].shape
            u_item = torch.rand((2, b, n), generator=generator, device=idx.device, dtype=pc.dtype)
            u = torch.stack([self._take(u_item[0], idx), self._take(u_item[1], idx)])
        else:
            u = torch.rand((2, *idx.shape), generator=generator, device=idx.device, dtype=pc.dtype)
        click = u[0] < pc
        order = click & (u[1] < po)
        gmv = order.to(v.dtype) * v
        out = {"clicks": click.sum(-1).to(v.dtype), "orders": order.sum(-1).to(v.dtype), "gmv": gmv.sum(-1)}
        return out, click, order, gmv

    def _utility(self, pc: Tensor, po: Tensor, v: Tensor) -> Tensor:
        """Per-candidate utility of a click with the posterior's coefficients: a_c pc + a_o pc po + a_g pc po v."""
        c = self.config
        u = c.posterior_gmv * pc * po * v
        if c.posterior_order:
            u = u + c.posterior_order * pc * po
        if c.posterior_click:
            u = u + c.posterior_click * pc
        return u

    def prior_utility(self, contexts: Contexts, weights: Tensor) -> Tensor:
        """The model's predicted utility of each weight vector's shown list, ``[B, G]``: Σ_j e_j û_{i_j} with
        û = a_c p̂c + a_o p̂c p̂o + a_g p̂c p̂o v̂ (the posterior's coefficients; default: predicted GMV)."""
        return self._prior_of(contexts, self.rank(contexts, weights))

    def _prior_of(self, contexts: Contexts, idx: Tensor) -> Tensor:
        pred = contexts.extra["pred"]
        u = self._utility(pred[..., 0], pred[..., 1], pred[..., 2])
        return (self._take(u, idx) * self.examination.to(idx.device)).sum(-1)

    def rule_penalty(self, weights: Tensor) -> Tensor:
        """The (≤ 0) format penalty of weight vectors ``[..., K]`` (after clipping and renormalizing)."""
        from grpokit.ranking.composite import rule_penalty_from

        return rule_penalty_from(self.config, weights, self.rule_floors, self.static_default_weights)

    # -- the scenario interface ---------------------------------------------------------------

    def reward(self, contexts: Contexts, actions: Tensor, generator: torch.Generator, step: int = 0) -> dict[str, Tensor]:
        """``{"posterior", "prior", "rules"}``, each ``[B, G]`` (see the module docstring)."""
        c = self.config
        w = self._weights(contexts, actions)
        idx = rerank(fuse(contexts.extra["scores"], w, self.fusion), self.k)
        sampled = self._sample_ranking(contexts, idx, generator, shared=c.posterior_coupling == "shared")[0]
        posterior = c.posterior_click * sampled["clicks"] + c.posterior_order * sampled["orders"] + c.posterior_gmv * sampled["gmv"]
        return {"posterior": posterior, "prior": self._prior_of(contexts, idx), "rules": self.rule_penalty(w)}

    def expected_reward(self, contexts: Contexts, actions: Tensor) -> Tensor:
        """True expected posterior per request ``[B, G]`` of each weight vector ``actions: [B, G, K]``:
        a_c E[clicks] + a_o E[orders] + a_g E[GMV] (default: the true expected GMV)."""
        c = self.config
        out = self.expected_outcomes(contexts, actions)
        r = c.posterior_gmv * out["gmv"]
        if c.posterior_order:
            r = r + c.posterior_order * out["orders"]
        if c.posterior_click:
            r = r + c.posterior_click * out["clicks"]
        return r

    def true_metrics(self, contexts: Contexts, weights: Tensor) -> dict:
        """True CTR, CVR, OPM, GPM of one weight vector per request (``[B, K]``, or ``[K]`` for all), and per type.

        ``ctr`` = E[clicks] / k (per shown slot), ``cvr`` = E[orders] / E[clicks], ``opm`` / ``gpm`` =
        1000 · mean expected orders / GMV per request; ``per_type`` maps each type name to the same
        dict over its requests (None when it has none).
        """
        if weights.ndim == 3:
            raise ValueError(f"true_metrics takes one weight vector per request, [B, K] or [K], got {tuple(weights.shape)}")
        out = {key: v[:, 0].double() for key, v in self.expected_outcomes(contexts, weights).items()}

        def summary(rows) -> dict | None:
            n = int(rows.sum()) if rows is not None else len(contexts)
            if n == 0:
                return None
            m = {key: float(v[rows].mean() if rows is not None else v.mean()) for key, v in out.items()}
            return {
                "ctr": m["clicks"] / self.k,
                "cvr": m["orders"] / m["clicks"] if m["clicks"] > 0 else float("nan"),
                "opm": 1000.0 * m["orders"],
                "gpm": 1000.0 * m["gmv"],
                "n": n,
            }

        res = summary(None)
        res["per_type"] = {name: summary(contexts.group == t) for t, name in enumerate(self.group_names)}
        return res

    def ideal_gmv(self, contexts: Contexts) -> Tensor:
        """True expected GMV ``[B]`` of the best arbitrary list: the top-k by pc · po · v, in that order."""
        u = contexts.extra["p_click"] * contexts.extra["p_order"] * contexts.extra["value"]
        top = u.topk(self.k, dim=1).values
        return (top * self.examination.to(top.device)).sum(-1)

    def _grid_values(self, contexts: Contexts, points: Tensor, chunk: int = 16) -> Tensor:
        """True expected posterior (:meth:`expected_reward`) ``[B, P]`` of each shared weight vector ``points [P, K]``."""
        b = len(contexts)
        points = points.to(contexts.extra["scores"].device)
        out = [self.expected_reward(contexts, p.unsqueeze(0).expand(b, -1, -1)) for p in points.split(chunk)]
        return torch.cat(out, dim=1)

    def oracle_actions(self, contexts: Contexts, chunk: int = 16) -> Tensor:
        """The per-request best weight vector ``[B, K]``: the simplex grid and the seeded random points, then
        ``oracle_refine`` rounds of a 5× finer local lattice around each request's incumbent."""
        values = self._grid_values(contexts, self.oracle_candidates, chunk)
        cand = self.oracle_candidates.to(values.device)
        best_v, arg = values.max(1)
        best = cand[arg]
        step = self.config.oracle_step
        offsets = self._local_offsets.to(best.device)
        for _ in range(self.config.oracle_refine):
            step /= 5
            for d in offsets.split(chunk):
                w = (best[:, None, :] + step * d[None]).clamp_min(0)
                w = w / w.sum(-1, keepdim=True)
                v = self.expected_reward(contexts, w)
                v_max, j = v.max(1)
                better = v_max > best_v
                best = torch.where(better[:, None], w[torch.arange(len(w), device=w.device), j], best)
                best_v = torch.where(better, v_max, best_v)
        return best

    # -- baselines ----------------------------------------------------------------------------

    def baseline_contexts(self, n_contexts: int = 20_000, seed: int | None = None) -> Contexts:
        """A seeded CPU sample of requests for baselines (``seed`` defaults to ``config.seed``)."""
        seed = self.config.seed if seed is None else seed
        return self.sample_contexts(n_contexts, torch.Generator().manual_seed(seed + 7_919))

    def best_static_weights(
        self, contexts: Contexts | None = None, per_type: bool = False, n_contexts: int = 20_000, seed: int | None = None
    ) -> Tensor:
        """The simplex-grid weight vector with the highest mean true expected posterior (GMV by default): ``[K]``, or ``[n_types, K]`` per type."""
        contexts = self.baseline_contexts(n_contexts, seed) if contexts is None else contexts
        values = self._grid_values(contexts, self.static_grid).double()
        grid = self.static_grid.to(values.device)
        if not per_type:
            return grid[values.mean(0).argmax()]
        out = []
        for t in range(self.n_groups):
            rows = contexts.group == t
            if not bool(rows.any()):
                raise ValueError(f"the contexts have no request of type {self.group_names[t]!r}")
            out.append(grid[values[rows].mean(0).argmax()])
        return torch.stack(out)

    def best_fixed_split(self, seed: int | None = None, n_contexts: int = 20_000, contexts: Contexts | None = None) -> Tensor:
        """Alias of :meth:`best_static_weights` (the name the business baselines look for)."""
        return self.best_static_weights(contexts, n_contexts=n_contexts, seed=seed)

    def static_value(self, weights: Tensor, contexts: Contexts | None = None) -> float:
        """Mean true GMV per request of one weight vector ``[K]`` in every request (default: the baseline sample)."""
        contexts = self.baseline_contexts() if contexts is None else contexts
        return float(self.expected_reward(contexts, torch.as_tensor(weights, dtype=torch.float32)).double().mean())

    fixed_split_value = static_value

    # -- logs ---------------------------------------------------------------------------------

    def simulate_log(self, n_requests: int, policy: str = "default", seed: int = 0, weights: Tensor | None = None,
                     include_truth: bool = False) -> pd.DataFrame:
        """Logs of a production ranker: one row per (request, candidate).

        ``policy``: ``default`` ranks with ``weights`` (default ``static_default_weights``);
        ``uniform`` with weights drawn per request uniformly on the simplex (Dirichlet(1), seeded): an
        exploration log, whose shown lists cover more of what other weights would show.

        Columns: ``request_id``, the request features (``type_signal_<type>``, ``query_price_level``,
        ``query_price_dispersion``, ``query_specificity`` (in [−1, 1]), ``query_intent`` and, with
        ``list_features``, ``list_logsd_p_click|p_order|order_value`` — exactly ``Contexts.obs``, named
        by ``feature_names``), the item
        attributes (``candidate``, ``price``, ``rating`` (1–5), ``popularity``, ``relevance``), the
        model's predictions (``p_click``, ``p_order``, ``order_value``), ``shown`` and ``position``
        (1..k; 0 = not shown), the sampled labels ``click``, ``order``, ``gmv`` (0 when not shown)
        and ``user_type`` (for evaluation only). ``include_truth`` adds ``true_p_click``,
        ``true_p_order``, ``true_order_value`` and ``examination`` (for evaluation only).
        """
        if n_requests < 1:
            raise ValueError(f"n_requests must be >= 1, got {n_requests}")
        if policy not in ("default", "uniform"):
            raise ValueError(f"policy must be 'default' (the production weights) or 'uniform' (random weights per request), got {policy!r}")
        if policy == "uniform" and weights is not None:
            raise ValueError("policy='uniform' draws its own weights: do not pass weights")
        gen = torch.Generator().manual_seed(seed)
        ctx = self.sample_contexts(n_requests, gen)
        w = self.static_default_weights if weights is None else torch.as_tensor(weights, dtype=torch.float32)
        if policy == "uniform":
            e = -torch.log1p(-torch.rand(n_requests, self.n_tasks, generator=gen))
            w = e / e.sum(1, keepdim=True)
        idx = self.rank(ctx, w)  # [B, 1, k]
        _, click, order, gmv = self._sample_ranking(ctx, idx, gen)
        b, n, k = n_requests, self.config.n_candidates, self.k
        rows = torch.arange(b)[:, None].expand(b, k)
        position = torch.zeros(b, n, dtype=torch.long)
        position[rows, idx[:, 0]] = torch.arange(1, k + 1).expand(b, k)
        lab = {}
        for name, x in (("click", click), ("order", order), ("gmv", gmv)):
            full = torch.zeros(b, n, dtype=torch.float32)
            full[rows, idx[:, 0]] = x[:, 0].float()
            lab[name] = full
        ex = ctx.extra

        def flat(x: Tensor) -> np.ndarray:
            return x.reshape(-1).cpu().numpy()

        data = {"request_id": np.repeat(np.arange(b), n)}
        for j, col in enumerate(self.feature_names):
            data[col] = np.repeat(ctx.obs[:, j].cpu().numpy(), n)
        data["candidate"] = np.tile(np.arange(n), b)
        data["price"] = flat(ex["price"])
        data["rating"] = flat((3.5 + 0.6 * ex["quality"]).clamp(1.0, 5.0))
        data["popularity"] = flat(ex["popularity"])
        data["relevance"] = flat(ex["relevance"])
        data["p_click"] = flat(ex["pred"][..., 0])
        data["p_order"] = flat(ex["pred"][..., 1])
        data["order_value"] = flat(ex["pred"][..., 2])
        data["shown"] = flat(position > 0)
        data["position"] = flat(position)
        data["click"] = flat(lab["click"]).astype(np.int64)
        data["order"] = flat(lab["order"]).astype(np.int64)
        data["gmv"] = flat(lab["gmv"])
        data["user_type"] = np.repeat(np.array(self.group_names, dtype=object)[ctx.group.cpu().numpy()], n)
        if include_truth:
            data["true_p_click"] = flat(ex["p_click"])
            data["true_p_order"] = flat(ex["p_order"])
            data["true_order_value"] = flat(ex["value"])
            e = torch.cat([torch.zeros(1), self.examination])
            data["examination"] = flat(e[position])
        return pd.DataFrame(data)
