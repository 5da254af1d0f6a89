"""The diffusers engines' shared base: job thread, options table, speed options, memory admission
and the warm-up step, on the real pipeline classes with tiny random weights (CPU, offline)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers")

from videokit.backends.base import JobContext
from videokit.backends.runpod.wire import is_transient_job_error
from videokit.errors import ConfigError
from videokit.media.images import encode_png
from videokit.protocol import AnimateRequest, EditRequest, MediaInput
from videokit.worker import qwen, wan
from videokit.worker.common import raise_if_cancelled
from videokit.worker.diffusers_engine.job_thread import JobThread
from videokit.worker.diffusers_engine.memory import GIB, JobSize, MemoryModel
from videokit.worker.diffusers_engine.options import OPTIONS, parse_bytes, resolve_options
from videokit.worker.errors import JobTooLargeError
from videokit.worker.handler import make_handler

GREY = encode_png(np.full((96, 128, 3), 120, np.uint8))


class Lines(list[str]):
    def records(self, event: str) -> list[dict[str, Any]]:
        return [r for r in map(json.loads, self) if r["event"] == event]


def _animate(**fields: Any) -> AnimateRequest:
    document: dict[str, Any] = {
        "image": MediaInput.from_bytes(GREY),
        "prompt": "a lighthouse in the rain",
        "width": 128,
        "height": 128,
        "frames": 5,
        "seed": 3,
    }
    document.update(fields)
    return AnimateRequest(**document)


def _ctx(scene: str = "job") -> JobContext:
    return JobContext(scene=scene, stage="animate")


@pytest.fixture(scope="module")
def plain() -> Iterator[wan.WanEngine]:
    engine = wan.load_engine(tiny=True, env={}, log=lambda line: None)
    yield engine
    engine.close()


# -- the job thread --------------------------------------------------------------------------------


def test_every_job_runs_on_one_thread_in_order() -> None:
    thread = JobThread("test")
    seen: list[tuple[int, str]] = []

    def job(n: int) -> Any:
        def work(cancel: threading.Event) -> int:
            seen.append((n, threading.current_thread().name))
            return n

        return work

    async def scenario() -> list[int]:
        return list(await asyncio.gather(*(thread.run(job(n)) for n in range(5))))

    assert asyncio.run(scenario()) == [0, 1, 2, 3, 4]
    assert [n for n, _ in seen] == [0, 1, 2, 3, 4]
    assert len({name for _, name in seen}) == 1 and seen[0][1].startswith("test")
    thread.close(lambda: None)


def test_a_cancelled_job_stops_at_its_next_step_and_a_queued_one_never_starts() -> None:
    thread = JobThread("test")
    steps: list[int] = []
    started = threading.Event()

    def long_job(cancel: threading.Event) -> None:
        for step in range(200):
            started.set()
            raise_if_cancelled(cancel)
            steps.append(step)
            time.sleep(0.01)

    ran_queued: list[int] = []

    async def scenario() -> None:
        first = asyncio.create_task(thread.run(long_job))
        queued = asyncio.create_task(thread.run(lambda cancel: ran_queued.append(1)))
        while not started.is_set():
            await asyncio.sleep(0.005)
        queued.cancel()
        first.cancel()
        for task in (first, queued):
            with pytest.raises(asyncio.CancelledError):
                await task
        await thread.wait_idle()

    asyncio.run(scenario())
    assert 1 <= len(steps) < 50 and not ran_queued
    thread.close(lambda: None)


def test_the_wait_for_a_stuck_job_is_bounded() -> None:
    thread = JobThread("test", cancel_wait_s=0.2)
    release = threading.Event()

    async def scenario() -> float:
        task = asyncio.create_task(thread.run(lambda cancel: release.wait(10)))
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.perf_counter() - started

    waited = asyncio.run(scenario())
    release.set()
    assert 0.15 < waited < 2.0
    thread.close(lambda: None)


def test_close_stops_the_running_job_then_releases_on_the_thread() -> None:
    thread = JobThread("test")
    released: list[str] = []
    started = threading.Event()

    def job(cancel: threading.Event) -> None:
        started.set()
        while True:
            raise_if_cancelled(cancel)
            time.sleep(0.005)

    async def scenario() -> None:
        task = asyncio.create_task(thread.run(job))
        while not started.is_set():
            await asyncio.sleep(0.005)
        await asyncio.to_thread(
            thread.close, lambda: released.append(threading.current_thread().name)
        )
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert released and released[0].startswith("test")
    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(thread.run(lambda cancel: None))


# -- the options table -----------------------------------------------------------------------------


def test_an_option_wins_over_its_variable_which_wins_over_the_default() -> None:
    env = {"VIDEOKIT_ATTENTION": "sage", "VIDEOKIT_COMPILE": "blocks"}
    options = resolve_options({"attention": "cudnn"}, env)
    assert (options.attention, options.compile, options.fp8) == ("cudnn", "blocks", "off")
    assert options.source("attention") == "the attention option"
    assert options.source("compile") == "VIDEOKIT_COMPILE"
    assert options.summary() == {"attention": "cudnn", "compile": "blocks"}
    assert resolve_options({}, {}, defaults={"warmup": "off"}).warmup == "off"


def test_switches_take_boolean_spellings_and_the_clients_warmup_is_not_the_engines() -> None:
    assert resolve_options({}, {"VIDEOKIT_WARMUP_STEP": "1"}).warmup == "on"
    assert resolve_options({"fuse_lora": "true"}, {}).fuse_lora == "on"
    # VIDEOKIT_WARMUP is the client's (wake the animate endpoint): a worker ignores it.
    options = resolve_options({}, {"VIDEOKIT_WARMUP": "0"}, defaults={"warmup": "on"})
    assert options.warmup == "on" and options.source("warmup") == "the default"


def test_a_bad_option_value_names_the_variable_and_its_values() -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_options({}, {"VIDEOKIT_FP8": "yes"})
    text = str(caught.value)
    assert "VIDEOKIT_FP8" in text and "off, weights, dynamic" in text and "torchao" in text


def test_the_shared_settings_read_the_same_for_both_models() -> None:
    assert wan.resolve_settings(env={"VIDEOKIT_DTYPE": "bfloat16"}).dtype == "bf16"
    assert qwen.resolve_settings(tiny=False, env={"VIDEOKIT_DTYPE": "Float16"}).dtype == "fp16"
    for resolve in (lambda env: wan.resolve_settings(env=env),
                    lambda env: qwen.resolve_settings(tiny=False, env=env)):  # fmt: skip
        with pytest.raises(ConfigError) as caught:
            resolve({"VIDEOKIT_DTYPE": "int4"})
        assert str(caught.value).startswith("VIDEOKIT_DTYPE: 'int4' is not a dtype")
        with pytest.raises(ConfigError, match="'disk' is not an offload mode"):
            resolve({"VIDEOKIT_OFFLOAD": "disk"})
    with pytest.raises(ConfigError) as caught:
        qwen.resolve_settings(tiny=False, env={"VIDEOKIT_OFFLOAD": "sequential"})
    assert "Qwen2.5-VL text encoder" in str(caught.value)
    assert "none, model" in str(caught.value.hint)


def test_memory_sizes_parse_in_binary_and_decimal_units() -> None:
    assert parse_bytes("79GiB", "x") == 79 * GIB
    assert parse_bytes("80 GB", "x") == 80 * 10**9
    assert resolve_options({"memory_limit": "off"}, {}).memory_limit is None
    assert resolve_options({}, {"VIDEOKIT_GPU_MEMORY": "2GiB"}).memory_limit == 2 * GIB
    with pytest.raises(ConfigError, match="VIDEOKIT_GPU_MEMORY: 'lots' is not a memory size"):
        resolve_options({}, {"VIDEOKIT_GPU_MEMORY": "lots"})


def test_the_manual_lists_every_option() -> None:
    from pathlib import Path

    manual = (Path(__file__).resolve().parents[1] / "docs" / "workers.md").read_text()
    for spec in OPTIONS:
        assert f"`{spec.variable}` (`{spec.name}`)" in manual, spec.variable


def test_unknown_engine_options_are_refused_with_the_table_named() -> None:
    with pytest.raises(ConfigError) as caught:
        wan.load_engine(tiny=True, env={}, attentoin="cudnn")
    assert "attentoin" in str(caught.value) and "attention" in str(caught.value.hint)


# -- speed options ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", ["cudnn", "flash3", "sage"])
def test_an_attention_kernel_that_cannot_run_here_falls_back_to_native(kernel: str) -> None:
    log = Lines()
    engine = wan.load_engine(tiny=True, env={}, log=log.append, attention=kernel)
    try:
        attention = log.records("videokit.wan.load")[-1]["attention"]
        assert attention["requested"] == kernel and attention["used"] == "native"
        assert "needs a CUDA device; this engine runs on cpu" in attention["fallback"]
        backends = {
            getattr(block.attn1.processor, "_attention_backend", None)
            for block in engine.pipeline.transformer.blocks
        }
        assert {str(getattr(b, "value", b)) for b in backends} <= {"None", "native"}
        render = engine.render_frames(_animate())
        assert render.frames.shape == (5, 128, 128, 3)
    finally:
        engine.close()


def test_compiled_blocks_warm_up_at_load_and_give_the_same_clip(plain: wan.WanEngine) -> None:
    import torch

    if not hasattr(torch, "compile"):
        pytest.skip(f"torch {torch.__version__} has no torch.compile")
    log = Lines()
    compiled = wan.load_engine(tiny=True, env={}, log=log.append, compile="blocks", warmup="on")
    try:
        load = log.records("videokit.wan.load")[-1]
        assert load["compiled"] == ["WanTransformerBlock"]
        assert load["warmup"]["steps"] == 2  # one per expert, so both were compiled at load
        request = _animate()
        ours, reference = compiled.render_frames(request), plain.render_frames(request)
        difference = np.abs(ours.frames.astype(int) - reference.frames.astype(int))
        assert difference.max() <= 2  # kernels fused differently round differently
    finally:
        compiled.close()


@pytest.mark.skipif(
    importlib.util.find_spec("torchao") is not None, reason="torchao is installed here"
)
@pytest.mark.parametrize("mode", ["weights", "dynamic"])
def test_fp8_without_torchao_refuses_to_load_and_says_why(mode: str) -> None:
    with pytest.raises(ConfigError) as caught:
        wan.load_engine(tiny=True, env={"VIDEOKIT_FP8": mode}, log=lambda line: None)
    assert f"VIDEOKIT_FP8={mode}: FP8 weights need torchao, which is not installed" in str(
        caught.value
    )
    assert "videokit[gpu,fp8]" in str(caught.value.hint)


@pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="torchao not installed")
def test_fp8_weights_quantise_every_transformer_linear_after_the_lora_fuse() -> None:
    log = Lines()
    engine = wan.load_engine(tiny=True, env={}, log=log.append, fp8="weights")
    try:
        fp8 = log.records("videokit.wan.load")[-1]["fp8"]
        assert fp8["mode"] == "weights" and fp8["layers"] > 0
        assert engine.render_frames(_animate()).frames.shape == (5, 128, 128, 3)
        with pytest.raises(ConfigError, match=r"compute capability 8\.9\+"):
            wan.load_engine(tiny=True, env={}, log=log.append, fp8="dynamic")
    finally:
        engine.close()


def test_a_bf16_vae_decodes_close_to_the_fp32_one(plain: wan.WanEngine) -> None:
    import torch

    engine = wan.load_engine(tiny=True, env={}, log=lambda line: None, vae_dtype="bf16")
    try:
        assert next(engine.pipeline.vae.parameters()).dtype == torch.bfloat16
        ours = engine.render_frames(_animate()).frames.astype(float)
        reference = plain.render_frames(_animate()).frames.astype(float)
        mse = float(np.mean((ours - reference) ** 2))
        psnr = 10 * np.log10(255**2 / max(mse, 1e-9))
        assert psnr > 30, psnr
    finally:
        engine.close()


# -- memory admission ------------------------------------------------------------------------------


def _limited(limit: int, **options: Any) -> tuple[wan.WanEngine, Lines]:
    log = Lines()
    engine = wan.load_engine(tiny=True, env={}, log=log.append, memory_limit=str(limit), **options)
    return engine, log


def test_an_oversized_job_is_refused_before_any_pipeline_work(plain: wan.WanEngine) -> None:
    assert plain.memory is None  # the CPU has no admission check unless a limit is set
    probe, _ = _limited(10 * GIB)
    assert probe.memory is not None
    small = JobSize(128, 128, 5, cfg=False)
    limit = probe.memory.need(small, tiled=False) + 2**20  # room for 128x128, not 256x256
    probe.close()
    engine, _ = _limited(limit, text_encoder="gpu")
    calls: list[int] = []
    hooks = [
        module.register_forward_pre_hook(lambda *_: calls.append(1))
        for module in (engine.pipeline.text_encoder, engine.pipeline.transformer)
    ]
    try:
        handler = make_handler("animate", engine, env={}, log=lambda line: None)
        document = _animate(width=256, height=256).model_dump(mode="json")
        started = time.perf_counter()
        with pytest.raises(JobTooLargeError) as caught:
            asyncio.run(handler({"id": "big", "input": {"kind": "animate", **document}}))
        assert time.perf_counter() - started < 1.0 and not calls
        text = str(caught.value)
        assert text.startswith("invalid input: 256x256, 5 frames needs about")
        assert "this worker plans on" in text and "the largest that fits: 128x128" in str(
            caught.value.hint
        )
        # The client reads a FAILED job's error: this one is not worth a resubmission.
        assert not is_transient_job_error(f"{caught.value}")
        assert engine.render_frames(_animate()).frames.shape == (5, 128, 128, 3)
    finally:
        for hook in hooks:
            hook.remove()
        engine.close()


def test_a_job_that_fits_only_without_the_text_encoder_swaps_it_out() -> None:
    probe, _ = _limited(10 * GIB)
    assert probe.memory is not None
    size = JobSize(128, 128, 5, cfg=False)
    need = probe.memory.need(size, tiled=False)
    swappable = probe.memory.swappable
    probe.close()
    engine, log = _limited(need - swappable // 2)  # fits only with the encoder off the device
    try:
        ctx = _ctx("swap")
        result = asyncio.run(engine.animate(_animate(), ctx))
        assert result.frames == 5
        job = log.records("videokit.wan.job")[-1]
        assert job["text_encoder"] == "swapped"
        # Off the device (here: re-pointed at its host copy), and back for the next encoding.
        assert engine._text_swap is not None and not engine._text_swap.on_device
        asyncio.run(engine.animate(_animate(), ctx))
    finally:
        engine.close()


def test_the_swapped_text_encoder_gives_the_same_clip(plain: wan.WanEngine) -> None:
    engine = wan.load_engine(tiny=True, env={}, log=lambda line: None, text_encoder="swap")
    try:
        ours = engine.render_frames(_animate()).frames
        assert np.array_equal(ours, plain.render_frames(_animate()).frames)
    finally:
        engine.close()


def test_the_largest_size_suggested_is_one_the_plan_admits() -> None:
    model = MemoryModel(
        capacity=80 * GIB,
        resident=66 * GIB,
        tokens=lambda s: (s.width // 16) * (s.height // 16) * ((s.frames - 1) // 4 + 1),
        per_token=140_000,
        per_pixel=9_216,
        tile_pixels=256 * 256,
        swappable=11 * GIB,
    )
    big = JobSize(1920, 1088, 241, cfg=False)
    with pytest.raises(JobTooLargeError) as caught:
        model.admit(big, tiled=lambda s: True, can_swap=True, multiple=16, frame_counts=[81, 121])
    hint = str(caught.value.hint)
    suggested = hint.split("the largest that fits: ")[1].split(",")[0]
    width, height = (int(side) for side in suggested.split("x"))
    assert model.fits(JobSize(width, height, 241, cfg=False), tiled=True, swapped=True)
    assert not model.fits(
        JobSize(width + 16, height + 16, 241, cfg=False), tiled=True, swapped=True
    )
    # 480p fits with everything resident; 720p only without the text encoder.
    swap = model.admit(
        JobSize(832, 480, 81, False), tiled=lambda s: False, can_swap=True, multiple=16
    )
    assert swap is False


# -- the warm-up step ------------------------------------------------------------------------------


def test_the_warm_up_runs_one_real_step_per_expert_at_load() -> None:
    log = Lines()
    engine = wan.load_engine(tiny=True, env={}, log=log.append, warmup="on")
    try:
        load = log.records("videokit.wan.load")[-1]
        assert load["warmup"]["steps"] == 2 and load["warmup"]["ms"] > 0
        assert load["timings_ms"]["prepare"] >= load["warmup"]["ms"]
    finally:
        engine.close()
    quiet = Lines()
    wan.load_engine(tiny=True, env={}, log=quiet.append).close()
    assert quiet.records("videokit.wan.load")[-1].get("warmup") is None  # tiny: off by default


def test_the_qwen_warm_up_and_a_fused_lightning_adapter() -> None:
    log = Lines()
    engine = qwen.load_engine(tiny=True, env={}, log=log.append, warmup="on", fuse_lora="on")
    plain = qwen.load_engine(tiny=True, env={}, log=lambda line: None)
    try:
        load = log.records("videokit.qwen.load")[-1]
        assert load["options"] == {"warmup": "on", "fuse_lora": "on"}

        def edit(engine: qwen.QwenEngine, steps: int) -> np.ndarray:
            request = EditRequest(
                images=[MediaInput.from_bytes(GREY)],
                prompt="make it night",
                width=128,
                height=128,
                steps=steps,
                seed=5,
            )
            result = asyncio.run(engine.edit(request, JobContext(scene="e", stage="edit")))
            from videokit.media.images import decode_png_array

            return decode_png_array(result.image.decode()).astype(int)

        assert load["warmup"]["steps"] == 2  # one per adapter; 8 steps, the default, last
        fused_at_load = engine.refuses
        for steps in (8, 4, 8):
            difference = np.abs(edit(engine, steps) - edit(plain, steps)).max()
            assert difference <= 2, (steps, difference)
        assert engine.refuses - fused_at_load == 2  # 8 -> 4 -> 8: each change re-fused
        with pytest.raises(ConfigError, match="the Qwen pipeline feeds its VAE in the engine"):
            qwen.load_engine(tiny=True, env={}, vae_dtype="bf16")
    finally:
        engine.close()
        plain.close()
