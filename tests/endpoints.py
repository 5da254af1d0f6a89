"""Self-hosted endpoints for tests: real ``videokit serve`` apps on loopback, one per worker."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

from videokit.backends.base import Stage
from videokit.serve.app import create_app, running_server
from videokit.serve.faults import FaultConfig, FaultInjector
from videokit.serve.jobs import Job, JobQueue
from videokit.worker.engines import load_engine
from videokit.worker.handler import make_handler


@dataclass
class Counting:
    """ASGI wrapper counting `run` requests the server processed (a dropped reply included)."""

    app: Any
    runs: int = 0
    bodies: list[bytes] = field(default_factory=list)
    warmups: int = 0
    # Ids of the warm-up jobs whose `run` reply reached the client.
    warmup_ids: list[str] = field(default_factory=list)
    cancels: list[tuple[str, float]] = field(default_factory=list)
    # The HTTP status of every `run` reply sent (a gateway 502/504 may hide a created job).
    run_statuses: list[int] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        status: list[int] = []
        body = b""
        reply = b""

        async def recv() -> Any:
            nonlocal body
            message = await receive()
            body += message.get("body", b"")
            return message

        async def snd(message: Any) -> None:
            nonlocal reply
            if message["type"] == "http.response.start":
                status.append(message["status"])
            elif message["type"] == "http.response.body":
                reply += message.get("body", b"")
            await send(message)

        try:
            await self.app(scope, recv, snd)
        finally:
            self.bodies.append(body)
            if path.endswith("/run") and status:
                self.run_statuses.append(status[0])
            # A dropped reply ends in an exception here, after the job was created: count it too.
            if path.endswith("/run") and (not status or status[0] == 200):
                if b'"warmup"' in body:
                    self.warmups += 1
                    if reply:
                        self.warmup_ids.append(json.loads(reply)["id"])
                else:
                    self.runs += 1
            if "/cancel/" in path:
                self.cancels.append((path.rsplit("/", 1)[-1], time.monotonic()))


@dataclass
class Servers:
    urls: dict[Stage, str]
    counters: dict[Stage, Counting]
    apps: dict[Stage, Any]

    def queue(self, stage: Stage) -> JobQueue:
        queue: JobQueue = self.apps[stage].state.queue
        return queue

    def faults(self, stage: Stage) -> FaultInjector | None:
        injector: FaultInjector | None = self.apps[stage].fault_injector
        return injector

    def unfinished(self) -> list[Job]:
        """Jobs still IN_QUEUE or IN_PROGRESS on either server."""
        return [job for stage in self.apps for job in self.queue(stage).jobs() if not job.is_final]


@contextmanager
def serve_workers(
    *,
    faults: FaultConfig | None = None,
    min_job_seconds: float | Mapping[Stage, float] = 0.0,
    concurrency: int | Mapping[Stage, int] = 4,
    api_key: str | None = None,
    log: Callable[[str], None] | None = None,
    handlers: Mapping[Stage, Callable[[Any], Any]] | None = None,
) -> Iterator[Servers]:
    """Two real servers on loopback (edit and animate), as a self-hosted setup runs them.

    ``min_job_seconds`` and ``concurrency`` may differ per stage; ``handlers`` wraps a stage's
    real handler (``handlers[stage](real) -> handler``), e.g. to make it fail or stream.
    """
    with ExitStack() as stack:
        urls: dict[Stage, str] = {}
        counters: dict[Stage, Counting] = {}
        apps: dict[Stage, Any] = {}
        stages: tuple[Stage, ...] = ("edit", "animate")
        for stage in stages:
            seconds = (
                min_job_seconds.get(stage, 0.0)
                if isinstance(min_job_seconds, Mapping)
                else min_job_seconds
            )
            slots = concurrency.get(stage, 4) if isinstance(concurrency, Mapping) else concurrency
            options: dict[str, object] = {"min_job_seconds": seconds} if seconds else {}
            engine = load_engine(stage, "preview", **options)
            handler: Any = make_handler(stage, engine, allow_private_urls=True, log=log)
            if handlers and stage in handlers:
                handler = handlers[stage](handler)
            app = create_app(handler, concurrency=slots, faults=faults, api_key=api_key)
            counter = Counting(app)
            base = stack.enter_context(running_server(counter))
            urls[stage] = f"{base}/v2/{stage}"
            counters[stage] = counter
            apps[stage] = app
        yield Servers(urls, counters, apps)
