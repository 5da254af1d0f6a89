"""Safe image helpers: inspect, decode, fit and encode still frames.

Every image videokit touches comes from a user (a story's reference picture) or from a worker (an
edited frame, a clip's last frame), so decoding is guarded: the pixel count is read from the header
and checked *before* any pixel is decoded (a 100 kB PNG can claim 100000×100000 pixels and ask for
30 GB), only common still-image formats are accepted (Pillow knows dozens of rarely-used decoders;
fewer decoders means less attack surface), and every decoding failure surfaces as one exception,
:class:`ImageRejected`, with a reason a user can act on.

PNG is the lossless interchange format between stages; :func:`encode_png` writes no metadata chunks
so that the same pixels always give the same bytes (cache keys and checksums depend on it).
"""

from __future__ import annotations

import io
import os
import struct
import threading
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Literal, NamedTuple

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from videokit.errors import VideoKitError

__all__ = [
    "ACCEPTED_FORMATS",
    "FIT_MODES",
    "MAX_IMAGE_PIXELS",
    "CropLoss",
    "ImageInfo",
    "ImageRejected",
    "ImageSource",
    "cover_fit",
    "crop_loss",
    "decode_png_array",
    "encode_png",
    "fit_image",
    "fit_png",
    "inspect_image",
    "load_rgb",
]

#: Largest image (width × height) videokit will decode: 40 MP covers any camera photo or 8K frame,
#: and bounds one decoded RGB image at ~120 MB.
MAX_IMAGE_PIXELS = 40_000_000

#: Pillow format names accepted as input. Pillow reads many more (PCX, SGI, FITS, ...); those are
#: refused: nobody feeds them to a video model, and each decoder is code an attacker can reach.
ACCEPTED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")

#: How an image whose aspect ratio is not the frame's becomes a frame (see :func:`fit_image`).
FIT_MODES: tuple[str, ...] = ("crop", "pad", "stretch")

#: A path to an image file, or its bytes.
ImageSource = str | os.PathLike[str] | bytes | bytearray | memoryview

# Lossless and quick: level 6 is zlib's default trade-off and only a few percent larger than 9.
_PNG_COMPRESS_LEVEL = 6

# Pillow signals its own decompression-bomb threshold with a *warning*; turning it into an error
# needs warnings.catch_warnings, which swaps process-global state and is not thread-safe. This lock
# keeps our concurrent opens (the backend decodes in worker threads) from interleaving those swaps.
# Held only while the header is parsed, which is cheap.
_WARNINGS_LOCK = threading.Lock()

# Failures Pillow raises for broken, truncated or hostile files (it uses all of these in practice).
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    TypeError,
    struct.error,
    zlib.error,
)


class ImageRejected(VideoKitError, ValueError):
    """An image was refused: not an image, an unsupported format, corrupt, or too large.

    A ``ValueError`` (callers validating input can catch that) and a ``VideoKitError`` (the CLI
    prints it without a traceback). ``reason`` is the message without the source label.
    """

    def __init__(self, reason: str, *, source: str | None = None, hint: str | None = None):
        self.reason = reason
        self.source = source
        super().__init__(f"{source}: {reason}" if source else reason, hint=hint)


@dataclass(frozen=True)
class ImageInfo:
    """What an image's header says: size in pixels and the Pillow format name (``"PNG"``...)."""

    width: int
    height: int
    format: str

    @property
    def pixels(self) -> int:
        return self.width * self.height


def inspect_image(
    source: ImageSource, *, max_pixels: int = MAX_IMAGE_PIXELS, decode: bool = False
) -> ImageInfo:
    """Check that ``source`` is an acceptable image and return its size and format.

    Reads the header and runs Pillow's ``verify()`` (for PNG that walks every chunk and checks its
    CRC, so truncation and corruption are caught without decompressing). ``verify()`` cannot see a
    truncated JPEG/WebP; pass ``decode=True`` to also decode the pixels (JPEG at 1/8 scale, which
    still reads every byte of the entropy-coded data) when that matters more than speed.

    Raises :class:`ImageRejected`. A missing or unreadable *file* raises the usual ``OSError``:
    that is a path problem, not an image problem, and deserves its own message upstream.
    """
    label = _label(source)
    with _binary(source) as fh:
        img = _open_checked(fh, max_pixels=max_pixels, label=label)
        info = ImageInfo(width=img.width, height=img.height, format=str(img.format))
        with _rejecting(label):
            img.verify()
        img.close()
    if decode:
        # A fresh handle: verify() may close the one it was given (PNG does).
        with _binary(source) as fh:
            img = _open_checked(fh, max_pixels=max_pixels, label=label)
            with _rejecting(label):
                # draft() lets libjpeg decode at reduced scale; other formats ignore it.
                img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
                img.load()
            img.close()
    return info


def load_rgb(source: ImageSource, *, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode ``source`` into an upright 8-bit RGB image.

    The pixel limit is checked from the header before decoding. EXIF orientation is applied (phone
    photos are stored sideways with a rotation tag). Transparency is flattened onto white: what sits
    under fully transparent pixels is arbitrary, and a model should see what a viewer sees. The
    first frame of an animated GIF/WebP is used.
    """
    label = _label(source)
    with _binary(source) as fh:
        img = _open_checked(fh, max_pixels=max_pixels, label=label)
        with _rejecting(label):
            img.load()
            upright = ImageOps.exif_transpose(img)
            rgb = _to_rgb(upright)
    return rgb


def cover_fit(img: Image.Image, width: int, height: int) -> Image.Image:
    """Scale ``img`` so it covers ``width``×``height``, then centre-crop to exactly that size.

    The crop is expressed as a resampling box, so scaling and cropping are one Lanczos pass (no
    intermediate image, no double filtering).
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"target size must be positive, got {width}x{height}")
    src_w, src_h = img.size
    scale = max(width / src_w, height / src_h)
    # min(): width / scale can come out a hair over the source's side in floating point.
    box_w, box_h = min(src_w, width / scale), min(src_h, height / scale)
    left, top = (src_w - box_w) / 2, (src_h - box_h) / 2
    box = (left, top, left + box_w, top + box_h)
    # reducing_gap: shrink big photos by an integer factor first (fast box filter), then Lanczos;
    # at gap 3 the result is indistinguishable from a full Lanczos pass and several times faster.
    return img.resize((width, height), Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)


def fit_image(img: Image.Image, width: int, height: int, mode: str) -> Image.Image:
    """``img`` as an RGB image of exactly ``width``×``height``, by ``mode`` (:data:`FIT_MODES`).

    ``crop`` scales to cover and cuts the overflow evenly (:func:`cover_fit`); ``pad`` scales to
    fit inside and centres the picture on black bars; ``stretch`` resizes to the exact size,
    distorting the picture. An image already of that size comes back unchanged (as RGB).
    Transparency is flattened onto white, as :func:`load_rgb` does.
    """
    if mode not in FIT_MODES:
        raise ValueError(f"unknown fit mode {mode!r}; use one of {', '.join(FIT_MODES)}")
    if width <= 0 or height <= 0:
        raise ValueError(f"target size must be positive, got {width}x{height}")
    rgb = _to_rgb(img)
    if rgb.size == (width, height):
        return rgb.copy() if rgb is img else rgb
    if mode == "crop":
        return cover_fit(rgb, width, height)
    if mode == "stretch":
        return rgb.resize((width, height), Image.Resampling.LANCZOS, reducing_gap=3.0)
    src_w, src_h = rgb.size
    scale = min(width / src_w, height / src_h)
    inner = (
        min(width, max(1, round(src_w * scale))),
        min(height, max(1, round(src_h * scale))),
    )
    picture = rgb.resize(inner, Image.Resampling.LANCZOS, reducing_gap=3.0)
    canvas = Image.new("RGB", (width, height), (0, 0, 0))
    canvas.paste(picture, ((width - inner[0]) // 2, (height - inner[1]) // 2))
    return canvas


def fit_png(
    data: bytes, width: int, height: int, mode: str, *, max_pixels: int = MAX_IMAGE_PIXELS
) -> bytes:
    """``data`` (an encoded image) fitted to ``width``×``height`` by ``mode``, as PNG bytes.

    An image that already is exactly that size, upright, is returned as is, byte for byte (so a
    correctly sized input keeps its cache key); anything else is decoded, fitted with
    :func:`fit_image` and written with :func:`encode_png`, so the result is deterministic.
    Raises :class:`ImageRejected` for data that is not an acceptable image.
    """
    if mode not in FIT_MODES:
        raise ValueError(f"unknown fit mode {mode!r}; use one of {', '.join(FIT_MODES)}")
    with io.BytesIO(data) as fh:
        img = _open_checked(fh, max_pixels=max_pixels, label="image data")
        with _rejecting("image data"):
            # An EXIF rotation makes the picture's upright size differ from the header's.
            upright = img.getexif().get(_EXIF_ORIENTATION, 1) == 1
        exact = upright and img.size == (width, height)
        img.close()
    if exact:
        return data
    return encode_png(fit_image(load_rgb(data, max_pixels=max_pixels), width, height, mode))


class CropLoss(NamedTuple):
    """What ``crop`` cuts from a ``src_w``×``src_h`` image to make a frame (:func:`crop_loss`)."""

    #: "top and bottom", "left and right", or "" when the aspect ratios match.
    sides: str
    #: Source pixels cut from each of the two sides.
    pixels: int
    #: Share of the picture's area that is cut, 0 to 1.
    fraction: float


def crop_loss(src_w: int, src_h: int, width: int, height: int) -> CropLoss:
    """What :func:`cover_fit` (``fit: crop``) cuts from a ``src_w``×``src_h`` image to make a
    ``width``×``height`` frame: the sides it cuts, the source pixels from each, the share lost."""
    if min(src_w, src_h, width, height) <= 0:
        raise ValueError(f"sizes must be positive, got {src_w}x{src_h} and {width}x{height}")
    if src_w * height == src_h * width:
        return CropLoss("", 0, 0.0)
    if src_w * height > src_h * width:  # wider than the frame: the sides go
        kept = src_h * width / height
        return CropLoss("left and right", round((src_w - kept) / 2), 1 - kept / src_w)
    kept = src_w * height / width
    return CropLoss("top and bottom", round((src_h - kept) / 2), 1 - kept / src_h)


def encode_png(image: Image.Image | npt.NDArray[np.uint8]) -> bytes:
    """Encode an image (or an H×W×3 / H×W×4 / H×W uint8 array) as a deterministic PNG.

    Lossless; no text, time, gamma, ICC or EXIF chunks, so equal pixels give equal bytes.
    """
    if isinstance(image, np.ndarray):
        img = _from_array(image)
    else:
        img = image if image.mode in ("RGB", "RGBA", "L", "LA") else image.convert("RGB")
        # A copy with empty info: Pillow's PNG writer copies some entries (icc_profile,
        # transparency) from .info, which would smuggle metadata from the source file.
        img = img.copy()
        img.info.clear()
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=_PNG_COMPRESS_LEVEL, optimize=False)
    return buf.getvalue()


def decode_png_array(
    data: bytes, *, mode: Literal["RGB", "RGBA", "L"] = "RGB", max_pixels: int = MAX_IMAGE_PIXELS
) -> npt.NDArray[np.uint8]:
    """Decode PNG bytes into an H×W×3 (``RGB``), H×W×4 (``RGBA``) or H×W (``L``) uint8 array."""
    with io.BytesIO(data) as fh:
        img = _open_checked(fh, max_pixels=max_pixels, label="PNG data", formats=("PNG",))
        with _rejecting("PNG data"):
            img.load()
            converted = img if img.mode == mode else img.convert(mode)
            return np.asarray(converted, dtype=np.uint8).copy()


# --------------------------------------------------------------------------------------------------


def _label(source: ImageSource) -> str:
    if isinstance(source, bytes | bytearray | memoryview):
        return "image data"
    return os.fspath(source)


@contextmanager
def _binary(source: ImageSource) -> Iterator[IO[bytes]]:
    if isinstance(source, bytes | bytearray | memoryview):
        with io.BytesIO(bytes(source)) as buf:
            yield buf
    else:
        # Opened here rather than by Pillow so that a missing file stays a plain OSError.
        with open(source, "rb") as fh:
            yield fh


@contextmanager
def _rejecting(label: str) -> Iterator[None]:
    """Turn Pillow's decode failures into :class:`ImageRejected`."""
    try:
        yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(
            f"too many pixels to decode safely ({exc})", source=label, hint=_SHRINK_HINT
        ) from exc
    except _DECODE_ERRORS as exc:
        raise ImageRejected(
            f"the image is truncated or corrupt ({exc})",
            source=label,
            hint="re-export or re-download the file",
        ) from exc


_EXIF_ORIENTATION = 0x0112

_SHRINK_HINT = "downscale the image (videokit never needs more than a few megapixels)"


def _open_checked(
    fh: IO[bytes], *, max_pixels: int, label: str, formats: tuple[str, ...] = ACCEPTED_FORMATS
) -> Image.Image:
    """Open (header only) and enforce format and pixel limits before anything is decoded."""
    try:
        with _WARNINGS_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(fh, formats=list(formats))
    except UnidentifiedImageError as exc:
        fh.seek(0)
        raise ImageRejected(_unidentified_reason(fh.read(512), formats), source=label) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(
            f"the header claims more pixels than can be decoded safely ({exc})",
            source=label,
            hint=_SHRINK_HINT,
        ) from exc
    except _DECODE_ERRORS as exc:
        raise ImageRejected(
            f"the image header is corrupt ({exc})", source=label, hint="re-export the file"
        ) from exc
    width, height = img.size
    if width <= 0 or height <= 0:
        img.close()
        raise ImageRejected(f"the image has no pixels ({width}x{height})", source=label)
    if width * height > max_pixels:
        img.close()
        raise ImageRejected(
            f"{width}x{height} is {width * height:,} pixels, over the limit of {max_pixels:,} "
            "(a guard against decompression bombs)",
            source=label,
            hint=_SHRINK_HINT,
        )
    return img


# Signatures of formats a user is likely to try, to tell "broken PNG" from "not an image at all".
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF8", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
)


def _sniff(head: bytes) -> str | None:
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"mif1", b"avif"):
        return "HEIF/AVIF"
    return next((name for magic, name in _MAGIC if head.startswith(magic)), None)


def _unidentified_reason(head: bytes, formats: tuple[str, ...]) -> str:
    accepted = ", ".join(formats)
    if not head.strip():
        return "the file is empty"
    sniffed = _sniff(head)
    if sniffed in formats:
        return f"the file starts like a {sniffed} but its header is truncated or corrupt"
    if sniffed is not None:
        return f"{sniffed} images are not accepted here; accepted: {accepted}"
    stripped = head.lstrip()
    # A very common failure: a download that saved an HTML error page or a JSON error as "image".
    if stripped[:1] in (b"<", b"{", b"["):
        return f"this is a text document (HTML/XML/JSON?), not an image; accepted: {accepted}"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return f"not an image, or an unsupported format; accepted: {accepted}"
    return f"this is text, not an image; accepted: {accepted}"


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale to 8 bits (a plain convert() clips everything above 255 to white).
        img = img.convert("I").point(lambda value: value * (1 / 256)).convert("L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def _from_array(array: npt.NDArray[np.uint8]) -> Image.Image:
    if array.dtype != np.uint8:
        raise ValueError(f"expected a uint8 array, got {array.dtype}")
    # Pillow infers L / RGB / RGBA from the shape of a uint8 array.
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4)):
        return Image.fromarray(np.ascontiguousarray(array))
    raise ValueError(f"expected an H×W, H×W×3 or H×W×4 array, got shape {array.shape}")
