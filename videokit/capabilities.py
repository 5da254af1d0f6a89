"""What an endpoint can render, declared by its API kind and checked before anything is paid.

``validate`` and ``plan`` hold a story against these: a size, clip length, frame rate or number of
edit images an endpoint cannot do is refused with the nearest thing it can do as the hint, and a
clip length given in seconds is adapted where the endpoint renders whole seconds. ``None`` in a
field means "anything the wire protocol allows" (videokit's own workers and ``videokit serve``).
A stage that lists several endpoints (a route) must fit all of them: :func:`intersect` merges
their capabilities into the one the story is held against.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

__all__ = [
    "AnimateCapabilities",
    "Capabilities",
    "EditCapabilities",
    "format_size",
    "intersect_animate",
    "intersect_edit",
]


def format_size(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def _nearest_size(sizes: tuple[tuple[int, int], ...], width: int, height: int) -> tuple[int, int]:
    """The size closest in aspect ratio, then in pixel count."""
    aspect = width / height

    def distance(size: tuple[int, int]) -> tuple[float, float]:
        return (abs(size[0] / size[1] - aspect), abs(size[0] * size[1] - width * height))

    return min(sizes, key=distance)


def _nearest_in(value: int, low: int, high: int, multiple: int) -> int:
    """The multiple of ``multiple`` in [low, high] nearest ``value`` (ties go up)."""
    first = math.ceil(low / multiple) * multiple
    last = (high // multiple) * multiple
    near = math.floor(value / multiple + 0.5) * multiple
    return max(first, min(last, near))


def _overlap(
    a: tuple[float, float] | None, b: tuple[float, float] | None
) -> tuple[float, float] | None:
    if a is None or b is None:
        return a or b
    return (max(a[0], b[0]), min(a[1], b[1]))


@dataclass(frozen=True)
class AnimateCapabilities:
    """An image-to-video endpoint.

    ``seconds``: it renders whole-second clips in this range, at ``fps``, so a clip has
    ``fps * seconds + 1`` frames (Wan's frame count for ``seconds``). Otherwise ``frame_range`` and
    ``frame_step`` bound the frame count (``frame_step * n + 1``), ``side_range`` and
    ``side_multiple`` the width and height, and ``fps_range`` the frame rate.
    """

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
    side_range: tuple[int, int] | None = None
    side_multiple: int = 1
    frame_range: tuple[int, int] | None = None
    frame_step: int = 4
    fps_range: tuple[int, int] | None = None
    #: Takes a soundtrack (``audio:`` of a scene) that drives the motion.
    audio: bool = False
    #: Takes steps and guidance at all (False: it runs its own, and ignores ours).
    sampler_settings: bool = True
    #: The longest motion prompt it takes, in characters.
    prompt_chars: int | None = None

    def frame_counts(self) -> tuple[int, ...] | None:
        """The whole-second clip lengths, for an endpoint that renders whole seconds."""
        if self.seconds is None or self.fps is None:
            return None
        low, high = self.seconds
        return tuple(self.fps * s + 1 for s in range(low, high + 1))

    def frames_for_seconds(self, seconds: int) -> int:
        assert self.fps is not None
        return self.fps * seconds + 1

    def takes_frames(self, frames: int) -> bool:
        counts = self.frame_counts()
        if counts is not None:
            return frames in counts
        if (frames - 1) % self.frame_step:
            return False
        low, high = self.frame_range or (1, frames)
        return low <= frames <= high

    def nearest_frames(self, frames: int) -> int:
        counts = self.frame_counts()
        if counts is not None:
            return min(counts, key=lambda c: (abs(c - frames), c))
        low, high = self.frame_range or (1, max(frames, 1 + self.frame_step))
        return 1 + _nearest_in(frames - 1, low - 1, high - 1, self.frame_step)

    def takes_fps(self, fps: int) -> bool:
        if self.fps is not None and fps != self.fps:
            return False
        return self.fps_range is None or self.fps_range[0] <= fps <= self.fps_range[1]

    def nearest_fps(self, fps: int) -> int:
        if self.fps is not None:
            return self.fps
        assert self.fps_range is not None
        return max(self.fps_range[0], min(self.fps_range[1], fps))

    def takes_size(self, width: int, height: int) -> bool:
        if self.sizes is not None:
            return (width, height) in self.sizes
        low, high = self.side_range or (1, max(width, height))
        return all(
            low <= side <= high and side % self.side_multiple == 0 for side in (width, height)
        )

    def nearest_size(self, width: int, height: int) -> tuple[int, int]:
        if self.sizes == ():
            return (width, height)  # nothing fits every endpoint: no size to suggest
        if self.sizes is not None:
            return _nearest_size(self.sizes, width, height)
        low, high = self.side_range or (1, max(width, height, self.side_multiple))
        fitted = [_nearest_in(side, low, high, self.side_multiple) for side in (width, height)]
        return fitted[0], fitted[1]

    def describe_sizes(self) -> str:
        if self.sizes == ():
            return "no size that all of them render (drop one from the route)"
        if self.sizes is not None:
            return " or ".join(format_size(size) for size in self.sizes)
        parts = []
        if self.side_range is not None:
            parts.append(f"sides of {self.side_range[0]}-{self.side_range[1]} px")
        if self.side_multiple > 1:
            parts.append(f"multiples of {self.side_multiple}")
        return ", ".join(parts) or "any size"

    def describe_lengths(self) -> str:
        """E.g. ``5-15 whole seconds at 16 fps (81-241 frames)`` or ``9-121 frames (8n+1)``."""
        counts = self.frame_counts()
        if counts is not None and self.seconds is not None:
            low, high = self.seconds
            return f"{low}-{high} whole seconds at {self.fps} fps ({counts[0]}-{counts[-1]} frames)"
        rule = f"{self.frame_step}n+1"
        if self.frame_range is None:
            return f"any {rule} frame count"
        return f"{self.frame_range[0]}-{self.frame_range[1]} frames ({rule})"


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


def _names(names: Sequence[str]) -> str:
    return " and ".join(dict.fromkeys(names))


def intersect_animate(
    route: Sequence[AnimateCapabilities | None],
) -> AnimateCapabilities | None:
    """What every endpoint of a route can render (None: all take anything the protocol does).

    Endpoints without declared capabilities constrain nothing; the merged one is named after the
    endpoints that do. An empty intersection (two fixed frame rates that differ, sizes in common
    with none) stays visible: ``takes_*`` then refuses everything, naming all of them.
    """
    declared = [caps for caps in route if caps is not None]
    if len(declared) <= 1:
        return declared[0] if declared else None
    merged = declared[0]
    for other in declared[1:]:
        sizes = merged.sizes
        if other.sizes is not None:
            sizes = tuple(
                s for s in (sizes or other.sizes) if other.takes_size(*s) and merged.takes_size(*s)
            )
        fps = merged.fps if merged.fps is not None else other.fps
        fps_range = _int_range(_overlap(merged.fps_range, other.fps_range))
        if merged.fps is not None and other.fps is not None and merged.fps != other.fps:
            # No frame rate suits both: every fps is refused, the message names both endpoints.
            fps_range = (other.fps, other.fps)
        seconds = _overlap(merged.seconds, other.seconds)
        merged = replace(
            merged,
            endpoint=_names([merged.endpoint, other.endpoint]),
            sizes=sizes,
            fps=fps,
            seconds=(int(seconds[0]), int(seconds[1])) if seconds is not None else None,
            steps=_int_range(_overlap(merged.steps, other.steps)),
            guidance=_overlap(merged.guidance, other.guidance),
            second_guidance=merged.second_guidance and other.second_guidance,
            negative_prompt=merged.negative_prompt and other.negative_prompt,
            returns_last_frame=merged.returns_last_frame and other.returns_last_frame,
            side_range=_int_range(_overlap(merged.side_range, other.side_range)),
            side_multiple=math.lcm(merged.side_multiple, other.side_multiple),
            frame_range=_int_range(_overlap(merged.frame_range, other.frame_range)),
            frame_step=math.lcm(merged.frame_step, other.frame_step),
            fps_range=fps_range,
            audio=merged.audio and other.audio,
            sampler_settings=merged.sampler_settings and other.sampler_settings,
            prompt_chars=min(
                (n for n in (merged.prompt_chars, other.prompt_chars) if n is not None),
                default=None,
            ),
        )
    return merged


def _int_range(bounds: tuple[float, float] | None) -> tuple[int, int] | None:
    return (int(bounds[0]), int(bounds[1])) if bounds is not None else None


def intersect_edit(route: Sequence[EditCapabilities | None]) -> EditCapabilities | None:
    """What every edit endpoint of a route can do (see :func:`intersect_animate`)."""
    declared = [caps for caps in route if caps is not None]
    if len(declared) <= 1:
        return declared[0] if declared else None
    merged = declared[0]
    for other in declared[1:]:
        merged = replace(
            merged,
            endpoint=_names([merged.endpoint, other.endpoint]),
            # Output sizes differ between endpoints; the first choice's is what the plan shows.
            max_images=min(merged.max_images, other.max_images),
            negative_prompt=merged.negative_prompt and other.negative_prompt,
            steps=merged.steps and other.steps,
        )
    return merged


@dataclass(frozen=True)
class Capabilities:
    """Both stages of one backend; ``inputs_by_url``: images travel as URLs (S3/R2 storage is
    needed), never inline."""

    edit: EditCapabilities | None = None
    animate: AnimateCapabilities | None = None
    inputs_by_url: bool = False
