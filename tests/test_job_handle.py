"""The job handle and the polling budget, against real ``videokit serve`` endpoints on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import videokit
from tests.conftest import make_image
from tests.endpoints import serve_workers
from videokit.backends.runpod import (
    Endpoint,
    JobHandle,
    JobStatus,
    PollBudget,
    PollSchedule,
    RunPodBackend,
    RunPodConfig,
)
from videokit.protocol import AnimateRequest, MediaInput


def animate_request(tmp_path: Path) -> AnimateRequest:
    image = make_image(tmp_path / "frame.png", (128, 128))
    return AnimateRequest(
        image=MediaInput.from_bytes(image.read_bytes()),
        prompt="p",
        seed=1,
        width=128,
        height=128,
        frames=9,
    )


def test_submit_then_attach_and_cancel_from_another_process(tmp_path: Path) -> None:
    with serve_workers(min_job_seconds=30.0) as servers:
        url = servers.urls["animate"]
        backend = RunPodBackend(RunPodConfig(api_key=None, endpoints={"animate": Endpoint(url)}))

        async def submit() -> tuple[JobHandle, JobStatus]:
            handle = await backend.submit("animate", animate_request(tmp_path))
            return handle, await handle.status()

        async def wait(handle: JobHandle) -> JobStatus:
            try:
                return await handle.wait(timeout_s=20)
            finally:
                await backend.aclose()

        handle, first = asyncio.run(submit())
        assert first.state in ("IN_QUEUE", "IN_PROGRESS") and first.id == handle.job_id
        # Another process knows only the job id (as a script resuming from a manifest would).
        script = textwrap.dedent(
            f"""
            import asyncio
            from videokit.backends.runpod import Endpoint, RunPodBackend, RunPodConfig

            async def main() -> None:
                backend = RunPodBackend(
                    RunPodConfig(api_key=None, endpoints={{"animate": Endpoint({url!r})}})
                )
                handle = backend.attach("animate", {handle.job_id!r})
                seen = await handle.status()
                after = await handle.cancel()
                print(seen.state, after.state if after else None)
                await backend.aclose()

            asyncio.run(main())
            """
        )
        other = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ},
        )
        assert other.returncode == 0, other.stderr
        seen, after = other.stdout.split()
        assert seen in ("IN_QUEUE", "IN_PROGRESS") and after == "CANCELLED"
        final = asyncio.run(wait(handle))
        assert final.state == "CANCELLED" and final.done
        assert not servers.unfinished()


def test_a_job_waiting_while_the_first_one_teaches_the_length_stays_within_the_budget(
    tmp_path: Path,
) -> None:
    """Two scenes from the reference on a one-slot endpoint: the second waits in the queue while
    the first finishes and teaches the stage's job length. It used to nap for zero seconds from
    then on (971 status reads in ~5 s); its reads must stay within the budget."""
    make_image(tmp_path / "ref.png", (256, 144))
    story = tmp_path / "two.yaml"
    story.write_text(
        "title: Two\nreference: ref.png\ndefaults: {width: 128, height: 128, frames: 9, fps: 8}\n"
        "scenes:\n  - {id: a, motion: one}\n  - {id: b, from: reference, motion: two}\n"
    )
    with serve_workers(min_job_seconds=2.0, concurrency=1) as servers:
        endpoints = {stage: Endpoint(url, concurrency=2) for stage, url in servers.urls.items()}
        backend = RunPodBackend(RunPodConfig(api_key=None, endpoints=endpoints, warmup=False))
        result = videokit.Pipeline(story, backend=backend, out=tmp_path / "out").run()
        asyncio.run(backend.aclose())
    manifest = json.loads(result.manifest.read_text())
    budget = PollBudget()
    lengths = []
    for scene in ("a", "b"):
        [attempt] = manifest["scenes"][scene]["animate"]["attempts"]
        seconds = (attempt["execution_ms"] + attempt["delay_ms"]) / 1000
        reads = backend.stats.polls[attempt["job_id"]]
        assert reads <= budget.most_requests(seconds), (scene, reads, seconds)
        lengths.append(seconds)
    # One job waited for the other (~2 s) and then ran ~2 s: ~4 s in all.
    assert max(lengths) > 3.5


@pytest.mark.parametrize("expected", [None, 0.0, 0.01, 0.5, 3.0, 30.0])
@pytest.mark.parametrize("job_s", [0.3, 2.0, 7.0, 40.0])
def test_the_schedule_stays_within_its_budget_whatever_it_expects(
    expected: float | None, job_s: float
) -> None:
    budget = PollBudget()
    schedule = PollSchedule(budget)
    now, reads, waked = 0.0, 0, 0
    while True:
        reads += 1
        schedule.spent(now, elapsed=now, expected=expected)
        if now >= job_s:
            break
        delay = schedule.delay(now, elapsed=now, expected=expected)
        assert delay >= 0
        now += delay
        waked += 1
    assert reads <= budget.most_requests(job_s), (reads, job_s, expected)
    if expected is not None and 0.5 <= expected == job_s:
        # An accurate expectation costs a handful of reads and little latency.
        assert reads <= 6 and now - job_s <= 0.04 + 0.02 * job_s


def test_the_schedule_reads_slower_once_a_job_overruns() -> None:
    budget = PollBudget()
    schedule = PollSchedule(budget)
    now, reads = 0.0, 0
    while now < 100.0:
        schedule.spent(now, elapsed=now, expected=5.0)
        reads += 1
        now += schedule.delay(now, elapsed=now, expected=5.0)
    # 100 s, expected 5: at most the burst, 2/s for 5 s, then 1/s.
    assert reads <= budget.burst + 2 * 5 + 1 * 95 + 1


def test_a_handle_streams_progress_then_reads_the_result(tmp_path: Path) -> None:
    from tests.test_runpod import streaming

    request = animate_request(tmp_path)
    with serve_workers(handlers={"animate": streaming}) as servers:
        endpoint = Endpoint(servers.urls["animate"], stream=True)
        backend = RunPodBackend(RunPodConfig(api_key=None, endpoints={"animate": endpoint}))

        async def main() -> tuple[list[object], JobStatus, object]:
            try:
                handle = await backend.submit("animate", request)
                chunks = [chunk async for chunk in handle.stream(timeout_s=30)]
                status = await handle.status()
                return chunks, status, await backend.result(handle, request, status)
            finally:
                await backend.aclose()

        chunks, status, result = asyncio.run(main())
    assert {"progress": 0.25, "message": "denoising"} in chunks
    assert {"progress": 0.75} in chunks
    assert status.state == "COMPLETED" and status.execution_ms is not None
    assert getattr(result, "frames", None) == request.frames
