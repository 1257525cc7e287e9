"""Ray backends for grpokit: sweeps and seeded rollouts, multi-worker training, Ray Data OPE, scoring.

Nothing here is imported on grpokit's default path, and ``ray`` is imported only inside this
subpackage's functions (install the extra: ``pip install -c constraints.txt -e '.[ray]'``). Every
Ray path has an in-process twin (``backend="local"`` or ``num_workers=0``) that gives the same
result; the tests check both. See docs/scale.md.
"""

from __future__ import annotations

__all__ = ["require_ray", "init_ray"]

from grpokit.scale._ray import init_ray, require_ray
