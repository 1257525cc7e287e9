"""grpokit: group-relative policy optimization (GRPO, P-GRPO) for personalized business decisions.

``grpokit.GRPOPolicyLearner`` is the scikit-learn facade (:mod:`grpokit.estimator`), imported on
first use so that ``import grpokit`` stays light.
"""

from __future__ import annotations

try:
    from importlib.metadata import PackageNotFoundError, version as _version

    __version__ = _version("grpokit")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without installing
    __version__ = "0+unknown"

__all__ = ["GRPOPolicyLearner", "__version__"]


def __getattr__(name: str):
    if name == "GRPOPolicyLearner":
        from grpokit.estimator import GRPOPolicyLearner

        return GRPOPolicyLearner
    raise AttributeError(f"module 'grpokit' has no attribute {name!r}")
