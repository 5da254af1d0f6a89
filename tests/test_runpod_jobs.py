"""The RunPod job policy with a scripted API and clock: one job, re-attaching, status reads
retried until the job's deadline, and cancelling."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any

import httpx
import pytest

from tests.fake_runpod import (
    OUTPUT,
    PNG,
    PRICE,
    REQUEST,
    FakeClock,
    FakeRunPod,
    backend,
    done,
    route_of,
    run,
    server_error,
    storage,
)
from videokit.backends.base import JobContext
from videokit.errors import (
    JobCancelledError,
    JobFailedError,
    JobTimeoutError,
    RenderError,
)
from videokit.protocol import MediaInput

# -- one job ----------------------------------------------------------------------------------------


def test_completed_job_records_attempt_and_cost() -> None:
    fake = FakeRunPod(lambda n: [{"status": "IN_PROGRESS"}, done()])
    ctx = JobContext(scene="s", stage="animate")
    result = run(backend(fake, FakeClock()), ctx)
    assert result.frames == 9 and result.last_frame.decode() == PNG
    [attempt] = ctx.attempts
    assert attempt.status == "COMPLETED" and attempt.execution_ms == 2000
    assert attempt.cost_usd == pytest.approx(2.0 * PRICE) and not attempt.cost_estimated
    body = fake.bodies[0]
    assert body["policy"] == {"executionTimeout": 900_000, "ttl": 3_600_000}
    assert body["input"]["prompt"] == "p"


def test_transient_failure_is_retried_in_place_without_sending_the_input_again() -> None:
    fake = FakeRunPod(
        lambda n: (
            [
                {
                    "status": "FAILED",
                    "error": "CUDA out of memory. Tried to allocate",
                    "executionTime": 700,
                }
            ]
            if n == 0
            else [done()]
        )
    )
    ctx = JobContext(scene="s", stage="animate")
    run(backend(fake, FakeClock()), ctx)
    assert [(a.job_id, a.status) for a in ctx.attempts] == [
        ("job-1", "FAILED"),
        ("job-1", "COMPLETED"),
    ]
    assert "out of memory" in (ctx.attempts[0].error or "")
    assert ctx.attempts[0].cost_usd == pytest.approx(0.7 * PRICE)  # the failed run was billed
    assert fake.routes("retry") == ["job-1"] and len(fake.routes("run")) == 1


def test_a_retry_the_endpoint_refuses_falls_back_to_a_fresh_submission() -> None:
    fake = FakeRunPod(
        lambda n: [{"status": "FAILED", "error": "worker lost"}] if n == 0 else [done()]
    )
    fake.hooks["retry"] = lambda r: httpx.Response(404, json={"error": "retry expired"})
    ctx = JobContext(scene="s", stage="animate")
    run(backend(fake, FakeClock()), ctx)
    assert [(a.job_id, a.status) for a in ctx.attempts] == [
        ("job-1", "FAILED"),
        ("job-2", "COMPLETED"),
    ]


def test_bad_input_failure_is_not_resubmitted_and_names_no_scene() -> None:
    fake = FakeRunPod(
        lambda n: [{"status": "FAILED", "error": "invalid input: frames must be 4k+1"}]
    )
    ctx = JobContext(scene="s0", stage="animate")
    with pytest.raises(JobFailedError, match="invalid input") as caught:
        run(backend(fake, FakeClock()), ctx)
    assert len(fake.jobs) == 1 and fake.routes("retry") == []
    # The runner prefixes the scene (RenderError); the backend's text must not repeat it.
    text = str(RenderError({"s0": caught.value}))
    assert text.count("s0") == 1 and "scene 's0'" in text


def completed_with(output: Any) -> dict[str, Any]:
    return {"status": "COMPLETED", "output": output, "executionTime": 500}


def test_a_completed_job_with_a_deterministic_error_is_not_paid_again() -> None:
    # Handlers that return {"error": ...} end COMPLETED on some runtimes: the error decides.
    fake = FakeRunPod(lambda n: [completed_with({"error": "invalid input: frames must be 4k+1"})])
    ctx = JobContext(scene="s", stage="animate")
    with pytest.raises(JobFailedError, match="frames must be 4k\\+1") as caught:
        run(backend(fake, FakeClock()), ctx)
    assert caught.value.job_id == "job-1" and not caught.value.transient
    assert fake.created == 1 and fake.routes("retry") == []
    [attempt] = ctx.attempts
    assert attempt.status == "COMPLETED" and "frames must be 4k+1" in (attempt.error or "")
    assert attempt.cost_usd == pytest.approx(0.5 * PRICE)


def test_a_completed_job_with_a_transient_error_or_no_output_is_submitted_again() -> None:
    outputs = [{"error": "CUDA out of memory. Tried to allocate 2 GiB"}, None, OUTPUT]
    fake = FakeRunPod(lambda n: [completed_with(outputs[n])])
    ctx = JobContext(scene="s", stage="animate")
    result = run(backend(fake, FakeClock()), ctx)
    assert result.frames == 9 and fake.created == 3
    errors = [a.error or "" for a in ctx.attempts]
    assert "out of memory" in errors[0] and "without an output" in errors[1] and not errors[2]


def test_stuck_in_queue_is_cancelled_and_resubmitted() -> None:
    fake = FakeRunPod(lambda n: [{"status": "IN_QUEUE"}] if n == 0 else [done()])
    fake.after_cancel = {"status": "CANCELLED"}  # it never started: no timings
    clock = FakeClock()
    ctx = JobContext(scene="s", stage="animate")
    run(backend(fake, clock, queue_timeout_s=60), ctx)
    assert fake.routes("cancel") == ["job-1"]
    assert [a.status for a in ctx.attempts] == ["CANCELLED", "COMPLETED"]
    assert ctx.attempts[0].cost_usd == 0.0 and ctx.attempts[0].cost_estimated
    assert 60 <= clock.now < 80


def test_a_stuck_job_whose_cancel_is_not_confirmed_is_not_submitted_twice() -> None:
    # Both could run (and bill) otherwise, and the first would be forgotten.
    fake = FakeRunPod(lambda n: [{"status": "IN_QUEUE"}] if n == 0 else [done()])
    fake.hooks["cancel"] = lambda r: server_error(503)
    ctx = JobContext(scene="s", stage="animate")
    with pytest.raises(JobTimeoutError, match="could not be cancelled") as caught:
        run(backend(fake, FakeClock(), queue_timeout_s=60), ctx)
    assert caught.value.job_id == "job-1" and "re-attaches" in (caught.value.hint or "")
    assert fake.created == 1 and fake.routes("cancel")
    [attempt] = ctx.attempts
    # As last seen: the runner keeps the stage 'submitted', and the next render re-attaches.
    assert attempt.status == "IN_QUEUE" and "not confirmed" in (attempt.error or "")


def test_a_stuck_job_whose_cancel_reply_is_lost_is_confirmed_by_its_status() -> None:
    # The cancel goes through every time, but its reply never arrives (a dropped connection):
    # the status then says CANCELLED, so the job is over and the scene is not given up.
    fake = FakeRunPod(lambda n: [{"status": "IN_QUEUE"}] if n == 0 else [done()])
    fake.after_cancel = {"status": "CANCELLED"}

    def cancelled_then_dropped(request: httpx.Request) -> httpx.Response:
        job_id = request.url.path.rsplit("/", 1)[-1]
        fake.jobs[job_id] = [dict(fake.after_cancel)]
        raise httpx.RemoteProtocolError("peer closed connection", request=request)

    fake.hooks["cancel"] = cancelled_then_dropped
    ctx = JobContext(scene="s", stage="animate")
    run(backend(fake, FakeClock(), queue_timeout_s=60), ctx)
    assert len(fake.routes("cancel")) >= 2 and fake.created == 2
    assert [a.status for a in ctx.attempts] == ["CANCELLED", "COMPLETED"]
    assert "not confirmed" not in (ctx.attempts[0].error or "")


@pytest.mark.parametrize(
    ("error", "read_after"),
    [
        # It may have reached the endpoint: a status read says whether it did (here: still queued).
        (httpx.ReadTimeout, True),
        # It never reached the endpoint: a status read would fail the same way, so none is made.
        (httpx.ConnectError, False),
    ],
)
def test_a_stuck_job_still_queued_after_an_unanswered_cancel_is_not_submitted_twice(
    error: type[httpx.TransportError], read_after: bool
) -> None:
    fake = FakeRunPod(lambda n: [{"status": "IN_QUEUE"}] if n == 0 else [done()])

    def unanswered(request: httpx.Request) -> httpx.Response:
        raise error("no reply", request=request)

    fake.hooks["cancel"] = unanswered
    ctx = JobContext(scene="s", stage="animate")
    with pytest.raises(JobTimeoutError, match="could not be cancelled"):
        run(backend(fake, FakeClock(), queue_timeout_s=60), ctx)
    assert fake.created == 1
    [attempt] = ctx.attempts
    assert attempt.status == "IN_QUEUE" and "not confirmed" in (attempt.error or "")
    routes = [route_of(path) for _, path in fake.calls]
    after_cancel = set(routes[routes.index("cancel") :])
    assert after_cancel == ({"cancel", "status"} if read_after else {"cancel"}), after_cancel


def test_a_stuck_warm_up_whose_cancel_is_not_confirmed_says_so() -> None:
    fake = FakeRunPod(lambda n: [{"status": "IN_QUEUE"}])
    fake.hooks["cancel"] = lambda r: httpx.Response(403, json={"error": "forbidden"})
    b = backend(fake, FakeClock(), warmup=True, queue_timeout_s=30)
    ctx = JobContext(scene="(warm-up)", stage="animate")

    async def go() -> None:
        try:
            await b.warm_up("animate", ctx)
        finally:
            await b.aclose()

    with pytest.raises(JobTimeoutError, match="could not be cancelled"):
        asyncio.run(go())
    assert fake.created == 1 and [a.status for a in ctx.attempts] == ["IN_QUEUE"]


def test_execution_deadline_cancels_the_remote_job_and_records_its_cost() -> None:
    fake = FakeRunPod(lambda n: [{"status": "IN_PROGRESS"}])
    fake.after_cancel = {"status": "CANCELLED", "executionTime": 115_000, "delayTime": 300}
    clock = FakeClock()
    ctx = JobContext(scene="s", stage="animate")
    with pytest.raises(JobTimeoutError) as caught:
        run(backend(fake, clock, execution_timeout_s=100), ctx)
    assert caught.value.job_id == "job-1"
    assert "VIDEOKIT_EXECUTION_TIMEOUT" in (caught.value.hint or "")
    assert fake.routes("cancel") == ["job-1"]
    # The final status was read after the cancel: the exact execution time is billed.
    assert fake.calls[-1] == ("GET", "/v2/ep/status/job-1")
    [attempt] = ctx.attempts
    assert attempt.status == "TIMED_OUT" and attempt.execution_ms == 115_000
    assert attempt.cost_usd == pytest.approx(115 * PRICE) and not attempt.cost_estimated


def test_server_side_timeout_is_a_timeout_error_naming_the_variable() -> None:
    fake = FakeRunPod(lambda n: [{"status": "TIMED_OUT", "executionTime": 600000}])
    with pytest.raises(JobTimeoutError, match="execution timeout") as caught:
        run(backend(fake, FakeClock()), JobContext(scene="s", stage="animate"))
    assert "VIDEOKIT_EXECUTION_TIMEOUT" in (caught.value.hint or "")


def test_expired_result_is_resubmitted_with_an_estimated_cost() -> None:
    fake = FakeRunPod(
        lambda n: [{"status": "IN_PROGRESS"}, {"status": "404"}] if n == 0 else [done()]
    )
    ctx = JobContext(scene="s", stage="animate")
    run(backend(fake, FakeClock()), ctx)
    assert [a.status for a in ctx.attempts] == ["LOST", "COMPLETED"]
    assert ctx.attempts[0].cost_estimated


# -- re-attaching -------------------------------------------------------------------------------------


def test_resume_reattaches_without_submitting() -> None:
    fake = FakeRunPod(lambda n: [done()])
    fake.jobs["old-job"] = [{"status": "IN_PROGRESS"}, done()]
    submitted: list[str] = []

    async def on_submitted(job_id: str) -> None:
        submitted.append(job_id)

    ctx = JobContext(scene="s", stage="animate", resume_job_id="old-job", on_submitted=on_submitted)
    run(backend(fake, FakeClock()), ctx)
    assert submitted == ["old-job"]
    assert fake.routes("run") == []


@pytest.mark.parametrize(
    "found",
    [
        {"status": "CANCELLED", "executionTime": 4000},
        {"status": "FAILED", "error": "invalid input: nothing transient about it"},
        {"status": "TIMED_OUT", "executionTime": 900_000},
        {"status": "404"},
    ],
    ids=["cancelled", "failed", "timed-out", "gone"],
)
def test_reattaching_to_a_dead_job_submits_it_again(found: dict[str, Any]) -> None:
    # What a re-run after Ctrl-C finds: the earlier render's job, cancelled (or otherwise ended).
    fake = FakeRunPod(lambda n: [{"status": "IN_PROGRESS"}, done()])
    fake.jobs["old-job"] = [found]
    ctx = JobContext(scene="s", stage="animate", resume_job_id="old-job")
    result = run(backend(fake, FakeClock(), job_attempts=1), ctx)
    assert result.frames == 9
    assert [a.job_id for a in ctx.attempts] == ["old-job", "job-1"]
    assert ctx.attempts[-1].status == "COMPLETED"
    old = ctx.attempts[0]
    assert old.status == ("LOST" if found["status"] == "404" else found["status"])
    assert old.error and ("re-attaching" in old.error)
    assert fake.routes("run") == ["run"] and fake.routes("cancel") == []


class RecordingStorage:
    """A real S3Storage (presigning needs no network) that records what the backend asks of it;
    ``gate``, while cleared, holds every call as a slow upload would."""

    def __init__(self) -> None:
        self.real = storage()
        self.calls: list[str] = []
        self.gate = threading.Event()
        self.gate.set()

    def output_target(self, name: str, *, content_type: str) -> Any:
        self.calls.append(f"output_target {name}")
        self.gate.wait(10)
        return self.real.output_target(name, content_type=content_type)

    def upload_input(self, data: bytes, *, content_type: str) -> MediaInput:
        self.calls.append("upload_input")
        self.gate.wait(10)
        return self.real.upload_input(data, content_type=content_type)


def test_reattaching_prepares_no_payload_unless_it_must_submit_again() -> None:
    fake = FakeRunPod(lambda n: [done()])
    fake.jobs["old-job"] = [{"status": "IN_PROGRESS"}, done()]
    store = RecordingStorage()
    ctx = JobContext(scene="s", stage="animate", resume_job_id="old-job")
    run(backend(fake, FakeClock(), storage=store), ctx)
    assert store.calls == [] and fake.routes("run") == []
    assert [(a.job_id, a.status) for a in ctx.attempts] == [("old-job", "COMPLETED")]

    # Found dead: now the payload is needed, outputs by presigned URL as usual.
    dead = FakeRunPod(lambda n: [done()])
    dead.jobs["old-job"] = [{"status": "CANCELLED"}]
    ctx = JobContext(scene="s", stage="animate", resume_job_id="old-job")
    run(backend(dead, FakeClock(), storage=store), ctx)
    assert store.calls == ["output_target clip.mp4", "output_target last.png"]
    assert "X-Amz-Signature" in json.dumps(dead.bodies[0]["input"]["outputs"])
    assert [a.job_id for a in ctx.attempts] == ["old-job", "job-1"]


def test_ctrl_c_early_in_a_resumed_job_leaves_the_reattached_attempt_recorded() -> None:
    # Storage as slow as a big upload: before the fix, the re-attach waited behind it.
    fake = FakeRunPod(lambda n: [done()])
    fake.jobs["old-job"] = [{"status": "IN_PROGRESS"}]
    fake.after_cancel = {"status": "CANCELLED", "executionTime": 3000}
    store = RecordingStorage()
    store.gate.clear()
    b = backend(fake, FakeClock(), storage=store)
    ctx = JobContext(scene="s", stage="animate", resume_job_id="old-job")

    async def go() -> None:
        task = asyncio.create_task(b.animate(REQUEST, ctx))
        while not (store.calls or fake.routes("status")):
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await b.aclose()

    try:
        asyncio.run(go())
    finally:
        store.gate.set()
    assert store.calls == []
    [attempt] = ctx.attempts
    assert (attempt.job_id, attempt.status, attempt.execution_ms) == ("old-job", "CANCELLED", 3000)


def test_a_job_cancelled_by_someone_else_during_the_wait_is_a_cancelled_error() -> None:
    fake = FakeRunPod(lambda n: [done()])
    fake.jobs["old-job"] = [{"status": "IN_PROGRESS"}, {"status": "CANCELLED"}]
    ctx = JobContext(scene="s", stage="animate", resume_job_id="old-job")
    with pytest.raises(JobCancelledError, match="cancelled on the endpoint"):
        run(backend(fake, FakeClock()), ctx)
    assert fake.routes("run") == []

    fresh = FakeRunPod(lambda n: [{"status": "IN_QUEUE"}, {"status": "CANCELLED"}])
    with pytest.raises(JobCancelledError):
        run(backend(fresh, FakeClock()), JobContext(scene="s", stage="animate"))
    assert len(fresh.routes("run")) == 1


# -- status reads: retried until the job's deadline ------------------------------------------------


def test_a_503_storm_longer_than_the_retry_count_does_not_abandon_the_job() -> None:
    clock = FakeClock()
    fake = FakeRunPod(lambda n: [{"status": "IN_PROGRESS"}, done()])
    storm_until = 60.0  # fake seconds of 503s: far more than a fixed 6 tries would cover

    def storm(request: httpx.Request) -> httpx.Response | None:
        return server_error(503) if clock.now < storm_until else None

    fake.hooks["status"] = storm
    ctx = JobContext(scene="s", stage="animate")
    result = run(backend(fake, clock), ctx)
    assert result.frames == 9 and [a.status for a in ctx.attempts] == ["COMPLETED"]
    assert len(fake.routes("status")) > 10 and clock.now >= storm_until
    assert fake.routes("cancel") == [] and len(fake.routes("run")) == 1


def test_status_reads_honour_retry_after() -> None:
    clock = FakeClock()
    fake = FakeRunPod(lambda n: [done()])
    told: list[int] = []

    def limited(request: httpx.Request) -> httpx.Response | None:
        if not told:
            told.append(1)
            return httpx.Response(429, json={"error": "slow down"}, headers={"Retry-After": "20"})
        return None

    fake.hooks["status"] = limited
    run(backend(fake, clock), JobContext(scene="s", stage="animate"))
    assert any(20 <= s <= 20.3 for s in clock.sleeps), clock.sleeps


def test_status_unreadable_until_the_queue_deadline_is_cancelled_and_resubmitted() -> None:
    """A job whose status cannot be read until its queue deadline is handled as one stuck in
    the queue: cancelled, and submitted again once the cancel is confirmed (not the end of the
    scene)."""
    clock = FakeClock()
    fake = FakeRunPod(lambda n: [{"status": "IN_QUEUE"}] if n == 0 else [done()])
    fake.after_cancel = {"status": "CANCELLED"}
    fake.hooks["status"] = lambda r: server_error(502) if r.url.path.endswith("job-1") else None
    ctx = JobContext(scene="s", stage="animate")
    run(backend(fake, clock, queue_timeout_s=120), ctx)
    assert 120 <= clock.now < 140  # job-1 was read for its whole queue deadline
    assert fake.routes("cancel") == ["job-1"]
    first, second = ctx.attempts
    assert first.status == "CANCELLED" and first.error and "status unreadable" in first.error
    assert second.job_id == "job-2" and second.status == "COMPLETED"


def test_status_never_readable_fails_after_every_submission_was_cancelled() -> None:
    clock = FakeClock()
    fake = FakeRunPod(lambda n: [{"status": "IN_QUEUE"}])
    fake.after_cancel = {"status": "CANCELLED"}
    fake.hooks["status"] = lambda r: server_error(502)
    ctx = JobContext(scene="s", stage="animate")
    with pytest.raises(JobFailedError, match="status unreadable"):
        run(backend(fake, clock, queue_timeout_s=120, job_attempts=2), ctx)
    assert fake.routes("cancel") == ["job-1", "job-2"]
    assert [a.status for a in ctx.attempts] == ["CANCELLED", "CANCELLED"]


# -- cancelling ------------------------------------------------------------------------------------


def cancelled_mid_run(
    fake: FakeRunPod, clock: FakeClock, *, run_for: float = 10.0, **config: Any
) -> JobContext:
    """Cancel our task (as Ctrl-C does) after the job has been seen running for ``run_for``."""
    b = backend(fake, clock, **config)
    ctx = JobContext(scene="s", stage="animate")

    async def go() -> None:
        task = asyncio.create_task(b.animate(REQUEST, ctx))
        while clock.now < run_for or not fake.routes("status"):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await b.aclose()

    asyncio.run(go())
    return ctx


def test_cancelling_the_task_cancels_the_remote_job_and_records_its_cost() -> None:
    fake = FakeRunPod(lambda n: [{"status": "IN_PROGRESS"}])
    fake.after_cancel = {"status": "CANCELLED", "executionTime": 9800, "delayTime": 200}
    ctx = cancelled_mid_run(fake, FakeClock())
    assert fake.routes("cancel") == ["job-1"]
    [attempt] = ctx.attempts
    assert attempt.status == "CANCELLED" and attempt.execution_ms == 9800
    assert attempt.cost_usd == pytest.approx(9.8 * PRICE) and not attempt.cost_estimated


def test_without_reported_timings_the_cost_is_estimated_from_what_was_observed() -> None:
    fake = FakeRunPod(lambda n: [{"status": "IN_PROGRESS"}])
    fake.after_cancel = {"status": "CANCELLED"}
    clock = FakeClock()
    ctx = cancelled_mid_run(fake, clock, run_for=10.0)
    [attempt] = ctx.attempts
    assert attempt.status == "CANCELLED" and attempt.cost_estimated
    assert attempt.execution_ms is None
    # Seen IN_PROGRESS from (about) the first poll until the cancel.
    assert attempt.cost_usd == pytest.approx(clock.now * PRICE, rel=0.1)
    assert attempt.cost_usd > 0


def test_the_cancel_is_retried_through_transient_errors() -> None:
    fake = FakeRunPod(lambda n: [{"status": "IN_PROGRESS"}])
    answers = [server_error(503), server_error(429, **{"Retry-After": "0"})]
    fake.hooks["cancel"] = lambda r: answers.pop(0) if answers else None
    ctx = cancelled_mid_run(fake, FakeClock())
    assert fake.routes("cancel") == ["job-1"] * 3
    assert ctx.attempts[0].status == "CANCELLED"


def test_a_cancel_that_never_gets_through_gives_up_quickly_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeRunPod(lambda n: [{"status": "IN_PROGRESS"}])
    fake.hooks["cancel"] = lambda r: server_error(503)
    clock = FakeClock()
    with caplog.at_level(logging.WARNING, logger="videokit.runpod"):
        ctx = cancelled_mid_run(fake, clock, run_for=10.0)
    tries = fake.routes("cancel")
    assert len(tries) >= 2 and clock.now - 10.0 < 3.0  # within the ~2 s cancel deadline
    [attempt] = ctx.attempts
    # Not confirmed: the job may still run, so it is not marked CANCELLED (a re-run re-attaches).
    assert attempt.status == "IN_PROGRESS"
    assert attempt.error and "not confirmed" in attempt.error and attempt.cost_estimated
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("job-1" in w and "could not cancel" in w for w in warnings), warnings


def test_a_refused_cancel_is_reported_not_ignored(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeRunPod(lambda n: [{"status": "IN_PROGRESS"}])
    fake.hooks["cancel"] = lambda r: httpx.Response(403, json={"error": "forbidden"})
    with caplog.at_level(logging.WARNING, logger="videokit.runpod"):
        ctx = cancelled_mid_run(fake, FakeClock())
    assert len(fake.routes("cancel")) == 1  # a 403 is final: not retried
    assert ctx.attempts[0].status == "IN_PROGRESS"
    assert any("job-1" in r.getMessage() and "HTTP 403" in r.getMessage() for r in caplog.records)


def test_a_failure_to_record_the_job_id_still_cancels_the_job() -> None:
    # The job exists once `run` answered: if recording its id fails (a full disk under the
    # manifest), nobody would ever re-attach to it, so it must not keep running.
    fake = FakeRunPod(lambda n: [{"status": "IN_QUEUE"}])

    async def on_submitted(job_id: str) -> None:
        raise OSError("No space left on device")

    ctx = JobContext(scene="s", stage="animate", on_submitted=on_submitted)
    with pytest.raises(OSError, match="No space"):
        run(backend(fake, FakeClock()), ctx)
    assert fake.routes("cancel") == ["job-1"] and ctx.attempts[0].status == "CANCELLED"
