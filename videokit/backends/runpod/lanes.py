"""Building a stage's route: each endpoint's API kind, job policy, cost model and cache identity.

The identity names the kind and the model behind an endpoint, so results of different models never
stand in for each other; videokit's own kind and the Public Endpoints keep the identities they
always had (``runpod/<model>@<endpoint>``), so existing caches stay valid.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

from videokit.backends.base import Stage
from videokit.backends.kinds import KIND_STAGES, ApiKind
from videokit.backends.kinds.catalogue import PUBLIC_MODELS, public_model
from videokit.backends.kinds.fetch import ResultFetcher
from videokit.backends.runpod.client import RunPodClient
from videokit.backends.runpod.config import Endpoint, RunPodConfig, endpoint_variable
from videokit.backends.runpod.jobs import JobPolicy
from videokit.backends.runpod.routing import Lane, Route
from videokit.costs import CostModel, OutputPrice
from videokit.errors import ConfigError

__all__ = ["build_route", "lane_costs", "make_kind"]


def make_kind(
    stage: Stage,
    endpoint: Endpoint,
    *,
    storage: Any | None,
    fetcher: ResultFetcher,
    price: OutputPrice | None = None,
) -> ApiKind:
    """The API kind of ``endpoint`` as ``stage``'s endpoint; ConfigError if it cannot be one.
    ``price``: a per-output price configured for it (a public endpoint's, overriding the
    catalogue's)."""
    name = endpoint.api
    stages = KIND_STAGES[name]
    if stage not in stages:
        raise ConfigError(
            f"{endpoint.label} is a {name} endpoint, which runs {' and '.join(stages)} jobs, set "
            f"as the {stage} endpoint",
            hint=f"put it in {endpoint_variable(stages[0])} instead",
        )
    if name == "runpod-public":
        model = public_model(endpoint.label)
        if model is None:
            raise ConfigError(
                f"the {stage} endpoint {endpoint.id} is not a RunPod Public Endpoint videokit "
                "knows",
                hint=f"public endpoints are: {', '.join(PUBLIC_MODELS)}",
            )
        if model.stage != stage:
            raise ConfigError(
                f"{endpoint.label} is an {model.stage} endpoint ({model.title}), set as the "
                f"{stage} endpoint",
                hint=f"put it in {endpoint_variable(model.stage)} instead",
            )
        from videokit.backends.kinds.runpod_public import PublicApi

        return PublicApi(model, storage=storage, fetcher=fetcher, price=price)
    if name == "lightx2v-worker":
        from videokit.backends.kinds.lightx2v import LightX2VApi

        return LightX2VApi(model=endpoint.model)
    if name == "comfy-wan-worker":
        from videokit.backends.kinds.comfy_wan import ComfyWanApi

        return ComfyWanApi(model=endpoint.model, storage=storage)
    if name == "worker-comfyui":
        from videokit.backends.kinds.worker_comfyui import WorkerComfyApi

        if endpoint.workflow is None:
            raise ConfigError(
                f"the {stage} endpoint {endpoint.label} runs worker-comfyui, and no workflow is "
                "configured for it",
                hint=f"set VIDEOKIT_{stage.upper()}_WORKFLOW (or `workflow` under [{stage}] in "
                "videokit.toml) to a bindings file, e.g. examples/comfy/wan22-i2v-4step.toml",
            )
        return WorkerComfyApi.load(endpoint.workflow, storage=storage, fetcher=fetcher)
    from videokit.backends.kinds.videokit_api import VideokitApi

    return VideokitApi(stage, model=endpoint.model, storage=storage)


def identity(stage: Stage, endpoint: Endpoint, kind: ApiKind) -> str:
    """The cache identity of ``stage``'s results made on ``endpoint``."""
    model = kind.model or endpoint.model or stage
    if kind.name in ("videokit", "runpod-public"):
        return f"runpod/{model}@{endpoint.label}"
    return f"runpod/{kind.name}/{model}@{endpoint.label}"


def lane_costs(
    costs: CostModel, stage: Stage, position: int, endpoint: Endpoint, kind: ApiKind
) -> CostModel:
    """``costs`` as the ``position``-th endpoint of ``stage``'s route bills: the first at the
    stage's pool as the cost model has it (create_backend gave it that pool), a fallback at its
    own; per output where its kind bills so; self-hosted when its URL is not RunPod's."""
    pool = costs.pool(stage) if position == 0 else endpoint.gpu
    return costs.for_endpoint(stage, pool, kind.price, endpoint=endpoint.id)


def build_route(
    stage: Stage,
    config: RunPodConfig,
    costs: CostModel,
    client: RunPodClient,
    *,
    storage: Any | None,
    fetcher: ResultFetcher,
    output_prices: Mapping[str, OutputPrice],
    sleep: Callable[[float], Awaitable[None]],
) -> Route:
    """``stage``'s endpoints as lanes: every one but the last gets a single submission per job
    (a job that fails there moves on); the last keeps ``config.job_attempts``."""
    endpoints = config.route(stage)
    lanes: list[Lane] = []
    for position, endpoint in enumerate(endpoints):
        # A price configured for it ([output_prices], VIDEOKIT_OUTPUT_PRICES) bills estimates;
        # the cost model carries the first endpoint's.
        price = costs.output_prices.get(stage) if position == 0 else None
        kind = make_kind(
            stage,
            endpoint,
            storage=storage,
            fetcher=fetcher,
            price=price or output_prices.get(endpoint.label),
        )
        last = position == len(endpoints) - 1
        rules = config if last else replace(config, job_attempts=1)
        billed = lane_costs(costs, stage, position, endpoint, kind)
        policy = JobPolicy(
            client, {stage: kind}, billed, storage=storage, sleep=sleep, config=rules
        )
        lanes.append(Lane(endpoint, kind, policy, identity(stage, endpoint, kind)))
    return Route(stage, lanes, client, clock=client.clock)
