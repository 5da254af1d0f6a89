"""The preview animatic's camera moves: an eased push-in, pan or tilt over the input picture.

A motion prompt that names a camera direction gets that move, so the preview moves the way the
user asked; otherwise the move is picked from the seed. Zoom-outs are absent on purpose: frame 0
shows the whole input, and a zoom-out would need pixels from outside it that nobody has.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass

__all__ = ["CameraMove", "choose_camera_move"]


@dataclass(frozen=True)
class CameraMove:
    """A push-in toward an anchor point, which reads as a pan or tilt when the anchor is an edge.

    ``zoom`` is how much the picture is magnified by the end (0.08 = 8 %). ``anchor`` says where
    the final view sits within the room left by zooming: (0.5, 0.5) is centred, (1.0, 0.5) hugs the
    right edge (a pan right), (0.5, 0.0) the top edge (a tilt up).
    """

    kind: str
    zoom: float
    anchor: tuple[float, float]

    def view(self, t: float, width: int, height: int) -> tuple[float, float, float, float]:
        """The source box (left, top, right, bottom) shown at time ``t`` in [0, 1]."""
        eased = 0.5 - 0.5 * math.cos(math.pi * min(max(t, 0.0), 1.0))  # ease in and out
        # Interpolate the scale geometrically: a steady zoom looks steady only in log space.
        visible = (1.0 + self.zoom) ** -eased
        box_w, box_h = width * visible, height * visible
        ax = 0.5 + (self.anchor[0] - 0.5) * eased
        ay = 0.5 + (self.anchor[1] - 0.5) * eased
        left, top = ax * (width - box_w), ay * (height - box_h)
        # Clamp: Pillow refuses a box that overshoots the image by even a rounding error.
        return (
            max(0.0, left),
            max(0.0, top),
            min(float(width), left + box_w),
            min(float(height), top + box_h),
        )


_MOVES: dict[str, tuple[float, float]] = {
    "push in": (0.5, 0.5),
    "pan left": (0.0, 0.5),
    "pan right": (1.0, 0.5),
    "tilt up": (0.5, 0.0),
    "tilt down": (0.5, 1.0),
}

# Camera directions a motion prompt may spell out; when one is found the animatic follows it, so the
# preview moves the way the user asked. Zoom-outs are absent on purpose (see the module docstring).
_PROMPT_MOVES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b(zoom(s|ing)? in|push(es|ing)? in|dolly(ing)? in|close[- ]?up)\b"), "push in"),
    (re.compile(r"\b(pan(s|ning)? (to the )?left)\b"), "pan left"),
    (re.compile(r"\b(pan(s|ning)? (to the )?right)\b"), "pan right"),
    (re.compile(r"\b(tilt(s|ing)? up|pan(s|ning)? up|crane(s|ing)? up)\b"), "tilt up"),
    (re.compile(r"\b(tilt(s|ing)? down|pan(s|ning)? down|crane(s|ing)? down)\b"), "tilt down"),
)


def choose_camera_move(seed: int, prompt: str = "") -> CameraMove:
    """The camera move for a clip: named in ``prompt`` if it names one, else picked by ``seed``.

    Derived from SHA-256 rather than :mod:`random` so it can never change with the Python version.
    """
    digest = hashlib.sha256(f"videokit-preview-camera:{seed}".encode()).digest()
    lowered = prompt.lower()
    kinds = list(_MOVES)
    kind = next(
        (name for pattern, name in _PROMPT_MOVES if pattern.search(lowered)),
        kinds[digest[0] % len(kinds)],
    )
    zoom = 0.08 + 0.07 * (int.from_bytes(digest[1:3], "big") / 0xFFFF)  # 8-15 %
    anchor = _MOVES[kind]
    if kind == "push in":
        # Push toward a point near the centre rather than dead centre: livelier, still seed-stable.
        anchor = (0.3 + 0.4 * digest[3] / 255, 0.3 + 0.4 * digest[4] / 255)
    return CameraMove(kind=kind, zoom=round(zoom, 4), anchor=anchor)
