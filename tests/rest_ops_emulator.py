"""A loopback emulator of RunPod's REST API v2 routes behind ``cost``, ``workers`` and ``logs``.

Real HTTP on 127.0.0.1 (``videokit.serve.app.running_server``): ``GET /v2/serverless/{id}/workers``
(:class:`ListEndpointWorkersResponse`), ``GET /v2/serverless/{id}/workers/{workerId}/logs`` (a
Server-Sent Events stream of :class:`WorkerLogEvent`, honouring ``tail``, ``since``, ``source`` and
``Last-Event-ID``), ``GET /v2/billing/serverless`` (filtered by ``serverlessId``) and
``GET /v2/billing/endpoints``, both by ``startTime``/``endTime`` snapped to hour buckets. Every
answer is validated against :mod:`videokit.rest.models`; every request is recorded. With an
``api_key`` it answers 401 to any other ``Authorization``; without one it checks none (the CLI
sends no key to a host that is not RunPod's). A log stream sends its backfill, then stays open
``hold_s`` seconds sending lines appended meanwhile (one every ``tick_s`` if set), then ends.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from videokit.rest.models import (
    ListEndpointBillingResponse,
    ListEndpointWorkersResponse,
    ListServerlessBillingResponse,
    WorkerLogEvent,
)
from videokit.serve.app import running_server


@dataclass(frozen=True)
class Seen:
    path: str
    query: dict[str, str]
    authorization: str | None
    last_event_id: str | None


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def worker(
    worker_id: str, status: str, started: datetime | None = None, **extra: Any
) -> dict[str, Any]:
    """A worker as the route answers it."""
    return {
        "id": worker_id, "status": status, "isStale": False, "gpuCount": 1, "version": 1,
        "image": "videokit-animate:1", "uptimeSeconds": 60, "gpuTypeId": "NVIDIA H100 80GB HBM3",
        "dataCenterId": "EU-RO-1", "startedAt": iso(started) if started else None, **extra,
    }  # fmt: skip


def problem(status: int, detail: str) -> Response:
    document = {"title": "Error", "status": status, "detail": detail}
    return JSONResponse(document, status_code=status, media_type="application/problem+json")


@dataclass
class OpsEmulator:
    api_key: str | None = None
    workers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # (endpoint, worker) -> events (ts, source, line)
    logs: dict[tuple[str, str], list[tuple[datetime, str, str]]] = field(default_factory=dict)
    # serverlessId -> buckets (start, usd); public endpoints: one list
    serverless_bills: dict[str, list[tuple[datetime, float]]] = field(default_factory=dict)
    public_bills: list[tuple[datetime, float]] = field(default_factory=list)
    hold_s: float = 0.0
    tick_s: float | None = None
    requests: list[Seen] = field(default_factory=list)
    base_url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- for tests

    def log(self, endpoint: str, worker_id: str, line: str, source: str = "container") -> None:
        with self._lock:
            events = self.logs.setdefault((endpoint, worker_id), [])
            last = events[-1][0] if events else datetime(2026, 9, 1, 12, 0, tzinfo=UTC)
            events.append((last + timedelta(seconds=1), source, line))

    def seen(self, part: str) -> list[Seen]:
        return [r for r in self.requests if part in r.path]

    # -- the app

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v2/serverless/{id}/workers", self._workers),
                Route("/v2/serverless/{id}/workers/{worker}/logs", self._logs),
                Route("/v2/billing/serverless", self._billing),
                Route("/v2/billing/endpoints", self._billing),
            ]
        )

    def _check(self, request: Request) -> Response | None:
        authorization = request.headers.get("authorization")
        with self._lock:
            self.requests.append(
                Seen(
                    request.url.path,
                    dict(request.query_params),
                    authorization,
                    request.headers.get("last-event-id"),
                )
            )
        if self.api_key is not None and authorization != f"Bearer {self.api_key}":
            return problem(401, "missing or invalid bearer token")
        return None

    async def _workers(self, request: Request) -> Response:
        refused = self._check(request)
        if refused is not None:
            return refused
        endpoint = request.path_params["id"]
        if endpoint not in self.workers:
            return problem(404, f"endpoint {endpoint} not found")
        found = self.workers[endpoint]
        counts = {s.lower(): sum(1 for w in found if w["status"] == s) for s in _STATES}
        document = {"workers": found, "summary": {**counts, "total": len(found)}}
        ListEndpointWorkersResponse.model_validate(document)
        return JSONResponse(document)

    async def _logs(self, request: Request) -> Response:
        refused = self._check(request)
        if refused is not None:
            return refused
        key = (request.path_params["id"], request.path_params["worker"])
        if key not in self.logs:
            return problem(404, f"worker {key[1]} not found")
        query = request.query_params
        cursor = request.headers.get("last-event-id")
        since = cursor.split("/")[0] if cursor else query.get("since")
        after = datetime.fromisoformat(since.replace("Z", "+00:00")) if since else None
        source = query.get("source")
        tail = int(query.get("tail", "100"))
        with self._lock:
            events = [e for e in self.logs[key] if source in (None, e[1])]
        if after is not None:
            start = next((i for i, e in enumerate(events) if e[0] > after), len(events))
        else:
            start = max(0, len(events) - tail)
        return StreamingResponse(
            self._events(key, start, source),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _events(
        self, key: tuple[str, str], start: int, source: str | None
    ) -> AsyncIterator[str]:
        sent = start
        loop = asyncio.get_running_loop()
        until = loop.time() + self.hold_s
        next_tick = loop.time() + (self.tick_s or 0)
        while True:
            with self._lock:
                events = [e for e in self.logs[key] if source in (None, e[1])]
            for ts, kind, line in events[sent:]:
                data = {"ts": iso(ts), "source": kind, "line": line}
                WorkerLogEvent.model_validate(data)
                yield f"id: {iso(ts)}/{sent:012d}\ndata: {json.dumps(data)}\n\n"
                sent += 1
            if loop.time() >= until:
                return
            if self.tick_s is not None and loop.time() >= next_tick:
                self.log(*key, f"tick {sent}")
                next_tick += self.tick_s
            await asyncio.sleep(0.02)

    async def _billing(self, request: Request) -> Response:
        refused = self._check(request)
        if refused is not None:
            return refused
        query = request.query_params
        size = query.get("bucketSize", "day")
        if size != "hour":
            return problem(400, "the emulator bills by the hour only")
        low = _parse(query["startTime"]).replace(minute=0, second=0)
        high = _parse(query["endTime"])
        if high.minute or high.second:
            high = high.replace(minute=0, second=0) + timedelta(hours=1)
        public = request.url.path.endswith("/endpoints")
        wanted = query.get("serverlessId")
        rows: list[tuple[str | None, datetime, float]] = []
        if public:
            rows = [(None, s, usd) for s, usd in self.public_bills]
        else:
            for endpoint, buckets in self.serverless_bills.items():
                if wanted in (None, endpoint):
                    rows += [(endpoint, s, usd) for s, usd in buckets]
        records = []
        for owner, start, usd in rows:
            if low <= start < high:
                record: dict[str, Any] = {
                    "startTime": iso(start),
                    "endTime": iso(start + timedelta(hours=1)),
                    "totalAmount": usd,
                }
                if not public:
                    record.update(
                        serverlessId=owner, gpuAmount=usd * 0.9, cpuAmount=0.0,
                        diskAmount=0.0, feeAmount=usd * 0.1,
                    )  # fmt: skip
                records.append(record)
        total = round(sum(r["totalAmount"] for r in records), 6)
        window = {"startTime": iso(low), "endTime": iso(high), "bucketSize": size}
        if public:
            metadata: dict[str, Any] = {"totals": {"totalAmount": total}}
            model: Any = ListEndpointBillingResponse
        else:
            if wanted:
                window["serverlessId"] = wanted
            totals = {
                "totalAmount": total, "gpuAmount": total * 0.9, "cpuAmount": 0.0,
                "diskAmount": 0.0, "feeAmount": total * 0.1,
            }  # fmt: skip
            ids = {r["serverlessId"] for r in records}
            metadata = {"totals": totals, "uniqueServerlessCount": len(ids)}
            model = ListServerlessBillingResponse
        document = {
            "records": records,
            "metadata": {"query": window, "recordCount": len(records), **metadata},
        }
        model.model_validate(document)
        return JSONResponse(document)


_STATES = ("RUNNING", "IDLE", "INITIALIZING", "THROTTLED", "UNHEALTHY")


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


@contextmanager
def ops_emulator(api_key: str | None = None, **fields: Any) -> Iterator[OpsEmulator]:
    """Run the emulator on a free loopback port; ``.base_url`` is ``http://127.0.0.1:PORT/v2``."""
    emulator = OpsEmulator(api_key=api_key, **fields)
    with running_server(emulator.app()) as origin:
        emulator.base_url = f"{origin}/v2"
        yield emulator
