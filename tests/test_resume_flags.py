"""Interrupted renders resume without paying twice, whatever the flags (``--force``).

Real ``videokit serve`` endpoints on loopback count every job they are sent; the render is the
installed command in its own process, killed with SIGKILL or interrupted with SIGINT.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.endpoints import Servers, serve_workers
from tests.test_runpod import count, default_signals, read_until, until, write_story


def render(story: Path, servers: Servers, out: Path, *flags: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "VIDEOKIT_EDIT_ENDPOINT": servers.urls["edit"],
        "VIDEOKIT_ANIMATE_ENDPOINT": servers.urls["animate"],
        "VIDEOKIT_CONCURRENCY": "2",
        "PYTHONUNBUFFERED": "1",
    }
    command = [sys.executable, "-m", "videokit", "render", str(story), "--out", str(out)]
    return subprocess.Popen(
        [*command, *flags, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=default_signals,
    )


def finish(proc: subprocess.Popen[str]) -> list[dict[str, Any]]:
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stderr
    return [json.loads(line) for line in stdout.splitlines()]


def in_flight(out: Path) -> dict[str, str]:
    manifest = json.loads((out / "manifest.json").read_text())
    return {
        scene: record["animate"]["job_id"]
        for scene, record in manifest["scenes"].items()
        if record.get("animate") and record["animate"]["status"] == "submitted"
    }


def test_a_killed_force_render_run_again_pays_for_no_job_it_finished(tmp_path: Path) -> None:
    story = write_story(tmp_path, scenes=6)
    out = tmp_path / "out"
    with serve_workers(min_job_seconds=1.5, concurrency=2) as servers:
        finish(render(story, servers, out))  # everything cached: --force has work to ignore
        before = servers.counters["animate"].runs
        assert before == 6

        killed = render(story, servers, out, "--force")
        events = read_until(killed, count("scene_done", 2))
        # Both slots taken by recorded jobs: no submission can be half done at the kill.
        until(lambda: len(in_flight(out)) == 2, 5, "the next two jobs were submitted")
        killed.kill()
        killed.wait(timeout=10)
        finished = {e["scene"] for e in events if e["type"] == "scene_done"}
        running = in_flight(out)
        assert finished and running, "the kill must fall between jobs for this test to mean much"

        events = finish(render(story, servers, out, "--force"))
        submitted = [e for e in events if e["type"] == "job_submitted"]
        assert not {e["scene"] for e in submitted} & finished, "a finished job was paid again"
        assert {e["scene"]: e["job_id"] for e in submitted if e["resumed"]} == running
        # Every scene forced exactly once across the killed run and the resumed one.
        assert servers.counters["animate"].runs - before == 6
        cached = {e["scene"] for e in events if e["type"] == "scene_cached"}
        assert cached == finished

        # That run finished: the same command now is a new --force, which renders everything.
        finish(render(story, servers, out, "--force"))
        assert servers.counters["animate"].runs - before == 12


def test_an_interrupted_force_render_says_how_to_resume_and_resuming_repays_nothing(
    tmp_path: Path,
) -> None:
    story = write_story(tmp_path, scenes=4)
    out = tmp_path / "out"
    with serve_workers(min_job_seconds=1.5, concurrency=2) as servers:
        finish(render(story, servers, out))
        before = servers.counters["animate"].runs
        interrupted = render(story, servers, out, "--force")
        events = read_until(interrupted, count("scene_done", 2))
        until(lambda: len(in_flight(out)) == 2, 5, "the next two jobs were submitted")
        interrupted.send_signal(signal.SIGINT)
        _, stderr = interrupted.communicate(timeout=30)
        assert interrupted.returncode == 130, stderr
        command = shlex.join(
            ["videokit", "render", str(story), "--out", str(out), "--force", "--json"]
        )
        assert f"run the same command again: {command}" in " ".join(stderr.split())
        finished = {e["scene"] for e in events if e["type"] == "scene_done"}

        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["run"]["finished"] is False
        cancelled = {
            scene
            for scene, record in manifest["scenes"].items()
            if record["animate"]["attempts"][-1]["status"] == "CANCELLED"
        }
        assert cancelled, "the interrupt must cut a job short for this test to mean much"
        runs_interrupted = servers.counters["animate"].runs - before

        events = finish(render(story, servers, out, "--force"))
        submitted = {e["scene"] for e in events if e["type"] == "job_submitted"}
        assert submitted == {"s0", "s1", "s2", "s3"} - finished
        # The resumed run paid only for the scenes the interrupted one had not finished.
        resumed_runs = servers.counters["animate"].runs - before - runs_interrupted
        assert resumed_runs == 4 - len(finished)
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["run"]["finished"] is True
