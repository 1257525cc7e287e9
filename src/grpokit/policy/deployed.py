"""A saved policy put to work: raw rows in, decisions with their propensities out.

:class:`DeployedPolicy` wraps a ``policy.pt`` (network + feature encoder + action labels) and
answers what scoring, serving and off-policy evaluation need:

- ``probabilities(rows) -> [n, A]``: the policy's own distribution π(a | x);
- ``served_probabilities(rows, epsilon, mode) -> [n, A]``: what is actually served,
  ``q = (1 - ε) π + ε / A`` (``mode="greedy"``: π replaced by the one-hot of its argmax), so every
  action keeps ``q >= ε / A`` and a log of served decisions can evaluate other policies;
- ``decide(rows, ...)``: one action per row drawn from q, with its propensity ``q[a]``.

Randomness is a uniform per row, ``u = row_uniforms(seed, index)``: a counter-based hash of the
seed and the row's global index, so a table scored in chunks, on several workers or in one pass
gets the same decisions for the same seed. The action is the first a with ``cumsum(q)[a] > u``.
Continuous heads (Beta, Dirichlet, Gaussian-softmax) draw one sample per row and report its density
(``propensities`` = pdf, ``log_density``). The serving ``epsilon`` does not apply to them; a policy
file may carry its own exploration ``metadata["continuous_epsilon"] = ε_c`` (default 0), and then the
served density is the mixture

    q(a | x) = (1 − ε_c) · π(a | x) + ε_c · u(a),   u = 1 / (high − low) on [low, high] (Beta),
                                                     u = Γ(K) = Dirichlet(1, ..., 1) on the K-simplex,

so q >= ε_c · u > 0 everywhere and the density ratio π'(a|x) / q(a|x) of any bounded target is
bounded (:func:`served_log_density`). The draw is an inverse transform of per-row uniforms derived
from the row's 64-bit key (the service's event-id uniform when given, else ``row_seeds(seed,
index)``): v_0 picks the component (v_0 < ε_c: uniform), Beta: x = I⁻¹_{a,b}(v_1); Dirichlet:
g_k = P⁻¹(α_k, v_k) (standard gamma quantiles), w = g / Σ g (clamped into the open simplex as the
head does); Gaussian-softmax: a torch draw seeded by the key. The same key gives the same action.

A policy that embeds the cohort reads it from the row's ``cohort`` field; when the file carries
the cohort model its run discovered (``metadata["cohort_model"]``, plain data), a row without
that field gets c = :func:`grpokit.groups.assign` (model, row's features): the cohort the training
run would have given it (``fields`` lists ``cohort`` as optional then).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from grpokit.policy.features import FeatureEncoder, FeatureError
from grpokit.policy.io import build_policy, load_encoder, read_policy_file
from grpokit.policy.heads import BetaHead, CategoricalHead, DirichletHead
from grpokit.policy.network import MLPTorso, Policy

__all__ = ["DeployedPolicy", "Decisions", "row_uniforms", "row_seeds", "served_log_density", "uniform_log_density"]

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer, vectorized on uint64 (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = (z + np.uint64(0x9E3779B97F4A7C15)) & _M64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _M64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _M64
        return z ^ (z >> np.uint64(31))


def row_seeds(seed: int, index: np.ndarray | Sequence[int]) -> np.ndarray:
    """``uint64 [n]``: a well-mixed 64-bit hash of ``(seed, index)`` per row."""
    idx = np.asarray(index, dtype=np.int64).astype(np.uint64)
    key = _splitmix64(np.array([np.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF)], dtype=np.uint64))[0]
    with np.errstate(over="ignore"):
        return _splitmix64(_splitmix64(idx ^ key) + key)


def row_uniforms(seed: int, index: np.ndarray | Sequence[int]) -> np.ndarray:
    """``float64 [n]`` in [0, 1): the uniform of each row (top 53 bits of :func:`row_seeds`)."""
    return (row_seeds(seed, index) >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


@dataclass
class Decisions:
    """One decision per row. Categorical: ``actions [n]`` codes, ``labels [n]``, ``probabilities
    [n, A]`` the served distribution q; ``propensities [n] = q[action]``. Continuous: ``actions``
    ``[n]`` or ``[n, K]``, ``propensities`` the density at the sample, ``log_density``."""

    actions: np.ndarray
    propensities: np.ndarray
    probabilities: np.ndarray | None = None
    labels: list[str] | None = None
    log_density: np.ndarray | None = None
    extra: dict = field(default_factory=dict)


class DeployedPolicy:
    """A saved policy with its preprocessing; see the module docstring."""

    group_field = "cohort"

    def __init__(self, policy: Policy, metadata: dict, encoder: FeatureEncoder | None, version: str,
                 head_kind: str = "categorical"):
        self.policy = policy.eval()
        self.metadata = metadata
        self.encoder = encoder
        self.version = version
        self.kind = head_kind
        n = getattr(policy.head, "n_actions", None)
        self.n_actions = int(n) if n is not None else None
        labels = metadata.get("action_labels")
        if self.kind == "categorical":
            self.action_labels = [str(a) for a in labels] if labels else [str(a) for a in range(self.n_actions)]
            if len(self.action_labels) != self.n_actions:
                raise ValueError(f"the policy has {self.n_actions} actions but {len(self.action_labels)} labels")
        else:
            self.action_labels = None
        self.group_labels = [str(g) for g in metadata.get("group_labels") or []] or None
        self.needs_group = policy.torso.embedding is not None
        self.cohort_model = self._check_cohort_model(metadata.get("cohort_model"))

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | Path) -> "DeployedPolicy":
        """Read ``path`` with ``weights_only=True`` and rebuild network and encoder."""
        path = Path(path)
        payload = read_policy_file(path)
        policy = build_policy(payload, path)
        kind = payload["head"]["kind"]
        meta = dict(payload.get("metadata") or {})
        version = meta.get("version") or "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        encoder = load_encoder(payload)
        if encoder is not None and encoder.dim != policy.torso.obs_dim:
            raise ValueError(f"{path}: the stored encoder makes {encoder.dim} inputs but the network expects "
                             f"{policy.torso.obs_dim}")
        return cls(policy, meta, encoder, str(version), kind)

    # ------------------------------------------------------------------ what it expects
    @property
    def fields(self) -> list[dict]:
        """The raw input fields (name, type, categories) a row must carry."""
        out = [dict(f) for f in self.encoder.fields] if self.encoder is not None else []
        for f in out:
            f.pop("mean", None)
            f.pop("std", None)
        if self.needs_group:
            out.append({"name": self.group_field, "type": "category", "categories": self.group_labels or []})
            if self.cohort_model is not None:  # a row without it is assigned by the stored cohort model
                out[-1].update(optional=True, assigned_by=f"{self.cohort_model['method']} cohort model on "
                                                          + ", ".join(self.cohort_model["features"]))
        return out

    def describe(self) -> dict:
        """What a client needs to call the policy (for ``GET /v1/policy`` and ``grpokit score``)."""
        out = {"version": self.version, "kind": self.kind, "actions": self.action_labels,
               "n_actions": self.n_actions, "fields": self.fields, "needs_group": self.needs_group}
        if self.cohort_model is not None:
            m = self.cohort_model
            out["cohort_model"] = {"method": m["method"], "n_cohorts": m["n_cohorts"], "cohorts": m["cohort_names"],
                                   "features": m["features"]}
        return out

    def _check_cohort_model(self, model) -> dict | None:
        """The stored cohort model (plain data), checked against the policy's cohorts; None if absent."""
        if model is None:
            return None
        from grpokit.groups.export import FORMAT

        if not isinstance(model, dict) or model.get("format") != FORMAT:
            raise ValueError(f"metadata.cohort_model is not a cohort model ({FORMAT!r} expected)")
        if model["method"] == "column":
            raise ValueError("metadata.cohort_model: a 'column' cohort model assigns nothing the row does not say")
        names = [str(c) for c in model["cohort_names"]]
        if self.needs_group:
            if self.group_labels is not None and names != self.group_labels:
                raise ValueError(f"metadata.cohort_model's cohorts {names} differ from the policy's {self.group_labels}")
            if len(names) != self.policy.torso.n_groups:
                raise ValueError(f"metadata.cohort_model has {len(names)} cohorts, the policy embeds "
                                 f"{self.policy.torso.n_groups}")
        return model

    def assign_cohorts(self, rows, row_index: Sequence[int] | None = None) -> np.ndarray:
        """``[n]`` cohort codes of ``rows`` (a DataFrame or mappings with the model's features) under the
        stored cohort model: c = assign(model, x), exactly as the training run assigned its rows
        (``row_index``: the rows' numbers in errors, default 0..n-1)."""
        from grpokit.groups.export import assign

        if self.cohort_model is None:
            raise ValueError("this policy file carries no cohort model")
        feats = list(self.cohort_model["features"])
        if isinstance(rows, Mapping):
            rows = [rows]
        if not isinstance(rows, pd.DataFrame):
            for j, r in enumerate(rows):
                i = j if row_index is None else int(row_index[j])
                if not isinstance(r, Mapping):
                    raise FeatureError("expected a mapping of field -> value", row=i)
                for f in feats:
                    if f not in r:
                        raise FeatureError("missing field (the cohort model assigns the cohort from it)", field=f, row=i)
                    v = r[f]
                    if not isinstance(v, (int, float, np.integer, np.floating, np.bool_)) or not np.isfinite(v):
                        raise FeatureError(f"expected a finite number (the cohort model reads it), got {v!r}", field=f, row=i)
            rows = pd.DataFrame([{f: float(r[f]) for f in feats} for r in rows], columns=feats)
        else:
            missing = [f for f in feats if f not in rows.columns]
            if missing:
                raise FeatureError("missing column (the cohort model assigns the cohort from it)", field=missing[0])
        try:
            return assign(self.cohort_model, rows)
        except ValueError as err:
            raise FeatureError(f"cannot assign a cohort: {err}") from None

    # ------------------------------------------------------------------ inputs
    def features(self, rows) -> tuple[np.ndarray, np.ndarray | None]:
        """``(x float32 [n, d], group codes [n] or None)`` from a DataFrame, a mapping or a list of mappings."""
        if self.encoder is None:
            raise ValueError("this policy file has no feature names or encoder: pass feature arrays to policy.policy")
        group = None
        if isinstance(rows, Mapping):
            rows = [rows]
        if self.needs_group:
            group = self._group_codes(rows)
            if not isinstance(rows, pd.DataFrame):
                rows = [{k: v for k, v in r.items() if k != self.group_field} if isinstance(r, Mapping) else r
                        for r in rows]
        return self.encoder.transform(rows), group

    def _group_codes(self, rows) -> np.ndarray:
        name = self.group_field
        assigned: dict[int, int] = {}  # rows without the field: the stored cohort model's assignment
        if isinstance(rows, pd.DataFrame):
            if name not in rows.columns:
                if self.cohort_model is None:
                    raise FeatureError("missing column (this policy embeds the cohort)", field=name)
                return self.assign_cohorts(rows)
            values = rows[name].tolist()
        else:
            values = []
            for i, r in enumerate(rows):
                if not isinstance(r, Mapping) or name not in r:
                    if self.cohort_model is None or not isinstance(r, Mapping):
                        raise FeatureError("missing field (this policy embeds the cohort)", field=name, row=i)
                    assigned[i] = -1
                values.append(None if i in assigned else r[name])
            if assigned:
                idx = sorted(assigned)
                assigned = dict(zip(idx, self.assign_cohorts([rows[i] for i in idx], idx).tolist()))
        labels = self.group_labels
        codes = np.empty(len(values), dtype=np.int64)
        for i, v in enumerate(values):
            if i in assigned:
                codes[i] = assigned[i]
                continue
            if labels is not None:
                if str(v) not in labels:
                    raise FeatureError(f"unknown cohort {v!r}; known: {labels}", field=name, row=i)
                codes[i] = labels.index(str(v))
            else:
                if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= int(v) < self.policy.torso.n_groups:
                    raise FeatureError(f"expected a cohort code 0..{self.policy.torso.n_groups - 1}, got {v!r}", field=name, row=i)
                codes[i] = int(v)
        return codes

    # ------------------------------------------------------------------ distributions
    @torch.no_grad()
    def _dist(self, rows):
        x, group = self.features(rows)
        g = None if group is None else torch.as_tensor(group)
        return self.policy(torch.as_tensor(x), g), x, g

    def probabilities(self, rows) -> np.ndarray:
        """``float64 [n, A]``: π(a | x) of a categorical policy."""
        self._need_categorical()
        layers = self._plain_layers()
        if layers is not None:
            x, _ = self.features(rows)
            with torch.inference_mode():
                h = torch.from_numpy(x)
                for m in layers:
                    h = m.forward(h)
                return torch.log_softmax(h, dim=-1).exp().double().numpy()
        dist, _, _ = self._dist(rows)
        return dist.log_probs.exp().double().numpy()

    def _plain_layers(self) -> list | None:
        """The network as a plain chain of layers (torso MLP then output layer) when it is one: no group
        embedding, an unrestricted categorical head, no hooks. Calling each layer's own ``forward``
        in turn runs the very kernels ``Policy.forward`` runs, in the same order (the same numbers,
        bit for bit), without the per-module call overhead that dominates a one-row request. Found
        once per loaded policy (weights updated in place are still used: the layers are the same
        modules)."""
        if self._layers is not False:
            return self._layers
        pol = self.policy
        torso = pol.torso
        self._layers = None
        if (torso.embedding is not None or type(pol.head) is not CategoricalHead or "allowed" in pol.head._buffers
                or type(torso) is not MLPTorso or type(pol) is not Policy):
            return None
        layers = [*torso.net, pol.out]
        for m in (pol, torso, torso.net, pol.head, *layers):
            if m._forward_hooks or m._forward_pre_hooks:
                return None
        self._layers = layers
        return layers

    _layers: list | None | bool = False  #: the plain chain, found once (False: not looked at yet)

    def served_probabilities(self, rows=None, *, epsilon: float = 0.05, mode: str = "sample",
                             probabilities: np.ndarray | None = None) -> np.ndarray:
        """``float64 [n, A]``: q = (1 − ε)·π + ε / A, with π one-hot at its argmax when ``mode="greedy"``."""
        self._need_categorical()
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        if mode not in ("sample", "greedy"):
            raise ValueError(f"mode must be 'sample' or 'greedy', got {mode!r}")
        pi = self.probabilities(rows) if probabilities is None else np.asarray(probabilities, dtype=np.float64)
        if mode == "greedy":
            one_hot = np.zeros_like(pi)
            one_hot[np.arange(len(pi)), pi.argmax(1)] = 1.0
            pi = one_hot
        return (1.0 - epsilon) * pi + epsilon / pi.shape[1]

    def decide(self, rows, *, epsilon: float = 0.05, mode: str = "sample", seed: int = 0,
               row_index: Sequence[int] | np.ndarray | None = None,
               uniforms: np.ndarray | None = None) -> Decisions:
        """One decision per row with its propensity (see the module docstring for the draw)."""
        if isinstance(rows, Mapping):
            rows = [rows]
        n = len(rows)
        index = np.arange(n) if row_index is None else np.asarray(row_index)
        if len(index) != n:
            raise ValueError(f"row_index has {len(index)} entries for {n} rows")
        if self.kind != "categorical":
            return self._decide_continuous(rows, seed, index, uniforms)
        q = self.served_probabilities(rows, epsilon=epsilon, mode=mode)
        u = row_uniforms(seed, index) if uniforms is None else np.asarray(uniforms, dtype=np.float64)
        if u.shape != (n,) or np.any((u < 0) | (u >= 1)):
            raise ValueError("uniforms must be n numbers in [0, 1)")
        cdf = np.cumsum(q, axis=1)
        cdf[:, -1] = np.inf  # rounding: the last action catches u close to 1
        actions = (cdf > u[:, None]).argmax(1)
        return Decisions(actions=actions.astype(np.int64), propensities=q[np.arange(n), actions],
                         probabilities=q, labels=[self.action_labels[a] for a in actions])

    @property
    def continuous_epsilon(self) -> float:
        """ε_c of the served mixture (1 − ε_c) π + ε_c u of a continuous head (0: π itself)."""
        return float(self.metadata.get("continuous_epsilon") or 0.0)

    @torch.no_grad()
    def continuous_dist(self, rows):
        """``(decision, x)``: the head's distribution π(· | x) for ``rows`` (continuous heads)."""
        x, group = self.features(rows)
        g = None if group is None else torch.as_tensor(group)
        return self.policy.head(self.policy.out(self.policy.torso(torch.as_tensor(x), g))), x

    @torch.no_grad()
    def _decide_continuous(self, rows, seed: int, index: np.ndarray, uniforms=None) -> Decisions:
        dist, x = self.continuous_dist(rows)
        n = len(x)
        if uniforms is not None:
            u = np.asarray(uniforms, dtype=np.float64)
            if u.shape != (n,) or np.any((u < 0) | (u >= 1)):
                raise ValueError("uniforms must be n numbers in [0, 1)")
            keys = (u * 9007199254740992.0).astype(np.uint64)
        else:
            keys = row_seeds(seed, index)
        eps = self.continuous_epsilon
        head = self.policy.head
        k = int(getattr(head, "n_components", 1))
        v = _sub_uniforms(keys, k + 1)  # [n, k + 1]
        explore = v[:, 0] < eps
        if isinstance(head, BetaHead):
            from scipy.special import betaincinv

            a, b = dist.a.double().numpy(), dist.b.double().numpy()
            unit = np.where(explore, v[:, 1], betaincinv(a, b, v[:, 1]))
            unit = np.clip(unit, dist.eps, 1 - dist.eps)
            actions_arr = head.low + (head.high - head.low) * unit
        elif isinstance(head, DirichletHead):
            from scipy.special import gammaincinv

            alpha = dist.concentration.double().numpy()
            shape = np.where(explore[:, None], 1.0, alpha)
            gam = gammaincinv(shape, v[:, 1:])
            w = np.clip(gam, dist.eps, None)
            w = w / w.sum(1, keepdims=True)
            actions_arr = w
        else:  # Gaussian-softmax (and any other head): a torch draw seeded by the row's key
            out = []
            with torch.random.fork_rng(devices=[]):
                for i in range(n):
                    torch.manual_seed(int(keys[i] >> np.uint64(1)))
                    one = type(dist)(dist.mean[i : i + 1], dist.log_std[i : i + 1])
                    out.append(one.sample(1)[0][0, 0].double().numpy())
            actions_arr = np.stack(out) if out else np.zeros((0, k))
            if eps > 0:
                raise ValueError("metadata.continuous_epsilon applies to Beta and Dirichlet heads only")
        log_density = served_log_density(dist, head, actions_arr, eps) if n else np.zeros(0)
        if actions_arr.ndim == 1 or isinstance(head, BetaHead):
            actions_arr = np.asarray(actions_arr, dtype=np.float64).reshape(n)
        return Decisions(actions=actions_arr, propensities=np.exp(log_density), log_density=log_density,
                         extra={"explored": explore})

    def _need_categorical(self) -> None:
        if self.kind != "categorical":
            raise ValueError(f"this is a {self.kind} policy (continuous actions): use decide(), which reports densities")

    def __repr__(self) -> str:
        return f"DeployedPolicy(version={self.version!r}, kind={self.kind!r}, actions={self.action_labels})"


def _sub_uniforms(keys: np.ndarray, m: int) -> np.ndarray:
    """``float64 [n, m]``: m independent uniforms in [0, 1) per 64-bit row key (SplitMix64 of key and j)."""
    keys = np.asarray(keys, dtype=np.uint64)
    out = np.empty((len(keys), m))
    with np.errstate(over="ignore"):
        for j in range(m):
            z = _splitmix64(_splitmix64(keys ^ np.uint64(0xD1B54A32D192ED03 * (j + 1) & 0xFFFFFFFFFFFFFFFF)) + np.uint64(j))
            out[:, j] = (z >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)
    return out


def uniform_log_density(head) -> float:
    """log u of the exploration component: −log(high − low) for a Beta head, log Γ(K) on the K-simplex."""
    import math

    if isinstance(head, BetaHead):
        return -math.log(head.high - head.low)
    k = getattr(head, "n_components", None)
    if k is None:
        raise ValueError(f"no uniform exploration density for a {type(head).__name__}")
    return math.lgamma(k)


def served_log_density(dist, head, actions, epsilon: float) -> np.ndarray:
    """``float64 [n]``: log q(a_i | x_i) with q = (1 − ε) π + ε u (:func:`uniform_log_density`).

    ``dist``: the head's distribution over n contexts; ``actions``: ``[n]`` (Beta) or ``[n, K]``.
    ε = 0: log π(a_i | x_i) (the head's own ``log_prob``).
    """
    a = torch.as_tensor(np.asarray(actions), dtype=torch.float64)
    a = a.reshape(len(a), 1) if isinstance(head, BetaHead) else a.reshape(len(a), 1, -1)
    with torch.no_grad():
        lp = _log_prob64(dist, a)[:, 0].numpy()
    if epsilon <= 0:
        return lp
    lu = uniform_log_density(head)
    return np.logaddexp(np.log1p(-epsilon) + lp, np.log(epsilon) + lu) if epsilon < 1 else np.full(len(lp), lu)


def _log_prob64(dist, a: torch.Tensor) -> torch.Tensor:
    """The head distribution's log density in float64 (its parameters cast), at ``a [n, 1(, K)]``."""
    from grpokit.policy.heads import BetaDecision, DirichletDecision

    if isinstance(dist, BetaDecision):
        return BetaDecision(dist.a.double(), dist.b.double(), dist.low, dist.high, dist.eps).log_prob(a)
    if isinstance(dist, DirichletDecision):
        return DirichletDecision(dist.concentration.double(), dist.eps).log_prob(a)
    return dist.log_prob(a.to(getattr(dist, "mean", a).dtype)).double()
