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

from pydantic import ValidationError

from videokit.capabilities import AnimateCapabilities, EditCapabilities
from videokit.costs import OutputPrice
from videokit.dialects import LightX2VInput, LightX2VOutput
from videokit.errors import ConfigError, EndpointError
from videokit.protocol import AnimateRequest, AnimateResult, EditRequest, EditResult, MediaOutput

__all__ = ["LightX2VApi", "output_media"]

_MODEL = "wan2.2-i2v-a14b-lightx2v"


def output_media(
    inline: str | None, url: str | None, content_type: str, what: str, endpoint: str
) -> MediaOutput:
    """An output file a worker answered with inline (``*_base64``); a URL-only one is refused,
    since videokit never asked for an upload and cannot vouch for it."""
    if inline is None:
        raise EndpointError(
            f"{endpoint} answered without {what}_base64"
            + (" (it uploaded it somewhere instead)" if url else ""),
            hint="remove the worker's R2/S3 result upload configuration, or use its inline output",
        )
    from videokit.protocol import MediaInput

    try:
        data = MediaInput(base64=inline).decode()
    except ValueError as exc:
        raise EndpointError(f"{endpoint} answered with invalid {what}_base64: {exc}") from None
    return MediaOutput.inline(data, content_type)


class LightX2VApi:
    """Requests as the LightX2V worker's documents, its outputs as results."""

    name: Final = "lightx2v-worker"
    inputs_by_url = False
    price: OutputPrice | None = None
    typical_execution_s: float | None = None

    def __init__(self, *, model: str | None = None) -> None:
        self.model: str | None = model or _MODEL
        self.capabilities: EditCapabilities | AnimateCapabilities | None = AnimateCapabilities(
            endpoint="lightx2v-worker", second_guidance=False
        )

    async def input_document(self, request: EditRequest | AnimateRequest) -> dict[str, Any]:
        if not isinstance(request, AnimateRequest):
            raise ConfigError("lightx2v-worker endpoints run animate jobs only")
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
        assert isinstance(request, AnimateRequest)
        try:
            answer = LightX2VOutput.model_validate(output)
        except ValidationError as exc:
            raise EndpointError(
                f"the lightx2v-worker output does not match its documented shape: "
                f"{exc.error_count()} problem(s), first: {exc.errors()[0]['loc']}: "
                f"{exc.errors()[0]['msg']}",
                hint="check that the endpoint runs the LightX2V Wan I2V worker",
            ) from None
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

    def reported_cost(self, output: Any) -> float | None:
        return None
