"""TEST ONLY: a known colour drift the preview backend can add to every clip it animates.

A real image-to-video model shifts colour and brightness a little in each clip, and a chain of
clips compounds it (each clip starts from the last frame of the one before). The preview's
animatic keeps colours exact, so nothing would show what ``color: {match: ...}`` corrects. With a
:class:`ColorDrift` each clip ramps from its input's colours at frame 0 to ``gain`` × value +
``offset`` (per RGB channel, in 8-bit code values) at its last frame, and that last frame is what
the next scene starts from: a chain of N clips drifts by about ``gain ** N``, as a model's would.

Tests and ``benchmarks/color.py`` pass ``PreviewBackend(drift=ColorDrift(...))``; a process can set
``VIDEOKIT_PREVIEW_DRIFT`` instead (``1.04,1,0.96`` or ``gain=1.04,1,0.96;offset=3,0,-3``). Never
set it for a real preview: it exists to measure colour matching. The drift is part of the
backend's identity, so drifted clips never share cache entries with clean ones.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from PIL import Image

from videokit.errors import ConfigError

__all__ = ["DRIFT_VARIABLE", "ColorDrift", "drift_from_env"]

DRIFT_VARIABLE = "VIDEOKIT_PREVIEW_DRIFT"
_RGB = tuple[float, float, float]
_EXAMPLE = "1.04,1,0.96 or gain=1.04,1,0.96;offset=3,0,-3"


@dataclass(frozen=True)
class ColorDrift:
    """Per clip, each RGB channel ends at ``gain`` × value + ``offset`` (code values 0-255)."""

    gain: _RGB = (1.0, 1.0, 1.0)
    offset: _RGB = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        if any(not 0.5 <= g <= 2.0 for g in self.gain) or any(abs(o) > 64 for o in self.offset):
            raise ValueError(
                f"a test drift of gain {self.gain} and offset {self.offset} is out of range: "
                "gains go from 0.5 to 2, offsets from -64 to 64"
            )

    @classmethod
    def parse(cls, text: str) -> ColorDrift:
        """``1.04,1,0.96`` (gains) or ``gain=1.04,1,0.96;offset=3,0,-3``; ValueError if not."""
        fields: dict[str, _RGB] = {}
        for part in filter(None, (p.strip() for p in text.split(";"))):
            name, _, values = part.rpartition("=")
            name = name.strip() or "gain"
            numbers = [float(v) for v in values.split(",")]
            if name not in ("gain", "offset") or name in fields or len(numbers) != 3:
                raise ValueError(f"'{part}' is not 'gain=R,G,B' or 'offset=R,G,B'")
            fields[name] = (numbers[0], numbers[1], numbers[2])
        if not fields:
            raise ValueError("no gain or offset given")
        return cls(**fields)

    @property
    def label(self) -> str:
        """The drift in the backend's identity (and so in every cache key it makes)."""
        gain = ",".join(f"{g:g}" for g in self.gain)
        offset = ",".join(f"{o:g}" for o in self.offset)
        return f"drift(gain={gain};offset={offset})"

    def apply(self, picture: Image.Image, t: float) -> Image.Image:
        """``picture`` drifted by the fraction ``t`` (0 at a clip's first frame, 1 at its last)."""
        if t <= 0.0:
            return picture
        table: list[int] = []
        for gain, offset in zip(self.gain, self.offset, strict=True):
            g, o = 1.0 + t * (gain - 1.0), t * offset
            table += [min(255, max(0, round(v * g + o))) for v in range(256)]
        return picture.point(table)


def drift_from_env(environ: Mapping[str, str] | None = None) -> ColorDrift | None:
    """The drift ``VIDEOKIT_PREVIEW_DRIFT`` asks for (None when unset or empty)."""
    text = (os.environ if environ is None else environ).get(DRIFT_VARIABLE, "").strip()
    if not text:
        return None
    try:
        return ColorDrift.parse(text)
    except ValueError as exc:
        raise ConfigError(
            f"{DRIFT_VARIABLE}={text!r} is not a colour drift: {exc}",
            hint=f"it is for tests only: unset it, or write {_EXAMPLE}",
        ) from None
