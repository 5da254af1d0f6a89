"""Turning render events into output: a live table for terminals, plain lines for logs and CI,
JSON lines for programs, and one summary line at the end of a render.

Which one to use is the CLI's call: :class:`LiveProgress` when stderr is a terminal,
:class:`PlainProgress` when it is not (CI, ``nohup``, ``| tee``), :class:`JsonLines` for
``--json``. The two human ones take a ``clock`` (``time.monotonic`` by default) so what they show
can be checked at chosen moments, and print :func:`summary_line` when the render is done unless
told not to (``summary=False``).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Column, Table
from rich.text import Text

from videokit.backends.base import JobState, Stage
from videokit.pipeline.events import (
    CostUpdated,
    Event,
    JobStatus,
    JobSubmitted,
    RenderDone,
    RenderStarted,
    SceneCached,
    SceneDone,
    SceneFailed,
    SceneProgress,
    SceneQueued,
    SceneSkipped,
    SceneStarted,
    StitchDone,
    StitchProgress,
    StitchStarted,
)

__all__ = ["JsonLines", "LiveProgress", "PlainProgress", "short_job_id", "summary_line"]

Clock = Callable[[], float]

# How job states read to a person (the events spell them for programs).
_STATE_LABELS: dict[JobState, str] = {
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
    spend, and where the film, contact sheet and manifest are (relative to ``cwd``, the current
    directory by default, when they are inside it)."""
    here = cwd if cwd is not None else Path.cwd()
    counts = [f"{_count(len(done.rendered), 'scene')} rendered", f"{len(done.cached)} cached"]
    if done.stale:
        counts.append(f"{len(done.stale)} stale ({', '.join(done.stale)})")
    where = [
        f"film {_shown_path(done.final, here)}" if done.final else "film not stitched",
    ]
    if done.contact_sheet:
        where.append(f"contact sheet {_shown_path(done.contact_sheet, here)}")
    where.append(f"manifest {_shown_path(done.manifest, here)}")
    head = f"done in {_duration(done.seconds)}: {', '.join(counts)}, {_usd(done.cost_usd)} spent"
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
            jobs = f"{_count(event.jobs.get('edit', 0), 'edit')}, "
            jobs += _count(event.jobs.get("animate", 0), "animation")
            self._line(
                "render",
                f"{_count(len(event.scenes), 'scene')} ({jobs}) on {event.backend}: {event.story}",
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
        elif isinstance(event, JobStatus):
            self._status(event)
        elif isinstance(event, SceneCached):
            self._line(event.scene, f"{event.stage} cached")
        elif isinstance(event, CostUpdated):
            self.spent = event.total_usd
            self._jobs.pop((event.scene, event.stage), None)
            self._line(
                event.scene,
                f"{event.stage} finished, {_usd(event.cost_usd)} "
                f"({_usd(event.total_usd)} spent so far)",
            )
        elif isinstance(event, SceneDone):
            if event.cached:
                text = "done (cached)"
            else:
                text = f"done in {_duration(event.seconds)}"
                if event.cost_usd:
                    text += f", {_usd(event.cost_usd)}"
            self._line(event.scene, text)
        elif isinstance(event, SceneFailed):
            where = f" in {event.stage}" if event.stage else ""
            self._line(event.scene, f"failed{where}: {_first_line(event.error)}")
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
                    f"stitched {event.frames} frames in {_duration(event.seconds)} "
                    f"({event.method}): {event.output}",
                )
        elif isinstance(event, RenderDone) and self.summary:
            self.stream.write(summary_line(event) + "\n")
            self.stream.flush()
        # SceneProgress and StitchProgress: no state change, no line.

    def _status(self, event: JobStatus) -> None:
        now = self.clock()
        key = (event.scene, event.stage)
        before = self._jobs.get(key)
        self._jobs[key] = _JobSeen(event.status, now, event.job_id)
        details = [f"job {short_job_id(event.job_id)}"] if event.job_id else []
        if before is not None and before.job_id == event.job_id:
            details.append(f"after {_duration(now - before.since)} {_STATE_LABELS[before.state]}")
        text = f"{event.stage} {_STATE_LABELS[event.status]}"
        self._line(event.scene, text + (f" ({', '.join(details)})" if details else ""))


# -- the live table --------------------------------------------------------------------------------

_STATE_STYLES = {
    "queued": "yellow",
    "cold_start": "magenta",
    "running": "bold blue",
    "submitted": "cyan",
    "starting": "cyan",
    "waiting": "dim",
    "cached": "green",
    "finished": "green",
    "done": "bold green",
    "failed": "bold red",
    "skipped": "yellow",
}
_PHASE_LABELS: dict[str, str] = {
    "queued": "queued",
    "cold_start": "cold start",
    "running": "running",
    "submitted": "submitted",
    "starting": "starting",
}
_ENDED = frozenset({"done", "failed", "skipped"})
_BAR_WIDTH = 8


@dataclass(eq=False)
class _Row:
    """What the table shows of one scene (or of the stitch, ``final``)."""

    scene: str
    since: float  # queued: its elapsed time counts from here
    phase: str = "waiting"  # a key of _STATE_STYLES
    phase_since: float = 0.0
    stage: Stage | None = None
    waits_for: str | None = None
    fraction: float = 0.0
    job_id: str | None = None
    cost: float = 0.0
    note: str = ""
    ended: float | None = None
    cached: bool = False


class LiveProgress:
    """A table on a terminal (stderr), one row per scene, redrawn a few times a second.

    Columns: scene, stage and state (``edit queued 0:12``, ``animate cold start 0:40``,
    ``animate running 0:05``: the time is how long the job has been in that state), progress of
    the current stage, the scene's elapsed time (from when it was queued until it is done, failed
    or skipped), then cost and notes (the short job id, what it waits for, an error). A footer
    keeps the spend so far, scenes done and the render's clock. Nothing wraps: cells that do not
    fit the terminal's width are cut with an ellipsis. After it stops it prints
    :func:`summary_line` when the render finished (unless ``summary=False``).
    """

    def __init__(
        self,
        console: Console,
        *,
        clock: Clock = time.monotonic,
        summary: bool = True,
        refresh_per_second: float = 4.0,
    ) -> None:
        self.console = console
        self.clock = clock
        self.summary = summary
        self.spent = 0.0
        self.done: RenderDone | None = None
        self._started = clock()
        self._total: int | None = None
        self._rows: dict[str, _Row] = {}
        self._stitch: _Row | None = None
        self._final = False  # the last frame shows every row, however tall
        # Events arrive on the render's thread, frames are drawn on rich's refresh thread.
        self._lock = threading.Lock()
        self._live = Live(
            console=console,
            get_renderable=self.__rich__,
            refresh_per_second=refresh_per_second,
            transient=False,
        )

    def __enter__(self) -> LiveProgress:
        self._live.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._final = True
        self._live.stop()
        if self.summary and self.done is not None and exc_type is None:
            self.console.print(Text(summary_line(self.done)), soft_wrap=True, highlight=False)

    # -- events -----------------------------------------------------------------------------------
    def __call__(self, event: Event) -> None:
        with self._lock:
            self._handle(event, self.clock())

    def _row(self, scene: str, now: float) -> _Row:
        row = self._rows.get(scene)
        if row is None:  # an event for a scene never queued (a library caller): show it anyway
            row = self._rows[scene] = _Row(scene, since=now, phase_since=now)
        return row

    def _handle(self, event: Event, now: float) -> None:
        if isinstance(event, RenderStarted):
            self._started = now
            self._total = len(event.scenes)
        elif isinstance(event, SceneQueued):
            self._rows[event.scene] = _Row(
                event.scene, since=now, phase_since=now, waits_for=event.waits_for
            )
        elif isinstance(event, SceneStarted):
            row = self._row(event.scene, now)
            row.stage, row.phase, row.phase_since = event.stage, "starting", now
            row.fraction, row.job_id = 0.0, None
        elif isinstance(event, JobSubmitted):
            row = self._row(event.scene, now)
            row.stage, row.phase, row.phase_since = event.stage, "submitted", now
            row.job_id = event.job_id
        elif isinstance(event, JobStatus):
            row = self._row(event.scene, now)
            if row.phase != event.status or row.stage != event.stage:
                row.phase_since = now
            row.stage, row.phase = event.stage, event.status
            row.job_id = event.job_id or row.job_id
        elif isinstance(event, SceneProgress):
            row = self._row(event.scene, now)
            if row.stage == event.stage:
                row.fraction = max(0.0, min(1.0, event.fraction))
        elif isinstance(event, SceneCached):
            row = self._row(event.scene, now)
            row.stage, row.phase, row.phase_since, row.fraction = event.stage, "cached", now, 1.0
        elif isinstance(event, CostUpdated):
            self.spent = event.total_usd
            row = self._row(event.scene, now)
            row.cost += event.cost_usd
            row.phase, row.phase_since, row.fraction, row.job_id = "finished", now, 1.0, None
        elif isinstance(event, SceneDone):
            row = self._end(event.scene, "done", now)
            row.fraction, row.cost, row.cached = 1.0, event.cost_usd, event.cached
        elif isinstance(event, SceneFailed):
            row = self._end(event.scene, "failed", now)
            row.stage = event.stage or row.stage
            row.note = _first_line(event.error)
        elif isinstance(event, SceneSkipped):
            self._end(event.scene, "skipped", now).note = event.reason
        elif isinstance(event, StitchStarted):
            self._stitch = _Row("final", since=now, phase="stitching", phase_since=now)
            self._stitch.note = f"{event.frames} frames"
        elif isinstance(event, StitchProgress):
            if self._stitch is not None and event.total:
                self._stitch.fraction = min(1.0, event.done / event.total)
        elif isinstance(event, StitchDone):
            stitch = self._stitch or _Row("final", since=now)
            stitch.phase, stitch.ended, stitch.fraction = "done", now, 1.0
            stitch.note = (
                f"unchanged, {event.frames} frames"
                if event.cached
                else f"{event.frames} frames, {event.method}"
            )
            self._stitch = stitch
        elif isinstance(event, RenderDone):
            self.done = event
            self.spent = event.cost_usd

    def _end(self, scene: str, phase: str, now: float) -> _Row:
        row = self._row(scene, now)
        row.phase, row.phase_since, row.ended, row.job_id = phase, now, now, None
        return row

    # -- drawing ----------------------------------------------------------------------------------
    def __rich__(self) -> RenderableType:
        with self._lock:
            return self._draw(self.clock())

    def _draw(self, now: float) -> RenderableType:
        def header(text: str) -> Text:
            return Text(text, no_wrap=True, overflow="ellipsis")

        table = Table(
            # Room for the notes first: long scene names are cut on a narrow terminal.
            Column(header("scene"), no_wrap=True, max_width=max(12, self.console.width - 68)),
            Column(header("stage/state"), no_wrap=True),
            Column(header("progress"), no_wrap=True),
            Column(header("elapsed"), no_wrap=True, justify="right"),
            # The one column that gives way when the line is too long (cut, never wrapped).
            Column(header("cost/notes"), overflow="ellipsis"),
            box=None,
            padding=(0, 1, 0, 0),
            pad_edge=False,
            header_style="bold",
            expand=False,
        )
        rows = list(self._rows.values())
        hidden = 0
        room = max(1, self.console.height - 4)  # header, footer, the "not shown" line, a spare
        if not self._final and len(rows) > room:
            # Too tall for the terminal: scenes already done make way for those still going.
            hide = set([id(r) for r in rows if r.phase == "done"][: len(rows) - room])
            hidden = len(hide)
            rows = [r for r in rows if id(r) not in hide]
        for row in rows:
            table.add_row(*self._cells(row, now))
        if self._stitch is not None:
            table.add_row(*self._cells(self._stitch, now))
        lines: list[RenderableType] = [table]
        if hidden:
            lines.append(_cut(Text(f"… {_count(hidden, 'scene')} done, not shown", style="dim")))
        lines.append(_cut(Text(self._footer(now), style="bold")))
        return Group(*lines)

    def _footer(self, now: float) -> str:
        scenes = list(self._rows.values())
        total = self._total if self._total is not None else len(scenes)
        finished = sum(1 for r in scenes if r.phase == "done")
        parts = [f"spent {_usd(self.spent)}", f"{finished}/{total} scenes done"]
        for phase in ("failed", "skipped"):
            count = sum(1 for r in scenes if r.phase == phase)
            if count:
                parts.append(f"{count} {phase}")
        wall = self.done.seconds if self.done is not None else now - self._started
        parts.append(_clock_text(wall))
        return " · ".join(parts)

    def _cells(self, row: _Row, now: float) -> tuple[Text, Text, Text, Text, Text]:
        style = _STATE_STYLES.get(row.phase, "")
        if row.phase in _PHASE_LABELS:
            state = Text()
            state.append(f"{row.stage} {_PHASE_LABELS[row.phase]} ", style=style)
            state.append(_clock_text(now - row.phase_since), style="dim")
        elif row.phase in ("cached", "finished"):
            state = Text(f"{row.stage} {row.phase}", style=style)
        elif row.phase == "failed" and row.stage:
            state = Text(f"failed in {row.stage}", style=style)
        elif row.phase == "stitching":
            state = Text()
            state.append("stitching ", style="cyan")
            state.append(_clock_text(now - row.phase_since), style="dim")
        else:
            state = Text(row.phase, style=style)
        notes: list[str] = []
        if row.job_id and row.phase not in _ENDED:
            notes.append(f"job {short_job_id(row.job_id)}")
        if row.phase == "waiting" and row.waits_for and row.stage is None:
            notes.append(f"after {row.waits_for}")
        if row.cost:
            notes.append(_usd(row.cost))
        if row.cached and row.phase == "done":
            notes.append("cached")
        if row.note:
            notes.append(row.note)
        end = row.ended if row.ended is not None else now
        return (
            _cut(Text(row.scene, style="bold")),
            _cut(state),
            _bar(row.fraction, ended=row.phase in ("failed", "skipped")),
            _cut(Text(_clock_text(end - row.since))),
            _cut(Text(" · ".join(notes))),
        )


# -- formatting ------------------------------------------------------------------------------------


def _cut(text: Text) -> Text:
    """``text`` as a cell that never wraps: what does not fit is cut with an ellipsis."""
    text.no_wrap = True
    text.overflow = "ellipsis"
    return text


def _bar(fraction: float, *, ended: bool = False) -> Text:
    filled = round(fraction * _BAR_WIDTH)
    bar = Text()
    bar.append("━" * filled, style="dim" if ended else "green")
    bar.append("━" * (_BAR_WIDTH - filled), style="grey23")
    bar.append(f" {round(fraction * 100):3d}%", style="dim" if ended else "")
    return _cut(bar)


def _clock_text(seconds: float) -> str:
    """``0:42``, ``12:05``, ``1:02:03``."""
    whole = max(0, int(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _duration(seconds: float) -> str:
    """``7.8 s``, ``2 min 03 s``, ``1 h 02 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def _usd(amount: float) -> str:
    return f"${amount:.4f}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0] if lines else ""


def _shown_path(path: str, cwd: Path) -> str:
    """``path`` relative to ``cwd`` when it is inside it, else as it is."""
    target = Path(path)
    for base, candidate in ((cwd.absolute(), target.absolute()), (cwd.resolve(), target.resolve())):
        try:
            return str(candidate.relative_to(base))
        except ValueError:
            continue
    return path
