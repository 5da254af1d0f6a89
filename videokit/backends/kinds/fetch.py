"""Download a result URL an endpoint answered with (``video_url``, ``image_url``), at once.

Such URLs expire (RunPod's public endpoints: 7 days), so a result is fetched as soon as its job
completes, then checked: size under a cap, a content type of the right kind, and bytes that decode
as an image or a video. Transient failures go through the shared retry predicate; a URL that
answers 403/404/410 has expired or was never there: :class:`ResultLost`, which the job policy
treats as a lost result (the job may be run again). No credential is ever sent with it.
"""

from __future__ import annotations

import asyncio
import io
import tempfile
from pathlib import Path
from typing import Literal

import httpx

from videokit.backends.retry import RetryPolicy, is_retryable_status
from videokit.errors import EndpointError

__all__ = ["MAX_IMAGE_BYTES", "MAX_VIDEO_BYTES", "ResultFetcher", "ResultLost"]

MAX_IMAGE_BYTES = 64 * 1024 * 1024
MAX_VIDEO_BYTES = 1024 * 1024 * 1024
_GONE = frozenset({403, 404, 410})
_RP_UPLOAD_VIDEO_TYPES = frozenset({"image/mp4", "image/webm", "image/mkv", "image/mov"})


class ResultLost(Exception):
    """The endpoint's result cannot be had any more (its URL expired); running again may help."""


def _redacted(url: str) -> str:
    # Presigned result URLs carry their signature in the query: never log it.
    return url.split("?", 1)[0]


class ResultFetcher:
    """Fetches result URLs over its own HTTP client: no API key, at most 3 redirects."""

    def __init__(
        self,
        *,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 300.0,
        max_image_bytes: int = MAX_IMAGE_BYTES,
        max_video_bytes: int = MAX_VIDEO_BYTES,
    ) -> None:
        self._retry = retry or RetryPolicy()
        self._transport = transport
        self._timeout_s = timeout_s
        self._caps = {"image": max_image_bytes, "video": max_video_bytes}

    async def fetch(self, url: str, media: Literal["image", "video"]) -> bytes:
        """The checked bytes behind ``url``; raises ResultLost or EndpointError."""
        where = _redacted(url)
        if not url.startswith(("https://", "http://")):
            raise EndpointError(f"the endpoint's result URL {where!r} is not an http(s) URL")
        cap = self._caps[media]

        async def once() -> tuple[bytes, str]:
            async with (
                httpx.AsyncClient(
                    transport=self._transport,
                    follow_redirects=True,
                    max_redirects=3,
                    timeout=httpx.Timeout(self._timeout_s, connect=10.0),
                ) as client,
                client.stream("GET", url) as response,
            ):
                if is_retryable_status(response.status_code):
                    response.raise_for_status()
                if response.status_code in _GONE:
                    raise ResultLost(
                        f"the result {where} answered HTTP {response.status_code}: it expired "
                        "or was removed"
                    )
                if response.status_code != 200:
                    raise EndpointError(
                        f"downloading the result {where} failed: HTTP {response.status_code}",
                        status=response.status_code,
                    )
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > cap:
                    raise EndpointError(f"the result {where} is {declared} bytes, over {cap} bytes")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > cap:
                        raise EndpointError(f"the result {where} is over {cap} bytes; stopped")
                return bytes(body), response.headers.get("Content-Type", "")

        try:
            data, content_type = await self._retry.call(once)
        except httpx.HTTPError as exc:
            raise EndpointError(
                f"downloading the result {where} failed: {type(exc).__name__}",
                hint="check your network; the job's result stays at the endpoint until it expires",
            ) from None
        kind = content_type.split(";", 1)[0].strip().lower()
        # runpod-python's rp_upload (worker-comfyui's S3 upload) labels every file
        # "image/<extension>", so a clip arrives as image/mp4; the bytes are checked below.
        accepted = not kind or kind == "application/octet-stream" or kind.startswith(f"{media}/")
        if not accepted and not (media == "video" and kind in _RP_UPLOAD_VIDEO_TYPES):
            raise EndpointError(f"the result {where} is {kind!r}, not {media}")
        await asyncio.to_thread(_check_decodes, data, media, where)
        return data


def _check_decodes(data: bytes, media: Literal["image", "video"], where: str) -> None:
    if media == "image":
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(data)) as image:
                image.load()
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise EndpointError(f"the result {where} is not a readable image: {exc}") from None
        return
    from videokit.media.probe import probe_video

    with tempfile.TemporaryDirectory(prefix="videokit-result-") as folder:
        path = Path(folder) / "clip.mp4"
        path.write_bytes(data)
        try:
            info = probe_video(path)
        except Exception as exc:  # MediaError, FFmpegError: not a video we can read
            raise EndpointError(f"the result {where} is not a readable video: {exc}") from None
        if info.frames < 1:
            raise EndpointError(f"the result {where} has no video frames")
