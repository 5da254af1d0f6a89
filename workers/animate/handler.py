"""RunPod entrypoint of the **animate** worker (Wan2.2 image-to-video).

The image runs ``python -u workers/animate/handler.py``. At start, before any job:

1. with ``VIDEOKIT_ENGINE=diffusers``, the model directory is chosen and checked
   (``workers/models.py``): missing weights stop the worker with a list of what is missing;
2. the engine is loaded once (``engine_from_env``), so the first job, and FlashBoot snapshots,
   find it ready;
3. ``runpod.serverless.start`` serves jobs with the async handler from ``make_handler``, one job
   at a time (one GPU, one pipeline).

Locally, RunPod's own test mode runs one job and exits (0 on success, 1 on a failed job)::

    VIDEOKIT_ENGINE=preview python workers/animate/handler.py --test_input '{"input": {...}}'

Exit codes at start: 2 configuration error (unknown engine, bad option), 3 weights missing.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Final

STAGE: Final = "animate"


def _prepare_models() -> None:
    path = Path(__file__).resolve().parent.parent / "models.py"
    spec = importlib.util.spec_from_file_location("videokit_worker_models", path)
    if spec is None or spec.loader is None:  # pragma: no cover - shipped beside this file
        raise SystemExit(f"cannot load {path}")
    models = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = models
    spec.loader.exec_module(models)
    try:
        models.prepare_worker_env(STAGE, os.environ)
    except models.ModelsMissingError as exc:
        print(f"videokit {STAGE} worker: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(3) from None


def main() -> None:
    _prepare_models()

    import runpod

    from videokit.errors import VideoKitError
    from videokit.worker.engines import engine_from_env
    from videokit.worker.handler import make_handler

    try:
        engine = engine_from_env(STAGE)
        handler = make_handler(STAGE, engine)
    except VideoKitError as exc:
        print(f"videokit {STAGE} worker: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(exc.exit_code) from None

    runpod.serverless.start(
        {
            "handler": handler,
            # One GPU holds one pipeline: never pull a second job while one runs.
            "concurrency_modifier": lambda _current: 1,
        }
    )


if __name__ == "__main__":
    main()
