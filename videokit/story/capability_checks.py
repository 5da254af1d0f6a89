"""Holding a story against what its endpoints can render (:mod:`videokit.capabilities`).

A size, frame rate, clip length, steps or guidance the animate endpoint cannot render, or an edit
with more images than the edit endpoint takes, is a located problem whose hint names the nearest
thing the endpoint can do. A ``duration`` is rounded to the whole seconds such an endpoint renders
(a located warning says when that changed it), and settings an endpoint ignores draw warnings.
Capabilities left ``None`` check nothing: planning without them is unchanged.
"""

from __future__ import annotations

import math
from typing import Literal

from videokit.capabilities import AnimateCapabilities, EditCapabilities
from videokit.protocol import AnimateRequest, EditRequest
from videokit.story.model import Scene, Story
from videokit.story.problem_collector import ProblemCollector

__all__ = [
    "check_animate_frame",
    "check_animate_settings",
    "check_audio",
    "check_edit_settings",
    "check_frame_count",
    "check_prompt",
    "endpoint_frames",
]

Loc = tuple[str | int, ...]


def _setting(
    scene: Scene, i: int, section: Literal["animate", "edit"], name: str
) -> tuple[Loc, str | None]:
    """Where a scene's ``section.name`` was set: the scene's own field, else the default's (which
    is reported once, for no scene in particular)."""
    own = getattr(scene, section)
    if own is not None and name in own.model_fields_set:
        return ("scenes", i, section, name), scene.id
    return ("defaults", section, name), None


def check_animate_frame(
    story: Story, caps: AnimateCapabilities | None, errors: ProblemCollector
) -> bool:
    """The story's frame size and rate against the animate endpoint's; True if the size is one
    it cannot render (a problem was added)."""
    if caps is None:
        return False
    d = story.defaults
    if not caps.takes_fps(d.fps):
        rates = f"{caps.fps}" if caps.fps is not None else "{}-{}".format(*caps.fps_range or ())
        errors.add(
            f"the animate endpoint {caps.endpoint} renders {rates} fps, not {d.fps}",
            ("defaults", "fps"),
            hint=f"set fps: {caps.nearest_fps(d.fps)}",
        )
    if caps.takes_size(d.width, d.height):
        return False
    width, height = caps.nearest_size(d.width, d.height)
    errors.add(
        f"the animate endpoint {caps.endpoint} renders {caps.describe_sizes()}, not "
        f"{d.width}x{d.height}",
        ("defaults", "height" if width == d.width else "width"),
        hint=f"set width: {width} and height: {height}",
    )
    return True


def check_frame_count(
    scene: Scene, i: int, frames: int, caps: AnimateCapabilities | None, errors: ProblemCollector
) -> None:
    """A clip length (frames, from ``frames`` or ``duration``) against an endpoint with a frame
    range or step of its own (whole-second endpoints go through :func:`endpoint_frames`)."""
    if caps is None or caps.frame_counts() is not None or caps.takes_frames(frames):
        return
    nearest = caps.nearest_frames(frames)
    d = errors.story.defaults
    if scene.frames is not None or scene.duration is not None:
        where: Loc = ("scenes", i, "frames" if scene.frames is not None else "duration")
        scene_id: str | None = scene.id
    else:
        where, scene_id = ("defaults", "frames" if d.frames is not None else "duration"), None
    errors.add(
        f"the animate endpoint {caps.endpoint} cannot render a clip of {frames} frames: it "
        f"renders {caps.describe_lengths()}",
        where,
        scene=scene_id,
        hint=f"use frames: {nearest}",
    )


def check_prompt(
    scene: Scene, i: int, caps: AnimateCapabilities | None, errors: ProblemCollector
) -> None:
    """A motion prompt longer than the animate endpoint takes."""
    if caps is None or caps.prompt_chars is None or len(scene.motion) <= caps.prompt_chars:
        return
    errors.add(
        f"the motion prompt is {len(scene.motion)} characters; the animate endpoint "
        f"{caps.endpoint} takes at most {caps.prompt_chars}",
        ("scenes", i, "motion"),
        scene=scene.id,
        hint=f"shorten it to {caps.prompt_chars} characters",
    )


def check_audio(
    scene: Scene, i: int, caps: AnimateCapabilities | None, errors: ProblemCollector
) -> None:
    """A scene with a soundtrack needs an endpoint that takes one (a sound-to-video graph)."""
    if scene.audio is None or (caps is not None and caps.audio):
        return
    name = f"the animate endpoint {caps.endpoint}" if caps is not None else "this backend"
    errors.add(
        f"scene '{scene.id}' has audio, and {name} takes no soundtrack",
        ("scenes", i, "audio"),
        scene=scene.id,
        hint="render it on a worker-comfyui endpoint whose workflow binds `audio` (see "
        "examples/comfy/wan22-s2v.toml), or remove audio",
    )


def endpoint_frames(
    scene: Scene, i: int, caps: AnimateCapabilities, default: int, errors: ProblemCollector
) -> tuple[int, str | None]:
    """A clip's frame count on an endpoint that renders whole seconds (``caps.frame_counts()``
    is not None): an explicit ``frames`` must be one of its counts, a ``duration`` is rounded to
    whole seconds (a located warning when that changed it); neither given, ``default`` must be
    one of its counts too."""
    counts = caps.frame_counts()
    assert counts is not None and caps.fps is not None
    d = errors.story.defaults
    where: Loc | None
    if scene.frames is not None:
        frames, where = scene.frames, ("scenes", i, "frames")
    elif scene.duration is not None:
        return _from_seconds(scene.duration, ("scenes", i, "duration"), caps, errors)
    elif d.frames is not None:
        frames, where = d.frames, ("defaults", "frames")
    elif d.duration is not None:
        return _from_seconds(d.duration, ("defaults", "duration"), caps, errors)
    else:
        frames, where = default, None
    if frames in counts:
        return frames, None
    nearest = caps.nearest_frames(frames)
    seconds = (nearest - 1) // caps.fps
    lengths = f"{caps.endpoint} renders {caps.describe_lengths()}"
    if where is None:
        errors.add(
            f"clips are {frames} frames unless the story gives a length, and the animate "
            f"endpoint {caps.endpoint} cannot render {frames} frames",
            ("defaults",),
            hint=f"set defaults.duration: {seconds} ({nearest} frames) — {lengths}",
        )
    else:
        errors.add(
            f"the animate endpoint {caps.endpoint} cannot render a clip of {frames} frames",
            where,
            scene=scene.id if where[0] == "scenes" else None,
            hint=f"use frames: {nearest} ({seconds} s) — {lengths}",
        )
    return frames, None


def _from_seconds(
    duration: float, where: Loc, caps: AnimateCapabilities, errors: ProblemCollector
) -> tuple[int, str]:
    assert caps.seconds is not None and caps.fps is not None
    scene = errors.story.scenes[int(where[1])].id if where[0] == "scenes" else None
    seconds = math.floor(duration + 0.5)  # whole seconds, halves rounded up
    low, high = caps.seconds
    if not low <= seconds <= high:
        fit = min(max(seconds, low), high)
        longer = (
            "; split a longer shot into scenes that continue each other" if seconds > high else ""
        )
        errors.add(
            f"duration {duration:g} s is too {'short' if seconds < low else 'long'}: the animate "
            f"endpoint {caps.endpoint} renders clips of {low} to {high} whole seconds",
            where,
            scene=scene,
            hint=f"use duration: {fit} ({caps.frames_for_seconds(fit)} frames) — {caps.endpoint} "
            f"renders {caps.describe_lengths()}{longer}",
        )
        seconds = fit
    elif seconds != duration:
        errors.warn(
            f"duration {duration:g} s becomes {seconds} s ({caps.frames_for_seconds(seconds)} "
            f"frames): {caps.endpoint} renders whole seconds",
            where,
            scene=scene,
            hint=f"write duration: {seconds} to say so",
        )
    frames = caps.frames_for_seconds(seconds)
    rounded = f" -> {seconds} s" if seconds != duration else ""
    return frames, f"{duration:g} s{rounded} at {caps.fps} fps -> {frames} frames (whole seconds)"


def check_animate_settings(
    scene: Scene,
    i: int,
    values: tuple[int, float, float | None],
    caps: AnimateCapabilities | None,
    errors: ProblemCollector,
) -> None:
    """A scene's (steps, guidance, guidance_2) against the animate endpoint's ranges. Left at the
    protocol's Lightning defaults they are not sent (the endpoint runs its own), so not checked."""
    if caps is None:
        return
    steps, guidance, guidance_2 = values
    fields = AnimateRequest.model_fields
    defaults = tuple(fields[n].default for n in ("steps", "guidance_scale", "guidance_scale_2"))
    if values[:2] != defaults[:2] and not caps.sampler_settings:
        loc, scene_id = _setting(scene, i, "animate", "steps")
        errors.warn(
            f"steps and guidance are ignored by the animate endpoint {caps.endpoint}: it runs "
            "its own",
            loc,
            scene=scene_id,
            hint="remove them, or bind them in the workflow's bindings table",
        )
    elif values != defaults:
        own = " (or leave steps and guidance out: the endpoint then runs its own defaults)"
        for name, value, bounds in (
            ("steps", steps, caps.steps),
            ("guidance", guidance, caps.guidance),
        ):
            if bounds is not None and not bounds[0] <= value <= bounds[1]:
                loc, scene_id = _setting(scene, i, "animate", name)
                errors.add(
                    f"{name} {value:g} is outside what the animate endpoint {caps.endpoint} "
                    f"takes ({bounds[0]:g}-{bounds[1]:g})",
                    loc,
                    scene=scene_id,
                    hint=f"use {name} between {bounds[0]:g} and {bounds[1]:g}{own}",
                )
    if not caps.second_guidance and guidance_2 is not None:
        loc, scene_id = _setting(scene, i, "animate", "guidance_2")
        errors.warn(
            f"guidance_2 is ignored: the animate endpoint {caps.endpoint} takes one guidance scale",
            loc,
            scene=scene_id,
            hint="remove guidance_2 (guidance applies to the whole clip)",
        )


def check_edit_settings(
    story: Story,
    scene: Scene,
    i: int,
    values: tuple[int, float],
    caps: EditCapabilities | None,
    errors: ProblemCollector,
) -> None:
    """Edit settings the edit endpoint ignores: a negative prompt given for edits, and steps or
    guidance other than the defaults."""
    if caps is None or scene.edit is None:
        return
    if not caps.negative_prompt:
        text, loc, scene_id = _edit_negative_prompt(story, scene, i)
        if text.strip():
            errors.warn(
                f"the edit negative prompt is ignored by {caps.endpoint}",
                loc,
                scene=scene_id,
                hint="remove it: this endpoint takes no negative prompt",
            )
    if caps.steps:
        return
    fields = EditRequest.model_fields
    for name, value, default in (
        ("steps", values[0], fields["steps"].default),
        ("guidance", values[1], fields["true_cfg_scale"].default),
    ):
        if value != default:
            loc, scene_id = _setting(scene, i, "edit", name)
            errors.warn(
                f"edit {name} {value:g} is ignored by {caps.endpoint}: it runs its own steps "
                "and guidance",
                loc,
                scene=scene_id,
                hint=f"remove {name} (it only applies to videokit's own edit workers)",
            )


def _edit_negative_prompt(story: Story, scene: Scene, i: int) -> tuple[str, Loc, str | None]:
    """The negative prompt given for this scene's edit, and where: its own, else the story's edit
    default (the story-wide one is for the animations too, so it is not counted)."""
    assert scene.edit is not None
    if scene.edit.negative_prompt is not None:
        return scene.edit.negative_prompt, ("scenes", i, "edit", "negative_prompt"), scene.id
    given = story.defaults.edit
    text = given.negative_prompt if "negative_prompt" in given.model_fields_set else ""
    return text, ("defaults", "edit", "negative_prompt"), None
