"""Frame-exact moviepy clips of videokit's outputs, for compositing them further in Python.

Opened plainly, moviepy gets two things wrong for our clips: it reads a file's duration with two
decimals, so a 49-frame clip at 16 fps (3.0625 s) reads as 3.06 s and loses its last frame; and
every open ``VideoFileClip`` keeps an ffmpeg process alive until it is closed. :func:`open_clip`
sets the duration from the frame count we know and closes the reader when the block ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["open_clip"]


@contextmanager
def open_clip(path: str | Path, *, frames: int, fps: float, audio: bool = True) -> Iterator[Any]:
    """Open ``path`` as a moviepy ``VideoFileClip`` of exactly ``frames`` frames at ``fps``.

    ::

        with open_clip("out/story/final.mp4", frames=179, fps=16) as clip:
            clip.with_effects([...]).write_videofile("titled.mp4", codec="libx264",
                                                     audio_codec="aac")

    When writing, pass ``audio_codec="aac"`` (moviepy's MP4 default is MP3) and, for quality,
    ``ffmpeg_params=["-crf", "18"]``; moviepy converts through RGB, which shifts colours slightly.
    """
    from moviepy import VideoFileClip  # imported on use: moviepy is slow to import

    clip = VideoFileClip(str(path), audio=audio)
    try:
        exact = clip.with_duration(frames / fps)
        if exact.fps != fps:
            exact = exact.with_fps(fps)
        yield exact
    finally:
        clip.close()
