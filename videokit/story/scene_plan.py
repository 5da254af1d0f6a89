"""Planning one scene: where its first frame comes from, its edit, its clip length and settings.

Settings a scene leaves out come from the story's defaults, ``duration`` becomes a 4k+1 frame
count (or whole seconds, on an endpoint that renders those: see
:mod:`~videokit.story.capability_checks`), and a scene without a seed gets one derived from its id.
"""

from __future__ import annotations

import difflib
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel

from videokit.capabilities import Capabilities, EditCapabilities
from videokit.protocol import (
    MAX_FRAMES,
    MIN_FRAMES,
    is_valid_frame_count,
    nearest_frame_count,
)
from videokit.story.capability_checks import (
    check_animate_settings,
    check_audio,
    check_edit_settings,
    check_frame_count,
    check_prompt,
    endpoint_frames,
)
from videokit.story.model import (
    MAX_EDIT_IMAGES,
    Crossfade,
    PathLike,
    Scene,
    Story,
)
from videokit.story.problem_collector import ProblemCollector

__all__ = [
    "DEFAULT_FRAMES",
    "IMAGE_SUFFIXES",
    "ColorPlan",
    "EditPlan",
    "ScenePlan",
    "Source",
    "derive_seed",
    "edit_image_limit",
    "plan_scene",
    "resolve_path",
    "resolve_source",
]

DEFAULT_FRAMES = 81
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


@dataclass(frozen=True)
class Source:
    """Where a scene's first frame comes from."""

    kind: Literal["reference", "scene", "scene_edit", "file"]
    scene: str | None = None
    path: Path | None = None

    def describe(self) -> str:
        if self.kind == "scene":
            return f"last frame of '{self.scene}'"
        if self.kind == "scene_edit":
            return f"edited frame of '{self.scene}'"
        return str(self.path) if self.kind == "file" else "reference"


@dataclass(frozen=True)
class EditPlan:
    prompt: str
    #: Reference images after the frame being edited: the scene's ``edit.images``, then the
    #: story's extra references (``reference[1:]``).
    images: tuple[Path, ...]
    steps: int
    guidance: float
    negative_prompt: str
    seed: int


@dataclass(frozen=True)
class ColorPlan:
    """How a scene's animated clip is colour-matched before it is stored and handed on."""

    #: reference: to the story's reference frame; previous: to the frame the clip starts from.
    match: Literal["reference", "previous"]
    #: 1 = the full correction, 0.5 = half way between the clip as made and the correction.
    strength: float
    #: The story's reference image (its first): fitted to the frame size like a starting frame.
    reference: Path


@dataclass(frozen=True)
class ScenePlan:
    id: str
    index: int
    source: Source
    edit: EditPlan | None
    motion: str
    negative_prompt: str
    width: int
    height: int
    fps: int
    frames: int
    frames_note: str | None
    seed: int
    seed_derived: bool
    steps: int
    guidance: float
    guidance_2: float | None
    crossfade_out_s: float | None
    #: How the starting image becomes a frame when its aspect ratio differs: the scene's ``fit``,
    #: else ``defaults.fit`` (crop, pad or stretch; see videokit.media.images.fit_image).
    fit: str
    #: A soundtrack that drives the clip (sound-to-video endpoints only).
    audio: Path | None = None
    #: Colour matching of the clip; None when ``color.match`` is off.
    color: ColorPlan | None = None


def derive_seed(story_seed: int, scene_id: str) -> int:
    """A stable per-scene seed, so renders are reproducible (and cacheable) without seeds."""
    # surrogatepass: a salvaged invalid id may hold lone surrogates (JSON escapes read as YAML);
    # any valid id encodes exactly as before.
    text = f"videokit:{story_seed}:{scene_id}"
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:4], "big")


_Settings = TypeVar("_Settings", bound=BaseModel)


def _merged(base: _Settings, override: _Settings | None) -> _Settings:
    """``override`` over ``base``, field by field: only what the scene wrote replaces a default."""
    if override is None:
        return base
    return base.model_copy(
        update={name: getattr(override, name) for name in override.model_fields_set}
    )


def resolve_path(story: Story, path: PathLike) -> Path:
    expanded = Path(os.path.expanduser(str(path)))
    return expanded if expanded.is_absolute() else story.base_dir / expanded


def resolve_source(
    story: Story, scenes: Sequence[Scene], i: int, errors: ProblemCollector
) -> Source:
    scene = scenes[i]
    ref = scene.from_
    loc = ("scenes", i, "from")
    ids = {s.id for s in scenes}
    if ref is None:
        return Source("scene", scene=scenes[i - 1].id) if i > 0 else Source("reference")
    ref = ref.strip()
    if ref == "reference":
        return Source("reference")
    if ref in (scene.id, f"{scene.id}.edit"):
        errors.add(
            "a scene cannot start from itself",
            loc,
            scene=scene.id,
            hint="start from 'reference', another scene's id, or an image path",
        )
        return Source("reference")
    if ref in ids:
        return Source("scene", scene=ref)
    if ref.endswith(".edit") and ref[: -len(".edit")] in ids:
        target = ref[: -len(".edit")]
        if next(s for s in scenes if s.id == target).edit is None:
            errors.add(
                f"'{ref}' asks for the edited frame of '{target}', but that scene has no edit",
                loc,
                scene=scene.id,
                hint=f"use '{target}' for its last frame, or give '{target}' an edit",
            )
        return Source("scene_edit", scene=target)
    looks_like_path = "/" in ref or "\\" in ref or ref.lower().endswith(IMAGE_SUFFIXES)
    if looks_like_path:
        return Source("file", path=resolve_path(story, ref))
    close = difflib.get_close_matches(ref, sorted(ids | {"reference"}), n=1)
    errors.add(
        f"unknown scene '{ref}'",
        loc,
        scene=scene.id,
        hint=(f"did you mean '{close[0]}'? " if close else "")
        + "use 'reference', a scene id, '<scene-id>.edit' or an image path",
    )
    return Source("reference")


def plan_scene(
    story: Story,
    scene: Scene,
    i: int,
    source: Source,
    extras: tuple[Path, ...],
    errors: ProblemCollector,
    capabilities: Capabilities | None = None,
) -> ScenePlan:
    """One scene's plan; with ``capabilities``, held against what the endpoints can render."""
    caps = capabilities or Capabilities()
    d = story.defaults
    fps = d.fps
    if caps.animate is not None and caps.animate.frame_counts() is not None:
        frames, note = endpoint_frames(scene, i, caps.animate, DEFAULT_FRAMES, errors)
    else:
        frames, note = _frames(scene, i, fps, errors)
        check_frame_count(scene, i, frames, caps.animate, errors)
    check_audio(scene, i, caps.animate, errors)
    check_prompt(scene, i, caps.animate, errors)
    seed = scene.seed if scene.seed is not None else derive_seed(d.seed, scene.id)
    animate = _merged(d.animate, scene.animate)
    check_animate_settings(
        scene, i, (animate.steps, animate.guidance, animate.guidance_2), caps.animate, errors
    )
    edit: EditPlan | None = None
    if scene.edit is not None:
        edit = _edit_plan(story, scene, i, seed, extras, errors, caps.edit)
        check_edit_settings(story, scene, i, (edit.steps, edit.guidance), caps.edit, errors)
    crossfade = scene.transition.crossfade if isinstance(scene.transition, Crossfade) else None
    return ScenePlan(
        id=scene.id,
        index=i,
        source=source,
        edit=edit,
        motion=scene.motion,
        negative_prompt=(
            scene.negative_prompt if scene.negative_prompt is not None else d.negative_prompt
        ),
        width=d.width,
        height=d.height,
        fps=fps,
        frames=frames,
        frames_note=note,
        seed=seed,
        seed_derived=scene.seed is None,
        steps=animate.steps,
        guidance=animate.guidance,
        guidance_2=animate.guidance_2,
        crossfade_out_s=crossfade,
        fit=scene.fit if scene.fit is not None else d.fit,
        audio=resolve_path(story, scene.audio) if scene.audio is not None else None,
        color=_color_plan(story, scene),
    )


def _color_plan(story: Story, scene: Scene) -> ColorPlan | None:
    color = _merged(story.defaults.color, scene.color)
    if color.match == "off":
        return None
    reference = resolve_path(story, story.references[0])
    return ColorPlan(match=color.match, strength=color.strength, reference=reference)


def _edit_plan(
    story: Story,
    scene: Scene,
    i: int,
    seed: int,
    extras: tuple[Path, ...],
    errors: ProblemCollector,
    caps: EditCapabilities | None = None,
) -> EditPlan:
    assert scene.edit is not None
    d = story.defaults.edit
    edit = scene.edit
    guidance = edit.guidance if edit.guidance is not None else d.guidance
    # The most specific negative prompt wins: the scene's edit, then the story's edit settings,
    # then the story-wide one (a story that says "blurry, low quality" means it for edits too).
    if edit.negative_prompt is not None:
        negative = edit.negative_prompt
    elif "negative_prompt" in d.model_fields_set:
        negative = d.negative_prompt
    else:
        negative = story.defaults.negative_prompt
    # An endpoint that takes no steps or guidance says so itself (check_edit_settings).
    if guidance > 1.0 and not negative.strip() and (caps is None or caps.steps):
        where = "guidance" in edit.model_fields_set
        errors.warn(
            f"edit guidance {guidance:g} has no effect without a negative prompt "
            "(Qwen-Image-Edit only runs CFG when one is given)",
            ("scenes", i, "edit", "guidance") if where else ("defaults", "edit", "guidance"),
            scene=scene.id,
            hint="give a negative_prompt, or use guidance 1 (the Lightning LoRA needs no CFG)",
        )
    own = tuple(resolve_path(story, p) for p in edit.images)
    total = 1 + len(own) + len(extras)
    limit, taker = edit_image_limit(caps)
    # Too many extras for any edit is reported once, at `reference` (plan._check_extra_references).
    if total > limit and len(extras) < limit:
        room = limit - 1 - len(extras)
        fewer = ", or list fewer story references" if extras else ""
        errors.add(
            f"this edit would get {total} images (the frame, {len(own)} of its own and "
            f"{len(extras)} extra story reference(s)); {taker} takes at most {limit}",
            ("scenes", i, "edit", "images"),
            scene=scene.id,
            hint=f"give this edit at most {room} image(s){fewer}"
            if room
            else f"remove this edit's images{fewer}",
        )
    return EditPlan(
        prompt=edit.prompt,
        images=own + extras,
        steps=edit.steps if edit.steps is not None else d.steps,
        guidance=guidance,
        negative_prompt=negative,
        seed=edit.seed if edit.seed is not None else seed,
    )


def edit_image_limit(caps: EditCapabilities | None) -> tuple[int, str]:
    """How many images one edit takes in all (the frame it edits included), and who says so."""
    if caps is not None and caps.max_images < MAX_EDIT_IMAGES:
        return caps.max_images, f"the edit endpoint {caps.endpoint}"
    return MAX_EDIT_IMAGES, "Qwen-Image-Edit-Plus"


def _frames(scene: Scene, i: int, fps: int, errors: ProblemCollector) -> tuple[int, str | None]:
    d = errors.story.defaults
    where: tuple[str | int, ...]
    if scene.frames is not None:
        frames, where = scene.frames, ("scenes", i, "frames")
    elif scene.duration is not None:
        return _from_duration(scene.duration, fps, ("scenes", i, "duration"), errors)
    elif d.frames is not None:
        frames, where = d.frames, ("defaults", "frames")
    elif d.duration is not None:
        return _from_duration(d.duration, fps, ("defaults", "duration"), errors)
    else:
        return DEFAULT_FRAMES, None
    if not is_valid_frame_count(frames):
        errors.add(
            f"frames must be 4k+1 (Wan's VAE packs 4 frames per latent); {frames} is not",
            where,
            scene=scene.id if where[0] == "scenes" else None,
            hint=f"use {nearest_frame_count(frames)}, or give 'duration' in seconds instead",
        )
    return frames, None


def _from_duration(
    duration: float, fps: int, where: tuple[str | int, ...], errors: ProblemCollector
) -> tuple[int, str]:
    exact = duration * fps
    frames = nearest_frame_count(exact)
    unclamped = 4 * int((exact - 1) / 4 + 0.5) + 1
    if frames != unclamped:
        bound = "at least" if frames == MIN_FRAMES else "at most"
        scene = errors.story.scenes[int(where[1])].id if where[0] == "scenes" else None
        errors.warn(
            f"{duration:g} s at {fps} fps is {exact:g} frames, but a clip has {bound} "
            f"{frames} frames ({frames / fps:.3f} s), so this clip will be {frames} frames",
            where,
            scene=scene,
            hint=f"clips last {MIN_FRAMES / fps:.3f} to {MAX_FRAMES / fps:.3f} s at {fps} fps; "
            "split a longer shot into scenes that continue each other",
        )
    return frames, f"{duration:g} s at {fps} fps -> {frames} frames ({frames / fps:.3f} s)"
