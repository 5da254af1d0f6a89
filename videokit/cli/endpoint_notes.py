"""What ``plan`` says about the endpoints right now: queue, warm workers, cold starts, routes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from videokit.backends.base import Backend, Stage
from videokit.costs import CostModel
from videokit.errors import EndpointError
from videokit.pipeline.forecast import RouteEndpoint

__all__ = ["endpoint_notes", "route_endpoints"]


def route_endpoints(backend: Backend, costs: CostModel) -> dict[Stage, list[RouteEndpoint]]:
    """Per stage that lists several endpoints, each with the cost model it bills by (``costs``
    with that endpoint's GPU pool or per-output price); empty for other backends."""
    from videokit.backends.runpod import RunPodBackend
    from videokit.backends.runpod.lanes import lane_costs

    if not isinstance(backend, RunPodBackend):
        return {}
    found: dict[Stage, list[RouteEndpoint]] = {}
    for stage, route in backend.routes.items():
        if len(route.lanes) < 2:
            continue
        found[stage] = [
            RouteEndpoint(
                lane.label,
                lane.kind.name,
                lane_costs(costs, stage, n, lane.endpoint, lane.kind),
            )
            for n, lane in enumerate(route.lanes)
        ]
    return found


def endpoint_notes(backend: Backend, stages: Iterable[Stage]) -> list[str]:
    """One line per endpoint that may get jobs, from its ``health`` (read-only, a few seconds at
    most); empty for backends without endpoints. Public endpoints are RunPod's to keep warm: they
    are described by their model and price, without a request. An endpoint that does not answer
    is said to be skipped, where the stage lists another."""
    from videokit.backends.runpod import RunPodBackend

    if not isinstance(backend, RunPodBackend):
        return []
    wanted = [stage for stage in dict.fromkeys(stages) if stage in backend.routes]

    async def gather() -> list[str]:
        async def one(stage: Stage, n: int) -> str:
            route = backend.routes[stage]
            lane = route.lanes[n]
            name = f"{stage} endpoint {lane.label}"
            if len(route.lanes) > 1:
                place = f"{n + 1} of {len(route.lanes)}"
                name = f"{stage} endpoint {place}, {lane.label} ({lane.kind.name})"
            if lane.kind.name == "runpod-public":
                price = lane.kind.price.describe() if lane.kind.price is not None else "see RunPod"
                return f"{name}: RunPod Public Endpoint, {price} (RunPod keeps it warm)"
            try:
                health = await backend.client.health(lane.endpoint, stage, timeout_s=5.0)
            except EndpointError as exc:
                if n + 1 < len(route.lanes):
                    return (
                        f"{name}: unreachable ({exc.message}); its jobs go straight to "
                        f"{route.lanes[n + 1].label}"
                    )
                return f"{name}: unreachable ({exc.message})"
            queued = f", {health.in_queue} job(s) queued ahead" if health.in_queue else ""
            if health.workers == 0:
                return (
                    f"{name}: no worker is up{queued}; the first job waits for a cold start "
                    "(typically 45-90 s)"
                )
            return f"{name}: {health.workers} worker(s) up ({health.idle} idle){queued}"

        try:
            jobs = [
                one(stage, n) for stage in wanted for n in range(len(backend.routes[stage].lanes))
            ]
            return list(await asyncio.gather(*jobs))
        finally:
            await backend.aclose()

    return asyncio.run(gather()) if wanted else []
