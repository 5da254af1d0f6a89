"""Everything the report shows, gathered from a work dir: ``manifest.json``, ``report/facts.json``
and the previous render's manifest (see :mod:`videokit.report.facts`).

The result is plain data (:class:`Report`) with every path relative to the work dir, so the
report written from it can be moved and shared with the work dir. Nothing here writes a file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from videokit.errors import ConfigError
from videokit.pipeline.manifest import AttemptRecord, Manifest, SceneRecord, StageRecord
from videokit.report.changes import SceneChange, made_by_run, scene_change
from videokit.report.facts import ClipJoin, RenderFacts, load_facts, load_previous

__all__ = ["Block", "Film", "Previous", "Report", "SceneView", "StageView", "gather"]


@dataclass(frozen=True)
class Block:
    """One clip on the film's timeline, in film frames: it shows ``[start, start + length)``.

    Its first ``crossfade`` frames blend with the clip before; ``drop_head`` frames of the clip
    were dropped before ``start`` (a continuous shot's seam).
    """

    scene: str
    index: int
    start: int
    length: int
    frames: int
    drop_head: int
    crossfade: int


@dataclass(frozen=True)
class Film:
    path: str
    frames: int
    fps: float
    width: int
    height: int
    formula: str
    method: str
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class StageView:
    stage: str
    status: str
    prompt: str | None
    negative_prompt: str | None
    endpoint: str | None
    model: str | None
    cached: bool
    made_now: bool
    attempts: tuple[AttemptRecord, ...]
    seconds: float | None
    cost_usd: float


@dataclass(frozen=True)
class SceneView:
    id: str
    status: str
    source: str
    seed: int
    position: int | None  # index on the timeline; None for a branch
    stale: str | None
    frames: int | None
    fps: int | None
    width: int | None
    height: int | None
    clip: str | None
    first_frame: str | None
    last_frame: str | None
    edit: StageView | None
    animate: StageView | None
    seconds: float | None
    cost_usd: float
    made_now: bool
    change: SceneChange | None
    error: str | None
    color: str | None = None  # the colour matching applied, in words

    @property
    def branch(self) -> bool:
        return self.position is None

    @property
    def stages(self) -> tuple[StageView, ...]:
        return tuple(s for s in (self.edit, self.animate) if s is not None)


@dataclass(frozen=True)
class Previous:
    run_id: str
    started: str
    removed: tuple[str, ...]
    timeline_changed: bool
    film_changed: bool


@dataclass(frozen=True)
class Report:
    title: str
    backend: str
    updated: str
    run_started: str
    film: Film | None
    scenes: tuple[SceneView, ...]
    cost_usd: float  # what the current outputs cost, across renders
    run_cost_usd: float  # what the latest render spent, warm-ups included
    warmup_usd: float
    billed_usd: float | None
    previous: Previous | None
    notes: tuple[str, ...] = field(default=())

    @property
    def changes(self) -> tuple[SceneChange, ...]:
        return tuple(s.change for s in self.scenes if s.change is not None)


def gather(workdir: Path) -> Report:
    """The report of the render in ``workdir``; a :class:`ConfigError` if it holds none."""
    manifest_path = workdir / "manifest.json"
    if not manifest_path.is_file():
        raise ConfigError(
            f"{manifest_path} not found: {workdir} is not a render's work directory",
            hint="pass the work directory of a render, e.g. `videokit report out/story`",
        )
    manifest = Manifest.load(manifest_path)
    if manifest.run is None:
        raise ConfigError(f"{manifest_path} records no render", hint="render the story first")
    facts = load_facts(workdir)
    # Facts another render wrote (the latest one failed) still place the film they name (by its
    # stitch key), but their stale scenes and models are not the manifest's.
    own = facts if facts is not None and facts.run_id == manifest.run.id else None
    notes: list[str] = []
    if not manifest.run.finished:
        notes.append(
            f"The latest render (started {manifest.run.started}) did not finish: scenes it did "
            "not reach are shown as it left them."
        )
    film = _film(workdir, manifest, facts, notes)
    previous = load_previous(workdir)
    if previous is not None and previous.run is not None and previous.run.id == manifest.run.id:
        previous = None
    # The story's timeline as the latest render planned it (the film may be an earlier one's).
    on_timeline = manifest.timeline or ([b.scene for b in film.blocks] if film else [])
    order = on_timeline + [s for s in manifest.scenes if s not in on_timeline]
    scenes = tuple(
        _scene(scene_id, manifest, own, previous, on_timeline)
        for scene_id in order
        if scene_id in manifest.scenes
    )
    return Report(
        title=manifest.title,
        backend=manifest.backend,
        updated=manifest.updated,
        run_started=manifest.run.started,
        film=film,
        scenes=scenes,
        cost_usd=manifest.cost_usd,
        run_cost_usd=manifest.run_cost_usd,
        warmup_usd=round(sum(a.cost_usd for a in manifest.warmup), 6),
        billed_usd=manifest.billing.total_usd if manifest.billing is not None else None,
        previous=_previous(manifest, previous),
        notes=tuple(notes),
    )


def blocks_of(timeline: list[ClipJoin]) -> tuple[Block, ...]:
    """Where each clip lands in the film: ``sum(frames - drop_head) - sum(crossfade)`` frames."""
    blocks: list[Block] = []
    start = 0
    for index, join in enumerate(timeline):
        start -= join.crossfade
        length = join.frames - join.drop_head
        blocks.append(
            Block(join.scene, index, start, length, join.frames, join.drop_head, join.crossfade)
        )
        start += length
    return tuple(blocks)


def _film(
    workdir: Path, manifest: Manifest, facts: RenderFacts | None, notes: list[str]
) -> Film | None:
    final = manifest.final
    if final is None:
        notes.append("No film has been stitched in this work directory yet.")
        return None
    if not (workdir / final.path).is_file():
        notes.append(f"The film {final.path} is gone (moved or deleted since it was rendered).")
    elif final.path.startswith(".."):
        notes.append(
            f"The film is outside the work directory ({final.path}): to share this report, "
            "keep it at the same place next to the work directory."
        )
    blocks: tuple[Block, ...] = ()
    if facts is not None and facts.timeline and facts.film_key == final.key:
        blocks = blocks_of(facts.timeline)
        placed = blocks[-1].start + blocks[-1].length if blocks else 0
        if placed != final.frames:
            notes.append(
                f"The timeline adds up to {placed} frames but the film has {final.frames}: "
                "its marks may be off."
            )
    else:
        notes.append(
            "This film's timeline (seams and crossfades) was not recorded: render the story "
            "again to draw it (cached scenes cost nothing)."
        )
    return Film(
        path=_posix(final.path),
        frames=final.frames,
        fps=final.fps,
        width=final.width,
        height=final.height,
        formula=final.formula,
        method=final.method,
        blocks=blocks,
    )


def _scene(
    scene_id: str,
    manifest: Manifest,
    facts: RenderFacts | None,
    previous: Manifest | None,
    on_timeline: list[str],
) -> SceneView:
    record = manifest.scenes[scene_id]
    run_id = manifest.run.id if manifest.run is not None else None
    models = facts.models.get(scene_id, {}) if facts is not None else {}
    params = record.animate.params if record.animate is not None else {}
    numbers = {name: params.get(name) for name in ("frames", "fps", "width", "height")}
    frames, fps, width, height = (v if isinstance(v, int) else None for v in numbers.values())
    return SceneView(
        id=scene_id,
        status=record.status,
        source=record.source,
        seed=record.seed,
        position=on_timeline.index(scene_id) if scene_id in on_timeline else None,
        stale=facts.stale.get(scene_id) if facts is not None else None,
        frames=frames,
        fps=fps,
        width=width,
        height=height,
        clip=_output(record, "clip"),
        first_frame=_output(record, "first_frame"),
        last_frame=_output(record, "last_frame"),
        edit=_stage("edit", record.edit, models, run_id),
        animate=_stage("animate", record.animate, models, run_id),
        seconds=record.seconds,
        cost_usd=record.cost_usd,
        made_now=made_by_run(record, run_id),
        change=scene_change(scene_id, manifest, previous) if previous is not None else None,
        error=record.error,
        color=_color(record),
    )


def _color(record: SceneRecord) -> str | None:
    color = record.animate.color if record.animate is not None else None
    if color is None:
        return None
    anchor = "the reference" if color.match == "reference" else "its first frame"
    return (
        f"matched to {anchor} (strength {color.strength:g}): last frame ΔE "
        f"{color.delta_e_before:.1f} → {color.delta_e_after:.1f}"
    )


def _stage(
    stage: str, record: StageRecord | None, models: dict[str, str | None], run_id: str | None
) -> StageView | None:
    if record is None:
        return None
    prompt, negative = record.params.get("prompt"), record.params.get("negative_prompt")
    return StageView(
        stage=stage,
        status=record.status,
        prompt=prompt if isinstance(prompt, str) else None,
        negative_prompt=negative if isinstance(negative, str) else None,
        endpoint=record.endpoint,
        model=models.get(stage),
        cached=record.cached,
        made_now=run_id is not None and record.run_id == run_id,
        attempts=tuple(record.attempts),
        seconds=record.seconds,
        cost_usd=record.cost_usd,
    )


def _output(record: SceneRecord, name: str) -> str | None:
    path = record.outputs.get(name)
    return _posix(path) if path else None


def _posix(path: str) -> str:
    # Relative to the work dir, like report.html itself; a URL wants forward slashes.
    return path.replace(os.sep, "/")


def _previous(manifest: Manifest, previous: Manifest | None) -> Previous | None:
    if previous is None or previous.run is None:
        return None
    film_now = manifest.final.sha256 if manifest.final is not None else None
    film_then = previous.final.sha256 if previous.final is not None else None
    return Previous(
        run_id=previous.run.id,
        started=previous.run.started,
        removed=tuple(s for s in previous.scenes if s not in manifest.scenes),
        timeline_changed=previous.timeline != manifest.timeline,
        film_changed=film_now != film_then,
    )
