"""The decision service: ``grpokit serve`` (FastAPI + uvicorn), the durable decision log, policy versions,
rollout arms and a Python client. Needs the ``serve`` extra (``pip install 'grpokit[serve]'``).

``from grpokit.serve import Client`` works without FastAPI (it needs httpx only); the app is built by
:func:`grpokit.serve.app.create_app`. See docs/serving.md.
"""

from grpokit.serve.client import Client, ServeError

__all__ = ["Client", "ServeError"]
