"""Explain a policy to a business: a shallow decision tree fitted to its decisions.

The tree maps the context features to the policy's (deterministic) decision; its **fidelity** is
the share of held-out contexts on which the tree's decision equals the policy's, so a reader knows
how much of the policy the few printed rules capture.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.tree import DecisionTreeClassifier, export_text

__all__ = ["explain_policy"]


def explain_policy(
    features: np.ndarray,
    decisions: np.ndarray,
    feature_names: list[str],
    action_names: list[str] | None = None,
    *,
    max_depth: int = 3,
    test_fraction: float = 0.3,
    seed: int = 0,
) -> dict:
    """``{"rules": text, "fidelity": float, "depth": int, "n_leaves": int}``.

    ``features: [n, d]``, ``decisions: [n]`` integer actions of the policy. Fidelity is measured on a
    held-out ``test_fraction`` of the rows (the tree is fitted on the rest).
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(decisions)
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"features [n, d] and decisions [n] must share n, got {x.shape} and {y.shape}")
    if len(feature_names) != x.shape[1]:
        raise ValueError(f"{len(feature_names)} feature names for {x.shape[1]} features")
    if len(x) < 10:
        raise ValueError(f"need at least 10 decisions to explain a policy, got {len(x)}")
    if max_depth < 1:
        raise ValueError(f"max_depth must be >= 1, got {max_depth}")
    x_fit, x_test, y_fit, y_test = train_test_split(x, y, test_size=test_fraction, random_state=seed)
    tree = DecisionTreeClassifier(max_depth=max_depth, random_state=seed).fit(x_fit, y_fit)
    fidelity = float((tree.predict(x_test) == y_test).mean())
    class_names = None
    if action_names is not None:
        class_names = [str(action_names[int(c)]) for c in tree.classes_]
    rules = export_text(tree, feature_names=list(feature_names), class_names=class_names, decimals=2)
    return {"rules": rules, "fidelity": fidelity, "depth": int(tree.get_depth()), "n_leaves": int(tree.get_n_leaves())}
