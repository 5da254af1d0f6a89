"""How much time does videokit add on top of the GPU? (run by hand; prints a table)

Serves the animate worker with ``videokit serve`` in its own process, with an engine padded to take
2 s per job (the preview engine at a small size does the real work in well under that), and
renders through the RunPod backend:

* 12 chained scenes (each starts from the previous one's last frame): goal makespan <= 1.05 x the
  sum of the jobs' execution times;
* 4 independent chains of 3 scenes with concurrency 4: goal makespan <= 1.05 x the longest chain.

Makespan runs from the first job's submission to the last scene's completion, as seen by the
client. Execution times are the server's ``executionTime``. The same stories are also driven by a
naive client that polls every 5 s, as the seed tools did, for comparison.

    .venv/bin/python benchmarks/overhead.py [--job-seconds 2] [--port 18900]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

import videokit
from videokit.backends.base import JobContext, Stage
from videokit.backends.runpod import Endpoint, JobHandle, JobStatus, RunPodBackend, RunPodConfig
from videokit.backends.runpod.jobs import Watch
from videokit.pipeline.events import Event, JobSubmitted, SceneDone


class NaivePollingBackend(RunPodBackend):
    """The seed tools' client: submit, then poll status every 5 s."""

    def __init__(self, config: RunPodConfig) -> None:
        super().__init__(config)
        for route in self.routes.values():
            for lane in route.lanes:
                lane.policy.follow = self._follow  # type: ignore[method-assign]

    async def _follow(
        self, stage: Stage, handle: JobHandle, watch: Watch, ctx: JobContext
    ) -> JobStatus:
        while True:
            status = await handle.status()
            if status.done:
                return status
            await asyncio.sleep(5.0)


@dataclass
class Row:
    story: str
    client: str
    makespan_s: float
    busy_s: float
    goal_s: float
    jobs: int
    requests_per_job: float
    # Status reads of the job read most, and the budget for a job of its length.
    most_reads: int = 0
    budget: float = 0.0

    @property
    def ratio(self) -> float:
        return self.makespan_s / self.goal_s * 1.05 if self.goal_s else float("nan")


def write_story(root: Path, name: str, chains: int, length: int) -> Path:
    Image.new("RGB", (320, 180), (120, 90, 200)).save(root / "ref.png")
    scenes = []
    for c in range(chains):
        for i in range(length):
            source = "from: reference, " if i == 0 else ""
            scenes.append(f"  - {{id: c{c}s{i}, {source}motion: chain {c} shot {i}}}")
    path = root / f"{name}.yaml"
    path.write_text(
        f"title: {name}\nreference: ref.png\n"
        "defaults: {width: 256, height: 144, frames: 9, fps: 8}\n"
        "scenes:\n" + "\n".join(scenes) + "\n"
    )
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(port: int, job_seconds: float, concurrency: int) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable, "-m", "videokit", "serve", "animate", "--port", str(port),
        "--concurrency", str(concurrency), "--min-job-seconds", str(job_seconds),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/v2/animate/health", timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("videokit serve did not start")


def measure(
    story: Path, backend: RunPodBackend, out: Path, concurrency: int
) -> tuple[float, dict[str, Any]]:
    first_submit: float | None = None
    last_done = 0.0

    def on_event(event: Event) -> None:
        nonlocal first_submit, last_done
        if isinstance(event, JobSubmitted) and first_submit is None:
            first_submit = time.monotonic()
        if isinstance(event, SceneDone):
            last_done = time.monotonic()

    result = videokit.Pipeline(
        story, backend=backend, out=out, on_event=on_event, concurrency=concurrency
    ).run()
    assert first_submit is not None
    manifest = json.loads(result.manifest.read_text())
    return last_done - first_submit, manifest


def execution_s(manifest: dict[str, Any], scene: str) -> float:
    attempts = manifest["scenes"][scene]["animate"]["attempts"]
    return sum((a["execution_ms"] or 0) for a in attempts) / 1000


def job_seconds_of(manifest: dict[str, Any], job_id: str) -> list[float]:
    """How long ``job_id`` took from submission to its end (queue + run), as the server said."""
    return [
        ((a["execution_ms"] or 0) + (a["delay_ms"] or 0)) / 1000
        for scene in manifest["scenes"].values()
        for a in (scene.get("animate") or {}).get("attempts", [])
        if a["job_id"] == job_id
    ]


def run(job_seconds: float) -> list[Row]:
    rows: list[Row] = []
    port = free_port()
    server = start_server(port, job_seconds, concurrency=4)
    try:
        endpoint = Endpoint(f"http://127.0.0.1:{port}/v2/animate", concurrency=4)
        config = RunPodConfig(api_key=None, endpoints={"animate": endpoint}, warmup=False)
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            cases = [("12 chained", 1, 12, 1), ("4 x 3 chains", 4, 3, 4)]
            for label, chains, length, concurrency in cases:
                story = write_story(root, label.replace(" ", ""), chains, length)
                for name, cls in (
                    ("videokit", RunPodBackend),
                    ("naive 5 s poll", NaivePollingBackend),
                ):
                    backend = cls(config)
                    out = root / f"out-{label}-{name}".replace(" ", "")
                    makespan, manifest = measure(story, backend, out, concurrency)
                    per_chain = [
                        sum(execution_s(manifest, f"c{c}s{i}") for i in range(length))
                        for c in range(chains)
                    ]
                    busy = sum(per_chain) if chains == 1 else max(per_chain)
                    jobs = chains * length
                    requests = sum(backend.stats.requests.values())
                    row = Row(label, name, makespan, busy, busy, jobs, requests / jobs)
                    if backend.stats.polls:
                        job, row.most_reads = backend.stats.polls.most_common(1)[0]
                        seconds = max(job_seconds, *job_seconds_of(manifest, job))
                        row.budget = backend.attach("animate", job).budget.most_requests(seconds)
                    rows.append(row)
    finally:
        server.terminate()
        server.wait(10)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--job-seconds", type=float, default=2.0)
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    rows = run(args.job_seconds)
    print()
    print(
        "| story | client | makespan s | GPU-busy bound s | makespan / bound | goal "
        "| HTTP requests/job | status reads, busiest job | its budget |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        ratio = row.makespan_s / row.busy_s
        goal = "<= 1.05" if row.client == "videokit" else "-"
        met = (" met" if ratio <= 1.05 else " MISSED") if row.client == "videokit" else ""
        print(
            f"| {row.story} | {row.client} | {row.makespan_s:.2f} | {row.busy_s:.2f} | "
            f"{ratio:.3f} | {goal}{met} | {row.requests_per_job:.1f} | {row.most_reads} | "
            f"{row.budget:.0f} |"
        )
    print("\nbound: sum of execution times (chained) or the longest chain's (parallel)")
    print("budget: a job of T seconds may cost burst + 2 T status reads (schedule.PollBudget)")


if __name__ == "__main__":
    main()
