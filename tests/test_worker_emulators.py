"""The worker emulators (tests/worker_emulators.py), driven with plain httpx over loopback.

Each worker's documented input completes with its documented output shape, its clip has the asked
frame count, size and fps; documented limits fail the job naming the field; worker-comfyui runs an
inline API-format graph, validates it like ComfyUI and returns what worker-comfyui returns.
"""

from __future__ import annotations

import base64
import io
import math
import re
import struct
import time
import uuid
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from tests.queue_emulator import QueueEmulator
from tests.s3server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, S3Server, s3_server  # noqa: F401
from tests.worker_emulators import (
    COMFY_WAN,
    COMFYUI,
    LIGHTX2V,
    BucketSettings,
    WorkerEmulator,
    serve_worker_emulator,
)
from videokit.media.probe import extract_frame, probe_video

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}
Doc = dict[str, Any]


@pytest.fixture(scope="module")
def lightx2v() -> Iterator[WorkerEmulator]:
    with serve_worker_emulator(LIGHTX2V, endpoint_id="lx2v0123456789") as served:
        yield served


@pytest.fixture(scope="module")
def comfy_wan() -> Iterator[WorkerEmulator]:
    with serve_worker_emulator(COMFY_WAN) as served:
        yield served


@pytest.fixture(scope="module")
def comfyui() -> Iterator[WorkerEmulator]:
    with serve_worker_emulator(COMFYUI) as served:
        yield served


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False, timeout=30) as client:
        yield client


def picture(width: int = 320, height: int = 240) -> bytes:
    """A gradient PNG (so crops and frames differ in their pixels)."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    planes = [np.broadcast_to(x, (height, width)), np.broadcast_to(y, (height, width))]
    rgb = np.stack([*planes, np.full((height, width), 90, np.float32)], axis=-1)
    buf = io.BytesIO()
    Image.fromarray(rgb.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def run(http: httpx.Client, emulator: WorkerEmulator, doc: Doc) -> str:
    response = http.post(f"{emulator.endpoint_url}/run", json={"input": doc})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "IN_QUEUE"
    job_id: str = body["id"]
    return job_id


def wait(
    http: httpx.Client, emulator: WorkerEmulator, job_id: str, until: set[str] = TERMINAL
) -> Doc:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        response = http.get(f"{emulator.endpoint_url}/status/{job_id}")
        assert response.status_code == 200, response.text
        body: Doc = response.json()
        if body["status"] in until:
            return body
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} not {until} after 30 s")


def runsync(http: httpx.Client, emulator: WorkerEmulator, doc: Doc) -> Doc:
    response = http.post(f"{emulator.endpoint_url}/runsync?wait=30000", json={"input": doc})
    assert response.status_code == 200, response.text
    body: Doc = response.json()
    return body


def save(tmp_path: Path, data: bytes, suffix: str = ".mp4") -> Path:
    path = tmp_path / f"{uuid.uuid4().hex}{suffix}"
    path.write_bytes(data)
    return path


def rgb(data: bytes) -> npt.NDArray[np.uint8]:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.uint8)


def mean_diff(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# -- lightx2v-worker


def test_lightx2v_completes_with_the_documented_output_and_its_real_last_frame(
    lightx2v: WorkerEmulator, http: httpx.Client, tmp_path: Path
) -> None:
    doc = {
        "image_base64": b64(picture()),
        "prompt": "a slow pan",
        "negative_prompt": "blurry",
        "num_frames": 9,
        "num_inference_steps": 4,
        "guidance_scale": 5.0,
        "seed": 42,
        "fps": 8,
        "height": 96,
        "width": 128,
    }
    job_id = run(http, lightx2v, doc)
    body = wait(http, lightx2v, job_id)

    assert body["status"] == "COMPLETED", body
    assert {"delayTime", "executionTime", "workerId"} <= body.keys()
    output = body["output"]
    assert set(output) == {
        "success",
        "video_base64",
        "last_frame_base64",
        "seed",
        "inference_time_ms",
        "num_frames",
        "fps",
        "resolution",
        "video_size_bytes",
    }
    assert (output["success"], output["seed"], output["num_frames"], output["fps"]) == (
        True,
        42,
        9,
        8,
    )
    assert output["resolution"] == "128x96"
    assert isinstance(output["inference_time_ms"], int)
    video = base64.b64decode(output["video_base64"])
    assert output["video_size_bytes"] == len(video)
    path = save(tmp_path, video)
    info = probe_video(path)
    assert (info.width, info.height, info.frames, info.fps) == (128, 96, 9, 8)
    assert (info.codec, info.pix_fmt) == ("h264", "yuv420p")

    last_png = base64.b64decode(output["last_frame_base64"])
    assert last_png.startswith(b"\x89PNG")
    last = rgb(last_png)
    decoded_last = rgb(extract_frame(path, -1, tmp_path / "last.png").read_bytes())
    decoded_before = rgb(extract_frame(path, -2, tmp_path / "before.png").read_bytes())
    assert last.shape == decoded_last.shape == (96, 128, 3)
    assert mean_diff(last, decoded_last) < 4
    assert mean_diff(last, decoded_before) > 10
    assert np.array_equal(last, lightx2v.expected_frame(job_id, -1))
    assert lightx2v.inputs[-1] == (lightx2v.endpoint_id, doc)


def test_lightx2v_defaults_are_the_documented_ones(
    lightx2v: WorkerEmulator, http: httpx.Client
) -> None:
    body = runsync(http, lightx2v, {"image_base64": b64(picture()), "prompt": "p"})
    assert body["status"] == "COMPLETED", body
    output = body["output"]
    assert (output["num_frames"], output["fps"], output["resolution"]) == (81, 16, "832x480")
    assert isinstance(output["seed"], int)


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"num_frames": 80}, "num_frames"),
        ({"num_frames": 0}, "num_frames"),
        ({"width": 120}, "width"),
        ({"height": 250}, "height"),
        ({"fps": "fast"}, "fps"),
        ({"prompt": None}, "prompt"),
        ({"image_base64": None}, "image_base64"),
        ({"image_base64": b64(b"<html>not a picture</html>")}, "image_base64"),
        ({"image_base64": "data:image/png;base64," + b64(picture(64, 64))}, "image_base64"),
    ],
)
def test_lightx2v_rejects_what_a_wan_pipeline_cannot_do(
    lightx2v: WorkerEmulator, http: httpx.Client, doc: Doc, field: str
) -> None:
    base = {
        "image_base64": b64(picture(64, 64)),
        "prompt": "p",
        "num_frames": 5,
        "width": 64,
        "height": 64,
    }
    body = runsync(http, lightx2v, {**base, **doc})
    assert body["status"] == "FAILED", body
    assert field in body["error"], body["error"]


# -- comfy-wan-worker


def presigned(s3: S3Server, data: bytes) -> str:
    key = f"inputs/{uuid.uuid4().hex}.png"
    s3.client.put_object(Bucket=s3.bucket, Key=key, Body=data)
    url: str = s3.client.generate_presigned_url(
        "get_object", Params={"Bucket": s3.bucket, "Key": key}, ExpiresIn=3600
    )
    return url


@pytest.mark.parametrize("source", ["image_url", "image_base64"])
def test_comfy_wan_completes_with_video_and_metadata_only(
    comfy_wan: WorkerEmulator,
    http: httpx.Client,
    s3_server: S3Server,  # noqa: F811
    tmp_path: Path,
    source: str,
) -> None:
    image = picture(400, 300)
    doc = {
        "prompt": "a knight waves",
        "cfg": 1.5,
        "width": 320,
        "height": 256,
        "frames": 9,
        "fps": 8,
        "steps": 2,
        "seed": 7,
    }
    doc[source] = presigned(s3_server, image) if source == "image_url" else b64(image)
    job_id = run(http, comfy_wan, doc)
    body = wait(http, comfy_wan, job_id)

    assert body["status"] == "COMPLETED", body
    output = body["output"]
    assert set(output) == {"video_base64", "metadata"}  # no last frame
    assert output["metadata"] == {
        "width": 320,
        "height": 256,
        "frames": 9,
        "fps": 8,
        "cfg": 1.5,
        "steps": 2,
    }
    info = probe_video(save(tmp_path, base64.b64decode(output["video_base64"])))
    assert (info.width, info.height, info.frames, info.fps) == (320, 256, 9, 8)


def test_comfy_wan_defaults_are_the_documented_ones(
    comfy_wan: WorkerEmulator, http: httpx.Client
) -> None:
    body = runsync(http, comfy_wan, {"prompt": "p", "image_base64": b64(picture())})
    assert body["status"] == "COMPLETED", body
    assert body["output"]["metadata"] == {
        "width": 512,
        "height": 512,
        "frames": 33,
        "fps": 16,
        "cfg": 1.0,
        "steps": 4,
    }


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"prompt": None}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x" * 1001}, "prompt"),
        ({"image_base64": None}, "image_url"),  # neither
        ({"image_url": "http://127.0.0.1:9/x.png"}, "image_url"),  # both
        ({"cfg": 0.05}, "cfg"),
        ({"cfg": 20.5}, "cfg"),
        ({"width": 192}, "width"),
        ({"width": 1088}, "width"),
        ({"width": 300}, "width"),
        ({"height": 200}, "height"),
        ({"height": 1280}, "height"),
        ({"height": 400}, "height"),
        ({"frames": 1}, "frames"),
        ({"frames": 129}, "frames"),
        ({"frames": 13}, "frames"),
        ({"frames": "many"}, "frames"),
        ({"fps": 7}, "fps"),
        ({"fps": 61}, "fps"),
        ({"steps": 0}, "steps"),
        ({"steps": 51}, "steps"),
        ({"image_base64": b64(b"not a picture")}, "image_base64"),
    ],
)
def test_comfy_wan_each_documented_limit_fails_the_job_naming_the_field(
    comfy_wan: WorkerEmulator, http: httpx.Client, doc: Doc, field: str
) -> None:
    base = {
        "prompt": "p",
        "image_base64": b64(picture(64, 64)),
        "width": 256,
        "height": 256,
        "frames": 9,
    }
    body = runsync(http, comfy_wan, {**base, **doc})
    assert body["status"] == "FAILED", body
    assert field in body["error"], body["error"]
    assert "output" not in body


def test_comfy_wan_an_image_url_that_cannot_be_fetched_fails(
    comfy_wan: WorkerEmulator, http: httpx.Client
) -> None:
    body = runsync(http, comfy_wan, {"prompt": "p", "image_url": "http://127.0.0.1:9/x.png"})
    assert body["status"] == "FAILED"
    assert "image_url" in body["error"]


# -- worker-comfyui


def i2v_graph(
    image: str = "start.png",
    *,
    width: int = 256,
    height: int = 192,
    length: int = 9,
    fps: float = 12,
) -> Doc:
    """LoadImage -> WanImageToVideo -> KSampler -> VAEDecode -> CreateVideo -> SaveVideo."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}, "_meta": {"title": "Start"}},
        "2": {"class_type": "CLIPLoader", "inputs": {"clip_name": "umt5.safetensors", "type": "wan"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a slow pan", "clip": ["2", 0]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["2", 0]}},
        "5": {"class_type": "VAELoader", "inputs": {"vae_name": "wan_2.1_vae.safetensors"}},
        "6": {"class_type": "UNETLoader", "inputs": {"unet_name": "wan2.2_i2v.safetensors"}},
        "7": {"class_type": "WanImageToVideo", "inputs": {
            "positive": ["3", 0], "negative": ["4", 0], "vae": ["5", 0], "width": width,
            "height": height, "length": length, "batch_size": 1, "start_image": ["1", 0]}},
        "8": {"class_type": "KSampler", "inputs": {
            "model": ["6", 0], "positive": ["7", 0], "negative": ["7", 1], "latent_image": ["7", 2],
            "seed": 1, "steps": 4, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple",
            "denoise": 1.0}},
        "9": {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": ["5", 0]}},
        "10": {"class_type": "CreateVideo", "inputs": {"images": ["9", 0], "fps": fps}},
        "11": {"class_type": "SaveVideo", "inputs": {
            "video": ["10", 0], "filename_prefix": "video/ComfyUI", "format": "auto",
            "codec": "auto"}},
    }  # fmt: skip


def comfy_doc(graph: Doc, **files: bytes) -> Doc:
    images = [{"name": name.replace("_", "."), "image": b64(data)} for name, data in files.items()]
    return {"workflow": graph, "images": images}


def test_comfyui_runs_an_i2v_graph_into_one_base64_mp4(
    comfyui: WorkerEmulator, http: httpx.Client, tmp_path: Path
) -> None:
    start = picture(320, 240)
    graph = i2v_graph()
    doc = {
        "workflow": graph,
        "images": [{"name": "start.png", "image": "data:image/png;base64," + b64(start)}],
    }
    job_id = run(http, comfyui, doc)
    body = wait(http, comfyui, job_id)

    assert body["status"] == "COMPLETED", body
    [image] = body["output"]["images"]
    assert set(body["output"]) == {"images"}
    assert image["type"] == "base64"
    assert re.fullmatch(r"ComfyUI_\d{5}_\.mp4", image["filename"]), image["filename"]
    path = save(tmp_path, base64.b64decode(image["data"]))
    info = probe_video(path)
    assert (info.width, info.height, info.frames, info.fps) == (256, 192, 9, 12)
    first = rgb(extract_frame(path, 0, tmp_path / "first.png").read_bytes())
    assert mean_diff(first, comfyui.expected_frame(job_id, 0)) < 4
    # What the client sent is on record, the uploaded picture decoded.
    assert comfyui.workflows[job_id] == graph
    assert comfyui.uploads[job_id] == {"start.png": start}


def test_comfyui_decodes_wan_lengths_and_saves_images_and_numbers_files(
    comfyui: WorkerEmulator, http: httpx.Client, tmp_path: Path
) -> None:
    graph = i2v_graph(length=11, width=128, height=128)  # Wan's VAE makes 4n+1 frames: 9
    graph["12"] = {
        "class_type": "ImageFromBatch",
        "inputs": {"image": ["9", 0], "batch_index": 100, "length": 1},
    }
    graph["13"] = {
        "class_type": "SaveImage",
        "inputs": {"images": ["12", 0], "filename_prefix": "last"},
    }
    graph["14"] = {"class_type": "PreviewImage", "inputs": {"images": ["12", 0]}}
    doc = comfy_doc(graph, start_png=picture())
    first = runsync(http, comfyui, doc)
    second = runsync(http, comfyui, doc)

    assert first["status"] == second["status"] == "COMPLETED", first
    video, still = first["output"]["images"]  # the temp preview is skipped
    info = probe_video(save(tmp_path, base64.b64decode(video["data"])))
    assert (info.width, info.height, info.frames) == (128, 128, 9)
    assert still["filename"] == "last_00001_.png"
    expected_last = comfyui.expected_frame(first["id"], -1)
    assert np.array_equal(rgb(base64.b64decode(still["data"])), expected_last)
    # ComfyUI numbers files on from what its output folder holds.
    names = [image["filename"] for image in second["output"]["images"]]
    number = int(video["filename"].split("_")[1])
    assert names == [f"ComfyUI_{number + 1:05}_.mp4", "last_00002_.png"]


def wav(seconds: float = 1.0, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        samples = (
            round(8000 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(int(rate * seconds))
        )
        out.writeframes(b"".join(struct.pack("<h", s) for s in samples))
    return buf.getvalue()


def test_comfyui_runs_a_sound_to_video_graph_with_its_audio(
    comfyui: WorkerEmulator, http: httpx.Client, tmp_path: Path
) -> None:
    graph = i2v_graph(length=13)
    inputs = graph["7"]["inputs"]
    inputs["ref_image"] = inputs.pop("start_image")
    graph["7"]["class_type"] = "WanSoundImageToVideo"
    graph["20"] = {"class_type": "LoadAudio", "inputs": {"audio": "voice.wav"}}
    graph["21"] = {"class_type": "AudioEncoderLoader", "inputs": {"audio_encoder_name": "w2v.st"}}
    graph["22"] = {
        "class_type": "AudioEncoderEncode",
        "inputs": {"audio_encoder": ["21", 0], "audio": ["20", 0]},
    }
    inputs["audio_encoder_output"] = ["22", 0]
    graph["10"]["inputs"]["audio"] = ["20", 0]
    body = runsync(http, comfyui, comfy_doc(graph, start_png=picture(), voice_wav=wav()))

    assert body["status"] == "COMPLETED", body
    [video] = body["output"]["images"]
    info = probe_video(save(tmp_path, base64.b64decode(video["data"])))
    assert (info.width, info.height, info.frames, info.fps) == (256, 192, 13, 12)
    assert info.has_audio and info.audio_codec == "aac"


def test_comfyui_with_s3_returns_presigned_urls(
    http: httpx.Client,
    s3_server: S3Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    bucket = BucketSettings(
        s3_server.endpoint_url, s3_server.new_bucket(), ACCESS_KEY_ID, SECRET_ACCESS_KEY
    )
    with serve_worker_emulator(COMFYUI, endpoint_id="comfy-s3", s3=bucket) as emulator:
        body = runsync(http, emulator, comfy_doc(i2v_graph(), start_png=picture()))

    assert body["status"] == "COMPLETED", body
    [image] = body["output"]["images"]
    assert image["type"] == "s3_url"
    assert re.fullmatch(r"ComfyUI_\d{5}_\.mp4", image["filename"])
    assert image["data"].startswith(f"{s3_server.endpoint_url}/{bucket.bucket}/{body['id']}/")
    download = http.get(image["data"])
    assert download.status_code == 200
    info = probe_video(save(tmp_path, download.content))
    assert (info.width, info.height, info.frames) == (256, 192, 9)


def test_comfyui_validates_the_graph_like_comfyui(
    comfyui: WorkerEmulator, http: httpx.Client
) -> None:
    missing = runsync(http, comfyui, comfy_doc(i2v_graph("other.png"), start_png=picture(8, 8)))
    assert missing["status"] == "FAILED"
    error = missing["error"]
    assert error.startswith("Workflow validation failed:\n• Node 1 (errors): "), error
    assert "Custom validation failed for node" in error
    assert "image - Invalid image file: other.png" in error
    assert "• Node 1 (dependent_outputs): ['11']" in error
    assert "• Node 1 (class_type): LoadImage" in error

    dangling = i2v_graph()
    dangling["9"]["inputs"]["vae"] = ["99", 0]
    int_link = i2v_graph()
    int_link["9"]["inputs"]["vae"] = [5, 0]  # node ids are strings
    body = runsync(http, comfyui, comfy_doc(int_link, start_png=picture(8, 8)))
    assert body["status"] == "FAILED" and "Exception when validating" in body["error"]
    body = runsync(http, comfyui, comfy_doc(dangling, start_png=picture(8, 8)))
    assert body["status"] == "FAILED"
    assert "Node 9 (errors)" in body["error"] and "Exception when validating" in body["error"]
    assert "'99'" in body["error"]

    no_outputs = {k: v for k, v in i2v_graph().items() if k != "11"}
    body = runsync(http, comfyui, comfy_doc(no_outputs, start_png=picture(8, 8)))
    assert body["status"] == "FAILED"
    assert body["error"].startswith("Prompt has no outputs. Raw response: ")

    assert runsync(http, comfyui, {"images": []})["error"] == "Missing 'workflow' parameter"
    bad = runsync(http, comfyui, {"workflow": i2v_graph(), "images": [{"name": "start.png"}]})
    assert bad["error"] == "'images' must be a list of objects with 'name' and 'image' keys"


def test_comfyui_an_undecodable_upload_fails_at_execution(
    comfyui: WorkerEmulator, http: httpx.Client
) -> None:
    body = runsync(http, comfyui, comfy_doc(i2v_graph(), start_png=b"not a picture"))
    assert body["status"] == "FAILED"
    assert body["error"] == "Job processing failed"
    [detail] = body["output"]["details"]
    assert detail.startswith("Workflow execution error: Node Type: LoadImage, Node ID: 1, ")


def test_comfyui_ignores_video_helper_suite_outputs(
    comfyui: WorkerEmulator, http: httpx.Client
) -> None:
    graph = i2v_graph()
    del graph["10"], graph["11"]
    graph["10"] = {
        "class_type": "VHS_VideoCombine",
        "inputs": {
            "images": ["9", 0],
            "frame_rate": 16,
            "loop_count": 0,
            "filename_prefix": "AnimateDiff",
            "format": "video/h264-mp4",
            "pingpong": False,
            "save_output": True,
        },
    }
    body = runsync(http, comfyui, comfy_doc(graph, start_png=picture()))
    assert body["status"] == "COMPLETED", body
    assert body["output"] == {"images": [], "status": "success_no_images"}


# -- queue behaviour and fault knobs (shared by all three)


def test_cancel_a_queued_and_a_running_job(http: httpx.Client) -> None:
    doc = comfy_doc(i2v_graph(), start_png=picture())
    with serve_worker_emulator(COMFYUI, queue_seconds=30) as emulator:
        queued = run(http, emulator, doc)
        cancel = http.post(f"{emulator.endpoint_url}/cancel/{queued}")
        assert cancel.json() == {"id": queued, "status": "CANCELLED"}
        assert wait(http, emulator, queued)["status"] == "CANCELLED"
    with serve_worker_emulator(LIGHTX2V, job_seconds=30) as emulator:
        running = run(
            http,
            emulator,
            {
                "image_base64": b64(picture()),
                "prompt": "p",
                "num_frames": 5,
                "width": 64,
                "height": 64,
            },
        )
        wait(http, emulator, running, until={"IN_PROGRESS"})
        cancel = http.post(f"{emulator.endpoint_url}/cancel/{running}")
        assert cancel.json() == {"id": running, "status": "CANCELLED"}
        body = wait(http, emulator, running)
        assert body["status"] == "CANCELLED" and "output" not in body
        task = emulator.jobs[running].task
        deadline = time.monotonic() + 2
        while task is not None and not task.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert task is not None and task.done()


def test_fault_knobs(http: httpx.Client) -> None:
    doc = {
        "prompt": "p",
        "image_base64": b64(picture(64, 64)),
        "width": 256,
        "height": 256,
        "frames": 9,
    }
    with serve_worker_emulator(COMFY_WAN, endpoint_id="wan-ep", api_key="k") as emulator:
        auth = {"Authorization": "Bearer k"}
        url = emulator.endpoint_url
        assert http.get(f"{url}/health").status_code == 401
        http.headers.update(auth)

        emulator.fail_all("CUDA out of memory")
        assert runsync(http, emulator, doc)["error"] == "CUDA out of memory"
        emulator.fail_all(None)
        emulator.fail_next("wan-ep", "worker exited")
        assert runsync(http, emulator, doc)["error"] == "worker exited"
        assert runsync(http, emulator, doc)["status"] == "COMPLETED"

        emulator.refuse(502, times=1, routes={"run"})
        assert http.post(f"{url}/run", json={"input": doc}).status_code == 502
        job_id = run(http, emulator, doc)  # refused once only
        emulator.refuse(503)
        assert http.get(f"{url}/status/{job_id}").status_code == 503
        emulator.accept()

        emulator.queue_seconds, emulator.job_seconds = 0.3, 0.3
        slow = run(http, emulator, doc)
        with emulator.unreachable():
            with pytest.raises(httpx.ConnectError):
                http.get(f"{url}/status/{slow}")
            time.sleep(0.7)  # the job goes on meanwhile
        with emulator.unreachable("hang"), pytest.raises(httpx.ReadTimeout):
            http.get(f"{url}/health", timeout=0.3)
        body = wait(http, emulator, slow)
        assert body["status"] == "COMPLETED"
        assert body["delayTime"] >= 250 and body["executionTime"] >= 250

        health = http.get(f"{url}/health").json()
        assert health["jobs"]["completed"] == 3 and health["jobs"]["failed"] == 2
        assert emulator.requests[("wan-ep", "run")] == 3
        assert len(emulator.inputs) == 5  # refused requests made no job
        assert http.get(f"{emulator.base_url}/other/health").status_code == 404


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown worker kind"):
        WorkerEmulator("comfy")
    assert issubclass(WorkerEmulator, QueueEmulator)
