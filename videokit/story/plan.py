"""From a valid-looking story to a concrete plan, or every reason it cannot be rendered.

Planning resolves what the schema alone cannot check: ``from`` references and cycles, frame counts
(``duration`` -> 4k+1), derived seeds, per-scene settings merged over the defaults, the timeline
with its seam drops and crossfades, the limits of the wire models (a plan never yields a job the
workers would refuse) and of the endpoints (their :class:`~videokit.capabilities.Capabilities`),
and the files the story names. It never submits anything; ``videokit validate`` is exactly this
step. The parts live in :mod:`~videokit.story.scene_plan`, :mod:`~videokit.story.timeline`,
:mod:`~videokit.story.capability_checks` and :mod:`~videokit.story.file_checks`.

What is legal but probably not what the author meant (a clip length clamped to the model's
range, a crossfade on a scene that is not on the timeline) becomes a located warning in
:attr:`StoryPlan.warnings`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from videokit.capabilities import Capabilities, EditCapabilities
from videokit.errors import Problem, StoryError
from videokit.protocol import MAX_PIXELS
from videokit.story.capability_checks import check_animate_frame
from videokit.story.file_checks import check_story_files, unwritable_reason, warn_crop
from videokit.story.graph import CycleError, SceneGraph
from videokit.story.model import MAX_EDIT_IMAGES, Story
from videokit.story.problem_collector import ProblemCollector
from videokit.story.scene_plan import (
    ColorPlan,
    EditPlan,
    ScenePlan,
    Source,
    derive_seed,
    edit_image_limit,
    plan_scene,
    resolve_path,
    resolve_source,
)
from videokit.story.timeline import TimelineEntry, timeline_entries, timeline_order

__all__ = [
    "ColorPlan",
    "EditPlan",
    "ScenePlan",
    "Source",
    "StoryPlan",
    "TimelineEntry",
    "derive_seed",
    "plan_story",
    "problems_with_plan",
    "sorted_problems",
    "unwritable_reason",
]


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
    #: (width, height) of every image file the plan inspected (references, ``edit.images``, image
    #: paths in ``from``), so that whether a starting image needs fitting is known without
    #: reading it again. Empty when files were not checked.
    image_sizes: Mapping[Path, tuple[int, int]] = field(default_factory=dict)
    #: What the endpoints can render, as the plan was checked against (empty: no limits but the
    #: wire protocol's).
    capabilities: Capabilities = field(default_factory=Capabilities)

    @property
    def edit_size(self) -> tuple[int, int] | None:
        """The size edits come back at, where the edit endpoint decides it (None: the frame's
        size, or no scene edits)."""
        caps = self.capabilities.edit
        if caps is None or not any(s.edit is not None for s in self.scenes.values()):
            return None
        size = caps.output_size(self.width, self.height)
        return None if size == (self.width, self.height) else size

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


def plan_story(
    story: Story, *, check_files: bool = True, capabilities: Capabilities | None = None
) -> StoryPlan:
    """Resolve ``story`` into a plan, or raise :class:`StoryError` listing every problem.

    With ``capabilities`` (see :mod:`videokit.backends`, ``capabilities_for``), the story is also
    held against what its endpoints can render; without them only the wire protocol's limits.
    """
    caps = capabilities or Capabilities()
    errors = ProblemCollector(story)
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

    if not check_animate_frame(story, caps.animate, errors):
        _check_frame_size(story, errors)
    references = [resolve_path(story, p) for p in story.references]
    extras = tuple(references[1:])
    _check_extra_references(story, extras, errors, caps.edit)
    # By index: a duplicate id still has its own `from`, whose file is checked like any other.
    sources: list[Source] = []
    parents: dict[str, str | None] = {}
    for i, scene in enumerate(scenes):
        source = resolve_source(story, scenes, i, errors)
        sources.append(source)
        parents.setdefault(
            scene.id, source.scene if source.kind in ("scene", "scene_edit") else None
        )

    graph = SceneGraph(tuple(dict.fromkeys(ids)), {k: parents[k] for k in dict.fromkeys(ids)})
    # Sources that had problems resolved to the reference, so the graph is sound to build as soon
    # as ids are unique, and a loop is reported together with everything else.
    if len(seen) == len(scenes):
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
            plans[scene.id] = plan_scene(story, scene, i, sources[i], extras, errors, caps)

    timeline_ids = timeline_order(story, ids, errors)
    timeline = timeline_entries(story, plans, timeline_ids, errors)
    branches = tuple(s for s in dict.fromkeys(ids) if s not in set(timeline_ids))
    _warn_unused(story, plans, branches, extras, errors)

    output = resolve_path(story, story.output.path) if story.output.path is not None else None
    audio = resolve_path(story, story.output.audio) if story.output.audio is not None else None
    image_sizes: dict[Path, tuple[int, int]] = {}
    if check_files:
        image_sizes = check_story_files(story, references, sources, audio, output, errors)
        warn_crop(story, plans, references, image_sizes, errors)

    if errors.problems:
        raise StoryError(sorted_problems(errors.problems))
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
        image_sizes=image_sizes,
        capabilities=caps,
    )


def sorted_problems(problems: Iterable[Problem]) -> list[Problem]:
    """``problems`` once each, in file order: by line, those without a line last."""
    unique = dict.fromkeys(problems)
    return sorted(unique, key=lambda p: (p.line is None, p.line or 0))


def problems_with_plan(
    found: Sequence[Problem],
    salvaged: Story | None,
    *,
    covered: Collection[str] = (),
    capabilities: Capabilities | None = None,
) -> list[Problem]:
    """``found`` (what loading a story found) and what planning ``salvaged`` finds, sorted.

    ``salvaged`` is the loader's best-effort repair of an invalid story: placeholders and
    defaults stand where the user's values were invalid, at the fields named in ``covered``. A
    plan problem at or under one of those fields is about a placeholder, not about the story,
    and is dropped. ``salvaged`` is only planned (against ``capabilities``), never rendered.
    """
    problems = list(found)
    if salvaged is not None:
        try:
            plan_story(salvaged, capabilities=capabilities)
        except StoryError as exc:
            problems += [p for p in exc.problems if not _under_any(p.field, covered)]
    return sorted_problems(problems)


def _under_any(field_path: str | None, covered: Collection[str]) -> bool:
    """``scenes[2].id`` is under ``scenes[2]`` (and under itself), ``reference[0]`` under
    ``reference``; ``scenes[10]`` is not under ``scenes[1]``."""
    if field_path is None:
        return False
    return any(
        field_path == top or field_path.startswith((f"{top}.", f"{top}[")) for top in covered
    )


def _check_frame_size(story: Story, errors: ProblemCollector) -> None:
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


def _check_extra_references(
    story: Story,
    extras: tuple[Path, ...],
    errors: ProblemCollector,
    caps: EditCapabilities | None,
) -> None:
    # An edit endpoint's own limit only matters to a story with edits.
    edits = any(scene.edit is not None for scene in story.scenes)
    limit, taker = edit_image_limit(caps if edits else None)
    room = limit - 1
    if len(extras) > room:
        who = "an edit" if limit == MAX_EDIT_IMAGES else taker
        errors.add(
            f"{len(extras) + 1} reference images: the first starts the story and every other one "
            f"goes to each edit, but {who} takes at most {room} besides the frame it edits",
            ("reference",),
            hint=f"list at most {room + 1} images (the starting image and {room} references)"
            if room
            else "list only the starting image",
        )


def _warn_unused(
    story: Story,
    plans: dict[str, ScenePlan],
    branches: tuple[str, ...],
    extras: tuple[Path, ...],
    errors: ProblemCollector,
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
