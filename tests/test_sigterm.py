"""SIGTERM (``timeout``, ``docker stop``, systemd) stops a render the way Ctrl-C does.

The render is ``videokit render`` in its own process against two real ``videokit serve``
endpoints on loopback; it gets SIGTERM while its jobs run and queue. Its jobs must be cancelled on
the endpoints, the manifest must say so, the exit status must be 143 (128 + SIGTERM) and running
the same command again must finish the film. A second SIGTERM must not cut the cancelling short.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.endpoints import Counting, Servers, serve_workers
from tests.test_runpod import render_process, until, write_story
from videokit.serve.jobs import JobStatus


def read_until(proc: subprocess.Popen[str], want: int, kind: str) -> list[dict[str, Any]]:
    """The render's JSON events up to the ``want``-th of ``kind``."""
    assert proc.stdout is not None
    events: list[dict[str, Any]] = []
    for line in proc.stdout:
        events.append(json.loads(line))
        if sum(1 for e in events if e["type"] == kind) >= want:
            break
    return events


def in_flight(out: Path) -> dict[str, str]:
    """Animate jobs the manifest records as submitted, by scene."""
    manifest = json.loads((out / "manifest.json").read_text())
    return {
        scene: record["animate"]["job_id"]
        for scene, record in manifest["scenes"].items()
        if record.get("animate") and record["animate"]["status"] == "submitted"
    }


@contextmanager
def rendering_three_jobs(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Servers, Path]]:
    """A render with three animate jobs recorded on the endpoint: two running, one queued."""
    story = write_story(tmp_path, scenes=3)
    out = tmp_path / "out"
    with serve_workers(min_job_seconds=4.0, concurrency=2) as servers:
        proc = render_process(story, servers, out)
        try:
            read_until(proc, 3, "job_submitted")
            # Every job recorded in the manifest: no submission is half done at the signal.
            until(lambda: len(in_flight(out)) == 3, 5, "the three jobs were recorded")
            jobs = servers.queue("animate").jobs()
            assert {job.status for job in jobs} == {JobStatus.IN_PROGRESS, JobStatus.IN_QUEUE}
            yield proc, servers, out
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def assert_stopped_like_ctrl_c(
    proc: subprocess.Popen[str],
    stdout: str,
    stderr: str,
    servers: Servers,
    out: Path,
    code: int = 128 + signal.SIGTERM,
) -> None:
    """Exit 143 (130 after Ctrl-C) with the interrupt's message, and every job cancelled, on the
    endpoint and in the manifest."""
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    assert "interrupted" in stderr and "run the same command again" in stderr
    error = json.loads(stdout.splitlines()[-1])
    assert error["type"] == "error" and error["exit_code"] == code
    # Every job either endpoint received was cancelled there; none is left queued or running.
    assert not servers.unfinished()
    received = [job for stage in ("edit", "animate") for job in servers.queue(stage).jobs()]
    assert len(received) == 3
    assert {job.status for job in received} == {JobStatus.CANCELLED}
    assert set(dict(servers.counters["animate"].cancels)) == {job.id for job in received}
    manifest = json.loads((out / "manifest.json").read_text())
    attempts = {
        record["animate"]["attempts"][-1]["job_id"]: record["animate"]["attempts"][-1]["status"]
        for record in manifest["scenes"].values()
    }
    assert attempts == {job.id: "CANCELLED" for job in received}


def test_sigterm_cancels_the_running_jobs_exits_143_and_the_same_command_resumes(
    tmp_path: Path,
) -> None:
    with rendering_three_jobs(tmp_path) as (proc, servers, out):
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
        assert_stopped_like_ctrl_c(proc, stdout, stderr, servers, out)
        cancels = dict(servers.counters["animate"].cancels)
        assert max(cancels.values()) - sent < 2.0

        again = render_process(tmp_path / "story.yaml", servers, out)
        stdout, stderr = again.communicate(timeout=120)
        assert again.returncode == 0, stderr
        events = [json.loads(line) for line in stdout.splitlines()]
        assert {e["scene"] for e in events if e["type"] == "scene_done"} == {"s0", "s1", "s2"}
        [done] = [e for e in events if e["type"] == "render_done"]
        assert done["final"] and Path(done["final"]).is_file()


class HeldCancels:
    """An ASGI wrapper that holds every ``cancel`` request until released."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.arrived = threading.Event()
        self.release = threading.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and "/cancel/" in scope["path"]:
            self.arrived.set()
            while not self.release.is_set():
                await asyncio.sleep(0.01)
        await self.app(scope, receive, send)


@pytest.mark.parametrize(
    ("sent", "said"),
    [
        # A supervisor or a script may send SIGTERM twice.
        (signal.SIGTERM, "already stopping"),
        # asyncio.run raised KeyboardInterrupt on a second Ctrl-C wherever the program was,
        # which aborted the cancel requests in flight.
        (signal.SIGINT, "press Ctrl-C again to stop at once"),
    ],
)
def test_a_second_signal_does_not_cut_the_cancelling_short(
    tmp_path: Path, sent: signal.Signals, said: str
) -> None:
    """Jobs must not be left running behind a message that says they were cancelled."""
    with rendering_three_jobs(tmp_path) as (proc, servers, out):
        counter: Counting = servers.counters["animate"]
        held = HeldCancels(counter.app)
        counter.app = held
        proc.send_signal(sent)
        assert held.arrived.wait(10), "the render sent no cancel"
        proc.send_signal(sent)  # while the render is cancelling its jobs
        time.sleep(0.5)
        assert proc.poll() is None, f"the second {sent.name} stopped the render mid-cancel"
        held.release.set()
        stdout, stderr = proc.communicate(timeout=30)
        assert said in stderr
        assert_stopped_like_ctrl_c(proc, stdout, stderr, servers, out, code=128 + sent)
