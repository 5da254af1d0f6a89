"""The preview backend: a CPU animatic that needs no GPU and no account.

It is videokit's embedded default, so a story can be rendered end to end (timing, chaining, music,
stitching) before anyone pays for a GPU second. It does not imitate the models; it makes an honest
*animatic* that shows what each job was asked to do: ``edit`` returns a **storyboard card**
(:mod:`~videokit.backends.preview_card`), ``animate`` a **camera move** over the input frame
(:mod:`~videokit.backends.preview_moves`) with the motion prompt as a caption, a "PREVIEW" badge
and a frame counter burned into every frame (:mod:`~videokit.backends.preview_draw`). Animating a
card fades it into the clean picture it carries, so the clip's last frame (the next scene's input)
is clean. Like Wan, a clip starts on its input picture: frame 0 is the input cover-fitted.

Everything is deterministic: the same request gives byte-identical PNGs and identical decoded video
frames (fixed x264 settings and thread count). Output pixels depend only on the request, because
results are cached by request; :meth:`PreviewBackend.identity` carries a version to bump whenever
the drawing changes, and the test-only colour drift (:mod:`~videokit.backends.preview_drift`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import TypeVar

from PIL import Image

from videokit.backends.base import JobContext, Stage
from videokit.backends.preview_card import clean_picture, render_card
from videokit.backends.preview_draw import ClipOverlay
from videokit.backends.preview_drift import ColorDrift, drift_from_env
from videokit.backends.preview_moves import CameraMove, choose_camera_move
from videokit.media.ffmpeg import RawVideoWriter
from videokit.media.images import cover_fit, encode_png, load_rgb
from videokit.protocol import (
    AnimateRequest,
    AnimateResult,
    EditRequest,
    EditResult,
    MediaInput,
    MediaOutput,
)

__all__ = ["CameraMove", "ColorDrift", "PreviewBackend", "choose_camera_move"]

# Bump when the pixels a stage produces change: the identity is part of every cache key.
_STORYBOARD_VERSION = 2
_ANIMATIC_VERSION = 2

_MAX_DEFAULT_CONCURRENCY = 4
# x264 output depends on its thread count (not on timing); pinning it makes a clip's bytes the same
# on any machine with the same ffmpeg build, not just the same core count.
_X264_THREADS = 2
_X264_CRF = 18
_X264_PRESET = "veryfast"
_PROGRESS_EVERY = 10  # frames


class _Cancelled(Exception):
    """Raised inside the render thread when the awaiting task was cancelled."""


_ProgressFn = Callable[[float, str | None], None]
_T = TypeVar("_T")


class PreviewBackend:
    """The in-process CPU backend: storyboard cards and camera-move animatics.

    ``concurrency`` is how many jobs of one stage the pipeline may run at once; by default the CPU
    count capped at 4 (each animate job also runs a 2-thread x264 encoder). ``drift`` (TEST ONLY,
    default ``VIDEOKIT_PREVIEW_DRIFT``) adds a known colour drift to every clip, which compounds
    along a chain like a real model's, so that colour matching can be measured.
    """

    name: str = "preview"

    def __init__(self, *, concurrency: int | None = None, drift: ColorDrift | None = None) -> None:
        if concurrency is None:
            concurrency = min(os.cpu_count() or 1, _MAX_DEFAULT_CONCURRENCY)
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self._concurrency = concurrency
        self.drift = drift if drift is not None else drift_from_env()

    def identity(self, stage: Stage) -> str:
        if stage == "edit":
            return f"preview/storyboard@{_STORYBOARD_VERSION}"
        drift = f"+{self.drift.label}" if self.drift is not None else ""
        return f"preview/animatic@{_ANIMATIC_VERSION}{drift}"

    def identities(self, stage: Stage) -> tuple[str, ...]:
        return (self.identity(stage),)

    def concurrency(self, stage: Stage) -> int:
        return self._concurrency

    def check(
        self, stages: Collection[Stage], *, payload_bytes: Mapping[Stage, int] | None = None
    ) -> None:
        return None  # runs in-process: nothing to configure, no payload limit

    async def warm_up(self, stage: Stage, ctx: JobContext) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def edit(self, request: EditRequest, ctx: JobContext) -> EditResult:
        """Draw the storyboard card: the input, dimmed, captioned with the edit prompt."""
        sources = [_inline_bytes(image, f"images[{i}]") for i, image in enumerate(request.images)]
        ctx.on_status("running")  # in process: no queue, no cold start
        ctx.on_progress(0.0, "drawing storyboard card")
        started = time.perf_counter()
        png, width, height = await _in_thread(
            lambda _cancel, _progress: render_card(request, sources), ctx.on_progress
        )
        elapsed_ms = round((time.perf_counter() - started) * 1000)
        ctx.on_progress(1.0, "storyboard card ready")
        return EditResult(
            image=MediaOutput.inline(png, "image/png"),
            seed=request.seed,
            width=width,
            height=height,
            inference_ms=elapsed_ms,
            model=self.identity("edit"),
        )

    async def animate(self, request: AnimateRequest, ctx: JobContext) -> AnimateResult:
        """Render the camera-move clip: exactly ``request.output_frames`` frames."""
        source = _inline_bytes(request.image, "image")
        ctx.on_status("running")  # in process: no queue, no cold start
        ctx.on_progress(0.0, "rendering animatic")
        started = time.perf_counter()
        video, last_png = await _in_thread(
            lambda cancel, progress: _render_clip(request, source, self.drift, cancel, progress),
            ctx.on_progress,
        )
        elapsed_ms = round((time.perf_counter() - started) * 1000)
        return AnimateResult(
            video=MediaOutput.inline(video, "video/mp4"),
            last_frame=MediaOutput.inline(last_png, "image/png"),
            seed=request.seed,
            frames=request.output_frames,
            fps=request.fps,
            width=request.width,
            height=request.height,
            inference_ms=elapsed_ms,
            model=self.identity("animate"),
        )


# -- threading -------------------------------------------------------------------------------------


async def _in_thread(
    work: Callable[[threading.Event, _ProgressFn], _T], on_progress: _ProgressFn
) -> _T:
    """Run CPU-bound ``work`` in a worker thread so the event loop keeps serving other jobs.

    Progress is handed back to the loop thread (callbacks may touch loop-bound state such as a
    progress display). Cancelling the awaiting task sets ``cancel``; the renderer checks it between
    frames and stops, so an abandoned clip does not keep a core busy.
    """
    loop = asyncio.get_running_loop()
    cancel = threading.Event()

    def progress(fraction: float, message: str | None) -> None:
        # RuntimeError: the loop closed under us, so nobody is listening any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(on_progress, fraction, message)

    try:
        return await asyncio.to_thread(work, cancel, progress)
    except asyncio.CancelledError:
        cancel.set()
        raise


def _inline_bytes(media: MediaInput, field: str) -> bytes:
    if media.base64 is None:
        raise ValueError(
            f"{field}: the preview backend runs in-process and does not download inputs; "
            f"pass the image inline (base64) instead of a URL"
        )
    return media.decode()


# -- rendering: clip -------------------------------------------------------------------------------


def _render_clip(
    request: AnimateRequest,
    source: bytes,
    drift: ColorDrift | None,
    cancel: threading.Event,
    progress: _ProgressFn,
) -> tuple[bytes, bytes]:
    width, height = request.width, request.height
    base = cover_fit(load_rgb(source), width, height)
    clean_png = clean_picture(source)
    clean = cover_fit(load_rgb(clean_png), width, height) if clean_png is not None else None
    move = choose_camera_move(request.seed, request.prompt)
    total = request.frames
    first = 1 if request.drop_first_frame else 0
    count = total - first
    overlay = ClipOverlay(width, height, request.prompt, move, total)

    last_picture = base
    with tempfile.TemporaryDirectory(prefix="videokit-preview-") as tmp:
        path = Path(tmp) / "clip.mp4"
        with RawVideoWriter(
            path,
            width=width,
            height=height,
            fps=request.fps,
            crf=_X264_CRF,
            preset=_X264_PRESET,
            threads=_X264_THREADS,
        ) as writer:
            for index in range(first, total):
                if cancel.is_set():
                    raise _Cancelled
                t = index / (total - 1)
                shown = base if clean is None else _fade_card(base, clean, t)
                if index == 0:
                    picture = shown  # exactly the input, as an image-to-video model starts
                else:
                    box = move.view(t, width, height)
                    picture = shown.resize((width, height), Image.Resampling.BICUBIC, box=box)
                if drift is not None:
                    picture = drift.apply(picture, t)
                last_picture = picture
                writer.write(overlay.apply(picture, index).tobytes())
                done = index - first + 1
                if done % _PROGRESS_EVERY == 0 or done == count:
                    progress(done / count, f"frame {done}/{count}")
        video = path.read_bytes()
    # The last frame goes out WITHOUT the overlays: it is the next scene's input, and a burned-in
    # caption would be animated again there (and stack up, one more caption per chained scene).
    return video, encode_png(last_picture)


def _fade_card(card: Image.Image, clean: Image.Image, t: float) -> Image.Image:
    """The picture at time ``t`` of a clip animating a storyboard card: the card (as the input
    shows it) for the first third, easing into the clean picture by two thirds in."""
    mix = min(1.0, max(0.0, (t - 1 / 3) * 3))
    mix = mix * mix * (3 - 2 * mix)  # smoothstep: no visible start or stop of the fade
    if mix <= 0.0:
        return card
    if mix >= 1.0:
        return clean
    return Image.blend(card, clean, mix)
