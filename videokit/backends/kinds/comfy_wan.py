"""The ``comfy-wan-worker`` kind: the ComfyUI 4-step Wan 2.2 I2V worker users already run.

Its API is :class:`videokit.dialects.ComfyWanInput` / ``ComfyWanOutput`` (``image_url`` or
``image_base64``, ``prompt, negative_prompt, cfg, width, height, frames, fps, steps`` in;
``video_base64`` and ``metadata`` out), with the limits of :data:`videokit.dialects.
COMFY_WAN_LIMITS`, which ``validate`` holds a story against. With S3/R2 storage configured the
frame goes as a presigned ``image_url`` (small payloads); otherwise inline. The worker returns no
last frame: it is decoded from the clip. ``seed`` is sent as videokit's extension; the original
worker randomises instead, so its clips differ between renders (cached ones are still reused).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Final

from videokit.backends.kinds.clips import decoded_clip_result
from videokit.backends.kinds.videokit_api import sniff_content_type
from videokit.backends.kinds.worker_documents import (
    AnimateWorkerKind,
    output_media,
    parse_output,
)
from videokit.capabilities import AnimateCapabilities, EditCapabilities
from videokit.dialects import COMFY_WAN_LIMITS, ComfyWanInput, ComfyWanOutput, comfy_wan_problems
from videokit.errors import ConfigError
from videokit.protocol import AnimateRequest, AnimateResult, EditRequest, EditResult

__all__ = ["ComfyWanApi"]

_MODEL = "wan2.2-i2v-14b-fp8-lightx2v-4step-comfyui"


class ComfyWanApi(AnimateWorkerKind):
    """Requests as the ComfyUI Wan worker's documents, its outputs as results."""

    name: Final = "comfy-wan-worker"
    offloads_inputs = True

    def __init__(self, *, model: str | None = None, storage: Any | None = None) -> None:
        self.model: str | None = model or _MODEL
        self.storage = storage
        lim = COMFY_WAN_LIMITS
        self.capabilities: EditCapabilities | AnimateCapabilities | None = AnimateCapabilities(
            endpoint="comfy-wan-worker",
            side_range=lim.side,
            side_multiple=lim.side_multiple,
            frame_range=lim.frames,
            frame_step=lim.frame_step,
            fps_range=lim.fps,
            steps=lim.steps,
            guidance=lim.cfg,
            second_guidance=False,
            returns_last_frame=False,
            prompt_chars=lim.prompt_chars[1],
        )

    async def input_document(self, request: EditRequest | AnimateRequest) -> dict[str, Any]:
        request = self.animate_request(request)
        problems = comfy_wan_problems(
            prompt=request.prompt,
            width=request.width,
            height=request.height,
            frames=request.frames,
            fps=request.fps,
            cfg=request.guidance_scale,
            steps=request.steps,
        )
        if problems:
            raise ConfigError(
                "the ComfyUI Wan worker would refuse this clip: "
                + "; ".join(f"{name} {problem}" for name, problem in problems),
                hint="run `videokit validate`: it says what fits this endpoint",
            )
        image: dict[str, str] = {}
        if request.image.url is not None:
            image["image_url"] = request.image.url
        elif self.storage is not None:
            data = request.image.decode()
            uploaded = await asyncio.to_thread(
                self.storage.upload_input, data, content_type=sniff_content_type(data)
            )
            image["image_url"] = uploaded.url
        else:
            assert request.image.base64 is not None
            image["image_base64"] = request.image.base64
        document = ComfyWanInput(
            **image,
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            cfg=request.guidance_scale,
            width=request.width,
            height=request.height,
            frames=request.frames,
            fps=request.fps,
            steps=request.steps,
            seed=request.seed,
        )
        return document.model_dump(mode="json", exclude_none=True)

    async def result(
        self,
        request: EditRequest | AnimateRequest,
        output: Mapping[str, Any],
        execution_ms: int | None,
    ) -> EditResult | AnimateResult:
        request = self.animate_request(request)
        answer = parse_output(ComfyWanOutput, output, self.name, "ComfyUI Wan 2.2 I2V worker")
        video = output_media(answer.video_base64, answer.video_url, "video/mp4", "video", self.name)
        return await decoded_clip_result(
            request,
            video.decode(),
            model=self.model,
            execution_ms=execution_ms,
            seed=answer.metadata.seed,
        )
