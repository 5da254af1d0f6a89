"""From a valid-looking story to a concrete plan, or every reason it cannot be rendered.

Planning resolves what the schema alone cannot check: ``from`` references and cycles, frame counts
(``duration`` -> 4k+1), derived seeds, per-scene settings merged over the defaults, the timeline
with its seam drops and crossfades, the limits of the wire models (a plan never yields a job the
workers would refuse), and the files the story names: they must exist and decode as images or
audio (decompression bombs are refused from the header, before any pixel is decoded), and the
final video must be writable where the story says. It never submits anything; ``videokit
validate`` is exactly this step.

What is legal but probably not what the author meant (a clip length clamped to the model's
range, a crossfade on a scene that is not on the timeline) becomes a located warning in
:attr:`StoryPlan.warnings`.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from videokit.errors import Problem, StoryError, VideoKitError
from videokit.protocol import (
    MAX_FRAMES,
    MAX_PIXELS,
    MIN_FRAMES,
    is_valid_frame_count,
    nearest_frame_count,
)
from videokit.story.graph import CycleError, SceneGraph
from videokit.story.loader import format_field
from videokit.story.model import (
    MAX_EDIT_IMAGES,
    AnimateSettings,
    Crossfade,
    PathLike,
    Scene,
    Story,
)

__all__ = [
    "EditPlan",
    "ScenePlan",
    "Source",
    "StoryPlan",
    "TimelineEntry",
    "derive_seed",
    "plan_story",
    "unwritable_reason",
]

DEFAULT_FRAMES = 81
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov")


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


@dataclass(frozen=True)
class TimelineEntry:
    scene: str
    frames: int
    drop_head: int
    crossfade: int

    @property
    def continuous(self) -> bool:
        return self.drop_head > 0


@dataclass(frozen=True)
class StoryPlan:
    story: Story
    scenes: dict[str, ScenePlan]
    graph: SceneGraph
    timeline: tuple[TimelineEntry, ...]
    branches: tuple[str, ...]
    references: tuple[Path, ...]
    width: int
    height: int
    fps: int
    output: Path | None
    audio: Path | None
    audio_fade_out: float
    crf: int
    preset: str
    #: Located, human-readable notes on what is legal but probably unintended.
    warnings: tuple[str, ...] = field(default=())

    @property
    def final_frames(self) -> int:
        return sum(e.frames - e.drop_head - e.crossfade for e in self.timeline)

    def frame_formula(self) -> str:
        """Human-readable arithmetic behind :attr:`final_frames`, as ``plan`` prints it."""
        terms: list[str] = []
        for entry in self.timeline:
            term = str(entry.frames)
            if entry.drop_head:
                term = f"({entry.frames} - {entry.drop_head} seam)"
            if entry.crossfade:
                term = f"{term} - {entry.crossfade} crossfade"
            terms.append(term)
        seconds = self.final_frames / self.fps
        return (
            f"{' + '.join(terms)} = {self.final_frames} frames = {seconds:.3f} s at {self.fps} fps"
        )

    def stages(self) -> set[Literal["edit", "animate"]]:
        """The stages this story's jobs need: always animate, edit when a scene edits."""
        if any(scene.edit is not None for scene in self.scenes.values()):
            return {"edit", "animate"}
        return {"animate"}

    def job_count(self) -> dict[str, int]:
        edits = sum(1 for s in self.scenes.values() if s.edit is not None)
        return {"edit": edits, "animate": len(self.scenes)}


def derive_seed(story_seed: int, scene_id: str) -> int:
    """A stable per-scene seed, so renders are reproducible (and cacheable) without seeds."""
    digest = hashlib.sha256(f"videokit:{story_seed}:{scene_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


class _Collector:
    def __init__(self, story: Story) -> None:
        self.story = story
        self.problems: list[Problem] = []
        self.warnings: list[str] = []

    def _problem(
        self, message: str, loc: tuple[str | int, ...], scene: str | None, hint: str | None
    ) -> Problem:
        return Problem(
            message,
            file=self.story.source,
            line=self.story.line_of(loc),
            field=format_field(loc) or None,
            scene=scene,
            hint=hint,
        )

    def add(
        self,
        message: str,
        loc: tuple[str | int, ...],
        *,
        scene: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.problems.append(self._problem(message, loc, scene, hint))

    def warn(
        self,
        message: str,
        loc: tuple[str | int, ...],
        *,
        scene: str | None = None,
        hint: str | None = None,
    ) -> None:
        text = self._problem(message, loc, scene, hint).render()
        if text not in self.warnings:  # a default that misfires for every scene is said once
            self.warnings.append(text)


def plan_story(story: Story, *, check_files: bool = True) -> StoryPlan:
    """Resolve ``story`` into a plan, or raise :class:`StoryError` listing every problem."""
    errors = _Collector(story)
    defaults = story.defaults
    scenes = story.scenes
    ids = [scene.id for scene in scenes]

    seen: dict[str, int] = {}
    for i, scene in enumerate(scenes):
        if scene.id in seen:
            errors.add(
                f"duplicate scene id '{scene.id}' (first used by scenes[{seen[scene.id]}])",
                ("scenes", i, "id"),
                scene=scene.id,
                hint="give every scene a unique id",
            )
        else:
            seen[scene.id] = i

    _check_frame_size(story, errors)
    references = [_resolve_path(story, p) for p in story.references]
    extras = tuple(references[1:])
    _check_extra_references(story, extras, errors)
    sources: dict[str, Source] = {}
    parents: dict[str, str | None] = {}
    for i, scene in enumerate(scenes):
        source = _resolve_source(story, scenes, i, errors)
        sources[scene.id] = source
        parents[scene.id] = source.scene if source.kind in ("scene", "scene_edit") else None

    graph = SceneGraph(tuple(dict.fromkeys(ids)), {k: parents[k] for k in dict.fromkeys(ids)})
    if len(seen) == len(scenes) and not errors.problems:
        try:
            graph = SceneGraph.build(ids, parents)
        except CycleError as exc:
            first = exc.cycle[0]
            errors.add(
                f"scenes start from each other in a loop: {exc}",
                ("scenes", ids.index(first), "from"),
                scene=first,
                hint="start one scene of the loop from 'reference', an image or an earlier one",
            )

    plans: dict[str, ScenePlan] = {}
    for i, scene in enumerate(scenes):
        if scene.id not in plans:
            plans[scene.id] = _scene_plan(story, scene, i, sources[scene.id], extras, errors)

    timeline_ids = _timeline(story, ids, errors)
    timeline = _timeline_entries(story, plans, timeline_ids, errors)
    branches = tuple(s for s in dict.fromkeys(ids) if s not in set(timeline_ids))
    _warn_unused(story, plans, branches, extras, errors)

    output = _resolve_path(story, story.output.path) if story.output.path is not None else None
    audio = _resolve_path(story, story.output.audio) if story.output.audio is not None else None
    if check_files:
        _check_files(story, references, plans, audio, output, errors)

    if errors.problems:
        raise StoryError(errors.problems)
    return StoryPlan(
        story=story,
        scenes=plans,
        graph=graph,
        timeline=tuple(timeline),
        branches=branches,
        references=tuple(references),
        width=defaults.width,
        height=defaults.height,
        fps=defaults.fps,
        output=output,
        audio=audio,
        audio_fade_out=story.output.audio_fade_out,
        crf=story.output.crf,
        preset=story.output.preset,
        warnings=tuple(errors.warnings),
    )


def _check_frame_size(story: Story, errors: _Collector) -> None:
    # Each side is checked by the schema; their product is Wan's per-frame budget, which the
    # animate request enforces, so it is refused here rather than after the edits were paid for.
    width, height = story.defaults.width, story.defaults.height
    if width * height <= MAX_PIXELS:
        return
    fit_height = MAX_PIXELS // width // 16 * 16
    fit_width = MAX_PIXELS // height // 16 * 16
    errors.add(
        f"{width}x{height} is {width * height:,} pixels per frame, over the limit of "
        f"{MAX_PIXELS:,} (1920x1088)",
        ("defaults", "height" if height >= width else "width"),
        hint=f"use a smaller size, e.g. {width}x{fit_height} or {fit_width}x{height}",
    )


def _check_extra_references(story: Story, extras: tuple[Path, ...], errors: _Collector) -> None:
    room = MAX_EDIT_IMAGES - 1
    if len(extras) > room:
        errors.add(
            f"{len(extras) + 1} reference images: the first starts the story and every other one "
            f"goes to each edit, but an edit takes at most {room} besides the frame it edits",
            ("reference",),
            hint=f"list at most {room + 1} images (the starting image and {room} references)",
        )


def _merged(base: AnimateSettings, override: AnimateSettings | None) -> AnimateSettings:
    """``override`` over ``base``, field by field: only what the scene wrote replaces a default."""
    if override is None:
        return base
    return base.model_copy(
        update={name: getattr(override, name) for name in override.model_fields_set}
    )


def _resolve_path(story: Story, path: PathLike) -> Path:
    expanded = Path(os.path.expanduser(str(path)))
    return expanded if expanded.is_absolute() else story.base_dir / expanded


def _resolve_source(story: Story, scenes: Sequence[Scene], i: int, errors: _Collector) -> Source:
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
        return Source("file", path=_resolve_path(story, ref))
    close = difflib.get_close_matches(ref, sorted(ids | {"reference"}), n=1)
    errors.add(
        f"unknown scene '{ref}'",
        loc,
        scene=scene.id,
        hint=(f"did you mean '{close[0]}'? " if close else "")
        + "use 'reference', a scene id, '<scene-id>.edit' or an image path",
    )
    return Source("reference")


def _scene_plan(
    story: Story,
    scene: Scene,
    i: int,
    source: Source,
    extras: tuple[Path, ...],
    errors: _Collector,
) -> ScenePlan:
    d = story.defaults
    fps = d.fps
    frames, note = _frames(scene, i, fps, errors)
    seed = scene.seed if scene.seed is not None else derive_seed(d.seed, scene.id)
    animate = _merged(d.animate, scene.animate)
    edit: EditPlan | None = None
    if scene.edit is not None:
        edit = _edit_plan(story, scene, i, seed, extras, errors)
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
    )


def _edit_plan(
    story: Story,
    scene: Scene,
    i: int,
    seed: int,
    extras: tuple[Path, ...],
    errors: _Collector,
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
    if guidance > 1.0 and not negative.strip():
        where = "guidance" in edit.model_fields_set
        errors.warn(
            f"edit guidance {guidance:g} has no effect without a negative prompt "
            "(Qwen-Image-Edit only runs CFG when one is given)",
            ("scenes", i, "edit", "guidance") if where else ("defaults", "edit", "guidance"),
            scene=scene.id,
            hint="give a negative_prompt, or use guidance 1 (the Lightning LoRA needs no CFG)",
        )
    own = tuple(_resolve_path(story, p) for p in edit.images)
    total = 1 + len(own) + len(extras)
    if total > MAX_EDIT_IMAGES and len(extras) < MAX_EDIT_IMAGES:
        room = MAX_EDIT_IMAGES - 1 - len(extras)
        errors.add(
            f"this edit would get {total} images (the frame, {len(own)} of its own and "
            f"{len(extras)} extra story reference(s)); Qwen-Image-Edit-Plus takes at most "
            f"{MAX_EDIT_IMAGES}",
            ("scenes", i, "edit", "images"),
            scene=scene.id,
            hint=f"give this edit at most {room} image(s), or list fewer story references",
        )
    return EditPlan(
        prompt=edit.prompt,
        images=own + extras,
        steps=edit.steps if edit.steps is not None else d.steps,
        guidance=guidance,
        negative_prompt=negative,
        seed=edit.seed if edit.seed is not None else seed,
    )


def _frames(scene: Scene, i: int, fps: int, errors: _Collector) -> tuple[int, str | None]:
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
    duration: float, fps: int, where: tuple[str | int, ...], errors: _Collector
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


def _timeline(story: Story, ids: list[str], errors: _Collector) -> list[str]:
    if story.timeline is None:
        return list(dict.fromkeys(ids))
    known = set(ids)
    result: list[str] = []
    if not story.timeline:
        errors.add("the timeline is empty", ("timeline",), hint="list scene ids, or remove it")
    for i, scene_id in enumerate(story.timeline):
        if scene_id not in known:
            close = difflib.get_close_matches(scene_id, sorted(known), n=1)
            errors.add(
                f"unknown scene '{scene_id}' on the timeline",
                ("timeline", i),
                hint=f"did you mean '{close[0]}'?" if close else "use ids from 'scenes'",
            )
        elif scene_id in result:
            errors.add(
                f"scene '{scene_id}' appears twice on the timeline",
                ("timeline", i),
                scene=scene_id,
                hint="each scene's clip is placed once",
            )
        else:
            result.append(scene_id)
    return result


def _timeline_entries(
    story: Story,
    plans: dict[str, ScenePlan],
    order: list[str],
    errors: _Collector,
) -> list[TimelineEntry]:
    entries: list[TimelineEntry] = []
    for pos, scene_id in enumerate(order):
        plan = plans[scene_id]
        drop_head = crossfade = 0
        if pos > 0:
            prev = plans[order[pos - 1]]
            if prev.crossfade_out_s is not None:
                crossfade = max(1, round(prev.crossfade_out_s * plan.fps))
            elif plan.edit is None and plan.source.kind == "scene" and plan.source.scene == prev.id:
                # A continuous shot: its frame 0 repeats the previous clip's last frame.
                drop_head = 1
        entries.append(TimelineEntry(scene_id, plan.frames, drop_head, crossfade))
    if order:
        last = plans[order[-1]]
        if last.crossfade_out_s is not None:
            errors.add(
                "the last scene on the timeline has a crossfade, but no clip follows it",
                ("scenes", last.index, "transition"),
                scene=last.id,
                hint="use 'cut' for the last scene",
            )
    for pos, entry in enumerate(entries):
        out = entries[pos + 1].crossfade if pos + 1 < len(entries) else 0
        usable = entry.frames - entry.drop_head
        if entry.crossfade + out >= usable:
            plan = plans[entry.scene]
            errors.add(
                f"crossfades of {entry.crossfade + out} frames do not fit in a {usable}-frame clip",
                ("scenes", plan.index, "transition"),
                scene=entry.scene,
                hint="shorten the crossfade or lengthen the clip",
            )
    return entries


def _warn_unused(
    story: Story,
    plans: dict[str, ScenePlan],
    branches: tuple[str, ...],
    extras: tuple[Path, ...],
    errors: _Collector,
) -> None:
    for scene_id in branches:
        plan = plans[scene_id]
        if plan.crossfade_out_s is not None:
            errors.warn(
                f"'{scene_id}' is not on the timeline, so its crossfade into the next clip is "
                "never used",
                ("scenes", plan.index, "transition"),
                scene=scene_id,
                hint="add the scene to 'timeline', or remove its transition",
            )
    if extras and not any(plan.edit is not None for plan in plans.values()):
        errors.warn(
            "the extra reference images are given to edits, and no scene has an edit",
            ("reference", 1),
            hint="give a scene an 'edit', or list only the starting image",
        )


def _check_files(
    story: Story,
    references: list[Path],
    plans: dict[str, ScenePlan],
    audio: Path | None,
    output: Path | None,
    errors: _Collector,
) -> None:
    from videokit.media.images import ImageRejected, inspect_image
    from videokit.media.probe import probe_audio

    checked: dict[Path, tuple[str | None, str | None]] = {}

    def check_image(path: Path, loc: tuple[str | int, ...], scene: str | None = None) -> None:
        if path not in checked:
            problem, hint = _file_problem(path, story.base_dir)
            if problem is None:
                try:
                    # decode=True: a truncated JPEG, or a PNG whose pixel data stops short, has a
                    # valid header and must fail here, not halfway through a paid render. The
                    # header's pixel count is checked first, so a bomb is never decoded.
                    inspect_image(path, decode=True)
                except ImageRejected as exc:
                    problem = f"{_shown(path)}: {exc.reason}"
                    hint = exc.hint or "give a PNG, JPEG or WebP image"
            checked[path] = (problem, hint)
        problem, hint = checked[path]
        if problem is not None:
            errors.add(problem, loc, scene=scene, hint=hint)

    ref_loc: tuple[str | int, ...] = ("reference",)
    multiple = isinstance(story.reference, list)
    for i, path in enumerate(references):
        check_image(path, (*ref_loc, i) if multiple else ref_loc)
    for plan in plans.values():
        scene = story.scenes[plan.index]
        if plan.edit is not None and scene.edit is not None:
            own = plan.edit.images[: len(scene.edit.images)]
            for j, image in enumerate(own):
                check_image(image, ("scenes", plan.index, "edit", "images", j), plan.id)
        if plan.source.kind == "file" and plan.source.path is not None:
            check_image(plan.source.path, ("scenes", plan.index, "from"), plan.id)
    if audio is not None:
        problem, hint = _file_problem(audio, story.base_dir)
        if problem is None:
            try:
                probe_audio(audio)
            except (VideoKitError, OSError, ValueError) as exc:
                reason = getattr(exc, "message", str(exc)).splitlines()[0]
                problem = f"{_shown(audio)}: not an audio file ({reason})"
                hint = "give an audio file: M4A, MP3, WAV, FLAC, ..."
        if problem is not None:
            errors.add(problem, ("output", "audio"), hint=hint)
    if output is not None:
        _check_output(output, errors)


def _check_output(output: Path, errors: _Collector) -> None:
    loc = ("output", "path")
    if output.is_dir():
        errors.add(f"{_shown(output)} is a directory", loc, hint="give a file name, e.g. final.mp4")
    elif output.suffix.lower() not in VIDEO_SUFFIXES:
        errors.add(
            f"{output.name}: the final video is H.264 in an MP4 container",
            loc,
            hint="end the file name with .mp4",
        )
    else:
        reason = unwritable_reason(output.parent)
        if reason is not None:
            errors.add(
                f"the final video cannot be written to {_shown(output)}: {reason}",
                loc,
                hint="give a path in a folder you can write to (relative paths start at the "
                "story file's folder)",
            )


def unwritable_reason(directory: Path) -> str | None:
    """Why files cannot be created in ``directory`` (made if missing), or ``None`` if they can.

    Creates nothing that outlives the call: the nearest existing ancestor must be a directory,
    and an anonymous file is created and dropped in it, because permission bits do not tell
    (root passes every access check, yet cannot create files in /proc or on a read-only mount).
    """
    directory = Path(os.path.abspath(directory))
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{_shown(existing)} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"no permission to create files in {_shown(existing)}"
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        return f"files cannot be created in {_shown(existing)} ({exc.strerror or exc})"
    return None


def _shown(path: Path) -> str:
    """A path as short as it can be and still be found from the current directory."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _file_problem(path: Path, base_dir: Path) -> tuple[str | None, str | None]:
    if not path.exists():
        return (
            f"{_shown(path)}: file not found",
            f"relative paths start at the story file's folder ({_shown(base_dir) or '.'})",
        )
    if path.is_dir():
        return f"{_shown(path)}: is a directory, not a file", "give the path of a file inside it"
    if not os.access(path, os.R_OK):
        return f"{_shown(path)}: not readable (permission denied)", "check the file's permissions"
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        return f"{_shown(path)}: cannot be read ({exc.strerror})", None
    return None, None
