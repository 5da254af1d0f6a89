"""Self-hosted endpoints for tests: real ``videokit serve`` apps on loopback, one per worker."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

from videokit.backends.base import Stage
from videokit.serve.app import create_app, running_server
from videokit.serve.faults import FaultConfig
from videokit.worker.engines import load_engine
from videokit.worker.handler import make_handler


@dataclass
class Counting:
    """ASGI wrapper counting `run` requests the server processed (a dropped reply included)."""

    app: Any
    runs: int = 0
    bodies: list[bytes] = field(default_factory=list)
    warmups: int = 0
    cancels: list[tuple[str, float]] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        status: list[int] = []
        body = b""

        async def recv() -> Any:
            nonlocal body
            message = await receive()
            body += message.get("body", b"")
            return message

        async def snd(message: Any) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            await self.app(scope, recv, snd)
        finally:
            self.bodies.append(body)
            # A dropped reply ends in an exception here, after the job was created: count it too.
            if path.endswith("/run") and (not status or status[0] == 200):
                if b'"warmup"' in body:
                    self.warmups += 1
                else:
                    self.runs += 1
            if "/cancel/" in path:
                self.cancels.append((path.rsplit("/", 1)[-1], time.monotonic()))


@dataclass
class Servers:
    urls: dict[Stage, str]
    counters: dict[Stage, Counting]
    apps: dict[Stage, Any]


@contextmanager
def serve_workers(
    *,
    faults: FaultConfig | None = None,
    min_job_seconds: float = 0.0,
    concurrency: int = 4,
    api_key: str | None = None,
    log: Callable[[str], None] | None = None,
) -> Iterator[Servers]:
    """Two real servers on loopback (edit and animate), as a self-hosted setup runs them."""
    with ExitStack() as stack:
        urls: dict[Stage, str] = {}
        counters: dict[Stage, Counting] = {}
        apps: dict[Stage, Any] = {}
        stages: tuple[Stage, ...] = ("edit", "animate")
        for stage in stages:
            options: dict[str, object] = (
                {"min_job_seconds": min_job_seconds} if min_job_seconds else {}
            )
            engine = load_engine(stage, "preview", **options)
            handler = make_handler(stage, engine, allow_private_urls=True, log=log)
            app = create_app(handler, concurrency=concurrency, faults=faults, api_key=api_key)
            counter = Counting(app)
            base = stack.enter_context(running_server(counter))
            urls[stage] = f"{base}/v2/{stage}"
            counters[stage] = counter
            apps[stage] = app
        yield Servers(urls, counters, apps)
