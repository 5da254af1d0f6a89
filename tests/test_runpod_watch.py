"""The RunPod backend with a scripted API and clock: job states for the display, one backend in
several event loops, which key each host gets, and warm-ups."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import make_image
from tests.endpoints import serve_workers
from tests.fake_runpod import (
    OUTPUT,
    PNG,
    PRICE,
    REQUEST,
    FakeClock,
    FakeRunPod,
    Hook,
    backend,
    done,
    media,
    run,
)
from videokit.backends.base import JobContext
from videokit.backends.retry import RetryPolicy
from videokit.backends.runpod import (
    DEFAULT_BASE_URL,
    Endpoint,
    RunPodBackend,
    RunPodConfig,
    is_transient_job_error,
)
from videokit.config import Secret
from videokit.errors import (
    ConfigError,
    EndpointError,
)
from videokit.protocol import AnimateRequest, EditRequest, MediaInput

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
