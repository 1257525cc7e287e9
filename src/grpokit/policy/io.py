"""Save and load a trained policy with what production needs to use it (feature names, action labels,
the fitted preprocessing).

The file is a torch checkpoint holding the architecture (torso widths, activation, group
embedding, head kind and parameters), the weights, the feature encoder
(:class:`~grpokit.policy.features.FeatureEncoder`, as plain data) and free-form metadata; every
value is a tensor or plain Python data, so :func:`load_policy` reads it with
``torch.load(weights_only=True)``: a file that needs unpickling (and could run code) is refused.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from grpokit.policy.features import FeatureEncoder
from grpokit.policy.heads import BetaHead, CategoricalHead, DirichletHead, GaussianSoftmaxHead, make_head
from grpokit.policy.network import MLPTorso, Policy

__all__ = ["save_policy", "load_policy", "read_policy_file", "load_encoder", "plain", "safe_torch_load", "build_policy"]

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


def plain(value, where: str = "metadata"):
    """``value`` as plain Python data (numpy scalars/arrays -> numbers/lists); anything else is refused.

    Only such data (and tensors) loads under ``torch.load(weights_only=True)``.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray):
        return plain(value.tolist(), where)
    if isinstance(value, Mapping):
        return {str(k): plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{where}: cannot store a {type(value).__name__} in a policy file (plain data or tensors only)")


def save_policy(
    policy: Policy, path: str | Path, metadata: dict | None = None, encoder: FeatureEncoder | None = None
) -> Path:
    """Write ``policy`` (architecture + weights), its ``encoder`` and ``metadata`` atomically to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = plain(metadata or {})
    if encoder is not None:
        if encoder.dim != policy.torso.obs_dim:
            raise ValueError(f"the encoder makes {encoder.dim} inputs but the policy expects obs_dim = {policy.torso.obs_dim}")
        meta.setdefault("feature_names", encoder.names)
    payload = {
        "format": FORMAT,
        "torso": _torso_spec(policy.torso),
        "head": _head_spec(policy.head),
        "state_dict": {k: v.detach().cpu() for k, v in policy.state_dict().items()},
        "metadata": meta,
        "features": None if encoder is None else encoder.to_dict(),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def safe_torch_load(path: Path, what: str, map_location: str | torch.device = "cpu"):
    """``torch.load(path, weights_only=True)`` with errors that say what failed (never unpickles)."""
    import re

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure means "not a file we can trust"
        text = str(err)
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if found:
            raise ValueError(
                f"{path} holds a pickled Python object ({found.group(1)}); grpokit loads a {what} with "
                "weights_only=True and refuses files that need unpickling, since unpickling can run code"
            ) from None
        detail = re.search(r"WeightsUnpickler error:\s*(.+?)\n", text)
        reason = detail.group(1).strip() if detail else (text.splitlines()[0] if text else type(err).__name__)
        raise ValueError(f"{path} is not a grpokit {what} (unreadable: {reason[:200]})") from None


def read_policy_file(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """The raw payload of a policy file, read with ``weights_only=True`` (no code runs)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not a policy file (give RUN_DIR/policy.pt)")
    if not path.is_file():
        raise FileNotFoundError(f"no policy file at {path}")
    payload = safe_torch_load(path, "policy file", map_location)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a grpokit policy file (format {FORMAT} expected)")
    for key in ("torso", "head", "state_dict"):
        if not isinstance(payload.get(key), dict):
            raise ValueError(f"{path} is not a complete grpokit policy file (no {key!r})")
    return payload


def load_encoder(payload: dict) -> FeatureEncoder | None:
    """The feature encoder stored in a payload from :func:`read_policy_file` (None for older files)."""
    from grpokit.policy.features import encoder_from_dict

    meta = payload.get("metadata") or {}
    return encoder_from_dict(payload.get("features"), meta.get("feature_names"))


def build_policy(payload: dict, path: str | Path = "policy file") -> Policy:
    """The network (architecture + weights, in eval mode) described by a payload of :func:`read_policy_file`."""
    head_spec = dict(payload["head"])
    kind = head_spec.pop("kind")
    head = make_head(kind, **{k: v for k, v in head_spec.items() if v is not None or k == "concentration"})
    policy = Policy(MLPTorso(**payload["torso"]), head)
    try:
        policy.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise ValueError(f"{path}: the weights do not match the stored architecture ({str(err).splitlines()[0]})") from None
    return policy.eval()


def load_policy(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[Policy, dict]:
    """Rebuild a policy saved by :func:`save_policy`: ``(policy, metadata)``.

    The encoder, when one was saved, is ``metadata["features"]`` (plain data;
    :func:`grpokit.policy.features.FeatureEncoder.from_dict` rebuilds it).
    """
    payload = read_policy_file(path, map_location)
    policy = build_policy(payload, path)
    meta = dict(payload["metadata"] or {})
    if payload.get("features"):
        meta["features"] = payload["features"]
    return policy, meta
