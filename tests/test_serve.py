"""``videokit serve`` against real HTTP: uvicorn on a loopback port, driven by httpx and runpod.

No mocks: every test starts the real app with ``running_server`` and talks to it over a socket.
Handlers signal the test thread through ``threading.Event``s, since they run on the server's
thread (async handlers) or in its worker threads (sync handlers).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from videokit.errors import ConfigError
from videokit.serve import FaultConfig, create_app, parse_faults, running_server
from videokit.serve.faults import ALL_FAULTS, FaultInjector
from videokit.serve.jobs import ENQUEUED_HISTORY, JobPolicy, JobQueue

ENDPOINT = "local"


@contextmanager
def serving(handler: Any, **kwargs: Any) -> Iterator[httpx.Client]:
    """A client whose base URL is the endpoint root (``.../v2/local``)."""
    with (
        running_server(create_app(handler, **kwargs)) as base,
        httpx.Client(base_url=f"{base}/v2/{ENDPOINT}", timeout=10) as client,
    ):
        yield client


def wait_for(
    client: httpx.Client, job_id: str, *statuses: str, timeout: float = 5.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/status/{job_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["status"] in statuses:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {body['status']}, wanted {statuses}")
        time.sleep(0.02)


def run(client: httpx.Client, job_input: Any = None, **extra: Any) -> str:
    response = client.post(
        "/run", json={"input": job_input if job_input is not None else {}, **extra}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "IN_QUEUE"
    return str(body["id"])


def until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


class FakeClock:
    """Monotonic seconds that only move when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def echo(job: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(float(job["input"].get("sleep", 0)))
    return {"echo": job["input"], "id": job["id"]}


class Blocker:
    """An async handler that blocks until released, recording how it ended."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.cancelled = threading.Event()
        self.finalized = threading.Event()
        self.ran: list[Any] = []

    async def __call__(self, job: dict[str, Any]) -> dict[str, Any]:
        self.ran.append(job["input"])
        self.started.set()
        try:
            while not self.release.is_set():
                await asyncio.sleep(0.01)
            return {"done": job["input"]}
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        finally:
            self.finalized.set()


# ---------------------------------------------------------------------------- basic lifecycle


def test_run_then_status_completes_with_output_and_timings() -> None:
    with serving(echo) as client:
        job_id = run(client, {"prompt": "a fox", "sleep": 0.05})
        uuid.UUID(job_id)  # RunPod-style uuid ids
        body = wait_for(client, job_id, "COMPLETED")
    assert body["output"] == {"echo": {"prompt": "a fox", "sleep": 0.05}, "id": job_id}
    assert isinstance(body["delayTime"], int) and body["delayTime"] >= 0
    assert isinstance(body["executionTime"], int) and body["executionTime"] >= 40
    assert body["workerId"]
    assert "error" not in body


def test_runsync_returns_the_result_or_the_pending_status() -> None:
    with serving(echo) as client:
        done = client.post("/runsync", json={"input": {"n": 1}})
        assert done.status_code == 200
        assert done.json()["status"] == "COMPLETED"
        assert done.json()["output"]["echo"] == {"n": 1}

        # wait=1 is clamped up to RunPod's minimum of 1000 ms.
        started = time.monotonic()
        pending = client.post("/runsync", params={"wait": 1}, json={"input": {"sleep": 2.5}})
        elapsed = time.monotonic() - started
        assert pending.status_code == 200
        assert pending.json()["status"] == "IN_PROGRESS"
        assert 0.9 <= elapsed < 2.0  # the 1 s wait, not the 2.5 s job (slack for a busy CI box)
        assert wait_for(client, pending.json()["id"], "COMPLETED")["output"]["echo"] == {
            "sleep": 2.5
        }


def test_sync_handler_runs_in_a_thread_and_the_api_stays_responsive() -> None:
    threads: list[str] = []

    def slow(job: dict[str, Any]) -> dict[str, Any]:
        threads.append(threading.current_thread().name)
        time.sleep(0.4)
        return {"sum": sum(job["input"]["xs"])}

    with serving(slow) as client:
        job_id = run(client, {"xs": [1, 2, 3]})
        until(lambda: threads)
        # Answered while the handler still sleeps: the event loop is not blocked by it.
        assert client.get("/health").json()["jobs"]["inProgress"] == 1
        assert wait_for(client, job_id, "COMPLETED")["output"] == {"sum": 6}
    assert threads[0].startswith("videokit-serve-job")


def test_unknown_job_is_404_and_a_configured_endpoint_id_is_enforced() -> None:
    with (
        running_server(create_app(echo, endpoint_id="vk")) as base,
        httpx.Client(base_url=base) as client,
    ):
        missing = client.get(f"/v2/vk/status/{uuid.uuid4()}")
        assert missing.status_code == 404
        assert "error" in missing.json()
        assert client.post("/v2/other/run", json={"input": {}}).status_code == 404
        assert client.post("/v2/vk/run", json={"input": {}}).status_code == 200


# ---------------------------------------------------------------------------- streaming


def test_sync_generator_streams_chunks_and_aggregates_output() -> None:
    go = threading.Event()

    def frames(job: dict[str, Any]) -> Iterator[dict[str, int]]:
        yield {"frame": 0}
        go.wait(5)
        for i in range(1, job["input"]["n"]):
            yield {"frame": i}

    with serving(frames) as client:
        job_id = run(client, {"n": 4})
        seen: list[Any] = []
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            partial = client.get(f"/stream/{job_id}").json()
            seen += [chunk["output"] for chunk in partial["stream"]]
        assert partial["status"] == "IN_PROGRESS"
        assert seen == [{"frame": 0}]
        go.set()
        final = wait_for(client, job_id, "COMPLETED")
        rest = client.get(f"/stream/{job_id}").json()
        seen += [chunk["output"] for chunk in rest["stream"]]
        assert rest["status"] == "COMPLETED"
        assert client.get(f"/stream/{job_id}").json()["stream"] == []  # each chunk once
    assert seen == [{"frame": i} for i in range(4)]
    assert final["output"] == seen  # like return_aggregate_stream=True


def test_async_generator_streams_and_an_error_chunk_fails_the_job() -> None:
    async def frames(job: dict[str, Any]) -> AsyncIterator[Any]:
        for i in range(3):
            await asyncio.sleep(0.01)
            yield i
        if job["input"].get("fail"):
            yield {"error": "decoder crashed"}
            yield 99  # never reached: an error chunk ends the job, like RunPod

    with serving(frames) as client:
        ok = wait_for(client, run(client, {}), "COMPLETED")
        assert ok["output"] == [0, 1, 2]
        bad_id = run(client, {"fail": True})
        bad = wait_for(client, bad_id, "FAILED")
        assert bad["error"] == "decoder crashed"
        streamed = [c["output"] for c in client.get(f"/stream/{bad_id}").json()["stream"]]
        assert streamed == [0, 1, 2]


# ---------------------------------------------------------------------------- cancel


def test_cancel_stops_a_running_async_handler() -> None:
    blocker = Blocker()
    with serving(blocker) as client:
        job_id = run(client)
        assert blocker.started.wait(5)
        response = client.post(f"/cancel/{job_id}")
        assert response.status_code == 200
        assert response.json() == {"id": job_id, "status": "CANCELLED"}
        assert blocker.cancelled.wait(2)  # CancelledError reached the handler's await
        assert blocker.finalized.is_set()
        assert wait_for(client, job_id, "CANCELLED")["status"] == "CANCELLED"
        until(lambda: client.get("/health").json()["workers"] == {"idle": 1, "running": 0})
        # cancelling a finished job changes nothing
        assert client.post(f"/cancel/{job_id}").json()["status"] == "CANCELLED"


def test_cancel_sync_handler_discards_its_result_and_frees_the_slot_when_it_returns() -> None:
    release = threading.Event()
    calls: list[str] = []

    def stubborn(job: dict[str, Any]) -> dict[str, Any]:
        calls.append(job["id"])
        if job["input"].get("block"):
            release.wait(5)
        return {"done": True}

    with serving(stubborn) as client:
        try:
            job_id = run(client, {"block": True})
            until(lambda: calls)
            assert client.post(f"/cancel/{job_id}").json()["status"] == "CANCELLED"
            next_id = run(client, {})
            time.sleep(0.1)
            # the thread still holds the GPU slot, so the next job waits
            assert client.get(f"/status/{next_id}").json()["status"] == "IN_QUEUE"
        finally:
            release.set()
        assert wait_for(client, next_id, "COMPLETED")["output"] == {"done": True}
        cancelled = client.get(f"/status/{job_id}").json()
        assert cancelled["status"] == "CANCELLED"
        assert "output" not in cancelled


def test_cancel_a_queued_job_means_it_never_runs() -> None:
    blocker = Blocker()
    with serving(blocker) as client:
        first = run(client, "first")
        assert blocker.started.wait(5)
        second = run(client, "second")
        assert client.post(f"/cancel/{second}").json() == {"id": second, "status": "CANCELLED"}
        blocker.release.set()
        wait_for(client, first, "COMPLETED")
        body = client.get(f"/status/{second}").json()
    assert body["status"] == "CANCELLED"
    assert "delayTime" not in body
    assert blocker.ran == ["first"]


# ---------------------------------------------------------------------------- failures


def _raises(job: dict[str, Any]) -> None:
    raise ValueError("bad frame size")


async def _raises_async(job: dict[str, Any]) -> None:
    raise ValueError("bad frame size")


def _raises_midstream(job: dict[str, Any]) -> Iterator[int]:
    yield 1
    raise ValueError("bad frame size")


@pytest.mark.parametrize("broken", [_raises, _raises_async, _raises_midstream])
def test_raised_exception_fails_with_runpods_error_blob(broken: Any) -> None:
    with serving(broken) as client:
        body = wait_for(client, run(client), "FAILED")
    blob = json.loads(body["error"])
    assert blob["error_type"] == "<class 'ValueError'>"
    assert blob["error_message"] == "bad frame size"
    assert "ValueError: bad frame size" in blob["error_traceback"]
    assert "output" not in body


def test_returned_error_dict_fails_and_keeps_the_rest_as_output() -> None:
    async def refuses(job: dict[str, Any]) -> dict[str, Any]:
        return {"error": "no GPU memory left", "partial": 3}

    with serving(refuses) as client:
        body = wait_for(client, run(client), "FAILED")
    assert body["error"] == "no GPU memory left"
    assert body["output"] == {"partial": 3}


def test_non_json_output_fails_instead_of_breaking_status() -> None:
    async def weird(job: dict[str, Any]) -> Any:
        return {"value": float("nan"), "obj": object()}

    with serving(weird) as client:
        body = wait_for(client, run(client), "FAILED")
    assert "not JSON-serializable" in body["error"]


def test_execution_timeout_times_out_and_cancels_the_handler() -> None:
    blocker = Blocker()
    with serving(blocker) as client:
        job_id = run(client, policy={"executionTimeout": 200})
        body = wait_for(client, job_id, "TIMED_OUT", timeout=3)
        assert blocker.cancelled.wait(2)
    assert 150 <= body["executionTime"] < 1000
    assert "executionTimeout" in body["error"]


def test_retry_requeues_a_failed_job_under_the_same_id() -> None:
    attempts: dict[str, int] = {}

    async def flaky(job: dict[str, Any]) -> dict[str, Any]:
        attempts[job["id"]] = attempts.get(job["id"], 0) + 1
        if attempts[job["id"]] == 1:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return {"attempt": attempts[job["id"]]}

    with serving(flaky) as client:
        job_id = run(client)
        wait_for(client, job_id, "FAILED")
        retried = client.post(f"/retry/{job_id}")
        assert retried.status_code == 200
        assert retried.json() == {"id": job_id, "status": "IN_QUEUE"}
        done = wait_for(client, job_id, "COMPLETED")
        assert done["output"] == {"attempt": 2}
        assert "error" not in done
        again = client.post(f"/retry/{job_id}")
        assert again.status_code == 400  # only FAILED / TIMED_OUT
        assert "COMPLETED" in again.json()["error"]
        assert client.post(f"/retry/{uuid.uuid4()}").status_code == 404
        jobs = client.get("/health").json()["jobs"]
    assert (jobs["completed"], jobs["failed"], jobs["retried"]) == (1, 1, 1)


# ---------------------------------------------------------------------------- expiry (fake clock)


def test_ttl_expiry_deletes_a_job_even_mid_run() -> None:
    clock = FakeClock()
    blocker = Blocker()
    with serving(blocker, clock=clock) as client:
        job_id = run(client, policy={"ttl": 60_000})
        assert blocker.started.wait(5)
        clock.advance(59)
        assert client.get(f"/status/{job_id}").json()["status"] == "IN_PROGRESS"
        clock.advance(2)
        assert client.get(f"/status/{job_id}").status_code == 404
        assert blocker.cancelled.wait(2)
        assert client.post(f"/cancel/{job_id}").status_code == 404


def test_finished_results_are_retained_then_expire() -> None:
    clock = FakeClock()
    with serving(echo, clock=clock, result_retention_s=60) as client:
        job_id = run(client)
        wait_for(client, job_id, "COMPLETED")
        clock.advance(59)
        assert client.get(f"/status/{job_id}").status_code == 200
        clock.advance(2)
        assert client.get(f"/status/{job_id}").status_code == 404


def test_results_are_kept_as_long_as_runpod_keeps_them() -> None:
    # RunPod: 30 min after a /run job ends, 1 min after a /runsync one, 5 min if it gave ?wait=.
    clock = FakeClock()
    with serving(echo, clock=clock) as client:
        ran = run(client)
        wait_for(client, ran, "COMPLETED")
        synced = client.post("/runsync", json={"input": {}}).json()
        waited = client.post("/runsync", params={"wait": 5000}, json={"input": {}}).json()
        assert synced["status"] == waited["status"] == "COMPLETED"
        kept = {ran: 1800.0, synced["id"]: 60.0, waited["id"]: 300.0}
        elapsed = 0.0
        for job_id, seconds in sorted(kept.items(), key=lambda item: item[1]):
            clock.advance(seconds - 1 - elapsed)
            assert client.get(f"/status/{job_id}").status_code == 200, seconds
            clock.advance(2)
            elapsed = seconds + 1
            assert client.get(f"/status/{job_id}").status_code == 404, seconds


def test_status_ttl_sets_how_long_the_job_is_kept_from_now_on() -> None:
    clock = FakeClock()
    blocker = Blocker()
    with serving(echo, clock=clock) as client:
        # Sooner than the 30 min a /run result is kept by default...
        short = run(client)
        wait_for(client, short, "COMPLETED")
        answer = client.get(f"/status/{short}", params={"ttl": 6000})
        assert answer.status_code == 200 and answer.json()["status"] == "COMPLETED"
        # ...or longer. A later ?ttl= replaces an earlier one; a plain status leaves it.
        long = run(client)
        wait_for(client, long, "COMPLETED")
        assert client.get(f"/status/{long}", params={"ttl": 1000}).status_code == 200
        assert client.post(f"/status/{long}", params={"ttl": 3_600_000}).status_code == 200
        clock.advance(5.9)
        assert client.get(f"/status/{short}").status_code == 200
        clock.advance(0.2)
        assert client.get(f"/status/{short}").status_code == 404
        clock.advance(1800)
        assert client.get(f"/status/{long}").status_code == 200
        clock.advance(3600 - 1800 - 6)
        assert client.get(f"/status/{long}").status_code == 404
    with serving(blocker, clock=clock) as client:
        # A job's ttl ends it whatever its state: deleted mid-run, like RunPod's policy ttl.
        running = run(client)
        assert blocker.started.wait(5)
        assert client.get(f"/status/{running}", params={"ttl": 10_000}).status_code == 200
        clock.advance(9)
        assert client.get(f"/status/{running}").json()["status"] == "IN_PROGRESS"
        clock.advance(2)
        assert client.get(f"/status/{running}").status_code == 404
        assert blocker.cancelled.wait(2)


@pytest.mark.parametrize("ttl", ["soon", "-5", "0", "1.5", "", "604800001"])
def test_an_invalid_status_ttl_is_a_400_with_an_error(ttl: str) -> None:
    with serving(echo) as client:
        job_id = run(client)
        wait_for(client, job_id, "COMPLETED")
        answer = client.get(f"/status/{job_id}", params={"ttl": ttl})
        assert answer.status_code == 400
        assert "ttl" in answer.json()["error"]
        assert client.get(f"/status/{uuid.uuid4()}", params={"ttl": 6000}).status_code == 404


# ---------------------------------------------------------------------------- queue


def test_purge_queue_removes_queued_jobs_and_health_counts_them() -> None:
    blocker = Blocker()
    with serving(blocker) as client:
        running = run(client, "running")
        assert blocker.started.wait(5)
        queued = [run(client, f"q{i}") for i in range(3)]
        health = client.get("/health").json()
        assert health == {
            "jobs": {"completed": 0, "failed": 0, "inProgress": 1, "inQueue": 3, "retried": 0},
            "workers": {"idle": 0, "running": 1},
        }
        purged = client.post("/purge-queue")
        assert purged.json() == {"removed": 3, "status": "completed"}
        assert all(client.get(f"/status/{q}").status_code == 404 for q in queued)
        blocker.release.set()
        wait_for(client, running, "COMPLETED")
        health = client.get("/health").json()
    assert health["jobs"] == {
        "completed": 1,
        "failed": 0,
        "inProgress": 0,
        "inQueue": 0,
        "retried": 0,
    }
    assert health["workers"] == {"idle": 1, "running": 0}
    assert blocker.ran == ["running"]


def test_concurrency_bounds_how_many_jobs_run_at_once() -> None:
    lock = threading.Lock()
    active = [0]
    peak = [0]

    async def work(job: dict[str, Any]) -> int:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        await asyncio.sleep(0.3)
        with lock:
            active[0] -= 1
        return int(job["input"]["i"])

    with serving(work, concurrency=2) as client:
        started = time.monotonic()
        ids = [run(client, {"i": i}) for i in range(4)]
        results = [wait_for(client, job_id, "COMPLETED") for job_id in ids]
        elapsed = time.monotonic() - started
    assert peak[0] == 2
    assert [r["output"] for r in results] == [0, 1, 2, 3]
    assert 0.55 <= elapsed < 3
    assert min(r["delayTime"] for r in results[2:]) >= 250  # queued behind the first two


def test_jobs_run_fifo_with_low_priority_last() -> None:
    blocker = Blocker()
    with serving(blocker) as client:
        ids = [run(client, "gate")]
        assert blocker.started.wait(5)
        ids.append(run(client, "low", policy={"lowPriority": True}))
        ids += [run(client, name) for name in ("a", "b", "c")]
        blocker.release.set()
        for job_id in ids:
            wait_for(client, job_id, "COMPLETED")
    assert blocker.ran == ["gate", "a", "b", "c", "low"]


# ---------------------------------------------------------------------------- request validation and auth


def test_api_key_is_required_when_configured() -> None:
    with (
        running_server(create_app(echo, api_key="s3cret")) as base,
        httpx.Client(base_url=f"{base}/v2/x") as client,
    ):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer"}):
            response = client.get("/health", headers=headers)
            assert response.status_code == 401
            assert response.json() == {"error": "Unauthorized"}
        assert client.post("/run", json={"input": {}}).status_code == 401
        assert client.get("/health", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.get("/health", headers={"Authorization": "s3cret"}).status_code == 200


def test_payload_limits_and_malformed_bodies_are_400() -> None:
    big = {"input": {"blob": "x" * (10 * 1024 * 1024 + 1)}}  # RunPod: /run 10 MB, /runsync 20 MB
    with serving(echo) as client:
        too_big = client.post("/run", json=big)
        assert too_big.status_code == 400
        assert "at most" in too_big.json()["error"]
        assert client.post("/runsync", json=big).json()["status"] == "COMPLETED"
        assert client.post("/run", json={"prompt": "no input key"}).status_code == 400
        assert client.post("/run", content=b"{not json").status_code == 400
        assert client.post("/run", json={"input": {}, "policy": {"ttl": -5}}).status_code == 400
        assert (
            client.post("/runsync", params={"wait": "soon"}, json={"input": {}}).status_code == 400
        )


def test_webhook_receives_the_final_status() -> None:
    received: list[dict[str, Any]] = []
    hook = FastAPI()

    @hook.post("/hook")
    async def collect(request: Request) -> dict[str, bool]:
        received.append(await request.json())
        return {"ok": True}

    with running_server(hook) as hook_base, serving(echo) as client:
        job_id = run(client, {"n": 7}, webhook=f"{hook_base}/hook")
        wait_for(client, job_id, "COMPLETED")
        until(lambda: received)
    assert received[0]["id"] == job_id
    assert received[0]["status"] == "COMPLETED"
    assert received[0]["output"]["echo"] == {"n": 7}


# ---------------------------------------------------------------------------- fault injection


def faulty(kind: str, **kwargs: Any) -> FaultConfig:
    return FaultConfig(rate=1.0, kinds=frozenset({kind}), seed=1, **kwargs)


def test_fault_429_carries_retry_after() -> None:
    with serving(echo, faults=faulty("429", retry_after_s=2.5)) as client:
        response = client.post("/run", json={"input": {}})
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3"  # whole seconds, rounded up


def test_fault_5xx() -> None:
    with serving(echo, faults=faulty("5xx")) as client:
        codes = {client.get("/health").status_code for _ in range(20)}
    assert codes <= {500, 502, 503} and len(codes) > 1


def test_fault_drop_closes_the_connection_after_processing() -> None:
    ran: list[str] = []

    async def record(job: dict[str, Any]) -> None:
        ran.append(job["id"])

    with serving(record, faults=faulty("drop")) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            client.post("/run", json={"input": {}})
        until(lambda: ran)  # the request was processed; only the reply was lost


def test_fault_slow_delays_the_response() -> None:
    with serving(echo, faults=faulty("slow", slow_s=0.3)) as client:
        started = time.monotonic()
        assert client.get("/health").status_code == 200
    assert time.monotonic() - started >= 0.3


def test_fault_failed_fails_without_running_the_handler() -> None:
    ran: list[str] = []

    async def record(job: dict[str, Any]) -> None:
        ran.append(job["id"])

    with serving(record, faults=faulty("failed")) as client:
        errors = {wait_for(client, run(client), "FAILED")["error"] for _ in range(6)}
    assert ran == []
    assert any("CUDA out of memory" in e for e in errors) or any("worker lost" in e for e in errors)


def test_fault_stuck_stays_queued_until_cancelled() -> None:
    with serving(echo, faults=faulty("stuck")) as client:
        job_id = run(client)
        time.sleep(0.2)
        assert client.get(f"/status/{job_id}").json()["status"] == "IN_QUEUE"
        assert client.get("/health").json()["workers"]["running"] == 0
        assert client.post(f"/cancel/{job_id}").json()["status"] == "CANCELLED"


def test_fault_expired_answers_404_once_the_job_finished() -> None:
    ran: list[str] = []

    async def record(job: dict[str, Any]) -> str:
        ran.append(job["id"])
        return "ok"

    with serving(record, faults=faulty("expired")) as client:
        job_id = run(client)
        until(lambda: client.get(f"/status/{job_id}").status_code == 404)
        # runsync still answers with the result itself
        assert client.post("/runsync", json={"input": {}}).json()["output"] == "ok"
    assert ran[0] == job_id


def test_faults_are_reproducible_and_respect_the_rate() -> None:
    config = FaultConfig(rate=0.3, seed=42)
    first, second = FaultInjector(config), FaultInjector(config)
    draws = [first.http_fault() for _ in range(400)]
    assert draws == [second.http_fault() for _ in range(400)]
    hit = sum(d is not None for d in draws) / len(draws)
    assert 0.2 < hit < 0.4
    assert {d for d in draws if d} == {"429", "5xx", "drop", "slow"}
    assert FaultInjector(FaultConfig(rate=0.0)).http_fault() is None


def test_per_kind_rates_give_every_kind_its_own_rate() -> None:
    injector = FaultInjector(FaultConfig.each(0.2, seed=7))
    draws = [injector.http_fault("GET /v2/x/health") for _ in range(4000)]
    jobs = [injector.job_fault() for _ in range(3000)]
    for kind in ("429", "5xx", "drop", "slow"):
        assert 0.17 < draws.count(kind) / len(draws) < 0.23, kind
    for kind in ("failed", "stuck", "expired"):
        assert 0.17 < jobs.count(kind) / len(jobs) < 0.23, kind
    # An overall rate is shared between the kinds instead: 20% in total.
    overall = FaultInjector(FaultConfig(rate=0.2, seed=7))
    shared = [overall.http_fault() for _ in range(4000)]
    assert 0.17 < sum(d is not None for d in shared) / len(shared) < 0.23
    assert 0.03 < shared.count("429") / len(shared) < 0.07


def test_the_fault_log_records_what_fired_and_where() -> None:
    config = FaultConfig(rates={"429": 0.5, "stuck": 1.0}, seed=2, retry_after_s=0)
    app = create_app(echo, faults=config)
    with (
        running_server(app) as base,
        httpx.Client(base_url=f"{base}/v2/{ENDPOINT}", timeout=10) as client,
    ):
        codes = [client.get("/health").status_code for _ in range(20)]
        job_ids: list[str] = []
        run_codes: list[int] = []
        while len(job_ids) < 2:
            response = client.post("/run", json={"input": {}})
            run_codes.append(response.status_code)
            if response.status_code == 200:
                job_ids.append(response.json()["id"])
        injector: FaultInjector = app.fault_injector  # type: ignore[attr-defined]
        fired = list(injector.fired)
        enqueued = list(app.state.queue.enqueued)
    limited = Counter(subject for kind, subject in fired if kind == "429")
    assert limited["GET /v2/local/health"] == codes.count(429)
    assert limited["POST /v2/local/run"] == run_codes.count(429)
    assert sum(limited.values()) == codes.count(429) + run_codes.count(429)
    assert 0 < codes.count(429) < 20
    # Job faults are logged when they take effect, with the job they hit.
    assert [subject for kind, subject in fired if kind == "stuck"] == job_ids
    assert enqueued == [(job_id, 0) for job_id in job_ids]
    assert injector.counts()["stuck"] == 2


def test_the_log_of_queued_jobs_is_bounded_and_says_when_it_forgot() -> None:
    # A long-running server must not grow a list forever; a test can still tell the log is whole.
    queue = JobQueue(echo, history=3)

    async def go() -> list[str]:
        await queue.start()
        try:
            ids = [queue.submit({"n": n}, JobPolicy()).id for n in range(5)]
            last = queue.get(ids[-1])
            assert last is not None
            await queue.wait(last, 5.0)
            return ids
        finally:
            await queue.stop()

    ids = asyncio.run(go())
    assert list(queue.enqueued) == [(job_id, 0) for job_id in ids[-3:]]
    assert queue.enqueued_total == 5 and len(queue.enqueued) == 3
    assert JobQueue(echo).enqueued.maxlen == ENQUEUED_HISTORY >= 10_000
    with pytest.raises(ValueError, match="history"):
        JobQueue(echo, history=-1)


@pytest.mark.parametrize(
    ("spec", "rate", "kinds"),
    [
        ("0.2", 0.2, ALL_FAULTS),
        ("429,5xx@0.2", 0.2, {"429", "5xx"}),
        ("429,5xx,drop:0.2", 0.2, {"429", "5xx", "drop"}),
        ("all@0.05", 0.05, ALL_FAULTS),
        ("failed, stuck", 0.1, {"failed", "stuck"}),
        ("off", 0.0, ALL_FAULTS),
    ],
)
def test_fault_spec_parsing(spec: str, rate: float, kinds: frozenset[str] | set[str]) -> None:
    config = parse_faults(spec, seed=3)
    assert (config.rate, set(config.kinds), config.seed) == (rate, set(kinds), 3)


def test_per_kind_fault_specs() -> None:
    each = parse_faults("each@0.2", seed=3)
    assert each.rates == dict.fromkeys(sorted(ALL_FAULTS), 0.2) and each.seed == 3
    assert each == FaultConfig.each(0.2, seed=3)
    some = parse_faults("429=0.2, stuck=0.05")
    assert some.rates == {"429": 0.2, "stuck": 0.05} and some.enabled
    assert "per kind" in some.describe() and "in total" in parse_faults("0.2").describe()


@pytest.mark.parametrize(
    "spec", ["teapot@0.2", "429@lots", "0.2@1.5", "each@x", "teapot=0.1", "429=0.6,5xx=0.6"]
)
def test_bad_fault_specs_say_what_is_wrong(spec: str) -> None:
    with pytest.raises(ConfigError):
        FaultConfig.from_spec(spec)


# ---------------------------------------------------------------------------- official runpod client


def test_the_official_runpod_client_drives_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    # runpod is a core dependency: a missing one is a failure, not a skip.
    import runpod  # type: ignore[import-untyped]

    blocker = Blocker()

    async def handler(job: dict[str, Any]) -> Any:
        if job["input"].get("slow"):
            return await blocker(job)
        return {"doubled": job["input"]["x"] * 2}

    with running_server(create_app(handler, api_key="rp-key", concurrency=2)) as base:
        # RunPodClient reads both module globals when an Endpoint is created.
        monkeypatch.setattr(runpod, "api_key", "rp-key")
        monkeypatch.setattr(runpod, "endpoint_url_base", f"{base}/v2")
        endpoint = runpod.Endpoint("local")

        job = endpoint.run({"x": 1})
        assert job.status() in {"IN_QUEUE", "IN_PROGRESS", "COMPLETED"}
        assert job.output(timeout=30) == {"doubled": 2}
        assert job.status() == "COMPLETED"
        assert endpoint.run_sync({"x": 5}, timeout=30) == {"doubled": 10}

        slow = endpoint.run({"slow": True})
        assert blocker.started.wait(5)
        assert slow.cancel()["status"] == "CANCELLED"
        assert slow.status() == "CANCELLED"
        assert blocker.cancelled.wait(2)

        health = endpoint.health()
        assert health["jobs"]["completed"] == 2
        assert set(health["workers"]) == {"idle", "running"}

        monkeypatch.setattr(runpod, "api_key", "wrong-key")
        with pytest.raises(RuntimeError, match="401"):
            runpod.Endpoint("local").health()
