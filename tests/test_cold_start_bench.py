"""``benchmarks/cold_start.py``: a real worker process started cold with the tiny engine, its time
split into start and imports, load and first job; and the RunPod split of a job's status, against
a stand-in for RunPod's API (no network)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks import cold_start

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["animate", "edit"])
def test_a_tiny_worker_cold_start_is_split_into_ordered_phases(stage: str, tmp_path: Path) -> None:
    for needed in ("torch", "diffusers", "runpod"):  # the worker's, not the benchmark's
        pytest.importorskip(needed)
    out = tmp_path / "cold.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("VIDEOKIT_WARMUP_STEP", None)
    done = subprocess.run(
        [sys.executable, "benchmarks/cold_start.py", "--tiny", "--stage", stage, "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=240, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert (result["mode"], result["stage"], result["engine"]) == ("local", stage, "tiny")
    phases = result["phases_s"]
    assert list(phases) == ["container", "start_imports", "load", "first_job"]
    assert phases["container"] is None  # no container locally
    assert all(phases[name] > 0 for name in ("start_imports", "load", "first_job")), phases
    marks = result["marks_s"]
    assert 0 < marks["imports_ready"] < marks["loaded"] < marks["answered"] == result["total_s"]
    total = phases["start_imports"] + phases["load"] + phases["first_job"]
    assert total == pytest.approx(result["total_s"], abs=0.01)
    # The load is the worker's own record: prepare within it, the warm-up step within that.
    load = result["load"]
    assert phases["load"] >= load["prepare_s"] >= load["warmup_s"] > 0
    assert load["options"] == {"warmup": "on"} and load["attention"]["used"] == "native"
    job = result["first_job"]
    assert job["status"] == "ok"
    # The handler runs within the first job's phase (give or take the lines' arrival stamps).
    assert phases["first_job"] >= job["handler_ms"] / 1000 - 0.05
    assert job["engine_timings_ms"]["denoise"] > 0
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"cold start, local: {stage} worker (python -u workers/{stage}/")
    rows = [line.split("|")[1].strip() for line in lines if line.startswith("| ")]
    assert rows == ["phase", "container", "start + imports", "load", "first job", "total"]
    assert "| container | n/a locally |" in done.stdout


def _runpod(statuses: dict[str, list[dict[str, Any]]], workers: dict[str, int]) -> httpx.Client:
    """RunPod's /health, /run and /status: the warm-up job is ``warm-1``, the real one ``job-1``,
    each answering its statuses in the order polled."""

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer key"
        path = request.url.path
        if path.endswith("/health"):
            return httpx.Response(200, json={"jobs": {}, "workers": workers})
        if path.endswith("/run"):
            document = json.loads(request.content)["input"]
            job_id = "warm-1" if document == {"warmup": True} else "job-1"
            assert job_id == "warm-1" or document["kind"] == "animate"
            return httpx.Response(200, json={"id": job_id, "status": "IN_QUEUE"})
        job_id = path.rsplit("/", 1)[1]
        return httpx.Response(200, json=statuses[job_id].pop(0))

    return httpx.Client(
        transport=httpx.MockTransport(answer), headers={"Authorization": "Bearer key"}
    )


def test_a_runpod_cold_start_says_what_delay_time_cannot_separate() -> None:
    """A worker whose warm-up answer reports no load (not a videokit worker)."""
    warm = {"id": "warm-1", "status": "COMPLETED", "delayTime": 41_250, "executionTime": 5,
            "output": {"warm": True}}  # fmt: skip
    completed = {
        "id": "job-1",
        "status": "COMPLETED",
        "delayTime": 40,
        "executionTime": 15_800,
        "output": {"inference_ms": 14_900, "model": "wan2.2-i2v-a14b/lightning"},
    }
    statuses = {"warm-1": [warm], "job-1": [{"id": "job-1", "status": "IN_QUEUE"}, completed]}
    job = cold_start.first_job("animate", tiny=False)
    with _runpod(statuses, {"idle": 0, "running": 0, "throttled": 2}) as client:
        result = cold_start.measure_endpoint(
            "ep1", job, client=client, base_url="https://runpod.test/v2", sleep=lambda _: None
        )
    assert result["status"] == "COMPLETED"
    assert (result["warmup_job_id"], result["job_id"]) == ("warm-1", "job-1")
    assert result["phases_s"] == {
        "container": None,
        "load": None,
        "queue_container_load": 41.25,
        "first_job": 15.8,
    }
    assert result["inference_s"] == 14.9
    (note,) = result["notes"]  # throttled workers are not up: a cold start, and no warning
    assert note.startswith("delayTime holds queue wait, container start")
    lines = cold_start.table(result)
    assert (
        "| queue + container + load | 41.25 | delayTime: not separable (see the notes) |" in lines
    )
    assert any(line.startswith("| first job | 15.80 | its executionTime") for line in lines)


def test_a_videokit_workers_warm_up_answer_splits_container_load_and_first_step() -> None:
    warm = {"id": "warm-1", "status": "COMPLETED", "delayTime": 30_000, "executionTime": 3,
            "output": {"warm": True, "model": "m", "load_ms": 12_500, "warmup_ms": 1_500}}  # fmt: skip
    completed = {"status": "COMPLETED", "delayTime": 20, "executionTime": 2_000, "output": {}}
    with _runpod({"warm-1": [warm], "job-1": [completed]}, {"idle": 1, "running": 0}) as client:
        result = cold_start.measure_endpoint(
            "ep1",
            cold_start.first_job("animate", tiny=True),
            client=client,
            base_url="https://runpod.test/v2",
        )
    phases = result["phases_s"]
    assert (phases["queue_container"], phases["load"], phases["first_step"]) == (17.5, 11.0, 1.5)
    assert phases["first_job"] == 2.0
    assert result["notes"] == ["not scaled to zero when sent (idle 1): maybe not a cold start"]


@pytest.mark.slow
def test_the_warm_up_answer_of_a_served_tiny_worker_carries_its_load() -> None:
    """``videokit serve animate --engine tiny``, a real process speaking RunPod's v2 API: the
    benchmark's two jobs, the load and warm-up step read from the warm-up answer. (Locally the
    engine loads before the first job arrives, so delayTime does not hold it.)"""
    for needed in ("torch", "diffusers"):
        pytest.importorskip(needed)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "VIDEOKIT_WARMUP_STEP": "on", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "videokit", "serve", "animate", "--engine", "tiny"]
    proc = subprocess.Popen(
        [*command, "--port", str(port), "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}/v2"
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(f"{base}/animate/health", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline
                time.sleep(0.2)
        with httpx.Client(timeout=30) as client:
            result = cold_start.measure_endpoint(
                "animate", cold_start.first_job("animate", tiny=True), client=client,
                base_url=base, poll_s=0.1, timeout=120,
            )  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert result["status"] == "COMPLETED"
    phases = result["phases_s"]
    assert phases["load"] > 0 and phases["first_step"] > 0 and phases["first_job"] > 0
    assert isinstance(phases["queue_container"], float)
    assert any(line.startswith("| first step |") for line in cold_start.table(result))
