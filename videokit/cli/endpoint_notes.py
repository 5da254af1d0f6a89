"""What ``plan`` says about the endpoints right now: queue, warm workers, cold starts."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from videokit.backends.base import Backend, Stage
from videokit.errors import EndpointError

__all__ = ["endpoint_notes"]


def endpoint_notes(backend: Backend, stages: Iterable[Stage]) -> list[str]:
    """One line per endpoint that will get jobs, from its ``health`` (read-only, a few seconds at
    most); empty for backends without endpoints. Public endpoints are RunPod's to keep warm: they
    are described by their model and price, without a request."""
    from videokit.backends.runpod import RunPodBackend

    if not isinstance(backend, RunPodBackend):
        return []
    wanted = [stage for stage in dict.fromkeys(stages) if stage in backend.config.endpoints]

    async def gather() -> list[str]:
        async def one(stage: Stage) -> str:
            endpoint = backend.config.endpoints[stage]
            kind = backend.kinds[stage]
            if kind.name == "runpod-public":
                price = kind.price.describe() if kind.price is not None else "see RunPod"
                return (
                    f"{stage} endpoint {endpoint.label}: RunPod Public Endpoint, {price} "
                    "(RunPod keeps it warm)"
                )
            try:
                health = await backend.health(stage)
            except EndpointError as exc:
                return f"{stage} endpoint {endpoint.label}: unreachable ({exc.message})"
            queued = f", {health.in_queue} job(s) queued ahead" if health.in_queue else ""
            if health.workers == 0:
                return (
                    f"{stage} endpoint {endpoint.label}: no worker is up{queued}; the first job "
                    "waits for a cold start (typically 45-90 s)"
                )
            return (
                f"{stage} endpoint {endpoint.label}: {health.workers} worker(s) up "
                f"({health.idle} idle){queued}"
            )

        try:
            return list(await asyncio.gather(*(one(stage) for stage in wanted)))
        finally:
            await backend.aclose()

    return asyncio.run(gather()) if wanted else []
