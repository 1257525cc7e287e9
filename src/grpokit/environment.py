"""What a run ran on: Python, the platform, the threads and the versions of the libraries that shape
its numbers, written into every run's summary as ``environment``.

Training is deterministic for a given code, config and environment; a rerun that differs from a
recorded figure with the same commit and config differs here (BENCHMARKS.md: the spillover and
log tables moved between two fresh installs of the same commit).
"""

from __future__ import annotations

import os
import platform
from importlib import metadata

#: the distributions whose versions are recorded (None where one is not installed)
PACKAGES = ("grpokit", "torch", "numpy", "scipy", "pandas", "pyarrow", "scikit-learn", "lightgbm", "duckdb")


def package_versions(packages=PACKAGES) -> dict[str, str | None]:
    """``{distribution: version or None}`` from the installed metadata (nothing is imported)."""
    out: dict[str, str | None] = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def environment_info() -> dict:
    """``{"python", "platform", "machine", "cpu_count", "torch_threads", "packages"}`` of this process."""
    import torch

    return {"python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "packages": package_versions()}
