"""The HTTP side of RunPod's v2 queue API: one request at a time, its key, retries and refusals.

Every request goes through :class:`~videokit.backends.retry.RetryPolicy` (transport errors,
408/429/5xx, Retry-After). Reads (``status``, ``stream``, ``health``) are safe to repeat and are
bounded by a deadline; ``run`` and ``retry`` create work each time they get through, so they keep
a count. What is bound to an event loop (the httpx client and its connections) is kept per loop:
one client object may serve several ``asyncio.run()`` calls. Close it with ``await aclose()`` in
each loop that used it; a loop ended by ``asyncio.run()`` closes its client as it shuts down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from videokit.backends.base import Stage
from videokit.backends.retry import RetryPolicy, is_retryable_status
from videokit.backends.runpod.config import (
    Endpoint,
    EndpointHealth,
    RunPodConfig,
    endpoint_variable,
    host_origin,
    is_runpod_hosted,
)
from videokit.backends.runpod.wire import (
    ALIVE_STATES,
    FINAL_STATES,
    describe,
    error_text,
    int_or_none,
    json_body,
    maybe_sent,
    status_of,
)
from videokit.config import Secret
from videokit.errors import EndpointError

__all__ = ["OnLostReply", "RunPodClient", "Vanished"]

log = logging.getLogger("videokit.runpod")

# Called when a `run` reply was lost after the request may have reached the endpoint.
OnLostReply = Callable[[BaseException], None]


class Vanished(Exception):
    """The endpoint no longer knows the job (TTL expired, or its result was dropped)."""


@dataclass
class _Stats:
    requests: Counter[str] = field(default_factory=Counter)
    # Status/stream reads per job id: the polling budget is checked against these.
    polls: Counter[str] = field(default_factory=Counter)


@dataclass
class _LoopState:
    loop: asyncio.AbstractEventLoop
    client: httpx.AsyncClient
    closer: AsyncGenerator[None, None] | None = None


async def _closed_with_the_loop(client: httpx.AsyncClient) -> AsyncGenerator[None, None]:
    """Close ``client`` in its own loop when that loop shuts down, if nobody closed it before
    (``asyncio.run()`` finalises async generators before closing its loop)."""
    try:
        yield
    finally:
        await client.aclose()


class RunPodClient:
    """Requests to RunPod-style endpoints, each carrying the key its host may see."""

    def __init__(
        self,
        config: RunPodConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.retry = retry or RetryPolicy(clock=clock)
        self.stats = _Stats()
        self.clock = clock
        self._transport = transport
        self._loops: dict[asyncio.AbstractEventLoop, _LoopState] = {}

    # -- per-loop httpx clients -------------------------------------------------------------------
    def _loop_state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            self._forget_closed_loops()
            client = httpx.AsyncClient(
                base_url=self.config.base_url.rstrip("/") + "/",
                headers={"Content-Type": "application/json", "User-Agent": "videokit"},
                timeout=httpx.Timeout(self.config.request_timeout_s, connect=10.0),
                transport=self._transport,
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
            )
            state = self._loops[loop] = _LoopState(loop, client)
        return state

    async def _client(self) -> httpx.AsyncClient:
        state = self._loop_state()
        if state.closer is None:
            state.closer = _closed_with_the_loop(state.client)
            await anext(state.closer)  # runs to its `yield` at once
        return state.client

    def _forget_closed_loops(self) -> None:
        for loop, state in list(self._loops.items()):
            if loop.is_closed():
                del self._loops[loop]
                if not state.client.is_closed:
                    log.warning(
                        "the RunPod backend's HTTP client of an event loop that has ended was "
                        "never closed, so its connections were left open; call `await "
                        "backend.aclose()` in the loop that used the backend (e.g. at the end "
                        "of each asyncio.run()) before using it in another"
                    )

    async def aclose(self) -> None:
        """Close the running loop's HTTP client (it can be used again afterwards)."""
        state = self._loops.pop(asyncio.get_running_loop(), None)
        self._forget_closed_loops()
        if state is not None:
            if state.closer is not None:
                await state.closer.aclose()
            await state.client.aclose()

    # -- keys -------------------------------------------------------------------------------------
    def credential(self, url: httpx.URL) -> Secret | None:
        if is_runpod_hosted(url):
            return self.config.api_key
        if host_origin(url) in self.config.story_hosts:
            return None
        return self.config.serve_api_key

    def key_hint(self, response: httpx.Response) -> str:
        """What to check when ``response`` is a 401: the key that was (or was not) sent there."""
        url = response.request.url
        if is_runpod_hosted(url):
            return "check RUNPOD_API_KEY (the RunPod API key, in the environment or .env)"
        if host_origin(url) in self.config.story_hosts:
            return (
                f"{host_origin(url)} is named by the story file, and hosts a story names are sent "
                "no key (a story may come from anyone); if it is your own server, name it "
                "yourself: VIDEOKIT_EDIT_ENDPOINT / VIDEOKIT_ANIMATE_ENDPOINT / "
                "VIDEOKIT_RUNPOD_BASE_URL or videokit.toml, and it gets VIDEOKIT_SERVE_API_KEY"
            )
        return (
            "check VIDEOKIT_SERVE_API_KEY: it must be the key this `videokit serve` was started "
            "with (--api-key); RUNPOD_API_KEY is only ever sent to RunPod's own API"
        )

    def raise_for_refusal(
        self, response: httpx.Response, endpoint: Endpoint, stage: Stage, route: str
    ) -> None:
        if response.status_code < 400:
            return
        body = json_body(response)
        raise EndpointError(
            f"the {stage} endpoint {endpoint.id} refused `{route}` ({response.status_code}): "
            f"{error_text(body.get('error')) or response.reason_phrase}",
            status=response.status_code,
            hint=self.key_hint(response)
            if response.status_code == 401
            else f"check {endpoint_variable(stage)}",
        )

    # -- one request ------------------------------------------------------------------------------
    async def call(
        self,
        kind: str,
        method: Literal["GET", "POST"],
        path: str,
        body: Any = None,
        on_retry: Callable[[int, BaseException, float], None] | None = None,
        *,
        attempts: int | None = None,
        deadline: float | None = None,
        max_wait_s: float | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """One request through the shared retry predicate; ``deadline`` is on our clock."""

        async def once() -> httpx.Response:
            self.stats.requests[kind] += 1
            client = await self._client()
            request = client.build_request(
                method,
                path,
                json=body,
                timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout,
            )
            # Chosen from the URL the request really goes to, never from where it was configured.
            key = self.credential(request.url)
            if key:
                request.headers["Authorization"] = f"Bearer {key.reveal()}"
            response = await client.send(request)
            if is_retryable_status(response.status_code):
                response.raise_for_status()
            return response

        return await self.retry.call(
            once,
            on_retry=on_retry,
            attempts=attempts,
            deadline=deadline,
            clock=self.clock,
            max_wait_s=max_wait_s,
        )

    # -- the queue API ----------------------------------------------------------------------------
    async def run(self, endpoint: Endpoint, payload: Any, *, on_lost: OnLostReply) -> str:
        """``POST run``: the new job's id. ``on_lost`` hears of every try whose reply was lost
        after the request may have gone through (a job may exist that we will never hear of)."""

        def lost(exc: BaseException) -> None:
            if maybe_sent(exc):
                on_lost(exc)

        try:
            response = await self.call(
                "run",
                "POST",
                endpoint.path("run"),
                payload,
                on_retry=lambda number, exc, wait: lost(exc),
                attempts=self.retry.attempts,
                # The job has no deadline yet; a Retry-After longer than it may wait in the queue
                # is capped at that.
                max_wait_s=self.config.queue_timeout_s,
            )
        except httpx.HTTPError as exc:
            lost(exc)
            raise EndpointError(
                f"could not submit a job to endpoint {endpoint.id}: {describe(exc)}",
                status=status_of(exc),
                hint="check the endpoint id and your network; RunPod may be down",
            ) from None
        body = json_body(response)
        if response.status_code == 401:
            raise EndpointError(
                f"endpoint {endpoint.id} refused the API key (401)",
                status=401,
                hint=self.key_hint(response),
            )
        if response.status_code >= 400 or not isinstance(body.get("id"), str):
            raise EndpointError(
                f"endpoint {endpoint.id} refused the job ({response.status_code}): "
                f"{error_text(body.get('error')) or response.reason_phrase}",
                status=response.status_code,
                hint="check the endpoint id (VIDEOKIT_*_ENDPOINT)",
            )
        job_id: str = body["id"]
        return job_id

    async def retry_job(self, endpoint: Endpoint, job_id: str) -> tuple[bool, bool]:
        """``POST retry/{id}``, sent once: (queued again, reply lost after it may have gone out).

        When the reply was lost, the job's status says whether it was queued again (or even
        completed: a FAILED job can only have completed through the retry).
        """
        sent_unanswered = False
        try:
            response = await self.call(
                "retry", "POST", endpoint.path(f"retry/{job_id}"), {}, attempts=1
            )
            if response.status_code == 200:
                log.info("job %s retried in place", job_id)
                return True, False
        except httpx.HTTPError as exc:
            sent_unanswered = maybe_sent(exc)
        state = None
        try:
            read = await self.call(
                "status",
                "GET",
                endpoint.path(f"status/{job_id}"),
                deadline=self.clock() + self.config.final_read_timeout_s,
            )
            state = json_body(read).get("status") if read.status_code == 200 else None
        except httpx.HTTPError:
            pass
        queued = state in ALIVE_STATES or (sent_unanswered and state == "COMPLETED")
        return queued, sent_unanswered

    async def read(
        self,
        route: Literal["status", "stream"],
        endpoint: Endpoint,
        job_id: str,
        *,
        deadline: float | None,
        phase: str = "queue",
    ) -> dict[str, Any]:
        """``GET status/{id}`` or ``stream/{id}``: retried until ``deadline``, never a count.
        A 404 is :class:`Vanished`; anything else that fails an EndpointError."""
        self.stats.polls[job_id] += 1
        started = self.clock()
        path = endpoint.path(f"{route}/{job_id}")
        try:
            response = await self.call(route, "GET", path, deadline=deadline)
        except httpx.HTTPError as exc:
            raise EndpointError(
                f"could not read the {route} of job {job_id} for {self.clock() - started:.0f} s "
                f"(retried until its {phase} deadline): {describe(exc)}",
                status=status_of(exc),
                job_id=job_id,
                hint="the endpoint's API is failing; the job was cancelled, render again later",
            ) from None
        if response.status_code == 404:
            raise Vanished(job_id)
        if response.status_code >= 400:
            raise EndpointError(
                f"{route} of job {job_id}: HTTP {response.status_code}",
                status=response.status_code,
                job_id=job_id,
                hint=self.key_hint(response) if response.status_code == 401 else None,
            )
        return json_body(response)

    async def read_stream(
        self, endpoint: Endpoint, job_id: str, *, deadline: float | None, phase: str = "queue"
    ) -> tuple[dict[str, Any], list[Any]]:
        """``GET stream/{id}``: the body (its ``status``) and the chunks the job's generator
        yielded since the previous read."""
        body = await self.read("stream", endpoint, job_id, deadline=deadline, phase=phase)
        items: list[Any] = body["stream"] if isinstance(body.get("stream"), list) else []
        return body, [i.get("output") if isinstance(i, dict) else i for i in items]

    async def health(self, endpoint: Endpoint, stage: Stage, *, timeout_s: float) -> EndpointHealth:
        """``GET health`` (retried within ``timeout_s``)."""
        try:
            response = await self.call(
                "health",
                "GET",
                endpoint.path("health"),
                deadline=self.clock() + timeout_s,
                timeout=timeout_s,
            )
        except httpx.HTTPError as exc:
            raise EndpointError(
                f"the {stage} endpoint {endpoint.id} did not answer `health`: {describe(exc)}",
                status=status_of(exc),
                hint=f"check {endpoint_variable(stage)} and your network",
            ) from None
        self.raise_for_refusal(response, endpoint, stage, "health")
        return EndpointHealth.parse(json_body(response))

    async def purge(self, endpoint: Endpoint, stage: Stage) -> int:
        try:
            response = await self.call("purge", "POST", endpoint.path("purge-queue"), {})
        except httpx.HTTPError as exc:
            raise EndpointError(
                f"could not purge the queue of {endpoint.id}: {describe(exc)}",
                status=status_of(exc),
            ) from None
        self.raise_for_refusal(response, endpoint, stage, "purge-queue")
        return int_or_none(json_body(response).get("removed")) or 0

    async def cancel_and_read(
        self, endpoint: Endpoint, job_id: str
    ) -> tuple[bool, str, dict[str, Any] | None]:
        """``POST cancel/{id}``, then one status read: (job known to be over, why not, its final
        status if it could be read). Each step has its own short wall-clock bound.

        The status is read even when the cancel got no answer: a cancel whose reply was lost
        usually went through, and a final state confirms the job is over just as well.
        """
        cfg = self.config
        deadline = self.clock() + cfg.cancel_timeout_s
        unconfirmed = ""
        try:
            response = await asyncio.wait_for(
                self.call(
                    "cancel",
                    "POST",
                    endpoint.path(f"cancel/{job_id}"),
                    {},
                    deadline=deadline,
                    timeout=cfg.cancel_timeout_s,
                ),
                timeout=cfg.cancel_timeout_s + 0.5,
            )
        except Exception as exc:  # transport, timeout, or anything else: not confirmed (yet)
            if isinstance(exc, httpx.TransportError) and not maybe_sent(exc):
                # It never reached the endpoint: neither would a status read.
                return False, describe(exc), None
            unconfirmed = describe(exc)
        else:
            if response.status_code == 404:
                return True, "", None  # gone: nothing left to run or bill
            if response.status_code >= 400:
                unconfirmed = f"HTTP {response.status_code}"
        try:
            read = await asyncio.wait_for(
                self.call(
                    "status",
                    "GET",
                    endpoint.path(f"status/{job_id}"),
                    deadline=self.clock() + cfg.final_read_timeout_s,
                    timeout=cfg.final_read_timeout_s,
                ),
                timeout=cfg.final_read_timeout_s + 0.5,
            )
        except Exception:  # the cancel went through (if it did); only its cost stays an estimate
            return not unconfirmed, unconfirmed, None
        if read.status_code == 404 and unconfirmed:
            return True, "", None
        final = json_body(read) if read.status_code == 200 else None
        if unconfirmed and final is not None and str(final.get("status")) in FINAL_STATES:
            return True, "", final
        return not unconfirmed, unconfirmed, final
