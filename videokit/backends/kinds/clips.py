"""A result made from a clip that an endpoint returned without its last frame.

Such endpoints (RunPod's public Wan, ComfyUI workers) return only the compressed video: the facts
videokit records (size, frame count, fps) are probed from it, and the last frame the next scene
starts from is decoded from it frame-exactly (``last_frame_source="decoded"``).
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from videokit.protocol import AnimateRequest, AnimateResult, MediaOutput

__all__ = ["as_png", "clip_facts", "decoded_clip_result"]


def clip_facts(video: bytes) -> tuple[int, int, int, int, bytes]:
    """(width, height, frames, fps, last frame as PNG), the last frame decoded frame-exactly."""
    from videokit.media.probe import extract_frame, probe_video

    with tempfile.TemporaryDirectory(prefix="videokit-clip-") as folder:
        clip = Path(folder) / "clip.mp4"
        clip.write_bytes(video)
        info = probe_video(clip)
        last = extract_frame(clip, -1, Path(folder) / "last.png").read_bytes()
    return info.width, info.height, info.frames, round(info.fps), last


def as_png(data: bytes) -> tuple[bytes, int, int]:
    """The image as RGB PNG (the cache and the next stage take PNG), and its size."""
    from videokit.media.images import encode_png, load_rgb

    image = load_rgb(data)
    return encode_png(image), image.width, image.height


async def decoded_clip_result(
    request: AnimateRequest,
    video: bytes,
    *,
    model: str | None,
    execution_ms: int | None,
    seed: int | None = None,
) -> AnimateResult:
    """The result of a job that returned only ``video`` (probed and decoded off the loop)."""
    width, height, frames, fps, last = await asyncio.to_thread(clip_facts, video)
    return AnimateResult(
        video=MediaOutput.inline(video, "video/mp4"),
        last_frame=MediaOutput.inline(last, "image/png"),
        last_frame_source="decoded",
        seed=request.seed if seed is None else seed,
        frames=frames,
        fps=fps,
        width=width,
        height=height,
        inference_ms=execution_ms or 0,
        model=model,
    )
