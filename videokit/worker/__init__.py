"""The worker core: what runs inside an edit or animate worker (RunPod or ``videokit serve``).

    from videokit.worker import engine_from_env, make_handler

    engine = engine_from_env("animate")          # VIDEOKIT_ENGINE, VIDEOKIT_ENGINE_MIN_SECONDS
    handler = make_handler("animate", engine)    # VIDEOKIT_ALLOW_PRIVATE_URLS read here
    runpod.serverless.start({"handler": handler})

:mod:`~videokit.worker.compat` maps the older workers' dialects (:mod:`videokit.dialects`) onto
the wire protocol and back, :mod:`~videokit.worker.fetch` fetches URL inputs without SSRF,
:mod:`~videokit.worker.engines` is the engine registry and :mod:`~videokit.worker.handler` ties
them together.
"""

from __future__ import annotations

from videokit.worker.compat import (
    OutputStyle,
    Warmup,
    format_output,
    parse_job_input,
)
from videokit.worker.engines import ENGINES, Engine, EngineSpec, engine_from_env, load_engine
from videokit.worker.errors import JobInputError, JobTooLargeError, WorkerOOMError, is_cuda_oom
from videokit.worker.fetch import FetchRefused, fetch_url
from videokit.worker.handler import Handler, make_handler, run_local

__all__ = [
    "ENGINES",
    "Engine",
    "EngineSpec",
    "FetchRefused",
    "Handler",
    "JobInputError",
    "JobTooLargeError",
    "OutputStyle",
    "Warmup",
    "WorkerOOMError",
    "engine_from_env",
    "fetch_url",
    "format_output",
    "is_cuda_oom",
    "load_engine",
    "make_handler",
    "parse_job_input",
    "run_local",
]
