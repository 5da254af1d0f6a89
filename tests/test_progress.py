"""What a person sees of a render: the live table on a terminal, plain lines elsewhere, and the
summary line; fed realistic event sequences at chosen moments (an injected clock), and once the
events of a real render against real ``videokit serve`` servers on loopback."""

from __future__ import annotations

import io
import json
import textwrap
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import pytest
from pydantic import TypeAdapter
from rich.cells import cell_len
from rich.console import Console

import videokit
from tests.conftest import make_image
from tests.endpoints import serve_workers
from videokit.backends.retry import RetryPolicy
from videokit.backends.runpod import Endpoint, RunPodBackend, RunPodConfig
from videokit.cli.live_progress import LiveProgress
from videokit.cli.progress import JsonLines, PlainProgress, short_job_id, summary_line
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

TUX = "3f2b8c1e-6a0d-4f4b-9a51-2c8e7d1b0a99-u1"  # RunPod job ids are this long
WALK = "9d41e7aa-0b3c-4d2e-8f60-71a5c3e2b4d8-u1"


class Clock:
    """Time that moves only when a test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def at(
    clock: Clock,
    start: float,
    timeline: list[tuple[float, Event]],
    handler: Callable[[Event], None],
) -> None:
    """Feed ``timeline`` (seconds after ``start``, event) to ``handler`` at those moments."""
    for seconds, event in timeline:
        clock.now = start + seconds
        handler(event)


# A render of three scenes: tuxedo (edit after a cold start, then animate), walk (from tuxedo,
# animate only, queued behind another job) and beach (cached).
START = 1000.0
EVENTS: list[tuple[float, Event]] = [
    (
        0.0,
        RenderStarted(
            story="Tux",
            backend="runpod",
            workdir="/w",
            scenes=["tuxedo", "walk", "beach"],
            jobs={"edit": 1, "animate": 3},
        ),
    ),
    (0.0, SceneQueued(scene="tuxedo", frames=33)),
    (0.0, SceneQueued(scene="walk", frames=33, waits_for="tuxedo")),
    (0.0, SceneQueued(scene="beach", frames=33)),
    (0.1, SceneCached(scene="beach", stage="animate")),
    (0.2, SceneDone(scene="beach", clip="c", last_frame="l", seconds=0.2, cost_usd=0, cached=True)),
    (0.5, SceneStarted(scene="tuxedo", stage="edit")),
    (0.7, JobSubmitted(scene="tuxedo", stage="edit", job_id=TUX)),
    (1.0, JobStateChanged(scene="tuxedo", stage="edit", status="cold_start", job_id=TUX)),
    (41.0, JobStateChanged(scene="tuxedo", stage="edit", status="running", job_id=TUX)),
    (44.0, SceneProgress(scene="tuxedo", stage="edit", fraction=0.5)),
    (48.0, CostUpdated(scene="tuxedo", stage="edit", cost_usd=0.0031, total_usd=0.0031)),
    (48.1, SceneStarted(scene="tuxedo", stage="animate")),
    (48.2, JobSubmitted(scene="tuxedo", stage="animate", job_id=TUX[:-1] + "2")),
    (
        48.5,
        JobStateChanged(scene="tuxedo", stage="animate", status="running", job_id=TUX[:-1] + "2"),
    ),
    (60.0, CostUpdated(scene="tuxedo", stage="animate", cost_usd=0.0060, total_usd=0.0091)),
    (
        60.1,
        SceneDone(
            scene="tuxedo", clip="c", last_frame="l", seconds=60.1, cost_usd=0.0091, cached=False
        ),
    ),
    (60.2, SceneStarted(scene="walk", stage="animate")),
    (60.3, JobSubmitted(scene="walk", stage="animate", job_id=WALK)),
    (60.4, JobStateChanged(scene="walk", stage="animate", status="queued", job_id=WALK)),
    (64.6, JobStateChanged(scene="walk", stage="animate", status="running", job_id=WALK)),
    (72.0, CostUpdated(scene="walk", stage="animate", cost_usd=0.0032, total_usd=0.0123)),
    (
        72.1,
        SceneDone(
            scene="walk", clip="c", last_frame="l", seconds=72.1, cost_usd=0.0032, cached=False
        ),
    ),
    (72.2, StitchStarted(frames=97, output="/w/final.mp4")),
    (72.5, StitchProgress(done=50, total=97)),
    (73.0, StitchDone(output="/w/final.mp4", frames=97, method="concat", seconds=0.8)),
]


def done_event(**changes: object) -> RenderDone:
    fields: dict[str, object] = {
        "final": "/w/final.mp4",
        "contact_sheet": "/w/contact_sheet.png",
        "manifest": "/w/manifest.json",
        "seconds": 73.4,
        "cost_usd": 0.0123,
        "rendered": ["tuxedo", "walk"],
        "cached": ["beach"],
    }
    return RenderDone.model_validate({**fields, **changes})


# -- plain lines ------------------------------------------------------------------------------------


class Flushes(io.StringIO):
    """A stream that says whether every line was flushed as soon as it was written."""

    def __init__(self) -> None:
        super().__init__()
        self.pending = ""

    def write(self, text: str) -> int:
        self.pending += text
        return super().write(text)

    def flush(self) -> None:
        self.pending = ""
        super().flush()


def plain_lines(**options: bool) -> list[str]:
    clock = Clock()
    stream = Flushes()
    handler = PlainProgress(stream, clock=clock, **options)
    at(clock, START, EVENTS, handler)
    clock.now = START + 73.4
    handler(done_event())
    assert stream.pending == ""  # every line flushed when written
    return stream.getvalue().splitlines()


def test_plain_progress_prints_one_line_per_state_change_with_time_and_cost() -> None:
    lines = plain_lines()
    assert lines[:-1] == [
        "[   0.0s] render   3 scenes (1 edit, 3 animations) on runpod: Tux",
        "[   0.0s] tuxedo   queued",
        "[   0.0s] walk     queued, after tuxedo",
        "[   0.0s] beach    queued",
        "[   0.1s] beach    animate cached",
        "[   0.2s] beach    done (cached)",
        "[   0.5s] tuxedo   edit started",
        "[   0.7s] tuxedo   edit job 3f2b8c1e submitted",
        "[   1.0s] tuxedo   edit cold start (job 3f2b8c1e)",
        "[  41.0s] tuxedo   edit running (job 3f2b8c1e, after 40.0 s cold start)",
        "[  48.0s] tuxedo   edit finished, $0.0031 ($0.0031 spent so far)",
        "[  48.1s] tuxedo   animate started",
        "[  48.2s] tuxedo   animate job 3f2b8c1e submitted",
        "[  48.5s] tuxedo   animate running (job 3f2b8c1e)",
        "[  60.0s] tuxedo   animate finished, $0.0060 ($0.0091 spent so far)",
        "[  60.1s] tuxedo   done in 1 min 00 s, $0.0091",
        "[  60.2s] walk     animate started",
        "[  60.3s] walk     animate job 9d41e7aa submitted",
        "[  60.4s] walk     animate queued (job 9d41e7aa)",
        "[  64.6s] walk     animate running (job 9d41e7aa, after 4.2 s queued)",
        "[  72.0s] walk     animate finished, $0.0032 ($0.0123 spent so far)",
        "[  72.1s] walk     done in 1 min 12 s, $0.0032",
        "[  72.2s] final    stitching 97 frames into /w/final.mp4",
        "[  73.0s] final    stitched 97 frames in 0.8 s (concat): /w/final.mp4",
    ]
    # Progress (the edit's 50%, the stitch's 50 frames) is no state change: no line for it.
    assert lines[-1].startswith("done in 1 min 13 s: 2 scenes rendered, 1 cached, $0.0123 spent")
    assert all("\x1b" not in line for line in lines)  # no ANSI codes, whatever the stream is


def test_plain_progress_tells_queued_cold_start_and_running_apart() -> None:
    states = [line.split(maxsplit=3)[3] for line in plain_lines() if "(job" in line]
    assert [s.split(" (")[0] for s in states] == [
        "edit cold start",
        "edit running",
        "animate running",
        "animate queued",
        "animate running",
    ]
    assert all(TUX not in line and WALK not in line for line in plain_lines())


def test_plain_progress_reports_failures_skips_and_in_process_jobs() -> None:
    clock = Clock()
    stream = io.StringIO()
    handler = PlainProgress(stream, clock=clock, summary=False)
    at(
        clock,
        START,
        [
            (
                0.0,
                RenderStarted(
                    story="S",
                    backend="preview",
                    workdir="/w",
                    scenes=["a", "b"],
                    jobs={"edit": 0, "animate": 2},
                ),
            ),
            (0.1, SceneStarted(scene="a", stage="animate")),
            (0.1, JobStateChanged(scene="a", stage="animate", status="running")),  # no job id
            (2.5, SceneFailed(scene="a", stage="animate", error="boom: the worker died\nstack")),
            (2.6, SceneSkipped(scene="b", reason="upstream scene 'a' failed")),
            (2.7, done_event()),
        ],
        handler,
    )
    assert stream.getvalue().splitlines()[1:] == [
        "[   0.1s] a        animate started",
        "[   0.1s] a        animate running",
        "[   2.5s] a        failed in animate: boom: the worker died",
        "[   2.6s] b        skipped: upstream scene 'a' failed",
    ]  # and no summary: summary=False


# -- the live table --------------------------------------------------------------------------------


def terminal() -> Console:
    return Console(file=io.StringIO(), width=80, height=40, record=True, force_terminal=True)


def frame(console: Console, display: LiveProgress) -> list[str]:
    """What the display shows right now, as lines of text."""
    console.print(display)
    return console.export_text(clear=True).splitlines()


def row(lines: list[str], scene: str) -> str:
    [line] = [line for line in lines if line.startswith(scene + " ")]
    return line


def elapsed(lines: list[str], scene: str) -> str:
    """The scene's elapsed column (right-aligned under its header)."""
    end = lines[0].index("elapsed") + len("elapsed")
    return row(lines, scene)[end - 7 : end].strip()


def live_at(seconds: float) -> tuple[Console, LiveProgress, Clock]:
    """The live display fed the events up to ``seconds`` after the start, its clock there."""
    clock = Clock()
    console = terminal()
    display = LiveProgress(console, clock=clock)
    at(clock, START, [(t, e) for t, e in EVENTS if t <= seconds], display)
    clock.now = START + seconds
    return console, display, clock


def test_the_table_has_a_header_row_and_no_line_wider_than_80_columns() -> None:
    for seconds in (0.0, 1.0, 30.0, 45.0, 62.0, 73.0):
        console, display, _ = live_at(seconds)
        lines = frame(console, display)
        assert lines[0].split() == ["scene", "stage/state", "progress", "elapsed", "cost/notes"]
        assert all(cell_len(line) <= 80 for line in lines), lines
        scenes = 3 + (1 if seconds >= 72.2 else 0)  # the stitch gets a row of its own
        assert len(lines) == 1 + scenes + 1  # header, one line a row, footer: nothing wrapped


def test_long_names_ids_and_errors_are_cut_not_wrapped() -> None:
    clock = Clock()
    console = terminal()
    display = LiveProgress(console, clock=clock)
    name = "the_hero_walks_into_the_sunset_and_keeps_walking"
    display(SceneQueued(scene=name, frames=9))
    display(SceneStarted(scene=name, stage="animate"))
    display(JobSubmitted(scene=name, stage="animate", job_id=TUX))
    display(JobStateChanged(scene=name, stage="animate", status="cold_start", job_id=TUX))
    display(SceneQueued(scene="b", frames=9))
    display(SceneFailed(scene="b", stage="edit", error="the edit job failed: " + "x" * 200))
    lines = frame(console, display)
    assert len(lines) == 4 and all(cell_len(line) <= 80 for line in lines), lines
    assert TUX not in "".join(lines) and f"job {short_job_id(TUX)}" in lines[1]
    assert short_job_id(TUX) == "3f2b8c1e"
    assert lines[1].startswith("the_hero_wa…") and lines[2].rstrip().endswith("…")


def test_queued_cold_start_and_running_look_different_with_time_in_that_state() -> None:
    for seconds, scene, state in (
        (30.0, "tuxedo", "edit cold start 0:29"),
        (45.0, "tuxedo", "edit running 0:04"),
        (62.0, "walk", "animate queued 0:01"),
        (70.0, "walk", "animate running 0:05"),
    ):
        console, display, _ = live_at(seconds)
        assert state in row(frame(console, display), scene)


def test_a_scenes_clock_keeps_running_after_its_edit_and_stops_when_it_is_done() -> None:
    console, display, clock = live_at(48.0)  # the edit just finished
    seen = []
    for seconds in (48.0, 55.0, 59.0):
        clock.now = START + seconds
        seen.append(elapsed(frame(console, display), "tuxedo"))
    assert seen == ["0:48", "0:55", "0:59"]
    console, display, clock = live_at(61.0)
    for seconds in (61.0, 300.0):  # done at 60.1: it stays there
        clock.now = START + seconds
        assert elapsed(frame(console, display), "tuxedo") == "1:00"
    line = row(frame(console, display), "tuxedo")
    assert "done" in line and "$0.0091" in line


def test_the_footer_keeps_the_spend_scenes_done_and_the_clock() -> None:
    console, display, clock = live_at(62.0)
    assert frame(console, display)[-1] == "spent $0.0091 · 2/3 scenes done · 1:02"
    at(clock, START, [(t, e) for t, e in EVENTS if t > 62.0], display)
    clock.now = START + 73.0
    assert frame(console, display)[-1] == "spent $0.0123 · 3/3 scenes done · 1:13"


def test_failures_and_skips_are_counted_and_the_reason_shown() -> None:
    clock = Clock()
    console = terminal()
    display = LiveProgress(console, clock=clock)
    display(
        RenderStarted(
            story="S",
            backend="preview",
            workdir="/w",
            scenes=["a", "b"],
            jobs={"edit": 0, "animate": 2},
        )
    )
    display(SceneQueued(scene="a", frames=9))
    display(SceneQueued(scene="b", frames=9, waits_for="a"))
    lines = frame(console, display)
    assert "after a" in row(lines, "b") and "waiting" in row(lines, "b")
    display(SceneFailed(scene="a", stage="animate", error="boom\ntraceback"))
    display(SceneSkipped(scene="b", reason="upstream scene 'a' failed"))
    lines = frame(console, display)
    assert "failed in animate" in row(lines, "a") and "boom" in row(lines, "a")
    assert "skipped" in row(lines, "b") and "upstream" in row(lines, "b")
    assert lines[-1] == "spent $0.0000 · 0/2 scenes done · 1 failed · 1 skipped · 0:00"


def test_a_terminal_too_short_for_every_scene_keeps_those_still_going() -> None:
    clock = Clock()
    console = Console(file=io.StringIO(), width=80, height=8, record=True, force_terminal=True)
    display = LiveProgress(console, clock=clock)
    for i in range(10):
        display(SceneQueued(scene=f"s{i}", frames=9))
    for i in range(8):
        display(
            SceneDone(scene=f"s{i}", clip="c", last_frame="l", seconds=1, cost_usd=0, cached=True)
        )
    lines = frame(console, display)
    assert len(lines) <= 8 and "s8" in "".join(lines) and "s9" in "".join(lines)
    assert "6 scenes done, not shown" in "".join(lines)


def test_the_live_display_prints_the_summary_line_after_it_stops(tmp_path: Path) -> None:
    clock = Clock()
    console = terminal()
    with LiveProgress(console, clock=clock) as display:
        at(clock, START, EVENTS, display)
        display(done_event())
    text = console.export_text()
    assert text.rstrip().splitlines()[-1] == summary_line(done_event())
    assert "spent $0.0123 · 3/3 scenes done · 1:13" in text  # the last frame stays

    for options, raised in (({"summary": False}, False), ({}, True)):
        console = terminal()
        expected: AbstractContextManager[object] = (
            pytest.raises(KeyboardInterrupt) if raised else nullcontext()
        )
        with expected, LiveProgress(console, clock=clock, **options) as display:
            display(done_event())
            if raised:
                raise KeyboardInterrupt
        assert "done in" not in console.export_text()


# -- the summary line ------------------------------------------------------------------------------


def test_the_summary_line_says_what_the_render_did_and_where_things_are(tmp_path: Path) -> None:
    out = tmp_path / "out" / "story"
    done = done_event(
        final=str(out / "final.mp4"),
        contact_sheet=str(out / "contact_sheet.png"),
        manifest=str(out / "manifest.json"),
        seconds=42.1,
        rendered=["a", "b", "c"],
        cached=["d", "e"],
    )
    assert summary_line(done, cwd=tmp_path) == (
        "done in 42.1 s: 3 scenes rendered, 2 cached, $0.0123 spent · film out/story/final.mp4 "
        "· contact sheet out/story/contact_sheet.png · manifest out/story/manifest.json"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert f"film {out / 'final.mp4'}" in summary_line(done, cwd=elsewhere)  # outside: absolute


def test_the_summary_line_says_how_much_of_the_spend_is_an_estimate() -> None:
    done = done_event(cost_usd=0.95, cost_estimated_usd=0.3)
    assert "$0.9500 spent ($0.3000 of it estimated)" in summary_line(done)
    assert "estimated" not in summary_line(done_event(cost_usd=0.95))


def test_the_summary_line_names_stale_scenes_and_a_film_not_stitched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    done = done_event(
        final=None,
        contact_sheet=None,
        manifest=str(tmp_path / "manifest.json"),
        seconds=3725.0,
        rendered=["a"],
        cached=[],
        stale=["c", "d"],
        cost_usd=0.0,
    )
    assert summary_line(done) == (
        "done in 1 h 02 min: 1 scene rendered, 0 cached, 2 stale (c, d), $0.0000 spent "
        "· film not stitched · manifest manifest.json"
    )


# -- JSON lines -------------------------------------------------------------------------------------


def test_json_lines_carry_the_job_status_event() -> None:
    stream = io.StringIO()
    event = JobStateChanged(scene="tuxedo", stage="edit", status="cold_start", job_id=TUX)
    JsonLines(stream)(event)
    body = json.loads(stream.getvalue())
    assert body == {
        "type": "job_status",
        "scene": "tuxedo",
        "stage": "edit",
        "status": "cold_start",
        "job_id": TUX,
    }
    assert TypeAdapter(Event).validate_python(body) == event


# -- a real render ----------------------------------------------------------------------------------

TWO_SCENES = """
title: Two
reference: ref.png
defaults: {width: 128, height: 128, frames: 5, fps: 8, seed: 3}
scenes:
  - {id: left, motion: the camera drifts left}
  - {id: right, from: reference, motion: the camera drifts right}
timeline: [left, right]
"""


def test_a_real_render_reports_job_states_that_both_displays_show(tmp_path: Path) -> None:
    make_image(tmp_path / "ref.png", (128, 128))
    story = tmp_path / "two.yaml"
    story.write_text(textwrap.dedent(TWO_SCENES))
    events: list[Event] = []
    # One animate worker, jobs of 0.4 s at least: of the two scenes, one waits its turn.
    with serve_workers(min_job_seconds={"animate": 0.4}, concurrency={"animate": 1}) as servers:
        endpoints = {stage: Endpoint(url) for stage, url in servers.urls.items()}
        backend = RunPodBackend(
            RunPodConfig(api_key=None, endpoints=endpoints, warmup=False),
            retry=RetryPolicy(attempts=3),
        )
        videokit.Pipeline(
            story, backend=backend, out=tmp_path / "out", on_event=events.append
        ).run()
    submitted = {(e.scene, e.job_id) for e in events if isinstance(e, JobSubmitted)}
    states: dict[str, list[str]] = {}
    for event in events:
        if isinstance(event, JobStateChanged):
            assert event.stage == "animate" and (event.scene, event.job_id) in submitted
            states.setdefault(event.scene, []).append(event.status)
    assert ["queued", "running"] in states.values(), states
    assert all(s[-1] == "running" and "cold_start" not in s for s in states.values()), states

    stream = io.StringIO()
    plain = PlainProgress(stream)
    console = terminal()
    live = LiveProgress(console)
    for event in events:
        plain(event)
        live(event)
    text = stream.getvalue()
    assert "animate queued (job " in text and "animate running (job " in text
    assert text.splitlines()[-1].startswith("done in ")
    lines = frame(console, live)
    assert all(cell_len(line) <= 80 for line in lines)
    assert lines[-1].startswith("spent $0.0") and "2/2 scenes done" in lines[-1]
