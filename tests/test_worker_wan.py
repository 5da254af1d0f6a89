"""The Wan2.2 engine on the real diffusers pipeline classes with tiny random weights (CPU, offline).

The module builds the tiny engine once: a genuine ``WanImageToVideoPipeline`` with two experts,
synthetic LightX2V LoRAs written to disk, loaded into both experts and fused, and the 4-step
lightning schedule. Jobs go through the real worker handler (validation, S3 uploads) and the
results are decoded with ffmpeg and compared with the pipeline's own frames.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import struct
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw

pytest.importorskip("diffusers")

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import load_file

from tests.fakehub import FakeHub
from tests.s3server import S3Server, s3_server  # noqa: F401
from videokit.backends.base import JobContext
from videokit.errors import ConfigError
from videokit.media.images import decode_png_array, encode_png
from videokit.media.probe import probe_video, read_frames
from videokit.protocol import AnimateRequest, AnimateResult, MediaInput
from videokit.storage import S3Storage, StorageConfig
from videokit.worker import tiny_wan, wan, wan_config
from videokit.worker.engines import load_engine as load_registered_engine
from videokit.worker.errors import JobInputError, WorkerOOMError
from videokit.worker.handler import make_handler

EXPECTED_TIMESTEPS = [1000.0, 937.5, 833.333, 625.0]
STOCK_TIMESTEPS = [1000.0, 909.707, 717.317, 24.414]


def _picture(width: int = 200, height: int = 150) -> bytes:
    img = Image.new("RGB", (width, height), (40, 60, 90))
    draw = ImageDraw.Draw(img)
    for x in range(0, width, 10):
        draw.line([(x, 0), (x, height)], fill=(200, 40 + x % 200, 90))
    draw.ellipse((width // 3, height // 4, width // 2, height // 2), fill=(250, 200, 40))
    return encode_png(img)


PICTURE = _picture()
PICTURE_B64 = base64.b64encode(PICTURE).decode("ascii")


class Lines(list[str]):
    """The engine's log sink: collects JSON lines."""

    def records(self, event: str) -> list[dict[str, Any]]:
        return [r for r in map(json.loads, self) if r["event"] == event]


@pytest.fixture(scope="module")
def log() -> Lines:
    return Lines()


@pytest.fixture(scope="module")
def engine(log: Lines) -> Iterator[wan.WanEngine]:
    engine = wan.load_engine(tiny=True, env={}, log=log.append)
    yield engine
    asyncio.run(engine.aclose())


def _document(**fields: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "kind": "animate",
        "image": {"base64": PICTURE_B64},
        "prompt": "a knight swings his sword, camera pans left",
        "width": 128,
        "height": 128,
        "frames": 5,
        "fps": 8,
        "seed": 7,
    }
    document.update(fields)
    return document


def _request(**fields: Any) -> AnimateRequest:
    return AnimateRequest.model_validate(_document(**fields))


def _run(handler: Callable[[dict[str, Any]], Any], document: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = asyncio.run(handler({"id": "job-1", "input": document}))
    return out


def _decode_mp4(data: bytes, tmp_path: Path, name: str = "clip.mp4") -> tuple[Any, np.ndarray]:
    path = tmp_path / name
    path.write_bytes(data)
    info = probe_video(path)
    return info, np.stack(list(read_frames(path)))


def _assert_same_clip(decoded: np.ndarray, frames: np.ndarray) -> None:
    """``decoded`` (from the MP4) is ``frames``, lossy but in order: each decoded frame is
    closest to the pipeline frame at its own index. (Random tiny weights make noisy pictures,
    so yuv420p costs a few levels on average; neighbouring frames differ by far more.)"""
    assert decoded.shape == frames.shape
    distance = np.abs(decoded[:, None].astype(int) - frames[None].astype(int)).mean(axis=(2, 3, 4))
    assert list(distance.argmin(axis=1)) == list(range(len(frames))), distance
    assert distance.diagonal().max() < 10, distance.diagonal()


# -- the handler, end to end -----------------------------------------------------------------------


def test_a_native_job_through_the_handler_gives_the_requested_clip(
    engine: wan.WanEngine, log: Lines, tmp_path: Path
) -> None:
    handler = make_handler("animate", engine, env={})
    document = _document(width=160, frames=9)
    out = _run(handler, document)
    result = AnimateResult.model_validate(out)
    assert (result.frames, result.fps, result.width, result.height) == (9, 8, 160, 128)
    assert result.model == engine.identity("animate")
    assert result.model.startswith("tiny-wan/lightning@diffusers-")
    assert result.peak_memory_bytes is None  # CPU

    info, decoded = _decode_mp4(result.video.decode(), tmp_path)
    assert (info.codec, info.pix_fmt) == ("h264", "yuv420p")
    assert (info.width, info.height, info.frames, info.fps) == (160, 128, 9, 8.0)

    # The last frame is the pipeline's own last frame, losslessly; the MP4 holds every frame.
    render = engine.render_frames(AnimateRequest.model_validate(document))
    assert render.frames.shape == (9, 128, 160, 3)
    png = decode_png_array(result.last_frame.decode())
    assert np.array_equal(png, render.frames[-1])
    _assert_same_clip(decoded, render.frames)
    job = log.records("videokit.wan.job")[-1]
    assert job["status"] == "ok" and job["steps"] == 4 and job["guidance"] == [1.0, 1.0]
    assert set(job["timings_ms"]) >= {"text_encode", "condition", "denoise", "decode", "encode"}
    assert "knight" not in json.dumps(job)  # prompts are never logged


def test_drop_first_frame_and_fps_are_honoured(engine: wan.WanEngine, tmp_path: Path) -> None:
    handler = make_handler("animate", engine, env={})
    out = _run(handler, _document(drop_first_frame=True, fps=16, frames=9))
    result = AnimateResult.model_validate(out)
    assert (result.frames, result.fps) == (8, 16)
    info, decoded = _decode_mp4(result.video.decode(), tmp_path)
    assert (info.frames, info.fps) == (8, 16.0)
    render = engine.render_frames(_request(drop_first_frame=True, fps=16, frames=9))
    _assert_same_clip(decoded, render.frames[1:])
    assert np.array_equal(decode_png_array(result.last_frame.decode()), render.frames[-1])


def test_seed_style_requests_and_warmup(engine: wan.WanEngine) -> None:
    handler = make_handler("animate", engine, env={})
    warm = _run(handler, {"warmup": True})
    assert warm == {"warm": True, "model": engine.identity("animate"), "load_ms": engine.load_ms}
    out = _run(
        handler,
        {
            "image_base64": PICTURE_B64,
            "prompt": "a cat",
            "num_frames": 5,
            "width": 128,
            "height": 128,
            "fps": 12,
            "seed": 1,
        },
    )
    assert (out["num_frames"], out["fps"], out["resolution"]) == (5, 12, "128x128")


def test_outputs_are_uploaded_to_presigned_urls(
    engine: wan.WanEngine,
    s3_server: S3Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    endpoint_url, bucket, client = s3_server
    storage = S3Storage(
        StorageConfig(
            bucket=bucket,
            endpoint_url=endpoint_url,
            access_key_id="testing",
            secret_access_key="testing",
        ),
        client=client,
    )
    outputs = {
        "video": storage.output_target("clip.mp4", content_type="video/mp4").model_dump(),
        "last_frame": storage.output_target("last.png", content_type="image/png").model_dump(),
    }
    document = _document(outputs=outputs, seed=11)
    # Loopback targets are refused unless the worker allows private addresses.
    with pytest.raises(JobInputError, match=r"invalid input: outputs\.video\.put_url"):
        _run(make_handler("animate", engine, env={}), document)

    out = _run(make_handler("animate", engine, allow_private_urls=True, env={}), document)
    result = AnimateResult.model_validate(out)
    assert result.video.base64 is None and result.video.url is not None
    video = httpx.get(result.video.url).content
    png = httpx.get(str(result.last_frame.url)).content
    assert hashlib.sha256(video).hexdigest() == result.video.sha256
    assert hashlib.sha256(png).hexdigest() == result.last_frame.sha256
    info, _ = _decode_mp4(video, tmp_path)
    assert (info.frames, info.width, info.height) == (5, 128, 128)
    expected = engine.render_frames(_request(seed=11)).frames[-1]
    assert np.array_equal(decode_png_array(png), expected)


def test_same_seed_same_clip_and_a_different_seed_a_different_one(engine: wan.WanEngine) -> None:
    first = engine.render_frames(_request(seed=5)).frames
    again = engine.render_frames(_request(seed=5)).frames
    other = engine.render_frames(_request(seed=6)).frames
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    # Frame 0 is the input picture in both (the model starts from it): only motion differs.
    assert np.abs(first[1:].astype(int) - other[1:].astype(int)).mean() > 0.5

    handler = make_handler("animate", engine, env={})
    one = AnimateResult.model_validate(_run(handler, _document(seed=5)))
    two = AnimateResult.model_validate(_run(handler, _document(seed=5)))
    assert one.video.sha256 == two.video.sha256  # pinned x264 threads: same bytes
    assert one.last_frame.sha256 == two.last_frame.sha256


# -- LoRA, schedule, experts -----------------------------------------------------------------------


def test_lightx2v_loras_load_into_both_experts_and_fuse(tmp_path: Path) -> None:
    pipe = tiny_wan.build_tiny_pipeline()
    before = {
        name: {k: v.clone() for k, v in getattr(pipe, name).state_dict().items()}
        for name in ("transformer", "transformer_2")
    }
    high = tiny_wan.make_lightx2v_lora(tmp_path / "high.safetensors", pipe.transformer, seed=1)
    low = tiny_wan.make_lightx2v_lora(
        tmp_path / "low.safetensors", pipe.transformer_2, rank=8, alpha=4.0, seed=2
    )
    # The file is in the lightx2v format diffusers converts (not diffusers' own key names).
    keys = list(load_file(str(high)))
    assert "diffusion_model.blocks.0.self_attn.q.lora_down.weight" in keys
    assert "diffusion_model.blocks.1.ffn.2.alpha" in keys

    counts = wan.apply_lightning(pipe, high, low)
    targets = tiny_wan.lightx2v_targets(pipe.transformer)
    assert (
        counts
        == {"transformer": len(targets), "transformer_2": len(targets)}
        == {
            "transformer": 20,
            "transformer_2": 20,
        }
    )
    for name, path, scale in (("transformer", high, 1.0), ("transformer_2", low, 4.0 / 8)):
        model = getattr(pipe, name)
        assert not any(isinstance(m, BaseTunerLayer) for m in model.modules())  # fused, unloaded
        after = model.state_dict()
        assert set(after) == set(before[name])
        changed = {k for k in after if not torch.equal(after[k], before[name][k])}
        assert changed == {f"{target}.weight" for target in targets}
        # The fused delta is exactly up @ down x alpha/rank, on the module the key names.
        lora = load_file(str(path))
        down = lora["diffusion_model.blocks.1.cross_attn.v.lora_down.weight"]
        up = lora["diffusion_model.blocks.1.cross_attn.v.lora_up.weight"]
        delta = after["blocks.1.attn2.to_v.weight"] - before[name]["blocks.1.attn2.to_v.weight"]
        torch.testing.assert_close(delta, (up @ down) * scale, rtol=1e-4, atol=1e-6)
    assert isinstance(pipe.scheduler, wan.LightningScheduler)


def test_a_lora_with_modules_the_expert_lacks_is_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    pipe = tiny_wan.build_tiny_pipeline()
    high = tiny_wan.make_lightx2v_lora(tmp_path / "high.safetensors", pipe.transformer)
    tensors = load_file(str(high))
    extra = {
        k.replace(".blocks.1.", ".blocks.7."): v.clone()
        for k, v in tensors.items()
        if ".blocks.1." in k
    }
    save_file({**tensors, **extra}, str(tmp_path / "bigger.safetensors"))
    with pytest.raises(
        ConfigError, match=r"10 of its 30 modules do not exist in transformer \(blocks\.7\."
    ):
        wan.apply_lightning(pipe, tmp_path / "bigger.safetensors", None)


def test_four_step_schedule_and_expert_switch(engine: wan.WanEngine) -> None:
    calls: list[tuple[str, float]] = []
    pipe = engine.pipeline

    def recorder(name: str) -> Callable[..., None]:
        def hook(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
            calls.append((name, float(kwargs["timestep"].flatten()[0])))

        return hook

    handles = [
        pipe.transformer.register_forward_pre_hook(recorder("high"), with_kwargs=True),
        pipe.transformer_2.register_forward_pre_hook(recorder("low"), with_kwargs=True),
    ]
    try:
        render = engine.render_frames(_request())
    finally:
        for handle in handles:
            handle.remove()
    assert render.timesteps == pytest.approx(EXPECTED_TIMESTEPS, abs=1e-3)
    assert [name for name, _ in calls] == ["high", "high", "low", "low"]  # boundary 900
    assert [t for _, t in calls] == pytest.approx(EXPECTED_TIMESTEPS, abs=1e-3)
    assert wan.lightning_sigmas(4) == [1.0, 0.75, 0.5, 0.25]

    # Why the engine supplies sigmas: the stock scheduler spaces 4 steps differently.
    stock = FlowMatchEulerDiscreteScheduler(shift=5.0)
    stock.set_timesteps(4)
    assert stock.timesteps.tolist() == pytest.approx(STOCK_TIMESTEPS, abs=1e-3)
    assert stock.timesteps.tolist() != pytest.approx(EXPECTED_TIMESTEPS, abs=1.0)
    stock.set_timesteps(sigmas=wan.lightning_sigmas(4))
    assert stock.timesteps.tolist() == pytest.approx(EXPECTED_TIMESTEPS, abs=1e-3)


def _plan(engine: wan.WanEngine, **fields: Any) -> tuple[Any, ...]:
    plan = engine.plan(_request(**fields))
    return plan.steps, plan.guidance, plan.guidance_2, plan.negative_prompt, plan.notes


def test_lightning_ignores_guidance_and_standard_maps_only_the_untouched_defaults(
    engine: wan.WanEngine, log: Lines
) -> None:
    assert _plan(engine, guidance_scale=5.0, steps=6, negative_prompt="blurry") == (
        6, 1.0, 1.0, None, ["guidance_ignored_lightning"]
    )  # fmt: skip
    assert _plan(engine)[-1] == []
    standard = wan.load_engine(tiny=True, env={"VIDEOKIT_WAN_MODE": "standard"}, log=log.append)
    try:
        assert standard.identity("animate").startswith("tiny-wan/standard@")
        assert isinstance(standard.pipeline.scheduler, UniPCMultistepScheduler)
        # The protocol's lightning defaults (4 steps, guidance 1, no guidance_2), untouched,
        # mean "the model's own" here, negative prompt included when the request has none.
        defaults = AnimateRequest.model_fields
        assert (defaults["steps"].default, defaults["guidance_scale"].default) == (4, 1.0)
        reference = wan.REFERENCE_NEGATIVE_PROMPT
        everything = ["steps_reference", "guidance_reference", "negative_prompt_reference"]
        assert _plan(standard) == (40, 3.5, 3.5, reference, everything)
        assert _plan(standard, negative_prompt="  ") == (40, 3.5, 3.5, reference, everything)
        assert _plan(standard, negative_prompt="blurry") == (
            40, 3.5, 3.5, "blurry", ["steps_reference", "guidance_reference"]
        )  # fmt: skip
        # Anything the client chose runs as sent: a step count, a guidance of 1 with more steps.
        assert _plan(standard, steps=6) == (6, 1.0, 1.0, None, [])
        assert _plan(standard, guidance_scale=5.0) == (4, 5.0, 5.0, None, [])
        assert _plan(standard, guidance_scale_2=2.0) == (4, 1.0, 2.0, None, [])
        assert _plan(standard, steps=6, guidance_scale=5.0, guidance_scale_2=2.0) == (
            6, 5.0, 2.0, None, []
        )  # fmt: skip
        calls: list[str] = []
        handles = [
            standard.pipeline.transformer.register_forward_pre_hook(lambda *_: calls.append("h")),
            standard.pipeline.transformer_2.register_forward_pre_hook(lambda *_: calls.append("l")),
        ]
        try:
            render = standard.render_frames(
                _request(steps=5, guidance_scale=4.0, negative_prompt="blurry")
            )
            assert (render.steps, render.guidance, render.notes) == (5, (4.0, 4.0), [])
            assert len(calls) == 10 and set(calls) == {"h", "l"}  # CFG: two calls per step
            calls.clear()
            render = standard.render_frames(_request(steps=3))  # guidance 1: no CFG
            assert (render.steps, render.guidance) == (3, (1.0, 1.0)) and len(calls) == 3
        finally:
            for handle in handles:
                handle.remove()
    finally:
        asyncio.run(standard.aclose())


def _prompt_ids(pipe: Any, text: str) -> list[int]:
    """What the pipeline's tokenizer makes of ``text``, without its padding."""
    ids = pipe.tokenizer(text, add_special_tokens=True)["input_ids"]
    return [int(i) for i in ids]


def test_standard_mode_runs_cfg_against_wans_reference_negative_prompt(log: Lines) -> None:
    """The untouched defaults: the reference settings, and CFG's unconditional pass gets Wan's
    own negative prompt, not "". A request that chose its guidance runs as sent."""
    standard = wan.load_engine(tiny=True, env={"VIDEOKIT_WAN_MODE": "standard"}, log=log.append)
    pipe = standard.pipeline
    encoded: list[list[int]] = []
    expert_calls: list[int] = []

    def record(module: Any, args: Any) -> None:
        ids, mask = args[0], args[1]  # the pipeline calls text_encoder(input_ids, mask)
        encoded.append([int(i) for i, m in zip(ids[0], mask[0], strict=True) if int(m)])

    handles = [
        pipe.text_encoder.register_forward_pre_hook(record),
        pipe.transformer.register_forward_pre_hook(lambda *_: expert_calls.append(1)),
        pipe.transformer_2.register_forward_pre_hook(lambda *_: expert_calls.append(2)),
    ]
    try:
        document = _document()  # the protocol's defaults: 40 steps, guidance 3.5, CFG
        _run(make_handler("animate", standard, env={}), document)
        job = log.records("videokit.wan.job")[-1]
        reference_calls = len(expert_calls)
        given = _document(steps=5, guidance_scale=3.0, negative_prompt="blurry, static")
        _run(make_handler("animate", standard, env={}), given)
        given_job = log.records("videokit.wan.job")[-1]
        chosen = _document(steps=5, guidance_scale=3.0)  # guidance chosen, no negative prompt
        _run(make_handler("animate", standard, env={}), chosen)
        chosen_job = log.records("videokit.wan.job")[-1]
    finally:
        for handle in handles:
            handle.remove()
        asyncio.run(standard.aclose())
    assert wan.REFERENCE_NEGATIVE_PROMPT.startswith("色调艳丽，过曝，静态")
    reference = _prompt_ids(pipe, wan.REFERENCE_NEGATIVE_PROMPT)
    assert reference != _prompt_ids(pipe, "")  # the test can tell them apart
    # Two encoder calls per job: the prompt, then the negative prompt.
    assert len(encoded) == 6
    assert encoded[0] == _prompt_ids(pipe, document["prompt"])
    assert encoded[1] == reference
    assert reference_calls == 2 * 40
    assert (job["steps"], job["guidance"]) == (40, [3.5, 3.5])
    assert job["notes"] == ["steps_reference", "guidance_reference", "negative_prompt_reference"]
    assert encoded[3] == _prompt_ids(pipe, "blurry, static")  # a given one is honoured
    assert "notes" not in given_job and given_job["steps"] == 5
    assert encoded[5] == _prompt_ids(pipe, "")  # as sent: no substitution
    assert "notes" not in chosen_job and chosen_job["guidance"] == [3.0, 3.0]
    assert "色调" not in json.dumps(job)  # prompts, even the reference one, are never logged


# -- bad input, cancellation -----------------------------------------------------------------------


def _png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


BAD_INPUTS: list[tuple[dict[str, Any], str]] = [
    (
        {"image": {"base64": base64.b64encode(b"hello, not a picture").decode()}},
        "image: this is text",
    ),
    ({"image": {"base64": base64.b64encode(_png_claiming(8000, 8000)).decode()}}, "over the limit"),
    ({"frames": 80}, "frames: frames must be 4k+1"),
    ({"width": 100}, "width: Input should be a multiple of 16"),
    ({"image": {"url": "http://127.0.0.1:9/frame.png"}}, "image: "),
]


def test_bad_inputs_are_refused_and_the_engine_serves_the_next_job(
    engine: wan.WanEngine, log: Lines
) -> None:
    handler = make_handler("animate", engine, env={})
    jobs_before = len(log.records("videokit.wan.job"))
    for fields, expected in BAD_INPUTS:
        with pytest.raises(JobInputError) as caught:
            _run(handler, _document(**fields))
        message = str(caught.value)
        assert message.startswith("invalid input: ") and expected in message, message
    assert "loopback" in message or "private" in message  # the URL one, last
    assert len(log.records("videokit.wan.job")) == jobs_before  # none reached the GPU
    out = _run(handler, _document())
    assert out["frames"] == 5


def test_cancelling_stops_the_denoising_loop_at_the_next_step(
    engine: wan.WanEngine, log: Lines
) -> None:
    pipe = engine.pipeline
    steps_started: list[int] = []
    reached, proceed = threading.Event(), threading.Event()
    decodes: list[int] = []

    def hook(*_: Any) -> None:
        steps_started.append(1)
        if len(steps_started) == 2:
            reached.set()
            proceed.wait(timeout=30)

    original_decode = pipe.vae.decode
    pipe.vae.decode = lambda *a, **k: (decodes.append(1), original_decode(*a, **k))[1]
    handles = [
        expert.register_forward_pre_hook(hook) for expert in (pipe.transformer, pipe.transformer_2)
    ]
    progress: list[float] = []
    ctx = JobContext(
        scene="cancel-me", stage="animate", on_progress=lambda f, m: progress.append(f)
    )

    async def scenario() -> float:
        task = asyncio.create_task(engine.animate(_request(steps=4), ctx))
        await asyncio.to_thread(reached.wait, 30)  # step 2 of 4 is running
        task.cancel()
        await asyncio.sleep(0.2)  # the engine flags the job as cancelled (one loop turn)...
        proceed.set()  # ...then step 2 finishes, and its callback unwinds the pipeline
        started = time.perf_counter()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.perf_counter() - started

    try:
        waited = asyncio.run(scenario())
    finally:
        for handle in handles:
            handle.remove()
        del pipe.vae.decode
    assert len(steps_started) == 2 and not decodes  # no step 3, no VAE decode
    assert waited < 10
    assert max(progress) <= 2 / 6  # step 2 of 4 steps + decode + encode
    assert log.records("videokit.wan.job")[-1]["status"] == "cancelled"
    # The engine is free again, and serves the next job in full.
    assert engine.render_frames(_request()).frames.shape[0] == 5


# -- configuration and model files -----------------------------------------------------------------


def test_missing_model_files_are_listed_with_every_place_looked(tmp_path: Path) -> None:
    base = tmp_path / "Wan2.2-I2V-A14B-Diffusers"
    (base / "transformer").mkdir(parents=True)
    (base / "model_index.json").write_text("{}")
    (base / "transformer" / "config.json").write_text("{}")
    with pytest.raises(ConfigError) as caught:
        wan.load_engine(tiny=False, model_dir=tmp_path, device="cpu", env={})
    message = str(caught.value)
    assert str(tmp_path) in message
    for missing in (
        "Wan2.2-I2V-A14B-Diffusers/transformer/*.safetensors",
        "Wan2.2-I2V-A14B-Diffusers/transformer_2/config.json",
        "Wan2.2-I2V-A14B-Diffusers/text_encoder/config.json",
        "Wan2.2-I2V-A14B-Diffusers/vae/*.safetensors",
        "Wan2.2-I2V-A14B-Diffusers/tokenizer/",
        "loras/wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors",
        "loras/wan2.2_i2v_lightx2v_4steps_lora_v1_low_noise.safetensors",
    ):
        assert missing in message, missing
    assert "Wan2.2-I2V-A14B-Diffusers/model_index.json" not in message
    assert "Wan2.2-I2V-A14B-Diffusers/transformer/config.json" not in message
    assert "VIDEOKIT_ALLOW_HUB=1" in message

    # Defaults: both standard places are named; the environment is read at load time.
    with pytest.raises(ConfigError) as caught:
        wan.load_engine(tiny=False, device="cpu", env={})
    assert "/models/wan: does not exist" in str(caught.value)
    assert "/runpod-volume/models/wan: does not exist" in str(caught.value)
    with pytest.raises(ConfigError, match="in VIDEOKIT_MODEL_DIR:"):
        wan.load_engine(tiny=False, device="cpu", env={"VIDEOKIT_MODEL_DIR": str(tmp_path / "x")})
    # A search path, read the same way as the Qwen engine's: every place named, in order.
    search = {"VIDEOKIT_MODEL_DIRS": f"{tmp_path / 'x'}{os.pathsep}{tmp_path}"}
    with pytest.raises(ConfigError) as caught:
        wan.load_engine(tiny=False, device="cpu", env=search)
    message = str(caught.value)
    assert "in VIDEOKIT_MODEL_DIRS:" in message
    assert message.index(f"{tmp_path / 'x'}: does not exist") < message.index(f"  {tmp_path}: ")
    with pytest.raises(ConfigError, match="in the model_dirs option"):
        wan.load_engine(tiny=False, model_dirs=[tmp_path], device="cpu", env=search)
    with pytest.raises(ConfigError, match="VIDEOKIT_MODEL_DIR and VIDEOKIT_MODEL_DIRS are both"):
        wan.resolve_settings(env={**search, "VIDEOKIT_MODEL_DIR": str(tmp_path)})


def test_settings_come_from_the_environment_and_bad_values_are_named() -> None:
    settings = wan.resolve_settings(
        env={"VIDEOKIT_WAN_MODEL": "ti2v-5b", "VIDEOKIT_DTYPE": "fp16", "VIDEOKIT_DEVICE": "cpu"}
    )
    assert (settings.model.key, settings.mode, settings.dtype, settings.offload) == (
        "ti2v-5b",
        "standard",
        "fp16",
        "none",
    )
    assert wan.resolve_settings(env={}).mode == "lightning"
    with pytest.raises(ConfigError, match="VIDEOKIT_WAN_MODE must be one of lightning, standard"):
        wan.resolve_settings(env={"VIDEOKIT_WAN_MODE": "turbo"})
    with pytest.raises(ConfigError, match=r"none is known for wan2\.2-ti2v-5b"):
        wan.resolve_settings(
            env={"VIDEOKIT_WAN_MODEL": "ti2v-5b", "VIDEOKIT_WAN_MODE": "lightning"}
        )
    with pytest.raises(ConfigError, match="offload=model"):
        wan.resolve_settings(offload="model", device="cpu", env={})
    with pytest.raises(ConfigError, match="tiny engine takes no dtype"):
        wan.load_engine(tiny=True, dtype="bf16", env={})
    with pytest.raises(ConfigError, match="no option 'dtype'"):
        load_registered_engine("animate", "tiny", dtype="bf16")
    with pytest.raises(ConfigError, match=r"VIDEOKIT_DEVICE: 'tpu' is not a device"):
        wan.resolve_settings(env={"VIDEOKIT_DEVICE": "tpu"})


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA"
)
def test_without_cuda_the_real_engine_refuses_to_start_unless_told_cpu(tmp_path: Path) -> None:
    """No silent CPU fallback: an A14B job on a CPU would take hours."""
    with pytest.raises(ConfigError) as caught:
        wan.load_engine(tiny=False, model_dir=tmp_path, env={})
    message = str(caught.value)
    assert message.startswith("the default device is cuda, but torch sees no CUDA device")
    assert "VIDEOKIT_DEVICE=cpu" in message
    # Refused before the model files are even looked at (the directory is empty).
    assert "not found" not in message
    with pytest.raises(ConfigError, match=r"^VIDEOKIT_DEVICE is cuda:1, but torch sees no CUDA"):
        wan.load_engine(tiny=False, model_dir=tmp_path, env={"VIDEOKIT_DEVICE": "cuda:1"})
    # Named explicitly, the CPU is accepted: the next problem is the empty directory.
    with pytest.raises(ConfigError, match="model files not found"):
        wan.load_engine(tiny=False, model_dir=tmp_path, env={"VIDEOKIT_DEVICE": "cpu"})
    # The tiny engine's default device is the CPU.
    assert wan.resolve_settings(env={}, tiny=True).device == "cpu"
    assert wan.resolve_settings(env={}).device == "cuda"


def test_the_real_loader_reads_the_documented_layout(engine: wan.WanEngine, tmp_path: Path) -> None:
    """A diffusers snapshot of the tiny weights + LoRA files in loras/: the production load path.

    Same base weights and same LoRA files as the tiny engine, so the same pixels (to rounding).
    """
    pipe = tiny_wan.build_tiny_pipeline()
    pipe.scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0
    )
    pipe.save_pretrained(tmp_path / "Wan2.2-I2V-A14B-Diffusers")
    _, high_name, low_name = wan.LORA_SETS[0]
    tiny_wan.make_lightx2v_lora(tmp_path / "loras" / high_name, pipe.transformer, seed=1)
    tiny_wan.make_lightx2v_lora(tmp_path / "loras" / low_name, pipe.transformer_2, seed=2)

    lines = Lines()
    loaded = wan.load_engine(
        tiny=False, model_dir=tmp_path, dtype="fp32", device="cpu", env={}, log=lines.append
    )
    try:
        assert loaded.identity("animate") == engine.identity("animate").replace(
            "tiny-wan/lightning@", "wan2.2-i2v-a14b/lightning-fp32@"
        )
        record = lines.records("videokit.wan.load")[0]
        assert record["model_dir"] == str(tmp_path)
        assert record["lora_modules"] == {"transformer": 20, "transformer_2": 20}
        request = _request()
        ours = loaded.render_frames(request)
        assert ours.timesteps == pytest.approx(EXPECTED_TIMESTEPS, abs=1e-3)
        # Same weights, same LoRAs, same schedule; fp32 kernels may round a handful of the
        # 245760 values to the neighbouring level (from_pretrained builds modules differently).
        theirs = engine.render_frames(request).frames
        difference = np.abs(ours.frames.astype(int) - theirs.astype(int))
        assert difference.max() <= 1 and np.count_nonzero(difference) < 50
    finally:
        asyncio.run(loaded.aclose())


def test_registry_loads_the_tiny_engine() -> None:
    engine = load_registered_engine("animate", "tiny", env={})
    try:
        assert isinstance(engine, wan.WanEngine) and engine.name == "tiny"
        request = AnimateRequest(
            image=MediaInput.from_bytes(PICTURE),
            prompt="waves",
            width=128,
            height=128,
            frames=5,
            seed=2,
        )
        result = asyncio.run(engine.animate(request, JobContext(scene="s", stage="animate")))
        assert result.frames == 5 and result.video.size_bytes > 0
        buf = io.BytesIO(result.last_frame.decode())
        assert Image.open(buf).size == (128, 128)
    finally:
        asyncio.run(engine.aclose())


def test_the_gpu_benchmark_runs_its_tiny_path_on_the_cpu() -> None:
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_wan.py"
    spec = importlib.util.spec_from_file_location("videokit_bench_gpu_wan", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.bench_wan(device="cpu", frames=5, width=128, height=128, tiny=True)
    assert result["timesteps"] == pytest.approx(EXPECTED_TIMESTEPS, abs=1e-3)
    assert result["steps"] == 4 and result["peak_memory_bytes"] is None
    seconds = result["seconds"]
    assert seconds["total"] >= seconds["denoise"] > 0
    # The full-size configs describe the published architecture: ~14.3 B per expert.
    config = bench.A14B_TRANSFORMER_CONFIG
    assert config["num_attention_heads"] * config["attention_head_dim"] == 5120
    assert (config["num_layers"], config["ffn_dim"], config["in_channels"]) == (40, 13824, 36)


def test_a_runpod_cached_snapshot_is_used_with_the_loras_of_a_model_directory(
    tmp_path: Path,
) -> None:
    """RunPod's cached models (one per endpoint): the snapshot in the Hugging Face cache layout
    at the pinned commit, the LoRAs baked into the image's model directory."""
    spec = wan.MODELS["a14b"]
    cache = tmp_path / "hub"
    snapshot = cache / "models--Wan-AI--Wan2.2-I2V-A14B-Diffusers" / "snapshots" / spec.revision
    for item in ("model_index.json", "scheduler/scheduler_config.json", "tokenizer/tokenizer.json"):
        (snapshot / item).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / item).write_text("{}")
    for component in ("text_encoder", "transformer", "transformer_2", "vae"):
        (snapshot / component).mkdir()
        (snapshot / component / "config.json").write_text("{}")
        (snapshot / component / "model.safetensors").write_bytes(b"x")
    image = tmp_path / "image"
    (image / "loras").mkdir(parents=True)
    _, high, low = wan.LORA_SETS[0]
    env = {"VIDEOKIT_HF_CACHE_ROOT": str(cache)}
    settings = wan.resolve_settings(model_dir=image, device="cpu", env=env)
    with pytest.raises(ConfigError, match="complete, but no model directory holds the LoRAs"):
        wan.locate_model_files(settings, env)
    for name in (high, low):
        (image / "loras" / name).write_bytes(b"lora")
    files = wan.locate_model_files(settings, env)
    assert (files.base, files.root) == (snapshot, image)
    assert files.loras == (image / "loras" / high, image / "loras" / low)
    # Standard mode needs no LoRAs; a missing component is named with where it was looked for.
    (snapshot / "vae" / "config.json").unlink()
    with pytest.raises(ConfigError) as caught:
        wan.locate_model_files(settings, env)
    assert f"({snapshot}): missing Wan2.2-I2V-A14B-Diffusers/vae/config.json" in str(caught.value)


def test_with_hub_access_missing_files_are_fetched_anonymously_into_the_layout(
    tmp_path: Path,
) -> None:
    """Through the engine's ``hub``: a stand-in serving a snapshot in the diffusers layout (tiny
    placeholder files: only the file check runs here) and the LoRA repository."""
    _, high, low = wan.LORA_SETS[0]
    hub = FakeHub(remote=tmp_path / "hub")
    repo = "Wan-AI/Wan2.2-I2V-A14B-Diffusers"
    for item in ("model_index.json", "scheduler/scheduler_config.json", "tokenizer/tokenizer.json"):
        hub.add(repo, item, b"{}")
    for component in ("text_encoder", "transformer", "transformer_2", "vae"):
        hub.add(repo, f"{component}/config.json", b"{}")
        hub.add(repo, f"{component}/model.safetensors", b"x")
    hub.add(repo, "examples/i2v_input.JPG", b"not fetched")  # outside the snapshot's patterns
    for name in (high, low):
        hub.add("Comfy-Org/Wan_2.2_ComfyUI_Repackaged", f"split_files/loras/{name}", b"lora")
    models = tmp_path / "models"
    env = {"VIDEOKIT_ALLOW_HUB": "1"}
    settings = wan.resolve_settings(model_dir=models, device="cpu", env=env)
    files = wan.locate_model_files(settings, env, hub=hub)
    assert files.base == models / "Wan2.2-I2V-A14B-Diffusers"
    assert files.loras == (models / "loras" / high, models / "loras" / low)
    assert not (files.base / "examples").exists()

    def fetched() -> list[str]:
        return [
            c["repo_id"] + (f"/{c['filename']}" if kind == "file" else "") for kind, c in hub.calls
        ]

    assert fetched() == [
        "Wan-AI/Wan2.2-I2V-A14B-Diffusers",
        f"Comfy-Org/Wan_2.2_ComfyUI_Repackaged/split_files/loras/{high}",
        f"Comfy-Org/Wan_2.2_ComfyUI_Repackaged/split_files/loras/{low}",
    ]
    # At the commits workers/models.py pins, never whatever the default branch holds today.
    pinned = wan.MODELS["a14b"].revision
    assert [c["revision"] for _, c in hub.calls] == [pinned] + [wan_config.LORA_REVISION] * 2
    # Into the model directory, never the Hugging Face cache; no token unless HF_TOKEN is set
    # (False: not even a login cached on disk).
    assert all(c.get("token") is False for _, c in hub.calls)
    assert not list(models.glob(".download-*"))  # scratch folders are gone
    # Without the opt-in nothing is fetched: the same empty directory is a ConfigError, whose
    # hint says both what to set and what to unset.
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError) as caught:
        wan.locate_model_files(
            wan.resolve_settings(model_dir=empty, device="cpu", env={}), {}, hub=hub
        )
    assert "VIDEOKIT_ALLOW_HUB=1 (and unset HF_HUB_OFFLINE" in str(caught.value)
    assert len(hub.calls) == 3
    # A token comes from HF_TOKEN only, and only at run time.
    token_env = {"VIDEOKIT_ALLOW_HUB": "1", "HF_TOKEN": "hf_runtime_token"}
    other = tmp_path / "other"
    wan.locate_model_files(wan.resolve_settings(model_dir=other, env=token_env), token_env, hub=hub)
    assert [c["token"] for _, c in hub.calls[3:]] == ["hf_runtime_token"] * 3
    # The image's HF_HUB_OFFLINE=1 would make every download fail: said up front.
    offline = {"VIDEOKIT_ALLOW_HUB": "1", "HF_HUB_OFFLINE": "1"}
    with pytest.raises(ConfigError, match="HF_HUB_OFFLINE=1 disables every download"):
        wan.locate_model_files(
            wan.resolve_settings(model_dir=tmp_path / "third", env=offline), offline, hub=hub
        )
    assert len(hub.calls) == 6
    # The loader takes the same client as an option, and checks it; the tiny engine has no use
    # for one and refuses it.
    with pytest.raises(ConfigError, match=r"'hub' has no snapshot_download\(\)"):
        wan.load_engine(tiny=False, model_dir=models, device="cpu", env={}, hub=object())
    with pytest.raises(ConfigError, match="tiny engine takes no hub"):
        wan.load_engine(tiny=True, env={}, hub=hub)


# -- CUDA out of memory ----------------------------------------------------------------------------

OOM_MESSAGE = (
    "CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of 79.19 GiB "
    "of which 3.06 GiB is free."
)


def test_a_cuda_oom_in_the_pipeline_is_reported_as_transient_and_frees_the_jobs_tensors(
    engine: wan.WanEngine, log: Lines
) -> None:
    """A real ``torch.cuda.OutOfMemoryError``, raised where CUDA raises it: inside a transformer
    block. The handler reports it as OOM (transient), and the job's tensors are gone by then,
    even while the caller still holds the error (whose traceback would otherwise keep them)."""
    pipe = engine.pipeline
    inputs: list[weakref.ref[torch.Tensor]] = []

    def out_of_memory(module: Any, args: Any) -> None:
        inputs.append(weakref.ref(args[0]))  # the block's hidden states: activations of the job
        raise torch.cuda.OutOfMemoryError(OOM_MESSAGE)

    handle = pipe.transformer.blocks[0].register_forward_pre_hook(out_of_memory)
    lines: list[str] = []
    try:
        with pytest.raises(WorkerOOMError) as caught:
            _run(make_handler("animate", engine, env={}, log=lines.append), _document())
    finally:
        handle.remove()
    error = caught.value
    assert error.transient is True
    assert str(error).startswith("CUDA out of memory: Tried to allocate 20.00 GiB")
    assert isinstance(error.__cause__, torch.cuda.OutOfMemoryError)
    assert json.loads(lines[-1])["status"] == "oom"
    assert log.records("videokit.wan.job")[-1]["status"] == "oom"
    assert len(inputs) == 1 and inputs[0]() is None  # released, not held by the traceback
    # The worker stays up and serves the next job in full.
    assert _run(make_handler("animate", engine, env={}), _document())["frames"] == 5


# -- dialects, TI2V-5B -----------------------------------------------------------------------------


def test_dialect_results_carry_peak_memory_when_it_was_measured(engine: wan.WanEngine) -> None:
    from videokit.worker.compat import format_output

    result = asyncio.run(engine.animate(_request(), JobContext(scene="s", stage="animate")))
    assert "peak_memory_bytes" not in format_output(result, "lightx2v-worker")  # CPU: not measured
    on_gpu = result.model_copy(update={"peak_memory_bytes": 41 * 2**30})
    assert format_output(on_gpu, "lightx2v-worker")["peak_memory_bytes"] == 41 * 2**30


def test_a_ti2v_5b_snapshot_loads_and_animates_through_the_real_loader(
    tmp_path: Path, log: Lines
) -> None:
    """TI2V-5B's layout: one transformer, the Wan2.2 VAE (48 latent channels, 16x, patchified),
    per-token timesteps (``expand_timesteps``), a ``WanPipeline`` model index, standard mode."""
    pipe = tiny_wan.build_tiny_ti2v_pipeline()
    folder = tmp_path / "Wan2.2-TI2V-5B-Diffusers"
    pipe.save_pretrained(folder)
    index = json.loads((folder / "model_index.json").read_text())
    # As published: a WanPipeline index (text and image to video) without the I2V-only entries.
    index["_class_name"] = "WanPipeline"
    for name in ("image_encoder", "image_processor", "transformer_2"):
        index.pop(name, None)
    (folder / "model_index.json").write_text(json.dumps(index))

    loaded = wan.load_engine(
        tiny=False, model="ti2v-5b", model_dir=tmp_path, dtype="fp32", device="cpu", env={},
        log=log.append,
    )  # fmt: skip
    timesteps: list[tuple[int, ...]] = []

    def record(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        timesteps.append(tuple(kwargs["timestep"].shape))

    handle = loaded.pipeline.transformer.register_forward_pre_hook(record, with_kwargs=True)
    try:
        assert loaded.mode == "standard" and loaded.size_multiple == 32
        assert loaded.identity("animate").startswith("wan2.2-ti2v-5b/standard-fp32@diffusers-")
        assert loaded.pipeline.transformer_2 is None and loaded.pipeline.vae.config.z_dim == 48
        # Its reference settings, for a request that left the lightning defaults untouched.
        reference = loaded.plan(_request())
        assert (reference.steps, reference.guidance, reference.guidance_2) == (50, 5.0, None)
        handler = make_handler("animate", loaded, env={})
        out = AnimateResult.model_validate(_run(handler, _document(steps=5, guidance_scale=5.0)))
        with pytest.raises(JobInputError, match=r"width: wan2\.2-ti2v-5b needs a multiple of 32"):
            _run(handler, _document(width=144))
    finally:
        handle.remove()
        asyncio.run(loaded.aclose())
    assert (out.frames, out.width, out.height) == (5, 128, 128)
    info, decoded = _decode_mp4(out.video.decode(), tmp_path)
    assert (info.frames, info.width, info.height) == (5, 128, 128)
    assert decoded.shape == (5, 128, 128, 3)
    job = log.records("videokit.wan.job")[-1]
    assert job["steps"] == 5 and job["guidance"] == [5.0, None]  # one expert: one scale
    # CFG (two calls per step), each with one timestep per latent token: 2 latent frames of
    # (128/16/2)^2 = 16 tokens.
    assert timesteps == [(1, 32)] * 10
