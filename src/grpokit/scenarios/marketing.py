"""Offer targeting for a retailer: whom to send which offer, with known ground truth.

Each decision is one customer and one offer. The simulator knows each customer's latent segment,
base purchase probability and basket value, so it gives the exact expected profit of any offer
(and of any joint assignment when offers spill over between peers). Every parameter is in
:class:`MarketingConfig`; all randomness comes from the ``torch.Generator`` passed in, or from
``seed`` in :meth:`MarketingScenario.simulate_log`.

Latent segments (shares in ``segments[i].share``)
--------------------------------------------------
With the default parameters (purchase probabilities over one campaign period):

* ``sure_thing`` (25 %): buys anyway (base 0.60). Offers barely change that, so an offer only gives
  away margin (the discount, the shipping) and costs the contact. Best offer: none.
* ``persuadable`` (20 %): rarely buys on its own (0.04) but responds to any contact (+0.05) and
  most to bigger discounts (+1.5 per unit of discount: +0.075 for 5 % off, +0.30 for 20 % off).
  Best offer: 20 % off.
* ``lost_cause`` (25 %): rarely buys whatever it gets (0.02, under +0.02 with 20 % off). Best: none
  (an occasional big-basket lost cause is worth 20 % off).
* ``sleeping_dog`` (10 %): buys fairly often (0.35) but LESS when contacted (-0.12 for any offer;
  discounts win back only a little). Best: none.
* ``new_customer`` (20 %): moderate (0.10), responds modestly to discounts and strongly to free
  shipping (+0.20). Best: free shipping.

Each customer's own base probability is the segment's ``base_prob`` plus N(0, base_prob_spread),
clipped to [0, 1]; its mean basket value m is lognormal around the segment's ``basket_mean``
(``m = basket_mean · exp(basket_spread · Z − basket_spread² / 2)``, so E[m | segment] = basket_mean).
Both go to ``Contexts.extra`` with the segment: ``extra["segment"]`` (int code into
``segment_names``), ``extra["base_prob"]``, ``extra["basket"]`` (m). None of them is in ``obs``.

Observed features (``obs``, ``feature_names``)
-----------------------------------------------
``[recency, frequency, monetary, tenure, channel_<c>..., region_<r>...]``, obs_dim = 4 + n_channels
+ n_regions. The first four are standardized scores (z units, not days or euros):

* recency, frequency, tenure = the segment's ``profile`` value + ``feature_noise`` · N(0, 1)
  (recency high = long since the last purchase);
* monetary = log(m / monetary_ref) / monetary_log_scale + ``feature_noise`` · N(0, 1): a noisy
  reading of the customer's own latent basket value m.

Channel and region are exact one-hot codes of categories drawn from segment-dependent weights
(``channel_weights``, ``region_weights``; None = uniform). The segment is therefore only partly
recoverable from the features: more ``feature_noise`` hides it more.

Cohorts (``Contexts.group``)
----------------------------
The observable cohort of a customer is region × channel: ``group = region_index · n_channels +
channel_index``, ``n_groups = n_regions · n_channels`` (12 by default), named ``"north/web"`` ...
(``group_names``). The cohort is also what offers spill over within.

Offers (actions, categorical)
-----------------------------
``offers[i]`` has a name, a ``discount`` (fraction of the basket) and ``free_shipping``. Offer 0
must be the no-contact action ("none": no discount, no free shipping); every other offer is a
contact and costs ``contact_cost``. Defaults: none, 5 % off, 10 % off, 20 % off, free shipping.

Purchase probability (clipped linear form)
------------------------------------------
For a customer b of segment s offered o, whose cohort peers are treated at share q_b::

    p = clip(base_prob_b + response_s[o] + spillover · q_b · spillover_sensitivity_s, 0, 1)
    response_s[none] = 0
    response_s[o]    = contact_effect_s + discount_sensitivity_s · discount_o
                       + shipping_effect_s · free_shipping_o                  (o ≠ none)

**Spillover** (word of mouth when > 0): customers who got an offer talk about it and share codes,
so a customer's purchase probability rises with the share of its cohort peers that were treated
(whatever offer they got, whatever offer the customer got). ``spillover < 0`` models the opposite
(offer fatigue / cannibalization: heavily mailed cohorts buy less); ``spillover = 0`` (default)
switches it off exactly, and then each customer's outcome depends on its own offer only.

**Treated share q_b**: rewards are scored for ``actions: [B, G]``; column g (the g-th sample of
every context) is one joint assignment of the whole batch — the batch is the market. q_b for
column g is the share of b's cohort peers *in the batch, excluding b itself* whose offer in
column g is not "none" (0 when b has no peer in the batch). Excluding b means a customer's own
offer acts only through response_s, and peers through q_b. Spillover therefore depends on the
batch composition: ``true_value`` and the oracle score a whole assignment of a fixed set of
contexts; :meth:`simulate_log` treats the whole log as one market.

Money and rewards
-----------------
A purchase has a basket value v = m · exp(basket_noise · Z − basket_noise² / 2) (E[v] = m). For
offer o (d = discount_o, f = free_shipping_o, c = [o ≠ none]) and purchase indicator y ~ Bern(p)::

    revenue = y · v · (1 − d)
    cost    = c · contact_cost + y · (f · shipping_cost + v · (1 − gross_margin))
    profit  = revenue − cost = y · (v · (gross_margin − d) − f · shipping_cost) − c · contact_cost
    spend   = c · contact_cost + y · (v · d + f · shipping_cost)     (the marketing budget used)

With the default ``gross_margin = 1`` the basket value is treated as margin and
``profit = y · (v · (1 − d) − f · shipping) − contact``. ``reward(...)`` returns a dict of ``[B, G]``
components, those named in ``reward_components`` (default ``["profit", "peer_effect"]``: the
customer's own profit plus what its offer adds to its cohort peers through spillover, see
:meth:`MarketingScenario.peer_effect`; add ``revenue``, ``cost``, ``spend`` or ``uplift_profit``
to log them):

* ``profit``, ``revenue``, ``cost``, ``spend``: sampled as above (profit = revenue − cost);
* ``uplift_profit``: ground truth, noise-free: E[profit | o, q_b] − E[profit | none, q_b], the
  expected profit the customer's own offer adds (the effect on peers through q is not in it).
  It is not observable in reality: use it for diagnostics, or as a privileged training signal.

Group-relative components (the seed's "improvement over the group median"): with ``ref`` the
offer named by ``improvement_reference`` ("none": no offer; or the current policy's offer, e.g.
"10% off") and the same random numbers (u, z) as the sampled outcome (a paired draw, same treated
share q_b)::

    improvement_bi            = profit_bi − profit_b(ref)
    relative_to_cohort_median = improvement_bi − median{improvement_jk : cohort_j = cohort_b}
    cohort_percentile_rank    = mid-rank percentile of improvement_bi among its cohort's values, in (0, 1)

the median and the ranks pooled over the B_c·G sampled decisions of the cohort in the batch
(:func:`grpokit.rewards.relative_to_cohort_median`, :func:`grpokit.rewards.cohort_percentile_rank`);
the cohort is ``Contexts.group``. Mix them with profit through ``grpo.reward_weights`` (see
docs/business.md for how to choose the weights).

Careful: the GRPO trainer sums components with ``grpo.reward_weights`` and a missing weight
counts as 1, so when adding components give the extra ones weight 0 (``reward_weights =
{revenue = 0, cost = 0}``) to keep training on profit alone.
``expected_reward`` is the closed-form expected profit ``[B, G]`` under the same column-wise joint
assignments. ``step`` is accepted and ignored (nothing drifts).

Budget
------
``budget_per_customer`` (optional) caps the expected spend per customer, averaged over the
assignment. :meth:`spend` gives the expected spend ``[B, G]``; :meth:`true_value` reports the
spend and whether it is within budget; the oracle respects it. The budget is not enforced on the
rewards: to train under it, add the ``spend`` component with a negative weight (a Lagrange price).

Oracle
------
``oracle_kind == "exact"`` when spillover = 0 and there is no budget: the oracle is each
customer's argmax of expected profit, which is the exact optimum. Otherwise ``"reference"``: the
exact optimum is combinatorial, so the oracle takes the best (feasible) of {per-customer argmax
ignoring spillover (under a budget: the argmax of profit − λ·spend with the smallest λ, found by
bisection, whose true spend, spillover included, is within budget), each single offer for everyone} and improves it by up to ``oracle_rounds`` sweeps of
exact coordinate ascent on the true value (one customer at a time, spillover and budget included;
it stops early once a sweep moves nobody: a local optimum against every single-customer change).
It is never worse than any single-offer-for-all assignment, but it is a reference, not a proven
optimum. ``oracle_info`` records what the last call did (start, λ, moves, sweeps, converged).

Logged data
-----------
:meth:`simulate_log` writes a log in grpokit's logged-decision schema: ``decision_id``, the feature
columns (``feature_names``), ``group`` (int cohort id, ``group_names[i]`` names code i),
``action`` (int offer code), ``reward`` (realized profit), ``pscore`` (the logging policy's
probability of the logged action) and ``true_segment`` (latent segment name, text). A learner may
use the feature columns and ``group``; ``true_segment`` is for evaluation only (being text, it is
left out of the features by :func:`grpokit.offline.io.validate_log` and listed in
``ignored_columns``). Logging policies: ``"uniform"`` (1 / n_offers each) or ``"targeting"``:
customers whose observed frequency score exceeds ``targeting_threshold`` get
``targeting_offer`` with probability ``targeting_prob`` and every other offer with
(1 − targeting_prob) / (n_offers − 1); the others are uniform. Every offer keeps a positive
probability for every customer. :meth:`log_schema` gives the matching ``LogSchema``.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

from grpokit.rewards.components import GROUP_RELATIVE
from grpokit.scenarios.base import Contexts, Scenario

__all__ = ["MarketingConfig", "MarketingScenario", "OfferConfig", "SegmentConfig"]

RewardComponent = Literal["profit", "peer_effect", "revenue", "cost", "uplift_profit", "spend", "improvement",
                          "relative_to_cohort_median", "cohort_percentile_rank"]
CONTINUOUS_FEATURES = ("recency", "frequency", "monetary", "tenure")


class SegmentConfig(BaseModel):
    """One latent customer segment: its share, purchase behaviour, basket and feature profile."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    share: float = Field(gt=0, le=1)
    base_prob: float = Field(ge=0, le=1)  #: purchase probability without contact
    contact_effect: float = Field(0.0, ge=-1, le=1)  #: added by any offer ≠ none
    discount_sensitivity: float = Field(0.0, ge=-10, le=10)  #: added per unit of discount (0.2 off → 0.2 ·)
    shipping_effect: float = Field(0.0, ge=-1, le=1)  #: added by a free-shipping offer
    spillover_sensitivity: float = Field(1.0, ge=0)  #: how strongly peers' offers reach this segment
    basket_mean: float = Field(gt=0)  #: mean basket value of a purchase
    profile: list[float] = Field(min_length=3, max_length=3)  #: mean z-scores of recency, frequency, tenure
    channel_weights: list[float] | None = None  #: relative weights over ``channels`` (None: uniform)
    region_weights: list[float] | None = None  #: relative weights over ``regions`` (None: uniform)


class OfferConfig(BaseModel):
    """One offer (action): a discount on the basket and/or free shipping."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    discount: float = Field(0.0, ge=0, lt=1)
    free_shipping: bool = False


def _default_segments() -> list[SegmentConfig]:
    return [
        SegmentConfig(name="sure_thing", share=0.25, base_prob=0.60, contact_effect=0.0,
                      discount_sensitivity=0.2, shipping_effect=0.02, spillover_sensitivity=0.3,
                      basket_mean=80.0, profile=[-0.8, 1.0, 0.6], channel_weights=[0.3, 0.5, 0.2],
                      region_weights=[0.3, 0.2, 0.25, 0.25]),
        SegmentConfig(name="persuadable", share=0.20, base_prob=0.04, contact_effect=0.05,
                      discount_sensitivity=1.5, shipping_effect=0.06, spillover_sensitivity=1.0,
                      basket_mean=60.0, profile=[0.0, 0.0, 0.0], channel_weights=[0.5, 0.3, 0.2],
                      region_weights=[0.2, 0.35, 0.25, 0.2]),
        SegmentConfig(name="lost_cause", share=0.25, base_prob=0.02, contact_effect=0.005,
                      discount_sensitivity=0.05, shipping_effect=0.0, spillover_sensitivity=0.2,
                      basket_mean=40.0, profile=[1.2, -1.0, 0.3], channel_weights=[0.3, 0.1, 0.6],
                      region_weights=[0.25, 0.25, 0.2, 0.3]),
        SegmentConfig(name="sleeping_dog", share=0.10, base_prob=0.35, contact_effect=-0.12,
                      discount_sensitivity=0.25, shipping_effect=0.02, spillover_sensitivity=0.3,
                      basket_mean=90.0, profile=[0.2, 0.5, 1.2], channel_weights=[0.3, 0.3, 0.4],
                      region_weights=[0.3, 0.2, 0.3, 0.2]),
        SegmentConfig(name="new_customer", share=0.20, base_prob=0.10, contact_effect=0.03,
                      discount_sensitivity=0.4, shipping_effect=0.20, spillover_sensitivity=1.0,
                      basket_mean=50.0, profile=[-0.6, -0.8, -1.5], channel_weights=[0.6, 0.3, 0.1],
                      region_weights=[0.2, 0.3, 0.2, 0.3]),
    ]


def _default_offers() -> list[OfferConfig]:
    return [
        OfferConfig(name="none"),
        OfferConfig(name="5% off", discount=0.05),
        OfferConfig(name="10% off", discount=0.10),
        OfferConfig(name="20% off", discount=0.20),
        OfferConfig(name="free shipping", free_shipping=True),
    ]


class MarketingConfig(BaseModel):
    """Every parameter of the offer-targeting scenario (validated; unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["marketing"] = "marketing"
    seed: int = 0  #: default seed of simulate_log
    segments: list[SegmentConfig] = Field(default_factory=_default_segments, min_length=1)
    offers: list[OfferConfig] = Field(default_factory=_default_offers, min_length=2)
    channels: list[str] = Field(default_factory=lambda: ["web", "app", "store"], min_length=1)
    regions: list[str] = Field(default_factory=lambda: ["north", "south", "east", "west"], min_length=1)
    feature_noise: float = Field(0.4, ge=0)  #: sd of the noise on the four continuous features (z units)
    base_prob_spread: float = Field(0.03, ge=0)  #: sd of a customer's base probability around its segment's
    basket_spread: float = Field(0.4, ge=0, le=3)  #: sd of log m (customer's mean basket) within a segment
    basket_noise: float = Field(0.3, ge=0, le=3)  #: sd of log v / m per purchase (mean preserving)
    monetary_ref: float = Field(60.0, gt=0)  #: basket value at monetary score 0
    monetary_log_scale: float = Field(0.5, gt=0)  #: log-basket units per monetary score unit
    contact_cost: float = Field(0.5, ge=0)  #: cost of sending any offer ≠ none
    shipping_cost: float = Field(6.0, ge=0)  #: paid by the retailer on a purchase with free shipping
    gross_margin: float = Field(1.0, gt=0, le=1)  #: share of the list-price basket that is margin
    spillover: float = Field(0.0, ge=-1, le=1)  #: > 0 word of mouth, < 0 offer fatigue, 0 off
    budget_per_customer: float | None = Field(None, ge=0)  #: cap on mean expected spend per customer
    reward_components: list[RewardComponent] = Field(
        default_factory=lambda: ["profit", "peer_effect"], min_length=1
    )
    #: the offer "improvement" is measured against: "none" (no offer) or the current policy's single offer
    improvement_reference: str = "none"
    oracle_rounds: int = Field(5, ge=0)  #: max coordinate-ascent sweeps of the reference oracle (stops when none moves)
    targeting_offer: str = "10% off"  #: offer the "targeting" logging policy favours
    targeting_prob: float = Field(0.8, gt=0, lt=1)  #: its probability for high-frequency customers
    targeting_threshold: float = 0.0  #: frequency score above which a customer counts as high-frequency

    @model_validator(mode="after")
    def _check(self) -> "MarketingConfig":
        shares = [s.share for s in self.segments]
        if abs(sum(shares) - 1.0) > 1e-6:
            raise ValueError(f"scenario.segments shares must sum to 1, got {shares} (sum {sum(shares):.6g})")
        for key, names in (("segments", [s.name for s in self.segments]), ("offers", [o.name for o in self.offers]),
                           ("channels", self.channels), ("regions", self.regions)):
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"scenario.{key} has duplicate names {dup}")
            if any(not n for n in names):
                raise ValueError(f"scenario.{key} has an empty name")
        for s in self.segments:
            for key, cats in (("channel_weights", self.channels), ("region_weights", self.regions)):
                w = getattr(s, key)
                if w is None:
                    continue
                if len(w) != len(cats):
                    raise ValueError(f"segment {s.name!r}: {key} has {len(w)} entries, expected {len(cats)} ({cats})")
                if any(x < 0 for x in w) or sum(w) <= 0:
                    raise ValueError(f"segment {s.name!r}: {key} must be >= 0 with a positive sum, got {w}")
        none = self.offers[0]
        if none.discount != 0 or none.free_shipping:
            raise ValueError(
                f"scenario.offers[0] must be the no-contact offer (discount 0, no free shipping), got {none.name!r} "
                f"with discount {none.discount} and free_shipping {none.free_shipping}"
            )
        if self.targeting_offer not in [o.name for o in self.offers]:
            raise ValueError(f"scenario.targeting_offer {self.targeting_offer!r} is not one of the offers "
                             f"{[o.name for o in self.offers]}")
        if self.improvement_reference not in [o.name for o in self.offers]:
            raise ValueError(f"scenario.improvement_reference {self.improvement_reference!r} is not one of the offers "
                             f"{[o.name for o in self.offers]}")
        dup = sorted({c for c in self.reward_components if self.reward_components.count(c) > 1})
        if dup:
            raise ValueError(f"scenario.reward_components lists {dup} more than once")
        return self


class MarketingScenario(Scenario):
    """A retailer's offer targeting: latent segments, noisy features, cohort spillover, ground truth."""

    name = "marketing"
    config_class = MarketingConfig

    def __init__(self, config: MarketingConfig | None = None, **params):
        config = self._config_from(config, params)
        self.config = c = config
        self.segment_names = [s.name for s in c.segments]
        self.action_names = [o.name for o in c.offers]
        self.n_segments = len(c.segments)
        self.n_actions = self.n_offers = len(c.offers)
        self.n_channels, self.n_regions = len(c.channels), len(c.regions)
        self.n_groups = self.n_regions * self.n_channels
        self.group_names = [f"{r}/{ch}" for r in c.regions for ch in c.channels]
        self.feature_names = (list(CONTINUOUS_FEATURES) + [f"channel_{ch}" for ch in c.channels]
                              + [f"region_{r}" for r in c.regions])
        self.obs_dim = len(self.feature_names)
        self.action_spec = {"kind": "categorical", "n_actions": self.n_offers}
        self.oracle_kind = "exact" if c.spillover == 0 and c.budget_per_customer is None else "reference"
        self.oracle_info: dict | None = None

        seg = c.segments
        discount = torch.tensor([o.discount for o in c.offers], dtype=torch.float64)
        free_ship = torch.tensor([float(o.free_shipping) for o in c.offers], dtype=torch.float64)
        contact = torch.ones(self.n_offers, dtype=torch.float64)
        contact[0] = 0.0
        col = lambda key: torch.tensor([getattr(s, key) for s in seg], dtype=torch.float64)  # noqa: E731
        response = (col("contact_effect")[:, None] * contact + col("discount_sensitivity")[:, None] * discount
                    + col("shipping_effect")[:, None] * free_ship)
        response[:, 0] = 0.0
        self.response = response  #: [S, A] change in purchase probability of each offer, per segment
        self.discount, self.free_shipping, self.contact = discount, free_ship, contact
        self.spill_sens = col("spillover_sensitivity")
        self.shares = col("share")
        self.base_probs = col("base_prob")
        self.basket_means = col("basket_mean")
        self.profiles = torch.tensor([s.profile for s in seg], dtype=torch.float64)
        cw = torch.tensor([s.channel_weights or [1.0] * self.n_channels for s in seg], dtype=torch.float64)
        rw = torch.tensor([s.region_weights or [1.0] * self.n_regions for s in seg], dtype=torch.float64)
        self.channel_probs = cw / cw.sum(1, keepdim=True)
        self.region_probs = rw / rw.sum(1, keepdim=True)
        self._cache: dict[tuple, dict[str, Tensor]] = {}

    # -- tables ----------------------------------------------------------------------------------

    def _tables(self, device: torch.device, dtype: torch.dtype) -> dict[str, Tensor]:
        key = (torch.device(device), dtype)
        if key not in self._cache:
            names = ("response", "discount", "free_shipping", "contact", "spill_sens", "shares", "base_probs",
                     "basket_means", "profiles", "channel_probs", "region_probs")
            self._cache[key] = {n: getattr(self, n).to(device=device, dtype=dtype) for n in names}
        return self._cache[key]

    # -- contexts --------------------------------------------------------------------------------

    def sample_contexts(self, n: int, generator: torch.Generator) -> Contexts:
        c = self.config
        device = generator.device
        t = self._tables(device, torch.float32)
        seg = torch.multinomial(t["shares"], n, replacement=True, generator=generator)
        channel = torch.multinomial(t["channel_probs"][seg], 1, generator=generator)[:, 0]
        region = torch.multinomial(t["region_probs"][seg], 1, generator=generator)[:, 0]
        z = torch.randn(n, 2, generator=generator, device=device)
        base = (t["base_probs"][seg] + c.base_prob_spread * z[:, 0]).clamp(0.0, 1.0)
        basket = t["basket_means"][seg] * torch.exp(c.basket_spread * z[:, 1] - 0.5 * c.basket_spread**2)
        noise = c.feature_noise * torch.randn(n, 4, generator=generator, device=device)
        prof = t["profiles"][seg]
        monetary = torch.log(basket / c.monetary_ref) / c.monetary_log_scale
        cont = torch.stack([prof[:, 0], prof[:, 1], monetary, prof[:, 2]], 1) + noise
        obs = torch.cat([
            cont,
            torch.nn.functional.one_hot(channel, self.n_channels).float(),
            torch.nn.functional.one_hot(region, self.n_regions).float(),
        ], 1)
        group = region * self.n_channels + channel
        return Contexts(obs=obs, group=group, extra={"segment": seg, "base_prob": base, "basket": basket})

    # -- ground truth ----------------------------------------------------------------------------

    def _check_actions(self, contexts: Contexts, actions: Tensor) -> Tensor:
        if actions.ndim != 2 or actions.shape[0] != len(contexts):
            raise ValueError(f"actions must be [B, G] offer codes with B = {len(contexts)}, got {tuple(actions.shape)}")
        return actions.long()

    def treated_share(self, contexts: Contexts, actions: Tensor) -> Tensor:
        """``[B, G]``: share of each customer's cohort peers in the batch (excluding itself) treated in
        column g (offer ≠ none); 0 for a customer with no peer in the batch."""
        actions = self._check_actions(contexts, actions)
        group = contexts.extra.get("market", contexts.group).long()  # spillover acts within the market
        treated = (actions != 0).to(torch.float64)
        counts = torch.zeros(self.n_groups, actions.shape[1], dtype=torch.float64, device=actions.device)
        counts.index_add_(0, group, treated)
        size = torch.bincount(group, minlength=self.n_groups).to(torch.float64)
        peers = (size[group] - 1.0).clamp_min(1.0).unsqueeze(1)
        return (counts[group] - treated) / peers

    def _terms(self, contexts: Contexts, actions: Tensor, dtype: torch.dtype = torch.float32) -> dict[str, Tensor]:
        """Purchase probability and per-offer money terms of ``actions [B, G]`` (column-wise assignments)."""
        actions = self._check_actions(contexts, actions)
        t = self._tables(actions.device, dtype)
        seg = contexts.extra["segment"].long().unsqueeze(1)
        base = contexts.extra["base_prob"].to(dtype).unsqueeze(1)
        p_none = base
        if self.config.spillover != 0:
            share = self.treated_share(contexts, actions).to(dtype)
            p_none = p_none + self.config.spillover * share * t["spill_sens"][seg]
        return {
            "p": (p_none + t["response"][seg, actions]).clamp(0.0, 1.0),
            "p_none": p_none.clamp(0.0, 1.0),
            "basket": contexts.extra["basket"].to(dtype).unsqueeze(1),
            "discount": t["discount"][actions],
            "free_shipping": t["free_shipping"][actions],
            "contact": t["contact"][actions],
        }

    def _expected_profit(self, terms: dict[str, Tensor], p: Tensor | None = None,
                         none: bool = False) -> Tensor:
        c = self.config
        p = terms["p"] if p is None else p
        if none:
            return p * terms["basket"] * c.gross_margin
        unit = terms["basket"] * (c.gross_margin - terms["discount"]) - c.shipping_cost * terms["free_shipping"]
        return p * unit - c.contact_cost * terms["contact"]

    def purchase_prob(self, contexts: Contexts, actions: Tensor) -> Tensor:
        """Purchase probability ``[B, G]`` of ``actions`` (column-wise joint assignments, spillover included)."""
        return self._terms(contexts, actions)["p"]

    def expected_reward(self, contexts: Contexts, actions: Tensor) -> Tensor:
        """Expected profit ``[B, G]`` (closed form) of ``actions [B, G]``, each column one joint assignment."""
        return self._expected_profit(self._terms(contexts, actions))

    def spend(self, contexts: Contexts, actions: Tensor) -> Tensor:
        """Expected marketing spend ``[B, G]``: contact + p · (basket · discount + shipping if free)."""
        terms = self._terms(contexts, actions)
        money = terms["basket"] * terms["discount"] + self.config.shipping_cost * terms["free_shipping"]
        return self.config.contact_cost * terms["contact"] + terms["p"] * money

    def uplift_profit(self, contexts: Contexts, actions: Tensor) -> Tensor:
        """``[B, G]``: E[profit | own offer, q] − E[profit | none, same q] (the offer's direct effect)."""
        terms = self._terms(contexts, actions)
        return self._expected_profit(terms) - self._expected_profit(terms, terms["p_none"], none=True)

    def peer_effect(self, contexts: Contexts, actions: Tensor) -> Tensor:
        """``[B, G]``: expected profit that customer i's offer adds to its cohort peers through spillover.

        Treating i raises every peer j's treated share by 1 / (n_c − 1), so (ignoring the clip of
        probabilities to [0, 1]) peer_effect_i = [a_i ≠ none] · spillover / (n_c − 1) ·
        Σ_{j ≠ i in cohort} sens_j · unit_j, with unit_j the profit of one purchase of j under its own
        offer. Added to the own profit it is a *difference reward*: the change in the cohort's total
        profit caused by i's decision, so GRPO credits an offer for its spillover (without it, each
        customer's sampled actions only see their own profit and the policy ignores peers). 0 when
        spillover is off.
        """
        actions = self._check_actions(contexts, actions)
        if self.config.spillover == 0:
            return torch.zeros(actions.shape, device=actions.device)
        c = self.config
        t = self._tables(actions.device, torch.float32)
        seg = contexts.extra["segment"].long().unsqueeze(1)
        basket = contexts.extra["basket"].float().unsqueeze(1)
        unit = basket * (c.gross_margin - t["discount"][actions]) - c.shipping_cost * t["free_shipping"][actions]
        weighted = t["spill_sens"][seg] * unit  # [B, G]
        group = contexts.extra.get("market", contexts.group).long()
        total = torch.zeros(self.n_groups, actions.shape[1], device=actions.device).index_add_(0, group, weighted)
        size = torch.bincount(group, minlength=self.n_groups).float()
        peers = (size[group] - 1.0).clamp_min(1.0).unsqueeze(1)
        treated = (actions != 0).float()
        return treated * c.spillover * (total[group] - weighted) / peers

    # -- sampled rewards -------------------------------------------------------------------------

    def _sample(self, contexts: Contexts, actions: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        c = self.config
        terms = self._terms(contexts, actions)
        u = torch.rand(terms["p"].shape, generator=generator, device=terms["p"].device)
        z = torch.randn(terms["p"].shape, generator=generator, device=terms["p"].device)
        bought = (u < terms["p"]).to(terms["p"].dtype)
        v = terms["basket"] * torch.exp(c.basket_noise * z - 0.5 * c.basket_noise**2)
        contact = c.contact_cost * terms["contact"]
        shipping = c.shipping_cost * terms["free_shipping"]
        revenue = bought * v * (1.0 - terms["discount"])
        cost = contact + bought * (shipping + v * (1.0 - c.gross_margin))
        out = {"profit": revenue - cost, "revenue": revenue, "cost": cost,
               "spend": contact + bought * (v * terms["discount"] + shipping)}
        if "peer_effect" in c.reward_components:
            out["peer_effect"] = self.peer_effect(contexts, actions)
        if "uplift_profit" in c.reward_components:
            out["uplift_profit"] = self._expected_profit(terms) - self._expected_profit(terms, terms["p_none"], none=True)
        if any(k in c.reward_components for k in GROUP_RELATIVE):
            from grpokit.rewards.components import group_relative_components

            ref = self.action_names.index(c.improvement_reference)
            t = self._tables(terms["p"].device, terms["p"].dtype)
            seg = contexts.extra["segment"].long().unsqueeze(1)
            p_ref = (terms["p_none"] + t["response"][seg, ref]).clamp(0.0, 1.0)
            bought_ref = (u < p_ref).to(p_ref.dtype)
            profit_ref = (bought_ref * (v * (c.gross_margin - t["discount"][ref]) - c.shipping_cost * t["free_shipping"][ref])
                          - c.contact_cost * t["contact"][ref])
            imp = out["profit"] - profit_ref
            # the run's cohorts (discovered ones under [cohorts]); the math is written once, in rewards/
            out.update(group_relative_components(imp, contexts.group, self.n_groups, GROUP_RELATIVE))
        return out

    def reward(self, contexts: Contexts, actions: Tensor, generator: torch.Generator,
               step: int = 0) -> dict[str, Tensor]:
        """Sampled reward components ``{name: [B, G]}`` (those in ``reward_components``); ``step`` is ignored."""
        out = self._sample(contexts, actions, generator)
        return {k: out[k] for k in self.config.reward_components}

    # -- values of assignments -------------------------------------------------------------------

    def true_value(self, contexts: Contexts, assignment: Tensor) -> dict:
        """Exact expected profit of one joint assignment ``[B]`` (spillover included).

        ``value``: mean expected profit per customer; ``per_group`` / ``per_segment``: the same mean
        within each cohort / latent segment (None when empty); ``spend``: mean expected spend per
        customer; ``within_budget``: spend ≤ budget_per_customer (None without a budget);
        ``offer_rate_by_segment``: share of each segment given an offer ≠ none; ``offer_mix``: share
        of customers given each offer.
        """
        if assignment.shape != (len(contexts),):
            raise ValueError(f"assignment must be [B] = [{len(contexts)}] offer codes, got {tuple(assignment.shape)}")
        a = assignment.long().unsqueeze(1)
        terms = self._terms(contexts, a, torch.float64)
        profit = self._expected_profit(terms)[:, 0]
        money = terms["basket"] * terms["discount"] + self.config.shipping_cost * terms["free_shipping"]
        spend = (self.config.contact_cost * terms["contact"] + terms["p"] * money)[:, 0]
        group = contexts.extra.get("market", contexts.group).long()  # the scenario's own cohorts
        seg = contexts.extra["segment"].long()
        treated = (a[:, 0] != 0).to(torch.float64)

        def by(index: Tensor, values: Tensor, names: list[str]) -> dict:
            n = torch.zeros(len(names), dtype=torch.float64, device=values.device).index_add_(
                0, index, torch.ones_like(values))
            s = torch.zeros_like(n).index_add_(0, index, values)
            return {name: (float(s[i] / n[i]) if n[i] > 0 else None) for i, name in enumerate(names)}

        mean_spend = float(spend.mean())
        budget = self.config.budget_per_customer
        mix = torch.bincount(a[:, 0], minlength=self.n_offers).to(torch.float64) / len(contexts)
        return {
            "value": float(profit.mean()),
            "per_group": by(group, profit, self.group_names),
            "per_segment": by(seg, profit, self.segment_names),
            "spend": mean_spend,
            "within_budget": None if budget is None else mean_spend <= budget + 1e-9,
            "offer_rate_by_segment": by(seg, treated, self.segment_names),
            "offer_mix": dict(zip(self.action_names, mix.tolist())),
        }

    # -- oracle ----------------------------------------------------------------------------------

    def _no_spill_tables(self, contexts: Contexts) -> tuple[Tensor, Tensor]:
        """Per-customer expected profit and spend of every offer with no spillover: ``[B, A]`` each."""
        c = self.config
        t = self._tables(contexts.obs.device, torch.float64)
        seg = contexts.extra["segment"].long()
        base = contexts.extra["base_prob"].to(torch.float64).unsqueeze(1)
        m = contexts.extra["basket"].to(torch.float64).unsqueeze(1)
        p = (base + t["response"][seg]).clamp(0.0, 1.0)
        profit = p * (m * (c.gross_margin - t["discount"]) - c.shipping_cost * t["free_shipping"]) \
            - c.contact_cost * t["contact"]
        spend = c.contact_cost * t["contact"] + p * (m * t["discount"] + c.shipping_cost * t["free_shipping"])
        return profit, spend

    @staticmethod
    def _lagrangian_argmax(profit: Tensor, spend: Tensor, mean_spend, budget: float) -> tuple[Tensor, float]:
        """argmax_a profit − λ·spend (per-customer tables ``[B, A]``) with the smallest λ ≥ 0 (found by
        bisection) whose assignment has ``mean_spend(assignment) <= budget``; all "none" if none does."""

        def pick(lam: float) -> Tensor:
            return (profit - lam * spend).argmax(1)

        def ok(a: Tensor) -> bool:
            return mean_spend(a) <= budget + 1e-12

        a0 = pick(0.0)
        if ok(a0):
            return a0, 0.0
        lo, hi = 0.0, 1.0
        while not ok(pick(hi)):
            lo, hi = hi, hi * 2.0
            if hi > 1e9:
                return torch.zeros_like(a0), math.inf  # all "none": spends nothing
        for _ in range(50):
            mid = 0.5 * (lo + hi)
            lo, hi = (lo, mid) if ok(pick(mid)) else (mid, hi)
        return pick(hi), hi

    def oracle_actions(self, contexts: Contexts) -> Tensor:
        """Best offer per customer ``[B]``: exact when ``oracle_kind == "exact"``, else a reference (see module doc)."""
        c = self.config
        profit, spend = self._no_spill_tables(contexts)
        budget = c.budget_per_customer
        lam = 0.0
        if budget is None:
            start = profit.argmax(1)
        else:  # feasibility judged on the true spend, spillover included
            start, lam = self._lagrangian_argmax(profit, spend, lambda a: self.true_value(contexts, a)["spend"], budget)
        if c.spillover == 0 and lam == 0.0:
            self.oracle_info = {"kind": "exact", "lambda": 0.0, "start": "argmax", "moves": 0, "sweeps": 0,
                                "converged": True}
            return start
        # candidates: the (Lagrangian) argmax and every single offer for everyone; keep the best feasible
        cands = [("argmax", start)] + [
            (f"all {name}", torch.full_like(start, a)) for a, name in enumerate(self.action_names)
        ]
        best_name, best, best_val = None, None, -math.inf
        for name, cand in cands:
            v = self.true_value(contexts, cand)
            if budget is not None and not v["within_budget"]:
                continue
            if v["value"] > best_val + 1e-12:
                best_name, best, best_val = name, cand, v["value"]
        assert best is not None  # "all none" spends nothing
        assign, moves, sweeps, converged = self._coordinate_ascent(contexts, best.clone(), c.oracle_rounds)
        self.oracle_info = {"kind": "reference", "lambda": lam, "start": best_name, "moves": moves,
                            "sweeps": sweeps, "converged": converged, "start_value": best_val,
                            "value": self.true_value(contexts, assign)["value"]}
        return assign

    def _coordinate_ascent(self, contexts: Contexts, assign: Tensor, rounds: int) -> tuple[Tensor, int, int, bool]:
        """Improve ``assign`` one customer at a time by the exact change in total expected profit.

        Gauss–Seidel sweeps over the customers (cohort by cohort): each customer moves to the offer
        that most raises the batch's total expected profit, its own and its peers' (through the
        treated share), holding everyone else fixed; so the true value never decreases. Per cohort
        the table F[T] = Σ_j profit_j(a_j, (T − t_j) / (n − 1)) over every treated count T makes a
        move's effect on the peers exact and O(1) to read. Under a budget a move may not push the
        total expected spend over it.
        """
        c = self.config
        if rounds == 0 or len(contexts) == 0:
            return assign, 0, 0, False
        device = assign.device
        seg = contexts.extra["segment"].long().cpu().numpy()
        base = contexts.extra["base_prob"].double().cpu().numpy()
        m = contexts.extra["basket"].double().cpu().numpy()
        group = contexts.extra.get("market", contexts.group).long().cpu().numpy()
        a_cur = assign.long().cpu().numpy().copy()
        R = self.response.numpy()
        disc, fs, contact = self.discount.numpy(), self.free_shipping.numpy(), self.contact.numpy()
        A = self.n_offers
        treated_of = (np.arange(A) != 0).astype(np.int64)
        pbase = base[:, None] + R[seg]  # [B, A]
        slope = c.spillover * self.spill_sens.numpy()[seg]  # [B]
        unit = m[:, None] * (c.gross_margin - disc) - c.shipping_cost * fs  # [B, A]
        cost = m[:, None] * disc + c.shipping_cost * fs  # [B, A]
        fixed = c.contact_cost * contact  # [A]

        def value(b: int, a, q):
            p = np.clip(pbase[b, a] + slope[b] * q, 0.0, 1.0)
            return p * unit[b, a] - fixed[a], fixed[a] + p * cost[b, a]

        budget_total = None if c.budget_per_customer is None else c.budget_per_customer * len(group)
        cohorts = [np.nonzero(group == g)[0] for g in range(self.n_groups)]
        state = []  # per cohort: (members, n, den, T, Fp, Fs)
        spend_total = 0.0
        for mem in cohorts:
            n = len(mem)
            if n == 0:
                continue
            den = float(max(n - 1, 1))
            t = treated_of[a_cur[mem]]
            T = int(t.sum())
            grid = np.arange(n + 1)[None, :]
            q = (grid - t[:, None]) / den  # [n, n+1]
            p = np.clip(pbase[mem, a_cur[mem]][:, None] + slope[mem][:, None] * q, 0.0, 1.0)
            Fp = (p * unit[mem, a_cur[mem]][:, None] - fixed[a_cur[mem]][:, None]).sum(0)
            Fs = (fixed[a_cur[mem]][:, None] + p * cost[mem, a_cur[mem]][:, None]).sum(0)
            spend_total += float(Fs[T])
            state.append([mem, n, den, T, Fp, Fs])
        moves = sweeps = 0
        converged = False
        cand = np.arange(A)
        for _ in range(rounds):
            sweeps += 1
            moved = 0
            for st in state:
                mem, n, den, _, Fp, Fs = st
                grid = np.arange(n + 1)
                for b in mem:
                    T = st[3]
                    ab = a_cur[b]
                    tb = treated_of[ab]
                    q_own = (T - tb) / den
                    T_new = T - tb + treated_of  # [A]
                    own_p, own_s = value(b, cand, q_own)
                    at_new_p, at_new_s = value(b, ab, (T_new - tb) / den)
                    gain = own_p - at_new_p + Fp[T_new] - Fp[T]
                    if budget_total is not None:
                        dspend = own_s - at_new_s + Fs[T_new] - Fs[T]
                        gain = np.where((dspend > 0) & (spend_total + dspend > budget_total + 1e-9), -np.inf, gain)
                    best = int(np.argmax(gain))
                    if best == ab or not gain[best] > 1e-9 * (1.0 + m[b]):
                        continue
                    tn = treated_of[best]
                    new_p, new_s = value(b, best, (grid - tn) / den)
                    old_p, old_s = value(b, ab, (grid - tb) / den)
                    Fp += new_p - old_p
                    Fs += new_s - old_s
                    if budget_total is not None:
                        spend_total += float(dspend[best])
                    st[3] = T - tb + tn
                    a_cur[b] = best
                    moved += 1
            moves += moved
            if moved == 0:
                converged = True
                break
        return torch.as_tensor(a_cur, device=device), moves, sweeps, converged

    # -- logged data -----------------------------------------------------------------------------

    def logging_probs(self, contexts: Contexts, policy: str = "uniform") -> Tensor:
        """``[B, n_offers]`` probabilities of a logging policy ("uniform" or "targeting", see module doc)."""
        B, A = len(contexts), self.n_offers
        if policy == "uniform":
            return torch.full((B, A), 1.0 / A, device=contexts.obs.device)
        if policy == "targeting":
            c = self.config
            target = self.action_names.index(c.targeting_offer)
            high = contexts.obs[:, CONTINUOUS_FEATURES.index("frequency")] > c.targeting_threshold
            probs = torch.full((B, A), 1.0 / A, device=contexts.obs.device)
            rest = torch.full((A,), (1.0 - c.targeting_prob) / (A - 1), device=contexts.obs.device)
            rest[target] = c.targeting_prob
            probs[high] = rest
            return probs
        raise ValueError(f"unknown logging policy {policy!r}; choose 'uniform' or 'targeting'")

    def log_schema(self):
        """The :class:`~grpokit.offline.schema.LogSchema` of :meth:`simulate_log`'s output (all offers and cohorts)."""
        from grpokit.offline.schema import LogSchema

        return LogSchema(n_actions=self.n_offers, groups=list(range(self.n_groups)))

    def simulate_log(self, n: int, policy: str = "uniform", seed: int | None = None, *,
                     return_contexts: bool = False):
        """``n`` logged decisions of a logging policy, in grpokit's logged-decision schema (see module doc).

        The whole log is one market for spillover. With ``return_contexts`` also returns the
        :class:`Contexts` and the logged actions ``[n]``, to compute true values of other policies.
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if policy not in ("uniform", "targeting"):
            raise ValueError(f"unknown logging policy {policy!r}; choose 'uniform' or 'targeting'")
        gen = torch.Generator().manual_seed(self.config.seed if seed is None else int(seed))
        ctx = self.sample_contexts(n, gen)
        probs = self.logging_probs(ctx, policy)
        action = torch.multinomial(probs, 1, generator=gen)
        pscore = probs.gather(1, action)[:, 0]
        profit = self._sample(ctx, action, gen)["profit"][:, 0]
        action = action[:, 0]
        cols: dict = {"decision_id": np.arange(n, dtype=np.int64)}
        obs = ctx.obs.double().numpy()
        for j, name in enumerate(self.feature_names):
            cols[name] = obs[:, j]
        cols["group"] = ctx.group.numpy().astype(np.int64)
        cols["action"] = action.numpy().astype(np.int64)
        cols["reward"] = profit.double().numpy()
        cols["pscore"] = pscore.double().numpy()
        cols["true_segment"] = np.asarray(self.segment_names, dtype=object)[ctx.extra["segment"].numpy()]
        df = pd.DataFrame(cols)
        if return_contexts:
            return df, ctx, action
        return df
