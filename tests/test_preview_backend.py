"""The preview backend (storyboard cards, camera-move animatics) and the image safety helpers.

Clips are rendered at small sizes (256×144, 9-17 frames) and decoded with the bundled ffmpeg, so
the whole module runs in a few seconds on two cores.
"""

from __future__ import annotations

import asyncio
import io
import re
import struct
import subprocess
import zlib
from functools import cache

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image, ImageDraw

from videokit.backends.base import Backend, JobContext
from videokit.backends.preview import PreviewBackend, choose_camera_move
from videokit.media.ffmpeg import ffmpeg_exe
from videokit.media.images import (
    MAX_IMAGE_PIXELS,
    ImageRejected,
    cover_fit,
    decode_png_array,
    encode_png,
    inspect_image,
    load_rgb,
)
from videokit.protocol import AnimateRequest, AnimateResult, EditRequest, EditResult, MediaInput

Frames = npt.NDArray[np.uint8]

PROMPT = "A lantern glows as the boat drifts"
# Rows clear of the animatic's caption panel (bottom) at the small sizes used here.
TOP = slice(0, 70)


def _picture(width: int = 400, height: int = 300) -> Image.Image:
    """A smooth picture with structure: gradient sky and discs (compresses well, moves visibly)."""
    img = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(img)
    for y in range(height):
        draw.line([(0, y), (width, y)], fill=(30 + 150 * y // height, 90, 210 - 150 * y // height))
    for i in range(8):
        x, y = i * width // 8, height // 4 + (i % 3) * height // 6
        r = width // 20
        draw.ellipse((x, y, x + 2 * r, y + 2 * r), fill=(250, 200 - 20 * i, 40 + 25 * i))
    return img


@cache
def _input_png() -> bytes:
    return encode_png(_picture())


def _animate(**overrides: object) -> AnimateResult:
    fields: dict[str, object] = {
        "image": MediaInput.from_bytes(_input_png()),
        "prompt": PROMPT,
        "width": 256,
        "height": 144,
        "frames": 9,
        "fps": 12,
        "seed": 3,
    }
    fields.update(overrides)
    request = AnimateRequest.model_validate(fields)
    return asyncio.run(PreviewBackend().animate(request, JobContext("s", "animate")))


def _decode(video: bytes, width: int, height: int) -> Frames:
    proc = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", "pipe:0", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        input=video,
        capture_output=True,
        check=True,
    )
    return np.frombuffer(proc.stdout, np.uint8).reshape(-1, height, width, 3)


def _stream_info(video: bytes) -> str:
    proc = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-i", "pipe:0"], input=video, capture_output=True
    )
    match = re.search(r"Stream #0:0.*Video: .*", proc.stderr.decode())
    assert match, proc.stderr.decode()
    return match.group(0)


def _mad(a: Frames, b: Frames) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# -- animate ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height", "frames", "drop"),
    [(256, 144, 9, False), (256, 144, 9, True), (144, 256, 17, False), (320, 240, 17, True)],
)
def test_clip_has_exact_frame_count_size_and_fps(
    width: int, height: int, frames: int, drop: bool
) -> None:
    result = _animate(width=width, height=height, frames=frames, drop_first_frame=drop)
    expected = frames - 1 if drop else frames
    assert result.frames == expected
    assert (result.width, result.height, result.fps) == (width, height, 12)
    assert result.video.content_type == "video/mp4"
    assert result.model == "preview/animatic@2"
    decoded = _decode(result.video.decode(), width, height)
    assert decoded.shape[0] == expected
    info = _stream_info(result.video.decode())
    assert "h264" in info and "yuv420p" in info and f"{width}x{height}" in info
    assert re.search(r"\b12 fps\b", info), info
    last = decode_png_array(result.last_frame.decode())
    assert last.shape == (height, width, 3)


def test_clip_is_deterministic() -> None:
    first, second = _animate(seed=11), _animate(seed=11)
    assert first.last_frame.sha256 == second.last_frame.sha256
    assert first.video.sha256 == second.video.sha256  # pinned x264 threads: even the bytes match
    assert np.array_equal(
        _decode(first.video.decode(), 256, 144), _decode(second.video.decode(), 256, 144)
    )


def test_first_frame_is_the_cover_fitted_input_and_last_frame_png_has_no_overlay() -> None:
    result = _animate(frames=9)
    frames = _decode(result.video.decode(), 256, 144)
    fitted = np.asarray(cover_fit(load_rgb(_input_png()), 256, 144))
    assert _mad(frames[0][TOP], fitted[TOP]) < 4
    # The camera has moved by the end.
    assert _mad(frames[-1][TOP], fitted[TOP]) > 8

    last = decode_png_array(result.last_frame.decode())
    assert _mad(last[TOP], frames[-1][TOP]) < 4
    # The bottom of every video frame carries the caption panel; the last-frame PNG must not (it is
    # the next scene's input, and captions would stack across chained scenes).
    bottom = slice(110, 144)
    assert _mad(last[bottom], frames[-1][bottom]) > 15


def test_drop_first_frame_skips_exactly_frame_zero() -> None:
    full = _decode(_animate(frames=9).video.decode(), 256, 144)
    dropped = _decode(_animate(frames=9, drop_first_frame=True).video.decode(), 256, 144)
    assert dropped.shape[0] == 8
    assert _mad(dropped[0][TOP], full[1][TOP]) < 4
    assert _mad(dropped[-1][TOP], full[-1][TOP]) < 4


def test_different_seeds_give_different_camera_moves() -> None:
    moves = {seed: choose_camera_move(seed) for seed in range(40)}
    assert len({move.kind for move in moves.values()}) >= 4
    assert all(0.08 <= move.zoom <= 0.15 for move in moves.values())
    seed_a = 0
    seed_b = next(s for s, m in moves.items() if m.kind != moves[seed_a].kind)
    last_a = decode_png_array(_animate(seed=seed_a).last_frame.decode())
    last_b = decode_png_array(_animate(seed=seed_b).last_frame.decode())
    assert _mad(last_a, last_b) > 5


def test_camera_direction_named_in_the_prompt_wins() -> None:
    assert choose_camera_move(1, "The camera pans left across the harbour").kind == "pan left"
    assert choose_camera_move(2, "slow zoom in on her face").kind == "push in"
    assert choose_camera_move(3, "Camera tilts up to the sky").kind == "tilt up"


def test_progress_is_reported_and_url_inputs_are_refused() -> None:
    seen: list[float] = []
    ctx = JobContext("s", "animate", on_progress=lambda fraction, _msg: seen.append(fraction))
    request = AnimateRequest(
        image=MediaInput.from_bytes(_input_png()),
        prompt=PROMPT,
        width=256,
        height=144,
        frames=21,
        seed=1,
    )
    asyncio.run(PreviewBackend().animate(request, ctx))
    assert seen[-1] == 1.0 and len(seen) >= 3 and seen == sorted(seen)

    by_url = request.model_copy(update={"image": MediaInput(url="https://example.com/a.png")})
    with pytest.raises(ValueError, match="inline"):
        asyncio.run(PreviewBackend().animate(by_url, JobContext("s", "animate")))


def test_backend_protocol_identity_and_concurrency() -> None:
    backend = PreviewBackend(concurrency=3)
    assert isinstance(backend, Backend)
    assert backend.name == "preview"
    assert backend.identity("edit") == "preview/storyboard@2"
    assert backend.identity("animate") == "preview/animatic@2"
    assert backend.concurrency("animate") == 3
    assert 1 <= PreviewBackend().concurrency("edit") <= 4
    with pytest.raises(ValueError):
        PreviewBackend(concurrency=0)


# -- edit ------------------------------------------------------------------------------------------


def _edit(**overrides: object) -> EditResult:
    fields: dict[str, object] = {
        "images": [MediaInput.from_bytes(_input_png())],
        "prompt": "Turn the sky into a starry night",
        "seed": 5,
    }
    fields.update(overrides)
    request = EditRequest.model_validate(fields)
    return asyncio.run(PreviewBackend().edit(request, JobContext("s", "edit")))


def test_edit_card_has_requested_size_and_differs_from_input() -> None:
    reference = MediaInput.from_bytes(encode_png(_picture(120, 200)))
    result = _edit(width=256, height=144, images=[MediaInput.from_bytes(_input_png()), reference])
    assert (result.width, result.height) == (256, 144)
    assert result.image.content_type == "image/png"
    assert result.model == "preview/storyboard@2" and result.seed == 5
    card = decode_png_array(result.image.decode())
    assert card.shape == (144, 256, 3)
    fitted = np.asarray(cover_fit(load_rgb(_input_png()), 256, 144))
    assert _mad(card, fitted) > 5
    # Deterministic, byte for byte.
    again = _edit(width=256, height=144, images=[MediaInput.from_bytes(_input_png()), reference])
    assert again.image.sha256 == result.image.sha256


def test_an_animated_card_fades_into_its_clean_picture_and_ends_clean() -> None:
    card = _edit(width=256, height=144).image.decode()
    clean = encode_png(cover_fit(load_rgb(_input_png()), 256, 144))
    # Any decoder reads the card as the card (the clean picture rides in an ancillary chunk).
    shown = decode_png_array(card)
    assert _mad(shown[TOP], decode_png_array(clean)[TOP]) > 10
    from_card = _animate(image=MediaInput.from_bytes(card), frames=17)
    from_clean = _animate(image=MediaInput.from_bytes(clean), frames=17)
    frames = _decode(from_card.video.decode(), 256, 144)
    assert _mad(frames[0][TOP], shown[TOP]) < 4  # it opens on the card, as its input shows it
    # ...and ends on the clean picture: the next scene starts without a remnant of the card.
    assert from_card.last_frame.decode() == from_clean.last_frame.decode()
    clean_frames = _decode(from_clean.video.decode(), 256, 144)
    # (Within coding noise: an h264 frame depends on the frames before it.)
    assert _mad(frames[-1][TOP], clean_frames[-1][TOP]) < 3


def test_a_damaged_clean_picture_chunk_is_ignored() -> None:
    card = bytearray(_edit(width=256, height=144).image.decode())
    at = card.index(b"vkCl")
    card[at + 40] ^= 0xFF  # inside the chunk's data: its CRC no longer matches
    result = _animate(image=MediaInput.from_bytes(bytes(card)), frames=9)
    last = decode_png_array(result.last_frame.decode())
    # Animated as a plain picture: the card is still there at the end (pushed in, not faded).
    clean_end = decode_png_array(
        _animate(image=MediaInput.from_bytes(_input_png()), frames=9).last_frame.decode()
    )
    assert _mad(last[TOP], clean_end[TOP]) > 10


def test_a_noisy_card_too_big_to_carry_its_clean_picture_stays_a_plain_card() -> None:
    noise = np.random.default_rng(1).integers(0, 256, (144, 256, 3), dtype=np.uint8)
    card = _edit(width=256, height=144, images=[MediaInput.from_bytes(encode_png(noise))])
    data = card.image.decode()
    assert b"vkCl" not in data and len(data) <= 144 * (256 * 3 + 1)


def test_edit_card_without_size_keeps_input_size_snapped_to_16() -> None:
    result = _edit()  # the input is 400×300
    assert (result.width, result.height) == (400, 288)
    odd = MediaInput.from_bytes(encode_png(_picture(200, 90)))
    small = _edit(images=[odd])
    assert small.width % 16 == 0 and small.height % 16 == 0
    assert small.height >= 128 and small.width >= 128


# -- images ----------------------------------------------------------------------------------------


def _png_with_header(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR claims ``width``×``height`` (nothing of that size is allocated)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"just some words, not pixels", "text"),
        (b"<html><body>403 Forbidden</body></html>", "text document"),
        (bytes(range(256)) * 4, "not an image"),
        (b"", "empty"),
        (_png_with_header(100_000, 100_000), "pixels"),
        (_png_with_header(8000, 6000), "over the limit"),
    ],
)
def test_images_rejects_bad_input(data: bytes, reason: str) -> None:
    with pytest.raises(ImageRejected, match=reason):
        inspect_image(data)
    with pytest.raises(ImageRejected):
        load_rgb(data)


def test_images_rejects_truncated_files() -> None:
    png = encode_png(np.asarray(_picture()))
    with pytest.raises(ImageRejected, match="truncated or corrupt"):
        inspect_image(png[: len(png) // 2])
    with pytest.raises(ImageRejected, match="truncated or corrupt"):
        load_rgb(png[: len(png) // 2])
    buf = io.BytesIO()
    _picture().save(buf, format="JPEG")
    jpeg = buf.getvalue()[:-300]
    with pytest.raises(ImageRejected, match="truncated"):
        inspect_image(jpeg, decode=True)


def test_images_limits_and_info() -> None:
    info = inspect_image(_input_png())
    assert (info.width, info.height, info.format) == (400, 300, "PNG")
    assert MAX_IMAGE_PIXELS >= 8192 * 4320
    with pytest.raises(ImageRejected, match="over the limit"):
        load_rgb(_input_png(), max_pixels=100_000)


def test_load_rgb_applies_exif_orientation_and_flattens_alpha() -> None:
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif)
    assert load_rgb(buf.getvalue()).size == (20, 40)

    clear = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    out = load_rgb(encode_png(np.asarray(clear)))
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (255, 255, 255)


def test_encode_png_is_lossless_and_carries_no_metadata() -> None:
    array = np.asarray(_picture(64, 48))
    img = Image.fromarray(array)
    img.info["dpi"] = (300, 300)
    img.info["icc_profile"] = b"not a real profile"
    data = encode_png(img)
    assert data == encode_png(array)
    assert np.array_equal(decode_png_array(data), array)
    kinds, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kinds.append(data[pos + 4 : pos + 8])
        pos += 12 + length
    assert set(kinds) == {b"IHDR", b"IDAT", b"IEND"}


def test_cover_fit_survives_a_scale_that_rounds_past_the_source() -> None:
    # 1700x1400 onto 27x22: 27 / (27 / 1700) is a hair over 1700 in floating point, which made
    # the resampling box start at -1e-13 and Pillow refuse it (a big edit reference on a small
    # preview card failed the job).
    from PIL import Image

    from videokit.media.images import cover_fit

    fitted = cover_fit(Image.new("RGB", (1700, 1400), (9, 99, 199)), 27, 22)
    assert fitted.size == (27, 22) and fitted.getpixel((13, 11)) == (9, 99, 199)
