"""GPU prices, a timing model and what RunPod bills, for ``plan`` estimates and cost accounting.

Prices are RunPod serverless flex rates per GPU pool (USD per second), overridable with
``VIDEOKIT_GPU_PRICES`` or ``[prices]`` (see :mod:`videokit.config`), or read from RunPod's GPU
catalog by ``plan`` (:mod:`videokit.rest.catalog`); an unknown pool is an error, never a silent $0.
A job costs its ``executionTime`` at its pool's rate (``bill_delay``: plus its ``delayTime``, an
upper bound on its cold start, see :meth:`CostModel.cost`). A worker is also billed its start and
its idle timeout (:mod:`videokit.billed_time`): :meth:`CostModel.estimate_range` prices a set of
jobs from warm workers to cold starts. A Public Endpoint bills per output only; a self-hosted one
(a URL not on ``https://api.runpod.ai``) at the price you give it, else nothing.

Run times are anchored on measured figures (project notes): Wan2.2 I2V A14B, 4-step LoRA, at
832x480x81 ~30 s on an H100 (diffusers), Qwen-Image-Edit, 8-step LoRA, at 1 MP ~3.5 s; they scale
with pixels x frames x steps and double per step when classifier-free guidance runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal
from urllib.parse import urlsplit

from videokit.billed_time import BilledTime, Billing, EndpointFacts, PlannedJob, simulate
from videokit.errors import ConfigError
from videokit.protocol import AnimateRequest, EditRequest, uses_lightning_defaults

__all__ = [
    "BUILT_IN_PRICES",
    "BUILT_IN_PRICES_DATE",
    "DEFAULT_GPU",
    "DEFAULT_START_S",
    "GPU_PRICE_PER_SECOND",
    "NOT_INCLUDED",
    "RUNPOD_IDLE_TIMEOUT_S",
    "STANDARD_ANIMATE_STEPS",
    "STANDARD_EDIT_STEPS",
    "Billing",
    "CostModel",
    "CostRange",
    "OutputPrice",
    "PoolPrice",
    "StageJob",
    "check_gpu",
    "is_self_hosted",
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

# RunPod's default idle timeout (runpod/docs serverless/endpoints/endpoint-configurations.mdx).
RUNPOD_IDLE_TIMEOUT_S = 5.0
# A cold start: the container starts, then the worker loads its weights from a network volume
# onto the GPU (Qwen-Image-Edit ~58 GB, Wan2.2 A14B ~70 GB with UMT5). Not measured by this project:
# rough figures in the range the project notes report (45-90 s); set yours with
# VIDEOKIT_*_START_SECONDS, e.g. a few seconds for an endpoint with a cached model.
DEFAULT_START_S = {"edit": 60.0, "animate": 90.0}
# What no estimate here includes (runpod/docs serverless/pricing.mdx bills them separately).
NOT_INCLUDED = (
    "network volume and container disk storage",
    "always-on (active) workers",
    "data transfer",
)
RUNPOD_API_HOST = "api.runpod.ai"

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


def is_self_hosted(endpoint: str) -> bool:
    """Whether ``endpoint`` (an id or a full URL) is not RunPod's: a URL whose host is not
    ``https://api.runpod.ai``. An id is a RunPod endpoint, whatever base URL it is resolved
    against (an emulator or a proxy stands in for RunPod there)."""
    if "://" not in endpoint:
        return False
    try:
        parts = urlsplit(endpoint)
        port = parts.port
    except ValueError:
        return True
    return not (
        parts.scheme == "https" and parts.hostname == RUNPOD_API_HOST and port in (None, 443)
    )


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
class StageJob:
    """A job to estimate: its key, stage, request, and the keys of the jobs whose result it
    needs (see :func:`videokit.billed_time.simulate`)."""

    key: str
    stage: str
    request: EditRequest | AnimateRequest
    after: tuple[str, ...] = ()


@dataclass(frozen=True)
class CostRange:
    """What a set of jobs should be billed: ``warm_usd`` with every worker already up (no start),
    ``cold_usd`` with every worker starting cold. Per stage, how it bills, its workers' billed
    time in each case (execution only for a self-hosted stage; nothing for a per-output one),
    and what its per-output jobs cost (the same in both cases)."""

    warm_usd: float
    cold_usd: float
    billing: dict[str, Billing] = field(default_factory=dict)
    warm: dict[str, BilledTime] = field(default_factory=dict)
    cold: dict[str, BilledTime] = field(default_factory=dict)
    per_output_usd: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class CostModel:
    """Per stage, the GPU pool it runs on, the price table, whether delayTime is billed, and its
    endpoint's facts: idle timeout, start time, max workers, or that it is self-hosted."""

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
    # Per stage (absent: RUNPOD_IDLE_TIMEOUT_S, DEFAULT_START_S, no limit but the concurrency).
    idle_timeout_s: dict[str, float] = field(default_factory=dict)
    start_s: dict[str, float] = field(default_factory=dict)
    max_workers: dict[str, int] = field(default_factory=dict)
    # Stages whose endpoint is self-hosted, and per stage what a second of a self-hosted endpoint
    # costs you: absent 0 (free), None at the stage's pool's rate (you gave it a GPU pool).
    self_hosted: frozenset[str] = frozenset()
    self_hosted_price: dict[str, float | None] = field(default_factory=dict)
    # Public endpoint ids (billed per output), to tell how a job's endpoint bills (billing()).
    public_endpoints: frozenset[str] = frozenset()
    # Where the facts above come from, by "edit.idle_timeout", "edit.start", "edit.self_hosted".
    fact_sources: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for stage, pool in self.gpu.items():
            check_gpu(pool, self.prices, where=f"the GPU of the {stage} endpoint")

    def pool(self, stage: str) -> str:
        return self.gpu.get(stage, DEFAULT_GPU[stage])

    def for_endpoint(
        self, stage: str, gpu: str, price: OutputPrice | None, *, endpoint: str | None = None
    ) -> CostModel:
        """This model with ``stage`` on another endpoint: its GPU pool, or its per-output price
        (one endpoint of a stage that lists several). ``endpoint`` (its id or URL) says whether
        it is self-hosted; without it, the stage stays as it was."""
        outputs = {name: p for name, p in self.output_prices.items() if name != stage}
        if price is not None:
            outputs[stage] = price
        hosted = self.self_hosted
        if endpoint is not None:
            hosted = hosted | {stage} if is_self_hosted(endpoint) else hosted - {stage}
        return replace(
            self, gpu={**self.gpu, stage: gpu}, output_prices=outputs, self_hosted=hosted
        )

    def price_per_second(self, stage: str) -> float:
        """The rate of ``stage``'s GPU pool (see :meth:`rate` for what its jobs are billed)."""
        return self.prices[check_gpu(self.pool(stage), self.prices, where=f"{stage} GPU")]

    def rate(self, stage: str) -> float:
        """What a second of ``stage``'s workers is billed: its pool's rate, or for a self-hosted
        endpoint the price you gave it (0 unless you gave it a price or a GPU pool)."""
        price = self.self_hosted_price.get(stage, 0.0) if stage in self.self_hosted else None
        return self.price_per_second(stage) if price is None else price

    def price_source(self, stage: str) -> str:
        """Where the price of ``stage``'s pool comes from: a catalog, an override, the table."""
        return self.price_sources.get(self.pool(stage), BUILT_IN_PRICES)

    def describe_pool(self, stage: str) -> str:
        """``stage``'s pool with its cards where known: ``ADA_80_PRO (H100 80GB)``."""
        pool = self.pool(stage)
        card = self.cards.get(pool)
        return f"{pool} ({card})" if card else pool

    def billing(self, stage: str, endpoint: str | None = None) -> Billing:
        """How ``stage``'s jobs are billed on ``endpoint`` (an id or URL; None: the stage's
        first choice, as this model has it)."""
        if endpoint is None:
            if stage in self.output_prices:
                return "per-output"
            return "self-hosted" if stage in self.self_hosted else "gpu"
        if is_self_hosted(endpoint):
            return "self-hosted"
        return "per-output" if endpoint in self.public_endpoints else "gpu"

    def idle_timeout(self, stage: str) -> float:
        return self.idle_timeout_s.get(stage, RUNPOD_IDLE_TIMEOUT_S)

    def start_time(self, stage: str) -> float:
        return self.start_s.get(stage, DEFAULT_START_S.get(stage, 60.0))

    def endpoint_facts(self, stage: str) -> EndpointFacts:
        """What bills ``stage``'s workers. Only RunPod's flex workers pay a start and an idle
        timeout: a Public Endpoint bills per output, a self-hosted one its jobs' run time."""
        workers = self.max_workers.get(stage)
        if self.billing(stage) != "gpu":
            return EndpointFacts(idle_timeout_s=0.0, start_s=0.0, max_workers=workers)
        return EndpointFacts(self.idle_timeout(stage), self.start_time(stage), workers)

    def cost(self, stage: str, seconds: float, delay_s: float = 0.0) -> float:
        """What a job of ``stage`` that ran ``seconds`` (and waited ``delay_s``) is billed.

        ``delayTime`` runs from submission until a worker took the job: time queued *plus* a cold
        start, reported as one figure. With ``bill_delay`` it is billed too: an upper bound, for
        endpoints that scale from zero. A self-hosted endpoint bills at :meth:`rate`.
        """
        billed = seconds + (delay_s if self.bill_delay.get(stage, False) else 0.0)
        return max(0.0, billed) * self.rate(stage)

    def estimate_cost(self, stage: str, request: EditRequest | AnimateRequest) -> float:
        """What one job of ``request`` should cost: its per-output price where the stage's
        endpoint bills that way, else its estimated run time at the stage's :meth:`rate`."""
        price = self.output_prices.get(stage)
        if price is not None:
            return price.of(request)
        return self.cost(stage, self.estimate_seconds(request))

    def estimate_range(
        self, jobs: Sequence[StageJob], *, concurrency: Mapping[str, int] | None = None
    ) -> CostRange:
        """What ``jobs`` should be billed, with workers' start and idle time: each job runs as
        soon as the jobs it needs have ended, on at most ``concurrency[stage]`` (and the stage's
        max) workers, from all warm (no start) to all cold (a start per worker)."""
        facts: dict[str, EndpointFacts] = {}
        for stage in dict.fromkeys(job.stage for job in jobs):
            base = self.endpoint_facts(stage)
            limits = [n for n in (base.max_workers, (concurrency or {}).get(stage)) if n]
            facts[stage] = replace(base, max_workers=min(limits) if limits else None)
        planned = [
            PlannedJob(job.key, job.stage, self.estimate_seconds(job.request), job.after)
            for job in jobs
        ]
        warm = simulate(planned, facts, warm=True)
        cold = simulate(planned, facts, warm=False)
        per_output: dict[str, float] = {}
        for job in jobs:
            price = self.output_prices.get(job.stage)
            if price is not None:
                per_output[job.stage] = per_output.get(job.stage, 0.0) + price.of(job.request)
        billing = {stage: self.billing(stage) for stage in facts}

        def usd(billed: Mapping[str, BilledTime]) -> float:
            on_workers = sum(
                t.total_s * self.rate(stage)
                for stage, t in billed.items()
                if billing[stage] != "per-output"
            )
            return on_workers + sum(per_output.values())

        gpu = {stage: t for stage, t in warm.items() if billing[stage] != "per-output"}
        cold_gpu = {stage: t for stage, t in cold.items() if billing[stage] != "per-output"}
        return CostRange(usd(warm), usd(cold), billing, gpu, cold_gpu, per_output)

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
