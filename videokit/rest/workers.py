"""An endpoint's workers and their logs, over RunPod's REST API v2.

``GET /v2/serverless/{id}/workers`` lists the active workers (JSON, through
:class:`~videokit.rest.client.RunPodRest`). ``GET /v2/serverless/{id}/workers/{workerId}/logs``
is a Server-Sent Events stream (``id:`` is the event's timestamp cursor, ``data:`` a
:class:`~videokit.rest.models.WorkerLogEvent`), which the JSON client cannot read, so
:class:`WorkerLogs` reads it with its own httpx client under the same key rule: the key goes only
to ``https://api.runpod.io`` unless ``allow_key_to_any_host`` (tests). The route's parameters, as
the OpenAPI document gives them: ``tail`` (backfill, default 100, at most 5000), ``since``
(RFC 3339), ``source`` (``container``/``system``) and the ``Last-Event-ID`` header, which resumes
after a cursor. Without ``follow`` the backfill is read until the stream goes quiet; with it, a
stream that ends is reopened from the last cursor, at most once per :data:`FOLLOW_INTERVAL_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import httpx
from pydantic import ValidationError

from videokit.rest.client import DEFAULT_REST_URL, RestError, RunPodRest, is_runpod_rest
from videokit.rest.models import ListEndpointWorkersResponse, WorkerLogEvent

__all__ = [
    "FOLLOW_INTERVAL_S",
    "LogEvent",
    "WorkerLogs",
    "list_workers",
    "parse_sse",
]

log = logging.getLogger(__name__)

#: The shortest time between two requests of a followed log stream (at most one a second).
FOLLOW_INTERVAL_S = 1.0
#: A stream that fails (network, 5xx, 429) while followed is retried after at most this long.
MAX_BACKOFF_S = 30.0
LogSource = Literal["container", "system"]


async def list_workers(rest: RunPodRest, endpoint_id: str) -> ListEndpointWorkersResponse:
    """The active workers of ``endpoint_id`` and a summary of their states."""
    return await rest.get(f"serverless/{endpoint_id}/workers", ListEndpointWorkersResponse)


@dataclass(frozen=True)
class LogEvent:
    """One log line and its cursor (the SSE ``id``, to resume after it)."""

    id: str | None
    event: WorkerLogEvent


def parse_sse(lines: list[str]) -> tuple[str | None, str] | None:
    """One SSE event's ``(id, data)`` from its lines, or None (a comment, a keep-alive)."""
    event_id: str | None = None
    data: list[str] = []
    for line in lines:
        if not line or line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "id":
            event_id = value
        elif name == "data":
            data.append(value)
    return (event_id, "\n".join(data)) if data else None


class _Ended(Exception):
    """The stream ended or failed in a way that following may retry."""


class WorkerLogs:
    """A worker's log stream; use as ``async with WorkerLogs(key, base_url=...)``."""

    def __init__(
        self,
        api_key: str | None,
        *,
        base_url: str = DEFAULT_REST_URL,
        allow_key_to_any_host: bool = False,
        timeout_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # RunPodRest checks the URL (http(s), RunPod's host over https only) the same way.
        self._checked = RunPodRest(None, base_url=base_url)
        self.base_url = self._checked.base_url
        key = (api_key or "").strip() or None
        send = key is not None and (allow_key_to_any_host or is_runpod_rest(self.base_url))
        self._key = key if send else None
        self._sleep, self._clock = sleep, clock
        self._client = httpx.AsyncClient(
            timeout=timeout_s, follow_redirects=False, transport=transport
        )

    async def __aenter__(self) -> WorkerLogs:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()
        await self._checked.aclose()

    async def stream(
        self,
        endpoint_id: str,
        worker_id: str,
        *,
        tail: int = 100,
        source: LogSource | None = None,
        follow: bool = False,
        quiet_s: float = 2.0,
    ) -> AsyncIterator[LogEvent]:
        """The worker's last ``tail`` lines, then (``follow``) new ones until cancelled.

        Without ``follow`` it returns once the stream ends or sends nothing for ``quiet_s``.
        A followed stream that ends or fails for a passing reason is reopened after its last
        cursor (``Last-Event-ID``), no sooner than :data:`FOLLOW_INTERVAL_S` after the last
        request; events already seen are skipped. 401/403/404 always raise :class:`RestError`.
        """
        route = self._checked.path(f"serverless/{endpoint_id}/workers/{worker_id}/logs")
        cursor: str | None = None
        seen: deque[str] = deque(maxlen=1000)
        backoff = 0.0
        while True:
            started = self._clock()
            params: dict[str, str] = {"tail": str(max(0, min(tail, 5000)))}
            if source is not None:
                params["source"] = source
            try:
                async for item in self._open(route, params, cursor, None if follow else quiet_s):
                    if item.id is not None:
                        if item.id in seen:
                            continue
                        seen.append(item.id)
                        cursor = item.id
                    backoff = 0.0
                    yield item
            except _Ended as ended:
                if not follow:
                    raise RestError(str(ended), hint=_RETRY_HINT) from None
                log.info("%s; reconnecting", ended)
                backoff = min(max(backoff * 2, 2 * FOLLOW_INTERVAL_S), MAX_BACKOFF_S)
            if not follow:
                return
            # At most one request a second; longer (doubling) after a failure.
            await self._sleep(max(backoff, FOLLOW_INTERVAL_S - (self._clock() - started)))

    async def _open(
        self, route: str, params: dict[str, str], cursor: str | None, quiet_s: float | None
    ) -> AsyncIterator[LogEvent]:
        where = f"GET {route}"
        headers = {"Accept": "text/event-stream"}
        if self._key is not None:
            headers["Authorization"] = f"Bearer {self._key}"
        if cursor is not None:
            headers["Last-Event-ID"] = cursor
        url = self.base_url.join(route).copy_merge_params(params)
        try:
            async with self._client.stream("GET", url, headers=headers) as response:
                if response.status_code != 200:
                    await response.aread()
                    _raise_for(where, response)
                lines = response.aiter_lines()
                pending: list[str] = []
                while True:
                    try:
                        step = anext(lines)
                        line = await (asyncio.wait_for(step, quiet_s) if quiet_s else step)
                    except (StopAsyncIteration, TimeoutError):
                        return
                    if line:
                        pending.append(line)
                        continue
                    parsed, pending = parse_sse(pending), []
                    if parsed is not None:
                        yield _event(where, *parsed)
        except httpx.TransportError as exc:
            raise _Ended(f"{where}: the log stream broke ({type(exc).__name__})") from None

    def __repr__(self) -> str:
        return f"WorkerLogs({str(self.base_url)!r}, key={'sent' if self._key else 'not sent'})"


_RETRY_HINT = "try again; with --follow, videokit reconnects by itself"


def _event(where: str, event_id: str | None, data: str) -> LogEvent:
    try:
        return LogEvent(event_id, WorkerLogEvent.model_validate_json(data))
    except (ValidationError, json.JSONDecodeError):
        raise RestError(
            f"{where}: a log event does not match the REST v2 schema videokit knows: {data[:200]}",
            hint="upgrade videokit; if this persists, report it with this message",
        ) from None


def _raise_for(where: str, response: httpx.Response) -> None:
    status = response.status_code
    if status in (429,) or status >= 500:
        raise _Ended(f"{where}: RunPod answered {status}")
    hints = {
        401: "check RUNPOD_API_KEY (RunPod console > Settings > API Keys); it may be revoked",
        403: "use a key with read access to Serverless",
        404: "the worker is gone (scaled down) or the id is wrong: list them with "
        "`videokit workers STAGE`",
    }
    detail = response.reason_phrase
    with contextlib.suppress(ValueError, AttributeError):
        detail = str(json.loads(response.content).get("detail") or detail)
    if 300 <= status < 400:
        detail = "a redirect, which is not followed"
    raise RestError(
        f"{where}: RunPod refused the request ({status}): {detail}",
        status=status,
        hint=hints.get(status, "this is a bug in videokit or a change in RunPod's API"),
    )
