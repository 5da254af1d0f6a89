"""Turning render events into output: a rich live display for people, JSON lines for programs."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from videokit.pipeline.events import (
    CostUpdated,
    Event,
    JobSubmitted,
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

__all__ = ["JsonLines", "LiveProgress"]


class JsonLines:
    """One JSON object per line on stdout, flushed, so a pipe sees each event as it happens."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def __call__(self, event: Event) -> None:
        self.stream.write(event.model_dump_json() + "\n")
        self.stream.flush()


class LiveProgress:
    """A progress bar per scene plus one for stitching, on stderr; silent when stderr is no TTY."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.fields[scene]:<14}"),
            TextColumn("{task.fields[state]:<10}"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[note]}"),
            console=console,
            transient=False,
            disable=not console.is_terminal,
        )
        self.tasks: dict[str, TaskID] = {}
        self.frames: dict[str, int] = {}
        self.cost = 0.0

    def __enter__(self) -> LiveProgress:
        self.progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.progress.stop()

    def _update(self, scene: str, **fields: object) -> None:
        task = self.tasks.get(scene)
        if task is not None:
            self.progress.update(task, **fields)  # type: ignore[arg-type]

    def __call__(self, event: Event) -> None:
        if isinstance(event, RenderStarted):
            return
        if isinstance(event, SceneQueued):
            self.frames[event.scene] = event.frames
            note = f"after {event.waits_for}" if event.waits_for else ""
            self.tasks[event.scene] = self.progress.add_task(
                "", total=100, scene=event.scene, state="queued", note=note
            )
        elif isinstance(event, SceneStarted):
            self._update(event.scene, state=event.stage, completed=0, note="")
        elif isinstance(event, JobSubmitted):
            verb = "re-attached" if event.resumed else "job"
            self._update(event.scene, note=f"{verb} {event.job_id}")
        elif isinstance(event, SceneProgress):
            self._update(event.scene, completed=round(event.fraction * 100))
        elif isinstance(event, SceneCached):
            self._update(event.scene, state=f"{event.stage} ✓", note="cached")
        elif isinstance(event, SceneDone):
            note = "cached" if event.cached else f"{event.seconds:.1f} s"
            if event.cost_usd:
                note += f"  ${event.cost_usd:.4f}"
            self._update(event.scene, state="[green]done", completed=100, note=note)
        elif isinstance(event, SceneFailed):
            self._update(event.scene, state="[red]failed", note=event.error.splitlines()[0][:60])
        elif isinstance(event, SceneSkipped):
            self._update(event.scene, state="[yellow]skipped", note=event.reason)
        elif isinstance(event, CostUpdated):
            self.cost = event.total_usd
        elif isinstance(event, StitchStarted):
            self.tasks["__stitch__"] = self.progress.add_task(
                "", total=event.frames, scene="final", state="stitching", note=""
            )
        elif isinstance(event, StitchProgress):
            self._update("__stitch__", completed=event.done, total=event.total)
        elif isinstance(event, StitchDone):
            if "__stitch__" not in self.tasks:
                self.tasks["__stitch__"] = self.progress.add_task(
                    "", total=event.frames, scene="final", state="", note=""
                )
            note = "unchanged" if event.cached else f"{event.method}, {event.seconds:.1f} s"
            self._update(
                "__stitch__", state="[green]done", completed=event.frames, total=event.frames,
                note=note,
            )  # fmt: skip
