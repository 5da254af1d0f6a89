"""The ``lightx2v-worker`` kind: the LightX2V Wan 2.2 I2V worker users already run.

Its API (``image_base64, prompt, negative_prompt, num_frames, num_inference_steps,
guidance_scale, seed, fps, width, height`` in; ``video_base64, last_frame_base64, seed,
inference_time_ms, ...`` out) is :class:`videokit.dialects.LightX2VInput` / ``LightX2VOutput``,
the models videokit's own workers answer it with too. It takes the frame inline only and returns
the clip's last frame itself, so a chain needs no decoding. It documents no limits beyond Wan's
(4k+1 frames, sides in multiples of 16), which the wire protocol already holds; it takes one
guidance scale.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from videokit.backends.kinds.worker_documents import (
    AnimateWorkerKind,
    output_media,
    parse_output,
)
from videokit.capabilities import AnimateCapabilities, EditCapabilities
from videokit.dialects import LightX2VInput, LightX2VOutput
from videokit.errors import ConfigError
from videokit.protocol import AnimateRequest, AnimateResult, EditRequest, EditResult

__all__ = ["LightX2VApi"]

_MODEL = "wan2.2-i2v-a14b-lightx2v"


class LightX2VApi(AnimateWorkerKind):
    """Requests as the LightX2V worker's documents, its outputs as results."""

    name: Final = "lightx2v-worker"

    def __init__(self, *, model: str | None = None) -> None:
        self.model: str | None = model or _MODEL
        self.capabilities: EditCapabilities | AnimateCapabilities | None = AnimateCapabilities(
            endpoint="lightx2v-worker", second_guidance=False
        )

    async def input_document(self, request: EditRequest | AnimateRequest) -> dict[str, Any]:
        request = self.animate_request(request)
        if request.image.base64 is None:
            raise ConfigError("lightx2v-worker takes the starting frame inline (image_base64) only")
        document = LightX2VInput(
            image_base64=request.image.base64,
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            num_frames=request.frames,
            num_inference_steps=request.steps,
            guidance_scale=request.guidance_scale,
            seed=request.seed,
            fps=request.fps,
            width=request.width,
            height=request.height,
        )
        return document.model_dump(mode="json", exclude_none=True)

    async def result(
        self,
        request: EditRequest | AnimateRequest,
        output: Mapping[str, Any],
        execution_ms: int | None,
    ) -> EditResult | AnimateResult:
        request = self.animate_request(request)
        answer = parse_output(LightX2VOutput, output, self.name, "LightX2V Wan I2V worker")
        width, _, height = answer.resolution.partition("x")
        return AnimateResult(
            video=output_media(
                answer.video_base64, answer.video_url, "video/mp4", "video", self.name
            ),
            last_frame=output_media(
                answer.last_frame_base64,
                answer.last_frame_url,
                "image/png",
                "last_frame",
                self.name,
            ),
            last_frame_source="worker",
            seed=answer.seed,
            frames=answer.num_frames,
            fps=answer.fps,
            width=int(width),
            height=int(height),
            inference_ms=answer.inference_time_ms,
            model=self.model,
        )
