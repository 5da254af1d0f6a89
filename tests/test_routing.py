"""A stage that lists several endpoints: the first healthy one takes a job, which moves on when it
fails there transiently or the endpoint is unreachable, never running twice at once.

Real ``videokit serve`` endpoints on loopback (one a ``--faults`` process failing every job), the
real CLI in a subprocess, and the manifest it writes.
"""

from __future__ import annotations

import json
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

from tests.cli_process import run_videokit
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
        plan = run_videokit(tmp_path, "plan", str(story), "--out", str(out), "--json", **env)
        assert plan.returncode == 0, plan.stderr
        planned = json.loads(plan.stdout)
        assert [e["endpoint"] for e in planned["routes"]["animate"]] == [first, second]
        rendered = run_videokit(tmp_path, "render", str(story), "--out", str(out), "--json", **env)
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
        again = run_videokit(tmp_path, "render", str(story), "--out", str(out), "--json", **env)
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
        plan = run_videokit(tmp_path, "plan", str(story), "--out", str(out), **env)
        assert plan.returncode == 0, plan.stderr
        assert f"animate endpoint 1 of 2, {gone} (videokit): unreachable" in plan.stdout
        assert f"its jobs go straight to {second}" in plan.stdout
        rendered = run_videokit(tmp_path, "render", str(story), "--out", str(out), "--json", **env)
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
        checked = run_videokit(tmp_path, "validate", str(story), "--backend", "runpod", **env)
        assert checked.returncode == 2, checked.stdout
        assert "comfy-wan-worker renders sides of 256-1024 px, multiples of 64" in checked.stderr
        assert healthy.counters["animate"].runs == 0


# -- the route itself, through the Python API ----------------------------------------------------


def frame(width: int = 320, height: int = 192) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (40, 90, 160)).save(buf, format="PNG")
    return buf.getvalue()


def routed_backend(first: str, second: str, **config: Any) -> Any:
    from videokit.backends.retry import RetryPolicy
    from videokit.backends.runpod import Endpoint, RunPodBackend, RunPodConfig

    return RunPodBackend(
        RunPodConfig(
            api_key=None,
            endpoints={"animate": Endpoint(first, kind="lightx2v-worker")},
            fallbacks={"animate": (Endpoint(second, kind="lightx2v-worker"),)},
            **config,
        ),
        retry=RetryPolicy(attempts=3, base_s=0.05, cap_s=0.2),
    )


def animate(backend: Any, ctx: Any) -> Any:
    import asyncio

    from videokit.protocol import AnimateRequest, MediaInput

    request = AnimateRequest(
        image=MediaInput.from_bytes(frame()),
        prompt="waves",
        width=320,
        height=192,
        frames=9,
        seed=7,
    )

    async def main() -> Any:
        try:
            return await backend.animate(request, ctx)
        finally:
            await backend.aclose()

    return asyncio.run(main())


def test_a_job_stuck_in_the_queue_is_cancelled_there_before_it_moves() -> None:
    from tests.worker_emulators import LIGHTX2V, serve_worker_emulator
    from videokit.backends.base import JobContext

    with (
        serve_worker_emulator(LIGHTX2V, queue_seconds=60) as stuck,
        serve_worker_emulator(LIGHTX2V) as free,
    ):
        backend = routed_backend(stuck.endpoint_url, free.endpoint_url, queue_timeout_s=1.0)
        ctx = JobContext(scene="s", stage="animate")
        clip = animate(backend, ctx)
        [held] = stuck.jobs.values()
        [ran] = free.jobs.values()
    assert clip.frames == 9 and ctx.served_by is not None
    assert held.status == "CANCELLED"
    # Never two copies at once: the first was cancelled before the second was submitted.
    assert held.finished is not None and held.finished <= ran.created
    assert [a.status for a in ctx.attempts] == ["CANCELLED", "COMPLETED"]
    assert [a.endpoint for a in ctx.attempts] == [stuck.endpoint_url, free.endpoint_url]
    [moved] = ctx.moves
    assert moved.startswith(stuck.endpoint_url) and "queued" in moved


def test_a_resumed_job_is_re_attached_on_the_endpoint_it_ran_on() -> None:
    import base64

    from tests.worker_emulators import LIGHTX2V, serve_worker_emulator
    from videokit.backends.base import JobContext

    with (
        serve_worker_emulator(LIGHTX2V) as first,
        serve_worker_emulator(LIGHTX2V, job_seconds=0.5) as second,
    ):
        document = {
            "image_base64": base64.b64encode(frame()).decode(),
            "prompt": "waves",
            "num_frames": 9,
            "width": 320,
            "height": 192,
            "seed": 7,
        }
        job = httpx.post(f"{second.endpoint_url}/run", json={"input": document}, timeout=10)
        job_id = job.json()["id"]
        backend = routed_backend(first.endpoint_url, second.endpoint_url)
        ctx = JobContext(
            scene="s",
            stage="animate",
            resume_job_id=job_id,
            resume_endpoint=second.endpoint_url,
        )
        clip = animate(backend, ctx)
        runs_first = len(first.jobs)
        runs_second = len(second.jobs)
    assert clip.frames == 9
    assert (runs_first, runs_second) == (0, 1)  # re-attached: nothing submitted anywhere
    assert [(a.job_id, a.endpoint) for a in ctx.attempts] == [(job_id, second.endpoint_url)]


# -- configuration, identities and the cost of each route -----------------------------------------


def test_a_route_comes_from_a_list_in_videokit_toml_with_kinds_and_a_workflow(
    tmp_path: Path,
) -> None:
    from videokit.backends import create_backend
    from videokit.config import Settings

    comfy = tmp_path / "comfy"
    comfy.mkdir()
    examples = Path(__file__).resolve().parent.parent / "examples" / "comfy"
    for name in ("wan22-i2v-4step.toml", "wan22-i2v-4step.api.json"):
        (comfy / name).write_bytes((examples / name).read_bytes())
    config = tmp_path / "videokit.toml"
    config.write_text(
        textwrap.dedent(
            """\
            [animate]
            endpoint = ["http://gpu-box:8002/v2/animate", "worker-comfyui:abc123",
                        "comfy-wan-worker:def456", "wan-2-2-i2v-720"]
            workflow = "comfy/wan22-i2v-4step.toml"
            """
        )
    )
    settings = Settings.resolve(env={"RUNPOD_API_KEY": "k"}, dotenv=None, config_file=config)
    assert settings.workflows["animate"] == comfy / "wan22-i2v-4step.toml"
    backend: Any = create_backend(None, settings)
    route = backend.config.route("animate")
    assert [(e.id, e.api) for e in route] == [
        ("http://gpu-box:8002/v2/animate", "videokit"),
        ("abc123", "worker-comfyui"),
        ("def456", "comfy-wan-worker"),
        ("wan-2-2-i2v-720", "runpod-public"),
    ]
    identities = backend.identities("animate")
    # Kind and model in every identity: no endpoint's results stand in for another model's.
    assert identities[0] == "runpod/animate@animate"  # unchanged for videokit's own workers
    assert identities[1].startswith("runpod/worker-comfyui/wan22-i2v-4step.api@")
    assert (
        identities[2] == "runpod/comfy-wan-worker/wan2.2-i2v-14b-fp8-lightx2v-4step-comfyui@def456"
    )
    assert identities[3] == "runpod/wan-2-2-i2v-720@wan-2-2-i2v-720"
    assert len(set(identities)) == 4
    # What the story must fit is what all four can render: the public Wan's 720p and the
    # ComfyUI worker's sides up to 1024 have no size in common, and validate says so.
    caps = backend.capabilities("animate")
    assert caps.sizes == () and caps.fps == 16 and caps.prompt_chars == 1000
    assert not caps.takes_size(1280, 720)
    assert caps.describe_sizes().startswith("no size that all of them render")
    assert "comfy-wan-worker and wan-2-2-i2v-720" in caps.endpoint


def test_an_edited_workflow_changes_the_identity_a_reformatted_one_does_not(
    tmp_path: Path,
) -> None:
    import json as jsonlib

    from videokit.backends import create_backend
    from videokit.config import Settings

    examples = Path(__file__).resolve().parent.parent / "examples" / "comfy"
    (tmp_path / "w.toml").write_text((examples / "wan22-i2v-4step.toml").read_text())
    graph = jsonlib.loads((examples / "wan22-i2v-4step.api.json").read_text())
    env = {
        "VIDEOKIT_ANIMATE_ENDPOINT": "worker-comfyui:http://box:8188/v2/comfy",
        "VIDEOKIT_ANIMATE_WORKFLOW": str(tmp_path / "w.toml"),
    }

    def identity() -> str:
        settings = Settings.resolve(env=env, dotenv=None, config_file=None)
        backend: Any = create_backend(None, settings)
        return str(backend.identity("animate"))

    (tmp_path / "wan22-i2v-4step.api.json").write_text(jsonlib.dumps(graph, indent=2))
    first = identity()
    (tmp_path / "wan22-i2v-4step.api.json").write_text(jsonlib.dumps(graph))
    assert identity() == first
    graph["93"]["inputs"]["text"] = "another default prompt"
    (tmp_path / "wan22-i2v-4step.api.json").write_text(jsonlib.dumps(graph))
    assert identity() != first


def test_plan_prices_each_endpoint_of_a_route_and_the_worst_case(tmp_path: Path) -> None:
    from videokit.backends import create_backend
    from videokit.cli.endpoint_notes import route_endpoints
    from videokit.config import Settings
    from videokit.pipeline.forecast import forecast
    from videokit.story.loader import load_story
    from videokit.story.plan import plan_story

    make_image(tmp_path / "ref.png", (1280, 720))
    story = tmp_path / "story.yaml"
    story.write_text(
        textwrap.dedent(
            """\
            title: Two clips
            reference: ref.png
            defaults: {width: 1280, height: 720, fps: 16, duration: 5}
            scenes:
              - {id: one, motion: waves}
              - {id: two, motion: more waves}
            """
        )
    )
    env = {
        "VIDEOKIT_ANIMATE_ENDPOINT": "http://gpu-box:8002/v2/animate,wan-2-2-i2v-720",
        "RUNPOD_API_KEY": "k",
    }
    settings = Settings.resolve(env=env, dotenv=None, config_file=None)
    backend: Any = create_backend(None, settings)
    costs = settings.cost_model()
    plan = plan_story(load_story(story), capabilities=None)
    guess = forecast(
        plan, backend, tmp_path / "work", costs=costs, routes=route_endpoints(backend, costs)
    )
    [(own, own_kind, own_usd), (public, public_kind, public_usd)] = guess.route_costs["animate"]
    assert (own, own_kind) == ("http://gpu-box:8002/v2/animate", "videokit")
    assert (public, public_kind) == ("wan-2-2-i2v-720", "runpod-public")
    assert public_usd == pytest.approx(2 * 5 * 0.06)  # two 5 s clips at $0.06 a second
    assert guess.cost_usd == pytest.approx(own_usd)  # the first choice
    assert guess.worst_cost_usd == pytest.approx(max(own_usd, public_usd))
