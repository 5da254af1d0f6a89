"""GPU prices and a timing model, for ``plan`` estimates and live cost accounting.

Prices are RunPod serverless per-second rates by GPU pool (flex workers, USD). Override them with
your own contract prices without touching code: ``VIDEOKIT_GPU_PRICES`` (a JSON object, pool ->
USD per second, merged over these defaults) or the ``[prices]`` table of ``videokit.toml`` (see
:mod:`videokit.config`). A pool name the table does not know is a configuration error, never a
silent $0. ``plan`` with a key prices pools from RunPod's GPU catalog instead
(:mod:`videokit.rest.catalog`); :class:`CostModel` keeps where each pool's price comes from.

What is billed: RunPod bills a flex worker from the moment it starts for a job until the job ends.
The status of a finished job reports ``executionTime`` (the handler's run) and ``delayTime`` (from
submission until a worker picked the job up: time waiting in the queue *plus* the worker's cold
start). Only the cold-start part of ``delayTime`` is billed, and RunPod does not report the two
parts separately. So by default a job costs ``executionTime`` x price (exact for warm workers),
and an endpoint with ``bill_delay`` also adds the whole ``delayTime``: an upper bound, which
over-counts whatever time the job spent queued behind other jobs. Turn it on for endpoints that
scale from zero (cold starts on most jobs), leave it off for endpoints with active workers.

The timing model is anchored on measured figures (see the project notes): Wan2.2 I2V A14B with the
4-step LightX2V LoRA at 832x480x81 is ~30 s on an H100 with diffusers, Qwen-Image-Edit with the
8-step Lightning LoRA at 1 MP ~3.5 s. It scales with pixels x frames x steps and doubles per step
when classifier-free guidance runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from videokit.errors import ConfigError
from videokit.protocol import AnimateRequest, EditRequest, uses_lightning_defaults

__all__ = [
    "BUILT_IN_PRICES",
    "BUILT_IN_PRICES_DATE",
    "DEFAULT_GPU",
    "GPU_PRICE_PER_SECOND",
    "STANDARD_ANIMATE_STEPS",
    "STANDARD_EDIT_STEPS",
    "CostModel",
    "OutputPrice",
    "PoolPrice",
    "check_gpu",
]

# The built-in table was written on 2026-11-22 (commit b4e74f2), when the project began, and has
# not changed since. The repository does not record where its figures were read (presumably
# RunPod's serverless flex prices of that time; unverified): treat them as approximate. With a key,
# `plan` uses RunPod's live catalog (videokit.rest.catalog) and says which of the two it used.
BUILT_IN_PRICES_DATE = "2026-11-22"
BUILT_IN_PRICES = f"built-in table of {BUILT_IN_PRICES_DATE}"
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
# What a standard-mode worker runs for a request left at the protocol's Lightning defaults: the
# models' reference settings (Qwen-Image-Edit 40 steps, true CFG 4; Wan2.2-I2V-A14B 40 steps,
# guidance 3.5), see videokit.worker.qwen and videokit.worker.wan; a test keeps them equal.
STANDARD_EDIT_STEPS = 40
STANDARD_ANIMATE_STEPS = 40


def check_gpu(pool: str, prices: Mapping[str, float], *, where: str) -> str:
    """``pool`` if the price table knows it, else a ConfigError naming ``where`` it was set."""
    if pool in prices:
        return pool
    raise ConfigError(
        f"{where}: unknown GPU pool {pool!r}; known pools: {', '.join(sorted(prices))}",
        hint="use one of the known pools, or give its price per second in VIDEOKIT_GPU_PRICES "
        "(e.g. '{\"" + pool + "\": 0.001}') or in the [prices] table of videokit.toml",
    )


@dataclass(frozen=True)
class OutputPrice:
    """A price per output, as endpoints billed that way charge (RunPod Public Endpoints): USD per
    image, or per second of video. ``source`` says where the figure was read, and when."""

    usd: float
    per: Literal["image", "second"]
    source: str = ""

    def of(self, request: EditRequest | AnimateRequest) -> float:
        if self.per == "second" and isinstance(request, AnimateRequest):
            return self.usd * (request.frames - 1) / request.fps
        return self.usd

    def describe(self) -> str:
        return f"${self.usd:g} per {self.per}"


@dataclass(frozen=True)
class PoolPrice:
    """One GPU pool's serverless price in USD per second, where that figure comes from (e.g.
    ``RunPod catalog of 2026-12-07``), and the cards the pool runs on (``H100 80GB``)."""

    usd_per_second: float
    source: str
    card: str = ""


@dataclass(frozen=True)
class CostModel:
    """Per stage, the GPU pool it runs on, the price table, and whether delayTime is billed."""

    gpu: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_GPU))
    prices: dict[str, float] = field(default_factory=lambda: dict(GPU_PRICE_PER_SECOND))
    bill_delay: dict[str, bool] = field(default_factory=dict)
    # "standard" for an endpoint whose worker runs the model's reference settings (see
    # estimate_seconds); anything else is the default Lightning mode.
    modes: dict[str, str] = field(default_factory=dict)
    # Stages whose endpoint bills per output, not per GPU second.
    output_prices: dict[str, OutputPrice] = field(default_factory=dict)
    # Per pool, where its price comes from (absent: the built-in table) and its cards (if known).
    price_sources: dict[str, str] = field(default_factory=dict)
    cards: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for stage, pool in self.gpu.items():
            check_gpu(pool, self.prices, where=f"the GPU of the {stage} endpoint")

    def pool(self, stage: str) -> str:
        return self.gpu.get(stage, DEFAULT_GPU[stage])

    def for_endpoint(self, stage: str, gpu: str, price: OutputPrice | None) -> CostModel:
        """This model with ``stage`` on another endpoint: its GPU pool, or its per-output price
        (one endpoint of a stage that lists several)."""
        outputs = {name: p for name, p in self.output_prices.items() if name != stage}
        if price is not None:
            outputs[stage] = price
        return replace(self, gpu={**self.gpu, stage: gpu}, output_prices=outputs)

    def price_per_second(self, stage: str) -> float:
        return self.prices[check_gpu(self.pool(stage), self.prices, where=f"{stage} GPU")]

    def price_source(self, stage: str) -> str:
        """Where the price of ``stage``'s pool comes from: a catalog, an override, the table."""
        return self.price_sources.get(self.pool(stage), BUILT_IN_PRICES)

    def describe_pool(self, stage: str) -> str:
        """``stage``'s pool with its cards where known: ``ADA_80_PRO (H100 80GB)``."""
        pool = self.pool(stage)
        card = self.cards.get(pool)
        return f"{pool} ({card})" if card else pool

    def cost(self, stage: str, seconds: float, delay_s: float = 0.0) -> float:
        """What a job of ``stage`` that ran ``seconds`` (and waited ``delay_s``) is billed."""
        billed = seconds + (delay_s if self.bill_delay.get(stage, False) else 0.0)
        return max(0.0, billed) * self.price_per_second(stage)

    def estimate_cost(self, stage: str, request: EditRequest | AnimateRequest) -> float:
        """What one job of ``request`` should cost: its per-output price where the stage's
        endpoint bills that way, else its estimated run time at the GPU's rate."""
        price = self.output_prices.get(stage)
        if price is not None:
            return price.of(request)
        return self.cost(stage, self.estimate_seconds(request))

    def estimate_seconds(self, request: EditRequest | AnimateRequest) -> float:
        """How long ``request`` should run on its stage's endpoint (H100-class, diffusers).

        A standard-mode endpoint runs a request left at the Lightning defaults with the model's
        reference settings (many more steps, with CFG), so it is estimated as that.
        """
        if isinstance(request, AnimateRequest):
            scale = request.width * request.height * request.frames / _WAN_REF_VOLUME
            steps, cfg = request.steps, 2.0 if request.guidance_scale > 1.0 else 1.0
            if self.modes.get("animate") == "standard" and uses_lightning_defaults(request):
                steps, cfg = STANDARD_ANIMATE_STEPS, 2.0
            return _WAN_FIXED_S * scale + steps * _WAN_STEP_S * scale * cfg
        pixels = (request.width or 1024) * (request.height or 1024) / 1_048_576
        steps = request.steps
        cfg = 2.0 if request.true_cfg_scale > 1.0 and request.negative_prompt.strip() else 1.0
        if self.modes.get("edit") == "standard" and uses_lightning_defaults(request):
            steps, cfg = STANDARD_EDIT_STEPS, 2.0
        return _QWEN_FIXED_S + steps * _QWEN_STEP_S * pixels * cfg
