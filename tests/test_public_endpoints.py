"""RunPod Public Endpoints through the real client: the emulator on loopback, a real S3 server.

Frames go up to the bucket and reach the endpoint as presigned GET URLs; results come back as
``video_url`` / ``image_url`` that the client downloads at once; the chained frame is the clip's
exact last frame, decoded from the compressed clip; costs are the endpoint's own.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import make_image
from tests.public_endpoints import QWEN_EDIT_2511, WAN_I2V, PublicEndpoints, serve_public_endpoints
from tests.s3server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, S3Server, s3_server  # noqa: F401
from videokit.backends.base import JobContext
from videokit.backends.retry import RetryPolicy
from videokit.backends.runpod import Endpoint, RunPodBackend, RunPodConfig
from videokit.config import Secret
from videokit.errors import ConfigError, JobFailedError
from videokit.media.images import decode_png_array, encode_png
from videokit.media.probe import probe_video
from videokit.protocol import AnimateRequest, EditRequest, MediaInput
from videokit.storage import S3Storage, StorageConfig


@pytest.fixture
def public() -> Iterator[PublicEndpoints]:
    with serve_public_endpoints() as served:
        yield served


def storage_for(s3: S3Server) -> S3Storage:
    config = StorageConfig(
        bucket=s3.bucket,
        endpoint_url=s3.endpoint_url,
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET_ACCESS_KEY,
    )
    return S3Storage(config, client=s3.client)


def public_backend(public: PublicEndpoints, s3: S3Server | None, **config: Any) -> RunPodBackend:
    endpoints = {"edit": Endpoint(QWEN_EDIT_2511), "animate": Endpoint(WAN_I2V)}
    return RunPodBackend(
        RunPodConfig(
            api_key=Secret("rp-key-never-sent-off-runpod"),
            endpoints=endpoints,
            base_url=public.base_url,
            **config,
        ),
        storage=storage_for(s3) if s3 is not None else None,
        retry=RetryPolicy(attempts=3, base_s=0.05, cap_s=0.2),
    )


def frame_png(width: int, height: int) -> bytes:
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    pixels[..., 2] = 90
    return encode_png(pixels)


def go(backend: RunPodBackend, stage: str, request: Any, ctx: JobContext) -> Any:
    async def main() -> Any:
        try:
            if stage == "edit":
                return await backend.edit(request, ctx)
            return await backend.animate(request, ctx)
        finally:
            await backend.aclose()

    return asyncio.run(main())


def test_a_clip_and_an_edit_round_trip_with_the_endpoints_costs(
    public: PublicEndpoints,
    s3_server: S3Server,  # noqa: F811
) -> None:
    backend = public_backend(public, s3_server)
    frame = frame_png(1280, 720)
    ctx = JobContext(scene="s", stage="edit")
    edited = go(
        backend,
        "edit",
        EditRequest(images=[MediaInput.from_bytes(frame)], prompt="a hat", seed=3),
        ctx,
    )
    # 1280x720 is not a size 2511 makes: the one nearest its aspect ratio is asked for.
    [(_, document)] = [(e, d) for e, d in public.inputs if e == QWEN_EDIT_2511]
    assert document["size"] == "1536*1080" and document["seed"] == 3
    assert document["images"][0].startswith(s3_server.endpoint_url)  # a presigned URL
    assert "negative_prompt" not in document
    assert (edited.width, edited.height) == (1536, 1080)
    assert edited.image.decode().startswith(b"\x89PNG")
    [attempt] = ctx.attempts
    assert attempt.status == "COMPLETED" and attempt.cost_usd == 0.02
    assert not attempt.cost_estimated  # the endpoint's own `cost`

    ctx = JobContext(scene="s", stage="animate")
    request = AnimateRequest(
        image=MediaInput.from_bytes(frame), prompt="waves", seed=5, width=1280, height=720
    )
    clip = go(backend, "animate", request, ctx)
    [(_, document)] = [(e, d) for e, d in public.inputs if e == WAN_I2V]
    assert document["duration"] == 5 and document["size"] == "1280*720"
    # Lightning defaults are not sent: the endpoint runs its own steps and guidance.
    assert "num_inference_steps" not in document and "guidance" not in document
    assert clip.frames == 81 and clip.fps == 16 and clip.last_frame_source == "decoded"
    [attempt] = ctx.attempts
    assert attempt.cost_usd == pytest.approx(0.30) and not attempt.cost_estimated
    # The chained frame is the clip's real last frame (through the codec), not the one before.
    job_id = attempt.job_id
    last = decode_png_array(clip.last_frame.decode()).astype(np.int16)
    expected = public.expected_last_frame(job_id).astype(np.int16)
    before = public.expected_frame(job_id, -2).astype(np.int16)
    assert np.abs(last - expected).mean() < 4
    assert np.abs(last - before).mean() > 12
    # The RunPod key went nowhere but RunPod's own API host (this is loopback).
    assert set(public.authorization) == {None}


def test_a_bad_image_url_fails_the_job_without_resubmitting(
    public: PublicEndpoints,
) -> None:
    backend = public_backend(public, None)
    request = AnimateRequest(
        image=MediaInput(url="http://127.0.0.1:9/missing.png"),
        prompt="p",
        seed=1,
        width=1280,
        height=720,
    )
    ctx = JobContext(scene="s", stage="animate")
    with pytest.raises(JobFailedError, match="Invalid image URL"):
        go(backend, "animate", request, ctx)
    [attempt] = ctx.attempts
    assert attempt.status == "FAILED" and attempt.cost_usd == 0.0 and attempt.cost_estimated


def test_an_expired_result_is_paid_for_recorded_and_run_again(
    s3_server: S3Server,  # noqa: F811
) -> None:
    with serve_public_endpoints(result_ttl_s=0.0) as public:
        backend = public_backend(public, s3_server, job_attempts=2)
        request = EditRequest(images=[MediaInput.from_bytes(frame_png(64, 64))], prompt="x", seed=1)
        ctx = JobContext(scene="s", stage="edit")
        with pytest.raises(JobFailedError, match="expired"):
            go(backend, "edit", request, ctx)
    assert [a.status for a in ctx.attempts] == ["COMPLETED", "COMPLETED"]
    # Both jobs made (and billed) an image that expired before it could be fetched.
    assert all(a.cost_usd == 0.02 and not a.cost_estimated for a in ctx.attempts)
    assert all(a.error and "expired" in a.error for a in ctx.attempts)


def test_public_endpoints_refuse_to_start_without_a_bucket(public: PublicEndpoints) -> None:
    backend = public_backend(public, None)
    with pytest.raises(ConfigError, match="VIDEOKIT_S3_BUCKET"):
        backend.check({"edit", "animate"})
    assert not public.requests


def test_an_endpoint_id_of_the_wrong_stage_is_a_config_error(public: PublicEndpoints) -> None:
    with pytest.raises(ConfigError, match="VIDEOKIT_EDIT_ENDPOINT"):
        RunPodBackend(RunPodConfig(api_key=None, endpoints={"animate": Endpoint(QWEN_EDIT_2511)}))


def write_720p_story(root: Path) -> Path:
    make_image(root / "ref.png", (1280, 720))
    story = root / "film.yaml"
    story.write_text(
        "title: Public\nreference: ref.png\n"
        "defaults: {width: 1280, height: 720, fps: 16, duration: 5}\n"
        "scenes:\n"
        "  - {id: hello, motion: the camera pushes in}\n"
        "  - {id: hat, edit: same scene with a red hat, motion: the hat spins}\n"
        "  - {id: walk, motion: walking on, transition: {crossfade: 0.5}}\n"
        "  - {id: end, motion: fade}\n"
    )
    return story


def test_render_makes_a_film_whose_frame_count_is_the_plans(
    tmp_path: Path,
    public: PublicEndpoints,
    s3_server: S3Server,  # noqa: F811
) -> None:
    story = write_720p_story(tmp_path)
    env = {
        **os.environ,
        "VIDEOKIT_EDIT_ENDPOINT": QWEN_EDIT_2511,
        "VIDEOKIT_ANIMATE_ENDPOINT": WAN_I2V,
        "VIDEOKIT_RUNPOD_BASE_URL": public.base_url,
        "RUNPOD_API_KEY": "rp-test-key",
        "VIDEOKIT_S3_BUCKET": s3_server.bucket,
        "VIDEOKIT_S3_ENDPOINT_URL": s3_server.endpoint_url,
        "VIDEOKIT_S3_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "VIDEOKIT_S3_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
    }
    out = tmp_path / "out"

    def videokit(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "videokit", *args],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
            cwd=tmp_path,
        )

    plan = videokit("plan", str(story), "--out", str(out), "--json")
    assert plan.returncode == 0, plan.stderr
    planned = json.loads(plan.stdout)
    rendered = videokit("render", str(story), "--out", str(out), "--json")
    assert rendered.returncode == 0, rendered.stderr
    final = out / "final.mp4"
    assert probe_video(final).frames == planned["final_frames"]
    # Every clip is 5 whole seconds at 16 fps: 81 frames, as the endpoint renders them.
    assert planned["formula"].startswith("81 + 81 + (81 - 1 seam) + 81 - 8 crossfade = 315")
    manifest = json.loads((out / "manifest.json").read_text())
    animate = manifest["scenes"]["walk"]["animate"]
    assert animate["attempts"][-1]["cost_usd"] == pytest.approx(0.30)
    # Four 5 s clips at $0.06 a second and one edit at $0.02, all as the endpoint billed them.
    assert manifest["run_cost_usd"] == pytest.approx(4 * 0.30 + 0.02)
    assert manifest["run_cost_estimated_usd"] == 0.0
    # The edit came back at 1536x1080 (a size 2511 makes); the clip was sent the edited frame
    # fitted to the story's 1280x720, like every other frame.
    edited = Image.open(out / "scenes" / "hat" / "edit.png")
    assert edited.size == (1536, 1080)
    for endpoint_id, document in public.inputs:
        if endpoint_id == WAN_I2V:
            sent = httpx.get(document["image"], timeout=10)
            assert Image.open(io.BytesIO(sent.content)).size == (1280, 720)
    # Each chained frame went through the codec: the manifest says so.
    assert {r["animate"]["last_frame"] for r in manifest["scenes"].values()} == {"decoded"}
    assert "rp-test-key" not in json.dumps(manifest) + rendered.stdout + rendered.stderr
    assert set(public.authorization) == {None}
    assert Image.open(out / "contact_sheet.png").size[0] > 0


def test_a_configured_output_price_is_what_estimates_bill(tmp_path: Path) -> None:
    from videokit.backends import create_backend
    from videokit.config import Settings

    env = {
        "VIDEOKIT_EDIT_ENDPOINT": QWEN_EDIT_2511,
        "VIDEOKIT_ANIMATE_ENDPOINT": WAN_I2V,
        "RUNPOD_API_KEY": "k",
        "VIDEOKIT_OUTPUT_PRICES": '{"wan-2-2-i2v-720": 0.05}',
    }
    (tmp_path / "videokit.toml").write_text("")
    settings = Settings.resolve(env=env, dotenv=None, config_file=tmp_path / "videokit.toml")
    backend = create_backend(None, settings)
    assert isinstance(backend, RunPodBackend)
    price = backend.kinds["animate"].price
    assert price is not None and price.usd == 0.05 and price.per == "second"
    assert backend.kinds["edit"].price is not None and backend.kinds["edit"].price.usd == 0.02


@pytest.mark.parametrize(
    ("endpoint_id", "expected"),
    [
        ("qwen-image-edit", {"prompt", "image", "negative_prompt", "seed", "output_format"}),
        ("qwen-image-edit-2511-lora", {"prompt", "images", "size", "seed", "output_format"}),
    ],
)
def test_edit_input_documents_follow_each_endpoints_schema(
    endpoint_id: str, expected: set[str]
) -> None:
    from videokit.backends.kinds import public_model
    from videokit.backends.kinds.fetch import ResultFetcher
    from videokit.backends.kinds.runpod_public import PublicApi

    model = public_model(endpoint_id)
    assert model is not None
    api = PublicApi(model, storage=None, fetcher=ResultFetcher())
    request = EditRequest(
        images=[MediaInput(url="https://bucket.example/frame.png")],
        prompt="a hat",
        negative_prompt="blur",
        seed=4,
        width=1280,
        height=720,
    )
    document = asyncio.run(api.input_document(request))
    assert set(document) == expected
    assert document["seed"] == 4 and document["output_format"] == "png"


def test_the_lora_wan_endpoint_gets_only_what_its_page_documents() -> None:
    from videokit.backends.kinds import public_model
    from videokit.backends.kinds.fetch import ResultFetcher
    from videokit.backends.kinds.runpod_public import PublicApi

    model = public_model("wan-2-2-t2v-720-lora")
    assert model is not None
    api = PublicApi(model, storage=None, fetcher=ResultFetcher())
    request = AnimateRequest(
        image=MediaInput(url="https://bucket.example/frame.png"),
        prompt="orbit",
        seed=2,
        width=1280,
        height=720,
        frames=129,
    )
    document = asyncio.run(api.input_document(request))
    assert document == {
        "prompt": "orbit",
        "image": "https://bucket.example/frame.png",
        "duration": 8,
        "seed": 2,
    }
    with pytest.raises(ConfigError, match="5-8 whole seconds"):
        asyncio.run(api.input_document(request.model_copy(update={"frames": 161})))
