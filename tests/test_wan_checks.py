"""The Wan engine's up-front request checks (videokit.worker.wan_checks), through the real tiny
engine and the job handler: a refused request fails at once, before any denoising step."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from tests.test_worker import LIGHTX2V_OUTPUT_KEYS
from tests.test_worker_wan import PICTURE_B64, Lines, _document, _request, _run
from videokit.worker import tiny_wan, wan
from videokit.worker.errors import JobInputError
from videokit.worker.handler import make_handler
from videokit.worker.wan_checks import WanGrid


@pytest.fixture(scope="module")
def log() -> Lines:
    return Lines()


@pytest.fixture(scope="module")
def lightning(log: Lines) -> Iterator[wan.WanEngine]:
    engine = wan.load_engine(tiny=True, env={}, log=log.append)
    yield engine
    asyncio.run(engine.aclose())


@pytest.fixture(scope="module")
def standard(log: Lines) -> Iterator[wan.WanEngine]:
    engine = wan.load_engine(tiny=True, env={"VIDEOKIT_WAN_MODE": "standard"}, log=log.append)
    yield engine
    asyncio.run(engine.aclose())


def _refused_fast(engine: wan.WanEngine, log: Lines, document: dict[str, Any]) -> str:
    """Run ``document`` through the handler; it must be refused in well under a second, with no
    expert called (no denoising step) and no job reaching the pipeline thread."""
    calls: list[int] = []
    pipe = engine.pipeline
    handles = [
        expert.register_forward_pre_hook(lambda *_: calls.append(1))
        for expert in (pipe.transformer, pipe.transformer_2)
    ]
    jobs_before = len(log.records("videokit.wan.job"))
    handler = make_handler("animate", engine, env={})
    started = time.perf_counter()
    try:
        with pytest.raises(JobInputError) as caught:
            _run(handler, document)
    finally:
        for handle in handles:
            handle.remove()
    elapsed = time.perf_counter() - started
    assert elapsed < 0.5, elapsed
    assert calls == [] and len(log.records("videokit.wan.job")) == jobs_before
    message = str(caught.value)
    assert message.startswith("invalid input: "), message
    assert not getattr(caught.value, "transient", False)  # a retry fails the same way
    return message


# -- 1. sizes the tiny config cannot build ---------------------------------------------------------


def test_the_tiny_grid_is_derived_from_the_configs() -> None:
    # The tiny transformer's rotary table has 32 positions per axis, patch 1x2x2, VAE 8x/4x:
    # at most 32 x 2 x 8 = 512 px a side and (32 - 1) x 4 + 1 = 125 frames.
    tiny = WanGrid.of(tiny_wan.build_tiny_pipeline())
    assert (tiny.multiple, tiny.max_width, tiny.max_height, tiny.max_frames) == (16, 512, 512, 125)
    # The real A14B config (rope_max_seq_len 1024) never reaches the limit at any protocol size.
    expert = SimpleNamespace(config=SimpleNamespace(patch_size=(1, 2, 2), rope_max_seq_len=1024))
    real = WanGrid.of(
        SimpleNamespace(
            transformer=expert,
            transformer_2=expert,
            vae_scale_factor_spatial=8,
            vae_scale_factor_temporal=4,
        )
    )
    assert (real.max_width, real.max_frames) == (16384, 4093)
    real.check("wan2.2-i2v-a14b", 1280, 720, 121)  # no error


def test_the_tiny_engine_refuses_sizes_it_cannot_build_at_once(
    lightning: wan.WanEngine, log: Lines
) -> None:
    # The protocol's default size: before the check, this ran the text encoder and the VAE and
    # then failed inside the transformer with "shape '[1, 1, 52, -1]' is invalid".
    message = _refused_fast(lightning, log, _document(width=832, height=480))
    assert "832x480: tiny-wan renders at most 512x512" in message, message
    assert "nearest size at this aspect ratio is 512x288" in message
    message = _refused_fast(lightning, log, _document(width=128, height=528))
    assert "at most 512x512" in message and "is 128x512" in message, message
    message = _refused_fast(lightning, log, _document(frames=129))
    assert "frames: tiny-wan renders at most 125 frames" in message, message
    # The largest side renders.
    render = lightning.render_frames(_request(width=512, height=128))
    assert render.frames.shape == (5, 128, 512, 3)


# -- 2. Lightning runs 4 steps only ----------------------------------------------------------------


def test_lightning_refuses_any_step_count_but_four(lightning: wan.WanEngine, log: Lines) -> None:
    for steps in (8, 2):
        message = _refused_fast(lightning, log, _document(steps=steps))
        assert "the Lightning engine runs exactly 4 steps" in message and f"got {steps}" in message
        assert "send steps 4" in message and "VIDEOKIT_WAN_MODE=standard" in message
    with pytest.raises(JobInputError, match="runs exactly 4 steps"):
        lightning.render_frames(_request(steps=6))
    # What clients send by default still runs: the native default (4) and a LightX2V-style
    # document without num_inference_steps (the engine's default).
    handler = make_handler("animate", lightning, env={})
    native = _run(handler, _document())
    assert native["frames"] == 5
    lightx2v = {
        "image_base64": PICTURE_B64,
        "prompt": "a cat walks",
        "num_frames": 5,
        "width": 128,
        "height": 128,
        "seed": 3,
    }
    out = _run(handler, lightx2v)
    assert set(out) == LIGHTX2V_OUTPUT_KEYS and out["resolution"] == "128x128"
    jobs = log.records("videokit.wan.job")[-2:]
    assert [(j["status"], j["steps"]) for j in jobs] == [("ok", 4), ("ok", 4)]


# -- 3. standard-mode guidance pairs that would run no CFG -----------------------------------------


def test_standard_refuses_a_second_scale_that_diffusers_would_ignore(
    standard: wan.WanEngine, log: Lines
) -> None:
    # diffusers' rule, checked on the installed pipeline: CFG depends on guidance_scale alone.
    pipe = standard.pipeline
    pipe._guidance_scale, pipe._guidance_scale_2 = 1.0, 5.0
    assert pipe.do_classifier_free_guidance is False
    for scale, scale_2 in ((1.0, 3.5), (0.5, 1.5)):
        document = _document(steps=5, guidance_scale=scale, guidance_scale_2=scale_2)
        message = _refused_fast(standard, log, document)
        assert f"guidance_scale {scale} with guidance_scale_2 {scale_2}" in message, message
        assert "neither expert gets CFG" in message and "send guidance_scale above 1" in message
    # What still runs as sent: CFG on both, no CFG at all, and the untouched defaults.
    for fields in (
        {"steps": 5, "guidance_scale": 3.5, "guidance_scale_2": 1.0},
        {"steps": 5, "guidance_scale": 1.0, "guidance_scale_2": 1.0},
        {"steps": 5, "guidance_scale": 1.0},
        {},
    ):
        standard._check(_request(**fields))


def test_lightning_refuses_no_guidance_pair_it_ignores(lightning: wan.WanEngine) -> None:
    lightning._check(_request(guidance_scale=1.0, guidance_scale_2=5.0))
    plan = lightning.plan(_request(guidance_scale=1.0, guidance_scale_2=5.0))
    assert (plan.guidance, plan.guidance_2, plan.notes) == (
        1.0,
        1.0,
        ["guidance_ignored_lightning"],
    )
