"""GPU prices and a timing model, for ``plan`` estimates and live cost accounting.

Prices are RunPod serverless per-second rates by GPU pool (flex workers, USD); override them with
your own contract prices. The timing model is anchored on measured figures (see the project notes):
Wan2.2 I2V A14B with the 4-step LightX2V LoRA at 832x480x81 is ~30 s on an H100 with diffusers,
Qwen-Image-Edit with the 8-step Lightning LoRA at 1 MP ~3.5 s. It scales with pixels x frames x
steps and doubles per step when classifier-free guidance runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from videokit.protocol import AnimateRequest, EditRequest

__all__ = ["DEFAULT_GPU", "GPU_PRICE_PER_SECOND", "CostModel"]

GPU_PRICE_PER_SECOND: dict[str, float] = {
    "AMPERE_16": 0.00016,
    "AMPERE_24": 0.00019,
    "ADA_24": 0.00031,
    "AMPERE_48": 0.00034,
    "ADA_48_PRO": 0.00053,
    "AMPERE_80": 0.00076,
    "ADA_80_PRO": 0.00116,
    "HOPPER_141": 0.00155,
}
# Both bf16 models need more than 48 GB (Qwen-Edit ~58 GB, Wan A14B experts 2 x 28 GB).
DEFAULT_GPU = {"edit": "ADA_80_PRO", "animate": "ADA_80_PRO"}

_WAN_REF_VOLUME = 832 * 480 * 81
_WAN_STEP_S = 4.9  # one denoising step at the reference volume, no CFG, H100 (diffusers)
_WAN_FIXED_S = 8.0  # text encoding + VAE encode/decode at the reference volume
_QWEN_STEP_S = 0.22  # one step at 1 MP, no CFG, H100
_QWEN_FIXED_S = 1.5


@dataclass(frozen=True)
class CostModel:
    gpu: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_GPU))
    prices: dict[str, float] = field(default_factory=lambda: dict(GPU_PRICE_PER_SECOND))

    def price_per_second(self, stage: str) -> float:
        return self.prices.get(self.gpu.get(stage, DEFAULT_GPU[stage]), 0.0)

    def cost(self, stage: str, seconds: float) -> float:
        return seconds * self.price_per_second(stage)

    def estimate_seconds(self, request: EditRequest | AnimateRequest) -> float:
        if isinstance(request, AnimateRequest):
            scale = request.width * request.height * request.frames / _WAN_REF_VOLUME
            cfg = 2.0 if request.guidance_scale > 1.0 else 1.0
            return _WAN_FIXED_S * scale + request.steps * _WAN_STEP_S * scale * cfg
        pixels = (request.width or 1024) * (request.height or 1024) / 1_048_576
        cfg = 2.0 if request.true_cfg_scale > 1.0 and request.negative_prompt.strip() else 1.0
        return _QWEN_FIXED_S + request.steps * _QWEN_STEP_S * pixels * cfg
