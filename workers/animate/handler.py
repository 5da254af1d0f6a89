"""RunPod entrypoint of the **animate** worker (Wan2.2 I2V).

The image runs ``python -u workers/animate/handler.py``; what happens at start and per job is in
:mod:`videokit.worker.serverless`. Locally, RunPod's test mode runs one job::

    VIDEOKIT_ENGINE=tiny python workers/animate/handler.py \\
        --test_input '{"input": {"warmup": true}}'
"""

from videokit.worker.serverless import main

if __name__ == "__main__":
    main("animate")
