"""The preview backend's edit: a storyboard card that shows what the edit was asked to do.

The card is the input frame, slightly dimmed, with the edit prompt in a caption panel, thumbnails
of the reference images and a "PREVIEW · EDIT" marker. It carries the undimmed picture it was drawn
over in a private PNG chunk (``vkCl``, ignored by every decoder) when both fit in the size of an
uncompressed frame, so that animating the card can fade into the clean picture (see
:mod:`videokit.backends.preview`).
"""

from __future__ import annotations

import math
import struct
import zlib

from PIL import Image, ImageDraw

from videokit.backends.preview_draw import WHITE, badge, caption_size, load_font, wrap
from videokit.media.images import cover_fit, encode_png, load_rgb
from videokit.protocol import MAX_PIXELS, MAX_SIDE, MIN_SIDE, EditRequest

__all__ = ["clean_picture", "render_card"]

# A private, ancillary, safe-to-copy PNG chunk (the letter cases say so): the card's clean picture.
_CLEAN_CHUNK = b"vkCl"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _with_clean_picture(card_png: bytes, clean_png: bytes) -> bytes:
    """``card_png`` with ``clean_png`` in a ``vkCl`` chunk just before IEND (its last 12 bytes)."""
    chunk = (
        struct.pack(">I", len(clean_png))
        + _CLEAN_CHUNK
        + clean_png
        + struct.pack(">I", zlib.crc32(_CLEAN_CHUNK + clean_png))
    )
    return card_png[:-12] + chunk + card_png[-12:]


def clean_picture(png: bytes) -> bytes | None:
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


def render_card(request: EditRequest, sources: list[bytes]) -> tuple[bytes, int, int]:
    picture = load_rgb(sources[0])
    if request.width is not None and request.height is not None:
        width, height = request.width, request.height
    else:
        width, height = _card_size(picture.width, picture.height)
    base = cover_fit(picture, width, height)
    # Dimmed so the caption reads and the card is never mistaken for a real edit. The clip fades
    # into the undimmed picture (see _fade_card), so the dimming does not compound along a chain.
    card = base.point(lambda value: round(value * 0.88))

    size = round(caption_size(width, height) * 1.1)
    font = load_font(size)
    small = load_font(max(9, round(size * 0.8)))
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
    lines = wrap(request.prompt, font, text_w, max_lines=max_lines)
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
    badge_right = badge(draw, (margin + pad, margin + pad), "PREVIEW · EDIT", small, badge_h)
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
        draw.text((margin + pad, y), line, font=font, fill=(*WHITE, 255))
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
    framed = Image.new("RGB", (width, height), WHITE)  # a white mount, like a pinned photo
    framed.paste(cover_fit(image, width - 2 * border, height - 2 * border), (border, border))
    return framed
