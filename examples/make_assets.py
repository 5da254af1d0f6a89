"""Generate the example assets: ``assets/reference.png`` and ``assets/theme.m4a``.

Both are videokit's own, drawn and composed by this script (no third-party pictures, fonts or
samples), so the examples can ship them under the project's licence. Running it again gives the
same picture, pixel for pixel, and the same music::

    python examples/make_assets.py

* ``reference.png`` (832×480): a friendly robot waving in a sunny meadow, drawn with Pillow at twice
  the size and downscaled, which anti-aliases every edge.
* ``theme.m4a`` (~25 s, mono AAC): a gentle C-G-Am-F arpeggio with pad, bass and a bell melody,
  synthesised with numpy and encoded with the bundled ffmpeg.
"""

from __future__ import annotations

import hashlib
import math
import tempfile
import wave
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFilter

from videokit.media.ffmpeg import run_ffmpeg
from videokit.media.images import encode_png

__all__ = ["ASSETS", "main", "make_reference", "make_theme"]

ASSETS = Path(__file__).resolve().parent / "assets"

WIDTH, HEIGHT = 832, 480
SCALE = 2  # drawn at 2× then downscaled: cheap, exact anti-aliasing

Color = tuple[int, int, int]
Box = tuple[float, float, float, float]
FloatArray = npt.NDArray[np.float64]

# Palette: warm afternoon light, a cream-and-teal robot with coral accents.
SKY_TOP: Color = (104, 174, 228)
SKY_HORIZON: Color = (255, 216, 176)
SUN: Color = (255, 244, 200)
FAR_HILLS: Color = (150, 196, 178)
NEAR_HILLS: Color = (112, 178, 122)
GRASS_TOP: Color = (126, 194, 104)
GRASS_BOTTOM: Color = (80, 150, 78)
CREAM: Color = (246, 241, 228)
SLATE: Color = (52, 62, 78)
SCREEN: Color = (34, 44, 58)
TEAL: Color = (42, 157, 143)
CORAL: Color = (240, 112, 92)
GLOW: Color = (128, 232, 255)


# -- picture ---------------------------------------------------------------------------------------


def _s(box: Sequence[float]) -> list[float]:
    """Scale design coordinates (832×480 space) to the 2× canvas."""
    return [v * SCALE for v in box]


def _unit(tag: str, index: int) -> float:
    """A deterministic number in [0, 1) (SHA-256 based: stable across Python and numpy versions)."""
    digest = hashlib.sha256(f"{tag}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32


def _vertical_gradient(width: int, height: int, top: Color, bottom: Color) -> Image.Image:
    t = np.linspace(0.0, 1.0, height)[:, None, None]
    rows = (1 - t) * np.array(top, float) + t * np.array(bottom, float)
    return Image.fromarray(np.repeat(rows, width, axis=1).round().astype(np.uint8))


def _hills(
    base_y: float, amplitude: float, phase: float, waves: float
) -> list[tuple[float, float]]:
    points = [(0.0, float(HEIGHT))]
    for i in range(0, WIDTH + 1, 4):
        x = i / WIDTH
        y = base_y - amplitude * (
            0.6 * math.sin(2 * math.pi * (waves * x + phase))
            + 0.4 * math.sin(2 * math.pi * (2.3 * waves * x + 1.7 * phase))
        )
        points.append((float(i), y))
    points.append((float(WIDTH), float(HEIGHT)))
    return [(x * SCALE, y * SCALE) for x, y in points]


def _soft_layer(draw_fn: Callable[[ImageDraw.ImageDraw], None], blur: float) -> Image.Image:
    """A transparent layer drawn by ``draw_fn`` and blurred: glows, halos, soft shadows."""
    layer = Image.new("RGBA", (WIDTH * SCALE, HEIGHT * SCALE), (0, 0, 0, 0))
    draw_fn(ImageDraw.Draw(layer))
    return layer.filter(ImageFilter.GaussianBlur(blur * SCALE)) if blur else layer


def _cloud(draw: ImageDraw.ImageDraw, cx: float, cy: float, size: float) -> None:
    puffs = [(-1.0, 0.2, 0.55), (-0.45, -0.2, 0.75), (0.2, -0.35, 0.85), (0.85, 0.05, 0.6)]
    for dx, dy, r in puffs:
        x, y, rad = cx + dx * size, cy + dy * size, r * size
        draw.ellipse(_s((x - rad, y - rad, x + rad, y + rad)), fill=(255, 255, 255, 225))
    draw.rounded_rectangle(
        _s((cx - 1.4 * size, cy - 0.1 * size, cx + 1.35 * size, cy + 0.6 * size)),
        radius=0.35 * size * SCALE,
        fill=(255, 255, 255, 225),
    )


def _tree(draw: ImageDraw.ImageDraw, x: float, ground: float, size: float) -> None:
    draw.rounded_rectangle(
        _s((x - 0.09 * size, ground - 0.9 * size, x + 0.09 * size, ground)),
        radius=0.05 * size * SCALE,
        fill=(120, 86, 62),
    )
    for dx, dy, r, shade in [
        (-0.32, -1.0, 0.42, (74, 146, 86)),
        (0.3, -1.05, 0.45, (74, 146, 86)),
        (0.0, -1.35, 0.5, (92, 166, 96)),
        (-0.1, -0.95, 0.38, (100, 176, 102)),
    ]:
        cx, cy, rad = x + dx * size, ground + dy * size, r * size
        draw.ellipse(_s((cx - rad, cy - rad, cx + rad, cy + rad)), fill=shade)


def _flowers(draw: ImageDraw.ImageDraw) -> None:
    colours: list[Color] = [(255, 255, 255), (255, 214, 90), (250, 150, 170), (190, 160, 250)]
    for i in range(70):
        # Denser and larger towards the viewer: y from the meadow's back edge to the bottom.
        depth = _unit("flower-y", i)
        y = 360 + 115 * depth
        x = 10 + 812 * _unit("flower-x", i)
        if 445 < x < 640 and y < 445:  # keep the robot's feet clear
            continue
        r = 1.6 + 2.6 * depth
        colour = colours[int(_unit("flower-c", i) * len(colours))]
        draw.line(_s((x, y, x, y + 3 * r)), fill=(70, 130, 70), width=max(1, round(SCALE * 1.2)))
        for k in range(5):
            a = 2 * math.pi * k / 5 + _unit("flower-a", i)
            px, py = x + r * math.cos(a), y + r * math.sin(a)
            draw.ellipse(_s((px - r * 0.7, py - r * 0.7, px + r * 0.7, py + r * 0.7)), fill=colour)
        draw.ellipse(_s((x - r * 0.5, y - r * 0.5, x + r * 0.5, y + r * 0.5)), fill=(255, 190, 60))


def _limb(draw: ImageDraw.ImageDraw, points: Sequence[tuple[float, float]], width: float) -> None:
    """A thick jointed limb: an outlined polyline with round joints."""
    for colour, w in ((SLATE, width + 6), (CREAM, width)):
        scaled = [(x * SCALE, y * SCALE) for x, y in points]
        draw.line(scaled, fill=colour, width=round(w * SCALE), joint="curve")
        for x, y in points:
            r = w / 2
            draw.ellipse(_s((x - r, y - r, x + r, y + r)), fill=colour)


def _robot(canvas: Image.Image) -> None:
    draw = ImageDraw.Draw(canvas)
    outline = 3 * SCALE

    # Arms first, so the body overlaps the shoulders. The left one waves.
    _limb(draw, [(482, 282), (446, 250), (430, 204)], 18)
    _limb(draw, [(598, 282), (626, 322), (630, 356)], 18)
    for cx, cy in ((428, 188), (631, 368)):
        draw.ellipse(
            _s((cx - 17, cy - 17, cx + 17, cy + 17)), fill=CORAL, outline=SLATE, width=outline
        )
    # Legs and feet.
    for x in (505, 553):
        draw.rounded_rectangle(_s((x, 360, x + 22, 410)), radius=8 * SCALE, fill=SLATE)
    for x in (494, 546):
        draw.rounded_rectangle(
            _s((x, 400, x + 42, 424)), radius=11 * SCALE, fill=CORAL, outline=SLATE, width=outline
        )
    # Body with a chest panel: a heart and two buttons.
    draw.rounded_rectangle(
        _s((474, 254, 606, 372)), radius=30 * SCALE, fill=CREAM, outline=SLATE, width=outline
    )
    draw.rounded_rectangle(_s((504, 282, 576, 344)), radius=14 * SCALE, fill=TEAL)
    hx, hy, hr = 540, 306, 9
    draw.ellipse(_s((hx - 2 * hr, hy - hr, hx, hy + hr)), fill=CORAL)
    draw.ellipse(_s((hx, hy - hr, hx + 2 * hr, hy + hr)), fill=CORAL)
    draw.polygon(
        [
            (v * SCALE)
            for v in (hx - 2 * hr + 1, hy + 2, hx + 2 * hr - 1, hy + 2, hx, hy + 2.6 * hr)
        ],
        fill=CORAL,
    )
    for bx, colour in ((524, (255, 214, 90)), (556, GLOW)):
        draw.ellipse(_s((bx - 5, 328, bx + 5, 338)), fill=colour)
    # Neck, ears, head.
    draw.rectangle(_s((528, 238, 552, 258)), fill=SLATE)
    for x in (458, 608):
        draw.rounded_rectangle(
            _s((x, 166, x + 14, 210)), radius=6 * SCALE, fill=CORAL, outline=SLATE, width=outline
        )
    draw.line(_s((540, 132, 540, 102)), fill=SLATE, width=4 * SCALE)
    draw.rounded_rectangle(
        _s((468, 128, 612, 244)), radius=36 * SCALE, fill=CREAM, outline=SLATE, width=outline
    )
    draw.rounded_rectangle(_s((486, 148, 594, 228)), radius=24 * SCALE, fill=SCREEN)


def _robot_glow(draw: ImageDraw.ImageDraw) -> None:
    """Light on the robot's face screen and antenna, drawn on a layer that is blurred."""
    for cx in (518, 562):
        draw.ellipse(_s((cx - 16, 162, cx + 16, 204)), fill=(*GLOW, 150))
    draw.ellipse(_s((540 - 20, 94 - 20, 540 + 20, 94 + 20)), fill=(255, 150, 120, 170))


def _face(draw: ImageDraw.ImageDraw) -> None:
    # Big eyes with highlights, a smile and blushing cheeks: friendly reads at thumbnail size.
    for cx in (518, 562):
        draw.ellipse(_s((cx - 11, 168, cx + 11, 198)), fill=GLOW)
        draw.ellipse(_s((cx - 6, 176, cx + 4, 190)), fill=(20, 60, 80))
        draw.ellipse(_s((cx - 1, 172, cx + 6, 180)), fill=(255, 255, 255))
    draw.arc(_s((522, 186, 558, 214)), start=25, end=155, fill=GLOW, width=4 * SCALE)
    for cx in (500, 580):
        draw.ellipse(_s((cx - 7, 200, cx + 7, 210)), fill=(240, 112, 140))
    draw.ellipse(_s((531, 85, 549, 103)), fill=CORAL, outline=SLATE, width=3 * SCALE)
    draw.ellipse(_s((535, 88, 541, 94)), fill=(255, 220, 210))


def make_reference() -> Image.Image:
    """Draw the reference picture: a friendly robot waving in a sunny meadow (832×480 RGB)."""
    size = (WIDTH * SCALE, HEIGHT * SCALE)
    canvas = _vertical_gradient(*size, SKY_TOP, SKY_HORIZON).convert("RGBA")

    def sun_glow(draw: ImageDraw.ImageDraw) -> None:
        # Two halos: a wide faint one and a tighter bright one. Near-white rather than yellow:
        # yellow blended over blue sky reads as a grey smudge.
        for radius, alpha in ((150, 70), (85, 110)):
            box = (190 - radius, 150 - radius, 190 + radius, 150 + radius)
            draw.ellipse(_s(box), fill=(255, 250, 232, alpha))

    canvas.alpha_composite(_soft_layer(sun_glow, blur=36))
    sun = ImageDraw.Draw(canvas)
    sun.ellipse(_s((190 - 46, 150 - 46, 190 + 46, 150 + 46)), fill=SUN)

    def clouds(draw: ImageDraw.ImageDraw) -> None:
        _cloud(draw, 640, 86, 34)
        _cloud(draw, 380, 60, 22)
        _cloud(draw, 300, 215, 16)

    canvas.alpha_composite(_soft_layer(clouds, blur=1.2))

    draw = ImageDraw.Draw(canvas)
    draw.polygon(_hills(305, 22, 0.15, 1.6), fill=FAR_HILLS)
    draw.polygon(_hills(338, 16, 0.55, 1.1), fill=NEAR_HILLS)
    meadow = _vertical_gradient(size[0], size[1] - 350 * SCALE, GRASS_TOP, GRASS_BOTTOM)
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).polygon(_hills(362, 8, 0.8, 0.9), fill=255)
    ground = Image.new("RGB", size)
    ground.paste(meadow, (0, 350 * SCALE))
    canvas.paste(ground, (0, 0), mask)

    draw = ImageDraw.Draw(canvas)
    _tree(draw, 110, 372, 80)
    _tree(draw, 760, 360, 56)

    def shadow(draw: ImageDraw.ImageDraw) -> None:
        draw.ellipse(_s((462, 410, 622, 436)), fill=(30, 70, 30, 110))

    canvas.alpha_composite(_soft_layer(shadow, blur=4))
    _flowers(ImageDraw.Draw(canvas))
    _robot(canvas)
    canvas.alpha_composite(_soft_layer(_robot_glow, blur=6))
    _face(ImageDraw.Draw(canvas))
    return canvas.convert("RGB").resize((WIDTH, HEIGHT), Image.Resampling.LANCZOS)


# -- music -----------------------------------------------------------------------------------------

RATE = 44_100
BPM = 96
BEAT = 60 / BPM
BAR = 4 * BEAT  # 2.5 s
# C - G - Am - F, twice, then F - C to close: 10 bars, 25 s.
PROGRESSION: list[tuple[int, ...]] = [
    (48, 52, 55),  # C
    (43, 47, 50),  # G
    (45, 48, 52),  # Am
    (41, 45, 48),  # F
    (48, 52, 55),
    (43, 47, 50),
    (45, 48, 52),
    (41, 45, 48),
    (41, 45, 48),
    (48, 52, 55),
]
# A simple bell tune over bars 3-8: (bar, beat, midi note, beats long).
MELODY: list[tuple[int, float, int, float]] = [
    (2, 0, 76, 1.5), (2, 1.5, 74, 0.5), (2, 2, 72, 2),
    (3, 0, 72, 1), (3, 1, 69, 1), (3, 2, 72, 2),
    (4, 0, 79, 1.5), (4, 1.5, 76, 0.5), (4, 2, 76, 2),
    (5, 0, 74, 1), (5, 1, 71, 1), (5, 2, 74, 2),
    (6, 0, 72, 1.5), (6, 1.5, 74, 0.5), (6, 2, 76, 2),
    (7, 0, 77, 1), (7, 1, 76, 1), (7, 2, 72, 2),
]  # fmt: skip


def _freq(midi: float) -> float:
    return 440.0 * 2 ** ((midi - 69) / 12)


def _note(
    midi: float, seconds: float, *, attack: float, decay: float, harmonics: Sequence[float]
) -> FloatArray:
    """One note: a few harmonics under an attack / exponential-decay envelope, faded at the end."""
    t = np.arange(round(seconds * RATE)) / RATE
    f = _freq(midi)
    tone = sum(
        (amp * np.sin(2 * np.pi * f * (k + 1) * t) for k, amp in enumerate(harmonics)),
        start=np.zeros_like(t),
    )
    envelope = np.minimum(1.0, t / attack) * np.exp(-t / decay)
    tail = np.clip((seconds - t) / 0.05, 0.0, 1.0)  # 50 ms fade: no click at the cut
    result: FloatArray = tone * envelope * tail
    return result


def _add(track: FloatArray, start: float, sound: FloatArray, gain: float) -> None:
    i = round(start * RATE)
    end = min(len(track), i + len(sound))
    track[i:end] += gain * sound[: end - i]


def make_theme(seconds: float = 25.0) -> FloatArray:
    """Synthesise the theme as mono float samples in [-1, 1] at 44.1 kHz."""
    track = np.zeros(round(seconds * RATE))
    pattern = [0, 1, 2, 3, 2, 1, 2, 3]  # indexes into (root, third, fifth, octave+third)
    for bar, chord in enumerate(PROGRESSION):
        start = bar * BAR
        root, third, fifth = chord
        voices = [root + 12, third + 12, fifth + 12, third + 24]
        last_bar = bar == len(PROGRESSION) - 1
        # Pad: the triad, slow attack, a touch of detune for width.
        for midi in chord:
            for detune in (-0.06, 0.06):
                pad = _note(
                    midi + 12 + detune, BAR + 0.3, attack=0.6, decay=6.0, harmonics=(1, 0.2)
                )
                _add(track, start, pad, 0.035)
        # Bass on beats 1 and 3.
        bass_length = BAR if last_bar else 2 * BEAT
        for bass_beat in (0,) if last_bar else (0, 2):
            bass = _note(root - 12, bass_length, attack=0.01, decay=0.9, harmonics=(1, 0.35, 0.1))
            _add(track, start + bass_beat * BEAT, bass, 0.22)
        # Arpeggio in eighths; the final bar rolls the chord once in sixteenths and lets it ring.
        steps = [0, 1, 2, 3] if last_bar else pattern
        step_length = BEAT / 4 if last_bar else BEAT / 2
        ring = BAR if last_bar else 1.2
        for step, index in enumerate(steps):
            pluck = _note(
                voices[index], ring, attack=0.006, decay=0.45, harmonics=(1, 0.3, 0.12, 0.05)
            )
            _add(track, start + step * step_length, pluck, 0.11)
    for bar, beat, midi, beats in MELODY:
        bell = _note(
            midi, beats * BEAT + 0.8, attack=0.004, decay=0.7, harmonics=(1, 0.0, 0.25, 0.0, 0.08)
        )
        _add(track, bar * BAR + beat * BEAT, bell, 0.13)
    # A soft echo (three taps at a dotted eighth) for a little space.
    delay = round(0.75 * BEAT * RATE)
    wet = np.zeros_like(track)
    for tap in range(1, 4):
        wet[tap * delay :] += 0.28**tap * track[: len(track) - tap * delay]
    track += wet
    # Fade in briefly, fade out over the last two seconds, normalise to -1 dBFS.
    t = np.arange(len(track)) / RATE
    track *= np.clip(t / 0.3, 0.0, 1.0) * np.clip((seconds - t) / 2.0, 0.0, 1.0)
    peak = float(np.abs(track).max()) or 1.0
    normalised: FloatArray = track * (10 ** (-1 / 20) / peak)
    return normalised


def _write_m4a(samples: FloatArray, path: Path) -> None:
    pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    with tempfile.TemporaryDirectory(prefix="videokit-assets-") as tmp:
        wav_path = Path(tmp) / "theme.wav"
        with wave.open(str(wav_path), "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(RATE)
            wav.writeframes(pcm.tobytes())
        run_ffmpeg(
            [
                "-i", str(wav_path),
                "-c:a", "aac", "-b:a", "96k", "-ac", "1", "-ar", str(RATE),
                # No encoder/version tags or dates: regenerating gives the same file.
                "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:a", "+bitexact",
                "-movflags", "+faststart",
                str(path),
            ],
            what="encoding theme.m4a",
        )  # fmt: skip


def main() -> None:
    """Regenerate both assets next to this script."""
    ASSETS.mkdir(parents=True, exist_ok=True)
    reference = ASSETS / "reference.png"
    reference.write_bytes(encode_png(make_reference()))
    theme = ASSETS / "theme.m4a"
    _write_m4a(make_theme(), theme)
    for path in (reference, theme):
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
