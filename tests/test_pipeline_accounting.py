"""What the manifest says a render did and cost, and how a render ends when it is interrupted.

The backend here is the real preview backend behind a thin wrapper that behaves like a remote
one: it reports a job id and a billed attempt for every job, as the RunPod backend does.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

import videokit
from tests.conftest import RecordingBackend
from videokit.backends.base import JobAttempt, JobContext, Stage
from videokit.errors import ConfigError
from videokit.media.probe import probe_video
from videokit.pipeline.events import Event, JobSubmitted
from videokit.protocol import AnimateRequest, AnimateResult, EditRequest, EditResult

STORY = """
title: Accounting
reference: ref.png
defaults: {width: 192, height: 128, frames: 9, fps: 8, seed: 3}
scenes:
  - id: a
    motion: the camera drifts
  - id: b
    edit: {prompt: now at night, seed: 5, steps: 4}
    motion: lights flicker
  - id: c
    motion: she walks on
"""

PRICE = 0.01  # what the wrapper bills per job


@dataclass
class BillingBackend:
    """The preview backend, reporting a job id and a paid attempt per job like a remote one."""

    recording: RecordingBackend = field(default_factory=RecordingBackend)
    name: str = "preview"
    jobs: int = 0
    fail_once: set[str] = field(default_factory=set)
    hang: set[str] = field(default_factory=set)
    cancel_remote: bool = True
    payload_bytes: Mapping[Stage, int] | None = None
    warmups: list[Stage] = field(default_factory=list)
    reattached: list[str] = field(default_factory=list)
    # Per scene: what its job does instead of the default (a completed, billed job).
    script: dict[str, Callable[[JobContext], Awaitable[None]]] = field(default_factory=dict)

    def identity(self, stage: Stage) -> str:
        return self.recording.identity(stage)

    def identities(self, stage: Stage) -> tuple[str, ...]:
        return (self.identity(stage),)

    def concurrency(self, stage: Stage) -> int:
        return 4

    def check(
        self, stages: Collection[Stage], *, payload_bytes: Mapping[Stage, int] | None = None
    ) -> None:
        self.payload_bytes = payload_bytes

    async def warm_up(self, stage: Stage, ctx: JobContext) -> None:
        self.warmups.append(stage)
        attempt = JobAttempt(job_id="warm-1", status="COMPLETED", cost_usd=PRICE / 10)
        ctx.attempts.append(attempt)
        await ctx.on_submitted(attempt.job_id)

    async def _bill(self, ctx: JobContext) -> None:
        if ctx.scene in self.script:
            await self.script[ctx.scene](ctx)
            return
        if ctx.resume_job_id is not None:  # re-attach to the job an earlier render sent
            self.reattached.append(ctx.resume_job_id)
            attempt = JobAttempt(job_id=ctx.resume_job_id, status="IN_PROGRESS")
        else:
            self.jobs += 1
            attempt = JobAttempt(job_id=f"job-{self.jobs}", status="IN_PROGRESS")
        ctx.attempts.append(attempt)
        await ctx.on_submitted(attempt.job_id)
        if ctx.scene in self.hang:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                if self.cancel_remote:
                    attempt.status = "CANCELLED"
                attempt.cost_usd = PRICE / 2
                raise
        attempt.cost_usd = PRICE
        if ctx.scene in self.fail_once:
            self.fail_once.discard(ctx.scene)
            attempt.status = "FAILED"
            raise RuntimeError(f"worker lost while rendering {ctx.scene}")
        attempt.status = "COMPLETED"

    async def edit(self, request: EditRequest, ctx: JobContext) -> EditResult:
        await self._bill(ctx)
        return await self.recording.edit(request, ctx)

    async def animate(self, request: AnimateRequest, ctx: JobContext) -> AnimateResult:
        await self._bill(ctx)
        return await self.recording.animate(request, ctx)

    async def aclose(self) -> None:
        await self.recording.aclose()


def pipeline(story: Path, backend: object, **kwargs: object) -> videokit.Pipeline:
    return videokit.Pipeline(story, backend=backend, out=story.parent / "out", **kwargs)  # type: ignore[arg-type]


def manifest_of(story: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((story.parent / "out" / "manifest.json").read_text())


def test_manifest_records_each_stage_with_its_own_input_seed_and_parameters(
    write_story: Callable[..., Path],
) -> None:
    story = write_story(STORY)
    result = pipeline(story, BillingBackend()).run()
    b = manifest_of(story)["scenes"]["b"]
    # The scene's input is the frame it starts from (a's last frame), before its edit...
    assert (
        b["input_sha256"] == hashlib.sha256(result.scenes["a"].last_frame.read_bytes()).hexdigest()
    )
    assert b["edit"]["input_sha256"] == b["input_sha256"]
    # ...and the animate stage works on the edited frame.
    edited = result.scenes["b"].edited_frame
    assert edited is not None
    assert b["animate"]["input_sha256"] == hashlib.sha256(edited.read_bytes()).hexdigest()
    assert b["edit"]["seed"] == 5 and b["edit"]["params"]["prompt"] == "now at night"
    assert b["edit"]["params"]["steps"] == 4
    assert b["animate"]["seed"] == b["seed"] != 5
    assert b["animate"]["params"]["prompt"] == "lights flicker"


def test_cached_scenes_keep_what_they_cost_and_the_run_says_what_it_spent(
    write_story: Callable[..., Path],
) -> None:
    story = write_story(STORY)
    first = pipeline(story, BillingBackend()).run()
    assert first.cost_usd == pytest.approx(4 * PRICE + PRICE / 10)  # 4 jobs and a warm-up
    paid = manifest_of(story)
    assert paid["cost_usd"] == pytest.approx(4 * PRICE)

    backend = BillingBackend()
    second = pipeline(story, backend).run()
    assert backend.jobs == 0 and second.cost_usd == 0.0
    again = manifest_of(story)
    assert again["run_cost_usd"] == 0.0
    # The film still cost what it cost: cached stages carry their original attempts and cost.
    assert again["cost_usd"] == pytest.approx(4 * PRICE)
    b = again["scenes"]["b"]
    assert b["edit"]["cached"] and b["edit"]["cost_usd"] == pytest.approx(PRICE)
    assert [a["job_id"] for a in b["edit"]["attempts"]] == [
        a["job_id"] for a in paid["scenes"]["b"]["edit"]["attempts"]
    ]
    assert b["cost_usd"] == pytest.approx(2 * PRICE)


def test_attempts_of_an_earlier_failed_render_stay_on_the_record(
    write_story: Callable[..., Path],
) -> None:
    story = write_story(STORY)
    with pytest.raises(videokit.RenderError):
        pipeline(story, BillingBackend(fail_once={"c"})).run()
    failed = manifest_of(story)["scenes"]["c"]["animate"]
    assert failed["status"] == "failed" and [a["status"] for a in failed["attempts"]] == ["FAILED"]

    result = pipeline(story, BillingBackend()).run()
    c = manifest_of(story)["scenes"]["c"]["animate"]
    assert [a["status"] for a in c["attempts"]] == ["FAILED", "COMPLETED"]
    assert c["cost_usd"] == pytest.approx(2 * PRICE)
    assert result.cost_usd == pytest.approx(PRICE)  # this render paid for c only


def test_warm_up_jobs_are_recorded_and_billed(write_story: Callable[..., Path]) -> None:
    story = write_story(STORY)
    backend = BillingBackend()
    result = pipeline(story, backend).run()
    assert backend.warmups == ["animate"]
    manifest = manifest_of(story)
    assert [a["job_id"] for a in manifest["warmup"]] == ["warm-1"]
    assert result.cost_usd == pytest.approx(4 * PRICE + PRICE / 10)
    assert manifest["run_cost_usd"] == pytest.approx(4 * PRICE + PRICE / 10)


def test_payload_bounds_reach_the_backend_before_anything_runs(
    write_story: Callable[..., Path], story_dir: Path
) -> None:
    story = write_story(STORY)
    backend = BillingBackend()
    pipeline(story, backend).run()
    bounds = backend.payload_bytes
    assert bounds is not None and set(bounds) == {"edit", "animate"}
    reference = (story_dir / "ref.png").stat().st_size
    made_frame = 128 * (192 * 3 + 1)  # an incompressible RGB PNG of the story's size
    # The first scene sends the reference; the others send frames the pipeline made.
    assert bounds["animate"] >= 4 * ((max(reference, made_frame) + 2) // 3)
    assert bounds["edit"] >= 4 * ((made_frame + 2) // 3)
    assert bounds["animate"] < 4 * ((made_frame + 2) // 3) + 64 * 1024


def test_a_failing_event_handler_stops_the_render_and_is_raised_as_is(
    write_story: Callable[..., Path],
) -> None:
    story = write_story(STORY)
    backend = BillingBackend(hang={"c"})

    def handler(event: Event) -> None:
        if isinstance(event, JobSubmitted) and event.scene == "c":
            raise BrokenPipeError("stdout closed")  # e.g. `videokit render --json | head`

    with pytest.raises(BrokenPipeError):
        pipeline(story, backend, on_event=handler).run()
    scenes = manifest_of(story)["scenes"]
    assert scenes["c"]["status"] == "cancelled"
    assert scenes["c"]["animate"]["status"] == "cancelled"  # its job was cancelled remotely
    assert not any(s["status"] == "running" for s in scenes.values())


def test_an_interrupted_job_that_may_still_run_is_kept_for_re_attaching(
    write_story: Callable[..., Path],
) -> None:
    story = write_story(STORY)
    backend = BillingBackend(hang={"c"}, cancel_remote=False)

    async def interrupt() -> None:
        task = asyncio.ensure_future(pipeline(story, backend).arun())
        while backend.jobs < 4:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(interrupt())
    c = manifest_of(story)["scenes"]["c"]
    assert c["status"] == "cancelled"
    # The cancel did not reach the endpoint: the job id stays "submitted" for the next render.
    assert c["animate"]["status"] == "submitted" and c["animate"]["job_id"] == "job-4"
    assert c["animate"]["attempts"][0]["cost_usd"] == pytest.approx(PRICE / 2)

    # The next render re-attaches to job-4; its final view of the job replaces the earlier one.
    again = BillingBackend()
    pipeline(story, again).run()
    assert again.reattached == ["job-4"] and again.jobs == 0
    c = manifest_of(story)["scenes"]["c"]["animate"]
    assert [(a["job_id"], a["status"]) for a in c["attempts"]] == [("job-4", "COMPLETED")]
    assert c["cost_usd"] == pytest.approx(PRICE)


def test_run_works_inside_a_running_event_loop(
    write_story: Callable[..., Path], recording: RecordingBackend
) -> None:
    story = write_story(STORY)

    async def notebook_cell() -> videokit.RenderResult:
        return pipeline(story, recording).run()  # what a Jupyter user types

    result = asyncio.run(notebook_cell())
    assert result.final_video is not None and result.final_video.is_file()


def test_scenes_removed_from_the_story_leave_the_manifest_and_scenes_folder(
    write_story: Callable[..., Path], recording: RecordingBackend
) -> None:
    story = write_story(STORY)
    pipeline(story, recording).run()
    assert (story.parent / "out" / "scenes" / "c").is_dir()
    write_story(STORY.replace("  - id: c\n    motion: she walks on\n", ""))
    pipeline(story, recording).run()
    assert set(manifest_of(story)["scenes"]) == {"a", "b"}
    assert not (story.parent / "out" / "scenes" / "c").exists()


def test_a_work_directory_that_is_a_file_is_a_config_error(
    write_story: Callable[..., Path], story_dir: Path, recording: RecordingBackend
) -> None:
    story = write_story(STORY)
    with pytest.raises(ConfigError, match="is a file"):
        videokit.Pipeline(story, backend=recording, out=story_dir / "ref.png" / "out").run()
    assert recording.calls == []


def test_open_clip_is_frame_exact_and_closes_its_ffmpeg(
    write_story: Callable[..., Path], recording: RecordingBackend
) -> None:
    story = write_story(STORY)
    result = pipeline(story, recording).run()
    me = psutil.Process()
    with result.open_video() as clip:
        frames = sum(1 for _ in clip.iter_frames())
        assert me.children(recursive=True)  # moviepy's reader is an ffmpeg process
    assert (
        result.frames is not None
        and frames
        == result.frames
        == probe_video(
            result.final_video  # type: ignore[arg-type]
        ).frames
    )
    with result.scenes["a"].open_clip() as clip:
        assert sum(1 for _ in clip.iter_frames()) == 9
    assert not [p for p in me.children(recursive=True) if "ffmpeg" in p.name()]


def test_a_job_retried_in_place_keeps_its_failed_attempt_when_re_attached(
    write_story: Callable[..., Path],
) -> None:
    # RunPod's retry/{id} reuses the job id: render 1 sees X fail, retries it in place, and is
    # interrupted without the cancel being confirmed; render 2 re-attaches to X and sees it end.
    story = write_story(STORY)
    hanging = False

    async def fail_retry_hang(ctx: JobContext) -> None:
        nonlocal hanging
        ctx.attempts.append(JobAttempt(job_id="X", status="FAILED", cost_usd=0.5))
        await ctx.on_submitted("X")
        ctx.attempts.append(JobAttempt(job_id="X", status="IN_PROGRESS", cost_usd=0.2))
        hanging = True
        await asyncio.Event().wait()  # cancelled, and the cancel is not confirmed

    async def interrupted() -> None:
        backend = BillingBackend(script={"c": fail_retry_hang})
        task = asyncio.ensure_future(pipeline(story, backend).arun())
        # Interrupt once c's job is in flight (however long the scenes before it took).
        for _ in range(3000):
            if hanging:
                break
            await asyncio.sleep(0.01)
        assert hanging, "scene c's job never started"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(interrupted())
    assert manifest_of(story)["scenes"]["c"]["animate"]["status"] == "submitted"

    async def finish(ctx: JobContext) -> None:
        assert ctx.resume_job_id == "X"
        ctx.attempts.append(JobAttempt(job_id="X", status="COMPLETED", cost_usd=0.6))
        await ctx.on_submitted("X")

    again = BillingBackend(script={"c": finish})
    pipeline(story, again).run()
    c = manifest_of(story)["scenes"]["c"]["animate"]
    assert [(a["job_id"], a["status"], a["cost_usd"]) for a in c["attempts"]] == [
        ("X", "FAILED", 0.5),
        ("X", "COMPLETED", 0.6),
    ]
    assert c["cost_usd"] == pytest.approx(1.1)


def test_a_job_that_failed_while_it_may_still_run_is_kept_for_re_attaching(
    write_story: Callable[..., Path],
) -> None:
    # e.g. stuck in the queue and its cancel could not be confirmed: it may still run and bill.
    story = write_story(STORY)

    async def stuck(ctx: JobContext) -> None:
        ctx.attempts.append(JobAttempt(job_id="S", status="IN_QUEUE"))
        await ctx.on_submitted("S")
        raise videokit.EndpointError("job S is stuck in the queue and could not be cancelled")

    with pytest.raises(videokit.RenderError):
        pipeline(story, BillingBackend(script={"c": stuck})).run()
    c = manifest_of(story)["scenes"]["c"]["animate"]
    assert c["status"] == "submitted" and c["job_id"] == "S"

    again = BillingBackend()
    pipeline(story, again).run()
    assert again.reattached == ["S"] and again.jobs == 0


def test_interrupted_before_re_attaching_the_job_stays_ours(
    write_story: Callable[..., Path],
) -> None:
    story = write_story(STORY)
    backend = BillingBackend(hang={"c"}, cancel_remote=False)

    async def interrupt(backend: BillingBackend, until: Callable[[], bool]) -> None:
        task = asyncio.ensure_future(pipeline(story, backend).arun())
        while not until():
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(interrupt(backend, lambda: backend.jobs >= 4))

    async def slow_to_re_attach(ctx: JobContext) -> None:
        resumed.append(ctx.resume_job_id)
        await asyncio.Event().wait()  # e.g. still uploading inputs when Ctrl-C comes

    resumed: list[str | None] = []
    slow = BillingBackend(script={"c": slow_to_re_attach})
    asyncio.run(interrupt(slow, lambda: bool(resumed)))
    c = manifest_of(story)["scenes"]["c"]["animate"]
    assert resumed == ["job-4"]
    assert c["status"] == "submitted" and c["job_id"] == "job-4"

    # Interrupted again after re-attaching but before learning the job's cost: the first
    # render's estimate stays.
    async def re_attach_then_hang(ctx: JobContext) -> None:
        ctx.attempts.append(JobAttempt(job_id="job-4", status="IN_PROGRESS"))
        await ctx.on_submitted("job-4")
        attached.append(ctx.scene)
        await asyncio.Event().wait()

    attached: list[str] = []
    once_more = BillingBackend(script={"c": re_attach_then_hang})
    asyncio.run(interrupt(once_more, lambda: bool(attached)))
    c = manifest_of(story)["scenes"]["c"]["animate"]
    assert [(a["job_id"], a["cost_usd"]) for a in c["attempts"]] == [("job-4", PRICE / 2)]
