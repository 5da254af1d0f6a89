"""The RunPod backend's job logic with an injected transport and clock: deadlines, resubmission,
re-attachment and cost accounting, without sleeping for real."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from videokit.backends.base import JobContext
from videokit.backends.retry import RetryPolicy
from videokit.backends.runpod import Endpoint, RunPodBackend, RunPodConfig, is_transient_job_error
from videokit.config import Secret
from videokit.costs import CostModel
from videokit.errors import EndpointError, JobFailedError, JobTimeoutError
from videokit.protocol import AnimateRequest, MediaInput

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


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

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


class FakeRunPod:
    """Answers RunPod's API from a script: each job's statuses, in order, as they are polled."""

    def __init__(self, script: Callable[[int], list[dict[str, Any]]]) -> None:
        self.script = script
        self.jobs: dict[str, list[dict[str, Any]]] = {}
        self.calls: list[tuple[str, str]] = []
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.calls.append((request.method, path))
        if path.endswith("/run"):
            job_id = f"job-{len(self.jobs) + 1}"
            self.jobs[job_id] = list(self.script(len(self.jobs)))
            self.bodies.append(json.loads(request.content))
            return httpx.Response(200, json={"id": job_id, "status": "IN_QUEUE"})
        job_id = path.rsplit("/", 1)[-1]
        if "/cancel/" in path:
            self.jobs[job_id] = [{"id": job_id, "status": "CANCELLED"}]
            return httpx.Response(200, json={"id": job_id, "status": "CANCELLED"})
        states = self.jobs.get(job_id)
        if states is None:
            return httpx.Response(404, json={"error": "job not found"})
        status = states.pop(0) if len(states) > 1 else states[0]
        if status.get("status") == "404":
            return httpx.Response(404, json={"error": "job not found"})
        return httpx.Response(200, json={"id": job_id, **status})

    def cancelled(self) -> list[str]:
        return [p.rsplit("/", 1)[-1] for m, p in self.calls if "/cancel/" in p]


def backend(fake: FakeRunPod, clock: FakeClock, **config: Any) -> RunPodBackend:
    cfg = RunPodConfig(
        api_key=Secret("k"),
        endpoints={"animate": Endpoint("ep", gpu="ADA_80_PRO")},
        warmup=False,
        **config,
    )
    return RunPodBackend(
        cfg,
        transport=httpx.MockTransport(fake),
        clock=clock,
        sleep=clock.sleep,
        retry=RetryPolicy(attempts=3, sleep=clock.sleep),
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


def test_completed_job_records_attempt_and_cost() -> None:
    fake = FakeRunPod(lambda n: [{"status": "IN_PROGRESS"}, done()])
    clock = FakeClock()
    ctx = JobContext(scene="s", stage="animate")
    result = run(backend(fake, clock), ctx)
    assert result.frames == 9 and result.last_frame.decode() == PNG
    [attempt] = ctx.attempts
    assert attempt.status == "COMPLETED" and attempt.execution_ms == 2000
    assert attempt.cost_usd == pytest.approx(CostModel().cost("animate", 2.0))
    body = fake.bodies[0]
    assert body["policy"]["executionTimeout"] == 900_000 and "input" in body
    assert body["input"]["prompt"] == "p"


def test_transient_failure_is_resubmitted_and_both_attempts_recorded() -> None:
    fake = FakeRunPod(
        lambda n: (
            [{"status": "FAILED", "error": "CUDA out of memory. Tried to allocate"}]
            if n == 0
            else [done()]
        )
    )
    ctx = JobContext(scene="s", stage="animate")
    run(backend(fake, FakeClock()), ctx)
    assert [a.status for a in ctx.attempts] == ["FAILED", "COMPLETED"]
    assert "out of memory" in (ctx.attempts[0].error or "")


def test_bad_input_failure_is_not_resubmitted() -> None:
    fake = FakeRunPod(
        lambda n: [{"status": "FAILED", "error": "invalid input: frames must be 4k+1"}]
    )
    ctx = JobContext(scene="s", stage="animate")
    with pytest.raises(JobFailedError, match="invalid input"):
        run(backend(fake, FakeClock()), ctx)
    assert len(fake.jobs) == 1


def test_stuck_in_queue_is_cancelled_and_resubmitted() -> None:
    fake = FakeRunPod(lambda n: [{"status": "IN_QUEUE"}] if n == 0 else [done()])
    clock = FakeClock()
    ctx = JobContext(scene="s", stage="animate")
    run(backend(fake, clock, queue_timeout_s=60), ctx)
    assert fake.cancelled() == ["job-1"]
    assert [a.status for a in ctx.attempts] == ["CANCELLED", "COMPLETED"]
    assert 60 <= clock.now < 80


def test_execution_deadline_cancels_the_remote_job_before_raising() -> None:
    fake = FakeRunPod(lambda n: [{"status": "IN_PROGRESS"}])
    clock = FakeClock()
    ctx = JobContext(scene="s", stage="animate")
    with pytest.raises(JobTimeoutError) as caught:
        run(backend(fake, clock, execution_timeout_s=100), ctx)
    assert caught.value.job_id == "job-1"
    assert fake.cancelled() == ["job-1"]
    assert ctx.attempts[0].status == "TIMED_OUT"


def test_server_side_timeout_is_a_timeout_error() -> None:
    fake = FakeRunPod(lambda n: [{"status": "TIMED_OUT", "executionTime": 600000}])
    with pytest.raises(JobTimeoutError, match="execution timeout"):
        run(backend(fake, FakeClock()), JobContext(scene="s", stage="animate"))


def test_expired_result_is_resubmitted() -> None:
    fake = FakeRunPod(
        lambda n: [{"status": "IN_PROGRESS"}, {"status": "404"}] if n == 0 else [done()]
    )
    ctx = JobContext(scene="s", stage="animate")
    run(backend(fake, FakeClock()), ctx)
    assert [a.status for a in ctx.attempts] == ["LOST", "COMPLETED"]


def test_resume_reattaches_without_submitting() -> None:
    fake = FakeRunPod(lambda n: [done()])
    fake.jobs["old-job"] = [{"status": "IN_PROGRESS"}, done()]
    submitted: list[str] = []

    async def on_submitted(job_id: str) -> None:
        submitted.append(job_id)

    ctx = JobContext(scene="s", stage="animate", resume_job_id="old-job", on_submitted=on_submitted)
    run(backend(fake, FakeClock()), ctx)
    assert submitted == ["old-job"]
    assert not [c for c in fake.calls if c[1].endswith("/run")]


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


def test_cancelling_the_task_cancels_the_remote_job() -> None:
    fake = FakeRunPod(lambda n: [{"status": "IN_PROGRESS"}])
    clock = FakeClock()
    b = backend(fake, clock)

    async def go() -> None:
        task = asyncio.create_task(b.animate(REQUEST, JobContext(scene="s", stage="animate")))
        while not fake.jobs:
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await b.aclose()

    asyncio.run(go())
    assert fake.cancelled() == ["job-1"]


def test_polling_learns_the_job_length_and_stays_cheap() -> None:
    # Each job takes 30 s: after the first, the client sleeps through most of it.
    def script(n: int) -> list[dict[str, Any]]:
        return [{"status": "IN_PROGRESS"}] * 1000

    class Timed(FakeRunPod):
        def __call__(self, request: httpx.Request) -> httpx.Response:
            job_id = request.url.path.rsplit("/", 1)[-1]
            if "/status/" in request.url.path and clock.now - started[job_id] >= 30:
                self.calls.append((request.method, request.url.path))
                return httpx.Response(200, json={"id": job_id, **done(30_000, 0)})
            response = super().__call__(request)
            if request.url.path.endswith("/run"):
                started[response.json()["id"]] = clock.now
            return response

    started: dict[str, float] = {}
    clock = FakeClock()
    fake = Timed(script)
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
    polls = [p for m, p in fake.calls if "/status/" in p]
    assert latencies[0] < 0.1 * 30 + 0.1  # no history: intervals stay within 10% of elapsed
    assert max(latencies[1:]) < 0.25  # with history: within a short poll of completion
    first = len([p for p in polls if p.endswith("job-1")])
    assert first < 70 and len(polls) - first <= 20  # ~logarithmic (2 s cap), then a few a job


def test_payload_over_the_limit_without_storage_is_refused_before_submitting() -> None:
    fake = FakeRunPod(lambda n: [done()])
    big = AnimateRequest(
        image=MediaInput.from_bytes(b"\x89PNG" + b"\0" * 11_000_000), prompt="p", seed=1
    )

    async def go() -> None:
        b = backend(fake, FakeClock())
        try:
            await b.animate(big, JobContext(scene="s", stage="animate"))
        finally:
            await b.aclose()

    with pytest.raises(EndpointError, match="10 MiB") as caught:
        asyncio.run(go())
    assert "S3" in (caught.value.hint or "")
    assert fake.calls == []


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
