"""The RunPod backend's job logic with an injected transport and clock: deadlines, resubmission,
re-attachment, cancellation and cost accounting, without sleeping for real.

``FakeRunPod`` answers RunPod's routes from a script (each job attempt's statuses, in order, as
they are polled); ``hooks`` make one route misbehave (503 storms, 429 with Retry-After, refused
cancels, a lost ``run`` reply) the way the real API can.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import make_image
from tests.endpoints import serve_workers
from videokit.backends.base import JobContext
from videokit.backends.retry import RetryPolicy
from videokit.backends.runpod import (
    DEFAULT_BASE_URL,
    RUN_PAYLOAD_LIMIT,
    Endpoint,
    RunPodBackend,
    RunPodConfig,
    is_transient_job_error,
)
from videokit.config import Secret
from videokit.costs import GPU_PRICE_PER_SECOND, CostModel
from videokit.errors import (
    ConfigError,
    EndpointError,
    JobCancelledError,
    JobFailedError,
    JobTimeoutError,
    RenderError,
)
from videokit.protocol import AnimateRequest, EditRequest, MediaInput
from videokit.storage import S3Storage, StorageConfig

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
PRICE = GPU_PRICE_PER_SECOND["ADA_80_PRO"]


def media(data: bytes, kind: str) -> dict[str, Any]:
    return {
        "base64": base64.b64encode(data).decode(),
        "content_type": kind,
        "size_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


OUTPUT = {
    "video": media(b"mp4-bytes", "video/mp4"),
    "last_frame": media(PNG, "image/png"),
    "seed": 1,
    "frames": 9,
    "fps": 8,
    "width": 128,
    "height": 128,
    "inference_ms": 2000,
    "model": "fake",
}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


Hook = Callable[[httpx.Request], httpx.Response | None]


def route_of(path: str) -> str:
    for route in ("run", "status", "cancel", "retry", "stream", "health", "purge-queue"):
        if path.endswith(f"/{route}") or f"/{route}/" in path:
            return route
    raise AssertionError(f"unexpected path {path}")


class FakeRunPod:
    """Answers RunPod's API from a script: each job attempt's statuses, in order, as polled."""

    def __init__(self, script: Callable[[int], list[dict[str, Any]]]) -> None:
        self.script = script
        self.attempts = 0
        self.created = 0
        self.jobs: dict[str, list[dict[str, Any]]] = {}
        self.calls: list[tuple[str, str]] = []
        self.bodies: list[dict[str, Any]] = []
        self.hooks: dict[str, Hook] = {}
        # What a cancelled job reports afterwards (RunPod gives its timings when it had started).
        self.after_cancel: dict[str, Any] = {"status": "CANCELLED", "executionTime": 1500}

    def create(self, request: httpx.Request) -> str:
        self.created += 1
        job_id = f"job-{self.created}"
        self.jobs[job_id] = list(self.script(self.attempts))
        self.attempts += 1
        self.bodies.append(json.loads(request.content))
        return job_id

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        route = route_of(path)
        self.calls.append((request.method, path))
        hook = self.hooks.get(route)
        if hook is not None:
            answer = hook(request)
            if answer is not None:
                return answer
        if route == "run":
            return httpx.Response(200, json={"id": self.create(request), "status": "IN_QUEUE"})
        job_id = path.rsplit("/", 1)[-1]
        if route == "cancel":
            if job_id not in self.jobs:
                return httpx.Response(404, json={"error": "job not found"})
            self.jobs[job_id] = [dict(self.after_cancel)]
            return httpx.Response(200, json={"id": job_id, "status": "CANCELLED"})
        states = self.jobs.get(job_id)
        if states is None or states[0].get("status") == "404":
            return httpx.Response(404, json={"error": "job not found"})
        if route == "retry":
            if states[0].get("status") not in ("FAILED", "TIMED_OUT"):
                return httpx.Response(400, json={"error": "not retryable"})
            self.jobs[job_id] = list(self.script(self.attempts))
            self.attempts += 1
            return httpx.Response(200, json={"id": job_id, "status": "IN_QUEUE"})
        status = states.pop(0) if len(states) > 1 else states[0]
        if status.get("status") == "404":
            return httpx.Response(404, json={"error": "job not found"})
        return httpx.Response(200, json={"id": job_id, **status})

    def routes(self, route: str) -> list[str]:
        return [p.rsplit("/", 1)[-1] for _, p in self.calls if route_of(p) == route]


def backend(
    fake: FakeRunPod, clock: FakeClock, *, storage: Any = None, **config: Any
) -> RunPodBackend:
    cfg = RunPodConfig(
        api_key=Secret("k"),
        endpoints={"animate": config.pop("endpoint", Endpoint("ep", gpu="ADA_80_PRO"))},
        warmup=config.pop("warmup", False),
        **config,
    )
    return RunPodBackend(
        cfg,
        storage=storage,
        transport=httpx.MockTransport(fake),
        clock=clock,
        sleep=clock.sleep,
        retry=RetryPolicy(attempts=3, sleep=clock.sleep, clock=clock),
    )


REQUEST = AnimateRequest(
    image=MediaInput.from_bytes(PNG), prompt="p", seed=1, width=128, height=128, frames=9
)


def run(b: RunPodBackend, ctx: JobContext) -> Any:
    async def go() -> Any:
        try:
            return await b.animate(REQUEST, ctx)
        finally:
            await b.aclose()

    return asyncio.run(go())


def done(execution_ms: int = 2000, delay_ms: int = 100) -> dict[str, Any]:
    return {
        "status": "COMPLETED",
        "output": OUTPUT,
        "executionTime": execution_ms,
        "delayTime": delay_ms,
    }


def server_error(status: int = 503, **headers: str) -> httpx.Response:
    return httpx.Response(status, text=f"{status} (test)", headers=headers)


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


# -- lost replies, payloads, costs --------------------------------------------------------------


def test_a_lost_run_reply_is_an_unknown_attempt_with_an_estimated_cost() -> None:
    fake = FakeRunPod(lambda n: [done()])
    lost: list[str] = []

    def drop(request: httpx.Request) -> httpx.Response | None:
        if not lost:
            lost.append(fake.create(request))  # the job exists; the reply never arrives
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        return None

    fake.hooks["run"] = drop
    ctx = JobContext(scene="s", stage="animate")
    run(backend(fake, FakeClock()), ctx)
    unknown, completed = ctx.attempts
    assert (unknown.status, unknown.job_id, completed.status) == ("UNKNOWN", "unknown", "COMPLETED")
    estimate = CostModel().estimate_seconds(REQUEST)
    assert unknown.cost_estimated and unknown.cost_usd == pytest.approx(estimate * PRICE)


@pytest.mark.parametrize("status", [502, 504])
def test_a_gateway_error_on_run_is_an_unknown_attempt(status: int) -> None:
    """A 502/504 may come from a gateway after the endpoint created the job."""
    fake = FakeRunPod(lambda n: [done()])
    failed: list[int] = []

    def gateway(request: httpx.Request) -> httpx.Response | None:
        if not failed:
            failed.append(status)
            return server_error(status)
        return None

    fake.hooks["run"] = gateway
    ctx = JobContext(scene="s", stage="animate")
    run(backend(fake, FakeClock()), ctx)
    unknown, completed = ctx.attempts
    assert (unknown.job_id, unknown.status, completed.status) == ("unknown", "UNKNOWN", "COMPLETED")
    assert unknown.cost_estimated and unknown.error and f"HTTP {status}" in unknown.error


def test_a_503_on_run_is_not_an_unknown_job() -> None:
    fake = FakeRunPod(lambda n: [done()])
    failed: list[int] = []

    def busy(request: httpx.Request) -> httpx.Response | None:
        if not failed:
            failed.append(503)
            return server_error(503)
        return None

    fake.hooks["run"] = busy
    ctx = JobContext(scene="s", stage="animate")
    run(backend(fake, FakeClock()), ctx)
    assert [a.status for a in ctx.attempts] == ["COMPLETED"]


def test_an_unknown_attempt_is_priced_at_the_learned_run_time_not_the_model_estimate() -> None:
    # The first job teaches the stage's run time (2 s); a later lost `run` reply is priced at it,
    # not at the cost model's estimate for a full-size job.
    fake = FakeRunPod(lambda n: [done(2000, 0)])
    b = backend(fake, FakeClock())
    dropped: list[bool] = []

    def drop_second(request: httpx.Request) -> httpx.Response | None:
        if fake.created == 1 and not dropped:
            dropped.append(True)
            fake.create(request)
            raise httpx.ReadTimeout("reply lost")
        return None

    fake.hooks["run"] = drop_second

    async def two() -> JobContext:
        await b.animate(REQUEST, JobContext(scene="a", stage="animate"))
        ctx = JobContext(scene="b", stage="animate")
        await b.animate(REQUEST, ctx)
        await b.aclose()
        return ctx

    ctx = asyncio.run(two())
    unknown = ctx.attempts[0]
    assert unknown.status == "UNKNOWN" and unknown.cost_estimated
    assert unknown.cost_usd == pytest.approx(2.0 * PRICE)


def test_a_lost_job_never_seen_running_is_priced_at_what_it_could_have_run() -> None:
    # Submitted, then found gone (its result expired while the client slept): it may have run
    # for up to the time it existed, and no longer than such a job runs. Never $0, and marked.
    clock = FakeClock()
    fake = FakeRunPod(lambda n: [{"status": "404"}] if n == 0 else [done()])

    def late(request: httpx.Request) -> httpx.Response | None:
        clock.now += 50.0  # the first read comes 50 s after the submission
        return None

    fake.hooks["status"] = late
    ctx = JobContext(scene="s", stage="animate")
    run(backend(fake, clock), ctx)
    lost = ctx.attempts[0]
    assert lost.status == "LOST" and lost.cost_estimated
    estimate = CostModel().estimate_seconds(REQUEST)
    assert lost.cost_usd == pytest.approx(min(50.0, estimate) * PRICE)
    assert lost.cost_usd > 0


def test_the_last_lost_run_reply_is_recorded_too() -> None:
    # `run` gives up after its last try; that try may have created a job as much as the others.
    fake = FakeRunPod(lambda n: [done()])

    def drop(request: httpx.Request) -> httpx.Response:
        fake.create(request)
        raise httpx.ReadTimeout("timed out waiting for the reply")

    fake.hooks["run"] = drop
    ctx = JobContext(scene="s", stage="animate")
    with pytest.raises(EndpointError, match="could not submit"):
        run(backend(fake, FakeClock()), ctx)
    assert fake.created == 3  # the policy's three tries
    assert [(a.job_id, a.status) for a in ctx.attempts] == [("unknown", "UNKNOWN")] * 3
    assert all(a.cost_estimated and a.cost_usd > 0 for a in ctx.attempts)


def test_a_refused_connection_is_not_an_unknown_job() -> None:
    fake = FakeRunPod(lambda n: [done()])

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    fake.hooks["run"] = refuse
    ctx = JobContext(scene="s", stage="animate")
    with pytest.raises(EndpointError, match="could not submit"):
        run(backend(fake, FakeClock()), ctx)
    assert ctx.attempts == []


def test_a_lost_retry_reply_of_a_job_that_failed_again_is_an_unknown_attempt() -> None:
    fake = FakeRunPod(
        lambda n: [{"status": "FAILED", "error": "worker lost"}] if n < 2 else [done()]
    )

    def lost(request: httpx.Request) -> httpx.Response:
        job_id = request.url.path.rsplit("/", 1)[-1]
        fake.jobs[job_id] = [{"status": "FAILED", "error": "worker lost"}]  # it ran, and failed
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.")

    fake.hooks["retry"] = lost
    ctx = JobContext(scene="s", stage="animate")
    run(backend(fake, FakeClock()), ctx)
    assert [(a.job_id, a.status) for a in ctx.attempts] == [
        ("job-1", "FAILED"),
        ("job-1", "UNKNOWN"),
        ("job-2", "FAILED"),
        ("job-2", "UNKNOWN"),
        ("job-3", "COMPLETED"),
    ]
    assert "reply to `retry` lost" in (ctx.attempts[1].error or "")


def test_a_lost_retry_reply_of_a_job_that_then_completed_uses_its_result() -> None:
    fake = FakeRunPod(lambda n: [{"status": "FAILED", "error": "worker lost"}])

    def lost(request: httpx.Request) -> httpx.Response:
        job_id = request.url.path.rsplit("/", 1)[-1]
        fake.jobs[job_id] = [done()]  # the retry went through and the job finished at once
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.")

    fake.hooks["retry"] = lost
    ctx = JobContext(scene="s", stage="animate")
    result = run(backend(fake, FakeClock()), ctx)
    assert result.frames == 9 and fake.routes("run") == ["run"]
    assert [(a.job_id, a.status) for a in ctx.attempts] == [
        ("job-1", "FAILED"),
        ("job-1", "COMPLETED"),
    ]


def test_payload_over_the_limit_without_storage_is_refused_before_submitting() -> None:
    fake = FakeRunPod(lambda n: [done()])
    big = AnimateRequest(
        image=MediaInput.from_bytes(b"\x89PNG" + b"\0" * 7_600_000), prompt="p", seed=1
    )

    async def go() -> None:
        b = backend(fake, FakeClock())
        try:
            await b.animate(big, JobContext(scene="s", stage="animate"))
        finally:
            await b.aclose()

    # ~10.1 MB of base64: under 10 MiB, over 10 MB (the conservative reading of RunPod's limit).
    with pytest.raises(ConfigError, match="10 MB") as caught:
        asyncio.run(go())
    assert "VIDEOKIT_S3_BUCKET" in (caught.value.hint or "")
    assert fake.calls == []


def storage() -> S3Storage:
    # Building the client opens no connection; check() only needs to know storage exists.
    config = StorageConfig(
        bucket="b", endpoint_url="http://127.0.0.1:9", access_key_id="a", secret_access_key="s"
    )
    return S3Storage(config)


def test_check_refuses_a_render_whose_payloads_are_too_big_before_anything_is_sent() -> None:
    fake = FakeRunPod(lambda n: [done()])
    b = backend(fake, FakeClock())
    b.check({"animate"}, payload_bytes={"animate": 2_000_000})
    # The bound is of the whole job body (the runner's payload_bounds includes the envelope):
    # a body of exactly the limit goes through, a byte more does not.
    b.check({"animate"}, payload_bytes={"animate": RUN_PAYLOAD_LIMIT})
    with pytest.raises(ConfigError) as caught:
        b.check({"animate"}, payload_bytes={"animate": RUN_PAYLOAD_LIMIT + 1})
    message = str(caught.value)
    assert "animate" in message and "10.0 MB" in message and "10 MB limit" in message
    assert "VIDEOKIT_S3_BUCKET" in message and "VIDEOKIT_S3_SECRET_ACCESS_KEY" in message
    with_storage = backend(fake, FakeClock(), storage=storage())
    with_storage.check({"animate"}, payload_bytes={"animate": 50_000_000})
    assert fake.calls == []


def test_delay_is_billed_only_where_the_endpoint_says_so() -> None:
    fake = FakeRunPod(lambda n: [done(execution_ms=2000, delay_ms=8000)])
    ctx = JobContext(scene="s", stage="animate")
    run(backend(fake, FakeClock()), ctx)
    assert ctx.attempts[0].cost_usd == pytest.approx(2.0 * PRICE)
    billed = JobContext(scene="s", stage="animate")
    endpoint = Endpoint("ep", gpu="ADA_80_PRO", bill_delay=True)
    run(backend(fake, FakeClock(), endpoint=endpoint), billed)
    assert billed.attempts[0].cost_usd == pytest.approx(10.0 * PRICE)


def test_an_unknown_gpu_pool_is_a_config_error_naming_the_known_pools() -> None:
    with pytest.raises(ConfigError) as caught:
        backend(FakeRunPod(lambda n: [done()]), FakeClock(), endpoint=Endpoint("ep", gpu="H100"))
    assert "'H100'" in str(caught.value) and "ADA_80_PRO" in str(caught.value)
    assert "VIDEOKIT_GPU_PRICES" in (caught.value.hint or "")


def test_ttl_shorter_than_the_execution_timeout_is_refused() -> None:
    with pytest.raises(ConfigError, match="ttl") as caught:
        RunPodConfig(api_key=None, endpoints={}, ttl_s=60, execution_timeout_s=600)
    assert "VIDEOKIT_TTL" in (caught.value.hint or "")


# -- polling -------------------------------------------------------------------------------------


def test_job_id_is_reported_before_any_status_poll() -> None:
    fake = FakeRunPod(lambda n: [{"status": "IN_PROGRESS"}, done()])
    order: list[str] = []

    async def on_submitted(job_id: str) -> None:
        order.append(f"submitted {job_id} after {len(fake.calls)} calls")

    run(
        backend(fake, FakeClock()),
        JobContext(scene="s", stage="animate", on_submitted=on_submitted),
    )
    assert order == ["submitted job-1 after 1 calls"]


def test_polling_learns_the_job_length_and_stays_cheap() -> None:
    # Each job takes 30 s: after the first, the client sleeps through most of it.
    started: dict[str, float] = {}
    clock = FakeClock()
    fake = FakeRunPod(lambda n: [{"status": "IN_PROGRESS"}])

    def finish(request: httpx.Request) -> httpx.Response | None:
        job_id = request.url.path.rsplit("/", 1)[-1]
        if clock.now - started[job_id] >= 30:
            return httpx.Response(200, json={"id": job_id, **done(30_000, 0)})
        return None

    def submit(request: httpx.Request) -> httpx.Response:
        job_id = fake.create(request)
        started[job_id] = clock.now
        return httpx.Response(200, json={"id": job_id, "status": "IN_QUEUE"})

    fake.hooks["status"] = finish
    fake.hooks["run"] = submit
    b = backend(fake, clock)

    async def go() -> list[float]:
        latencies = []
        for _ in range(3):
            begin = clock.now
            await b.animate(REQUEST, JobContext(scene="s", stage="animate"))
            latencies.append(clock.now - begin - 30)
        await b.aclose()
        return latencies

    latencies = asyncio.run(go())
    polls = fake.routes("status")
    assert latencies[0] < 0.1 * 30 + 0.1  # no history: intervals stay within 10% of elapsed
    assert max(latencies[1:]) < 0.25  # with history: within a short poll of completion
    first = polls.count("job-1")
    assert first < 70 and len(polls) - first <= 20  # ~logarithmic (2 s cap), then a few a job


# -- job state (ctx.on_status) ---------------------------------------------------------------------


def health(**workers: int) -> Hook:
    """A `health` route answering with these worker counts (RunPod's names)."""
    return lambda r: httpx.Response(200, json={"jobs": {"inQueue": 1}, "workers": workers})


@pytest.mark.parametrize(
    ("workers", "expected"),
    [
        ({"initializing": 1}, "cold_start"),  # a worker is booting for it
        ({}, "cold_start"),  # no worker up at all: one has to start
        ({"idle": 1}, "queued"),  # a warm worker will take it
        ({"ready": 1}, "queued"),
        ({"running": 2}, "queued"),  # every worker busy, none booting: its turn will come
        ({"running": 2, "initializing": 1}, "cold_start"),  # scaling up for it
        (None, "queued"),  # health unreadable (404 here): what the endpoint said, no more
    ],
    ids=["initializing", "no-workers", "idle", "ready", "busy", "scaling-up", "unreadable"],
)
def test_a_queued_job_is_queued_or_a_cold_start_from_the_endpoints_health(
    workers: dict[str, int] | None, expected: str
) -> None:
    fake = FakeRunPod(lambda n: [{"status": "IN_QUEUE"}] * 4 + [{"status": "IN_PROGRESS"}, done()])
    if workers is not None:
        fake.hooks["health"] = health(**workers)
    seen: list[str] = []
    ctx = JobContext(scene="s", stage="animate", on_status=seen.append)
    result = run(backend(fake, FakeClock()), ctx)
    assert result.frames == 9
    assert seen == [expected, "running"]  # on changes only: four queued polls, one report
    assert len(fake.routes("health")) == 1  # the queued polls were within 15 s: one read


def test_health_is_read_rarely_while_queued_and_polling_stays_as_it_was() -> None:
    # A minute in the queue: first a cold start, then a worker busy with someone else's job.
    def script(clock: FakeClock, on_status: bool) -> tuple[FakeRunPod, list[str]]:
        fake = FakeRunPod(lambda n: [{"status": "IN_QUEUE"}])

        def status(request: httpx.Request) -> httpx.Response:
            job_id = request.url.path.rsplit("/", 1)[-1]
            if clock.now < 60:
                return httpx.Response(200, json={"id": job_id, "status": "IN_QUEUE"})
            if clock.now < 70:
                return httpx.Response(200, json={"id": job_id, "status": "IN_PROGRESS"})
            return httpx.Response(200, json={"id": job_id, **done(10_000, 60_000)})

        def workers(request: httpx.Request) -> httpx.Response:
            counts = {"initializing": 1} if clock.now < 30 else {"running": 1}
            return httpx.Response(200, json={"workers": counts})

        fake.hooks["status"] = status
        fake.hooks["health"] = workers
        seen: list[str] = []
        ctx = JobContext(scene="s", stage="animate")
        if on_status:
            ctx.on_status = seen.append
        run(backend(fake, clock), ctx)
        return fake, seen

    watched, seen = script(FakeClock(), on_status=True)
    unwatched, _ = script(FakeClock(), on_status=False)
    assert seen == ["cold_start", "queued", "running"]
    reads = len(watched.routes("health"))
    assert 2 <= reads <= 60 / 15 + 1, reads  # re-read while it waits, at most every 15 s
    assert watched.routes("status") == unwatched.routes("status")  # not one poll more
    assert unwatched.routes("health") == []  # nobody listens: no health read at all


def test_each_attempt_reports_its_states_anew() -> None:
    # A transient failure retried in place: the same job id goes back to the queue.
    fake = FakeRunPod(
        lambda n: (
            [{"status": "IN_PROGRESS"}, {"status": "FAILED", "error": "worker lost"}]
            if n == 0
            else [{"status": "IN_QUEUE"}, {"status": "IN_PROGRESS"}, done()]
        )
    )
    fake.hooks["health"] = health(idle=1)
    seen: list[str] = []
    run(backend(fake, FakeClock()), JobContext(scene="s", stage="animate", on_status=seen.append))
    assert seen == ["running", "queued", "running"]
    assert fake.routes("retry") == ["job-1"]


def test_a_reattached_job_already_running_says_so_and_a_streamed_one_too() -> None:
    fake = FakeRunPod(lambda n: [done()])
    fake.jobs["old-job"] = [{"status": "IN_PROGRESS"}, done()]
    seen: list[str] = []
    ctx = JobContext(scene="s", stage="animate", resume_job_id="old-job", on_status=seen.append)
    run(backend(fake, FakeClock()), ctx)
    assert seen == ["running"] and fake.routes("health") == []

    streamed = FakeRunPod(lambda n: [{"status": "IN_QUEUE"}, {"status": "IN_PROGRESS"}, done()])
    streamed.hooks["health"] = health(initializing=1)
    seen = []
    ctx = JobContext(scene="s", stage="animate", on_status=seen.append)
    run(backend(streamed, FakeClock(), endpoint=Endpoint("ep", stream=True)), ctx)
    assert seen == ["cold_start", "running"]


def test_on_a_real_server_a_job_behind_a_busy_worker_is_queued_then_running(
    tmp_path: Path,
) -> None:
    image = make_image(tmp_path / "frame.png", (128, 128)).read_bytes()
    request = AnimateRequest(
        image=MediaInput.from_bytes(image), prompt="drift", seed=3, width=128, height=128, frames=5
    )
    # One worker, jobs of 0.4 s at least: of two jobs submitted together, one waits its turn.
    with serve_workers(min_job_seconds={"animate": 0.4}, concurrency={"animate": 1}) as servers:
        config = RunPodConfig(
            api_key=None, endpoints={"animate": Endpoint(servers.urls["animate"])}, warmup=False
        )
        b = RunPodBackend(config, retry=RetryPolicy(attempts=3))
        seen: dict[str, list[str]] = {"first": [], "second": []}

        async def go() -> None:
            try:
                await asyncio.gather(
                    *(
                        b.animate(
                            request, JobContext(scene=s, stage="animate", on_status=log.append)
                        )
                        for s, log in seen.items()
                    )
                )
            finally:
                await b.aclose()

        asyncio.run(go())
    assert all(states and states[-1] == "running" for states in seen.values()), seen
    assert ["queued", "running"] in seen.values(), seen
    # `videokit serve` has its workers up all the time: never a cold start.
    assert not any("cold_start" in states for states in seen.values())
    assert 1 <= b.stats.requests["health"] <= 2


# -- one backend, several event loops (Pipeline.run() twice, Jupyter) ------------------------------


def timed_jobs(seconds: float) -> tuple[FakeRunPod, dict[str, float]]:
    """Jobs that run ``seconds`` of real time from their submission, then complete."""
    started: dict[str, float] = {}
    fake = FakeRunPod(lambda n: [{"status": "IN_PROGRESS"}])

    def submit(request: httpx.Request) -> httpx.Response:
        job_id = fake.create(request)
        started[job_id] = time.monotonic()
        return httpx.Response(200, json={"id": job_id, "status": "IN_QUEUE"})

    def finish(request: httpx.Request) -> httpx.Response | None:
        job_id = request.url.path.rsplit("/", 1)[-1]
        if time.monotonic() - started[job_id] >= seconds:
            return httpx.Response(200, json={"id": job_id, **done(int(seconds * 1000), 0)})
        return None

    fake.hooks["run"] = submit
    fake.hooks["status"] = finish
    return fake, started


def real_time_backend(fake: FakeRunPod) -> RunPodBackend:
    config = RunPodConfig(api_key=Secret("k"), endpoints={"animate": Endpoint("ep")}, warmup=False)
    return RunPodBackend(config, transport=httpx.MockTransport(fake), retry=RetryPolicy(attempts=3))


def test_a_second_event_loop_polls_at_the_normal_rate_after_a_cancelled_first() -> None:
    # Loop 1 is cancelled while its job polls blind (waiting to learn the job length from a
    # sibling); loop 2 must not inherit anything bound to loop 1.
    fake, _ = timed_jobs(0.4)
    b = real_time_backend(fake)

    async def first() -> None:
        task = asyncio.create_task(b.animate(REQUEST, JobContext(scene="a", stage="animate")))
        while len(fake.routes("status")) < 2:
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await b.aclose()

    asyncio.run(first())
    assert fake.routes("cancel") == ["job-1"]
    problems: list[dict[str, Any]] = []

    async def second() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: problems.append(ctx))
        try:
            await b.animate(REQUEST, JobContext(scene="b", stage="animate"))
        finally:
            await b.aclose()

    begin = time.monotonic()
    asyncio.run(second())
    polls = fake.routes("status").count("job-2")
    assert time.monotonic() - begin >= 0.4
    # ~15 polls at growing intervals; a busy loop makes thousands.
    assert polls <= 40, polls
    assert problems == []


class ClosableTransport(httpx.MockTransport):
    """A MockTransport that counts how often a client closed it."""

    closed = 0

    async def aclose(self) -> None:
        self.closed += 1


def test_asyncio_run_closes_the_client_of_a_backend_nobody_closed() -> None:
    # Pipeline.run() with a backend passed in: the caller never sees the loop to close it in.
    fake = FakeRunPod(lambda n: [done()])
    transport = ClosableTransport(fake)
    clock = FakeClock()
    config = RunPodConfig(api_key=Secret("k"), endpoints={"animate": Endpoint("ep")})
    b = RunPodBackend(config, transport=transport, clock=clock, sleep=clock.sleep)

    async def job() -> None:
        await b.animate(REQUEST, JobContext(scene="s", stage="animate"))

    asyncio.run(job())
    assert transport.closed == 1
    asyncio.run(job())  # and the backend serves the next loop with a client of its own
    assert transport.closed == 2 and fake.created == 2


def test_a_client_left_open_by_a_loop_that_ended_is_reported_not_leaked_silently(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeRunPod(lambda n: [done()])
    transport = ClosableTransport(fake)
    clock = FakeClock()
    config = RunPodConfig(api_key=Secret("k"), endpoints={"animate": Endpoint("ep")})
    b = RunPodBackend(config, transport=transport, clock=clock, sleep=clock.sleep)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(b.animate(REQUEST, JobContext(scene="s", stage="animate")))
    loop.close()  # closed by hand, without asyncio.run()'s shutdown: the client is still open
    assert transport.closed == 0
    with caplog.at_level(logging.WARNING, logger="videokit.runpod"):
        run(b, JobContext(scene="s", stage="animate"))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "await backend.aclose()" in warnings[0], warnings
    assert transport.closed == 1 and fake.created == 2  # the second loop's, by aclose()


# -- credentials: each host gets only its own key -------------------------------------------------

EDIT_OUTPUT = {
    "image": media(PNG, "image/png"),
    "seed": 1,
    "width": 128,
    "height": 128,
    "inference_ms": 900,
    "model": "fake",
}


def mixed_setup(serve_key: str | None) -> tuple[RunPodBackend, list[tuple[str, str | None]]]:
    """Edit on RunPod's cloud, animate on a self-hosted `videokit serve`: (host, Authorization)
    of every request is recorded."""
    seen: list[tuple[str, str | None]] = []

    def script(n: int) -> list[dict[str, Any]]:
        output = EDIT_OUTPUT if n == 0 else OUTPUT  # run_both edits first
        return [{"status": "COMPLETED", "output": output, "executionTime": 1000}]

    fake = FakeRunPod(script)
    fake.hooks["health"] = lambda r: httpx.Response(200, json={"jobs": {}, "workers": {}})

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.host, request.headers.get("authorization")))
        return fake(request)

    config = RunPodConfig(
        api_key=Secret("rpa_RUNPOD"),
        serve_api_key=Secret(serve_key) if serve_key else None,
        endpoints={
            "edit": Endpoint("abc123"),
            "animate": Endpoint("http://gpu-box:8001/v2/animate"),
        },
        warmup=False,
    )
    clock = FakeClock()
    b = RunPodBackend(
        config, transport=httpx.MockTransport(handler), clock=clock, sleep=clock.sleep
    )
    return b, seen


def run_both(b: RunPodBackend) -> None:
    edit = EditRequest(
        images=[MediaInput.from_bytes(PNG)], prompt="p", seed=1, width=128, height=128
    )

    async def go() -> None:
        try:
            await b.edit(edit, JobContext(scene="s", stage="edit"))
            await b.animate(REQUEST, JobContext(scene="s", stage="animate"))
            await b.readiness(["edit", "animate"])
        finally:
            await b.aclose()

    asyncio.run(go())


def test_a_mixed_setup_sends_each_host_only_its_own_key() -> None:
    b, seen = mixed_setup("serve-KEY")
    run_both(b)
    assert {host for host, _ in seen} == {"api.runpod.ai", "gpu-box"}
    assert {auth for host, auth in seen if host == "api.runpod.ai"} == {"Bearer rpa_RUNPOD"}
    assert {auth for host, auth in seen if host == "gpu-box"} == {"Bearer serve-KEY"}


def test_without_a_serve_key_other_hosts_get_no_authorization_at_all() -> None:
    b, seen = mixed_setup(None)
    run_both(b)
    assert {auth for host, auth in seen if host == "gpu-box"} == {None}
    assert {auth for host, auth in seen if host == "api.runpod.ai"} == {"Bearer rpa_RUNPOD"}


@pytest.mark.parametrize(
    ("base_url", "endpoint"),
    [
        ("http://attacker.example/v2", "abc123"),  # a story's base_url
        (DEFAULT_BASE_URL, "https://attacker.example/v2/abc123"),  # a full-URL endpoint
        ("https://api.runpod.ai.attacker.example/v2", "abc123"),
        ("https://api.runpod.ai:8443/v2", "abc123"),
    ],
)
def test_the_runpod_key_never_goes_to_another_host(base_url: str, endpoint: str) -> None:
    seen: list[str | None] = []
    fake = FakeRunPod(lambda n: [done()])

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return fake(request)

    config = RunPodConfig(
        api_key=Secret("rpa_RUNPOD"),
        base_url=base_url,
        endpoints={"animate": Endpoint(endpoint)},
        warmup=False,
    )
    clock = FakeClock()
    b = RunPodBackend(
        config, transport=httpx.MockTransport(handler), clock=clock, sleep=clock.sleep
    )
    run(b, JobContext(scene="s", stage="animate"))
    assert seen and set(seen) == {None}


def test_a_401_from_a_self_hosted_endpoint_names_the_serve_key() -> None:
    fake = FakeRunPod(lambda n: [done()])
    fake.hooks["run"] = lambda r: httpx.Response(401, json={"error": "unauthorized"})
    config = RunPodConfig(
        api_key=Secret("rpa_RUNPOD"),
        endpoints={"animate": Endpoint("http://gpu-box:8001/v2/animate")},
        warmup=False,
    )
    clock = FakeClock()
    b = RunPodBackend(config, transport=httpx.MockTransport(fake), clock=clock, sleep=clock.sleep)
    with pytest.raises(EndpointError, match="401") as caught:
        run(b, JobContext(scene="s", stage="animate"))
    assert "VIDEOKIT_SERVE_API_KEY" in (caught.value.hint or "")


def test_runpods_api_over_plain_http_is_refused() -> None:
    with pytest.raises(ConfigError, match="https only") as caught:
        RunPodConfig(
            api_key=Secret("k"),
            base_url="http://api.runpod.ai/v2",
            endpoints={"edit": Endpoint("abc123")},
        )
    assert "VIDEOKIT_EDIT_ENDPOINT" in (caught.value.hint or "")


# -- warm-up ---------------------------------------------------------------------------------------


def test_warm_up_is_recorded_waited_for_polled_slowly_and_billed() -> None:
    fake = FakeRunPod(
        lambda n: (
            [{"status": "IN_QUEUE"}] * 3
            + [{"status": "COMPLETED", "executionTime": 40, "delayTime": 45_000}]
        )
    )
    clock = FakeClock()
    b = backend(fake, clock, warmup=True, endpoint=Endpoint("ep", bill_delay=True))
    reported: list[str] = []

    async def on_submitted(job_id: str) -> None:
        reported.append(job_id)

    ctx = JobContext(scene="(warm-up)", stage="animate", on_submitted=on_submitted)

    async def go() -> None:
        await b.warm_up("animate", ctx)
        await b.aclose()

    asyncio.run(go())
    assert fake.bodies[0]["input"] == {"warmup": True} and reported == ["job-1"]
    [attempt] = ctx.attempts
    assert attempt.status == "COMPLETED"
    assert attempt.cost_usd == pytest.approx((0.04 + 45) * PRICE)  # cold start billed here
    assert len(fake.routes("status")) == 4 and min(clock.sleeps) >= 0.5  # slow polls


def test_cancelling_a_warm_up_cancels_its_job() -> None:
    fake = FakeRunPod(lambda n: [{"status": "IN_QUEUE"}])
    fake.after_cancel = {"status": "CANCELLED"}
    clock = FakeClock()
    b = backend(fake, clock, warmup=True)
    ctx = JobContext(scene="(warm-up)", stage="animate")

    async def go() -> None:
        task = asyncio.create_task(b.warm_up("animate", ctx))
        while not fake.routes("status"):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await b.aclose()

    asyncio.run(go())
    assert fake.routes("cancel") == ["job-1"]
    assert [a.status for a in ctx.attempts] == ["CANCELLED"]


def test_no_warm_up_when_it_is_turned_off() -> None:
    fake = FakeRunPod(lambda n: [done()])
    ctx = JobContext(scene="(warm-up)", stage="animate")

    async def go() -> None:
        b = backend(fake, FakeClock(), warmup=False)
        await b.warm_up("animate", ctx)
        await b.aclose()

    asyncio.run(go())
    assert fake.calls == [] and ctx.attempts == []


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        ("CUDA out of memory. Tried to allocate 2 GiB", True),
        ('{"error_type": "torch.OutOfMemoryError", "error_message": "..."}', True),
        ("worker lost: stopped responding", True),
        ("invalid input: not an image", False),
        ("ValueError: height must be a multiple of 16", False),
    ],
)
def test_transient_classification(error: str, transient: bool) -> None:
    assert is_transient_job_error(error) is transient
