"""Business reward components: uplift, profit, cohort-relative scores, composition, budget penalty.

Everything works on the trainer's reward layout: B contexts with G sampled actions each, so a
reward component is a ``[B, G]`` tensor and ``group: [B]`` holds each context's integer cohort id
(``Contexts.group``). All functions are torch-only, vectorized (no Python loop over contexts or
cohorts) and stay on the inputs' device.

A reward function may return a dict of named ``[B, G]`` components; :class:`RewardComposer`
weighs them and :class:`BudgetMultiplier` adds a Lagrangian spend penalty, e.g.::

    composer = RewardComposer({"profit": 1.0, "rank_in_cohort": 0.5, "budget_penalty": 1.0})
    budget = BudgetMultiplier(budget=0.3, lr=0.5)

    def reward_fn(contexts, actions):
        p = profit(revenue, cost)                                   # [B, G]
        comps = {
            "profit": p,
            "rank_in_cohort": cohort_percentile_rank(p, contexts.group, n_groups),
            "budget_penalty": budget.penalty(spend),                # −λ·spend
        }
        budget.update(spend.mean())                                 # spend per decision
        return composer(comps)                                      # weighted, logged one by one

How the composer and the trainer's ``reward_weights`` fit together: with
``reward_combine="sum_then_normalize"`` return ``composer(components)`` and leave
``reward_weights`` empty (missing weights are 1 in the trainer, so nothing is weighted twice).
With ``"normalize_then_sum"`` every component is standardized on its own, which erases any
positive scale put on it beforehand; there, return the raw components and set the trainer's
``reward_weights = composer.weights``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor

__all__ = [
    "uplift",
    "profit",
    "cohort_median",
    "relative_to_cohort_median",
    "cohort_percentile_rank",
    "GROUP_RELATIVE",
    "group_relative_components",
    "check_component_names",
    "RewardComposer",
    "BudgetMultiplier",
]


# -- validation helpers ---------------------------------------------------------------------------


def _as_float(x: Tensor) -> Tensor:
    return x if x.is_floating_point() else x.to(torch.get_default_dtype())


def _check_2d(name: str, x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape [B, G], got {tuple(x.shape)}")


def _check_finite(name: str, x: Tensor) -> None:
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        bad = (~torch.isfinite(x)).nonzero()[0].tolist()
        raise ValueError(f"{name}{bad} is {x[tuple(bad)].item()}; values must be finite")


def _check_group(values: Tensor, group: Tensor, n_groups: int) -> None:
    if not isinstance(n_groups, int) or isinstance(n_groups, bool) or n_groups < 1:
        raise ValueError(f"n_groups must be a positive int, got {n_groups!r}")
    if group.shape != (values.shape[0],):
        raise ValueError(f"group must have shape [B] = [{values.shape[0]}], got {tuple(group.shape)}")
    if group.is_floating_point() or group.dtype == torch.bool or group.is_complex():
        raise ValueError(f"group must hold integer cohort ids, got dtype {group.dtype}")
    if group.numel():
        lo, hi = int(group.min()), int(group.max())
        if lo < 0 or hi >= n_groups:
            raise ValueError(f"cohort ids must lie in [0, {n_groups}), got ids in [{lo}, {hi}]")


def _cohort_values(values: Tensor, group: Tensor, n_groups: int, name: str = "values") -> Tensor:
    """Validate ``values [B, K]`` against ``group [B]``; return values as a float tensor."""
    _check_2d(name, values)
    if values.numel() == 0:
        raise ValueError(f"{name} must be non-empty, got shape {tuple(values.shape)}")
    _check_group(values, group, n_groups)
    _check_finite(name, values)
    return _as_float(values)


def _sort_by_cohort(values: Tensor, group: Tensor, n_groups: int):
    """Sort the B·K entries of ``values [B, K]`` by (cohort, value).

    Returns ``(v_sorted [N], g_sorted [N], perm [N], counts [n_groups], starts [n_groups])`` with
    N = B·K, ``v_sorted = values.flatten()[perm]``, cohort c occupying the slice
    ``starts[c] : starts[c] + counts[c]`` of the sorted arrays, ascending inside it.
    """
    k = values.shape[1]
    flat = values.reshape(-1)
    gid = group.long().unsqueeze(1).expand(-1, k).reshape(-1)
    _, by_value = torch.sort(flat)
    _, by_group = torch.sort(gid[by_value], stable=True)  # stable: keeps the value order per cohort
    perm = by_value[by_group]
    counts = torch.bincount(gid, minlength=n_groups)
    starts = counts.cumsum(0) - counts
    return flat[perm], gid[perm], perm, counts, starts


# -- components -----------------------------------------------------------------------------------


def uplift(outcome: Tensor, outcome_control: Tensor) -> Tensor:
    """Incremental outcome of each sampled action: u_bi = y_bi − y0_b.

    ``outcome [B, G]``: y_bi, the (expected or observed) outcome of context b under action i;
    ``outcome_control [B]`` (or ``[B, 1]``): y0_b, the outcome of the same context under "no offer",
    broadcast over the G actions; or ``[B, G]`` when the control outcome is given per sample (e.g.
    a paired draw with common random numbers). Returns ``[B, G]``.
    """
    _check_2d("outcome", outcome)
    b, g = outcome.shape
    if outcome_control.shape == (b,):
        outcome_control = outcome_control.unsqueeze(1)
    elif outcome_control.shape not in ((b, 1), (b, g)):
        raise ValueError(
            f"outcome_control must have shape [B] = [{b}], [B, 1] or [B, G] = [{b}, {g}], "
            f"got {tuple(outcome_control.shape)}"
        )
    return outcome - outcome_control


def profit(revenue: Tensor, cost: Tensor) -> Tensor:
    """Profit of each decision: π_bi = revenue_bi − cost_bi.

    ``revenue [B, G]``; ``cost [B, G]``, or any shape that broadcasts to it (e.g. ``[B, 1]`` for a
    per-context cost, a scalar for a flat cost). Returns ``[B, G]``.
    """
    _check_2d("revenue", revenue)
    out = revenue - cost
    if out.shape != revenue.shape:
        raise ValueError(f"cost of shape {tuple(cost.shape)} must broadcast to revenue's {tuple(revenue.shape)}")
    return out


def cohort_median(values: Tensor, group: Tensor, n_groups: int) -> Tensor:
    """Per-cohort median of ``values [B, K]``: ``[n_groups]``, NaN for cohorts absent from the batch.

    med_c = median{ v_bk : group_b = c, k = 1..K }, pooled over all K values of all contexts of
    cohort c. With n_c pooled values sorted ascending as x_(1) <= ... <= x_(n_c) (1-based):
    med_c = (x_(⌊(n_c+1)/2⌋) + x_(⌊n_c/2⌋+1)) / 2, i.e. the middle value for odd n_c and the
    average of the two middle values for even n_c (numpy.median's convention, not torch.median's
    lower median). Computed with one sort of the B·K values (no loop over cohorts).
    """
    values = _cohort_values(values, group, n_groups)
    v_sorted, _, _, counts, starts = _sort_by_cohort(values, group, n_groups)
    last = v_sorted.numel() - 1
    lo = (starts + (counts - 1).clamp(min=0) // 2).clamp(max=last)
    hi = (starts + counts // 2).clamp(max=last)
    med = 0.5 * (v_sorted[lo] + v_sorted[hi])
    return med.masked_fill(counts == 0, math.nan)


def relative_to_cohort_median(
    values: Tensor, group: Tensor, n_groups: int, reference: Tensor | None = None
) -> Tensor:
    """Improvement over the cohort's typical improvement: r_bi = v_bi − med_{c(b)}.

    ``values [B, G]``: the improvement of each sampled decision (e.g. :func:`uplift` or
    :func:`profit`); ``group [B]``: cohort ids in ``[0, n_groups)``.

    med_c (:func:`cohort_median`, the average of the two middle values for even counts) is taken
    over the pooled B_c·G sampled values of the B_c contexts of cohort c in this batch, i.e. the
    cohort median under the current (sampling) policy, which is what the G actions were drawn
    from. With ``reference [B, K]`` (K >= 1, e.g. the values of a baseline policy's actions for the
    same contexts) it is taken over the pooled B_c·K reference values instead. Since the median
    is taken over the contexts of the batch, every context's own cohort is present: no fallback.
    Returns ``[B, G]`` (float).
    """
    values = _cohort_values(values, group, n_groups)
    ref = values if reference is None else _cohort_values(reference, group, n_groups, "reference")
    med = cohort_median(ref, group, n_groups).to(values.dtype)
    return values - med[group.long()].unsqueeze(1)


def cohort_percentile_rank(values: Tensor, group: Tensor, n_groups: int) -> Tensor:
    """Percentile rank of each value among all values of its cohort in the batch, in (0, 1).

    q_bi = (L_bi + E_bi / 2) / n_c with c = group_b, n_c = B_c·G the number of values of cohort c
    in the batch, L_bi = #{values of cohort c < v_bi}, E_bi = #{values of cohort c == v_bi}
    (counting v_bi itself). This is the mid-rank convention: tied values share their average
    rank, and q = scipy.stats.percentileofscore(cohort_values, v, kind="mean") / 100. A cohort's
    ranks average exactly 1/2; a single value gets 1/2; n distinct values get (j − 1/2)/n,
    j = 1..n. ``values [B, G]``, ``group [B]``; returns ``[B, G]`` (float). O(N log N) in
    N = B·G: one sort, then run boundaries of equal (cohort, value) pairs.
    """
    values = _cohort_values(values, group, n_groups)
    v_sorted, g_sorted, perm, counts, starts = _sort_by_cohort(values, group, n_groups)
    n = v_sorted.numel()
    pos = torch.arange(n, device=values.device)
    # a run = a maximal block of equal (cohort, value) pairs in the sorted order
    change = (v_sorted[1:] != v_sorted[:-1]) | (g_sorted[1:] != g_sorted[:-1])
    first = torch.cat([change.new_ones(1), change])  # entry i opens a run
    last = torch.cat([change, change.new_ones(1)])  # entry i closes a run
    run_start = torch.cummax(torch.where(first, pos, torch.zeros_like(pos)), 0).values
    run_end = torch.where(last, pos + 1, torch.full_like(pos, n))  # exclusive end, at closers
    run_end = torch.flip(torch.cummin(torch.flip(run_end, (0,)), 0).values, (0,))
    less = (run_start - starts[g_sorted]).to(values.dtype)
    equal = (run_end - run_start).to(values.dtype)
    q_sorted = (less + 0.5 * equal) / counts[g_sorted].to(values.dtype)
    out = torch.empty_like(q_sorted)
    out[perm] = q_sorted
    return out.view(values.shape)


#: the group-relative component names a scenario (or the log learner) computes from an improvement
GROUP_RELATIVE = ("improvement", "relative_to_cohort_median", "cohort_percentile_rank")


def check_component_names(names, known: Iterable[str], field: str) -> list[str]:
    """``names`` as a list, or a ValueError naming ``field``, the unknown or repeated names and the known ones."""
    known = list(known)
    if isinstance(names, str) or not isinstance(names, Iterable):
        raise ValueError(f"{field} must be a list of component names, got {names!r}; known components: {known}")
    names = list(names)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"{field}: unknown component{'s' if len(unknown) > 1 else ''} {unknown}; "
                         f"known components: {known}")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"{field} lists {dup} more than once")
    return names


def group_relative_components(
    improvement: Tensor, group: Tensor, n_groups: int, names: Iterable[str]
) -> dict[str, Tensor]:
    """The group-relative components named in ``names`` (those in :data:`GROUP_RELATIVE`), from one improvement.

    ``improvement [B, G]``: d_bi = r_bi − r_b(ref), the reward of each sampled action minus the
    reward of the scenario's reference action for the same context (paired: same random numbers);
    ``group [B]`` the cohort ids. Returns, in :data:`GROUP_RELATIVE` order::

        improvement               = d_bi
        relative_to_cohort_median = d_bi − median{d_jk : group_j = group_b}      (relative_to_cohort_median)
        cohort_percentile_rank    = (#{d_jk < d_bi} + #{d_jk = d_bi} / 2) / n_c   (cohort_percentile_rank)

    the median and the ranks pooled over the B_c·G values of the cohort in the batch. Cohort ids
    beyond ``n_groups`` (e.g. discovered cohorts) widen it to max(id) + 1.
    """
    names = [n for n in GROUP_RELATIVE if n in set(names)]
    out: dict[str, Tensor] = {}
    if not names:
        return out
    group = group.long()
    if group.numel():
        n_groups = max(int(n_groups), int(group.max()) + 1)
    if "improvement" in names:
        out["improvement"] = improvement
    if "relative_to_cohort_median" in names:
        out["relative_to_cohort_median"] = relative_to_cohort_median(improvement, group, n_groups)
    if "cohort_percentile_rank" in names:
        out["cohort_percentile_rank"] = cohort_percentile_rank(improvement, group, n_groups)
    return out


# -- composition ----------------------------------------------------------------------------------


class RewardComposer:
    """Weighted named reward components: R_bi = Σ_c w_c · r_c,bi.

    ``weights``: ``{name: w_c}`` from a config (e.g. ``{"profit": 1.0, "rank_in_cohort": 0.5}``).
    A component without a weight gets ``default_weight`` (1.0 by default, the trainer's own rule
    for ``reward_weights``); weight 0 keeps a component for logging only. ``names``: optionally
    the known component names, so that a misspelled weight fails at construction; otherwise a
    weight is checked against the components of each call. A weight naming no known component is
    a ValueError that lists the known names.

    ``composer(components)`` returns ``{name: w_c · r_c}`` (same order, for the trainer to log
    each one); ``composer.total(components)`` returns Σ_c w_c · r_c ``[B, G]``.
    """

    def __init__(
        self,
        weights: Mapping[str, float] | None = None,
        names: Iterable[str] | None = None,
        default_weight: float = 1.0,
    ):
        weights = dict(weights or {})
        for name, w in weights.items():
            if not isinstance(name, str):
                raise ValueError(f"component names must be strings, got {name!r}")
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
                raise ValueError(f"weight of {name!r} must be a finite number, got {w!r}")
        if isinstance(default_weight, bool) or not isinstance(default_weight, (int, float)) or not math.isfinite(
            default_weight
        ):
            raise ValueError(f"default_weight must be a finite number, got {default_weight!r}")
        self._weights = {k: float(v) for k, v in weights.items()}
        self.default_weight = float(default_weight)
        self.names = None if names is None else list(names)
        if self.names is not None:
            self._check_known(self.names)

    @property
    def weights(self) -> dict[str, float]:
        """The configured weights (a copy), e.g. for the trainer's ``reward_weights``."""
        return dict(self._weights)

    def weight(self, name: str) -> float:
        """w_name: the configured weight, or ``default_weight`` when none is configured."""
        return self._weights.get(name, self.default_weight)

    def _check_known(self, known: Iterable[str]) -> None:
        known = list(known)
        unknown = sorted(set(self._weights) - set(known))
        if unknown:
            raise ValueError(f"reward weights name unknown components {unknown}; known components: {sorted(known)}")

    def _check_components(self, components: Mapping[str, Tensor]) -> None:
        if not isinstance(components, Mapping) or not components:
            raise ValueError("components must be a non-empty dict {name: [B, G] tensor}")
        if self.names is not None:
            extra = sorted(set(components) - set(self.names))
            if extra:
                raise ValueError(f"components {extra} are not among the known components {sorted(self.names)}")
        self._check_known(components)
        shapes = {name: tuple(r.shape) for name, r in components.items()}
        if len(set(shapes.values())) != 1:
            raise ValueError(f"all components must have the same shape [B, G], got {shapes}")

    def __call__(self, components: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``{name: w_name · r_name}`` for every component, in the input order."""
        self._check_components(components)
        return {name: self.weight(name) * r for name, r in components.items()}

    def total(self, components: Mapping[str, Tensor]) -> Tensor:
        """R = Σ_name w_name · r_name: ``[B, G]``."""
        weighted = self(components)
        return sum(weighted.values())  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"RewardComposer(weights={self._weights}, default_weight={self.default_weight})"


# -- budget constraint ----------------------------------------------------------------------------


class BudgetMultiplier:
    """Lagrange multiplier λ >= 0 for the spend constraint E[spend] <= budget, per decision.

    Units: ``budget`` is the allowed expected spend of one decision (one sampled action of one
    context), so the spend fed to :meth:`update` is the batch mean over the B·G sampled decisions
    (``spend.mean()``), not a batch total; a total budget T over N decisions is budget = T / N.

    The policy maximizes the Lagrangian reward r_bi − λ·spend_bi (:meth:`penalize`, or
    :meth:`penalty` = −λ·spend as its own logged component), and λ follows projected dual ascent
    once per batch::

        λ ← clip(λ + η·(s̄ − budget), 0, max_value)          (normalized=False)
        λ ← clip(λ + η·(s̄ − budget) / budget, 0, max_value)  (normalized=True: relative overspend,
                                                              so η does not depend on spend units)

    with s̄ the spend per decision of the batch and η = ``lr``: λ grows while the policy
    overspends, shrinks towards 0 while it underspends, and stays at 0 when the budget does not
    bind. ``max_value`` (default None: no upper bound) caps λ. ``value`` is the current λ,
    ``history`` the λ after each update and ``spend_history`` the spends fed to them;
    ``state_dict``/``load_state_dict`` round-trip all of it, so a resumed run continues exactly.

    ``kp > 0`` makes it a PI controller (Stooke et al., 2020, "PID Lagrangian"): the update above
    acts on an integral term I, and the multiplier used is λ = clip(I + kp·ē, 0, max_value), with
    ē the (normalized) overspend of the last update smoothed by ``ema`` (ē ← ema·ē + (1−ema)·e).
    The proportional term reacts at once to an overspend, so the integral can move slowly, which
    damps the oscillation of plain dual ascent (λ overshoots, the policy stops spending, λ falls
    back to 0, ...). ``decay > 0`` shrinks the step size as η_t = η / (1 + decay·t), so λ settles.
    """

    def __init__(
        self,
        budget: float,
        lr: float,
        init: float = 0.0,
        normalized: bool = False,
        max_value: float | None = None,
        kp: float = 0.0,
        ema: float = 0.0,
        decay: float = 0.0,
    ):
        if not _finite_number(budget) or budget <= 0:
            raise ValueError(f"budget (allowed spend per decision) must be a finite number > 0, got {budget!r}")
        if not _finite_number(lr) or lr <= 0:
            raise ValueError(f"lr (dual step size) must be a finite number > 0, got {lr!r}")
        if max_value is not None and (not _finite_number(max_value) or max_value < 0):
            raise ValueError(f"max_value must be None or a finite number >= 0, got {max_value!r}")
        if not _finite_number(init) or init < 0 or (max_value is not None and init > max_value):
            raise ValueError(f"init must be a finite number in [0, max_value], got {init!r}")
        if not _finite_number(kp) or kp < 0:
            raise ValueError(f"kp (proportional gain) must be a finite number >= 0, got {kp!r}")
        if not _finite_number(ema) or not 0 <= ema < 1:
            raise ValueError(f"ema (smoothing of the overspend) must be in [0, 1), got {ema!r}")
        if not _finite_number(decay) or decay < 0:
            raise ValueError(f"decay (of the dual step size) must be a finite number >= 0, got {decay!r}")
        self.kp, self.ema, self.decay = float(kp), float(ema), float(decay)
        self._integral = float(init)
        self._error = 0.0
        self.budget = float(budget)
        self.lr = float(lr)
        self.normalized = bool(normalized)
        self.max_value = None if max_value is None else float(max_value)
        self._value = float(init)
        self.history: list[float] = []
        self.spend_history: list[float] = []

    @property
    def value(self) -> float:
        """The current multiplier λ >= 0."""
        return self._value

    @property
    def steps(self) -> int:
        return len(self.history)

    def penalty(self, spend: Tensor) -> Tensor:
        """−λ·spend (same shape as ``spend``), to add as a named reward component."""
        return spend * (-self._value)

    def penalize(self, reward: Tensor, spend: Tensor) -> Tensor:
        """The Lagrangian reward r − λ·spend (broadcast like ``reward - spend``)."""
        return reward - self._value * spend

    def update(self, spend_per_decision: float | Tensor) -> float:
        """One projected dual-ascent step on the observed spend per decision; returns the new λ.

        A tensor is reduced to its mean (e.g. pass the ``[B, G]`` spend of the batch directly).
        """
        if isinstance(spend_per_decision, Tensor):
            spend = float(spend_per_decision.detach().float().mean())
        else:
            spend = float(spend_per_decision)
        if not math.isfinite(spend):
            raise ValueError(f"spend per decision must be finite, got {spend}")
        error = spend - self.budget
        if self.normalized:
            error /= self.budget
        lr = self.lr / (1.0 + self.decay * len(self.history))
        integral = max(0.0, self._integral + lr * error)
        if self.max_value is not None:
            integral = min(integral, self.max_value)
        self._integral = integral
        self._error = self.ema * self._error + (1.0 - self.ema) * error
        value = max(0.0, integral + self.kp * self._error)
        if self.max_value is not None:
            value = min(value, self.max_value)
        self._value = value
        self.history.append(value)
        self.spend_history.append(spend)
        return value

    def state_dict(self) -> dict:
        """Plain floats and lists (JSON-serializable)."""
        return {
            "value": self._value,
            "integral": self._integral,
            "error": self._error,
            "history": list(self.history),
            "spend_history": list(self.spend_history),
            "budget": self.budget,
            "lr": self.lr,
            "normalized": self.normalized,
            "max_value": self.max_value,
            "kp": self.kp,
            "ema": self.ema,
            "decay": self.decay,
        }

    def load_state_dict(self, state: Mapping, strict: bool = True) -> None:
        """Restore λ and its history. ``strict``: the budget, lr, normalized and max_value saved
        must equal this multiplier's (a resumed run that changed them is not an exact resume);
        with ``strict=False`` this multiplier's own settings are kept."""
        missing = sorted({"value", "history", "spend_history"} - set(state))
        if missing:
            raise ValueError(f"BudgetMultiplier state is missing {missing}")
        if strict:
            mine = {"budget": self.budget, "lr": self.lr, "normalized": self.normalized, "max_value": self.max_value,
                    "kp": self.kp, "ema": self.ema, "decay": self.decay}
            diff = {k: (state[k], v) for k, v in mine.items() if k in state and state[k] != v}
            if diff:
                raise ValueError(f"saved settings differ from this BudgetMultiplier's (saved, current): {diff}")
        value = float(state["value"])
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"saved multiplier must be finite and >= 0, got {value}")
        if len(state["history"]) != len(state["spend_history"]):
            raise ValueError("saved history and spend_history differ in length")
        self._value = value
        self._integral = float(state.get("integral", value))
        self._error = float(state.get("error", 0.0))
        self.history = [float(x) for x in state["history"]]
        self.spend_history = [float(x) for x in state["spend_history"]]

    def __repr__(self) -> str:
        return (
            f"BudgetMultiplier(value={self._value:.6g}, budget={self.budget}, lr={self.lr}, "
            f"normalized={self.normalized}, kp={self.kp}, steps={self.steps})"
        )


def _finite_number(x) -> bool:
    return not isinstance(x, bool) and isinstance(x, (int, float)) and math.isfinite(x)
