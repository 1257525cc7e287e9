"""Save and load a trained policy with what production needs to use it (feature names, action labels).

The file is a torch checkpoint holding the architecture (torso widths, activation, group
embedding, head kind and parameters), the weights and free-form metadata; :func:`load_policy`
rebuilds the network without the training config.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from grpokit.policy.heads import BetaHead, CategoricalHead, DirichletHead, GaussianSoftmaxHead, make_head
from grpokit.policy.network import MLPTorso, Policy

__all__ = ["save_policy", "load_policy"]

FORMAT = "grpokit.policy/1"


def _head_spec(head) -> dict:
    if isinstance(head, CategoricalHead):
        return {"kind": "categorical", "n_actions": head.n_actions}
    if isinstance(head, DirichletHead):
        return {
            "kind": "dirichlet",
            "n_components": head.n_components,
            "floor": head.floor,
            "concentration": head.concentration_start,
            "concentration_final": head.concentration_final,
            "anneal_steps": head.anneal_steps,
            "target_spread": head.target_spread_start,
            "target_spread_final": head.target_spread_final if head.target_spread_start is not None else None,
            "adapt_rate": head.adapt_rate,
        }
    if isinstance(head, BetaHead):
        return {"kind": "beta", "low": head.low, "high": head.high, "floor": head.floor}
    if isinstance(head, GaussianSoftmaxHead):
        return {
            "kind": "gaussian_softmax",
            "n_components": head.n_components,
            "log_std_min": head.log_std_min,
            "log_std_max": head.log_std_max,
        }
    raise TypeError(f"cannot save a policy with head {type(head).__name__}")


def _torso_spec(torso: MLPTorso) -> dict:
    widths = [m.out_features for m in torso.net if isinstance(m, torch.nn.Linear)]
    act = next((type(m).__name__.lower() for m in torso.net if not isinstance(m, torch.nn.Linear)), "tanh")
    return {
        "obs_dim": torso.obs_dim,
        "hidden": widths,
        "activation": act,
        "n_groups": torso.n_groups,
        "group_embedding_dim": 0 if torso.embedding is None else torso.embedding.embedding_dim,
    }


def save_policy(policy: Policy, path: str | Path, metadata: dict | None = None) -> Path:
    """Write ``policy`` (architecture + weights) and ``metadata`` atomically to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "torso": _torso_spec(policy.torso),
        "head": _head_spec(policy.head),
        "state_dict": {k: v.detach().cpu() for k, v in policy.state_dict().items()},
        "metadata": metadata or {},
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_policy(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[Policy, dict]:
    """Rebuild a policy saved by :func:`save_policy`: ``(policy, metadata)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no policy file at {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not a policy file"
        raise ValueError(f"{path} is not a grpokit policy file: {err}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a grpokit policy file (format {FORMAT} expected)")
    head_spec = dict(payload["head"])
    kind = head_spec.pop("kind")
    head = make_head(kind, **{k: v for k, v in head_spec.items() if v is not None or k == "concentration"})
    policy = Policy(MLPTorso(**payload["torso"]), head)
    policy.load_state_dict(payload["state_dict"])
    policy.eval()
    return policy, payload["metadata"]
