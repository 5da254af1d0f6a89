"""RunPod entrypoint of the **edit** worker (Qwen-Image-Edit).

The image runs ``python -u workers/edit/handler.py``. At start, before any job, the engine is
loaded once from the environment (``VIDEOKIT_ENGINE``: ``diffusers`` in the image; the engine
reads ``VIDEOKIT_QWEN_MODEL``, ``VIDEOKIT_MODEL_DIR``... itself and, if a weight file is missing,
fails here with the list of missing paths: nothing is downloaded at cold start). The first job,
and a FlashBoot snapshot, then find it ready. ``runpod.serverless.start`` serves jobs with the
async handler of :func:`videokit.worker.handler.make_handler`, one at a time (one GPU, one
pipeline).

Locally, RunPod's test mode runs one job and exits (0 if it succeeded, 1 if not)::

    VIDEOKIT_ENGINE=preview python workers/edit/handler.py --test_input '{"input": {...}}'

A configuration error at start (unknown engine or model, missing weights) prints one message and
exits with code 2.
"""

from __future__ import annotations

import sys
from typing import Final

STAGE: Final = "edit"


def main() -> None:
    import runpod  # type: ignore[import-untyped]

    from videokit.errors import VideoKitError
    from videokit.worker.engines import engine_from_env
    from videokit.worker.handler import make_handler

    try:
        handler = make_handler(STAGE, engine_from_env(STAGE))
    except VideoKitError as exc:
        print(f"videokit {STAGE} worker: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(exc.exit_code) from None

    runpod.serverless.start(
        {
            "handler": handler,
            # One GPU holds one pipeline: never take a second job while one runs.
            "concurrency_modifier": lambda _current: 1,
        }
    )


if __name__ == "__main__":
    main()
