"""The endpoint kinds of workers users already run, through the real CLI against emulators.

Each emulator (tests/worker_emulators.py) follows only its worker's documentation; the edit stage
is a real ``videokit serve``; where URLs are involved the bucket is a real S3 server (moto). A
render's film has the frame count ``plan`` computed; a story the worker would refuse is refused by
``validate`` first, with nothing submitted.
"""

from __future__ import annotations

import json
import shutil
import textwrap
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli_process import run_videokit
from tests.conftest import make_image
from tests.endpoints import Servers, serve_workers
from tests.s3server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, S3Server, s3_server  # noqa: F401
from tests.worker_emulators import (
    COMFY_WAN,
    COMFYUI,
    LIGHTX2V,
    BucketSettings,
    WorkerEmulator,
    serve_worker_emulator,
)
from videokit.media.probe import probe_video

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "comfy"

# Fits all three: sides in multiples of 64 from 256, 8n+1 (and so 4n+1) frames from 9.
STORY = """\
    title: Kinds
    reference: ref.png
    defaults: {{width: {width}, height: {height}, fps: 16, frames: {frames}}}
    scenes:
      - id: one
        motion: the lamp flickers
      - id: two
        edit: {{prompt: "the same lamp, now blue"}}
        motion: the lamp sways
      - id: three
        motion: the light fades
"""


def write_story(folder: Path, frames: int = 17, width: int = 320, height: int = 256) -> Path:
    make_image(folder / "ref.png", (320, 256))
    path = folder / "story.yaml"
    path.write_text(textwrap.dedent(STORY.format(frames=frames, width=width, height=height)))
    return path


@pytest.fixture(scope="module")
def edit_server() -> Iterator[Servers]:
    with serve_workers() as servers:
        yield servers


def settings(emulator: WorkerEmulator, edit: Servers, **extra: str) -> dict[str, str]:
    return {
        "VIDEOKIT_EDIT_ENDPOINT": edit.urls["edit"],
        "VIDEOKIT_ANIMATE_ENDPOINT": f"{emulator.kind}:{emulator.endpoint_id}",
        "VIDEOKIT_RUNPOD_BASE_URL": emulator.base_url,
        **extra,
    }


def bucket_env(s3: S3Server) -> dict[str, str]:
    return {
        "VIDEOKIT_S3_BUCKET": s3.bucket,
        "VIDEOKIT_S3_ENDPOINT_URL": s3.endpoint_url,
        "VIDEOKIT_S3_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "VIDEOKIT_S3_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
    }


def render_and_check(folder: Path, story: Path, env: dict[str, str]) -> dict[str, Any]:
    """plan, render, and the film's frame count against plan's; returns the manifest."""
    out = folder / "out"
    plan = run_videokit(folder, "plan", str(story), "--out", str(out), "--json", **env)
    assert plan.returncode == 0, plan.stderr
    planned = json.loads(plan.stdout)
    rendered = run_videokit(folder, "render", str(story), "--out", str(out), "--json", **env)
    assert rendered.returncode == 0, rendered.stderr
    assert probe_video(out / "final.mp4").frames == planned["final_frames"]
    manifest: dict[str, Any] = json.loads((out / "manifest.json").read_text())
    return manifest


def animate_jobs(emulator: WorkerEmulator) -> list[dict[str, Any]]:
    return [document for _, document in emulator.inputs]


def test_lightx2v_worker_renders_a_chain_from_its_own_last_frames(
    tmp_path: Path, edit_server: Servers
) -> None:
    story = write_story(tmp_path)
    with serve_worker_emulator(LIGHTX2V, endpoint_id="lx2v0123") as emulator:
        manifest = render_and_check(tmp_path, story, settings(emulator, edit_server))
        documents = animate_jobs(emulator)
    assert len(documents) == 3
    first = documents[0]
    assert set(first) == {
        "image_base64",
        "prompt",
        "negative_prompt",
        "num_frames",
        "num_inference_steps",
        "guidance_scale",
        "seed",
        "fps",
        "width",
        "height",
    }
    assert (first["num_frames"], first["width"], first["height"]) == (17, 320, 256)
    records = [record["animate"] for record in manifest["scenes"].values()]
    assert {record["last_frame"] for record in records} == {"worker"}
    assert {record["endpoint"] for record in records} == {"lx2v0123"}


def test_lightx2v_worker_a_frame_count_its_pipeline_refuses_is_refused_by_validate(
    tmp_path: Path, edit_server: Servers
) -> None:
    story = write_story(tmp_path, frames=18)
    with serve_worker_emulator(LIGHTX2V) as emulator:
        checked = run_videokit(tmp_path, "validate", str(story), **settings(emulator, edit_server))
        assert checked.returncode == 2, checked.stdout
        assert "frames" in checked.stderr and "4k+1" in checked.stderr
        assert not emulator.requests


def test_comfy_wan_worker_takes_the_frame_by_presigned_url_and_its_clip_is_chained(
    tmp_path: Path,
    edit_server: Servers,
    s3_server: S3Server,  # noqa: F811
) -> None:
    story = write_story(tmp_path)
    with serve_worker_emulator(COMFY_WAN, endpoint_id="comfy0123") as emulator:
        env = settings(emulator, edit_server, **bucket_env(s3_server))
        manifest = render_and_check(tmp_path, story, env)
        documents = animate_jobs(emulator)
    assert len(documents) == 3
    for document in documents:
        assert document["image_url"].startswith(s3_server.endpoint_url)
        assert "image_base64" not in document
        assert (document["frames"], document["width"], document["height"]) == (17, 320, 256)
        assert (document["steps"], document["cfg"]) == (4, 1.0)
    records = [record["animate"] for record in manifest["scenes"].values()]
    # The worker returns no last frame: each was decoded from the clip.
    assert {record["last_frame"] for record in records} == {"decoded"}


@pytest.mark.parametrize(
    ("defaults", "frames", "said"),
    [
        ({"width": 832, "height": 480}, 17, "multiples of 64"),
        ({}, 21, "9-121 frames (8n+1)"),
        ({}, 129, "9-121 frames (8n+1)"),
    ],
)
def test_comfy_wan_worker_limits_are_refused_by_validate_before_any_job(
    tmp_path: Path, edit_server: Servers, defaults: dict[str, int], frames: int, said: str
) -> None:
    story = write_story(tmp_path, frames=frames, **defaults)
    with serve_worker_emulator(COMFY_WAN) as emulator:
        checked = run_videokit(tmp_path, "validate", str(story), **settings(emulator, edit_server))
        assert checked.returncode == 2, checked.stdout
        assert said in checked.stderr
        assert not emulator.requests


def test_comfy_wan_worker_a_prompt_over_its_limit_is_refused(
    tmp_path: Path, edit_server: Servers
) -> None:
    story = write_story(tmp_path)
    story.write_text(story.read_text().replace("the lamp flickers", "flicker " * 130))
    with serve_worker_emulator(COMFY_WAN) as emulator:
        checked = run_videokit(tmp_path, "validate", str(story), **settings(emulator, edit_server))
    assert checked.returncode == 2
    assert "takes at most 1000" in checked.stderr


def test_worker_comfyui_runs_the_example_workflow_with_the_scenes_values(
    tmp_path: Path,
    edit_server: Servers,
    s3_server: S3Server,  # noqa: F811
) -> None:
    story = write_story(tmp_path)
    bucket = BucketSettings(
        s3_server.endpoint_url, s3_server.new_bucket(), ACCESS_KEY_ID, SECRET_ACCESS_KEY
    )
    bindings = EXAMPLES / "wan22-i2v-4step.toml"
    with serve_worker_emulator(COMFYUI, endpoint_id="comfyui0123", s3=bucket) as emulator:
        env = settings(emulator, edit_server, VIDEOKIT_ANIMATE_WORKFLOW=str(bindings))
        manifest = render_and_check(tmp_path, story, env)
        workflows = list(emulator.workflows.values())
        uploads = list(emulator.uploads.values())
    assert len(workflows) == 3
    graph = workflows[0]
    assert graph["98"]["inputs"]["length"] == 17
    assert (graph["98"]["inputs"]["width"], graph["98"]["inputs"]["height"]) == (320, 256)
    assert graph["93"]["inputs"]["text"] == "the lamp flickers"
    assert graph["94"]["inputs"]["fps"] == 16
    seed = manifest["scenes"]["one"]["animate"]["seed"]
    assert graph["86"]["inputs"]["noise_seed"] == graph["85"]["inputs"]["noise_seed"] == seed
    [(name, data)] = uploads[0].items()
    assert graph["97"]["inputs"]["image"] == name and data.startswith(b"\x89PNG")
    records = [record["animate"] for record in manifest["scenes"].values()]
    assert {record["last_frame"] for record in records} == {"decoded"}


def test_worker_comfyui_a_clip_longer_than_the_graph_takes_is_refused(
    tmp_path: Path, edit_server: Servers
) -> None:
    story = write_story(tmp_path, frames=97)
    bindings = EXAMPLES / "wan22-i2v-4step.toml"
    with serve_worker_emulator(COMFYUI) as emulator:
        env = settings(emulator, edit_server, VIDEOKIT_ANIMATE_WORKFLOW=str(bindings))
        checked = run_videokit(tmp_path, "validate", str(story), **env)
        assert checked.returncode == 2, checked.stdout
        assert "5-81 frames (4n+1)" in checked.stderr
        assert not emulator.requests


def test_worker_comfyui_bindings_naming_a_missing_node_are_refused_by_validate(
    tmp_path: Path, edit_server: Servers
) -> None:
    story = write_story(tmp_path)
    shutil.copy(EXAMPLES / "wan22-i2v-4step.api.json", tmp_path)
    bindings = tmp_path / "broken.toml"
    text = (EXAMPLES / "wan22-i2v-4step.toml").read_text()
    bindings.write_text(text.replace('frames = "98.length"', 'frames = "99.length"'))
    with serve_worker_emulator(COMFYUI) as emulator:
        env = settings(emulator, edit_server, VIDEOKIT_ANIMATE_WORKFLOW=str(bindings))
        checked = run_videokit(tmp_path, "validate", str(story), **env)
        assert checked.returncode == 2, checked.stdout
        assert "99" in checked.stderr and "98 (WanImageToVideo)" in checked.stderr
        assert not emulator.requests


def write_wav(path: Path, seconds: float) -> None:
    with wave.open(str(path), "wb") as sound:
        sound.setnchannels(1)
        sound.setsampwidth(2)
        sound.setframerate(16000)
        sound.writeframes(b"\0\0" * int(16000 * seconds))


def test_worker_comfyui_a_scene_with_audio_drives_a_sound_to_video_graph(
    tmp_path: Path, edit_server: Servers
) -> None:
    make_image(tmp_path / "ref.png", (320, 256))
    write_wav(tmp_path / "line.wav", 5.0)
    story = tmp_path / "story.yaml"
    story.write_text(
        textwrap.dedent(
            """\
            title: Talking
            reference: ref.png
            defaults: {width: 320, height: 256, fps: 16, frames: 77}
            scenes:
              - id: says
                motion: she says hello
                audio: line.wav
            """
        )
    )
    bindings = EXAMPLES / "wan22-s2v.toml"
    with serve_worker_emulator(COMFYUI) as emulator:
        env = settings(emulator, edit_server, VIDEOKIT_ANIMATE_WORKFLOW=str(bindings))
        render_and_check(tmp_path, story, env)
        [uploaded] = emulator.uploads.values()
        [graph] = emulator.workflows.values()
    audio_name = next(name for name in uploaded if name.endswith(".wav"))
    assert uploaded[audio_name] == (tmp_path / "line.wav").read_bytes()
    assert graph["58"]["inputs"]["audio"] == audio_name


def test_a_scene_with_audio_on_an_endpoint_without_a_soundtrack_is_refused(
    tmp_path: Path, edit_server: Servers
) -> None:
    story = write_story(tmp_path)
    write_wav(tmp_path / "line.wav", 1.0)
    text = story.read_text().replace("motion: the lamp flickers", "motion: hi\n    audio: line.wav")
    story.write_text(text)
    with serve_worker_emulator(LIGHTX2V) as emulator:
        checked = run_videokit(tmp_path, "validate", str(story), **settings(emulator, edit_server))
    assert checked.returncode == 2
    assert "takes no soundtrack" in checked.stderr


def test_kinds_that_take_media_inline_only_are_held_to_the_payload_limit_even_with_a_bucket() -> (
    None
):
    from videokit.backends.runpod import Endpoint, RunPodBackend, RunPodConfig
    from videokit.errors import ConfigError

    def backend(kind: Any) -> RunPodBackend:
        endpoint = Endpoint("abc123", kind=kind, workflow=EXAMPLES / "wan22-i2v-4step.toml")
        config = RunPodConfig(api_key=None, endpoints={"animate": endpoint}, base_url="http://x/v2")
        return RunPodBackend(config, storage=object())  # a bucket is configured

    too_big = {"animate": 11_000_000}
    for inline_only in ("worker-comfyui", "lightx2v-worker"):
        with pytest.raises(ConfigError, match="takes media inline only"):
            backend(inline_only).check(["animate"], payload_bytes=too_big)
    # The ComfyUI Wan worker takes the frame by URL: the bucket carries it.
    backend("comfy-wan-worker").check(["animate"], payload_bytes=too_big)
