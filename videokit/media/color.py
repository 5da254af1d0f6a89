"""Colour in CIE L*a*b*: conversions, statistics, ΔE, and Reinhard colour transfer per frame.

An image-to-video model shifts colour and brightness a little in every clip; chaining each clip's
last frame into the next scene compounds the shift. :class:`ColorTransfer` pulls a frame back
towards an anchor picture with the colour transfer of Reinhard et al. (2001, "Color Transfer
between Images"): each Lab channel is shifted and scaled so that its mean and standard deviation
become the anchor's, blended with the original by ``strength``. Lab (sRGB, D65 white, the IEC
61966-2-1 transfer curve; CIE 15 formulas) is used rather than Reinhard's lαβ: it is the space
ΔE is measured in, and its L separates brightness from colour just as well.

:func:`srgb_to_lab` and :func:`lab_to_srgb` are the plain float64 formulas (for measurement and
tests); :class:`ColorTransfer` computes the same thing in float32 with lookup tables for the two
transfer curves, branch-free piecewise functions and cache-sized row blocks, so a 832×480 frame
costs a few milliseconds and memory holds one frame whatever the clip length.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "ColorTransfer",
    "LabStats",
    "cast_delta_e",
    "delta_e",
    "lab_stats",
    "lab_to_srgb",
    "srgb_to_lab",
]

Image = npt.NDArray[np.uint8]
Floats = npt.NDArray[np.floating]

# sRGB primaries to CIE XYZ (IEC 61966-2-1), and the D65 white as the sum of each row, so that
# sRGB white is exactly L* = 100, a* = b* = 0.
_RGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
_WHITE = _RGB_TO_XYZ.sum(axis=1)
# XYZ relative to the white point: the matrices the Lab formulas use.
_RGB_TO_XYZN = _RGB_TO_XYZ / _WHITE[:, None]
_XYZN_TO_RGB = np.linalg.inv(_RGB_TO_XYZN)
# CIE's f(t): a cube root above (6/29)^3, a straight line (its tangent there) below.
_DELTA = 6 / 29
_EPSILON = _DELTA**3
_SLOPE = 1 / (3 * _DELTA**2)
_OFFSET = 4 / 29
# Entries of the linear light -> 8-bit sRGB table: bins of 1/65536 are under 0.05 of a code value
# wide even where the curve is steepest, near black.
_TABLE = 65536
# Pixels per block of work: its dozen float32 planes (~1 MiB) stay in the L2 cache, and OpenBLAS
# multiplies 3x3 by 3x16384 on one thread (larger products start threads, which only contend with
# the decoder and the encoder for the same cores).
_BLOCK_PIXELS = 1 << 14


def _decode_curve(encoded: Floats) -> Floats:
    """sRGB-encoded values in [0, 1] to linear light."""
    return np.where(
        encoded <= 0.04045, encoded / 12.92, ((np.maximum(encoded, 0.04045) + 0.055) / 1.055) ** 2.4
    )


def _encode_curve(linear: Floats) -> Floats:
    """Linear light in [0, 1] to sRGB-encoded values."""
    return np.where(
        linear <= 0.0031308,
        linear * 12.92,
        1.055 * np.maximum(linear, 0.0031308) ** (1 / 2.4) - 0.055,
    )


def _f(t: Floats) -> Floats:
    return np.where(t > _EPSILON, np.cbrt(t), t * _SLOPE + _OFFSET)


def _f_inverse(f: Floats) -> Floats:
    return np.where(f > _DELTA, f**3, (f - _OFFSET) / _SLOPE)


def srgb_to_lab(image: Image) -> npt.NDArray[np.float64]:
    """An H×W×3 (or N×3) uint8 sRGB image as CIE L*a*b* (D65), float64, same shape."""
    linear = _decode_curve(np.asarray(image, dtype=np.float64) / 255.0)
    fx, fy, fz = np.moveaxis(_f(linear @ _RGB_TO_XYZN.T), -1, 0)
    return np.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], axis=-1)


def lab_to_srgb(lab: Floats) -> Image:
    """CIE L*a*b* (D65) back to uint8 sRGB, clipped to the gamut and rounded."""
    lab = np.asarray(lab, dtype=np.float64)
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], axis=-1)
    linear = np.clip(_f_inverse(f) @ _XYZN_TO_RGB.T, 0.0, 1.0)
    return np.round(_encode_curve(linear) * 255).astype(np.uint8)


@dataclass(frozen=True)
class LabStats:
    """Mean and standard deviation of each Lab channel of a picture (L*, a*, b*)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def lab_stats(image: Image) -> LabStats:
    """The Lab statistics of an H×W×3 uint8 sRGB image (exact, float64)."""
    lab = srgb_to_lab(image).reshape(-1, 3)
    mean, std = lab.mean(axis=0), lab.std(axis=0)
    return LabStats(
        (float(mean[0]), float(mean[1]), float(mean[2])),
        (float(std[0]), float(std[1]), float(std[2])),
    )


def delta_e(a: Image, b: Image) -> float:
    """Mean CIE76 ΔE (Euclidean distance in Lab) between two images of the same size, pixel by
    pixel. About 2.3 is a just noticeable difference; 0 for identical images."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"ΔE needs images of one size, got {a.shape} and {b.shape}")
    return float(np.sqrt(((srgb_to_lab(a) - srgb_to_lab(b)) ** 2).sum(axis=-1)).mean())


def cast_delta_e(a: Image, b: Image) -> float:
    """CIE76 ΔE between the mean Lab colours of two images: how far apart their overall colour
    cast and brightness are, whatever their content and alignment (sizes may differ)."""
    return float(np.linalg.norm(np.subtract(lab_stats(a).mean, lab_stats(b).mean)))


class ColorTransfer:
    """Reinhard colour transfer of frames onto one anchor's Lab statistics.

    Build it once per anchor (its statistics are computed here, once) and call :meth:`apply` on
    every frame: each frame's own Lab mean and standard deviation are mapped onto the anchor's,
    per channel, and the result is blended with the frame by ``strength`` (0 leaves frames
    untouched, 1 is the full transfer). A channel's gain is held within [1/4, 4], so a nearly
    flat frame (a fade to black) is not blown up into noise. Frames may be any size; one frame's
    worth of float32 working space is kept between calls.
    """

    def __init__(self, anchor: LabStats | Image, strength: float = 1.0) -> None:
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be between 0 and 1, got {strength}")
        self.anchor = anchor if isinstance(anchor, LabStats) else lab_stats(anchor)
        self.strength = strength
        self._decode = _decode_curve(np.arange(256) / 255.0).astype(np.float32)
        # Entry i covers linear light [i, i + 1) / 65536, so truncating v * 65536 rounds.
        centres = (np.arange(_TABLE) + 0.5) / _TABLE
        self._encode = np.round(_encode_curve(centres) * 255).astype(np.uint8)
        self._to_xyz = _RGB_TO_XYZN.astype(np.float32)
        self._to_table = (_XYZN_TO_RGB * _TABLE).astype(np.float32)
        self._f = np.empty((3, 0), np.float32)
        self._work = np.empty((3, 3, _BLOCK_PIXELS), np.float32)
        self._rgb = np.empty((_BLOCK_PIXELS, 3), np.float32)
        self._index = np.empty((_BLOCK_PIXELS, 3), np.uint16)

    def apply(self, frame: Image, out: Image | None = None) -> Image:
        """``frame`` (H×W×3 uint8 sRGB) matched to the anchor; into ``out`` if given (which may
        be ``frame`` itself)."""
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"expected an H×W×3 uint8 frame, got {frame.shape} {frame.dtype}")
        if out is None:
            out = np.empty_like(frame)
        elif out.shape != frame.shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous uint8 array of shape {frame.shape}")
        if self.strength == 0.0:
            np.copyto(out, frame)
            return out
        pixels = np.ascontiguousarray(frame).reshape(-1, 3)
        if self._f.shape[1] < len(pixels):
            self._f = np.empty((3, len(pixels)), np.float32)
        f = self._f[:, : len(pixels)]
        matrix, shift = self._transform(self._forward(pixels, f))
        self._backward(f, matrix, shift, out.reshape(-1, 3))
        return out

    def _forward(self, pixels: Image, f: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """Fill ``f`` with CIE f(X/Xn), f(Y/Yn), f(Z/Zn) of every pixel; return the mean and
        standard deviation of the planes (fx - fy, fy, fz - fy), which are a*, L*, b* scaled."""
        sums = np.zeros((2, 3), np.float64)
        pivot: npt.NDArray[np.float32] | None = None
        for start in range(0, len(pixels), _BLOCK_PIXELS):
            block = pixels[start : start + _BLOCK_PIXELS]
            n = len(block)
            linear, planes = self._work[0, :, :n], self._work[1, :, :n]
            fb = f[:, start : start + n]
            # mode="clip": uint8 indices cannot be out of range; skipping the check halves the cost.
            np.take(self._decode, block.T, out=linear, mode="clip")
            np.matmul(self._to_xyz, linear, out=fb)
            _f_inplace(fb, self._work[2, :, :n])
            np.matmul(_F_TO_PLANES, fb, out=planes)
            if pivot is None:  # sums about a value near the mean: no cancellation in float32
                pivot = planes.mean(axis=1, keepdims=True)
            planes -= pivot
            # einsum, not BLAS dot products: OpenBLAS would start threads for rows this long,
            # which only contend with the ffmpeg processes for the same cores.
            sums[0] += np.einsum("ij->i", planes)
            sums[1] += np.einsum("ij,ij->i", planes, planes)
        assert pivot is not None
        offset = sums[0] / len(pixels)
        var = np.maximum(sums[1] / len(pixels) - offset**2, 0.0)
        return np.stack([offset + pivot[:, 0], np.sqrt(var)])

    def _transform(
        self, stats: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """The affine map of f values, f' = M f + c, that carries the frame to the anchor."""
        # Plane k is Lab channel _PLANE_CHANNEL[k] as value = _PLANE_SCALE * plane + _PLANE_SHIFT.
        anchor_mean = np.array(self.anchor.mean)[_PLANE_CHANNEL]
        anchor_std = np.array(self.anchor.std)[_PLANE_CHANNEL]
        mean = stats[0] * _PLANE_SCALE + _PLANE_SHIFT
        std = stats[1] * np.abs(_PLANE_SCALE)
        ratio = np.clip(anchor_std / np.maximum(std, 1e-9), _MIN_GAIN, _MAX_GAIN)
        ratio = np.where(std > 1e-6, ratio, 1.0)  # a flat channel only moves
        # Reinhard: t = (v - mean) ratio + anchor_mean; blended, v' = v + s (t - v), which is
        # v' = gain v + offset:
        s = self.strength
        gain = 1 + s * (ratio - 1)
        offset = s * (anchor_mean - mean * ratio)
        # The same map on a plane p (v = scale p + shift): p' = gain p + plane_offset.
        plane_offset = (offset + (gain - 1) * _PLANE_SHIFT) / _PLANE_SCALE
        matrix = _PLANES_TO_F @ np.diag(gain) @ _F_TO_PLANES
        return matrix.astype(np.float32), (_PLANES_TO_F @ plane_offset).astype(np.float32)

    def _backward(
        self,
        f: npt.NDArray[np.float32],
        matrix: npt.NDArray[np.float32],
        shift: npt.NDArray[np.float32],
        out: Image,
    ) -> None:
        shift = shift[:, None]
        for start in range(0, f.shape[1], _BLOCK_PIXELS):
            n = min(_BLOCK_PIXELS, f.shape[1] - start)
            moved = self._work[0, :, :n]
            np.matmul(matrix, f[:, start : start + n], out=moved)
            moved += shift
            _f_inverse_inplace(moved, self._work[1, :, :n], self._work[2, :, :n])
            # Straight into pixel order (H×W×3), as table indices: linear light × 65536.
            rgb, index = self._rgb[:n], self._index[:n]
            np.matmul(self._to_table, moved, out=rgb.T)
            np.clip(rgb, 0.0, _TABLE - 1, out=rgb)  # clipping to [0, 1]: to the gamut
            np.copyto(index, rgb, casting="unsafe")
            np.take(self._encode, index, out=out[start : start + n], mode="clip")


# f -> planes (fx - fy, fy, fz - fy) and back; plane k is a*, L*, b* as scale * plane + shift.
_F_TO_PLANES = np.array([[1.0, -1.0, 0.0], [0.0, 1.0, 0.0], [0.0, -1.0, 1.0]], np.float32)
_PLANES_TO_F = np.linalg.inv(_F_TO_PLANES.astype(np.float64))
_PLANE_CHANNEL = [1, 0, 2]
_PLANE_SCALE = np.array([500.0, 116.0, -200.0])
_PLANE_SHIFT = np.array([0.0, -16.0, 0.0])
_MIN_GAIN, _MAX_GAIN = 0.25, 4.0


def _f_inplace(t: npt.NDArray[np.float32], tmp: npt.NDArray[np.float32]) -> None:
    """CIE f(t) in place, without a branch: cbrt(max(t, ε)) + slope · min(t - ε, 0).

    Below ε that is cbrt(ε) + slope · (t - ε): the straight line, which meets the cube root at ε
    with the same value and slope. A block with nothing below ε needs only the cube root."""
    if t.min() > _EPSILON:
        np.cbrt(t, out=t)
        return
    np.subtract(t, _EPSILON, out=tmp)
    np.minimum(tmp, 0.0, out=tmp)
    tmp *= _SLOPE
    np.maximum(t, _EPSILON, out=t)
    np.cbrt(t, out=t)
    t += tmp


def _f_inverse_inplace(
    f: npt.NDArray[np.float32], tmp: npt.NDArray[np.float32], square: npt.NDArray[np.float32]
) -> None:
    """The inverse of f in place: max(f, δ)³ + min(f - δ, 0) / slope (see :func:`_f_inplace`)."""
    if f.min() > _DELTA:
        np.multiply(f, f, out=square)
        f *= square
        return
    np.subtract(f, _DELTA, out=tmp)
    np.minimum(tmp, 0.0, out=tmp)
    tmp *= 1 / _SLOPE
    np.maximum(f, _DELTA, out=f)
    np.multiply(f, f, out=square)
    f *= square
    f += tmp
