"""A numpy forward pass of a plain categorical policy, for the few rows of one serving request.

For a :class:`~grpokit.policy.network.Policy` whose torso is an :class:`MLPTorso` (optionally with
the cohort embedding) and whose head is an unrestricted :class:`CategoricalHead`:

    h_0 = [x, E[g]],   h_k = f(W_k h_{k-1} + b_k),   π(· | x, g) = softmax(W_out h_K + b_out)

computed in float32 like the network (matrix products, bias, activation), the softmax in float64
from the float32 logits. It equals ``Policy.forward``'s probabilities to float32 rounding (a few
1e-8 absolute; the kernels and summation orders differ, so not bit for bit), and costs a few
microseconds where a torch call on one row costs tens (dispatch, autograd mode, tensor wrappers).

The arrays are views of the network's parameters (``Tensor.numpy()`` shares memory), so weights
updated in place are seen; a policy whose parameters are replaced or moved needs a new forward.
:func:`numpy_forward` returns None for anything else (another torso or head, a restricted head,
hooks, GPU or non-float32 weights): the caller then runs the torch module.
"""

from __future__ import annotations

import math

import numpy as np
from torch import nn

from grpokit.policy.heads import CategoricalHead
from grpokit.policy.network import MLPTorso, Policy

__all__ = ["NumpyCategoricalForward", "numpy_forward", "draw_served"]

_SQRT_HALF = 1.0 / math.sqrt(2.0)


def _tanh(h: np.ndarray) -> np.ndarray:
    return np.tanh(h, out=h)


def _relu(h: np.ndarray) -> np.ndarray:
    return np.maximum(h, 0.0, out=h)


def _silu(h: np.ndarray) -> np.ndarray:
    return h / (np.float32(1.0) + np.exp(-h))  # x · sigmoid(x)


def _gelu(h: np.ndarray) -> np.ndarray:
    from scipy.special import erf  # exact GELU (torch's default): x · Φ(x) = x/2 · (1 + erf(x/√2))

    return h * np.float32(0.5) * (np.float32(1.0) + erf(h * np.float32(_SQRT_HALF)))


_ACTIVATIONS = {nn.Tanh: _tanh, nn.ReLU: _relu, nn.SiLU: _silu}


def _activation(m: nn.Module):
    fn = _ACTIVATIONS.get(type(m))
    if fn is not None:
        return fn
    if type(m) is nn.GELU and m.approximate == "none":
        try:
            import scipy.special  # noqa: F401
        except ImportError:  # pragma: no cover - scipy is a dependency
            return None
        return _gelu
    return None


def _view(t) -> np.ndarray | None:
    if t.device.type != "cpu" or t.dtype.is_complex or str(t.dtype) != "torch.float32":
        return None
    return t.detach().numpy()


class NumpyCategoricalForward:
    """π(· | x, g) of a plain categorical policy in numpy (see the module docstring)."""

    def __init__(self, layers: list[tuple[np.ndarray, np.ndarray, object]], embedding: np.ndarray | None,
                 obs_dim: int) -> None:
        self.layers = layers  #: (W^T [in, out] float32 view, b [out], activation or None) per layer
        self.embedding = embedding
        self.obs_dim = obs_dim

    def logits(self, x: np.ndarray, group: np.ndarray | None = None) -> np.ndarray:
        """``float32 [n, A]``: W_out h_K + b_out for ``x float32 [n, obs_dim]`` (and cohort codes ``group [n]``)."""
        if x.ndim != 2 or x.shape[1] != self.obs_dim:
            raise ValueError(f"x must have shape [n, {self.obs_dim}], got {tuple(x.shape)}")
        h = x if x.dtype == np.float32 else x.astype(np.float32)
        if self.embedding is not None:
            if group is None:
                raise ValueError("this policy embeds the cohort: pass its codes")
            h = np.concatenate([h, self.embedding[np.asarray(group, dtype=np.int64)]], axis=1)
        for wt, b, act in self.layers:
            h = np.dot(h, wt)
            np.add(h, b, out=h)
            if act is not None:
                h = act(h)
        return h

    def probabilities(self, x: np.ndarray, group: np.ndarray | None = None) -> np.ndarray:
        """``float64 [n, A]``: softmax of the logits (max subtracted), in float64."""
        z = self.logits(x, group).astype(np.float64)
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        return z


def numpy_forward(policy: Policy) -> NumpyCategoricalForward | None:
    """The numpy forward of ``policy``, or None when it is not a plain categorical MLP (see the module docstring)."""
    if type(policy) is not Policy or type(policy.torso) is not MLPTorso or type(policy.head) is not CategoricalHead:
        return None
    if "allowed" in policy.head._buffers:  # a restricted head: the torch module masks
        return None
    torso = policy.torso
    modules = [policy, torso, torso.net, policy.head, policy.out, *torso.net]
    if torso.embedding is not None:
        modules.append(torso.embedding)
    if any(m._forward_hooks or m._forward_pre_hooks for m in modules):
        return None
    if torso.embedding is not None and (type(torso.embedding) is not nn.Embedding or torso.embedding.max_norm is not None):
        return None
    layers: list = []
    seq = list(torso.net) + [policy.out]
    k = 0
    while k < len(seq):
        lin = seq[k]
        if type(lin) is not nn.Linear:
            return None
        act = None
        if k + 1 < len(seq) and type(seq[k + 1]) is not nn.Linear:
            act = _activation(seq[k + 1])
            if act is None:
                return None
            k += 1
        w = _view(lin.weight)
        b = _view(lin.bias) if lin.bias is not None else np.zeros(lin.out_features, np.float32)
        if w is None or b is None:
            return None
        layers.append((w.T, b, act))
        k += 1
    if layers[-1][2] is not None:  # the output layer feeds the softmax directly
        return None
    emb = None
    if torso.embedding is not None:
        emb = _view(torso.embedding.weight)
        if emb is None:
            return None
    return NumpyCategoricalForward(layers, emb, torso.obs_dim)


def draw_served(pi: np.ndarray, epsilon: float, mode: str, u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(actions [n], propensities [n], q [n, A])``: :meth:`DeployedPolicy.decide`'s draw on given π
    and uniforms: q = (1 − ε) π + ε / A (π one-hot at its argmax when ``mode="greedy"``), the action
    the first a with ``cumsum(q)[a] > u`` (the last action catching rounding near 1), propensity q[a]."""
    n, n_actions = pi.shape
    if mode == "greedy":
        one_hot = np.zeros_like(pi)
        one_hot[np.arange(n), pi.argmax(1)] = 1.0
        pi = one_hot
    elif mode != "sample":
        raise ValueError(f"mode must be 'sample' or 'greedy', got {mode!r}")
    q = (1.0 - epsilon) * pi + epsilon / n_actions
    cdf = np.cumsum(q, axis=1)
    cdf[:, -1] = np.inf
    actions = (cdf > u[:, None]).argmax(1)
    return actions, q[np.arange(n), actions], q
