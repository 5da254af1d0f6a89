"""The loaded Wan2.2 image-to-video engine: a job in, an H.264 clip and its last frame out.

What one job runs (steps, guidance, negative prompt) is decided by :meth:`WanEngine.plan` before
any GPU time is spent, and the request is checked against the pipeline's grid, the mode and the
card's memory first. The thread, cancellation, records and memory release are the shared base's
(:mod:`videokit.worker.diffusers_engine`); docs/workers.md is the manual.
"""

from __future__ import annotations

import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from videokit.backends.base import JobContext, Stage
from videokit.media.ffmpeg import RawVideoWriter
from videokit.media.images import cover_fit, encode_png, load_rgb
from videokit.protocol import (
    AnimateRequest,
    AnimateResult,
    EditRequest,
    EditResult,
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
from videokit.worker.diffusers_engine.memory import JobSize, MemoryModel, module_bytes
from videokit.worker.diffusers_engine.options import EngineOptions
from videokit.worker.diffusers_engine.residency import SwappedModule
from videokit.worker.wan_checks import WanGrid, check_cfg_pair, check_lightning_steps
from videokit.worker.wan_config import Mode
from videokit.worker.wan_lightning import LIGHTNING_STEPS

__all__ = ["REFERENCE_NEGATIVE_PROMPT", "WanEngine", "WanPlan", "WanRender"]

#: Wan's own negative prompt (``sample_neg_prompt`` in Wan2.1/2.2's shared config; the diffusers
#: examples use it, or its English translation). Standard mode sends it when a request has none:
#: the model's CFG was tuned against it, not against an empty prompt. UMT5 reads Chinese.
REFERENCE_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，"
    "低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，"
    "形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)

# x264 settings for the delivered clip: visually lossless for a clip that is stitched and maybe
# re-encoded later. Threads pinned because x264's output depends on its thread count, so the
# same frames give the same bytes on any machine.
_CRF = 16
_PRESET = "medium"
_X264_THREADS = 8

# VAE tiling's "auto" threshold: above Wan's 480p size, the untiled decode is what runs out.
_TILING_ABOVE_PIXELS = 832 * 480
# Wan's text encoder reads at most this many tokens (the pipeline's default).
_MAX_TEXT_TOKENS = 512


@dataclass
class WanRender:
    """The pixels of one generation and what it cost.

    ``frames`` holds every frame the model made (frame 0 included), F x H x W x 3 uint8.
    ``timings_ms``: the phases of :mod:`~videokit.worker.diffusers_engine.phases`.
    """

    frames: npt.NDArray[np.uint8]
    steps: int
    guidance: tuple[float, float | None]
    timings_ms: dict[str, int]
    peak_memory_bytes: int | None
    timesteps: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # the plan's (WanPlan.notes)


@dataclass(frozen=True)
class WanPlan:
    """What one job runs, decided by :meth:`WanEngine.plan` before any GPU time is spent."""

    steps: int
    guidance: float
    guidance_2: float | None  # the low-noise expert's; None for a one-transformer model
    negative_prompt: str | None  # None: no negative prompt (diffusers encodes "")
    notes: list[str]  # what was substituted or ignored, for the job's log line


class WanEngine(DiffusersEngine):
    """A loaded Wan2.2 pipeline serving animate jobs (one at a time)."""

    stage = "animate"
    event = "videokit.wan"

    def __init__(
        self,
        pipe: Any,
        *,
        model_name: str,
        mode: Mode,
        variant: str = "",
        standard_steps: int = 40,
        standard_guidance: tuple[float, float | None] = (3.5, 3.5),
        name: str = "diffusers",
        log: LogFn | None = None,
        options: EngineOptions | None = None,
        device: str | None = None,
    ) -> None:
        import diffusers

        where = device or str(pipe._execution_device)
        super().__init__(pipe, device=where, options=options, name=name, log=log)
        self.mode: Mode = mode
        self._model_name = model_name
        self._variant = variant
        self._version = diffusers.__version__
        self._standard_steps = standard_steps
        self._standard_guidance = standard_guidance
        self._two_experts = getattr(pipe, "transformer_2", None) is not None
        #: The sizes and frame counts this pipeline can build (multiples of 16 for A14B).
        self.grid = WanGrid.of(pipe)
        self.size_multiple = self.grid.multiple
        self._text_swap: SwappedModule | None = None

    def transformers(self) -> list[Any]:
        return [self.pipeline.transformer, getattr(self.pipeline, "transformer_2", None)]

    # -- Engine protocol ---------------------------------------------------------------------------

    def identity(self, stage: Stage) -> str:
        tag = self.mode + (f"-{self._variant}" if self._variant else "")
        return f"{self._model_name}/{tag}@diffusers-{self._version}"

    async def edit(self, request: EditRequest, ctx: JobContext) -> EditResult:
        raise self.refuse_stage("edit")

    async def animate(self, request: AnimateRequest, ctx: JobContext) -> AnimateResult:
        """Generate the clip for ``request`` (see docs/workers.md)."""
        swap = self._check(request)
        source = inline_bytes(request.image, "image")
        progress = _progress_of(ctx)
        record: dict[str, Any] = {
            "event": f"{self.event}.job",
            "job": ctx.scene,
            "model": self.identity("animate"),
            "frames": request.frames,
            "output_frames": request.output_frames,
            "width": request.width,
            "height": request.height,
            "fps": request.fps,
        }

        def finish(result: tuple[bytes, bytes, WanRender, int]) -> None:
            video, _, render, encode_ms = result
            record.update(
                steps=render.steps,
                guidance=list(render.guidance),
                notes=render.notes or None,
                timings_ms={**render.timings_ms, "encode": encode_ms},
                peak_memory_bytes=render.peak_memory_bytes,
                video_bytes=len(video),
                text_encoder="swapped" if swap else None,
            )

        video, png, render, _ = await self.run_job(
            record, lambda cancel: self._job(request, source, cancel, progress, swap), finish=finish
        )
        return AnimateResult(
            video=MediaOutput.inline(video, "video/mp4"),
            last_frame=MediaOutput.inline(png, "image/png"),
            seed=request.seed,
            frames=request.output_frames,
            fps=request.fps,
            width=request.width,
            height=request.height,
            inference_ms=record["job_ms"],
            model=self.identity("animate"),
            peak_memory_bytes=render.peak_memory_bytes,
        )

    # -- generation --------------------------------------------------------------------------------

    def render_frames(
        self,
        request: AnimateRequest,
        *,
        image: Image.Image | None = None,
        cancel: threading.Event | None = None,
        progress: ProgressFn | None = None,
    ) -> WanRender:
        """Run the pipeline for ``request`` (blocking) and return all its frames as uint8.

        What :meth:`animate` runs in its thread, before encoding; public so that tests and the
        benchmark see exactly the pixels a job is made of. ``image`` defaults to the request's
        input, decoded and cover-fitted.
        """
        swap = self._check(request)
        if image is None:
            image = _input_image(request, request.image.decode())
        event, report = cancel or threading.Event(), progress or _no_progress
        plan = self.plan(request)
        return self.call(lambda _: self._render(request, plan, image, event, report, swap))

    def _check(self, request: AnimateRequest) -> bool:
        """Refuse, before any pipeline work, what would fail deep inside it, run silently wrong
        or not fit in memory. Returns whether the text encoder must leave the GPU for it."""
        if self.pipeline is None:
            raise RuntimeError("this Wan engine was closed")
        self.grid.check(self._model_name, request.width, request.height, request.frames)
        if self.mode == "lightning":
            check_lightning_steps(request.steps, distilled_for=LIGHTNING_STEPS)
        elif self._two_experts:
            check_cfg_pair(request.guidance_scale, request.guidance_scale_2)
        plan = self.plan(request)
        size = JobSize(request.width, request.height, request.frames, cfg=plan.guidance > 1)
        if self.options.text_encoder == "swap":
            return True
        if self.memory is None:
            return False
        return self.memory.admit(
            size,
            tiled=self._tiled,
            can_swap=self.options.text_encoder == "auto",
            multiple=self.grid.multiple,
            frame_counts=range(self.grid.max_frames, 0, -4),
        )

    def _tiled(self, size: JobSize) -> bool:
        if self.options.vae_tiling == "auto":
            return size.width * size.height > _TILING_ABOVE_PIXELS
        return self.options.vae_tiling == "on"

    def plan(self, request: AnimateRequest) -> WanPlan:
        """What this engine's mode runs for ``request``: steps, guidance, negative prompt, notes.

        Lightning: the request's steps, guidance 1.0 for both experts, no negative prompt (no
        unconditional pass). Standard: the request as sent, unless its steps and guidance are
        exactly the protocol's lightning defaults, which mean the model's reference settings.
        ``notes`` names what was substituted or ignored. The second scale is None for a
        one-transformer model.
        """
        two = self._two_experts
        if self.mode == "lightning":
            chosen = request.guidance_scale != 1.0 or request.guidance_scale_2 not in (None, 1.0)
            return WanPlan(
                steps=request.steps,
                guidance=1.0,
                guidance_2=1.0 if two else None,
                negative_prompt=None,
                notes=["guidance_ignored_lightning"] if chosen else [],
            )
        negative = request.negative_prompt if request.negative_prompt.strip() else None
        if not uses_lightning_defaults(request):
            guidance = request.guidance_scale
            guidance_2 = (
                request.guidance_scale_2 if request.guidance_scale_2 is not None else guidance
            )
            return WanPlan(request.steps, guidance, guidance_2 if two else None, negative, [])
        notes = ["steps_reference", "guidance_reference"]
        if negative is None:
            negative = REFERENCE_NEGATIVE_PROMPT
            notes.append("negative_prompt_reference")
        reference, reference_2 = self._standard_guidance
        return WanPlan(
            self._standard_steps, reference, reference_2 if two else None, negative, notes
        )

    def _job(
        self,
        request: AnimateRequest,
        source: bytes,
        cancel: threading.Event,
        progress: ProgressFn,
        swap: bool,
    ) -> tuple[bytes, bytes, WanRender, int]:
        """The thread's whole job: decode, generate, encode. Returns (mp4, png, render, ms)."""
        image = _input_image(request, source)
        render = self._render(request, self.plan(request), image, cancel, progress, swap)
        encode_started = time.perf_counter()
        video = _encode(request, render.frames, cancel)
        png = encode_png(render.frames[-1])
        encode_ms = ms_since(encode_started)
        progress(1.0, "encoded")
        return video, png, render, encode_ms

    def _render(
        self,
        request: AnimateRequest,
        plan: WanPlan,
        image: Image.Image,
        cancel: threading.Event,
        progress: ProgressFn,
        swap: bool,
    ) -> WanRender:
        import torch

        steps = plan.steps
        total = steps + 2  # the denoising steps, then the decode and the encode
        pipe = self.pipeline
        if pipe is None:
            raise RuntimeError("this Wan engine was closed")
        raise_if_cancelled(cancel)
        self.reset_peak()
        timer = self.phase_timer()
        size = JobSize(request.width, request.height, request.frames, cfg=plan.guidance > 1)
        pipe.vae.use_tiling = self._tiled(size)

        def on_step_end(
            _pipe: Any, index: int, _timestep: Any, _tensors: dict[str, Any]
        ) -> dict[str, Any]:
            timer.step_done()
            progress((index + 1) / total, f"denoising step {index + 1}/{steps}")
            raise_if_cancelled(cancel)
            return {}

        # On the CPU whatever the device: the same seed gives the same starting noise on any
        # machine (diffusers draws it there and moves it).
        generator = torch.Generator(device="cpu").manual_seed(request.seed)
        progress(0.0, "encoding the prompt")

        def call() -> npt.NDArray[np.uint8]:
            with timer.attached():
                embeds = self._encode_prompt(request.prompt, plan, swap)
                output = pipe(
                    image=image,
                    height=request.height,
                    width=request.width,
                    num_frames=request.frames,
                    num_inference_steps=steps,
                    guidance_scale=plan.guidance,
                    guidance_scale_2=plan.guidance_2,
                    generator=generator,
                    output_type="np",
                    callback_on_step_end=on_step_end,
                    **embeds,
                )
                return _to_uint8(output.frames[0])

        frames = self.pipeline_call(call)
        timings = timer.finish()
        progress((steps + 1) / total, "decoded")
        if frames.shape[0] != request.frames:
            raise RuntimeError(f"the pipeline made {frames.shape[0]} frames, not {request.frames}")
        return WanRender(
            frames=frames,
            steps=steps,
            guidance=(plan.guidance, plan.guidance_2),
            timings_ms=timings,
            peak_memory_bytes=self.peak_bytes(),
            timesteps=[float(t) for t in pipe.scheduler.timesteps],
            notes=plan.notes,
        )

    def _encode_prompt(self, prompt: str, plan: WanPlan, swap: bool) -> dict[str, Any]:
        """The pipeline's own prompt arguments, or (when the text encoder leaves the GPU for
        this job, or visits it) the embeddings, encoded while it is there."""
        if not swap and self._text_swap is None:
            return {"prompt": prompt, "negative_prompt": plan.negative_prompt}
        if self._text_swap is None:
            self._text_swap = SwappedModule(self.pipeline.text_encoder, self.device)
        import torch

        # no_grad as inside the pipeline's own call: the same kernels, so the same embeddings.
        with self._text_swap.on_device_while(swap), torch.no_grad():
            positive, negative = self.pipeline.encode_prompt(
                prompt=prompt,
                negative_prompt=plan.negative_prompt,
                do_classifier_free_guidance=plan.guidance > 1,
                num_videos_per_prompt=1,
                max_sequence_length=_MAX_TEXT_TOKENS,
                device=self.device,
            )
        return {"prompt_embeds": positive, "negative_prompt_embeds": negative}

    # -- load time ---------------------------------------------------------------------------------

    def warmup_request(self) -> AnimateRequest:
        """The smallest job that runs every kernel: each expert once, the VAE both ways."""
        from videokit.protocol import MediaInput

        multiple = self.grid.multiple
        # The real model warms up at its 480p width and height (kernels are picked per shape);
        # the tiny one at its smallest, to keep tests fast.
        side_w, side_h = (128, 128) if self.name == "tiny" else (832, 480)
        width = max(multiple, min(side_w, self.grid.max_width) // multiple * multiple)
        height = max(multiple, min(side_h, self.grid.max_height) // multiple * multiple)
        grey = encode_png(np.full((height, width, 3), 128, np.uint8))
        return AnimateRequest(
            image=MediaInput.from_bytes(grey),
            prompt="warm-up",
            width=width,
            height=height,
            frames=5,
            seed=0,
        )

    def warm_up(self) -> dict[str, Any]:
        """One real denoising step per expert at load (kernels chosen, blocks compiled), with
        its peak memory taken as the plan's measured overhead. Returns the load log's part."""
        request = self.warmup_request()
        plan = WanPlan(
            2 if self._two_experts else 1, 1.0, 1.0 if self._two_experts else None, None, []
        )
        image = _input_image(request, request.image.decode())
        started = time.perf_counter()
        render = self.call(
            lambda cancel: self._render(request, plan, image, cancel, _no_progress, False)
        )
        size = JobSize(request.width, request.height, request.frames, cfg=False)
        if self.memory is not None:
            self.calibrate(render.peak_memory_bytes, self.memory.need(size, tiled=False))
        return {
            "ms": ms_since(started),
            "steps": plan.steps,
            "peak_bytes": render.peak_memory_bytes,
        }

    def plan_memory(self) -> None:
        """Build the admission model from the loaded pipeline (no-op without a capacity)."""
        capacity = self.capacity()
        if capacity is None:
            return
        pipe = self.pipeline
        experts = [m for m in self.transformers() if m is not None]
        config = experts[0].config
        inner = int(config.num_attention_heads) * int(config.attention_head_dim)
        width = next(experts[0].parameters()).element_size()
        p_t, p_h, p_w = (int(p) for p in config.patch_size)
        spatial, temporal = int(pipe.vae_scale_factor_spatial), int(pipe.vae_scale_factor_temporal)

        def tokens(size: JobSize) -> int:
            latent_frames = (size.frames - 1) // temporal + 1
            return (
                (latent_frames // p_t)
                * (size.height // spatial // p_h)
                * (size.width // spatial // p_w)
            )

        vae_width = int(getattr(pipe.vae.config, "base_dim", 96))
        self.memory = MemoryModel(
            capacity=capacity[0],
            device_name=capacity[1],
            resident=self.resident_bytes([pipe.text_encoder, *experts, pipe.vae]),
            swappable=module_bytes([pipe.text_encoder]),
            tokens=tokens,
            # Live per token inside one block: the residual stream, norms, q/k/v, the attention
            # output (8 x inner) and the feed-forward's widened pair (2 x ffn).
            per_token=width * (8 * inner + 2 * int(config.ffn_dim)),
            # The decoder's full-resolution stage: 4 frames of base_dim channels, ~6 tensors
            # alive, in the VAE's dtype.
            per_pixel=4 * 6 * vae_width * next(pipe.vae.parameters()).element_size(),
            tile_pixels=256 * 256,
        )


def _progress_of(ctx: JobContext) -> ProgressFn:
    import asyncio

    return threadsafe_progress(asyncio.get_running_loop(), ctx.on_progress)


def _input_image(request: AnimateRequest, source: bytes) -> Image.Image:
    return cover_fit(load_rgb(source), request.width, request.height)


def _encode(
    request: AnimateRequest, frames: npt.NDArray[np.uint8], cancel: threading.Event
) -> bytes:
    first = 1 if request.drop_first_frame else 0
    with tempfile.TemporaryDirectory(prefix="videokit-wan-") as tmp:
        path = Path(tmp) / "clip.mp4"
        with RawVideoWriter(
            path,
            width=request.width,
            height=request.height,
            fps=request.fps,
            crf=_CRF,
            preset=_PRESET,
            threads=_X264_THREADS,
        ) as writer:
            for frame in frames[first:]:
                raise_if_cancelled(cancel)
                writer.write(frame)
        return path.read_bytes()


def _no_progress(fraction: float, message: str | None) -> None:
    return None


def _to_uint8(frames: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.uint8]:
    # The pipeline's float frames are in [0, 1]; round like diffusers' numpy_to_pil does.
    return np.ascontiguousarray(np.clip(np.rint(frames * 255.0), 0, 255).astype(np.uint8))
