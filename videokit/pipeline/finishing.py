"""After the scenes: each clip's first frame, the stitched film, the contact sheet and the report.

The film is written beside its destination and renamed into place only after the manifest has
recorded its hash (and the hash of the file it replaces), so at every moment the file at the
output path is one videokit can recognise as its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from videokit.errors import VideoKitError
from videokit.media.contact_sheet import ContactCell, make_contact_sheet
from videokit.media.probe import extract_frame
from videokit.media.stitch import AudioTrack, Segment, stitch
from videokit.pipeline.cache import file_sha256
from videokit.pipeline.events import StitchDone, StitchProgress, StitchStarted
from videokit.pipeline.ledger import Ledger
from videokit.pipeline.manifest import FinalRecord
from videokit.pipeline.results import SceneOutput
from videokit.pipeline.stages import ModelSeen
from videokit.pipeline.workdir import link
from videokit.report import ClipJoin, RenderFacts, load_facts, save_facts, write_report
from videokit.story.plan import StoryPlan

__all__ = ["Stitched", "contact_sheet", "first_frames", "stitch_film", "write_film_report"]


@dataclass(frozen=True)
class Stitched:
    path: Path
    frames: int


async def first_frames(ledger: Ledger, outputs: dict[str, SceneOutput]) -> None:
    """Decode each clip's first frame once (cached with the clip) for the contact sheet."""

    async def one(scene_id: str) -> None:
        record = ledger.manifest.scenes[scene_id].animate
        assert record is not None
        # The clip the film shows: the colour-matched one when the scene matches colour.
        if record.color is not None:
            entry = ledger.cache.get("color", record.color.key)
        else:
            entry = ledger.cache.get("animate", record.key)
        if entry is None:
            return
        if not entry.file("first.png").exists():
            first = await asyncio.to_thread(_first_frame, entry.file("clip.mp4"))
            ledger.cache.add_file(entry, "first.png", first)
        link(entry.file("first.png"), outputs[scene_id].first_frame)

    await asyncio.gather(*(one(scene_id) for scene_id in outputs))


def stitch_film(
    ledger: Ledger, plan: StoryPlan, outputs: dict[str, SceneOutput], output: Path
) -> Stitched:
    """Stitch the timeline's clips into ``output`` (nothing to do if it is unchanged)."""
    segments: list[Segment] = []
    for entry in plan.timeline:
        scene_output = outputs[entry.scene]
        if scene_output.frames != entry.frames:
            raise VideoKitError(
                f"scene '{entry.scene}': the backend returned {scene_output.frames} frames, "
                f"the story asked for {entry.frames}",
                hint="the endpoint may run an old worker; redeploy it",
            )
        segments.append(
            Segment(
                path=scene_output.clip,
                frames=scene_output.frames,
                drop_head=entry.drop_head,
                crossfade=entry.crossfade,
            )
        )
    audio = AudioTrack(plan.audio, fade_out_s=plan.audio_fade_out) if plan.audio else None
    key = _stitch_key(segments, audio, plan, output)
    manifest = ledger.manifest
    previous = manifest.final
    if (
        previous is not None
        and previous.key == key
        and output.exists()
        and ledger.workdir.wrote(output, manifest)
    ):
        ledger.emit(
            StitchDone(
                output=str(output),
                frames=previous.frames,
                method=previous.method,
                seconds=0.0,
                cached=True,
            )
        )
        return Stitched(output, previous.frames)
    ledger.emit(StitchStarted(frames=plan.final_frames, output=str(output)))
    output.parent.mkdir(parents=True, exist_ok=True)
    staged = output.with_name(f".{output.stem}.videokit-{os.getpid()}.mp4")
    try:
        report = stitch(
            segments,
            staged,
            fps=plan.fps,
            width=plan.width,
            height=plan.height,
            audio=audio,
            crf=plan.crf,
            preset=plan.preset,
            on_progress=lambda done, total: ledger.emit(StitchProgress(done=done, total=total)),
        )
        replaced = file_sha256(output) if output.is_file() else None
        manifest.final = FinalRecord(
            path=ledger.workdir.relative(output),
            key=key,
            sha256=file_sha256(staged),
            replaces=replaced,
            frames=report.frames,
            fps=report.fps,
            width=report.width,
            height=report.height,
            method=report.method,
            seconds=round(report.seconds, 3),
            formula=plan.frame_formula(),
        )
        ledger.save(durable=True)  # before the rename: the file at `output` is always known
        os.replace(staged, output)
    finally:
        staged.unlink(missing_ok=True)
    ledger.emit(
        StitchDone(
            output=str(output),
            frames=report.frames,
            method=report.method,
            seconds=round(report.seconds, 3),
        )
    )
    return Stitched(output, report.frames)


def contact_sheet(
    ledger: Ledger, plan: StoryPlan, outputs: dict[str, SceneOutput], notes: dict[str, str]
) -> Path | None:
    """Every scene's first and last frame; scenes this render did not produce are taken from
    earlier renders and labelled with ``notes`` (e.g. "earlier render")."""
    if not outputs:
        return None
    order = [e.scene for e in plan.timeline] + list(plan.branches)
    cells: list[ContactCell] = []
    for scene_id in order:
        labels = ["branch"] if scene_id in plan.branches else []
        if scene_id in outputs:
            first, last = outputs[scene_id].first_frame, outputs[scene_id].last_frame
        else:
            earlier = _earlier_frames(ledger, scene_id)
            if earlier is None:
                continue
            first, last = earlier
            labels.append(notes.get(scene_id, "earlier render"))
        cells.append(
            ContactCell(label=scene_id, first=first, last=last, note=", ".join(labels) or None)
        )
    path = ledger.workdir.path / "contact_sheet.png"
    make_contact_sheet(cells, path, title=plan.story.title)
    ledger.manifest.contact_sheet = ledger.workdir.relative(path)
    return path.absolute()


def write_film_report(
    ledger: Ledger,
    plan: StoryPlan,
    *,
    stitched: bool,
    stale: Mapping[str, str],
    models: Iterable[ModelSeen],
    warnings: list[str],
) -> Path | None:
    """``report.html`` beside the film, after the facts it needs that the manifest lacks (see
    :mod:`videokit.report.facts`). ``stitched``: this render made (or kept) the film at
    ``manifest.final``; otherwise that film is an earlier render's, and so is its timeline.

    The film and the manifest are done by now: a report that cannot be written (a full disk)
    adds to ``warnings`` instead of failing the render."""
    workdir = ledger.workdir.path
    manifest = ledger.manifest
    earlier = load_facts(workdir)
    if stitched:
        timeline = [
            ClipJoin(scene=e.scene, frames=e.frames, drop_head=e.drop_head, crossfade=e.crossfade)
            for e in plan.timeline
        ]
        film_key = manifest.final.key if manifest.final is not None else None
    else:
        timeline = earlier.timeline if earlier is not None else []
        film_key = earlier.film_key if earlier is not None else None
    # Scenes this render did not look at (stale ones) keep the models an earlier render saw.
    made_by = {
        scene: dict(stages)
        for scene, stages in (earlier.models.items() if earlier is not None else ())
        if scene in manifest.scenes
    }
    for seen in models:
        made_by.setdefault(seen.scene, {})[seen.stage] = seen.model
    facts = RenderFacts(
        run_id=ledger.run_id,
        fps=plan.fps,
        timeline=timeline,
        film_key=film_key,
        branches=list(plan.branches),
        stale=dict(stale),
        models=made_by,
    )
    try:
        save_facts(workdir, facts)
        return write_report(workdir)
    except OSError as exc:
        warnings.append(f"report.html was not written: {exc}")
        return None


def _earlier_frames(ledger: Ledger, scene_id: str) -> tuple[Path, Path] | None:
    record = ledger.manifest.scenes.get(scene_id)
    if record is None or record.status != "done":
        return None
    try:
        first = ledger.workdir.resolve(record.outputs["first_frame"])
        last = ledger.workdir.resolve(record.outputs["last_frame"])
    except KeyError:
        return None
    return (first, last) if first.is_file() and last.is_file() else None


def _first_frame(clip: Path) -> bytes:
    target = clip.with_name(f".first-{os.getpid()}-{threading.get_ident()}.png")
    try:
        extract_frame(clip, 0, target)
        return target.read_bytes()
    finally:
        target.unlink(missing_ok=True)


def _stitch_key(
    segments: list[Segment], audio: AudioTrack | None, plan: StoryPlan, output: Path
) -> str:
    payload = {
        "segments": [(file_sha256(s.path), s.frames, s.drop_head, s.crossfade) for s in segments],
        "audio": (file_sha256(audio.path), audio.fade_out_s) if audio else None,
        "video": (plan.width, plan.height, plan.fps, plan.crf, plan.preset),
        "output": str(output),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
