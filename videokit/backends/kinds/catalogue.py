"""RunPod's Public Endpoints that videokit can chain: their schemas, limits and prices.

Read on 2026-12-07 from RunPod's documentation (the ``runpod/docs`` repository at commit
``a900806e``, 2026-08-20): pages ``public-endpoints/models/<page>.mdx``, each last changed
2026-07-20. Each entry names its page. Prices are per output; override them with
``[output_prices]`` in ``videokit.toml`` or ``VIDEOKIT_OUTPUT_PRICES`` (see
:mod:`videokit.config`). Where a page leaves a limit unstated, the entry says what is assumed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from videokit.backends.base import Stage
from videokit.capabilities import AnimateCapabilities, EditCapabilities
from videokit.costs import OutputPrice

__all__ = ["DOCS_SOURCE", "PUBLIC_MODELS", "InputStyle", "PublicModel", "public_model"]

DOCS_SOURCE = "runpod/docs@a900806e (2026-08-20), read 2026-12-07"

InputStyle = Literal["wan", "wan-lora", "qwen-images", "qwen-image"]

# Wan 2.2 renders 16 fps, and `duration` is whole seconds: 5 s is the 81 frames of Wan's reference.
_WAN_FPS = 16
# The 2511 pages list exactly these output sizes.
_QWEN_2511_SIZES = (
    (1024, 1024),
    (1024, 1280),
    (1280, 1024),
    (1280, 1280),
    (1280, 1536),
    (1536, 1080),
)


@dataclass(frozen=True)
class PublicModel:
    endpoint_id: str
    stage: Stage
    title: str
    page: str
    style: InputStyle
    price: OutputPrice
    capabilities: EditCapabilities | AnimateCapabilities
    #: executionTime of the page's example response: the polling schedule's first guess.
    typical_execution_s: float


def _price(usd: float, per: Literal["image", "second"], page: str) -> OutputPrice:
    return OutputPrice(usd, per, source=f"public-endpoints/models/{page}.mdx, {DOCS_SOURCE}")


def _wan(endpoint_id: str, **fields: object) -> AnimateCapabilities:
    return AnimateCapabilities(endpoint=endpoint_id, fps=_WAN_FPS, **fields)  # type: ignore[arg-type]


PUBLIC_MODELS: dict[str, PublicModel] = {
    model.endpoint_id: model
    for model in (
        PublicModel(
            endpoint_id="wan-2-2-i2v-720",
            stage="animate",
            title="Wan 2.2 I2V 720p",
            page="wan-2-2-i2v",
            style="wan",
            # "$0.30 per 5 s, $0.48 per 8 s, $0.60 per 10 s, $0.90 per 15 s": $0.06 a second.
            price=_price(0.06, "second", "wan-2-2-i2v"),
            capabilities=_wan(
                "wan-2-2-i2v-720",
                # The page documents `size` as "width*height", default 1280*720, on a 720p
                # endpoint: landscape and portrait 720p are what videokit sends.
                sizes=((1280, 720), (720, 1280)),
                # Priced from 5 to 15 s ("$0.30-$0.90 per video").
                seconds=(5, 15),
                steps=(1, 50),
                guidance=(0.0, 10.0),
                second_guidance=False,
                returns_last_frame=False,
            ),
            typical_execution_s=67.5,
        ),
        PublicModel(
            # The page names the endpoint `wan-2-2-t2v-720-lora`, though the model is I2V.
            endpoint_id="wan-2-2-t2v-720-lora",
            stage="animate",
            title="Wan 2.2 I2V 720p LoRA",
            page="wan-2-2-i2v-lora",
            style="wan-lora",
            price=_price(0.07, "second", "wan-2-2-i2v-lora"),  # $0.35 per 5 s, $0.56 per 8 s
            capabilities=_wan(
                "wan-2-2-t2v-720-lora",
                sizes=((1280, 720),),  # no size parameter: 720p landscape
                seconds=(5, 8),  # priced for 5 and 8 s only
                second_guidance=False,
                negative_prompt=False,
                returns_last_frame=False,
            ),
            typical_execution_s=95.4,
        ),
        PublicModel(
            endpoint_id="qwen-image-edit-2511",
            stage="edit",
            title="Qwen-Image-Edit-2511",
            page="qwen-image-edit-2511",
            style="qwen-images",
            price=_price(0.02, "image", "qwen-image-edit-2511"),
            capabilities=EditCapabilities(
                endpoint="qwen-image-edit-2511",
                sizes=_QWEN_2511_SIZES,
                max_images=3,
                negative_prompt=False,
                steps=False,
            ),
            typical_execution_s=3.9,
        ),
        PublicModel(
            endpoint_id="qwen-image-edit-2511-lora",
            stage="edit",
            title="Qwen-Image-Edit-2511 LoRA",
            page="qwen-image-edit-2511-lora",
            style="qwen-images",
            price=_price(0.025, "image", "qwen-image-edit-2511-lora"),
            capabilities=EditCapabilities(
                endpoint="qwen-image-edit-2511-lora",
                sizes=_QWEN_2511_SIZES,
                max_images=3,
                negative_prompt=False,
                steps=False,
            ),
            typical_execution_s=4.5,
        ),
        PublicModel(
            endpoint_id="qwen-image-edit",
            stage="edit",
            title="Qwen-Image-Edit",
            page="qwen-image-edit",
            style="qwen-image",
            # The page says $0.02 per image; its example bills by output megapixels.
            price=_price(0.02, "image", "qwen-image-edit"),
            capabilities=EditCapabilities(
                endpoint="qwen-image-edit", keeps_input_size=True, max_images=1, steps=False
            ),
            typical_execution_s=3.9,
        ),
    )
}


def public_model(endpoint_id: str) -> PublicModel | None:
    """The public endpoint ``endpoint_id`` names (a bare id, not a URL), if videokit knows it."""
    return PUBLIC_MODELS.get(endpoint_id.strip())
