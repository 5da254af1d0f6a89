"""The RunPod entrypoint shared by both workers (``workers/edit/handler.py``, ``workers/animate/``).

At start, before any job, the engine is loaded once from the environment (``VIDEOKIT_ENGINE``:
``diffusers`` in the images; the engine reads its model settings itself and, if a weight file is
missing, fails here with the list of missing paths: nothing is downloaded at cold start). The
first job, and a FlashBoot snapshot, then find it ready. ``runpod.serverless.start`` serves jobs
with the async handler of :func:`videokit.worker.handler.make_handler`, one at a time (one GPU,
one pipeline). RunPod's local test mode (``--test_input '<json>'``) runs one job and exits.

**Logs.** The runpod SDK logs at DEBUG unless told otherwise, and at DEBUG it prints every job's
input and its whole output ("Handler output: ...": presigned GET URLs, base64 media) as plain
text into the worker's logs. :func:`main` therefore sets ``RUNPOD_DEBUG_LEVEL=INFO`` (unless the
environment already sets a level) *before* the SDK is imported, as the images do: the SDK's
logger reads its level once, at import. Local test mode prints the job's result at INFO by
design (``Job result: ...``); there the output is shown with base64 data and URL query strings
(signatures) elided. The cloud never sees that redaction: it only applies to ``--test_input``.
The SDK also turns on Python's root logger at INFO, where httpx would log each request's full
URL (a presigned URL's signature with it): httpx's and httpcore's loggers are kept at WARNING.

A configuration error at start (unknown engine or model, missing weights, no GPU) prints one
message and exits with its exit code (2).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from videokit.backends.base import Stage

__all__ = ["main", "redact_output"]

#: The runpod SDK's log level for the workers when the environment sets none.
DEFAULT_RUNPOD_LOG_LEVEL = "INFO"


def main(stage: Stage, argv: Sequence[str] | None = None) -> None:
    # Both names: the SDK reads RUNPOD_LOG_LEVEL first, then RUNPOD_DEBUG_LEVEL.
    if not os.environ.get("RUNPOD_LOG_LEVEL"):
        os.environ.setdefault("RUNPOD_DEBUG_LEVEL", DEFAULT_RUNPOD_LOG_LEVEL)
    import runpod  # type: ignore[import-untyped]

    # Importing the SDK runs logging.basicConfig(level=INFO) (runpod.serverless.utils.rp_upload),
    # and at INFO httpx logs every request's full URL: the query of a presigned PUT URL is a
    # credential. Our uploads and fetches log their hosts themselves (the job record).
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)

    from videokit.errors import VideoKitError
    from videokit.worker.engines import engine_from_env
    from videokit.worker.handler import Handler, make_handler

    try:
        handler: Handler = make_handler(stage, engine_from_env(stage))
    except VideoKitError as exc:
        print(f"videokit {stage} worker: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(exc.exit_code) from None

    args = sys.argv[1:] if argv is None else list(argv)
    if any(arg == "--test_input" or arg.startswith("--test_input=") for arg in args):
        handler = _redacting(handler)

    runpod.serverless.start(
        {
            "handler": handler,
            # One GPU holds one pipeline: never take a second job while one runs.
            "concurrency_modifier": lambda _current: 1,
        }
    )


def _redacting(handler: Any) -> Any:
    # A plain `async def`: the SDK picks its calling convention with inspect.
    async def local_test_handler(job: dict[str, Any]) -> dict[str, Any]:
        output: dict[str, Any] = redact_output(await handler(job))
        return output

    return local_test_handler


def redact_output(value: Any, key: str = "") -> Any:
    """``value`` (a job output) with base64 data and URL query strings replaced by notes.

    A field named ``base64`` or ``*_base64`` becomes ``<N base64 characters, not shown>``; a URL
    keeps its scheme, host and path, and its query (where presigned URLs carry their signature)
    becomes ``<query not shown>``. Everything else (sizes, hashes, timings) is kept.
    """
    if isinstance(value, dict):
        return {name: redact_output(item, str(name)) for name, item in value.items()}
    if isinstance(value, list):
        return [redact_output(item, key) for item in value]
    if not isinstance(value, str):
        return value
    if key == "base64" or key.endswith("_base64"):
        return f"<{len(value)} base64 characters, not shown>"
    if value.startswith(("http://", "https://")):
        try:
            parts = urlsplit(value)
            port = parts.port
        except ValueError:
            return "<unparsable URL, not shown>"
        if parts.query or parts.username or parts.password:
            host = parts.hostname or ""
            netloc = f"{host}:{port}" if port else host
            kept = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
            return f"{kept}?<query not shown>" if parts.query else kept
    return value
