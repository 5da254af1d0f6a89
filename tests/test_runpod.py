"""The RunPod backend against real ``videokit serve`` servers on loopback (preview engine).

Two servers, one per worker, as a self-hosted setup runs them; the client reaches them through the
same RunPod v2 API it uses in the cloud. Covered: identical frames to the in-process preview, a
render under 20% injected faults of every kind with every attempt and its cost accounted for
against the servers' own logs, SIGINT cancelling in-flight jobs (a warm-up included) and a re-run
that pays only for what was interrupted, SIGKILL + resume re-attaching to in-flight jobs, payload
limits, and the routes beyond run/status/cancel (health, retry, stream, purge-queue, runsync).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import videokit
from tests.conftest import make_image
from tests.endpoints import Servers, serve_workers
from tests.s3server import S3Server, s3_server  # noqa: F401
from videokit.backends.base import JobContext
from videokit.backends.preview import PreviewBackend
from videokit.backends.retry import RetryPolicy
from videokit.backends.runpod import Endpoint, RunPodBackend, RunPodConfig
from videokit.cli.endpoint_notes import endpoint_notes
from videokit.costs import GPU_PRICE_PER_SECOND
from videokit.errors import ConfigError, EndpointError
from videokit.media.probe import read_frames
from videokit.protocol import AnimateRequest, MediaInput
from videokit.serve.faults import ALL_FAULTS, FaultConfig

SIX_SCENES = """
title: Six
reference: ref.png
defaults: {width: 256, height: 144, frames: 9, fps: 8, seed: 11}
scenes:
  - {id: open, motion: the camera drifts}
  - {id: suit, edit: now in a tuxedo, motion: he adjusts his tie}
  - {id: walk, motion: he walks to the table, transition: {crossfade: 0.25}}
  - {id: beach, from: reference, edit: on a beach, motion: waves roll in}
  - {id: dance, motion: he dances}
  - {id: alt, from: suit.edit, motion: an outtake}
timeline: [open, suit, walk, beach, dance]
"""
PRICE = GPU_PRICE_PER_SECOND["ADA_80_PRO"]


def runpod_backend(
    servers: Servers,
    *,
    retry: RetryPolicy | None = None,
    stream: bool = False,
    storage: Any | None = None,
    **config: Any,
) -> RunPodBackend:
    endpoints = {stage: Endpoint(url, stream=stream) for stage, url in servers.urls.items()}
    retry = retry or RetryPolicy(attempts=8, base_s=0.05, cap_s=0.5)
    return RunPodBackend(
        RunPodConfig(api_key=None, endpoints=endpoints, **config), retry=retry, storage=storage
    )


def decoded(path: Path) -> list[np.ndarray]:
    return list(read_frames(path))


def attempts_of(manifest: dict[str, Any], stage: str) -> list[dict[str, Any]]:
    return [
        attempt
        for record in manifest["scenes"].values()
        if record.get(stage)
        for attempt in record[stage]["attempts"]
    ]


def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not in {timeout} s: {what}")
        time.sleep(0.05)


@pytest.fixture
def six(tmp_path: Path) -> Path:
    make_image(tmp_path / "ref.png", (320, 180))
    story = tmp_path / "six.yaml"
    story.write_text(textwrap.dedent(SIX_SCENES))
    return story


def test_served_render_matches_the_in_process_preview(six: Path) -> None:
    local = videokit.Pipeline(six, backend=PreviewBackend(), out=six.parent / "local").run()
    with serve_workers() as servers:
        backend = runpod_backend(servers)
        remote = videokit.Pipeline(six, backend=backend, out=six.parent / "remote").run()
        asyncio.run(backend.aclose())
    assert (
        set(remote.scenes) == set(local.scenes) == {"open", "suit", "walk", "beach", "dance", "alt"}
    )
    for scene_id, scene in local.scenes.items():
        ours, theirs = decoded(scene.clip), decoded(remote.scenes[scene_id].clip)
        assert len(ours) == len(theirs) == 9
        assert all(np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True)), scene_id
        assert scene.last_frame.read_bytes() == remote.scenes[scene_id].last_frame.read_bytes()
    assert local.final_video is not None and remote.final_video is not None
    assert all(
        np.array_equal(a, b)
        for a, b in zip(decoded(local.final_video), decoded(remote.final_video), strict=True)
    )
    # The first edit woke the animate endpoint so that its cold start overlapped the edit, and
    # the warm-up job is in the manifest like any job.
    assert servers.counters["animate"].warmups == 1
    manifest = json.loads(remote.manifest.read_text())
    assert manifest["backend"] == "runpod"
    assert [a["job_id"] for a in manifest["warmup"]] == servers.counters["animate"].warmup_ids
    job_ids = {manifest["scenes"][s]["animate"]["job_id"] for s in manifest["scenes"]}
    assert len(job_ids) == 6 and None not in job_ids


# Every kind at 20% of its own (FaultConfig.each): 80% of requests and 60% of job attempts are
# faulty. Job faults are drawn from a seeded sequence as jobs are queued; with these seeds the
# first four draws hold all three job kinds, whatever the timing. HTTP faults hit hundreds of
# requests. The servers' fault logs say what actually fired.
@pytest.mark.parametrize("seed", [4, 6])
def test_render_completes_under_20_percent_faults_of_every_kind_and_accounts_for_everything(
    six: Path, seed: int
) -> None:
    clean = videokit.Pipeline(six, backend=PreviewBackend(), out=six.parent / "clean").run()
    assert clean.final_video is not None
    faults = FaultConfig.each(0.2, seed=seed, retry_after_s=0.1, slow_s=0.3)
    ttl_s = 6.0
    with serve_workers(faults=faults) as servers:
        backend = runpod_backend(
            servers,
            # `run` is retried a bounded number of times (a repeat may create a job): with 60% of
            # requests failing, give it enough tries. Status reads retry until the deadline.
            retry=RetryPolicy(attempts=25, base_s=0.05, cap_s=0.5),
            # A stuck job is given up only when neither its cancel nor a status read gets through;
            # at 60% failed requests the default 2 s allows too few tries to make that rare.
            cancel_timeout_s=5.0,
            final_read_timeout_s=5.0,
            queue_timeout_s=1.5,
            execution_timeout_s=5.0,
            ttl_s=ttl_s,
            job_attempts=15,
            warmup=False,
            poll_max_s=0.3,
        )
        result = videokit.Pipeline(six, backend=backend, out=six.parent / "faulty").run()
        asyncio.run(backend.aclose())
        manifest = json.loads(result.manifest.read_text())
        ours = {a["job_id"] for stage in ("edit", "animate") for a in attempts_of(manifest, stage)}
        # Nothing the client knows about is left queued or running; what is left are jobs whose
        # `run` reply was lost (the client never saw their id), bounded by the ttl it sent...
        leftover = servers.unfinished()
        assert not [job.id for job in leftover if job.id in ours]
        assert all(job.policy.ttl_ms == ttl_s * 1000 for job in leftover)
        # ...which the servers enforce: soon nothing is queued or running at all.
        until(lambda: not servers.unfinished(), ttl_s + 3, "orphan jobs expired by their ttl")
        fired = Counter[str]()
        for stage in ("edit", "animate"):
            injector = servers.faults(stage)
            assert injector is not None
            fired += injector.counts()
        enqueued = {stage: list(servers.queue(stage).enqueued) for stage in ("edit", "animate")}
        # The server's log is bounded: it must still hold every attempt of this render.
        assert all(servers.queue(s).enqueued_total == len(enqueued[s]) for s in enqueued)
        timings = {
            job.id: job.payload()
            for stage in ("edit", "animate")
            for job in servers.queue(stage).jobs()
        }
    assert set(fired) == ALL_FAULTS, fired

    for scene_id, scene in clean.scenes.items():
        assert scene.last_frame.read_bytes() == result.scenes[scene_id].last_frame.read_bytes()
    assert result.final_video is not None
    assert all(
        np.array_equal(a, b)
        for a, b in zip(decoded(clean.final_video), decoded(result.final_video), strict=True)
    )

    every: list[dict[str, Any]] = []
    for stage in ("edit", "animate"):
        attempts = attempts_of(manifest, stage)
        every += attempts
        # Every job attempt the server queued (submissions and in-place retries) is an attempt in
        # the manifest, under its id; jobs whose `run` reply was lost are its UNKNOWN attempts.
        server = Counter(job_id for job_id, _ in enqueued[stage])
        recorded = Counter(
            a["job_id"] for a in attempts if a["job_id"] != "unknown" and a["status"] != "UNKNOWN"
        )
        assert recorded == Counter({job_id: server[job_id] for job_id in recorded}), stage
        # A `retry` answered 502/504 may have re-run its job: an UNKNOWN attempt under the job's
        # id (here the server re-ran none), never for a job the server does not know.
        retried_unknown = {
            a["job_id"] for a in attempts if a["status"] == "UNKNOWN" and a["job_id"] != "unknown"
        }
        assert retried_unknown <= set(server), stage
        orphans = set(server) - set(recorded)
        unknown = [a for a in attempts if a["status"] == "UNKNOWN" and a["job_id"] == "unknown"]
        # A 502/504 reply to `run` may come from a gateway after the job was created: each is an
        # UNKNOWN attempt too (here the server created none).
        gateway = sum(code in (502, 504) for code in servers.counters[stage].run_statuses)
        assert len(unknown) == len(orphans) + gateway, (stage, unknown, orphans, gateway)
    for record in manifest["scenes"].values():
        for stage in ("edit", "animate"):
            if record.get(stage):
                assert record[stage]["attempts"][-1]["status"] == "COMPLETED"
    statuses = Counter(a["status"] for a in every)
    assert statuses["COMPLETED"] == 8 and len(every) > 8, statuses

    # Costs: each attempt billed from the server's own executionTime, and the sums add up.
    for attempt in every:
        if attempt["job_id"] in timings and attempt is last_of(every, attempt["job_id"]):
            reported = timings[attempt["job_id"]].get("executionTime")
            assert attempt["execution_ms"] == reported, attempt
        if attempt["execution_ms"] is not None:
            assert not attempt["cost_estimated"]
            assert attempt["cost_usd"] == pytest.approx(attempt["execution_ms"] / 1000 * PRICE)
        else:
            assert attempt["cost_estimated"], attempt
    for record in manifest["scenes"].values():
        stages = [record[s] for s in ("edit", "animate") if record.get(s)]
        for stage_record in stages:
            paid = sum(a["cost_usd"] for a in stage_record["attempts"])
            assert stage_record["cost_usd"] == pytest.approx(paid, abs=1e-6)
    total = sum(a["cost_usd"] for a in every)
    assert manifest["cost_usd"] == pytest.approx(total, abs=1e-5)
    assert result.cost_usd == pytest.approx(total, abs=1e-5)


def last_of(attempts: list[dict[str, Any]], job_id: str) -> dict[str, Any]:
    return [a for a in attempts if a["job_id"] == job_id][-1]


def write_story(root: Path, scenes: int, frames: int = 9) -> Path:
    make_image(root / "ref.png", (320, 180))
    lines = "\n".join(f"  - {{id: s{i}, from: reference, motion: shot {i}}}" for i in range(scenes))
    story = root / "story.yaml"
    story.write_text(
        "title: Parallel\nreference: ref.png\n"
        f"defaults: {{width: 256, height: 144, frames: {frames}, fps: 8}}\nscenes:\n{lines}\n"
    )
    return story


def render_process(story: Path, servers: Servers, out: Path, **extra: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "VIDEOKIT_EDIT_ENDPOINT": servers.urls["edit"],
        "VIDEOKIT_ANIMATE_ENDPOINT": servers.urls["animate"],
        "VIDEOKIT_CONCURRENCY": "4",
        # Self-hosted endpoints are free unless priced: bill these at a RunPod pool's rate.
        "VIDEOKIT_EDIT_GPU": "ADA_80_PRO",
        "VIDEOKIT_ANIMATE_GPU": "ADA_80_PRO",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }
    cmd = [sys.executable, "-m", "videokit", "render", str(story), "--out", str(out), "--json"]
    return subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=default_signals,
    )


def default_signals() -> None:
    """Ctrl-C and SIGTERM as a terminal leaves them: a test run started as a background job
    (`cmd &` in a script) ignores SIGINT, and its children would inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def read_until(
    proc: subprocess.Popen[str], done: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    assert proc.stdout is not None
    events: list[dict[str, Any]] = []
    for line in proc.stdout:
        events.append(json.loads(line))
        if done(events):
            break
    return events


def count(kind: str, want: int) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda events: sum(1 for e in events if e["type"] == kind) >= want


INTERRUPTED = """\
title: Interrupted
reference: ref.png
defaults: {width: 256, height: 144, frames: 9, fps: 8}
scenes:
  - {id: first, motion: the camera drifts}
  - {id: second, from: first, motion: another take}
  - {id: edited, from: first, edit: now at night, motion: lights flicker}
"""


def cold_start(real: Callable[[Any], Awaitable[Any]]) -> Callable[[Any], Awaitable[Any]]:
    """A worker that takes a while to answer a warm-up, as a cold one loading its model does."""

    async def handler(job: Any) -> Any:
        if job["input"].get("warmup"):
            await asyncio.sleep(3.0)
        return await real(job)

    return handler


def billed(attempt: dict[str, Any]) -> None:
    """The attempt's cost is the server's execution time, or, if it never said, an estimate."""
    if attempt["execution_ms"] is not None:
        assert not attempt["cost_estimated"]
        assert attempt["cost_usd"] == pytest.approx(attempt["execution_ms"] / 1000 * PRICE)
    else:
        assert attempt["cost_estimated"] and attempt["cost_usd"] == 0.0


def test_sigint_cancels_every_in_flight_job_then_a_rerun_pays_only_for_those(
    tmp_path: Path,
) -> None:
    # One slot per server, 3 s a job (and 3 s for a warm-up: a cold worker loading its model).
    # When `first` is done, `second` and the warm-up of the animate endpoint are submitted (one
    # runs, the other queues) and `edited` starts its edit. SIGINT then: three jobs in flight on
    # two servers, one of them queued.
    make_image(tmp_path / "ref.png", (320, 180))
    story = tmp_path / "story.yaml"
    story.write_text(INTERRUPTED)
    out = tmp_path / "out"
    with serve_workers(
        min_job_seconds=3.0, concurrency=1, handlers={"animate": cold_start}
    ) as servers:
        proc = render_process(story, servers, out)
        events = read_until(
            proc,
            lambda evs: any(e["type"] == "job_submitted" and e["stage"] == "edit" for e in evs),
        )
        until(lambda: bool(servers.counters["animate"].warmup_ids), 10, "the warm-up was sent")
        submitted = {
            (e["scene"], e["stage"]): e["job_id"] for e in events if e["type"] == "job_submitted"
        }
        finished = {e["scene"] for e in events if e["type"] == "scene_done"}
        assert finished == {"first"}, events
        [warmup] = servers.counters["animate"].warmup_ids
        in_flight = {
            "animate": {submitted[("second", "animate")], warmup},
            "edit": {submitted[("edited", "edit")]},
        }
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 130, stderr
        assert "Traceback" not in stderr and "interrupted" in stderr
        for stage in ("edit", "animate"):
            cancels = dict(servers.counters[stage].cancels)
            assert set(cancels) == in_flight[stage], stage
            assert max(cancels.values()) - sent < 2.0
            statuses = {job.id: job.status for job in servers.queue(stage).jobs()}
            assert {statuses[job_id] for job_id in in_flight[stage]} == {"CANCELLED"}

        manifest = json.loads((out / "manifest.json").read_text())
        running = manifest["scenes"]["second"]["animate"]["attempts"][-1]
        warm = manifest["warmup"][-1]
        edit = manifest["scenes"]["edited"]["edit"]["attempts"][-1]
        expected = {
            (submitted[("second", "animate")], "CANCELLED"),
            (warmup, "CANCELLED"),
            (submitted[("edited", "edit")], "CANCELLED"),
        }
        assert {(a["job_id"], a["status"]) for a in (running, warm, edit)} == expected
        # Each cancelled job's cost comes from the execution time read after its cancel; the
        # running ones had run, so they cost something.
        for attempt in (running, warm, edit):
            billed(attempt)
        assert edit["execution_ms"] > 0 and (running["execution_ms"] or warm["execution_ms"])

        runs_before = {stage: c.runs for stage, c in servers.counters.items()}
        again = render_process(story, servers, out)
        stdout, stderr = again.communicate(timeout=120)
        assert again.returncode == 0, stderr
        rerun = [json.loads(line) for line in stdout.splitlines()]
        resubmitted = {(e["scene"], e["stage"]) for e in rerun if e["type"] == "job_submitted"}
        # Nothing for `first`, which had finished: only what the interrupt cut short.
        assert resubmitted == {("second", "animate"), ("edited", "edit"), ("edited", "animate")}
        new_runs = {stage: c.runs - runs_before[stage] for stage, c in servers.counters.items()}
        assert new_runs == {"edit": 1, "animate": 2}
    manifest = json.loads((out / "manifest.json").read_text())
    second = manifest["scenes"]["second"]["animate"]
    assert second["status"] == "done"
    # The interrupted attempt is kept (it was paid for), then the one that finished.
    assert [a["status"] for a in second["attempts"]] == ["CANCELLED", "COMPLETED"]
    assert second["cost_usd"] == pytest.approx(
        sum(a["cost_usd"] for a in second["attempts"]), abs=1e-6
    )


def test_sigkill_then_rerun_reattaches_to_in_flight_jobs(tmp_path: Path) -> None:
    story = write_story(tmp_path, scenes=6)
    with serve_workers(min_job_seconds=1.5, concurrency=2) as servers:
        out = tmp_path / "out"
        first = render_process(story, servers, out)
        events = read_until(first, count("scene_done", 2))
        first.kill()
        first.wait(timeout=10)
        done = {e["scene"] for e in events if e["type"] == "scene_done"}
        manifest = json.loads((out / "manifest.json").read_text())
        in_flight = {
            scene: record["animate"]["job_id"]
            for scene, record in manifest["scenes"].items()
            if record.get("animate") and record["animate"]["status"] == "submitted"
        }
        assert in_flight, "nothing was in flight at the kill; the test proves nothing"
        runs_before = servers.counters["animate"].runs

        second = render_process(story, servers, out)
        stdout, stderr = second.communicate(timeout=120)
        assert second.returncode == 0, stderr
        events = [json.loads(line) for line in stdout.splitlines()]
        submitted = [e for e in events if e["type"] == "job_submitted"]
        resubmitted_done = {e["scene"] for e in submitted} & done
        assert not resubmitted_done, f"finished scenes were submitted again: {resubmitted_done}"
        reattached = {e["scene"]: e["job_id"] for e in submitted if e["resumed"]}
        assert reattached == in_flight
        new_runs = servers.counters["animate"].runs - runs_before
        assert new_runs == 6 - len(done) - len(in_flight)


def big_reference(root: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(3)
    noise = rng.integers(0, 256, size=(1400, 1700, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "big.png", compress_level=1)  # ~7 MB, incompressible
    assert (root / "big.png").stat().st_size > 6_000_000
    make_image(root / "ref.png", (128, 128))
    # A starting image is fitted to the frame size before it is sent; an edit's extra reference
    # images go as they are, so that is where a big file reaches the wire.
    story = root / "big.yaml"
    story.write_text(
        "title: Big\nreference: ref.png\n"
        "defaults: {width: 128, height: 128, frames: 5, fps: 8}\n"
        "scenes:\n"
        "  - {id: one, motion: drift, edit: {prompt: in this style, images: [big.png]}}\n"
        "  - {id: two, from: reference, motion: zoom, edit: {prompt: again, images: [big.png]}}\n"
    )
    return story


def test_inputs_over_the_payload_limit_travel_through_storage(
    tmp_path: Path,
    s3_server: S3Server,  # noqa: F811
) -> None:
    from videokit.storage import S3Storage, StorageConfig

    story = big_reference(tmp_path)
    config = StorageConfig(
        bucket=s3_server.bucket,
        endpoint_url=s3_server.endpoint_url,
        access_key_id="testing",
        secret_access_key="testing",
    )
    with serve_workers() as servers:
        backend = runpod_backend(servers, storage=S3Storage(config, client=s3_server.client))
        result = videokit.Pipeline(story, backend=backend, out=tmp_path / "out").run()
        bodies = servers.counters["edit"].bodies
    run_bodies = [b for b in bodies if b'"prompt"' in b]
    assert len(run_bodies) == 2
    assert run_bodies and all(len(b) < 100_000 for b in run_bodies)  # a URL, not 9 MB of base64
    assert all(b"X-Amz-Signature" in b for b in run_bodies)
    listed = s3_server.client.list_objects_v2(Bucket=s3_server.bucket, Prefix="videokit/inputs/")
    # Both jobs send the same two images (the reference frame and big.png): each uploaded once.
    assert len(listed.get("Contents", [])) == 2
    assert result.final_video is not None and result.scenes["one"].frames == 5


def test_inputs_over_the_payload_limit_without_storage_are_refused_before_any_job(
    tmp_path: Path,
) -> None:
    # The first scene is small and would go through; the second's edit takes an extra image
    # whose base64 is over RunPod's 10 MB (extra images are sent as they are; a starting image
    # would be fitted to the frame). Checked per job only, the first would be paid for already.
    from PIL import Image

    make_image(tmp_path / "ref.png", (320, 180))
    noise = np.random.default_rng(5).integers(0, 256, size=(1600, 1700, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "huge.png", compress_level=1)
    assert (tmp_path / "huge.png").stat().st_size * 4 / 3 > 10_000_000
    story = tmp_path / "huge.yaml"
    story.write_text(
        "title: Huge\nreference: ref.png\n"
        "defaults: {width: 128, height: 128, frames: 5, fps: 8}\n"
        "scenes:\n  - {id: small, motion: drift}\n"
        "  - {id: huge, motion: zoom, edit: {prompt: like this, images: [huge.png]}}\n"
    )
    with serve_workers() as servers:
        backend = runpod_backend(servers, warmup=False)
        with pytest.raises(ConfigError) as caught:
            videokit.Pipeline(story, backend=backend, out=tmp_path / "out").run()
        runs = {stage: c.runs for stage, c in servers.counters.items()}
    message = str(caught.value)
    assert "edit" in message and "MB" in message and "VIDEOKIT_S3_BUCKET" in message
    assert runs == {"edit": 0, "animate": 0}  # refused up front, nothing paid


# -- the routes beyond run/status/cancel -----------------------------------------------------------


def animate_request(tmp_path: Path) -> AnimateRequest:
    image = make_image(tmp_path / "frame.png", (128, 128)).read_bytes()
    return AnimateRequest(
        image=MediaInput.from_bytes(image), prompt="drift", seed=3, width=128, height=128, frames=5
    )


def drive(backend: RunPodBackend, work: Callable[[], Awaitable[Any]]) -> Any:
    async def go() -> Any:
        try:
            return await work()
        finally:
            await backend.aclose()

    return asyncio.run(go())


def test_health_readiness_and_the_plan_note_come_from_the_health_route() -> None:
    with serve_workers(concurrency={"edit": 1, "animate": 3}) as servers:
        backend = runpod_backend(servers)
        health = drive(backend, lambda: backend.readiness(["edit", "animate"]))
        notes = endpoint_notes(backend, ["edit", "animate"])
        unreachable = RunPodBackend(
            RunPodConfig(api_key=None, endpoints={"edit": Endpoint("http://127.0.0.1:9/v2/edit")})
        )
        with pytest.raises(EndpointError, match="did not answer `health`"):
            drive(unreachable, lambda: unreachable.readiness(["edit"]))
        broken = endpoint_notes(unreachable, ["edit"])
    assert (health["edit"].idle, health["animate"].idle) == (1, 3)
    assert health["animate"].workers == 3 and health["animate"].in_queue == 0
    assert notes == [
        f"edit endpoint {servers.urls['edit']}: 1 worker(s) up (1 idle)",
        f"animate endpoint {servers.urls['animate']}: 3 worker(s) up (3 idle)",
    ]
    assert len(broken) == 1 and "unreachable" in broken[0]
    assert endpoint_notes(PreviewBackend(), ["edit"]) == []


def first_call_fails(real: Callable[[Any], Awaitable[Any]]) -> Callable[[Any], Awaitable[Any]]:
    calls: list[str] = []

    async def handler(job: Any) -> Any:
        calls.append(job["id"])
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return await real(job)

    return handler


def test_a_transient_failure_is_retried_in_place_on_the_server(tmp_path: Path) -> None:
    request = animate_request(tmp_path)
    with serve_workers(handlers={"animate": first_call_fails}) as servers:
        backend = runpod_backend(servers)
        ctx = JobContext(scene="s", stage="animate")
        result = drive(backend, lambda: backend.animate(request, ctx))
        enqueued = list(servers.queue("animate").enqueued)
        runs = servers.counters["animate"].runs
    assert result.frames == 5
    job_id = ctx.attempts[0].job_id
    assert [(a.job_id, a.status) for a in ctx.attempts] == [
        (job_id, "FAILED"),
        (job_id, "COMPLETED"),
    ]
    assert enqueued == [(job_id, 0), (job_id, 1)] and runs == 1  # the input was sent once
    assert all(a.execution_ms is not None for a in ctx.attempts)


def streaming(real: Callable[[Any], Awaitable[Any]]) -> Callable[[Any], Any]:
    async def handler(job: Any) -> Any:
        yield {"progress": 0.25, "message": "denoising"}
        await asyncio.sleep(0.3)  # long enough for a poll to see the first chunk on its own
        yield {"progress": 0.75}
        yield await real(job)

    return handler


def test_a_generator_handlers_progress_is_surfaced_through_stream(tmp_path: Path) -> None:
    request = animate_request(tmp_path)
    seen: list[tuple[float, str | None]] = []
    with serve_workers(handlers={"animate": streaming}) as servers:
        backend = runpod_backend(servers, stream=True)
        ctx = JobContext(scene="s", stage="animate", on_progress=lambda f, m: seen.append((f, m)))
        result = drive(backend, lambda: backend.animate(request, ctx))
        polls = backend.stats.requests
    assert result.frames == 5 and ctx.attempts[-1].status == "COMPLETED"
    assert (0.25, "denoising") in seen and (0.75, None) in seen
    assert polls["stream"] >= 1 and polls["status"] == 1  # one status read, for the output


def test_purge_queue_and_runsync_are_there_when_asked_for(tmp_path: Path) -> None:
    request = animate_request(tmp_path)
    stuck = FaultConfig(rates={"stuck": 1.0}, seed=1)
    with serve_workers(faults=stuck) as servers:
        for _ in range(2):
            httpx.post(
                f"{servers.urls['edit']}/run", json={"input": {"warmup": True}}
            ).raise_for_status()
        backend = runpod_backend(servers)
        removed = drive(backend, lambda: backend.purge_queue("edit"))
        left = [job.status for job in servers.queue("edit").jobs()]
    assert removed == 2 and left == []
    with serve_workers() as servers:
        backend = runpod_backend(servers)
        answer = drive(
            backend,
            lambda: backend.runsync("animate", request.model_dump(mode="json"), wait_s=30),
        )
    assert answer["status"] == "COMPLETED" and answer["output"]["frames"] == 5
