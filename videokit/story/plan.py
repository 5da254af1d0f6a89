"""From a valid-looking story to a concrete plan, or every reason it cannot be rendered.

Planning resolves what the schema alone cannot check: ``from`` references and cycles, frame counts
(``duration`` -> 4k+1), derived seeds, the timeline with its seam drops and crossfades, and the
files
the story names (they must exist, be images or audio, and not be decompression bombs). It never
submits anything; ``videokit validate`` is exactly this step.
"""

from __future__ import annotations

import difflib
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from videokit.errors import Problem, StoryError, VideoKitError
from videokit.protocol import is_valid_frame_count, nearest_frame_count
from videokit.story.graph import CycleError, SceneGraph
from videokit.story.loader import format_field
from videokit.story.model import Crossfade, PathLike, Scene, Story

__all__ = [
    "EditPlan",
    "ScenePlan",
    "Source",
    "StoryPlan",
    "TimelineEntry",
    "derive_seed",
    "plan_story",
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

    def add(
        self,
        message: str,
        loc: tuple[str | int, ...],
        *,
        scene: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.problems.append(
            Problem(
                message,
                file=self.story.source,
                line=self.story.line_of(loc),
                field=format_field(loc) or None,
                scene=scene,
                hint=hint,
            )
        )


def plan_story(story: Story, *, check_files: bool = True) -> StoryPlan:
    """Resolve ``story`` into a plan, or raise :class:`StoryError` listing every problem."""
    errors = _Collector(story)
    warnings: list[str] = []
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

    references = [_resolve_path(story, p) for p in story.references]
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
        plans.setdefault(
            scene.id, _scene_plan(story, scene, i, sources[scene.id], errors, warnings)
        )

    timeline_ids = _timeline(story, ids, errors)
    timeline = _timeline_entries(story, plans, timeline_ids, errors)
    branches = tuple(s for s in dict.fromkeys(ids) if s not in set(timeline_ids))

    output = _resolve_path(story, story.output.path) if story.output.path is not None else None
    audio = _resolve_path(story, story.output.audio) if story.output.audio is not None else None
    if check_files:
        _check_files(story, references, sources, audio, output, errors)

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
        warnings=tuple(warnings),
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
    errors: _Collector,
    warnings: list[str],
) -> ScenePlan:
    d = story.defaults
    fps = d.fps
    frames, note = _frames(scene, d.frames, d.duration, fps, i, errors)
    seed = scene.seed if scene.seed is not None else derive_seed(d.seed, scene.id)
    animate = scene.animate or d.animate
    edit: EditPlan | None = None
    if scene.edit is not None:
        guidance = scene.edit.guidance if scene.edit.guidance is not None else d.edit.guidance
        negative = (
            scene.edit.negative_prompt
            if scene.edit.negative_prompt is not None
            else d.edit.negative_prompt
        )
        if guidance > 1.0 and not negative.strip():
            warnings.append(
                f"scene '{scene.id}': edit guidance {guidance} has no effect without a negative "
                "prompt (Qwen-Image-Edit only runs CFG when one is given)"
            )
        edit = EditPlan(
            prompt=scene.edit.prompt,
            images=tuple(_resolve_path(story, p) for p in scene.edit.images),
            steps=scene.edit.steps if scene.edit.steps is not None else d.edit.steps,
            guidance=guidance,
            negative_prompt=negative,
            seed=scene.edit.seed if scene.edit.seed is not None else seed,
        )
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


def _frames(
    scene: Scene,
    default_frames: int | None,
    default_duration: float | None,
    fps: int,
    i: int,
    errors: _Collector,
) -> tuple[int, str | None]:
    where: tuple[str | int, ...]
    if scene.frames is not None:
        frames, where = scene.frames, ("scenes", i, "frames")
    elif scene.duration is not None:
        return _from_duration(scene.duration, fps)
    elif default_frames is not None:
        frames, where = default_frames, ("defaults", "frames")
    elif default_duration is not None:
        return _from_duration(default_duration, fps)
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


def _from_duration(duration: float, fps: int) -> tuple[int, str]:
    frames = nearest_frame_count(duration * fps)
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


def _check_files(
    story: Story,
    references: list[Path],
    sources: dict[str, Source],
    audio: Path | None,
    output: Path | None,
    errors: _Collector,
) -> None:
    from videokit.media.images import ImageRejected, inspect_image
    from videokit.media.probe import probe_audio

    def check_image(path: Path, loc: tuple[str | int, ...], scene: str | None = None) -> None:
        problem, hint = _file_problem(path, story.base_dir)
        if problem is None:
            try:
                inspect_image(path)
            except ImageRejected as exc:
                problem = f"{_shown(path)}: {exc.reason}"
                hint = exc.hint or "give a PNG, JPEG or WebP image"
        if problem is not None:
            errors.add(problem, loc, scene=scene, hint=hint)

    ref_loc: tuple[str | int, ...] = ("reference",)
    multiple = isinstance(story.reference, list)
    for i, path in enumerate(references):
        check_image(path, (*ref_loc, i) if multiple else ref_loc)
    for i, scene in enumerate(story.scenes):
        if scene.edit is not None:
            for j, image in enumerate(scene.edit.images):
                check_image(
                    _resolve_path(story, image), ("scenes", i, "edit", "images", j), scene.id
                )
        source = sources.get(scene.id)
        if source is not None and source.kind == "file" and source.path is not None:
            check_image(source.path, ("scenes", i, "from"), scene.id)
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
        if output.is_dir():
            errors.add(
                f"{output} is a directory",
                ("output", "path"),
                hint="give a file name, e.g. final.mp4",
            )
        elif output.suffix.lower() not in VIDEO_SUFFIXES:
            errors.add(
                f"{output.name}: the final video is H.264 in an MP4 container",
                ("output", "path"),
                hint="end the file name with .mp4",
            )


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
