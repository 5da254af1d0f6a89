"""What an endpoint can render, declared by its API kind and checked before anything is paid.

``validate`` and ``plan`` hold a story against these: a size, clip length, frame rate or number of
edit images an endpoint cannot do is refused with the nearest thing it can do as the hint, and a
clip length given in seconds is adapted where the endpoint renders whole seconds. ``None`` in a
field means "anything the wire protocol allows" (videokit's own workers and ``videokit serve``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AnimateCapabilities", "Capabilities", "EditCapabilities", "format_size"]


def format_size(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def _nearest_size(sizes: tuple[tuple[int, int], ...], width: int, height: int) -> tuple[int, int]:
    """The size closest in aspect ratio, then in pixel count."""
    aspect = width / height

    def distance(size: tuple[int, int]) -> tuple[float, float]:
        return (abs(size[0] / size[1] - aspect), abs(size[0] * size[1] - width * height))

    return min(sizes, key=distance)


@dataclass(frozen=True)
class AnimateCapabilities:
    """An image-to-video endpoint. ``seconds``: it renders whole-second clips in this range, at
    ``fps``, so a clip has ``fps * seconds + 1`` frames (Wan's frame count for ``seconds``)."""

    endpoint: str
    sizes: tuple[tuple[int, int], ...] | None = None
    fps: int | None = None
    seconds: tuple[int, int] | None = None
    steps: tuple[int, int] | None = None
    guidance: tuple[float, float] | None = None
    #: Takes a second guidance scale (Wan 2.2's low-noise expert).
    second_guidance: bool = True
    negative_prompt: bool = True
    #: Returns the clip's last frame itself; otherwise it is decoded from the compressed clip.
    returns_last_frame: bool = True

    def frame_counts(self) -> tuple[int, ...] | None:
        if self.seconds is None or self.fps is None:
            return None
        low, high = self.seconds
        return tuple(self.fps * s + 1 for s in range(low, high + 1))

    def frames_for_seconds(self, seconds: int) -> int:
        assert self.fps is not None
        return self.fps * seconds + 1

    def nearest_frames(self, frames: int) -> int:
        counts = self.frame_counts()
        return frames if counts is None else min(counts, key=lambda c: (abs(c - frames), c))

    def nearest_size(self, width: int, height: int) -> tuple[int, int]:
        return (width, height) if self.sizes is None else _nearest_size(self.sizes, width, height)

    def describe_lengths(self) -> str:
        """E.g. ``5-15 whole seconds at 16 fps (81-241 frames)``."""
        counts = self.frame_counts()
        if counts is None or self.seconds is None:
            return "any 4k+1 frame count"
        low, high = self.seconds
        return f"{low}-{high} whole seconds at {self.fps} fps ({counts[0]}-{counts[-1]} frames)"


@dataclass(frozen=True)
class EditCapabilities:
    """An image-edit endpoint. ``sizes``: the output sizes it can make (videokit picks the one
    nearest the frame's aspect ratio); ``keeps_input_size``: it has no size parameter."""

    endpoint: str
    sizes: tuple[tuple[int, int], ...] | None = None
    keeps_input_size: bool = False
    max_images: int = 3
    negative_prompt: bool = True
    #: Takes steps and a true-CFG scale.
    steps: bool = True

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """The size an edit of a ``width`` x ``height`` frame comes back at."""
        if self.keeps_input_size or self.sizes is None:
            return (width, height)
        return _nearest_size(self.sizes, width, height)


@dataclass(frozen=True)
class Capabilities:
    """Both stages of one backend; ``inputs_by_url``: images travel as URLs (S3/R2 storage is
    needed), never inline."""

    edit: EditCapabilities | None = None
    animate: AnimateCapabilities | None = None
    inputs_by_url: bool = False
