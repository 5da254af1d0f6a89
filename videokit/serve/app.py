"""The HTTP side of ``videokit serve``: RunPod's serverless v2 queue API, served by FastAPI.

Routes live under ``/v2/{endpoint_id}/`` with RunPod's paths, methods, JSON shapes and status
codes, so one client (ours, or the official ``runpod.Endpoint`` with ``runpod.endpoint_url_base``
pointed at ``{base}/v2``) drives both the cloud and a self-hosted GPU::

    POST run              {"input": ..., "policy"?: {...}, "webhook"?: url} -> {"id", "status"}
    POST runsync?wait=ms  same body; waits up to `wait` (1000..300000, default 90000) for the job
    GET  status/{id}      {"id", "status", "delayTime"?, "executionTime"?, "output"?, "error"?, ...}
    GET  stream/{id}      {"id", "status", "stream": [{"output": chunk}, ...]} (new chunks only)
    POST cancel/{id}      {"id", "status": "CANCELLED"}
    POST retry/{id}       {"id", "status": "IN_QUEUE"} (FAILED / TIMED_OUT only; same id)
    POST purge-queue      {"removed": n, "status": "completed"}
    GET  health           {"jobs": {...}, "workers": {"idle", "running"}}

This is deliberately not RunPod's own ``--rp_serve_api`` server, which answers different methods
and runs jobs inside the status request (see shared/notes/runpod.md).

Public API: :func:`create_app` (the app), :func:`serve` (run it with uvicorn) and
:func:`running_server` (run an app on a free loopback port in a background thread, for tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import math
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from videokit.serve.faults import FaultConfig, FaultInjector
from videokit.serve.jobs import (
    DEFAULT_EXECUTION_TIMEOUT_MS,
    DEFAULT_TTL_MS,
    Handler,
    Job,
    JobPolicy,
    JobQueue,
    NotRetryableError,
)

__all__ = [
    "RUNSYNC_BODY_LIMIT",
    "RUN_BODY_LIMIT",
    "create_app",
    "running_server",
    "serve",
]

log = logging.getLogger("videokit.serve")

# RunPod's payload limits: /run 10 MB, /runsync 20 MB.
RUN_BODY_LIMIT = 10 * 1024 * 1024
RUNSYNC_BODY_LIMIT = 20 * 1024 * 1024
# An oversized body is still read (and discarded) up to this multiple of the limit, so that the
# client, which is still sending, gets the 400 instead of a broken pipe. Beyond it we stop
# reading and let the connection close.
_DRAIN_FACTOR = 8

RUNSYNC_DEFAULT_WAIT_MS = 90_000
RUNSYNC_MIN_WAIT_MS = 1_000
RUNSYNC_MAX_WAIT_MS = 300_000

_NOT_FOUND = "request does not exist"


class _ApiError(Exception):
    """Answered as ``{"error": message}`` with ``status``, RunPod's error shape."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _ServeApp(FastAPI):
    """FastAPI with HTTP fault injection at the outermost ASGI layer.

    Faults are applied here rather than in a middleware because dropping a connection needs
    uvicorn's own ``send`` (to reach the socket); Starlette's middlewares wrap it.
    """

    fault_injector: FaultInjector | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        injector = self.fault_injector
        if injector is None or scope["type"] != "http" or not scope["path"].startswith("/v2/"):
            await super().__call__(scope, receive, send)
            return
        kind = injector.http_fault(f"{scope['method']} {scope['path']}")
        if kind is None:
            await super().__call__(scope, receive, send)
            return
        log.info("fault %s injected method=%s path=%s", kind, scope["method"], scope["path"])
        config = injector.config
        response: Response
        if kind == "429":
            # Whole seconds: Retry-After is delta-seconds, and urllib3 (the runpod SDK's retry)
            # rejects a fractional value as an invalid header.
            retry_after = str(max(0, math.ceil(config.retry_after_s)))
            response = JSONResponse(
                {"error": "Too Many Requests (injected)"},
                status_code=429,
                headers={"Retry-After": retry_after},
            )
            await response(scope, receive, send)
        elif kind == "5xx":
            status = injector.server_error_status()
            # 502/503 usually come from a proxy in front of the API, as text, not JSON; clients
            # must cope with both.
            if status == 500:
                response = JSONResponse({"error": "Internal Server Error (injected)"}, status)
            else:
                response = PlainTextResponse(f"{status} (injected)", status)
            await response(scope, receive, send)
        elif kind == "slow":
            await asyncio.sleep(config.slow_s)
            await super().__call__(scope, receive, send)
        else:  # "drop"
            await _drop_after_processing(super().__call__, scope, receive, send)


class _DroppedConnectionError(Exception):
    """Raised (fallback only) to make a server that is not uvicorn abort the response."""


async def _drop_after_processing(
    app: Callable[[Scope, Receive, Send], Awaitable[None]],
    scope: Scope,
    receive: Receive,
    send: Send,
) -> None:
    """Process the request, throw the response away and close the socket without a reply."""

    async def swallow(message: Message) -> None:
        return None

    await app(scope, receive, swallow)
    # uvicorn's send is a bound method of its request cycle, which holds the transport.
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is not None and hasattr(transport, "close"):
        transport.close()
        # Let uvicorn see the disconnect before we return; otherwise it would notice that no
        # response was started and try to send a 500 on the closing socket.
        for _ in range(100):
            if getattr(cycle, "disconnected", True):
                break
            await asyncio.sleep(0.001)
        return
    # Not uvicorn (or a logging wrapper around send): start a response and abort it, which any
    # ASGI server turns into a closed connection mid-response.
    await send({"type": "http.response.start", "status": 200, "headers": []})
    raise _DroppedConnectionError("injected fault: connection dropped")


def create_app(
    handler: Handler,
    *,
    concurrency: int = 1,
    api_key: str | None = None,
    faults: FaultConfig | None = None,
    result_retention_s: float = 1800.0,
    clock: Callable[[], float] = time.monotonic,
    endpoint_id: str | None = None,
) -> FastAPI:
    """Build the RunPod-compatible app around ``handler``.

    ``handler`` takes anything ``runpod.serverless.start({"handler": h})`` takes. ``concurrency``
    is the number of worker slots (jobs running at once). With ``api_key`` every request needs
    ``Authorization: Bearer <key>`` (or the raw key, as RunPod accepts); the videokit client sends
    its ``VIDEOKIT_SERVE_API_KEY`` here (it never sends ``RUNPOD_API_KEY`` to a host other than
    RunPod's own API, see :mod:`videokit.backends.runpod`). ``endpoint_id`` limits
    the app to that id; by default any id is accepted and they share one queue. ``clock`` drives
    timings and expiry (inject a fake one in tests). ``app.state.queue`` is the
    :class:`~videokit.serve.jobs.JobQueue`, for introspection.

    The queue starts with the app's lifespan, so serve it with an ASGI server that runs
    lifespan events (uvicorn does; see :func:`running_server`).
    """
    injector = FaultInjector(faults) if faults is not None and faults.enabled else None
    queue = JobQueue(
        handler,
        concurrency=concurrency,
        result_retention_s=result_retention_s,
        clock=clock,
        faults=injector,
    )
    # Compare digests, not keys: compare_digest is constant time only for equal lengths, and
    # hashing first keeps the key's length from leaking too.
    expected_digest = hashlib.sha256(api_key.encode()).digest() if api_key else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await queue.start()
        try:
            yield
        finally:
            await queue.stop()

    app = _ServeApp(
        title="videokit serve",
        summary="RunPod serverless v2 compatible endpoint",
        lifespan=lifespan,
        # An API clone, not a documented service of its own.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.fault_injector = injector
    app.state.queue = queue

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, _ApiError)
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    app.add_exception_handler(_ApiError, api_error)

    async def authorize(request: Request) -> None:
        # Authenticate first, so that an unauthenticated caller learns nothing, not even
        # whether an endpoint id exists.
        if expected_digest is not None:
            presented = request.headers.get("authorization", "")
            scheme, _, token = presented.partition(" ")
            if scheme.lower() == "bearer" and token:
                presented = token.strip()
            # Never log either side.
            digest = hashlib.sha256(presented.encode()).digest()
            if not hmac.compare_digest(digest, expected_digest):
                raise _ApiError(401, "Unauthorized")
        if endpoint_id is not None and request.path_params.get("endpoint_id") != endpoint_id:
            raise _ApiError(404, f"endpoint {request.path_params.get('endpoint_id')!r} not found")

    router = APIRouter(prefix="/v2/{endpoint_id}", dependencies=[Depends(authorize)])

    @router.post("/run")
    async def run(request: Request) -> Response:
        body = await _read_json(request, RUN_BODY_LIMIT, "/run")
        job = _submit(queue, body)
        return JSONResponse({"id": job.id, "status": job.status.value})

    @router.post("/runsync")
    async def runsync(request: Request) -> Response:
        wait_ms = _parse_wait(request.query_params.get("wait"))
        body = await _read_json(request, RUNSYNC_BODY_LIMIT, "/runsync")
        job = _submit(queue, body)
        await queue.wait(job, wait_ms / 1000)
        # A job that finished is answered even if its result has already been dropped (the
        # "expired" fault): runsync's answer is the result itself.
        if not job.is_final and not queue.is_live(job):
            raise _ApiError(404, _NOT_FOUND)
        return JSONResponse(job.payload())

    @router.api_route("/status/{job_id}", methods=["GET", "POST"])
    async def status(job_id: str) -> Response:
        return JSONResponse(_existing(queue.get(job_id)).payload())

    @router.api_route("/stream/{job_id}", methods=["GET", "POST"])
    async def stream(job_id: str) -> Response:
        taken = queue.take_stream(job_id)
        if taken is None:
            raise _ApiError(404, _NOT_FOUND)
        job, chunks = taken
        return JSONResponse(
            {
                "id": job.id,
                "status": job.status.value,
                "stream": [{"output": chunk} for chunk in chunks],
            }
        )

    @router.post("/cancel/{job_id}")
    async def cancel(job_id: str) -> Response:
        job = _existing(queue.cancel(job_id))
        return JSONResponse({"id": job.id, "status": job.status.value})

    @router.post("/retry/{job_id}")
    async def retry(job_id: str) -> Response:
        try:
            job = _existing(queue.retry(job_id))
        except NotRetryableError as err:
            raise _ApiError(400, str(err)) from None
        return JSONResponse({"id": job.id, "status": job.status.value})

    @router.post("/purge-queue")
    async def purge_queue() -> Response:
        return JSONResponse({"removed": queue.purge(), "status": "completed"})

    @router.get("/health")
    async def health() -> Response:
        return JSONResponse(queue.health())

    app.include_router(router)
    return app


def _existing(job: Job | None) -> Job:
    if job is None:
        raise _ApiError(404, _NOT_FOUND)
    return job


async def _read_json(request: Request, limit: int, route: str) -> dict[str, Any]:
    """The request body as a JSON object, enforcing RunPod's payload limit for ``route``."""
    size = 0
    parts: list[bytes] = []
    async for chunk in request.stream():
        size += len(chunk)
        if size <= limit:
            parts.append(chunk)
        elif size > limit * _DRAIN_FACTOR:
            break
    if size > limit:
        raise _ApiError(
            400,
            f"request body is {size / 2**20:.1f} MiB; {route} accepts at most "
            f"{limit / 2**20:g} MiB (upload large inputs to object storage and pass a URL)",
        )
    raw = b"".join(parts)
    if not raw.strip():
        raise _ApiError(400, 'request body is empty; expected {"input": {...}}')
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _ApiError(400, f"request body is not valid JSON: {err}") from None
    if not isinstance(body, dict):
        raise _ApiError(400, 'request body must be a JSON object like {"input": {...}}')
    return body


def _submit(queue: JobQueue, body: dict[str, Any]) -> Job:
    """Validate a run/runsync body (400 when malformed) and queue the job."""
    if body.get("input") is None:
        raise _ApiError(400, 'missing "input": the body must look like {"input": {...}}')
    policy = body.get("policy") or {}
    if not isinstance(policy, dict):
        raise _ApiError(400, '"policy" must be an object')
    low_priority = policy.get("lowPriority", False)
    if not isinstance(low_priority, bool):
        raise _ApiError(400, '"policy.lowPriority" must be true or false')
    webhook = body.get("webhook")
    if webhook is not None and (
        not isinstance(webhook, str) or not webhook.startswith(("http://", "https://"))
    ):
        raise _ApiError(400, '"webhook" must be an http(s) URL')
    extra = {"s3Config": body["s3Config"]} if body.get("s3Config") is not None else {}
    job_policy = JobPolicy(
        execution_timeout_ms=_positive_ms(policy, "executionTimeout", DEFAULT_EXECUTION_TIMEOUT_MS),
        ttl_ms=_positive_ms(policy, "ttl", DEFAULT_TTL_MS),
        low_priority=low_priority,
    )
    return queue.submit(body["input"], job_policy, webhook=webhook, extra=extra)


def _positive_ms(policy: dict[str, Any], key: str, default: int) -> int:
    value = policy.get(key)
    if value is None:
        return default
    # bool is an int subclass; true is not a timeout.
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise _ApiError(400, f'"policy.{key}" must be a positive number of milliseconds')
    return int(value)


def _parse_wait(raw: str | None) -> int:
    if raw is None:
        return RUNSYNC_DEFAULT_WAIT_MS
    try:
        wait = int(raw)
    except ValueError:
        raise _ApiError(400, f"wait={raw!r} is not a number of milliseconds") from None
    # RunPod clamps rather than rejects.
    return min(max(wait, RUNSYNC_MIN_WAIT_MS), RUNSYNC_MAX_WAIT_MS)


@contextlib.contextmanager
def running_server(
    app: ASGIApp,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    startup_timeout_s: float = 10.0,
    shutdown_timeout_s: float = 5.0,
) -> Iterator[str]:
    """Run ``app`` with uvicorn in a background thread; yield its base URL.

    The socket is bound before uvicorn starts (port 0 picks a free port), so there is no race
    for the port. The yielded URL has no path: the RunPod API is at ``f"{base}/v2/{endpoint}/"``,
    and the official SDK wants ``runpod.endpoint_url_base = f"{base}/v2"``. The server (and
    the app's lifespan: queue, running jobs) is shut down when the block exits. uvicorn's own
    logging config is left alone (``log_config=None``), so this is quiet and safe in tests::

        with running_server(create_app(handler)) as base:
            httpx.post(f"{base}/v2/local/run", json={"input": {}})
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_config=None,
        log_level="warning",
        access_log=False,
        lifespan="on",
        # A pending runsync must not hold shutdown for its full wait.
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="videokit-serve", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("videokit serve: uvicorn exited during startup")
            if time.monotonic() > deadline:
                raise RuntimeError(f"videokit serve: not started after {startup_timeout_s} s")
            time.sleep(0.005)
        url_host = f"[{host}]" if family == socket.AF_INET6 else host
        yield f"http://{url_host}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(shutdown_timeout_s)
        if thread.is_alive():
            server.force_exit = True
            thread.join(shutdown_timeout_s)
        sock.close()


def serve(
    handler: Handler,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    concurrency: int = 1,
    api_key: str | None = None,
    faults: FaultConfig | None = None,
    result_retention_s: float = 1800.0,
    endpoint_id: str | None = None,
    log_level: str = "info",
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Serve ``handler`` on ``host:port`` until interrupted (uvicorn, one process).

    One process on purpose: the job table lives in memory, so several uvicorn workers would
    each have their own queue and a status request could land on the wrong one. ``on_ready`` is
    called once the port is listening (the CLI prints the line that points a client here).
    """
    _configure_logging(log_level)
    if api_key is None and not _is_loopback(host):
        log.warning(
            "serving on %s without an API key: anyone who can reach this port can run jobs "
            "(pass api_key / --api-key)",
            host,
        )
    app = create_app(
        handler,
        concurrency=concurrency,
        api_key=api_key,
        faults=faults,
        result_retention_s=result_retention_s,
        endpoint_id=endpoint_id,
    )
    log.info(
        "videokit serve on http://%s:%d/v2/%s/ concurrency=%d auth=%s faults=%s",
        host,
        port,
        endpoint_id or "{any}",
        concurrency,
        "on" if api_key else "off",
        faults.describe() if faults is not None else "off",
    )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        workers=1,
        log_level=log_level,
        # Our own job log lines say what happened; per-request access lines would drown them.
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    _Server(config, on_ready).run()


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None] | None) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self._on_ready is not None:
            self._on_ready()


def _configure_logging(level: str) -> None:
    # Only when nobody (the CLI, the embedding app) configured logging already.
    if logging.getLogger().handlers or log.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(level.upper())


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
