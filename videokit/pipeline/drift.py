"""Warnings about cached results that another model made than the one an endpoint serves now."""

from __future__ import annotations

from collections.abc import Sequence

from videokit.pipeline.stages import ModelSeen

__all__ = ["model_warnings"]


def model_warnings(seen: Sequence[ModelSeen]) -> list[str]:
    """Cached results made by another model than the one the endpoint serves now.

    A backend's identity (part of every cache key) names the endpoint, not the model behind it,
    which this side cannot know before a job reports it: redeploying an endpoint with another
    model (or mode) leaves earlier results cached under the same keys. When a job of this render
    reports a model that a reused result does not, say which scenes to redo.
    """
    warnings: list[str] = []
    # A worker's model name can depend on the step count (Qwen's Lightning LoRA is chosen by it:
    # .../lightning-4 or .../lightning-8), so results are compared per step count.
    groups = sorted({(s.stage, s.steps) for s in seen})
    for stage, steps in groups:
        mine = [s for s in seen if (s.stage, s.steps) == (stage, steps)]
        served = sorted({s.model for s in mine if not s.cached and s.model})
        stale = [s for s in mine if s.cached and s.model and s.model not in served]
        if not served or not stale:
            continue
        scenes = sorted(s.scene for s in stale)
        made_by = sorted({s.model for s in stale if s.model})
        warnings.append(
            f"the {stage} endpoint now serves {' and '.join(served)}, but the cached "
            f"{stage} results of scene(s) {', '.join(scenes)} were made by "
            f"{' and '.join(made_by)}; render with --force (or --force --only "
            f"{' --only '.join(scenes)}) to remake them with the current model"
        )
    return warnings
