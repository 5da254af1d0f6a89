"""An emulator of three RunPod Public Endpoints, served over real HTTP on 127.0.0.1 for tests.

Schemas follow runpod/docs at commit a900806e253c4f8c16da27d1a4370e72456da4cb (2026-08-20; the
model pages last changed 2026-07-20): public-endpoints/models/wan-2-2-i2v.mdx,
qwen-image-edit-2511.mdx, qwen-image-edit.mdx (LoRA variants wan-2-2-i2v-lora.mdx and
qwen-image-edit-2511-lora.mdx are not emulated) and public-endpoints/requests.mdx.

They speak the v2 queue API at ``{base_url}/{endpoint_id}/``: ``POST run``, ``POST runsync?wait=ms``,
``GET status/{id}``, ``GET stream/{id}``, ``POST cancel/{id}``, ``GET health``. A job fetches its
input image URL(s) with httpx and produces a real output: an edited image (cover-cropped to the
output size, middle third inverted) or an H.264 MP4 of ``16 * duration + 1`` frames at 16 fps
(the input, tinted by a per-frame colour, with a white bar whose height encodes the frame index).
Results are served at ``{origin}/results/{token}/output.{ext}`` and expire like presigned URLs.
Bad parameters make the job FAILED with an error naming the field, as the real endpoints do.
"""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
from PIL import Image
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.queue_emulator import JobFailed, QueueEmulator, QueueJob
from videokit.media.ffmpeg import RawVideoWriter
from videokit.media.images import cover_fit, load_rgb

__all__ = [
    "ENDPOINT_IDS",
    "QWEN_EDIT",
    "QWEN_EDIT_2511",
    "WAN_I2V",
    "Batch",
    "JobFailed",
    "PublicEndpoints",
    "PublicJob",
    "animate",
    "encode_clip",
    "serve_public_endpoints",
    "video_frame",
]

WAN_I2V = "wan-2-2-i2v-720"
QWEN_EDIT_2511 = "qwen-image-edit-2511"
QWEN_EDIT = "qwen-image-edit"
ENDPOINT_IDS = (WAN_I2V, QWEN_EDIT_2511, QWEN_EDIT)

WAN_SIZES = ("1280*720", "720*1280")
QWEN_2511_SIZES = ("1024*1024", "1024*1280", "1280*1024", "1280*1280", "1280*1536", "1536*1080")
FPS = 16
_CONTENT_TYPES = dict(jpeg="image/jpeg", png="image/png", webp="image/webp", mp4="video/mp4")
_INVALID_IMAGE = "Invalid image URL"

Frame = npt.NDArray[np.uint8]
PublicJob = QueueJob  # the name this module used before the queue machinery moved out


@dataclass
class _Result:
    data: bytes
    content_type: str
    created: float = field(default_factory=time.monotonic)
    expired: bool = False


def video_frame(base3: npt.NDArray[np.uint16], index: int, count: int) -> Frame:
    """Frame ``index`` of ``count``, from ``base3`` (the fitted input image as uint16, times 3).

    3/4 image + 1/4 a per-frame colour (consecutive frames differ by 19 levels on average over
    the whole picture), and a white full-width bar that moves from top (frame 0) to bottom.
    """
    tint = np.array(
        [(index * 96) % 256, (index * 160 + 64) % 256, (index * 224 + 128) % 256], np.uint16
    )
    frame = ((base3 + tint) >> 2).astype(np.uint8)
    height = frame.shape[0]
    bar = max(4, height // 30)
    top = round(index * (height - bar) / max(1, count - 1))
    frame[top : top + bar] = 255
    return frame


@dataclass(frozen=True)
class Batch:
    """A clip (or a ComfyUI IMAGE batch): ``count`` frames of ``width``×``height``, drawn on demand."""

    width: int
    height: int
    count: int
    draw: Callable[[int], Frame]

    def frame(self, index: int) -> Frame:
        """Frame ``index`` (negative counts from the end), H×W×3 RGB as it is before encoding."""
        return self.draw(index % self.count)

    def frames(self) -> Iterator[Frame]:
        return (self.draw(index) for index in range(self.count))


def animate(image: Image.Image | None, width: int, height: int, count: int) -> Batch:
    """The "generated" clip: :func:`video_frame` over ``image`` cover-fitted (None: mid-grey)."""
    fitted = cover_fit(image, width, height) if image else Image.new("RGB", (width, height), "grey")
    base3 = np.asarray(fitted, dtype=np.uint16) * 3
    return Batch(width, height, count, lambda index: video_frame(base3, index, count))


def _edit(images: list[Image.Image], width: int, height: int) -> Frame:
    """The "edit": the first image cover-cropped, its middle third inverted, others as insets."""
    out = np.array(cover_fit(images[0], width, height), dtype=np.uint8)
    band = slice(height // 3, 2 * height // 3)
    out[band] = 255 - out[band]
    for k, extra in enumerate(images[1:]):
        inset = np.asarray(cover_fit(extra, width // 4, height // 4), dtype=np.uint8)
        out[: height // 4, k * (width // 4) : (k + 1) * (width // 4)] = inset
    return out


def _encode(pixels: Frame, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(
        buf, format=fmt.upper(), **({"quality": 92} if fmt != "png" else {})
    )
    return buf.getvalue()


_KIND_NAMES = {str: "a string", bool: "a boolean", int: "an integer", float: "a number"}


def _opt(doc: dict[str, Any], name: str, kinds: tuple[type, ...], default: Any) -> Any:
    """``doc[name]`` (or ``default``) if it is one of ``kinds`` (a bool is no number)."""
    value = doc.get(name, default)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise JobFailed(f"{name}: must be {_KIND_NAMES[kinds[-1]]}, got {value!r}")
    return value


def _required_str(doc: dict[str, Any], name: str) -> str:
    if name not in doc:
        raise JobFailed(f"{name}: is required")
    return str(_opt(doc, name, (str,), None))


def _number(
    doc: dict[str, Any], name: str, default: float, lo: float = -1e9, hi: float = 1e9
) -> float:
    """A number in [lo, hi]; an integer one when ``default`` is an int."""
    kinds: tuple[type, ...] = (int,) if isinstance(default, int) else (int, float)
    value = float(_opt(doc, name, kinds, default))
    if not lo <= value <= hi:
        raise JobFailed(f"{name}: must be between {lo:g} and {hi:g}, got {value:g}")
    return value


def _choice(doc: dict[str, Any], name: str, choices: tuple[str, ...]) -> str:
    value = doc.get(name, choices[0])
    if value not in choices:
        raise JobFailed(f"{name}: must be one of {', '.join(choices)}, got {value!r}")
    return str(value)


def _size(text: str) -> tuple[int, int]:
    width, height = text.split("*")
    return int(width), int(height)


def _check_common(doc: dict[str, Any], *, bools: tuple[str, ...], texts: tuple[str, ...]) -> None:
    _required_str(doc, "prompt")
    _opt(doc, "seed", (int,), -1)
    for name in bools:
        _opt(doc, name, (bool,), False)
    for name in texts:
        _opt(doc, name, (str,), "")


class PublicEndpoints(QueueEmulator):
    """The three endpoints: the queue machinery (tests/queue_emulator.py) with their handlers.

    Recordings and fault knobs are :class:`QueueEmulator`'s; result URLs are served here.
    """

    def __init__(
        self,
        *,
        job_seconds: float = 0.0,
        queue_seconds: float = 0.0,
        result_ttl_s: float = 7 * 86400,
        api_key: str | None = None,
    ) -> None:
        super().__init__(
            {WAN_I2V: self._wan_i2v, QWEN_EDIT_2511: self._qwen_edit, QWEN_EDIT: self._qwen_edit},
            job_seconds=job_seconds,
            queue_seconds=queue_seconds,
            api_key=api_key,
            routes=[Route("/results/{token}/{name}", self._result, methods=["GET"])],
            name="public",
        )
        self.result_ttl_s = result_ttl_s
        self._results: dict[str, _Result] = {}
        self._video_bases: dict[str, Batch] = {}
        self._images: dict[str, Frame] = {}

    def expire_results(self) -> None:
        """Expire every result URL handed out so far (they answer 403 "Request has expired")."""
        for result in list(self._results.values()):
            result.expired = True

    def expected_last_frame(self, job_id: str) -> Frame:
        """The last frame of a video job as it was before encoding (H×W×3 RGB)."""
        return self.expected_frame(job_id, -1)

    def expected_frame(self, job_id: str, index: int) -> Frame:
        """Frame ``index`` (negative counts from the end) of a video job, before encoding."""
        return self._video_bases[job_id].frame(index)

    def expected_image(self, job_id: str) -> Frame:
        """The output of an edit job before encoding (H×W×3 RGB)."""
        return self._images[job_id]

    async def _result(self, request: Request) -> Response:
        result = self._results.get(request.path_params["token"])
        name = request.path_params["name"]
        if result is None or not name.startswith("output."):
            return _s3_error(404, "NoSuchKey", "The specified key does not exist.")
        if result.expired or time.monotonic() - result.created > self.result_ttl_s:
            return _s3_error(403, "AccessDenied", "Request has expired")
        return Response(result.data, media_type=result.content_type)

    # -- handlers

    async def _wan_i2v(self, job: QueueJob) -> dict[str, Any]:
        doc = job.input
        _check_common(
            doc,
            bools=("enable_prompt_optimization", "enable_safety_checker"),
            texts=("negative_prompt",),
        )
        url = _required_str(doc, "image")
        width, height = _size(_choice(doc, "size", WAN_SIZES))
        _number(doc, "num_inference_steps", 30, 1, 50)
        _number(doc, "guidance", 5.0, 0, 10)
        _number(doc, "flow_shift", 5.0)
        duration = int(_number(doc, "duration", 5, 5, 15))
        images = await self._fetch([url])
        count = FPS * duration + 1
        data = await asyncio.to_thread(self._render, job, images[0], width, height, count)
        return {"video_url": self._publish(data, "mp4"), "cost": round(0.06 * duration, 2)}

    async def _qwen_edit(self, job: QueueJob) -> dict[str, Any]:
        doc = job.input
        if job.endpoint == QWEN_EDIT_2511:
            _check_common(doc, bools=(), texts=())
            urls = doc.get("images")
            if not isinstance(urls, list) or not 1 <= len(urls) <= 3:
                raise JobFailed("images: must be a list of 1 to 3 image URLs")
            if not all(isinstance(u, str) for u in urls):
                raise JobFailed("images: every item must be a URL string")
            width, height = _size(_choice(doc, "size", QWEN_2511_SIZES))
            fmt = _choice(doc, "output_format", ("jpeg", "png", "webp"))
        else:
            _check_common(doc, bools=("enable_safety_checker",), texts=("negative_prompt",))
            urls = [_required_str(doc, "image")]
            fmt = _choice(doc, "output_format", ("jpeg", "png"))
            width = height = 0
        images = await self._fetch(urls)
        if not width:
            width, height = images[0].size
        pixels = await asyncio.to_thread(_edit, images, width, height)
        self._images[job.id] = pixels
        data = await asyncio.to_thread(_encode, pixels, fmt)
        return {"image_url": self._publish(data, fmt), "cost": 0.02}

    async def _fetch(self, urls: list[str]) -> list[Image.Image]:
        async def one(http: httpx.AsyncClient, url: str) -> Image.Image:
            try:
                response = (await http.get(url)).raise_for_status()
                return await asyncio.to_thread(load_rgb, response.content)
            except (httpx.HTTPError, ValueError) as exc:  # ImageRejected is a ValueError
                raise JobFailed(_INVALID_IMAGE) from exc

        async with httpx.AsyncClient(trust_env=False, timeout=30, follow_redirects=True) as http:
            return list(await asyncio.gather(*(one(http, url) for url in urls)))

    def _render(
        self, job: QueueJob, image: Image.Image, width: int, height: int, count: int
    ) -> bytes:
        clip = self._video_bases[job.id] = animate(image, width, height, count)
        return encode_clip(clip, fps=FPS, job=job, workdir=self.workdir)

    def _publish(self, data: bytes, ext: str) -> str:
        token = uuid.uuid4().hex
        self._results[token] = _Result(data, _CONTENT_TYPES[ext])
        return f"{self.origin}/results/{token}/output.{ext}"


def encode_clip(
    clip: Batch, *, fps: float, job: QueueJob, workdir: Path, audio: bytes | None = None
) -> bytes:
    """Encode ``clip`` into an H.264 MP4 (muxing ``audio``, any format ffmpeg reads, cut to the
    clip's length); return its bytes and leave no file in ``workdir``.

    Stops (killing the encoder, removing the partial file) as soon as ``job.stop`` is set.
    """
    path = workdir / f"{uuid.uuid4().hex}.mp4"
    sound = path.with_suffix(".audio")
    extra_input: tuple[str, ...] = ()
    extra_output: tuple[str, ...] = ()
    if audio is not None:
        sound.write_bytes(audio)
        extra_input = ("-i", str(sound))
        extra_output = ("-map", "1:a:0", "-c:a", "aac", "-t", f"{clip.count / fps:.6f}")
    try:
        with RawVideoWriter(
            path,
            width=clip.width,
            height=clip.height,
            fps=fps,
            preset="ultrafast",
            extra_input=extra_input,
            extra_output=extra_output,
        ) as out:
            for frame in clip.frames():
                if job.stop.is_set():  # cancelled (the task was too): kill the encoder
                    raise InterruptedError(job.id)
                out.write(frame)
        return path.read_bytes()
    finally:
        path.unlink(missing_ok=True)
        sound.unlink(missing_ok=True)


def _s3_error(status: int, code: str, message: str) -> Response:
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId></Error>"
    )
    return Response(xml, status_code=status, media_type="application/xml")


@contextmanager
def serve_public_endpoints(
    *,
    job_seconds: float = 0.0,
    queue_seconds: float = 0.0,
    result_ttl_s: float = 7 * 86400,
    api_key: str | None = None,
) -> Iterator[PublicEndpoints]:
    """Run the emulator on a free loopback port; yield it (``.base_url`` is ``{origin}/v2``)."""
    endpoints = PublicEndpoints(
        job_seconds=job_seconds,
        queue_seconds=queue_seconds,
        result_ttl_s=result_ttl_s,
        api_key=api_key,
    )
    with endpoints.running():
        yield endpoints
