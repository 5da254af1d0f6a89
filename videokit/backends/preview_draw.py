"""Drawing for the preview backend: the animatic's caption panel, fonts, badges and word wrap.

Text is drawn with the scalable font Pillow bundles, so the pixels are the same on every machine;
prompts are reduced to the glyphs that font has, wrapped to the panel and cut with an ellipsis.
"""

from __future__ import annotations

import unicodedata

from PIL import Image, ImageDraw, ImageFont

from videokit.backends.preview_moves import CameraMove

__all__ = ["WHITE", "ClipOverlay", "Font", "badge", "caption_size", "load_font", "wrap"]

ACCENT = (255, 196, 61)  # badge colour: amber reads on both bright and dark pictures
INK = (24, 24, 28)
WHITE = (255, 255, 255)


class ClipOverlay:
    """The animatic's burned-in panel, pre-rendered once and composited onto every frame.

    One panel at the bottom: a "PREVIEW" badge with the camera move, the frame counter on the right,
    then the motion prompt. Only the panel's rectangle is composited (the rest of the frame is left
    alone), and only the counter text is drawn per frame. The counter numbers the model's frames
    (1..frames), so a clip that drops its first frame starts at 2.
    """

    def __init__(self, width: int, height: int, prompt: str, move: CameraMove, total: int) -> None:
        self.total = total
        size = caption_size(width, height)
        self.font = load_font(size)
        small = load_font(max(9, round(size * 0.8)))
        margin = max(4, round(min(width, height) * 0.025))
        pad = max(3, round(size * 0.45))
        line_h = round(size * 1.3)
        panel_w = width - 2 * margin
        text_w = panel_w - 2 * pad
        badge_h = round(small.size * 1.5)
        lines = wrap(prompt, self.font, text_w, max_lines=3)
        panel_h = pad + badge_h + round(pad * 0.6) + line_h * len(lines) + pad
        top = height - margin - panel_h
        self.box = (margin, top, margin + panel_w, top + panel_h)

        panel = Image.new("RGBA", (panel_w, panel_h), (0, 0, 0, 0))
        draw = ImageDraw.Draw(panel)
        draw.rounded_rectangle(
            (0, 0, panel_w - 1, panel_h - 1), radius=max(2, pad), fill=(10, 10, 14, 165)
        )
        badge_right = badge(draw, (pad, pad), "PREVIEW", small, badge_h)
        draw.text(
            (badge_right + pad, pad + badge_h / 2),
            f"camera: {move.kind} {move.zoom:.0%}",
            font=small,
            fill=(220, 220, 220, 255),
            anchor="lm",
        )
        y = pad + badge_h + round(pad * 0.6)
        for line in lines:
            draw.text((pad, y), line, font=self.font, fill=(*WHITE, 255))
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
            fill=WHITE,
            anchor="rm",
        )
        return frame


Font = ImageFont.FreeTypeFont


def load_font(size: int) -> Font:
    # Pillow >= 10.1 bundles a scalable font (Aileron) with load_default(size=...): no system fonts,
    # so the pixels are the same on every machine. Loading it is ~0.1 ms, so no cache is needed (and
    # no FreeType face is shared between render threads).
    font = ImageFont.load_default(size=size)
    if not isinstance(font, ImageFont.FreeTypeFont):
        raise RuntimeError("the preview backend needs Pillow built with FreeType")
    return font


def caption_size(width: int, height: int) -> int:
    return min(36, max(10, round(min(width, height * 1.6) * 0.036)))


def badge(
    draw: ImageDraw.ImageDraw, at: tuple[int, int], text: str, font: Font, height: int
) -> int:
    """Draw an amber rounded badge with ``text`` at ``at``; return its right edge."""
    x, y = at
    pad = round(height * 0.4)
    right = x + round(font.getlength(text)) + 2 * pad
    draw.rounded_rectangle((x, y, right, y + height), radius=height // 3, fill=(*ACCENT, 255))
    draw.text((x + pad, y + height / 2), text, font=font, fill=(*INK, 255), anchor="lm")
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


def wrap(text: str, font: Font, max_width: int, *, max_lines: int) -> list[str]:
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


def _fit_prefix(word: str, font: Font, max_width: int) -> int:
    cut = len(word)
    while cut > 1 and font.getlength(word[:cut]) > max_width:
        cut -= 1
    return cut
