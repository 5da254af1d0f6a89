"""Stories: the YAML/Python format, its loader, the scene graph and the render plan."""

from videokit.story.graph import CycleError, SceneGraph
from videokit.story.loader import load_story, parse_story
from videokit.story.model import (
    AnimateSettings,
    Crossfade,
    Defaults,
    Edit,
    EditSettings,
    Output,
    Scene,
    Story,
)
from videokit.story.plan import ScenePlan, Source, StoryPlan, TimelineEntry, plan_story

__all__ = [
    "AnimateSettings",
    "Crossfade",
    "CycleError",
    "Defaults",
    "Edit",
    "EditSettings",
    "Output",
    "Scene",
    "SceneGraph",
    "ScenePlan",
    "Source",
    "Story",
    "StoryPlan",
    "TimelineEntry",
    "load_story",
    "parse_story",
    "plan_story",
]
