"""The loaded Qwen-Image-Edit engine: up to three images and a prompt in, one PNG out.

What one job runs (steps, true CFG, Lightning adapter) is decided by :meth:`QwenEngine.plan`
before any GPU time is spent; the thread, cancellation, records and memory release are the
shared base's (:mod:`videokit.worker.diffusers_engine`). docs/workers.md is the manual.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from videokit.backends.base import JobContext, Stage
from videokit.media.images import MAX_IMAGE_PIXELS, encode_png, load_rgb
from videokit.protocol import (
    MAX_SIDE,
    MIN_SIDE,
    AnimateRequest,
    AnimateResult,
    EditRequest,
    EditResult,
    MediaInput,
    MediaOutput,
    uses_lightning_defaults,
)
from videokit.worker.common import (
    LogFn,
    ProgressFn,
    inline_bytes,
    ms_since,
    raise_if_cancelled,
    threadsafe_progress,
)
from videokit.worker.diffusers_engine.engine import DiffusersEngine
from videokit.worker.diffusers_engine.memory import JobSize, MemoryModel
from videokit.worker.diffusers_engine.options import EngineOptions
from videokit.worker.errors import JobInputError
from videokit.worker.qwen_config import (
    LIGHTNING_STEPS,
    STANDARD_CFG,
    STANDARD_NEGATIVE_PROMPT,
    STANDARD_STEPS,
    QwenSettings,
)

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["DEFAULT_AREA", "QwenEngine", "QwenPlan", "default_size"]

#: About one megapixel: the size Qwen-Image-Edit was trained at and diffusers' default output.
DEFAULT_AREA = 1024 * 1024
_MULTIPLE = 16  # VAE downsampling (8) x latent packing (2)
# QwenImageEditPlusPipeline resizes every input to about this many pixels for its VAE latents.
_CONDITION_AREA = 1024 * 1024


def default_size(width: int, height: int, *, area: int = DEFAULT_AREA) -> tuple[int, int]:
    """About ``area`` pixels at ``width``:``height``, both sides multiples of 16 in the protocol's
    range (an extreme aspect ratio is clamped rather than producing a side over 1920)."""
    ratio = width / height
    w = math.sqrt(area * ratio)
    h = w / ratio
    scale = min(1.0, MAX_SIDE / w, MAX_SIDE / h)
    w, h = w * scale, h * scale

    def snap(side: float) -> int:
        return max(MIN_SIDE, min(MAX_SIDE, _MULTIPLE * round(side / _MULTIPLE)))

    return snap(w), snap(h)


@dataclass
class QwenPlan:
    """What one job will run, decided before any GPU time is spent."""

    steps: int
    cfg_scale: float
    negative_prompt: str | None
    adapter: str | None
    notes: list[str]

    @property
    def cfg(self) -> bool:
        """Whether true CFG runs: diffusers needs a scale above 1 and a negative prompt."""
        return self.cfg_scale > 1 and self.negative_prompt is not None


class QwenEngine(DiffusersEngine):
    """Runs edit jobs on one loaded ``QwenImageEditPlusPipeline`` (see docs/workers.md).

    ``image_sizes`` (tiny only) lowers the pipeline's internal resize targets for each call;
    ``default_area`` is the output pixel count when a request gives no size.
    """

    stage = "edit"
    event = "videokit.qwen"

    def __init__(
        self,
        pipe: Any,
        settings: QwenSettings,
        *,
        log: LogFn | None = None,
        image_sizes: tuple[int, int] | None = None,
        default_area: int = DEFAULT_AREA,
        max_image_pixels: int = MAX_IMAGE_PIXELS,
        options: EngineOptions | None = None,
    ) -> None:
        import diffusers

        name = "tiny" if settings.tiny else "diffusers"
        super().__init__(pipe, device=settings.device, options=options, name=name, log=log)
        self.settings = settings
        self.image_sizes = image_sizes
        self.default_area = default_area
        self.max_image_pixels = max_image_pixels
        self.adapters: frozenset[str] = (
            frozenset(name for names in pipe.get_list_adapters().values() for name in names)
            if settings.mode == "lightning"
            else frozenset()
        )
        self._active_adapter: str | None = None
        self._fused: str | None = None  # the adapter fused into the weights (fuse_lora=on)
        self.refuses = 0  # how often a step-count change unfused one adapter for the other
        if settings.tiny:
            from videokit.worker.tiny_qwen import TINY_VERSION

            self._model_name = f"tiny-qwen-edit-v{TINY_VERSION}"
        else:
            self._model_name = settings.model.name
        default_dtype = "fp32" if settings.tiny else "bf16"
        self._dtype_tag = "" if settings.dtype == default_dtype else f"-{settings.dtype}"
        self._version = f"diffusers-{diffusers.__version__}"

    @property
    def pipe(self) -> Any:
        """The pipeline (None once closed)."""
        return self.pipeline

    # -- Engine protocol ---------------------------------------------------------------------------

    def identity(self, stage: Stage) -> str:
        """``<model>/<mode>@diffusers-<version>``, e.g. ``qwen-image-edit-2509/lightning@...``.

        In lightning mode the step count (4 or 8, which picks the LoRA) is a request field, so
        the engine's identity names the mode and each result's ``model`` names the variant
        (``qwen-image-edit-2509/lightning-8@diffusers-0.42.1``). A non-default dtype is
        appended to the mode (``standard-fp16``): it changes the pixels.
        """
        return f"{self._model_name}/{self.settings.mode}{self._dtype_tag}@{self._version}"

    def model_for(self, steps: int) -> str:
        """The ``model`` reported with a result of ``steps`` steps."""
        mode = f"lightning-{steps}" if self.settings.mode == "lightning" else "standard"
        return f"{self._model_name}/{mode}{self._dtype_tag}@{self._version}"

    async def animate(self, request: AnimateRequest, ctx: JobContext) -> AnimateResult:
        raise self.refuse_stage("animate")

    # -- jobs --------------------------------------------------------------------------------------

    def plan(self, request: EditRequest) -> QwenPlan:
        """Check the request against the mode and decide steps, CFG and LoRA (JobInputError).

        Lightning: the request's 4 or 8 steps with their LoRA, CFG off. Standard: the request as
        sent, unless its steps and CFG scale are exactly the protocol's Lightning defaults, which
        mean the reference settings. ``notes`` names each substitution, and each setting that
        cannot take effect.
        """
        notes: list[str] = []
        negative = request.negative_prompt if request.negative_prompt.strip() else None
        if self.settings.mode == "standard":
            if uses_lightning_defaults(request):
                notes += ["steps_reference", "cfg_reference"]
                if negative is None:
                    negative = STANDARD_NEGATIVE_PROMPT
                    notes.append("negative_prompt_reference")
                return QwenPlan(STANDARD_STEPS, STANDARD_CFG, negative, None, notes)
            if request.true_cfg_scale > 1 and negative is None:
                notes.append("cfg_off_without_negative_prompt")
            elif request.true_cfg_scale <= 1 and negative is not None:
                notes.append("negative_prompt_unused_without_cfg")
            return QwenPlan(request.steps, request.true_cfg_scale, negative, None, notes)
        variant = LIGHTNING_STEPS.get(request.steps)
        if variant is None:
            raise JobInputError(
                f"steps: this worker runs the Lightning LoRA, which takes 4 or 8 steps, "
                f"got {request.steps}",
                hint="send steps=8 (best quality) or steps=4 (fastest); other step counts "
                "need a worker in standard mode (VIDEOKIT_QWEN_MODE=standard)",
            )
        if request.true_cfg_scale != 1.0 or negative is not None:
            notes.append("cfg_ignored_lightning")
        return QwenPlan(variant.steps, 1.0, None, variant.adapter, notes)

    def _admit(self, request: EditRequest, plan: QwenPlan) -> None:
        if self.memory is None or request.width is None or request.height is None:
            return  # without a size the output is ~1 MP, which every supported card fits
        size = JobSize(
            request.width,
            request.height,
            1,
            cfg=plan.cfg,
            extra_tokens=len(request.images) * _CONDITION_AREA // _MULTIPLE**2,
        )
        self.memory.admit(size, tiled=lambda _: False, can_swap=False, multiple=_MULTIPLE)

    async def edit(self, request: EditRequest, ctx: JobContext) -> EditResult:
        plan = self.plan(request)
        self._admit(request, plan)
        sources = [inline_bytes(media, f"images[{i}]") for i, media in enumerate(request.images)]
        record: dict[str, Any] = {
            "event": f"{self.event}.job",
            "job": ctx.scene,
            "identity": self.identity("edit"),
            "images": len(request.images),
            "steps": plan.steps,
            "seed": request.seed,
            "cfg": plan.cfg,
            "cfg_scale": plan.cfg_scale if plan.cfg else None,
            "adapter": plan.adapter,
            "notes": plan.notes or None,
        }
        progress = threadsafe_progress(_loop(), ctx.on_progress)
        ctx.on_progress(0.0, "encoding prompt and images")
        png, width, height, peak = await self.run_job(
            record,
            lambda cancel: self._run(request, plan, sources, cancel, progress, record),
            finish=lambda _: None,
        )
        ctx.on_progress(1.0, "edit ready")
        return EditResult(
            image=MediaOutput.inline(png, "image/png"),
            seed=request.seed,
            width=width,
            height=height,
            inference_ms=record["job_ms"],
            model=self.model_for(plan.steps),
            peak_memory_bytes=peak,
        )

    def _run(
        self,
        request: EditRequest,
        plan: QwenPlan,
        sources: list[bytes],
        cancel: threading.Event,
        progress: ProgressFn,
        record: dict[str, Any],
    ) -> tuple[bytes, int, int, int | None]:
        """The job, on the engine's thread: decode, run the pipeline, encode the PNG."""
        import torch

        decode_started = time.perf_counter()
        images: list[Image.Image] = [
            load_rgb(data, max_pixels=self.max_image_pixels) for data in sources
        ]
        record["input_sizes"] = [f"{img.width}x{img.height}" for img in images]
        if request.width is not None and request.height is not None:
            width, height = request.width, request.height
        else:
            width, height = default_size(*images[0].size, area=self.default_area)
        record.update(width=width, height=height)
        timings: dict[str, int] = {"decode_inputs": ms_since(decode_started)}
        record["timings_ms"] = timings
        raise_if_cancelled(cancel)
        pipe = self.pipeline
        if pipe is None:
            raise RuntimeError("this Qwen engine was closed")
        self._activate(plan.adapter)
        self.reset_peak()
        timer = self.phase_timer()
        steps = plan.steps

        def on_step_end(_pipe: Any, step: int, _t: Any, _tensors: dict[str, Any]) -> dict[str, Any]:
            timer.step_done()
            progress((step + 1) / (steps + 1), f"denoising step {step + 1}/{steps}")
            raise_if_cancelled(cancel)
            return {}

        # CPU noise for any device: the same seed gives the same starting latents anywhere.
        generator = torch.Generator(device="cpu").manual_seed(request.seed)

        def call() -> Any:
            with timer.attached(), self._image_sizes():
                return pipe(
                    image=images,
                    prompt=request.prompt,
                    negative_prompt=plan.negative_prompt,
                    true_cfg_scale=plan.cfg_scale,
                    height=height,
                    width=width,
                    num_inference_steps=steps,
                    generator=generator,
                    callback_on_step_end=on_step_end,
                    output_type="pil",
                )

        output = self.pipeline_call(call)
        timings.update(timer.finish())
        record["transformer_calls"] = timer.transformer_calls
        peak = self.peak_bytes()
        record["peak_memory_bytes"] = peak
        result = output.images[0]
        encode_started = time.perf_counter()
        png = encode_png(result)
        timings["encode_png"] = ms_since(encode_started)
        return png, result.width, result.height, peak

    def _activate(self, adapter: str | None) -> None:
        """Make ``adapter`` the active Lightning LoRA; with fuse_lora on, the fused one.

        Fusing adds the LoRA's delta into the weights (no LoRA matmuls per step); a job with the
        other step count unfuses it first. bf16 rounds each fuse and unfuse, so a worker that
        alternates step counts should leave fuse_lora off (the default).
        """
        pipe = self.pipeline
        if adapter is None or adapter == self._active_adapter:
            return
        if self.options.fuse_lora == "on":
            if self._fused is not None:
                pipe.unfuse_lora()
                self.refuses += 1
            pipe.set_adapters([adapter], [1.0])
            pipe.fuse_lora(adapter_names=[adapter], lora_scale=1.0)
            self._fused = adapter
        else:
            pipe.set_adapters([adapter], [1.0])
        self._active_adapter = adapter

    @contextlib.contextmanager
    def _image_sizes(self) -> Iterator[None]:
        if self.image_sizes is None:
            yield
            return
        from videokit.worker.tiny_qwen import shrunk_image_sizes

        with shrunk_image_sizes(*self.image_sizes):
            yield

    # -- load time ---------------------------------------------------------------------------------

    def warm_up(self) -> dict[str, Any]:
        """One real denoising step at load, at a small size, with each Lightning adapter.

        Each, because compiled blocks are specialised to the adapter in use: a job with the
        other one would otherwise compile in its own time. The protocol's default (8 steps) goes
        last, so it is the active (or fused) one when the first job comes.
        """
        side = 512 if self.image_sizes is None else 128
        grey = MediaInput.from_bytes(encode_png(_grey(side)))
        request = EditRequest(images=[grey], prompt="warm-up", width=side, height=side, seed=0)
        ordered: list[str | None] = [*sorted(self.adapters, key=_adapter_steps)]
        adapters = ordered or [None]
        record: dict[str, Any] = {}
        started = time.perf_counter()
        peak: int | None = None
        for adapter in adapters:
            plan = QwenPlan(1, 1.0, None, adapter, [])

            def step(cancel: threading.Event, plan: QwenPlan = plan) -> int | None:
                return self._run(request, plan, [grey.decode()], cancel, _quiet, record)[3]

            peak_now = self.call(step)
            peak = max(peak or 0, peak_now) if peak_now is not None else peak
        return {"ms": ms_since(started), "steps": len(adapters), "peak_bytes": peak}

    def plan_memory(self) -> None:
        capacity = self.capacity()
        pipe = self.pipeline
        if capacity is None or self.settings.offload != "none":
            return
        config = pipe.transformer.config
        inner = int(config.num_attention_heads) * int(config.attention_head_dim)
        width = next(pipe.transformer.parameters()).element_size()

        def tokens(size: JobSize) -> int:
            return (size.width // _MULTIPLE) * (size.height // _MULTIPLE) + size.extra_tokens

        self.memory = MemoryModel(
            capacity=capacity[0],
            device_name=capacity[1],
            resident=self.resident_bytes([pipe.text_encoder, pipe.transformer, pipe.vae]),
            tokens=tokens,
            per_token=width * (8 * inner + 2 * 4 * inner),  # see WanEngine.plan_memory
            per_pixel=6 * 96 * next(pipe.vae.parameters()).element_size(),
            tile_pixels=256 * 256,
        )


def _adapter_steps(adapter: str) -> int:
    return int(adapter.rsplit("-", 1)[-1])  # "lightning-8" -> 8


def _grey(side: int) -> Any:
    import numpy as np

    return np.full((side, side, 3), 128, np.uint8)


def _quiet(fraction: float, message: str | None) -> None:
    return None


def _loop() -> Any:
    import asyncio

    return asyncio.get_running_loop()
