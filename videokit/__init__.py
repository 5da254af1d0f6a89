"""videokit: turn a story (YAML or Python) into a finished AI video.

Qwen-Image-Edit edits a frame, Wan2.2 image-to-video animates it, each clip's last frame starts the
next scene, and the clips are stitched into one MP4. Without GPU endpoints, a CPU preview backend
renders an animatic of the same story.

    import videokit
    result = videokit.Pipeline("story.yaml").run()
    print(result.final_video)

The public names load on first use (PEP 562), so ``import videokit.cli.app`` (the ``videokit``
command) does not pay for the pipeline, pydantic models and media code it may never need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from videokit._version import __version__

if TYPE_CHECKING:
    from videokit.backends.base import Backend, JobContext
    from videokit.backends.preview import PreviewBackend
    from videokit.backends.runpod import (
        Endpoint,
        JobHandle,
        JobStatus,
        RunPodBackend,
        RunPodConfig,
    )
    from videokit.errors import (
        ConfigError,
        EndpointError,
        FFmpegError,
        JobCancelledError,
        JobFailedError,
        JobTimeoutError,
        RenderError,
        StoryError,
        VideoKitError,
    )
    from videokit.pipeline.runner import Pipeline, RenderResult, SceneOutput
    from videokit.protocol import AnimateRequest, AnimateResult, EditRequest, EditResult
    from videokit.story import (
        AnimateSettings,
        Crossfade,
        Defaults,
        Edit,
        EditSettings,
        Output,
        Scene,
        Story,
        StoryPlan,
        load_story,
        plan_story,
    )

_WHERE = {
    "Backend": "videokit.backends.base",
    "JobContext": "videokit.backends.base",
    "PreviewBackend": "videokit.backends.preview",
    "Endpoint": "videokit.backends.runpod",
    "JobHandle": "videokit.backends.runpod",
    "JobStatus": "videokit.backends.runpod",
    "RunPodBackend": "videokit.backends.runpod",
    "RunPodConfig": "videokit.backends.runpod",
    "AnimateRequest": "videokit.protocol",
    "AnimateResult": "videokit.protocol",
    "EditRequest": "videokit.protocol",
    "EditResult": "videokit.protocol",
    "ConfigError": "videokit.errors",
    "EndpointError": "videokit.errors",
    "FFmpegError": "videokit.errors",
    "JobCancelledError": "videokit.errors",
    "JobFailedError": "videokit.errors",
    "JobTimeoutError": "videokit.errors",
    "RenderError": "videokit.errors",
    "StoryError": "videokit.errors",
    "VideoKitError": "videokit.errors",
    "Pipeline": "videokit.pipeline.runner",
    "RenderResult": "videokit.pipeline.runner",
    "SceneOutput": "videokit.pipeline.runner",
    "AnimateSettings": "videokit.story",
    "Crossfade": "videokit.story",
    "Defaults": "videokit.story",
    "Edit": "videokit.story",
    "EditSettings": "videokit.story",
    "Output": "videokit.story",
    "Scene": "videokit.story",
    "Story": "videokit.story",
    "StoryPlan": "videokit.story",
    "load_story": "videokit.story",
    "plan_story": "videokit.story",
}

__all__ = [
    "AnimateRequest",
    "AnimateResult",
    "AnimateSettings",
    "Backend",
    "ConfigError",
    "Crossfade",
    "Defaults",
    "Edit",
    "EditRequest",
    "EditResult",
    "EditSettings",
    "Endpoint",
    "EndpointError",
    "FFmpegError",
    "JobCancelledError",
    "JobContext",
    "JobFailedError",
    "JobHandle",
    "JobStatus",
    "JobTimeoutError",
    "Output",
    "Pipeline",
    "PreviewBackend",
    "RenderError",
    "RenderResult",
    "RunPodBackend",
    "RunPodConfig",
    "Scene",
    "SceneOutput",
    "Story",
    "StoryError",
    "StoryPlan",
    "VideoKitError",
    "__version__",
    "load_story",
    "plan_story",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'videokit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access is a plain attribute lookup
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
