"""The Qwen-Image-Edit engine, run for real on tiny random weights (CPU, offline).

The engines are the ``tiny`` engine: diffusers' real ``QwenImageEditPlusPipeline`` with tiny
configs built in code (:mod:`videokit.worker.tiny_qwen`), saved as a model folder and loaded by
the same loader real weights go through, with synthetic LoRAs in the Lightning files' key format.
Jobs go through the real worker handler (compat formats, input checks, presigned uploads to a
real S3 server); nothing is mocked. Observation only: forward hooks count transformer calls and
read the timesteps it is given.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import shutil
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.fakehub import FakeHub
from tests.s3server import S3Server, s3_server  # noqa: F401
from videokit.backends.base import JobContext
from videokit.errors import ConfigError
from videokit.media.images import decode_png_array, encode_png
from videokit.protocol import EditRequest, MediaInput, MediaOutput
from videokit.storage import S3Storage, StorageConfig
from videokit.worker import JobInputError, WorkerOOMError, make_handler, qwen
from videokit.worker import engines as engine_registry
from videokit.worker.diffusers_engine.model_files import SNAPSHOT_PATTERNS

torch = pytest.importorskip("torch")  # the model engines need the [gpu] extra
DIFFUSERS = pytest.importorskip("diffusers").__version__
from videokit.worker import tiny_qwen  # noqa: E402

# -- inputs ----------------------------------------------------------------------------------------


def _picture(width: int, height: int, tint: int = 40) -> bytes:
    img = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(img)
    for y in range(height):
        draw.line([(0, y), (width, y)], fill=(30 + 150 * y // height, 90, 200 - tint))
    draw.ellipse((width // 3, height // 4, width // 2, height // 2), fill=(250, 200, 40))
    return encode_png(img)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


WIDE = _picture(96, 64)
SQUARE = _picture(64, 64, tint=120)
TALL = _picture(60, 90, tint=200)


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width``×``height`` pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def _native(images: list[bytes], **fields: Any) -> dict[str, Any]:
    return {
        "kind": "edit",
        "images": [{"base64": _b64(data)} for data in images],
        "prompt": fields.pop("prompt", "make the sky purple"),
        "seed": fields.pop("seed", 7),
        **fields,
    }


def _png_size(data: bytes) -> tuple[int, int]:
    array = decode_png_array(data)
    return array.shape[1], array.shape[0]


# -- engines (one build per module) ----------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # Tiny matrices gain nothing from a thread pool, and on a shared CPU OpenMP's spinning workers
    # make each call 10-30x slower whenever another process is busy: one thread keeps jobs ~0.2 s.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def lightning() -> Iterator[qwen.QwenEngine]:
    """The ``tiny`` engine from the registry, lightning mode (the default)."""
    engine = engine_registry.load_engine("edit", "tiny", env={})
    assert isinstance(engine, qwen.QwenEngine)
    engine.log = lambda line: None
    yield engine
    asyncio.run(engine.aclose())


@pytest.fixture(scope="module")
def tiny_pipe() -> Any:
    """A bare tiny pipeline (no LoRA), for tests that only read it."""
    return tiny_qwen.build_pipeline()


@pytest.fixture(scope="module")
def standard_logs() -> list[str]:
    return []


@pytest.fixture(scope="module")
def standard(standard_logs: list[str]) -> Iterator[qwen.QwenEngine]:
    engine = qwen.load_engine(
        tiny=True, env={"VIDEOKIT_QWEN_MODE": "standard"}, log=standard_logs.append
    )
    yield engine
    asyncio.run(engine.aclose())


def _job(
    engine: qwen.QwenEngine, document: dict[str, Any], *, job_id: str = "job", **options: Any
) -> dict[str, Any]:
    options.setdefault("allow_private_urls", True)
    options.setdefault("log", lambda line: None)
    handler = make_handler("edit", engine, **options)
    return asyncio.run(handler({"id": job_id, "input": document}))


def _job_error(engine: qwen.QwenEngine, document: dict[str, Any], **options: Any) -> str:
    with pytest.raises(JobInputError) as caught:
        _job(engine, document, **options)
    return caught.value.message


class _Calls:
    """Counts transformer calls and records the (normalised) timesteps and active adapters."""

    def __init__(self, pipe: Any) -> None:
        self.timesteps: list[float] = []
        self.adapters: list[list[str]] = []
        self._pipe = pipe
        self._handle = pipe.transformer.register_forward_pre_hook(self._pre, with_kwargs=True)

    def _pre(self, module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        self.timesteps.append(float(kwargs["timestep"][0]))
        self.adapters.append(list(self._pipe.get_active_adapters()))

    def close(self) -> None:
        self._handle.remove()


@pytest.fixture
def calls() -> Iterator[Callable[[qwen.QwenEngine], _Calls]]:
    opened: list[_Calls] = []

    def watch(engine: qwen.QwenEngine) -> _Calls:
        opened.append(_Calls(engine.pipe))
        return opened[-1]

    yield watch
    for watcher in opened:
        watcher.close()


# -- end to end through the handler ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("images", "width", "height"),
    [([WIDE], 160, 128), ([WIDE, SQUARE, TALL], 128, 192)],
    ids=["one-image", "three-images"],
)
def test_native_edit_returns_png_of_requested_size(
    lightning: qwen.QwenEngine, images: list[bytes], width: int, height: int
) -> None:
    # What the pipeline does with the inputs, seen from forward hooks (observation only): the
    # vision tower gets one grid per image, the VAE encoder one call per image.
    grids: list[int] = []
    vae_inputs: list[tuple[int, int]] = []
    pipe = lightning.pipe
    handles = [
        pipe.text_encoder.model.visual.register_forward_pre_hook(
            lambda _m, _a, kwargs: grids.append(int(kwargs["grid_thw"].shape[0])),
            with_kwargs=True,
        ),
        pipe.vae.encoder.register_forward_pre_hook(
            lambda _m, args: vae_inputs.append((int(args[0].shape[-1]), int(args[0].shape[-2])))
        ),
    ]
    try:
        out = _job(lightning, _native(images, width=width, height=height))
    finally:
        for handle in handles:
            handle.remove()
    assert grids == [len(images)]  # every image reaches the text encoder's vision tower...
    assert len(vae_inputs) == len(images)  # ...and the VAE, each at its own aspect ratio
    for (w, h), data in zip(vae_inputs, images, strict=True):
        source_w, source_h = _png_size(data)
        # Same orientation, and the ratio up to the pipeline's rounding to a 32-pixel grid.
        assert (w > h, w == h) == (source_w > source_h, source_w == source_h), (w, h)
        assert abs(w / h - source_w / source_h) < 0.2, (w, h, source_w, source_h)

    png = MediaOutput.model_validate(out["image"]).decode()  # checks size and sha256
    assert png.startswith(b"\x89PNG")
    assert _png_size(png) == (width, height)
    assert (out["width"], out["height"]) == (width, height)
    assert (
        out["model"]
        == f"tiny-qwen-edit-v{tiny_qwen.TINY_VERSION}/lightning-8@diffusers-{DIFFUSERS}"
    )
    assert out["seed"] == 7 and out["inference_ms"] > 0
    assert out["peak_memory_bytes"] is None  # CPU


def test_default_size_follows_first_image(lightning: qwen.QwenEngine) -> None:
    # The tiny engine's default area is 128²; the real one's is 1024² (see test_default_size).
    out = _job(lightning, _native([TALL, WIDE], steps=4))
    size = _png_size(MediaOutput.model_validate(out["image"]).decode())
    assert size == (out["width"], out["height"]) == qwen.default_size(60, 90, area=128 * 128)
    assert size[0] < size[1] and size[0] % 16 == 0 and size[1] % 16 == 0


def test_default_size() -> None:
    assert qwen.default_size(1024, 1024) == (1024, 1024)
    assert qwen.default_size(1920, 1080) == (1360, 768)  # 16:9 at ~1 MP
    assert qwen.default_size(600, 800) == (880, 1184)
    for width, height in [(5000, 100), (100, 5000), (333, 777), (1, 1)]:
        w, h = qwen.default_size(width, height)
        assert w % 16 == 0 and h % 16 == 0
        assert 128 <= w <= 1920 and 128 <= h <= 1920


def test_seed_determines_the_output(lightning: qwen.QwenEngine) -> None:
    first = _job(lightning, _native([WIDE], width=128, height=128, seed=11))
    again = _job(lightning, _native([WIDE], width=128, height=128, seed=11))
    other = _job(lightning, _native([WIDE], width=128, height=128, seed=12))
    assert first["image"]["sha256"] == again["image"]["sha256"]
    assert first["image"]["sha256"] != other["image"]["sha256"]


def test_output_uploaded_to_presigned_url(
    lightning: qwen.QwenEngine,
    s3_server: S3Server,  # noqa: F811
) -> None:
    storage = S3Storage(
        StorageConfig(
            bucket=s3_server.bucket,
            endpoint_url=s3_server.endpoint_url,
            access_key_id="testing",
            secret_access_key="testing",
        ),
        client=s3_server.client,
    )
    target = storage.output_target("edited.png", content_type="image/png")
    document = _native([WIDE, SQUARE], width=144, height=128)
    document["outputs"] = {"image": target.model_dump()}

    out = _job(lightning, document)

    media = MediaOutput.model_validate(out["image"])
    assert media.base64 is None and media.url == target.get_url
    png = storage.download(media)  # verifies size and sha256
    assert _png_size(png) == (144, 128)
    inline = _job(lightning, _native([WIDE, SQUARE], width=144, height=128))
    assert inline["image"]["sha256"] == media.sha256  # same job, same pixels, either way


def test_qwen_edit_worker_style_input(lightning: qwen.QwenEngine) -> None:
    document = {
        "image_base64": "data:image/png;base64," + _b64(WIDE),
        "images_base64": [_b64(SQUARE)],
        "prompt": "put a hat on the sun",
        "num_inference_steps": 4,
        "guidance_scale": 1.0,
        "seed": 5,
    }
    out = _job(lightning, document)

    assert out["success"] is True and out["seed"] == 5
    png = base64.b64decode(out["edited_image_base64"])
    assert _png_size(png) == (out["width"], out["height"])
    assert out["inference_time_ms"] > 0


# -- Lightning LoRA and schedulers -----------------------------------------------------------------


def test_lightning_lora_keys_are_recognised(tiny_pipe: Any, tmp_path: Path) -> None:
    pipe = tiny_pipe
    path = tiny_qwen.make_lightning_lora(tmp_path / "l.safetensors", pipe.transformer)
    from safetensors.torch import load_file

    raw = load_file(str(path))
    blocks = len(pipe.transformer.transformer_blocks)
    assert len(raw) == blocks * len(tiny_qwen.LIGHTNING_LORA_MODULES) * 3  # down, up, alpha
    assert "transformer_blocks.0.img_mlp.net.0.proj.lora_down.weight" in raw

    converted = pipe.lora_state_dict(str(path))  # diffusers' own recognition and conversion
    assert len(converted) == blocks * len(tiny_qwen.LIGHTNING_LORA_MODULES) * 2
    assert all(k.startswith("transformer.transformer_blocks.") for k in converted)
    key = "transformer.transformer_blocks.1.attn.to_add_out"
    down = raw["transformer_blocks.1.attn.to_add_out.lora_down.weight"].float()
    up = raw["transformer_blocks.1.attn.to_add_out.lora_up.weight"].float()
    delta = converted[f"{key}.lora_B.weight"].float() @ converted[f"{key}.lora_A.weight"].float()
    alpha, rank = 2.0, down.shape[0]
    assert torch.allclose(delta, up @ down * alpha / rank, atol=1e-5)  # alpha/rank folded in


def test_lightning_lora_changes_the_transformer(tmp_path: Path) -> None:
    pipe = tiny_qwen.build_pipeline()
    path = tiny_qwen.make_lightning_lora(tmp_path / "l.safetensors", pipe.transformer)
    generator = torch.Generator().manual_seed(0)
    inputs = {
        "hidden_states": torch.randn(1, 32, 16, generator=generator),
        "encoder_hidden_states": torch.randn(1, 5, 32, generator=generator),
        "timestep": torch.tensor([0.5]),
        "img_shapes": [[(1, 4, 4), (1, 4, 4)]],
        "return_dict": False,
    }
    base = pipe.transformer(**inputs)[0]
    pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name="lightning-8")

    adapted = pipe.transformer(**inputs)[0]
    assert not torch.allclose(base, adapted, atol=1e-4)
    layer = pipe.transformer.transformer_blocks[0]
    for name in tiny_qwen.LIGHTNING_LORA_MODULES:
        assert "lightning-8" in layer.get_submodule(name).lora_A, name
    pipe.disable_lora()
    assert torch.allclose(pipe.transformer(**inputs)[0], base, atol=1e-6)  # added, not merged


def test_lightning_engine_loads_both_loras(lightning: qwen.QwenEngine) -> None:
    assert isinstance(lightning, engine_registry.Engine) and lightning.name == "tiny"
    assert lightning.adapters == {"lightning-4", "lightning-8"}
    identity = f"tiny-qwen-edit-v{tiny_qwen.TINY_VERSION}/lightning@diffusers-{DIFFUSERS}"
    assert lightning.identity("edit") == identity
    # The warm-up answer carries the engine's load time (no warm-up step: the tiny default).
    warm = _job(lightning, {"warmup": True})
    assert warm == {"warm": True, "model": identity, "load_ms": lightning.load_ms}
    assert isinstance(lightning.load_ms, int) and lightning.load_ms > 0


@pytest.mark.parametrize("steps", [4, 8])
def test_lightning_schedule_and_adapter_per_step_count(
    lightning: qwen.QwenEngine, calls: Callable[[qwen.QwenEngine], _Calls], steps: int
) -> None:
    config = lightning.pipe.scheduler.config
    assert config.use_dynamic_shifting and config.time_shift_type == "exponential"
    assert config.base_shift == config.max_shift == pytest.approx(math.log(3))
    assert config.shift_terminal is None
    watched = calls(lightning)

    _job(lightning, _native([WIDE], steps=steps, width=128, height=128))

    # shift 3 over linspace(1, 1/steps, steps): sigma' = 3 sigma / (1 + 2 sigma)
    sigmas = np.linspace(1.0, 1 / steps, steps)
    expected = 3 * sigmas / (1 + 2 * sigmas)
    assert watched.timesteps == pytest.approx(expected.tolist(), abs=1e-4)
    if steps == 4:
        assert watched.timesteps == pytest.approx([1.0, 0.9, 0.75, 0.5], abs=1e-4)
    assert watched.adapters == [[f"lightning-{steps}"]] * steps


def test_standard_mode_uses_the_model_scheduler(
    standard: qwen.QwenEngine, calls: Callable[[qwen.QwenEngine], _Calls]
) -> None:
    assert standard.adapters == frozenset()
    assert standard.pipe.scheduler.config.max_shift == tiny_qwen.QWEN_SCHEDULER_CONFIG["max_shift"]
    assert standard.pipe.scheduler.config.shift_terminal == 0.02
    watched = calls(standard)

    out = _job(
        standard,
        _native([WIDE], steps=10, width=128, height=128, true_cfg_scale=4.0, negative_prompt="x"),
    )

    assert len(watched.timesteps) == 2 * 10 and watched.adapters == [[]] * 20  # true CFG
    assert watched.timesteps[0] == pytest.approx(1.0)
    assert out["model"].startswith(f"tiny-qwen-edit-v{tiny_qwen.TINY_VERSION}/standard@")


def test_standard_mode_maps_only_the_untouched_lightning_defaults(
    standard: qwen.QwenEngine,
    standard_logs: list[str],
    calls: Callable[[qwen.QwenEngine], _Calls],
) -> None:
    """The protocol's defaults (8 steps, true_cfg_scale 1) are Lightning values: left as they
    are, a standard worker runs the model card's 40 steps with true CFG 4 (and the negative
    prompt " " when the request has none). Anything the client chose runs as sent."""
    defaults = EditRequest(images=[MediaInput.from_bytes(WIDE)], prompt="x", seed=1)
    assert (defaults.steps, defaults.true_cfg_scale, defaults.negative_prompt) == (8, 1.0, "")

    def plan(**fields: Any) -> tuple[Any, ...]:
        decided = standard.plan(defaults.model_copy(update=fields))
        return decided.steps, decided.cfg_scale, decided.negative_prompt, decided.cfg, decided.notes

    everything = ["steps_reference", "cfg_reference", "negative_prompt_reference"]
    assert plan() == (40, 4.0, " ", True, everything)
    assert plan(negative_prompt="   ") == (40, 4.0, " ", True, everything)
    # A story-wide negative prompt reaches the edits too: still the reference settings.
    assert plan(negative_prompt="ugly") == (
        40, 4.0, "ugly", True, ["steps_reference", "cfg_reference"]
    )  # fmt: skip
    assert plan(steps=30, true_cfg_scale=2.5, negative_prompt="ugly") == (
        30, 2.5, "ugly", True, []
    )  # fmt: skip
    # Chosen on purpose: 6 steps without CFG; CFG 1 with more steps; CFG without a negative
    # prompt (diffusers runs true CFG only with one, and the log says it did not run).
    assert plan(steps=6) == (6, 1.0, None, False, [])
    assert plan(steps=30, negative_prompt="ugly") == (
        30, 1.0, "ugly", False, ["negative_prompt_unused_without_cfg"]
    )  # fmt: skip
    assert plan(true_cfg_scale=4.0) == (8, 4.0, None, False, ["cfg_off_without_negative_prompt"])

    watched = calls(standard)
    _job(standard, _native([WIDE], width=128, height=128))  # the protocol's defaults
    assert len(watched.timesteps) == 2 * qwen.STANDARD_STEPS  # 40 steps, each with true CFG
    record = json.loads(standard_logs[-1])
    assert (record["steps"], record["cfg"], record["cfg_scale"]) == (40, True, 4.0)
    assert record["notes"] == everything


@pytest.mark.parametrize(
    ("steps", "cfg", "negative", "calls_per_step"),
    [
        (9, 2.0, "blurry, low quality", 2),
        (9, 4.0, "", 1),  # no negative prompt: no true CFG (diffusers' rule), as sent
        (9, 4.0, "   ", 1),
        (9, 1.0, "blurry, low quality", 1),  # scale 1: no CFG
        (6, 1.0, "", 1),  # 6 steps chosen on purpose: 6 steps, not the reference 40
    ],
)
def test_standard_mode_runs_true_cfg_only_with_a_scale_above_1_and_a_negative_prompt(
    standard: qwen.QwenEngine,
    standard_logs: list[str],
    calls: Callable[[qwen.QwenEngine], _Calls],
    steps: int,
    cfg: float,
    negative: str,
    calls_per_step: int,
) -> None:
    watched = calls(standard)
    _job(
        standard,
        _native(
            [WIDE], steps=steps, width=128, height=128, true_cfg_scale=cfg,
            negative_prompt=negative,
        ),
    )  # fmt: skip
    assert len(watched.timesteps) == steps * calls_per_step
    record = json.loads(standard_logs[-1])
    assert (record["steps"], record["cfg"]) == (steps, calls_per_step == 2)


def test_lightning_ignores_cfg(
    lightning: qwen.QwenEngine, calls: Callable[[qwen.QwenEngine], _Calls]
) -> None:
    lines: list[str] = []
    lightning.log = lines.append
    watched = calls(lightning)
    try:
        _job(lightning, _native([WIDE], steps=4, true_cfg_scale=4.0, negative_prompt="ugly"))
    finally:
        lightning.log = lambda line: None
    assert len(watched.timesteps) == 4  # one transformer call per step
    record = json.loads(lines[-1])
    assert record["cfg"] is False and record["notes"] == ["cfg_ignored_lightning"]


# -- bad input: clear errors, and the engine serves the next job -----------------------------------


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (_native([b"this is not an image at all"]), "images[0]: this is text, not an image"),
        (_native([_png_claiming(100_000, 100_000)]), "images[0]: the header claims more pixels"),
        (_native([_png_claiming(8000, 6000)]), "images[0]: 8000x6000 is 48,000,000 pixels, over"),
        (
            {**_native([WIDE]), "images": [{"url": "http://169.254.169.254/latest/meta-data"}]},
            "images[0]: ",
        ),
        (_native([WIDE, WIDE, SQUARE, TALL]), "images: List should have at most 3 items"),
        (
            _native([WIDE], steps=5),
            "steps: this worker runs the Lightning LoRA, which takes 4 or 8",
        ),
        ({"image_base64": _b64(WIDE), "prompt": "x", "num_inference_steps": 30}, "got 30"),
    ],
    ids=[
        "not-an-image",
        "bomb",
        "too-large",
        "refused-url",
        "four-images",
        "steps-5",
        "qwen-edit-worker-steps",
    ],
)
def test_bad_input_is_refused_and_the_engine_serves_the_next_job(
    lightning: qwen.QwenEngine, document: dict[str, Any], expected: str
) -> None:
    message = _job_error(lightning, document)
    assert message.startswith("invalid input: ")
    assert expected in message
    out = _job(lightning, _native([WIDE], width=128, height=128, steps=4))
    assert _png_size(MediaOutput.model_validate(out["image"]).decode()) == (128, 128)


def test_refused_url_names_the_reason(lightning: qwen.QwenEngine) -> None:
    document = {**_native([WIDE]), "images": [{"url": "http://127.0.0.1:9/x.png"}]}
    message = _job_error(lightning, document, allow_private_urls=False)
    assert "images[0]" in message and "loopback" in message


def test_engine_refuses_url_inputs_it_was_not_given_inline(lightning: qwen.QwenEngine) -> None:
    request = EditRequest(
        images=[MediaInput(url="https://example.com/a.png")], prompt="x", seed=1, steps=4
    )
    with pytest.raises(JobInputError, match="images\\[0\\]: the engine takes inline images"):
        asyncio.run(lightning.edit(request, JobContext(scene="s", stage="edit")))


# -- cancellation ----------------------------------------------------------------------------------


def test_cancellation_stops_the_denoising_loop_at_the_next_step(standard: qwen.QwenEngine) -> None:
    pipe = standard.pipe
    steps: list[int] = []

    def slow_step(*args: Any) -> None:
        # Slow each step a little so that 40 steps take ~1 s: a cancellation cannot come too late.
        steps.append(1)
        time.sleep(0.025)

    slow = pipe.transformer.register_forward_pre_hook(slow_step)
    decodes: list[int] = []
    vae_decode = pipe.vae.decode

    def decode(*args: Any, **kwargs: Any) -> Any:
        decodes.append(1)
        return vae_decode(*args, **kwargs)

    pipe.vae.decode = decode
    handler = make_handler("edit", standard, allow_private_urls=True, log=lambda line: None)

    async def scenario() -> None:
        task = asyncio.create_task(
            handler(
                {
                    "id": "c",
                    "input": _native(
                        [WIDE],
                        steps=40,
                        width=128,
                        height=128,
                        true_cfg_scale=4.0,
                        negative_prompt="blurry",
                    ),
                }
            )
        )
        while not steps:
            assert not task.done()
            await asyncio.sleep(0.002)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await standard.wait_idle()  # the pipeline thread has returned

    try:
        asyncio.run(scenario())
    finally:
        slow.remove()
        del pipe.vae.decode  # the instance attribute: back to the method
    # The step running when cancelled, maybe one more; each ran both CFG passes and ended.
    assert 1 <= len(steps) // 2 <= 3 and len(steps) % 2 == 0
    assert not decodes  # never reached the VAE decode
    out = _job(standard, _native([WIDE], steps=2, width=128, height=128))
    assert out["width"] == 128


# -- logs ------------------------------------------------------------------------------------------


def test_one_json_log_line_per_load_and_job_without_the_prompt(
    standard: qwen.QwenEngine, standard_logs: list[str]
) -> None:
    before = len(standard_logs)
    secret = "a prompt that must never reach a log"
    _job(standard, _native([WIDE, SQUARE], prompt=secret, steps=2, width=128, height=160))

    load = json.loads(standard_logs[0])
    assert load["event"] == "videokit.qwen.load" and load["mode"] == "standard"
    assert load["load_ms"] > 0
    (line,) = standard_logs[before:]
    record = json.loads(line)
    assert record["event"] == "videokit.qwen.job" and record["status"] == "ok"
    assert record["images"] == 2 and (record["width"], record["height"]) == (128, 160)
    assert set(record["timings_ms"]) >= {"text_encode", "condition", "denoise", "decode"}
    assert all(secret not in entry and "base64" not in entry for entry in standard_logs)


# -- settings and model files ----------------------------------------------------------------------


def test_settings_come_from_options_then_environment() -> None:
    env = {
        "VIDEOKIT_QWEN_MODEL": "2511",
        "VIDEOKIT_QWEN_MODE": "standard",
        "VIDEOKIT_DTYPE": "fp16",
        "VIDEOKIT_MODEL_DIR": "/somewhere",
        "VIDEOKIT_OFFLOAD": "model",
    }
    settings = qwen.resolve_settings(tiny=False, env=env)
    assert settings.model.key == "2511" and settings.mode == "standard"
    assert (settings.dtype, settings.offload, settings.device) == ("fp16", "model", "cuda")
    assert settings.model_dirs == (Path("/somewhere"),) and not settings.allow_hub
    assert qwen.resolve_settings(tiny=False, env={}).model_dirs == qwen.DEFAULT_MODEL_DIRS
    settings = qwen.resolve_settings(tiny=False, env=env, mode="lightning", dtype="bf16")
    assert settings.mode == "lightning" and settings.dtype == "bf16"
    assert qwen.resolve_settings(tiny=True, env={}).dtype == "fp32"
    for bad in (
        {"VIDEOKIT_QWEN_MODEL": "2408"},
        {"VIDEOKIT_QWEN_MODE": "turbo"},
        {"VIDEOKIT_DTYPE": "int4"},
        {"VIDEOKIT_OFFLOAD": "sequential"},
    ):
        with pytest.raises(ConfigError):
            qwen.resolve_settings(tiny=True, env=bad)
    with pytest.raises(ConfigError, match="no option 'colour'"):
        qwen.load_engine(tiny=True, env={}, colour="blue")


@pytest.fixture(scope="module")
def model_root(tiny_pipe: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model root in the documented layout, with tiny weights and Lightning-format LoRAs."""
    root = tmp_path_factory.mktemp("models")
    model = qwen.MODELS["2509"]
    tiny_qwen.write_model_dir(tiny_pipe, root / model.folder, lora_files=list(model.loras.values()))
    return root


def _copy(root: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(root, tmp_path / "root"))


def test_missing_model_files_are_listed_with_the_place_looked(
    model_root: Path, tmp_path: Path
) -> None:
    root = _copy(model_root, tmp_path)
    (root / "Qwen-Image-Edit-2509/transformer/diffusion_pytorch_model.safetensors").unlink()
    (root / "loras/Qwen-Image-Edit-2509-Lightning-8steps-V1.0-bf16.safetensors").unlink()

    with pytest.raises(ConfigError) as caught:
        qwen.load_engine(tiny=False, model_dir=root, device="cpu", env={})

    message = str(caught.value)
    assert "missing 2 file(s)" in message and "model_dir option" in message
    assert (
        str(root / "Qwen-Image-Edit-2509/transformer/diffusion_pytorch_model.safetensors")
        in message
    )
    assert (
        str(root / "loras/Qwen-Image-Edit-2509-Lightning-8steps-V1.0-bf16.safetensors") in message
    )
    assert "hf download Qwen/Qwen-Image-Edit-2509" in message
    # Standard mode needs no LoRA: only the transformer weights are missing then.
    with pytest.raises(ConfigError, match="missing 1 file"):
        qwen.load_engine(tiny=False, model_dir=root, mode="standard", device="cpu", env={})


def test_sharded_weights_are_checked_through_their_index(model_root: Path, tmp_path: Path) -> None:
    root = _copy(model_root, tmp_path)
    folder = root / "Qwen-Image-Edit-2509/transformer"
    (folder / "diffusion_pytorch_model.safetensors").rename(folder / "part-1.safetensors")
    index = {"weight_map": {"a": "part-1.safetensors", "b": "part-2.safetensors"}}
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    assert qwen.missing_files(root, qwen.MODELS["2509"], "lightning") == [
        "Qwen-Image-Edit-2509/transformer/part-2.safetensors"
    ]


def test_no_model_directory_lists_every_place_on_the_search_path(tmp_path: Path) -> None:
    places = (tmp_path / "baked", tmp_path / "volume")
    env = {"VIDEOKIT_MODEL_DIRS": os.pathsep.join(map(str, places))}
    with pytest.raises(ConfigError) as caught:
        qwen.load_engine(tiny=False, device="cpu", env=env)
    message = str(caught.value)
    assert f"{places[0]}: does not exist" in message and f"{places[1]}: does not exist" in message

    (places[1] / "loras").mkdir(parents=True)  # the volume exists, but holds no model
    with pytest.raises(ConfigError) as caught:
        qwen.load_engine(tiny=False, device="cpu", env=env)
    message = str(caught.value)
    assert f"in VIDEOKIT_MODEL_DIRS ({places[0]}, {places[1]})" in message
    assert str(places[1] / "Qwen-Image-Edit-2509/model_index.json") in message
    assert "unset HF_HUB_OFFLINE" in message

    # Nothing set: the image's and the volume's places, named the same way.
    with pytest.raises(ConfigError) as caught:
        qwen.load_engine(tiny=False, device="cpu", env={})
    defaults = ", ".join(map(str, qwen.DEFAULT_MODEL_DIRS))
    assert f"in the default locations ({defaults})" in str(caught.value)


def test_the_search_path_comes_from_options_then_the_environment() -> None:
    one, two = Path("/a/models"), Path("/b/models")
    search = {"VIDEOKIT_MODEL_DIRS": f" {one}{os.pathsep}{os.pathsep}{two} "}

    def dirs(env: dict[str, str], **options: Any) -> tuple[tuple[Path, ...], str]:
        settings = qwen.resolve_settings(tiny=False, env=env, **options)
        return settings.model_dirs, settings.model_dir_source

    assert dirs(search) == ((one, two), "VIDEOKIT_MODEL_DIRS")
    assert dirs({"VIDEOKIT_MODEL_DIR": str(one)}) == ((one,), "VIDEOKIT_MODEL_DIR")
    assert dirs(search, model_dirs=[two, str(one)]) == ((two, one), "the model_dirs option")
    assert dirs(search, model_dir=two) == ((two,), "the model_dir option")
    with pytest.raises(ConfigError, match="VIDEOKIT_MODEL_DIR and VIDEOKIT_MODEL_DIRS are both"):
        dirs({**search, "VIDEOKIT_MODEL_DIR": str(one)})
    with pytest.raises(ConfigError, match="'model_dir' and 'model_dirs' are both given"):
        dirs({}, model_dir=one, model_dirs=[two])
    with pytest.raises(ConfigError, match="'model_dirs' must be a list of directories"):
        dirs({}, model_dirs=str(one))
    with pytest.raises(ConfigError, match="'model_dirs' is empty"):
        dirs({}, model_dirs=[])
    with pytest.raises(ConfigError, match="'model_dirs': 3 is not a directory path"):
        dirs({}, model_dirs=[one, 3])
    with pytest.raises(ConfigError, match=r"VIDEOKIT_MODEL_DIRS=.* names no directory"):
        dirs({"VIDEOKIT_MODEL_DIRS": os.pathsep * 2})


def test_real_loader_on_a_model_folder(model_root: Path) -> None:
    """The diffusers engine's own path (layout check, from_pretrained, LoRA files, model offload)
    on a folder of tiny weights; the pipeline's resize targets are shrunk as the tiny engine's."""
    lines: list[str] = []
    engine = qwen.load_engine(
        tiny=False, model_dir=model_root, device="cpu", dtype="fp32", offload="model", env={},
        log=lines.append,
    )  # fmt: skip
    try:
        assert engine.name == "diffusers"
        assert (
            engine.identity("edit") == f"qwen-image-edit-2509/lightning-fp32@diffusers-{DIFFUSERS}"
        )
        assert engine.adapters == {"lightning-4", "lightning-8"}
        assert json.loads(lines[0])["offload"] == "model"
        with tiny_qwen.shrunk_image_sizes():
            out = _job(engine, _native([WIDE], width=128, height=128))
        assert out["model"].startswith("qwen-image-edit-2509/lightning-8-fp32@")
        assert _png_size(MediaOutput.model_validate(out["image"]).decode()) == (128, 128)
    finally:
        asyncio.run(engine.aclose())


def test_a_runpod_cached_model_loads_with_the_loras_from_the_image(
    model_root: Path, tmp_path: Path
) -> None:
    """RunPod's cached models: the snapshot in the Hugging Face cache layout at the pinned commit
    (serverless/endpoints/model-caching), the LoRAs in the image's model directory."""
    model = qwen.MODELS["2509"]
    cache = tmp_path / "huggingface-cache" / "hub"
    repo = cache / f"models--{model.repo.replace('/', '--')}"
    shutil.copytree(model_root / model.folder, repo / "snapshots" / model.revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(model.revision)
    image = tmp_path / "image"
    shutil.copytree(model_root / "loras", image / "loras")
    env = {"VIDEOKIT_HF_CACHE_ROOT": str(cache), "VIDEOKIT_MODEL_DIR": str(image)}
    lines: list[str] = []
    engine = qwen.load_engine(
        tiny=False, device="cpu", dtype="fp32", env=env, log=lines.append, warmup="off"
    )
    try:
        load = json.loads(lines[0])
        assert load["snapshot"] == str(repo / "snapshots" / model.revision)
        assert load["model_dir"] == str(image)
        with tiny_qwen.shrunk_image_sizes():
            out = _job(engine, _native([WIDE], width=128, height=128))
        assert _png_size(MediaOutput.model_validate(out["image"]).decode()) == (128, 128)
    finally:
        asyncio.run(engine.aclose())
    # Another commit in the cache is not the pinned one: the report says what was looked for.
    (repo / "snapshots" / model.revision).rename(repo / "snapshots" / ("0" * 40))
    (repo / "refs" / "main").write_text("0" * 40)
    with pytest.raises(ConfigError) as caught:
        qwen.load_engine(tiny=False, device="cpu", env=env, log=lines.append)
    assert f"cached model {model.repo}@{model.revision[:12]}: not in the Hugging Face cache" in (
        str(caught.value)
    )


def test_tiny_tokenizer_drops_exactly_the_system_prompt(tiny_pipe: Any) -> None:
    pipe = tiny_pipe
    template = pipe.prompt_template_encode
    prefix = template.split("{}")[0]
    ids = pipe.tokenizer(template.format("Picture 1: hello"))["input_ids"]
    assert len(pipe.tokenizer(prefix)["input_ids"]) == pipe.prompt_template_encode_start_idx
    kept = pipe.tokenizer.decode(ids[pipe.prompt_template_encode_start_idx :])
    assert kept.startswith("Picture 1: hello")


# -- the GPU benchmark's code path, at tiny size ---------------------------------------------------


def test_gpu_benchmark_runs_tiny() -> None:
    from benchmarks.gpu_qwen import bench_qwen

    fast = bench_qwen("cpu", megapixels=0.02, steps=4, tiny=True, options={"warmup": "off"})
    assert fast["mode"] == "lightning" and fast["output"] == "144x144"
    assert fast["transformer_calls_per_step"] == 1
    assert set(fast["seconds"]) == {"text_encode", "condition", "denoise", "decode", "total"}
    assert fast["lora_params"] > 0 and fast["peak_memory_bytes"] is None
    guided = bench_qwen(
        "cpu", megapixels=0.02, steps=2, tiny=True, cfg_scale=4.0, options={"warmup": "off"}
    )
    assert guided["mode"] == "standard" and guided["transformer_calls_per_step"] == 2


# -- model directories, devices, the Hub -----------------------------------------------------------


def _model_root_for(key: str, tiny_pipe: Any, root: Path) -> Path:
    """A model root holding ``key``'s folder and LoRAs (tiny weights), as a download makes it."""
    model = qwen.MODELS[key]
    tiny_qwen.write_model_dir(tiny_pipe, root / model.folder, lora_files=list(model.loras.values()))
    return root


def test_the_first_complete_directory_wins_not_the_first_existing(
    model_root: Path, tiny_pipe: Any, tmp_path: Path
) -> None:
    """2509 baked into the image, 2511 on the network volume: VIDEOKIT_QWEN_MODEL=2511 loads
    from the volume (the baked folder exists, but lacks 2511)."""
    baked = _copy(model_root, tmp_path)  # Qwen-Image-Edit-2509 + its LoRAs
    volume = _model_root_for("2511", tiny_pipe, tmp_path / "volume")
    lines: list[str] = []
    engine = qwen.load_engine(
        tiny=False, model_dirs=[baked, volume], device="cpu", dtype="fp32",
        env={"VIDEOKIT_QWEN_MODEL": "2511"}, log=lines.append,
    )  # fmt: skip
    try:
        assert engine.identity("edit").startswith("qwen-image-edit-2511/lightning-fp32@")
        load = json.loads(lines[0])
        assert load["model_dir"] == str(volume)
        # Loaded component by component, each placed as it was read.
        assert {"text_encoder", "transformer", "vae", "lora"} <= set(load["timings_ms"])
    finally:
        asyncio.run(engine.aclose())

    # Complete nowhere: every place is named, with what it lacks.
    shutil.rmtree(volume / "Qwen-Image-Edit-2511")
    env = {"VIDEOKIT_QWEN_MODEL": "2511", "VIDEOKIT_MODEL_DIRS": f"{baked}{os.pathsep}{volume}"}
    with pytest.raises(ConfigError) as caught:
        qwen.load_engine(tiny=False, device="cpu", env=env)
    message = str(caught.value)
    assert f"  {baked}: missing 15 file(s):" in message
    assert str(baked / "Qwen-Image-Edit-2511/model_index.json") in message
    assert str(baked / "loras/Qwen-Image-Edit-2511-Lightning-8steps-V1.0-bf16.safetensors") in (
        message
    )
    assert f"  {volume}: missing 13 file(s):" in message  # its LoRAs are still there
    assert str(volume / "Qwen-Image-Edit-2511/transformer/") in message


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA"
)
def test_without_cuda_the_real_engine_refuses_to_start_unless_told_cpu(model_root: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        qwen.load_engine(tiny=False, model_dir=model_root, env={})
    message = str(caught.value)
    assert message.startswith("the default device is cuda, but torch sees no CUDA device")
    assert "VIDEOKIT_DEVICE=cpu" in message
    with pytest.raises(ConfigError, match="VIDEOKIT_DEVICE: 'gpu' is not a device"):
        qwen.load_engine(tiny=False, model_dir=model_root, env={"VIDEOKIT_DEVICE": "gpu"})
    assert qwen.resolve_settings(tiny=True, env={}).device == "cpu"


def test_with_hub_access_missing_files_are_fetched_into_the_model_directory(
    model_root: Path, tmp_path: Path
) -> None:
    """The same rules as the Wan engine: into the layout under the model directory (not the HF
    cache), a token only from HF_TOKEN, then loaded from local files. The Hub is a stand-in
    serving the tiny model folder and its LoRAs, given to the engine as its ``hub``."""
    model = qwen.MODELS["2509"]
    hub = FakeHub(remote=tmp_path / "hub")
    hub.add_tree(model.repo, model_root / model.folder)
    hub.add_tree(model.lora_repo, model_root / "loras", under=model.lora_subfolder or "")
    root = tmp_path / "models"
    env = {"VIDEOKIT_ALLOW_HUB": "1", "HF_TOKEN": "hf_runtime_only"}
    engine = qwen.load_engine(
        tiny=False, model_dir=root, device="cpu", dtype="fp32", env=env, log=lambda line: None,
        hub=hub,
    )  # fmt: skip
    asyncio.run(engine.aclose())
    assert [(kind, c["repo_id"]) for kind, c in hub.calls] == [
        ("snapshot", model.repo), ("file", model.lora_repo), ("file", model.lora_repo)
    ]  # fmt: skip
    snapshot = hub.calls[0][1]
    assert Path(snapshot["local_dir"]) == root / model.folder
    assert snapshot["allow_patterns"] == list(SNAPSHOT_PATTERNS)
    assert [c["filename"] for _, c in hub.calls[1:]] == [
        f"{model.lora_subfolder}/{model.loras[4]}",
        f"{model.lora_subfolder}/{model.loras[8]}",
    ]
    assert all(c["token"] == "hf_runtime_only" for _, c in hub.calls)
    assert qwen.missing_files(root, model, "lightning") == []
    assert not list(root.glob(".download-*"))

    # No HF_TOKEN: no token at all (False: not even a login cached on disk).
    hub.calls.clear()
    qwen.locate_model_root(
        qwen.resolve_settings(tiny=False, model_dir=tmp_path / "again", env=env),
        {"VIDEOKIT_ALLOW_HUB": "1"},
        hub=hub,
    )
    assert hub.calls and all(c["token"] is False for _, c in hub.calls)
    offline = {"VIDEOKIT_ALLOW_HUB": "1", "HF_HUB_OFFLINE": "1"}
    hub.calls.clear()
    with pytest.raises(ConfigError, match="unset HF_HUB_OFFLINE"):
        qwen.locate_model_root(
            qwen.resolve_settings(tiny=False, model_dir=tmp_path / "third", env=offline),
            offline,
            hub=hub,
        )
    assert hub.calls == []
    # A hub without the download functions is refused before anything loads.
    with pytest.raises(ConfigError, match=r"'hub' has no snapshot_download\(\)"):
        qwen.load_engine(tiny=False, model_dir=root, device="cpu", env={}, hub=object())


def test_loading_draws_no_progress_bars(capfd: pytest.CaptureFixture[str]) -> None:
    """A worker's stderr carries JSON log records only: no tqdm bars from the libraries."""
    capfd.readouterr()
    lines: list[str] = []
    engine = qwen.load_engine(tiny=True, env={"VIDEOKIT_QWEN_MODE": "standard"}, log=lines.append)
    asyncio.run(engine.aclose())
    err = capfd.readouterr().err
    assert "it/s" not in err and "%|" not in err, err[-500:]
    assert json.loads(lines[0])["event"] == "videokit.qwen.load"


# -- CUDA out of memory, dialects ------------------------------------------------------------------


def test_a_cuda_oom_in_the_pipeline_is_reported_as_transient_and_frees_the_jobs_tensors(
    lightning: qwen.QwenEngine,
) -> None:
    """A real ``torch.cuda.OutOfMemoryError`` raised inside a transformer block: the handler
    reports it as OOM (transient), the job's tensors are released though the caller still
    holds the error, and the worker serves the next job."""
    import weakref

    blocks: list[weakref.ref[Any]] = []

    def out_of_memory(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        blocks.append(weakref.ref(kwargs["hidden_states"]))
        raise torch.cuda.OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 12.00 GiB. GPU 0 has a total capacity of "
            "79.19 GiB of which 1.25 GiB is free."
        )

    block = lightning.pipe.transformer.transformer_blocks[0]
    handle = block.register_forward_pre_hook(out_of_memory, with_kwargs=True)
    handler_lines: list[str] = []
    engine_lines: list[str] = []
    lightning.log = engine_lines.append
    try:
        with pytest.raises(WorkerOOMError) as caught:
            _job(lightning, _native([WIDE], width=128, height=128), log=handler_lines.append)
    finally:
        handle.remove()
        lightning.log = lambda line: None
    error = caught.value
    assert error.transient is True
    assert str(error).startswith("CUDA out of memory: Tried to allocate 12.00 GiB")
    assert isinstance(error.__cause__, torch.cuda.OutOfMemoryError)
    assert json.loads(handler_lines[-1])["status"] == "oom"
    assert json.loads(engine_lines[-1])["status"] == "oom"
    assert len(blocks) == 1 and blocks[0]() is None  # not kept alive by the traceback
    out = _job(lightning, _native([WIDE], width=128, height=128))
    assert out["width"] == 128


def test_dialect_results_carry_peak_memory_when_it_was_measured(
    lightning: qwen.QwenEngine,
) -> None:
    from videokit.worker.compat import format_output

    request = EditRequest(images=[MediaInput.from_bytes(WIDE)], prompt="x", seed=1, steps=4)
    result = asyncio.run(lightning.edit(request, JobContext(scene="s", stage="edit")))
    assert "peak_memory_bytes" not in format_output(result, "qwen-edit-worker")  # CPU: not measured
    on_gpu = result.model_copy(update={"peak_memory_bytes": 58 * 2**30})
    assert format_output(on_gpu, "qwen-edit-worker")["peak_memory_bytes"] == 58 * 2**30
