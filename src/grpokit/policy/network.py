"""The policy network: an MLP torso on context features, an optional group-id embedding,
and a linear layer producing the head's raw parameters."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from grpokit.policy.heads import Decision, PolicyHead

__all__ = ["MLPTorso", "Policy"]

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}


class MLPTorso(nn.Module):
    """h = MLP([x, E[group]]) with ``hidden`` layer widths; E is an optional learned embedding."""

    def __init__(
        self,
        obs_dim: int,
        hidden: tuple[int, ...] | list[int] = (64, 64),
        activation: str = "tanh",
        n_groups: int = 0,
        group_embedding_dim: int = 0,
    ):
        super().__init__()
        if obs_dim < 0:
            raise ValueError(f"obs_dim must be >= 0, got {obs_dim}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(_ACTIVATIONS)}")
        if group_embedding_dim > 0 and n_groups < 1:
            raise ValueError("a group embedding needs n_groups >= 1")
        self.obs_dim = obs_dim
        self.n_groups = n_groups
        self.embedding = nn.Embedding(n_groups, group_embedding_dim) if group_embedding_dim > 0 else None
        in_dim = obs_dim + group_embedding_dim
        if in_dim == 0:
            raise ValueError("the policy sees nothing: obs_dim = 0 and no group embedding")
        layers: list[nn.Module] = []
        for width in hidden:
            lin = nn.Linear(in_dim, width)
            nn.init.orthogonal_(lin.weight, math.sqrt(2))
            nn.init.zeros_(lin.bias)
            layers += [lin, _ACTIVATIONS[activation]()]
            in_dim = width
        self.net = nn.Sequential(*layers)
        self.out_dim = in_dim

    def forward(self, obs: Tensor, group: Tensor | None = None) -> Tensor:
        if obs.ndim != 2 or obs.shape[1] != self.obs_dim:
            raise ValueError(f"obs must have shape [B, {self.obs_dim}], got {tuple(obs.shape)}")
        x = obs
        if self.embedding is not None:
            if group is None:
                raise ValueError("this policy embeds the group id: pass group=[B] integer ids")
            x = torch.cat([obs, self.embedding(group)], dim=-1)
        return self.net(x)


class Policy(nn.Module):
    """π(· | x, group) = head(W · torso(x, group) + b).

    The output layer starts near zero (CleanRL's 0.01 gain) so that the initial policy is
    close to uniform / to the head's neutral point.
    """

    def __init__(self, torso: MLPTorso, head: PolicyHead):
        super().__init__()
        self.torso = torso
        self.head = head
        self.out = nn.Linear(torso.out_dim, head.param_dim)
        nn.init.orthogonal_(self.out.weight, 0.01)
        nn.init.zeros_(self.out.bias)

    def forward(self, obs: Tensor, group: Tensor | None = None, mask: Tensor | None = None) -> Decision:
        return self.head(self.out(self.torso(obs, group)), mask)

    @torch.no_grad()
    def act(self, obs: Tensor, group: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """The deterministic production decision per context (``Decision.mode``)."""
        return self.forward(obs, group, mask).mode()
