"""videokit: turn a story (YAML or Python) into a finished AI video.

Qwen-Image-Edit edits a frame, Wan2.2 image-to-video animates it, each clip's last frame starts the
next scene, and the clips are stitched into one MP4. Without GPU endpoints, a CPU preview backend
renders an animatic of the same story.

    import videokit
    result = videokit.Pipeline("story.yaml").run()
    print(result.final_video)
"""

from __future__ import annotations

from videokit._version import __version__
from videokit.backends.base import Backend, JobContext
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

__all__ = [
    "AnimateSettings",
    "Backend",
    "ConfigError",
    "Crossfade",
    "Defaults",
    "Edit",
    "EditSettings",
    "EndpointError",
    "FFmpegError",
    "JobCancelledError",
    "JobContext",
    "JobFailedError",
    "JobTimeoutError",
    "Output",
    "Pipeline",
    "RenderError",
    "RenderResult",
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
