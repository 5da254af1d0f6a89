"""The contact sheet: one PNG with every scene's first and last frame, labelled by scene id.

People look at this before they read a manifest: it shows at a glance whether the chain held
(each scene's first frame should match the previous scene's last frame on a continuous shot).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

__all__ = ["ContactCell", "make_contact_sheet"]

_BACKGROUND = (24, 24, 28)
_TEXT = (235, 235, 240)
_MUTED = (150, 150, 160)


@dataclass(frozen=True)
class ContactCell:
    label: str
    first: Path
    last: Path
    note: str | None = None


def make_contact_sheet(
    cells: Sequence[ContactCell],
    out: Path,
    *,
    title: str = "",
    thumb_width: int = 320,
    columns: int = 2,
) -> Path:
    """Write a grid of (first, last) frame pairs to ``out`` and return it."""
    if not cells:
        raise ValueError("a contact sheet needs at least one scene")
    with Image.open(cells[0].first) as probe:
        aspect = probe.height / probe.width
    thumb = (thumb_width, max(1, round(thumb_width * aspect)))
    pad, label_h, caption_h, header_h = 16, 28, 20, 48 if title else 0
    cell_w = 2 * thumb[0] + 3 * pad
    cell_h = label_h + thumb[1] + caption_h + 2 * pad
    columns = max(1, min(columns, len(cells)))
    rows = (len(cells) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * cell_w + pad, header_h + rows * cell_h + pad), _BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=18)
    small = ImageFont.load_default(size=13)
    if title:
        draw.text((pad, 14), title, fill=_TEXT, font=ImageFont.load_default(size=24))
    for i, cell in enumerate(cells):
        x0 = pad + (i % columns) * cell_w
        y0 = header_h + pad + (i // columns) * cell_h
        label = f"{i + 1}. {cell.label}" + (f"  ({cell.note})" if cell.note else "")
        draw.text((x0, y0), label, fill=_TEXT, font=font)
        for j, (path, caption) in enumerate(
            ((cell.first, "first frame"), (cell.last, "last frame"))
        ):
            with Image.open(path) as frame:
                picture = frame.convert("RGB").resize(thumb, Image.Resampling.LANCZOS)
            x = x0 + j * (thumb[0] + pad)
            sheet.paste(picture, (x, y0 + label_h))
            draw.text((x, y0 + label_h + thumb[1] + 4), caption, fill=_MUTED, font=small)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    sheet.save(tmp, format="PNG")
    tmp.replace(out)
    return out
