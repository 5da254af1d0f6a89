"""Colour-match a whole clip, or a still frame, to an anchor with :class:`ColorTransfer`.

A clip is streamed: one ffmpeg decoder writes raw RGB frames to a pipe, each frame is corrected
in place, and one x264 encoder reads them from another pipe, so memory holds three frames
whatever the clip's length. Reading the next frame and encoding the previous one run on two
threads while the current one is corrected (pipes and numpy both release the GIL), which keeps
both cores busy. The clip keeps its frame count, size, frame rate, colour tags (the decoder and
the encoder use the same YUV matrix, so an unchanged frame comes back unchanged) and audio track.
"""

from __future__ import annotations

import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from videokit.errors import FFmpegError
from videokit.media.color import ColorTransfer
from videokit.media.ffmpeg import RawVideoReader, RawVideoWriter
from videokit.media.images import decode_png_array, encode_png
from videokit.media.probe import probe_video

__all__ = ["MatchedClip", "match_clip", "match_png"]

# The encoder of corrected clips: quality a little above the models' own output (so a correction
# costs no visible generation), and pinned threads, since x264's output depends on its thread
# count: the same clip then gives the same bytes on any machine.
CLIP_CRF = 16
CLIP_PRESET = "veryfast"
CLIP_THREADS = 2
_BUFFERS = 3  # one being read, one being corrected, one being encoded


@dataclass(frozen=True)
class MatchedClip:
    """What :func:`match_clip` wrote."""

    path: Path
    frames: int
    width: int
    height: int
    fps: float
    seconds: float


def match_clip(
    source: Path,
    target: Path,
    transfer: ColorTransfer,
    *,
    crf: int = CLIP_CRF,
    preset: str = CLIP_PRESET,
    threads: int = CLIP_THREADS,
) -> MatchedClip:
    """Write ``source`` with every frame colour-matched by ``transfer`` to ``target``.

    With ``transfer.strength`` 0 the clip is copied as it is (no generation lost to a re-encode).
    Raises :class:`~videokit.errors.FFmpegError` when the clip cannot be decoded or encoded, or
    the encoder took another number of frames than the decoder gave.
    """
    started = time.perf_counter()
    source, target = Path(source), Path(target)
    info = probe_video(source)
    if transfer.strength == 0.0:
        shutil.copyfile(source, target)
        return MatchedClip(
            target, info.frames, info.width, info.height, info.fps, time.perf_counter() - started
        )
    audio = (["-i", str(source)], ["-map", "1:a:0", "-c:a", "copy"]) if info.has_audio else ([], [])
    shape = (info.height, info.width, 3)
    buffers = [np.empty(shape, np.uint8) for _ in range(_BUFFERS)]
    with (
        RawVideoReader(
            ["-i", str(source)],
            width=info.width,
            height=info.height,
            what=f"decoding {source.name} for colour matching",
        ) as reader,
        RawVideoWriter(
            target,
            width=info.width,
            height=info.height,
            fps=info.fps,
            crf=crf,
            preset=preset,
            threads=threads,
            color=info.color,
            extra_input=audio[0],
            extra_output=audio[1],
        ) as writer,
        ThreadPoolExecutor(max_workers=2, thread_name_prefix="videokit-color") as pool,
    ):
        frames = 0
        reading: Future[int] = pool.submit(reader.readinto, buffers[0])
        writing: Future[None] | None = None
        while reading.result():
            frame = buffers[frames % _BUFFERS]
            # The buffer read next was last encoded two frames ago: that write has finished.
            reading = pool.submit(reader.readinto, buffers[(frames + 1) % _BUFFERS])
            transfer.apply(frame, out=frame)
            if writing is not None:
                writing.result()
            writing = pool.submit(writer.write, frame)
            frames += 1
        if writing is not None:
            writing.result()
    if frames != info.frames:
        raise FFmpegError(
            f"colour matching {source.name}: decoded {frames} frames, the clip has {info.frames}"
        )
    return MatchedClip(
        target, frames, info.width, info.height, info.fps, time.perf_counter() - started
    )


def match_png(png: bytes, transfer: ColorTransfer) -> bytes:
    """A PNG frame colour-matched by ``transfer`` (the same bytes when its strength is 0)."""
    if transfer.strength == 0.0:
        return png
    frame = decode_png_array(png)
    return encode_png(transfer.apply(frame, out=frame))
