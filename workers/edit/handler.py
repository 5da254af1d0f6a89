"""RunPod entrypoint of the **edit** worker (Qwen-Image-Edit).

The image runs ``python -u workers/edit/handler.py``; what happens at start and per job is in
:mod:`videokit.worker.serverless`. Locally, RunPod's test mode runs one job::

    VIDEOKIT_ENGINE=tiny python workers/edit/handler.py \\
        --test_input '{"input": {"warmup": true}}'
"""

from videokit.worker.serverless import main

if __name__ == "__main__":
    main("edit")
