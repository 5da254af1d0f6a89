"""The ``videokit`` kind: videokit's own wire protocol (its workers, ``videokit serve``).

The input document is the request itself. With S3/R2 storage configured, outputs are asked for by
presigned PUT URL and large inputs are uploaded and sent as presigned GET URLs (a ``run`` body is
limited to 10 MB); results uploaded that way are downloaded and verified against their checksums.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Final

from pydantic import ValidationError

from videokit.backends.base import Stage
from videokit.capabilities import AnimateCapabilities, EditCapabilities
from videokit.costs import OutputPrice
from videokit.errors import EndpointError
from videokit.protocol import (
    AnimateRequest,
    AnimateResult,
    EditRequest,
    EditResult,
    MediaInput,
    MediaOutput,
)

__all__ = ["RUN_PAYLOAD_LIMIT", "VideokitApi", "sniff_content_type"]

# RunPod documents "10 MB" for /run without saying which megabyte; the decimal one is smaller.
RUN_PAYLOAD_LIMIT = 10_000_000


def sniff_content_type(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


class VideokitApi:
    """Request in, result out, as the wire models in :mod:`videokit.protocol` define them."""

    name: Final = "videokit"
    price: OutputPrice | None = None
    capabilities: EditCapabilities | AnimateCapabilities | None = None
    typical_execution_s: float | None = None
    inputs_by_url = False
    offloads_inputs = True

    def __init__(self, stage: Stage, *, model: str | None = None, storage: Any | None = None):
        self.stage = stage
        self.model = model
        self.storage = storage

    async def input_document(self, request: EditRequest | AnimateRequest) -> dict[str, Any]:
        wire = await self._offload(request)
        document: dict[str, Any] = wire.model_dump(mode="json", exclude_none=True)
        return document

    async def _offload(self, request: EditRequest | AnimateRequest) -> EditRequest | AnimateRequest:
        """Move media to storage when it is configured: outputs by presigned PUT, big inputs."""
        storage = self.storage
        if storage is None:
            return request
        update: dict[str, Any] = {}
        if isinstance(request, AnimateRequest):
            video = await asyncio.to_thread(
                storage.output_target, "clip.mp4", content_type="video/mp4"
            )
            last = await asyncio.to_thread(
                storage.output_target, "last.png", content_type="image/png"
            )
            update["outputs"] = {"video": video, "last_frame": last}
        else:
            image = await asyncio.to_thread(
                storage.output_target, "edit.png", content_type="image/png"
            )
            update["outputs"] = {"image": image}
        if len(request.model_dump_json()) > RUN_PAYLOAD_LIMIT // 2:

            async def moved(media: MediaInput) -> MediaInput:
                if media.base64 is None:
                    return media
                data = media.decode()
                uploaded: MediaInput = await asyncio.to_thread(
                    storage.upload_input, data, content_type=sniff_content_type(data)
                )
                return uploaded

            if isinstance(request, AnimateRequest):
                update["image"] = await moved(request.image)
            else:
                update["images"] = [await moved(m) for m in request.images]
        return request.model_copy(update=update)

    async def result(
        self,
        request: EditRequest | AnimateRequest,
        output: Mapping[str, Any],
        execution_ms: int | None,
    ) -> EditResult | AnimateResult:
        result_type: type[EditResult] | type[AnimateResult] = (
            AnimateResult if isinstance(request, AnimateRequest) else EditResult
        )
        try:
            result = result_type.model_validate(output)
        except ValidationError as exc:
            raise EndpointError(
                f"the endpoint's output does not match the {result_type.__name__} contract: "
                f"{exc.error_count()} problem(s), first: {exc.errors()[0]['msg']}",
                hint="the endpoint runs a worker of another version; redeploy it",
            ) from None
        fields = {name: getattr(result, name, None) for name in ("video", "last_frame", "image")}
        update: dict[str, MediaOutput] = {}
        for name, media in fields.items():
            if isinstance(media, MediaOutput) and media.base64 is None:
                if self.storage is None:
                    raise EndpointError(
                        "the endpoint uploaded an output, but no storage is configured here"
                    )
                data = await asyncio.to_thread(self.storage.download, media)
                update[name] = MediaOutput.inline(data, media.content_type)
        return result.model_copy(update=update) if update else result

    def reported_cost(self, output: Any) -> float | None:
        return None
