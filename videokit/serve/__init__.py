"""``videokit serve``: a self-hosted endpoint that speaks RunPod's serverless v2 queue API.

Run a worker handler (the same function you would give ``runpod.serverless.start``) on your own
GPU behind an HTTP server that answers exactly like ``https://api.runpod.ai/v2/{endpoint_id}/``,
so videokit's client, or the official ``runpod.Endpoint``, drives both::

    from videokit.serve import serve
    serve(handler, port=8000, concurrency=1, api_key="secret")

:func:`create_app` builds the FastAPI app, :func:`serve` runs it with uvicorn and
:func:`running_server` runs an app on a free loopback port in a thread (tests).
:class:`FaultConfig` / :func:`parse_faults` make it misbehave on purpose (429, 5xx, dropped
connections, slow responses, failed / stuck / expired jobs). The HTTP parts need the ``worker``
extra (fastapi, uvicorn); they are imported lazily, so that ``videokit.serve.faults`` (used to
parse a CLI flag) works without them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from videokit.serve.faults import ALL_FAULTS, FaultConfig, parse_faults

if TYPE_CHECKING:
    from videokit.serve.app import create_app, running_server, serve
    from videokit.serve.jobs import JobStatus

__all__ = [
    "ALL_FAULTS",
    "FaultConfig",
    "JobStatus",
    "create_app",
    "parse_faults",
    "running_server",
    "serve",
]

_LAZY = {
    "create_app": "videokit.serve.app",
    "running_server": "videokit.serve.app",
    "serve": "videokit.serve.app",
    "JobStatus": "videokit.serve.jobs",
}


def __getattr__(name: str) -> Any:
    # Lazy so that importing the package (e.g. for FaultConfig) does not require fastapi.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
