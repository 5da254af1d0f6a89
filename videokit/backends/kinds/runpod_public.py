"""The ``runpod-public`` kind: RunPod's Public Endpoints (Wan 2.2 I2V, Qwen-Image-Edit).

They take images by URL (uploaded to your S3/R2 bucket, sent as presigned GET URLs) and answer
with a ``video_url`` or ``image_url`` that expires, plus the job's ``cost``. The result is
downloaded at once and checked; a clip's last frame is decoded from the clip frame-exactly, as the
endpoint returns none. Steps and guidance left at videokit's Lightning defaults are not sent, so
the endpoint runs its own defaults (its model is not the 4-step one).
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Mapping
from typing import Any, Final

from videokit.backends.kinds.catalogue import PublicModel
from videokit.backends.kinds.clips import as_png, decoded_clip_result
from videokit.backends.kinds.fetch import ResultFetcher
from videokit.backends.kinds.videokit_api import sniff_content_type
from videokit.capabilities import AnimateCapabilities, EditCapabilities
from videokit.costs import OutputPrice
from videokit.errors import ConfigError, EndpointError
from videokit.protocol import (
    AnimateRequest,
    AnimateResult,
    EditRequest,
    EditResult,
    MediaInput,
    MediaOutput,
    uses_lightning_defaults,
)

__all__ = ["PublicApi"]


def _size(size: tuple[int, int]) -> str:
    return f"{size[0]}*{size[1]}"


class PublicApi:
    """One public endpoint of :data:`~videokit.backends.kinds.catalogue.PUBLIC_MODELS`."""

    name: Final = "runpod-public"
    inputs_by_url = True
    offloads_inputs = True

    def __init__(
        self,
        model: PublicModel,
        *,
        storage: Any | None,
        fetcher: ResultFetcher,
        price: OutputPrice | None = None,
    ):
        self.entry = model
        self.model: str | None = model.endpoint_id
        self.price: OutputPrice | None = price or model.price
        self.capabilities: EditCapabilities | AnimateCapabilities | None = model.capabilities
        self.typical_execution_s: float | None = model.typical_execution_s
        self.storage = storage
        self.fetcher = fetcher

    async def _url(self, media: MediaInput) -> str:
        if media.url is not None:
            return media.url
        if self.storage is None:
            raise ConfigError(
                f"{self.model} takes images by URL, and no S3/R2 storage is configured",
                hint="set VIDEOKIT_S3_BUCKET, VIDEOKIT_S3_ACCESS_KEY_ID and "
                "VIDEOKIT_S3_SECRET_ACCESS_KEY (plus VIDEOKIT_S3_ENDPOINT_URL for R2)",
            )
        data = media.decode()
        uploaded: MediaInput = await asyncio.to_thread(
            self.storage.upload_input, data, content_type=sniff_content_type(data)
        )
        assert uploaded.url is not None
        return uploaded.url

    async def input_document(self, request: EditRequest | AnimateRequest) -> dict[str, Any]:
        if isinstance(request, AnimateRequest):
            return await self._animate_document(request)
        return await self._edit_document(request)

    async def _animate_document(self, request: AnimateRequest) -> dict[str, Any]:
        caps = self.capabilities
        assert isinstance(caps, AnimateCapabilities)
        seconds, rest = divmod(request.frames - 1, request.fps)
        if rest or request.fps != caps.fps or request.frames not in (caps.frame_counts() or ()):
            raise ConfigError(
                f"{self.model} renders {caps.describe_lengths()}, not {request.frames} frames "
                f"at {request.fps} fps",
                hint=f"use frames: {caps.nearest_frames(request.frames)} (or a whole `duration`)",
            )
        size = (request.width, request.height)
        if caps.sizes is not None and size not in caps.sizes:
            raise ConfigError(
                f"{self.model} renders {' or '.join(_size(s) for s in caps.sizes)}, not "
                f"{_size(size)}",
                hint="set width and height to a size it renders",
            )
        document: dict[str, Any] = {
            "prompt": request.prompt,
            "image": await self._url(request.image),
            "duration": seconds,
            "seed": request.seed,
        }
        if self.entry.style == "wan":
            document["size"] = _size(size)
            document["negative_prompt"] = request.negative_prompt
            # Deterministic: the endpoint would otherwise rewrite the prompt as it likes.
            document["enable_prompt_optimization"] = False
            if not uses_lightning_defaults(request):
                document["num_inference_steps"] = request.steps
                document["guidance"] = request.guidance_scale
        return document

    async def _edit_document(self, request: EditRequest) -> dict[str, Any]:
        caps = self.capabilities
        assert isinstance(caps, EditCapabilities)
        if len(request.images) > caps.max_images:
            raise ConfigError(
                f"{self.model} edits with at most {caps.max_images} image(s), this edit has "
                f"{len(request.images)}",
                hint="drop extra `edit.images` / references, or use qwen-image-edit-2511",
            )
        urls = [await self._url(media) for media in request.images]
        document: dict[str, Any] = {
            "prompt": request.prompt,
            "seed": request.seed,
            "output_format": "png",
        }
        if self.entry.style == "qwen-image":
            document["image"] = urls[0]
            document["negative_prompt"] = request.negative_prompt
        else:
            document["images"] = urls
            if request.width is not None and request.height is not None:
                width, height = request.width, request.height
            else:
                width, height = await asyncio.to_thread(_image_size, request.images[0])
            document["size"] = _size(caps.output_size(width, height))
        return document

    async def result(
        self,
        request: EditRequest | AnimateRequest,
        output: Mapping[str, Any],
        execution_ms: int | None,
    ) -> EditResult | AnimateResult:
        field = "video_url" if isinstance(request, AnimateRequest) else "image_url"
        url = output.get(field)
        if not isinstance(url, str) or not url:
            raise EndpointError(
                f"{self.model} answered without `{field}` (output keys: "
                f"{', '.join(sorted(map(str, output))) or 'none'})",
                hint="the endpoint's API may have changed; check RunPod's documentation page "
                f"public-endpoints/models/{self.entry.page}",
            )
        if isinstance(request, AnimateRequest):
            video = await self.fetcher.fetch(url, "video")
            return await decoded_clip_result(
                request, video, model=self.model, execution_ms=execution_ms
            )
        image = await self.fetcher.fetch(url, "image")
        png, width, height = await asyncio.to_thread(as_png, image)
        return EditResult(
            image=MediaOutput.inline(png, "image/png"),
            seed=request.seed,
            width=width,
            height=height,
            inference_ms=execution_ms or 0,
            model=self.model,
        )

    def reported_cost(self, output: Any) -> float | None:
        cost = output.get("cost") if isinstance(output, Mapping) else None
        if isinstance(cost, int | float) and not isinstance(cost, bool) and cost >= 0:
            return float(cost)
        return None


def _image_size(media: MediaInput) -> tuple[int, int]:
    from PIL import Image

    with Image.open(io.BytesIO(media.decode())) as image:
        width, height = image.size
    return int(width), int(height)
