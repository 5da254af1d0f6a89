"""The preview backend: a CPU animatic that needs no GPU and no account.

It is videokit's embedded default, so a story can be rendered end to end (timing, chaining, music,
stitching) before anyone pays for a GPU second. It does not imitate the models; it makes an honest
*animatic* that shows what each job was asked to do:

* ``edit`` returns a **storyboard card**: the input frame, slightly dimmed, with the edit prompt in
  a caption panel, thumbnails of the reference images and a "PREVIEW · EDIT" marker.
* ``animate`` returns a **camera move** over the input frame (an eased push-in, pan or tilt) with
  the motion prompt as a caption, a "PREVIEW" badge and a frame counter burned into every frame.

A card carries the undimmed picture it was drawn over, in a private PNG chunk (``vkCl``, ignored
by every decoder), when both fit in the size of an uncompressed frame. Animating a card fades the
card out into that picture during the clip, so the clip's last frame, the next scene's input, is
clean. Without it, every downstream scene would open on a cropped remnant of the card, and the
dimming would compound along a chain.

Like Wan, a clip starts on its input picture: frame 0 is the input cover-fitted to the clip size.
The moves only ever zoom *into* the picture, never out of it: frame 0 shows the whole input, and a
zoom-out would need pixels from outside it that nobody has.

Everything is deterministic: the same request gives byte-identical PNGs and identical decoded video
frames (fixed x264 settings and thread count). Output pixels depend only on the request (never on
the scene name or the time), because results are cached by request; :meth:`PreviewBackend.identity`
carries a version to bump whenever the drawing changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import os
import re
import struct
import tempfile
import threading
import time
import unicodedata
import zlib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from PIL import Image, ImageDraw, ImageFont

from videokit.backends.base import JobContext, Stage
from videokit.media.ffmpeg import RawVideoWriter
from videokit.media.images import cover_fit, encode_png, load_rgb
from videokit.protocol import (
    MAX_PIXELS,
    MAX_SIDE,
    MIN_SIDE,
    AnimateRequest,
    AnimateResult,
    EditRequest,
    EditResult,
    MediaInput,
    MediaOutput,
)

__all__ = ["CameraMove", "PreviewBackend", "choose_camera_move"]

# Bump when the pixels a stage produces change: the identity is part of every cache key.
_STORYBOARD_VERSION = 2
_ANIMATIC_VERSION = 2
# A private, ancillary, safe-to-copy PNG chunk (the letter cases say so): the card's clean picture.
_CLEAN_CHUNK = b"vkCl"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_MAX_DEFAULT_CONCURRENCY = 4
# x264 output depends on its thread count (not on timing); pinning it makes a clip's bytes the same
# on any machine with the same ffmpeg build, not just the same core count.
_X264_THREADS = 2
_X264_CRF = 18
_X264_PRESET = "veryfast"
_PROGRESS_EVERY = 10  # frames

_ACCENT = (255, 196, 61)  # badge colour: amber reads on both bright and dark pictures
_INK = (24, 24, 28)
_WHITE = (255, 255, 255)


class _Cancelled(Exception):
    """Raised inside the render thread when the awaiting task was cancelled."""


_ProgressFn = Callable[[float, str | None], None]
_T = TypeVar("_T")


class PreviewBackend:
    """The in-process CPU backend: storyboard cards and camera-move animatics.

    ``concurrency`` is how many jobs of one stage the pipeline may run at once; by default the CPU
    count capped at 4 (each animate job also runs a 2-thread x264 encoder).
    """

    name: str = "preview"

    def __init__(self, *, concurrency: int | None = None) -> None:
        if concurrency is None:
            concurrency = min(os.cpu_count() or 1, _MAX_DEFAULT_CONCURRENCY)
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self._concurrency = concurrency

    def identity(self, stage: Stage) -> str:
        if stage == "edit":
            return f"preview/storyboard@{_STORYBOARD_VERSION}"
        return f"preview/animatic@{_ANIMATIC_VERSION}"

    def identities(self, stage: Stage) -> tuple[str, ...]:
        return (self.identity(stage),)

    def concurrency(self, stage: Stage) -> int:
        return self._concurrency

    def check(
        self, stages: Collection[Stage], *, payload_bytes: Mapping[Stage, int] | None = None
    ) -> None:
        return None  # runs in-process: nothing to configure, no payload limit

    async def warm_up(self, stage: Stage, ctx: JobContext) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def edit(self, request: EditRequest, ctx: JobContext) -> EditResult:
        """Draw the storyboard card: the input, dimmed, captioned with the edit prompt."""
        sources = [_inline_bytes(image, f"images[{i}]") for i, image in enumerate(request.images)]
        ctx.on_status("running")  # in process: no queue, no cold start
        ctx.on_progress(0.0, "drawing storyboard card")
        started = time.perf_counter()
        png, width, height = await _in_thread(
            lambda _cancel, _progress: _render_card(request, sources), ctx.on_progress
        )
        elapsed_ms = round((time.perf_counter() - started) * 1000)
        ctx.on_progress(1.0, "storyboard card ready")
        return EditResult(
            image=MediaOutput.inline(png, "image/png"),
            seed=request.seed,
            width=width,
            height=height,
            inference_ms=elapsed_ms,
            model=self.identity("edit"),
        )

    async def animate(self, request: AnimateRequest, ctx: JobContext) -> AnimateResult:
        """Render the camera-move clip: exactly ``request.output_frames`` frames."""
        source = _inline_bytes(request.image, "image")
        ctx.on_status("running")  # in process: no queue, no cold start
        ctx.on_progress(0.0, "rendering animatic")
        started = time.perf_counter()
        video, last_png = await _in_thread(
            lambda cancel, progress: _render_clip(request, source, cancel, progress),
            ctx.on_progress,
        )
        elapsed_ms = round((time.perf_counter() - started) * 1000)
        return AnimateResult(
            video=MediaOutput.inline(video, "video/mp4"),
            last_frame=MediaOutput.inline(last_png, "image/png"),
            seed=request.seed,
            frames=request.output_frames,
            fps=request.fps,
            width=request.width,
            height=request.height,
            inference_ms=elapsed_ms,
            model=self.identity("animate"),
        )


# -- threading -------------------------------------------------------------------------------------


async def _in_thread(
    work: Callable[[threading.Event, _ProgressFn], _T], on_progress: _ProgressFn
) -> _T:
    """Run CPU-bound ``work`` in a worker thread so the event loop keeps serving other jobs.

    Progress is handed back to the loop thread (callbacks may touch loop-bound state such as a
    progress display). Cancelling the awaiting task sets ``cancel``; the renderer checks it between
    frames and stops, so an abandoned clip does not keep a core busy.
    """
    loop = asyncio.get_running_loop()
    cancel = threading.Event()

    def progress(fraction: float, message: str | None) -> None:
        # RuntimeError: the loop closed under us, so nobody is listening any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(on_progress, fraction, message)

    try:
        return await asyncio.to_thread(work, cancel, progress)
    except asyncio.CancelledError:
        cancel.set()
        raise


def _inline_bytes(media: MediaInput, field: str) -> bytes:
    if media.base64 is None:
        raise ValueError(
            f"{field}: the preview backend runs in-process and does not download inputs; "
            f"pass the image inline (base64) instead of a URL"
        )
    return media.decode()


# -- camera moves ----------------------------------------------------------------------------------


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


# -- rendering: clip -------------------------------------------------------------------------------


def _render_clip(
    request: AnimateRequest, source: bytes, cancel: threading.Event, progress: _ProgressFn
) -> tuple[bytes, bytes]:
    width, height = request.width, request.height
    base = cover_fit(load_rgb(source), width, height)
    clean_png = _clean_picture(source)
    clean = cover_fit(load_rgb(clean_png), width, height) if clean_png is not None else None
    move = choose_camera_move(request.seed, request.prompt)
    total = request.frames
    first = 1 if request.drop_first_frame else 0
    count = total - first
    overlay = _ClipOverlay(width, height, request.prompt, move, total)

    last_picture = base
    with tempfile.TemporaryDirectory(prefix="videokit-preview-") as tmp:
        path = Path(tmp) / "clip.mp4"
        with RawVideoWriter(
            path,
            width=width,
            height=height,
            fps=request.fps,
            crf=_X264_CRF,
            preset=_X264_PRESET,
            threads=_X264_THREADS,
        ) as writer:
            for index in range(first, total):
                if cancel.is_set():
                    raise _Cancelled
                t = index / (total - 1)
                shown = base if clean is None else _fade_card(base, clean, t)
                if index == 0:
                    picture = shown  # exactly the input, as an image-to-video model starts
                else:
                    box = move.view(t, width, height)
                    picture = shown.resize((width, height), Image.Resampling.BICUBIC, box=box)
                last_picture = picture
                writer.write(overlay.apply(picture, index).tobytes())
                done = index - first + 1
                if done % _PROGRESS_EVERY == 0 or done == count:
                    progress(done / count, f"frame {done}/{count}")
        video = path.read_bytes()
    # The last frame goes out WITHOUT the overlays: it is the next scene's input, and a burned-in
    # caption would be animated again there (and stack up, one more caption per chained scene).
    return video, encode_png(last_picture)


def _fade_card(card: Image.Image, clean: Image.Image, t: float) -> Image.Image:
    """The picture at time ``t`` of a clip animating a storyboard card: the card (as the input
    shows it) for the first third, easing into the clean picture by two thirds in."""
    mix = min(1.0, max(0.0, (t - 1 / 3) * 3))
    mix = mix * mix * (3 - 2 * mix)  # smoothstep: no visible start or stop of the fade
    if mix <= 0.0:
        return card
    if mix >= 1.0:
        return clean
    return Image.blend(card, clean, mix)


def _with_clean_picture(card_png: bytes, clean_png: bytes) -> bytes:
    """``card_png`` with ``clean_png`` in a ``vkCl`` chunk just before IEND (its last 12 bytes)."""
    chunk = (
        struct.pack(">I", len(clean_png))
        + _CLEAN_CHUNK
        + clean_png
        + struct.pack(">I", zlib.crc32(_CLEAN_CHUNK + clean_png))
    )
    return card_png[:-12] + chunk + card_png[-12:]


def _clean_picture(png: bytes) -> bytes | None:
    """The clean picture a storyboard card carries, or None (not a card, or not a PNG)."""
    if not png.startswith(_PNG_SIGNATURE):
        return None
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind = png[pos + 4 : pos + 8]
        if kind == _CLEAN_CHUNK:
            data = png[pos + 8 : pos + 8 + length]
            crc = png[pos + 8 + length : pos + 12 + length]
            ok = len(data) == length and crc == struct.pack(">I", zlib.crc32(kind + data))
            return data if ok else None
        if kind == b"IEND":
            return None
        pos += 12 + length
    return None


class _ClipOverlay:
    """The animatic's burned-in panel, pre-rendered once and composited onto every frame.

    One panel at the bottom: a "PREVIEW" badge with the camera move, the frame counter on the right,
    then the motion prompt. Only the panel's rectangle is composited (the rest of the frame is left
    alone), and only the counter text is drawn per frame. The counter numbers the model's frames
    (1..frames), so a clip that drops its first frame starts at 2.
    """

    def __init__(self, width: int, height: int, prompt: str, move: CameraMove, total: int) -> None:
        self.total = total
        size = _caption_size(width, height)
        self.font = _font(size)
        small = _font(max(9, round(size * 0.8)))
        margin = max(4, round(min(width, height) * 0.025))
        pad = max(3, round(size * 0.45))
        line_h = round(size * 1.3)
        panel_w = width - 2 * margin
        text_w = panel_w - 2 * pad
        badge_h = round(small.size * 1.5)
        lines = _wrap(prompt, self.font, text_w, max_lines=3)
        panel_h = pad + badge_h + round(pad * 0.6) + line_h * len(lines) + pad
        top = height - margin - panel_h
        self.box = (margin, top, margin + panel_w, top + panel_h)

        panel = Image.new("RGBA", (panel_w, panel_h), (0, 0, 0, 0))
        draw = ImageDraw.Draw(panel)
        draw.rounded_rectangle(
            (0, 0, panel_w - 1, panel_h - 1), radius=max(2, pad), fill=(10, 10, 14, 165)
        )
        badge_right = _badge(draw, (pad, pad), "PREVIEW", small, badge_h)
        draw.text(
            (badge_right + pad, pad + badge_h / 2),
            f"camera: {move.kind} {move.zoom:.0%}",
            font=small,
            fill=(220, 220, 220, 255),
            anchor="lm",
        )
        y = pad + badge_h + round(pad * 0.6)
        for line in lines:
            draw.text((pad, y), line, font=self.font, fill=(*_WHITE, 255))
            y += line_h
        # Split once: pasting RGB through an "L" mask is the cheapest blend Pillow offers.
        self.panel = panel.convert("RGB")
        self.mask = panel.getchannel("A")
        self.counter_font = small
        self.counter_at = (margin + panel_w - pad, top + pad + badge_h / 2)

    def apply(self, picture: Image.Image, index: int) -> Image.Image:
        frame = picture.copy()
        frame.paste(self.panel, self.box[:2], self.mask)
        ImageDraw.Draw(frame).text(
            self.counter_at,
            f"{index + 1}/{self.total}",
            font=self.counter_font,
            fill=_WHITE,
            anchor="rm",
        )
        return frame


# -- rendering: storyboard card --------------------------------------------------------------------


def _render_card(request: EditRequest, sources: list[bytes]) -> tuple[bytes, int, int]:
    picture = load_rgb(sources[0])
    if request.width is not None and request.height is not None:
        width, height = request.width, request.height
    else:
        width, height = _card_size(picture.width, picture.height)
    base = cover_fit(picture, width, height)
    # Dimmed so the caption reads and the card is never mistaken for a real edit. The clip fades
    # into the undimmed picture (see _fade_card), so the dimming does not compound along a chain.
    card = base.point(lambda value: round(value * 0.88))

    size = round(_caption_size(width, height) * 1.1)
    font = _font(size)
    small = _font(max(9, round(size * 0.8)))
    margin = max(4, round(min(width, height) * 0.03))
    pad = max(3, round(size * 0.5))
    line_h = round(size * 1.3)
    badge_h = round(small.size * 1.5)

    # Reference thumbnails sit at the right of the panel; the prompt wraps in the room left of them.
    refs = [load_rgb(data) for data in sources[1:]]
    thumb_h = max(24, round(height * 0.18))
    panel_w = width - 2 * margin
    # As many thumbnails as leave the prompt half the panel (a small card may show none).
    thumbs: list[Image.Image] = []
    for ref in refs:
        thumb = _thumbnail(ref, thumb_h)
        if sum(t.width + pad for t in thumbs) + thumb.width + pad > panel_w // 2:
            break
        thumbs.append(thumb)
    thumbs_w = sum(t.width for t in thumbs) + pad * len(thumbs)

    text_w = max(size * 4, panel_w - 2 * pad - thumbs_w)
    # The prompt may be long (up to 2000 characters): cap the panel at about 40 % of the card.
    max_lines = max(1, (round(height * 0.4) - badge_h - 3 * pad) // line_h)
    lines = _wrap(request.prompt, font, text_w, max_lines=max_lines)
    text_h = badge_h + round(pad * 0.6) + line_h * len(lines)
    panel_h = pad + max(text_h, thumb_h if thumbs else 0) + pad

    overlay = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    # At the top, so it stays readable when the animatic draws its own caption at the bottom.
    draw.rounded_rectangle(
        (margin, margin, margin + panel_w - 1, margin + panel_h - 1),
        radius=max(2, pad),
        fill=(10, 10, 14, 200),
    )
    badge_right = _badge(draw, (margin + pad, margin + pad), "PREVIEW · EDIT", small, badge_h)
    if refs:
        draw.text(
            (badge_right + pad, margin + pad + badge_h / 2),
            f"+{len(refs)} reference{'s' if len(refs) > 1 else ''}",
            font=small,
            fill=(220, 220, 220, 255),
            anchor="lm",
        )
    y = margin + pad + badge_h + round(pad * 0.6)
    for line in lines:
        draw.text((margin + pad, y), line, font=font, fill=(*_WHITE, 255))
        y += line_h
    x = margin + panel_w - pad
    for thumb in reversed(thumbs):
        x -= thumb.width
        overlay.paste(thumb.convert("RGBA"), (x, margin + pad))
        x -= pad

    card = Image.alpha_composite(card.convert("RGBA"), overlay).convert("RGB")
    card_png = encode_png(card)
    with_clean = _with_clean_picture(card_png, encode_png(base))
    # The pipeline bounds a frame it makes by an incompressible PNG of its size (its payload
    # checks rely on that); a photo-like card that cannot carry its clean picture within that
    # stays a plain card, animated as any picture.
    fits = len(with_clean) <= height * (width * 3 + 1)
    return (with_clean if fits else card_png), width, height


def _card_size(width: int, height: int) -> tuple[int, int]:
    """The card size when the request gives none: the input's own, within the wire limits.

    Snapped down to multiples of 16 (what the models and the animate stage expect), after scaling
    into [MIN_SIDE, MAX_SIDE] and the per-frame pixel budget, keeping the aspect ratio.
    """
    scale = min(1.0, MAX_SIDE / max(width, height), math.sqrt(MAX_PIXELS / (width * height)))
    scale = max(scale, MIN_SIDE / min(width, height))
    w = max(MIN_SIDE, min(MAX_SIDE, int(width * scale) // 16 * 16))
    h = max(MIN_SIDE, min(MAX_SIDE, int(height * scale) // 16 * 16))
    return w, h


def _thumbnail(image: Image.Image, height: int) -> Image.Image:
    # Keep the reference's aspect, within 0.6-1.8 so a panorama cannot eat the whole panel.
    aspect = min(1.8, max(0.6, image.width / image.height))
    width = max(3, round(height * aspect))
    border = max(1, height // 40)
    framed = Image.new("RGB", (width, height), _WHITE)  # a white mount, like a pinned photo
    framed.paste(cover_fit(image, width - 2 * border, height - 2 * border), (border, border))
    return framed


# -- drawing helpers -------------------------------------------------------------------------------

_Font = ImageFont.FreeTypeFont


def _font(size: int) -> _Font:
    # Pillow >= 10.1 bundles a scalable font (Aileron) with load_default(size=...): no system fonts,
    # so the pixels are the same on every machine. Loading it is ~0.1 ms, so no cache is needed (and
    # no FreeType face is shared between render threads).
    font = ImageFont.load_default(size=size)
    if not isinstance(font, ImageFont.FreeTypeFont):
        raise RuntimeError("the preview backend needs Pillow built with FreeType")
    return font


def _caption_size(width: int, height: int) -> int:
    return min(36, max(10, round(min(width, height * 1.6) * 0.036)))


def _badge(
    draw: ImageDraw.ImageDraw, at: tuple[int, int], text: str, font: _Font, height: int
) -> int:
    """Draw an amber rounded badge with ``text`` at ``at``; return its right edge."""
    x, y = at
    pad = round(height * 0.4)
    right = x + round(font.getlength(text)) + 2 * pad
    draw.rounded_rectangle((x, y, right, y + height), radius=height // 3, fill=(*_ACCENT, 255))
    draw.text((x + pad, y + height / 2), text, font=font, fill=(*_INK, 255), anchor="lm")
    return right


# The bundled font covers ASCII and a little Latin-1 punctuation; anything else prints as boxes.
_GLYPHS = frozenset(
    " !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`"
    "abcdefghijklmnopqrstuvwxyz{|}~©«°±´·»‘’“”…‹›"
)
_SPELLED = str.maketrans(
    {
        "—": "-",
        "–": "-",
        "‐": "-",
        "ß": "ss",
        "æ": "ae",
        "Æ": "AE",
        "œ": "oe",
        "Œ": "OE",
        "ø": "o",
        "Ø": "O",
        "ł": "l",
        "Ł": "L",
        "đ": "d",
        "€": "EUR",
        "×": "x",
    }
)


def _printable(text: str) -> str:
    """``text`` in the glyphs the bundled font has: accents dropped (é → e), others as '?'."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_SPELLED))
    kept = (c for c in decomposed if not unicodedata.combining(c))
    return "".join(c if c in _GLYPHS else "?" for c in kept)


def _wrap(text: str, font: _Font, max_width: int, *, max_lines: int) -> list[str]:
    """Greedy word wrap to ``max_width`` pixels; overlong words are broken; overflow ends in '…'."""
    words = _printable(" ".join(text.split())).split(" ")
    lines: list[str] = []
    current = ""
    for word in words:
        candidate = f"{current} {word}" if current else word
        if font.getlength(candidate) <= max_width:
            current = candidate
            continue
        if current:
            lines.append(current)
        while font.getlength(word) > max_width and len(word) > 1:
            cut = _fit_prefix(word, font, max_width)
            lines.append(word[:cut])
            word = word[cut:]
        current = word
    if current:
        lines.append(current)
    if len(lines) > max_lines:
        last = lines[max_lines - 1]
        while last and font.getlength(last + " …") > max_width:
            last = last[:-1]
        lines = [*lines[: max_lines - 1], last.rstrip() + " …"]
    return lines


def _fit_prefix(word: str, font: _Font, max_width: int) -> int:
    cut = len(word)
    while cut > 1 and font.getlength(word[:cut]) > max_width:
        cut -= 1
    return cut
