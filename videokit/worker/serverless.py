"""The RunPod entrypoint shared by both workers (``workers/edit/handler.py``, ``workers/animate/``).

At start, before any job, the engine is loaded once from the environment (``VIDEOKIT_ENGINE``:
``diffusers`` in the images; the engine reads its model settings itself and, if a weight file is
missing, fails here with the list of missing paths: nothing is downloaded at cold start). The
first job, and a FlashBoot snapshot, then find it ready. ``runpod.serverless.start`` serves jobs
with the async handler of :func:`videokit.worker.handler.make_handler`, one at a time (one GPU,
one pipeline). RunPod's local test mode (``--test_input '<json>'``) runs one job and exits.

A configuration error at start (unknown engine or model, missing weights) prints one message and
exits with its exit code (2).
"""

from __future__ import annotations

import sys

from videokit.backends.base import Stage

__all__ = ["main"]


def main(stage: Stage) -> None:
    import runpod  # type: ignore[import-untyped]

    from videokit.errors import VideoKitError
    from videokit.worker.engines import engine_from_env
    from videokit.worker.handler import make_handler

    try:
        handler = make_handler(stage, engine_from_env(stage))
    except VideoKitError as exc:
        print(f"videokit {stage} worker: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(exc.exit_code) from None

    runpod.serverless.start(
        {
            "handler": handler,
            # One GPU holds one pipeline: never take a second job while one runs.
            "concurrency_modifier": lambda _current: 1,
        }
    )
