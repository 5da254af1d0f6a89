"""A scripted stand-in for RunPod's API, an injected clock, and the backend wired to both.

``FakeRunPod`` answers RunPod's routes from a script (each job attempt's statuses, in order, as
they are polled); ``hooks`` make one route misbehave (503 storms, 429 with Retry-After, refused
cancels, a lost ``run`` reply) the way the real API can. The clock never sleeps for real.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Callable
from typing import Any

import httpx

from videokit.backends.base import JobContext
from videokit.backends.retry import RetryPolicy
from videokit.backends.runpod import (
    Endpoint,
    RunPodBackend,
    RunPodConfig,
)
from videokit.config import Secret
from videokit.costs import GPU_PRICE_PER_SECOND
from videokit.protocol import AnimateRequest, MediaInput
from videokit.storage import S3Storage, StorageConfig

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
PRICE = GPU_PRICE_PER_SECOND["ADA_80_PRO"]


def media(data: bytes, kind: str) -> dict[str, Any]:
    return {
        "base64": base64.b64encode(data).decode(),
        "content_type": kind,
        "size_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


OUTPUT = {
    "video": media(b"mp4-bytes", "video/mp4"),
    "last_frame": media(PNG, "image/png"),
    "seed": 1,
    "frames": 9,
    "fps": 8,
    "width": 128,
    "height": 128,
    "inference_ms": 2000,
    "model": "fake",
}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


Hook = Callable[[httpx.Request], httpx.Response | None]


def route_of(path: str) -> str:
    for route in ("run", "status", "cancel", "retry", "stream", "health", "purge-queue"):
        if path.endswith(f"/{route}") or f"/{route}/" in path:
            return route
    raise AssertionError(f"unexpected path {path}")


class FakeRunPod:
    """Answers RunPod's API from a script: each job attempt's statuses, in order, as polled."""

    def __init__(self, script: Callable[[int], list[dict[str, Any]]]) -> None:
        self.script = script
        self.attempts = 0
        self.created = 0
        self.jobs: dict[str, list[dict[str, Any]]] = {}
        self.calls: list[tuple[str, str]] = []
        self.bodies: list[dict[str, Any]] = []
        self.hooks: dict[str, Hook] = {}
        # What a cancelled job reports afterwards (RunPod gives its timings when it had started).
        self.after_cancel: dict[str, Any] = {"status": "CANCELLED", "executionTime": 1500}

    def create(self, request: httpx.Request) -> str:
        self.created += 1
        job_id = f"job-{self.created}"
        self.jobs[job_id] = list(self.script(self.attempts))
        self.attempts += 1
        self.bodies.append(json.loads(request.content))
        return job_id

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        route = route_of(path)
        self.calls.append((request.method, path))
        hook = self.hooks.get(route)
        if hook is not None:
            answer = hook(request)
            if answer is not None:
                return answer
        if route == "run":
            return httpx.Response(200, json={"id": self.create(request), "status": "IN_QUEUE"})
        job_id = path.rsplit("/", 1)[-1]
        if route == "cancel":
            if job_id not in self.jobs:
                return httpx.Response(404, json={"error": "job not found"})
            self.jobs[job_id] = [dict(self.after_cancel)]
            return httpx.Response(200, json={"id": job_id, "status": "CANCELLED"})
        states = self.jobs.get(job_id)
        if states is None or states[0].get("status") == "404":
            return httpx.Response(404, json={"error": "job not found"})
        if route == "retry":
            if states[0].get("status") not in ("FAILED", "TIMED_OUT"):
                return httpx.Response(400, json={"error": "not retryable"})
            self.jobs[job_id] = list(self.script(self.attempts))
            self.attempts += 1
            return httpx.Response(200, json={"id": job_id, "status": "IN_QUEUE"})
        status = states.pop(0) if len(states) > 1 else states[0]
        if status.get("status") == "404":
            return httpx.Response(404, json={"error": "job not found"})
        return httpx.Response(200, json={"id": job_id, **status})

    def routes(self, route: str) -> list[str]:
        return [p.rsplit("/", 1)[-1] for _, p in self.calls if route_of(p) == route]


def backend(
    fake: FakeRunPod, clock: FakeClock, *, storage: Any = None, **config: Any
) -> RunPodBackend:
    cfg = RunPodConfig(
        api_key=Secret("k"),
        endpoints={"animate": config.pop("endpoint", Endpoint("ep", gpu="ADA_80_PRO"))},
        warmup=config.pop("warmup", False),
        **config,
    )
    return RunPodBackend(
        cfg,
        storage=storage,
        transport=httpx.MockTransport(fake),
        clock=clock,
        sleep=clock.sleep,
        retry=RetryPolicy(attempts=3, sleep=clock.sleep, clock=clock),
    )


REQUEST = AnimateRequest(
    image=MediaInput.from_bytes(PNG), prompt="p", seed=1, width=128, height=128, frames=9
)


def run(b: RunPodBackend, ctx: JobContext) -> Any:
    async def go() -> Any:
        try:
            return await b.animate(REQUEST, ctx)
        finally:
            await b.aclose()

    return asyncio.run(go())


def done(execution_ms: int = 2000, delay_ms: int = 100) -> dict[str, Any]:
    return {
        "status": "COMPLETED",
        "output": OUTPUT,
        "executionTime": execution_ms,
        "delayTime": delay_ms,
    }


def server_error(status: int = 503, **headers: str) -> httpx.Response:
    return httpx.Response(status, text=f"{status} (test)", headers=headers)


def storage() -> S3Storage:
    # Building the client opens no connection; check() only needs to know storage exists.
    config = StorageConfig(
        bucket="b", endpoint_url="http://127.0.0.1:9", access_key_id="a", secret_access_key="s"
    )
    return S3Storage(config)
