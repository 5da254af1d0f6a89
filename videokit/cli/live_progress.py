"""The live table ``videokit render`` draws on a terminal: one row per scene, redrawn a few times a
second, with the remote job's state, elapsed times and the spend so far (see :class:`LiveProgress`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from types import TracebackType

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Column, Table
from rich.text import Text

from videokit.backends.base import Stage
from videokit.cli.progress import (
    Clock,
    count,
    first_line,
    short_job_id,
    summary_line,
    usd,
)
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
    SceneProgress,
    SceneQueued,
    SceneSkipped,
    SceneStarted,
    StitchDone,
    StitchProgress,
    StitchStarted,
)

__all__ = ["LiveProgress"]

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
        self._budget: float | None = None
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
            self._budget = event.budget_usd
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
        elif isinstance(event, JobStateChanged):
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
            row.note = first_line(event.error)
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
            lines.append(_cut(Text(f"… {count(hidden, 'scene')} done, not shown", style="dim")))
        lines.append(_cut(Text(self._footer(now), style="bold")))
        return Group(*lines)

    def _footer(self, now: float) -> str:
        scenes = list(self._rows.values())
        total = self._total if self._total is not None else len(scenes)
        finished = sum(1 for r in scenes if r.phase == "done")
        spent = f"spent {usd(self.spent)}"
        if self._budget is not None:
            spent += f" of a {usd(self._budget)} budget"
        parts = [spent, f"{finished}/{total} scenes done"]
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
            notes.append(usd(row.cost))
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
