"""Turning render events into output: a live table for terminals, plain lines for logs and CI,
JSON lines for programs, and one summary line at the end of a render.

Which one to use is the CLI's call: :class:`~videokit.cli.live_progress.LiveProgress` (its own
module) when stderr is a terminal, :class:`PlainProgress` when it is not (CI, ``nohup``,
``| tee``), :class:`JsonLines` for ``--json``. The two human ones take a ``clock``
(``time.monotonic`` by default) so what they show can be checked at chosen moments, and print
:func:`summary_line` when the render is done unless told not to (``summary=False``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from videokit.backends.base import JobState, Stage
from videokit.pipeline.events import (
    CostUpdated,
    Event,
    JobStateChanged,
    JobSubmitted,
    RenderDone,
    RenderStarted,
    SceneCached,
    SceneDone,
    SceneFailed,
    SceneQueued,
    SceneSkipped,
    SceneStarted,
    StitchDone,
    StitchStarted,
)

__all__ = [
    "STATE_LABELS",
    "Clock",
    "JsonLines",
    "PlainProgress",
    "count",
    "duration",
    "first_line",
    "short_job_id",
    "shown_path",
    "summary_line",
    "usd",
]

Clock = Callable[[], float]

# How job states read to a person (the events spell them for programs).
STATE_LABELS: dict[JobState, str] = {
    "queued": "queued",
    "cold_start": "cold start",
    "running": "running",
}
# RunPod job ids are UUIDs (36 characters): the first 8 tell jobs apart within a render and leave
# room for the rest of the line.
_JOB_ID_CHARS = 8


def short_job_id(job_id: str) -> str:
    """The first 8 characters of ``job_id``: enough to tell a render's jobs apart."""
    return job_id[:_JOB_ID_CHARS]


class JsonLines:
    """One JSON object per line on stdout, flushed, so a pipe sees each event as it happens."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def __call__(self, event: Event) -> None:
        self.stream.write(event.model_dump_json() + "\n")
        self.stream.flush()


# -- the summary line ------------------------------------------------------------------------------


def summary_line(done: RenderDone, *, cwd: Path | None = None) -> str:
    """One line saying what a finished render did: wall time, scenes rendered / cached / stale,
    spend, and where the film, report, contact sheet and manifest are (relative to ``cwd``, the
    current directory by default, when they are inside it)."""
    here = cwd if cwd is not None else Path.cwd()
    counts = [f"{count(len(done.rendered), 'scene')} rendered", f"{len(done.cached)} cached"]
    if done.stale:
        counts.append(f"{len(done.stale)} stale ({', '.join(done.stale)})")
    where = [
        f"film {shown_path(done.final, here)}" if done.final else "film not stitched",
    ]
    if done.report:
        where.append(f"report {shown_path(done.report, here)}")
    if done.contact_sheet:
        where.append(f"contact sheet {shown_path(done.contact_sheet, here)}")
    where.append(f"manifest {shown_path(done.manifest, here)}")
    spent = f"{usd(done.cost_usd)} spent"
    if done.cost_estimated_usd:
        spent += f" ({usd(done.cost_estimated_usd)} of it estimated)"
    if done.billed_usd is not None and done.billed_usd > done.cost_usd + 1e-9:
        spent += f", ~{usd(done.billed_usd)} billed with worker start and idle time"
    head = f"done in {duration(done.seconds)}: {', '.join(counts)}, {spent}"
    return " · ".join([head, *where])


# -- plain lines -----------------------------------------------------------------------------------


@dataclass
class _JobSeen:
    state: JobState
    since: float
    job_id: str | None


class PlainProgress:
    """One line per scene state change, for a stderr that is no terminal (CI, ``nohup``, a pipe).

    Each line starts with the time since the render started, then the scene: ``[  12.3s] tuxedo
    edit running (job 3f2b8c1e)``. Progress fractions are left out (they are no state change);
    each line is flushed as it is written, so a log shows what happens as it happens. On
    ``RenderDone`` it ends with :func:`summary_line` (unless ``summary=False``).
    """

    def __init__(
        self, stream: TextIO, *, clock: Clock = time.monotonic, summary: bool = True
    ) -> None:
        self.stream = stream
        self.clock = clock
        self.summary = summary
        self.spent = 0.0
        self._started: float | None = None
        self._width = 8
        self._jobs: dict[tuple[str, Stage], _JobSeen] = {}

    def _line(self, subject: str, text: str) -> None:
        now = self.clock()
        if self._started is None:
            self._started = now
        self.stream.write(f"[{now - self._started:6.1f}s] {subject:<{self._width}} {text}\n")
        self.stream.flush()

    def __call__(self, event: Event) -> None:
        if isinstance(event, RenderStarted):
            self._started = self.clock()
            self._width = min(24, max([8, *(len(scene) for scene in event.scenes)]))
            jobs = f"{count(event.jobs.get('edit', 0), 'edit')}, "
            jobs += count(event.jobs.get("animate", 0), "animation")
            self._line(
                "render",
                f"{count(len(event.scenes), 'scene')} ({jobs}) on {event.backend}: {event.story}",
            )
        elif isinstance(event, SceneQueued):
            after = f", after {event.waits_for}" if event.waits_for else ""
            self._line(event.scene, f"queued{after}")
        elif isinstance(event, SceneStarted):
            self._jobs.pop((event.scene, event.stage), None)
            self._line(event.scene, f"{event.stage} started")
        elif isinstance(event, JobSubmitted):
            job = short_job_id(event.job_id)
            what = f"re-attached to job {job}" if event.resumed else f"job {job} submitted"
            self._line(event.scene, f"{event.stage} {what}")
        elif isinstance(event, JobStateChanged):
            self._status(event)
        elif isinstance(event, SceneCached):
            self._line(event.scene, f"{event.stage} cached")
        elif isinstance(event, CostUpdated):
            self.spent = event.total_usd
            self._jobs.pop((event.scene, event.stage), None)
            self._line(
                event.scene,
                f"{event.stage} finished, {usd(event.cost_usd)} "
                f"({usd(event.total_usd)} spent so far)",
            )
        elif isinstance(event, SceneDone):
            if event.cached:
                text = "done (cached)"
            else:
                text = f"done in {duration(event.seconds)}"
                if event.cost_usd:
                    text += f", {usd(event.cost_usd)}"
            self._line(event.scene, text)
        elif isinstance(event, SceneFailed):
            where = f" in {event.stage}" if event.stage else ""
            self._line(event.scene, f"failed{where}: {first_line(event.error)}")
        elif isinstance(event, SceneSkipped):
            self._line(event.scene, f"skipped: {event.reason}")
        elif isinstance(event, StitchStarted):
            self._line("final", f"stitching {event.frames} frames into {event.output}")
        elif isinstance(event, StitchDone):
            if event.cached:
                self._line("final", f"unchanged ({event.frames} frames): {event.output}")
            else:
                self._line(
                    "final",
                    f"stitched {event.frames} frames in {duration(event.seconds)} "
                    f"({event.method}): {event.output}",
                )
        elif isinstance(event, RenderDone) and self.summary:
            self.stream.write(summary_line(event) + "\n")
            self.stream.flush()
        # SceneProgress and StitchProgress: no state change, no line.

    def _status(self, event: JobStateChanged) -> None:
        now = self.clock()
        key = (event.scene, event.stage)
        before = self._jobs.get(key)
        self._jobs[key] = _JobSeen(event.status, now, event.job_id)
        details = [f"job {short_job_id(event.job_id)}"] if event.job_id else []
        if before is not None and before.job_id == event.job_id:
            details.append(f"after {duration(now - before.since)} {STATE_LABELS[before.state]}")
        text = f"{event.stage} {STATE_LABELS[event.status]}"
        self._line(event.scene, text + (f" ({', '.join(details)})" if details else ""))


# -- formatting ------------------------------------------------------------------------------------


def duration(seconds: float) -> str:
    """``7.8 s``, ``2 min 03 s``, ``1 h 02 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def usd(amount: float) -> str:
    return f"${amount:.4f}"


def count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0] if lines else ""


def shown_path(path: str, cwd: Path) -> str:
    """``path`` relative to ``cwd`` when it is inside it, else as it is."""
    target = Path(path)
    for base, candidate in ((cwd.absolute(), target.absolute()), (cwd.resolve(), target.resolve())):
        try:
            return str(candidate.relative_to(base))
        except ValueError:
            continue
    return path
