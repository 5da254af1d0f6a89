"""A stage that lists several endpoints: the first healthy one takes a job, which moves on when it
fails there transiently or the endpoint is unreachable, never running twice at once.

Real ``videokit serve`` endpoints on loopback (one a ``--faults`` process failing every job), the
real CLI in a subprocess, and the manifest it writes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import make_image
from tests.endpoints import serve_workers
from videokit.media.probe import probe_video

STORY = """\
    title: Routed
    reference: ref.png
    defaults: {width: 320, height: 192, fps: 16, frames: 9}
    scenes:
      - id: one
        motion: the lamp flickers
      - id: two
        edit: {prompt: "the same lamp, now blue"}
        motion: the lamp sways
      - id: three
        motion: the light fades
"""


@pytest.fixture
def story(tmp_path: Path) -> Path:
    make_image(tmp_path / "ref.png", (320, 192))
    path = tmp_path / "story.yaml"
    path.write_text(textwrap.dedent(STORY))
    return path


def videokit(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "videokit", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "VIDEOKIT_WARMUP": "0", **env},
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v2/animate"


def animate_records(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {scene: record["animate"] for scene, record in manifest["scenes"].items()}


@contextmanager
def served_with_faults(spec: str) -> Iterator[str]:
    """``videokit serve animate --faults SPEC`` in its own process; yields its endpoint URL."""
    port = free_port()
    command = [sys.executable, "-m", "videokit", "serve", "animate", "--port", str(port)]
    proc = subprocess.Popen(
        [*command, "--faults", spec, "--fault-seed", "1", "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip().partition("=")[2]
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{url}/health", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_a_job_that_fails_on_the_first_endpoint_runs_once_on_the_next(
    tmp_path: Path, story: Path
) -> None:
    with served_with_faults("failed@1.0") as first, serve_workers() as healthy:
        second = healthy.urls["animate"]
        out = tmp_path / "out"
        env = {
            "VIDEOKIT_EDIT_ENDPOINT": healthy.urls["edit"],
            "VIDEOKIT_ANIMATE_ENDPOINT": f"{first},{second}",
        }
        plan = videokit(tmp_path, "plan", str(story), "--out", str(out), "--json", **env)
        assert plan.returncode == 0, plan.stderr
        planned = json.loads(plan.stdout)
        assert [e["endpoint"] for e in planned["routes"]["animate"]] == [first, second]
        rendered = videokit(tmp_path, "render", str(story), "--out", str(out), "--json", **env)
        assert rendered.returncode == 0, rendered.stderr
        assert probe_video(out / "final.mp4").frames == planned["final_frames"]
        # Each job ran once where it failed, and once where it then succeeded: never twice on
        # one endpoint (no resubmission, no retry in place before moving on).
        jobs = httpx.get(f"{first}/health", timeout=5).json()["jobs"]
        assert (jobs["failed"], jobs["retried"], jobs["completed"]) == (3, 0, 0)
        assert healthy.counters["animate"].runs == 3
        manifest = json.loads((out / "manifest.json").read_text())
        for scene, record in animate_records(manifest).items():
            assert record["endpoint"] == second, scene
            [moved] = record["moves"]
            assert moved.startswith(f"{first}: ") and "failed" in moved
            failed, done = record["attempts"]
            assert (failed["endpoint"], failed["status"]) == (first, "FAILED")
            assert (done["endpoint"], done["status"]) == (second, "COMPLETED")
        # Cached under the endpoint that made it: rendering again submits nothing anywhere.
        again = videokit(tmp_path, "render", str(story), "--out", str(out), "--json", **env)
        assert again.returncode == 0, again.stderr
        assert httpx.get(f"{first}/health", timeout=5).json()["jobs"]["failed"] == 3
        assert healthy.counters["animate"].runs == 3


def test_an_unreachable_first_endpoint_is_named_by_plan_and_skipped_by_render(
    tmp_path: Path, story: Path
) -> None:
    gone = closed_port_url()
    with serve_workers() as healthy:
        second = healthy.urls["animate"]
        out = tmp_path / "out"
        env = {
            "VIDEOKIT_EDIT_ENDPOINT": healthy.urls["edit"],
            "VIDEOKIT_ANIMATE_ENDPOINT": f"{gone},{second}",
        }
        plan = videokit(tmp_path, "plan", str(story), "--out", str(out), **env)
        assert plan.returncode == 0, plan.stderr
        assert f"animate endpoint 1 of 2, {gone} (videokit): unreachable" in plan.stdout
        assert f"its jobs go straight to {second}" in plan.stdout
        rendered = videokit(tmp_path, "render", str(story), "--out", str(out), "--json", **env)
        assert rendered.returncode == 0, rendered.stderr
        assert healthy.counters["animate"].runs == 3
        manifest = json.loads((out / "manifest.json").read_text())
        for record in animate_records(manifest).values():
            assert record["endpoint"] == second
            assert [a["endpoint"] for a in record["attempts"]] == [second]
            assert record["moves"][0].startswith(f"{gone}: unreachable")


def test_every_endpoint_of_a_stage_must_render_the_story(tmp_path: Path, story: Path) -> None:
    with serve_workers() as healthy:
        env = {
            "VIDEOKIT_EDIT_ENDPOINT": healthy.urls["edit"],
            # The ComfyUI worker renders sides in multiples of 64 from 256: 320x192 is not one.
            "VIDEOKIT_ANIMATE_ENDPOINT": f"{healthy.urls['animate']},comfy-wan-worker:abc123",
            "RUNPOD_API_KEY": "rp-test",
        }
        checked = videokit(tmp_path, "validate", str(story), "--backend", "runpod", **env)
        assert checked.returncode == 2, checked.stdout
        assert "comfy-wan-worker renders sides of 256-1024 px, multiples of 64" in checked.stderr
        assert healthy.counters["animate"].runs == 0
