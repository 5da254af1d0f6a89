"""The RunPod job policy with a scripted API and clock: lost replies, payload limits, what each
attempt cost, and how polling learns a job's length."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.fake_runpod import (
    PRICE,
    REQUEST,
    FakeClock,
    FakeRunPod,
    backend,
    done,
    run,
    server_error,
    storage,
)
from videokit.backends.base import JobContext
from videokit.backends.runpod import (
    RUN_PAYLOAD_LIMIT,
    Endpoint,
    RunPodConfig,
)
from videokit.costs import CostModel
from videokit.errors import (
    ConfigError,
    EndpointError,
)
from videokit.protocol import AnimateRequest, MediaInput

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
