"""The timeline: which clips play in what order, and how each one joins the one before.

A continuous shot drops its first frame, which repeats the previous clip's last one; a crossfade
overlaps two clips and must leave each of them at least one frame of its own.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from videokit.story.model import Story
from videokit.story.problem_collector import ProblemCollector
from videokit.story.scene_plan import ScenePlan

__all__ = ["TimelineEntry", "timeline_entries", "timeline_order"]


@dataclass(frozen=True)
class TimelineEntry:
    scene: str
    frames: int
    drop_head: int
    crossfade: int

    @property
    def continuous(self) -> bool:
        return self.drop_head > 0


def timeline_order(story: Story, ids: list[str], errors: ProblemCollector) -> list[str]:
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


def timeline_entries(
    story: Story,
    plans: dict[str, ScenePlan],
    order: list[str],
    errors: ProblemCollector,
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
    _check_crossfades(plans, order, entries, errors)
    return entries


def _check_crossfades(
    plans: dict[str, ScenePlan],
    order: list[str],
    entries: list[TimelineEntry],
    errors: ProblemCollector,
) -> None:
    """Each clip's fade in and fade out must leave at least one frame of it alone.

    A crossfade that does not fit is the fault of the scene that asks for it, so it is reported
    there, once, in the seconds the user wrote, whichever of the two clips it overlaps is too
    short (or both).
    """
    # By the scene whose crossfade does not fit: why, for each clip, and the most frames it may
    # have there.
    overflows: dict[str, list[tuple[str, int]]] = {}
    for pos, entry in enumerate(entries):
        plan = plans[entry.scene]
        incoming = entry.crossfade
        outgoing = entries[pos + 1].crossfade if pos + 1 < len(entries) else 0
        usable = entry.frames - entry.drop_head
        if incoming + outgoing < usable:
            continue
        seam = ", its first frame dropped as a continuous shot's seam" if entry.drop_head else ""
        length = f"{usable / plan.fps:.3f} s ({usable} frames at {plan.fps} fps{seam})"
        clip = f"'{entry.scene}' is {length}"
        previous = plans[order[pos - 1]] if pos > 0 else None
        if outgoing:
            fade_in = previous.crossfade_out_s if previous is not None else None
            also = f" and also fades in for {fade_in:g} s" if incoming and fade_in else ""
            overflows.setdefault(entry.scene, []).append((clip + also, usable - incoming - 1))
        if incoming and previous is not None:
            fade_out = plan.crossfade_out_s
            also = f" and also fades out for {fade_out:g} s" if outgoing and fade_out else ""
            overflows.setdefault(previous.id, []).append((clip + also, usable - outgoing - 1))
    for owner, reasons in overflows.items():
        plan = plans[owner]
        following = order[order.index(owner) + 1]
        most = min(frames for _, frames in reasons)
        hint = (
            f"use a crossfade of at most {_seconds_floor(most / plan.fps)} s here, "
            "or lengthen the clips"
            if most >= 1
            # Clips have 5 frames at least, so only the clip's other crossfade leaves no room.
            else "the other crossfade leaves no room for this one: shorten that one, use 'cut' "
            "here, or lengthen the clips"
        )
        errors.add(
            f"the crossfade of {plan.crossfade_out_s or 0:g} s into '{following}' does not fit: "
            + "; ".join(text for text, _ in reasons),
            ("scenes", plan.index, "transition"),
            scene=owner,
            hint=hint,
        )


def _seconds_floor(seconds: float) -> str:
    """Seconds rounded down to the millisecond, so the suggestion itself fits: 2.0, 1.875."""
    text = f"{int(seconds * 1000 + 1e-9) / 1000:.3f}".rstrip("0")
    return text + "0" if text.endswith(".") else text
