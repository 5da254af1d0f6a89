"""Memory admission: refuse, before any GPU work, a job that cannot fit on this card.

A job needs the resident weights, the transformer's activations (linear in latent tokens with
SDPA-style attention; twice with CFG), the VAE's decode (linear in pixels per chunk, bounded by
the tile with tiling) and an overhead measured by the warm-up step. The per-token and per-pixel
costs come from each model's configs (:meth:`MemoryModel.estimate`); they are estimates until
``benchmarks/gpu_worker.py`` measures a card. A refused job is non-transient and names the
largest size that fits; an OOM at an admitted size stays transient (the client retries it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from videokit.worker.errors import JobTooLargeError

__all__ = ["GIB", "JobSize", "MemoryModel", "module_bytes"]

GIB = 2**30


@dataclass(frozen=True)
class JobSize:
    """What a job's memory depends on."""

    width: int
    height: int
    frames: int  # 1 for an image
    cfg: bool  # a second (unconditional) batch through the transformer
    extra_tokens: int = 0  # conditioning tokens beside the output's (Qwen's input images)

    def label(self) -> str:
        base = f"{self.width}x{self.height}"
        return base if self.frames == 1 else f"{base}, {self.frames} frames"


@dataclass
class MemoryModel:
    """The memory plan of one loaded engine (bytes throughout).

    ``capacity``: what jobs may plan on. ``resident``: weights on the device after load.
    ``swappable``: resident bytes a job can move off the device (Wan's text encoder).
    ``tokens``: latent tokens of a size. ``per_token``: activation bytes per token and batch.
    ``per_pixel``: VAE bytes per output pixel (untiled); ``tile_pixels``: the pixels one tile
    covers, the cap with tiling on. ``overhead``: what the warm-up step measured on top.
    """

    capacity: int
    resident: int
    tokens: Callable[[JobSize], int]
    per_token: int
    per_pixel: int
    tile_pixels: int
    swappable: int = 0
    overhead: int = 0
    device_name: str = "this device"

    def need(self, size: JobSize, *, tiled: bool, swapped: bool = False) -> int:
        """Peak bytes of a job of ``size``: the larger of its denoising and its decode."""
        base = self.resident + self.overhead - (self.swappable if swapped else 0)
        activations = self.tokens(size) * self.per_token * (2 if size.cfg else 1)
        pixels = size.width * size.height
        decode = self.per_pixel * (min(pixels, self.tile_pixels) if tiled else pixels)
        frames_out = size.frames * pixels * 3 * 4 * 2  # the float video and its uint8 copy
        return base + max(activations, decode + frames_out)

    def fits(self, size: JobSize, *, tiled: bool, swapped: bool = False) -> bool:
        return self.need(size, tiled=tiled, swapped=swapped) <= self.capacity

    def admit(
        self,
        size: JobSize,
        *,
        tiled: Callable[[JobSize], bool],
        can_swap: bool,
        multiple: int,
        frame_counts: Iterable[int] = (),
    ) -> bool:
        """Whether ``size`` fits (True: only with the swappable weights off the device), or
        :class:`JobTooLargeError` with the largest size at its aspect ratio, and the most
        ``frame_counts`` at its size, that would."""
        if self.fits(size, tiled=tiled(size)):
            return False
        if can_swap and self.fits(size, tiled=tiled(size), swapped=True):
            return True

        def fits(candidate: JobSize) -> bool:
            return self.fits(candidate, tiled=tiled(candidate), swapped=can_swap)

        suggestions = []
        smaller = _largest_scaled(size, multiple, fits)
        if smaller is not None:
            suggestions.append(smaller.label())
        counts = [f for f in frame_counts if f < size.frames]
        shorter = next(
            (f for f in sorted(counts, reverse=True) if fits(_with_frames(size, f))), None
        )
        if shorter is not None:
            suggestions.append(f"{size.width}x{size.height} at {shorter} frames")
        needed = self.need(size, tiled=tiled(size), swapped=can_swap)
        raise JobTooLargeError(
            f"{size.label()} needs about {needed / GIB:.1f} GiB of GPU memory, and this worker "
            f"plans on {self.capacity / GIB:.1f} GiB ({self.device_name}, "
            f"{self.resident / GIB:.1f} GiB of it weights)",
            hint=(
                "the largest that fits: " + " or ".join(suggestions)
                if suggestions
                else "nothing this size fits; use a GPU with more memory"
            ),
        )


def _with_frames(size: JobSize, frames: int) -> JobSize:
    return JobSize(size.width, size.height, frames, size.cfg, size.extra_tokens)


def _largest_scaled(
    size: JobSize, multiple: int, fits: Callable[[JobSize], bool]
) -> JobSize | None:
    """The largest size at (about) ``size``'s aspect ratio, sides multiples of ``multiple``."""
    ratio = size.height / size.width
    width = size.width - size.width % multiple
    while width >= multiple:
        height = max(multiple, round(width * ratio / multiple) * multiple)
        candidate = JobSize(width, height, size.frames, size.cfg, size.extra_tokens)
        if candidate != size and fits(candidate):
            return candidate
        width -= multiple
    return None


def module_bytes(modules: Iterable[object]) -> int:
    """The bytes of every parameter and buffer of ``modules`` (torch modules, None skipped)."""
    total = 0
    for module in modules:
        if module is None:
            continue
        for tensor in (*module.parameters(), *module.buffers()):  # type: ignore[attr-defined]
            total += tensor.numel() * tensor.element_size()
    return total
