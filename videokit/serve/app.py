"""The HTTP side of ``videokit serve``: RunPod's serverless v2 queue API, served by FastAPI.

Routes live under ``/v2/{endpoint_id}/`` with RunPod's paths, methods, JSON shapes and status
codes, so one client (ours, or the official ``runpod.Endpoint`` with ``runpod.endpoint_url_base``
pointed at ``{base}/v2``) drives both the cloud and a self-hosted GPU: ``POST run``, ``POST
runsync?wait=ms``, ``GET status/{id}?ttl=ms``, ``GET stream/{id}``, ``POST cancel/{id}``, ``POST
retry/{id}``, ``POST purge-queue`` and ``GET health``. It is deliberately not RunPod's own
``--rp_serve_api`` server, which answers different methods and runs jobs inside the status
request (see shared/notes/runpod.md).

Public API: :func:`create_app` (the app), :func:`serve` (run it with uvicorn) and
:func:`running_server` (run an app on a free loopback port in a background thread, for tests).
Request validation lives in :mod:`videokit.serve._request`, fault injection in
:mod:`videokit.serve._asgi`, the uvicorn plumbing in :mod:`videokit.serve._server`.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from videokit.serve._asgi import ServeApp
from videokit.serve._job import (
    RUN_RESULT_RETENTION_S,
    RUNSYNC_RESULT_RETENTION_S,
    RUNSYNC_WAIT_RESULT_RETENTION_S,
)
from videokit.serve._request import (
    NOT_FOUND,
    RUN_BODY_LIMIT,
    RUNSYNC_BODY_LIMIT,
    ApiError,
    existing,
    parse_status_ttl,
    parse_wait,
    read_json,
    submit,
)
from videokit.serve._server import ReadyServer, configure_logging, is_loopback, running_server
from videokit.serve.faults import FaultConfig, FaultInjector
from videokit.serve.jobs import Handler, JobQueue, NotRetryableError

__all__ = [
    "RUNSYNC_BODY_LIMIT",
    "RUN_BODY_LIMIT",
    "create_app",
    "running_server",
    "serve",
]

log = logging.getLogger("videokit.serve")


def create_app(
    handler: Handler,
    *,
    concurrency: int = 1,
    api_key: str | None = None,
    faults: FaultConfig | None = None,
    result_retention_s: float = RUN_RESULT_RETENTION_S,
    runsync_retention_s: float = RUNSYNC_RESULT_RETENTION_S,
    runsync_wait_retention_s: float = RUNSYNC_WAIT_RESULT_RETENTION_S,
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

    A finished job's result is kept like RunPod keeps it: ``result_retention_s`` (30 min) after a
    ``/run`` job ends, ``runsync_retention_s`` (1 min) after a ``/runsync`` one and
    ``runsync_wait_retention_s`` (5 min) when that call gave ``?wait=``; ``status?ttl=`` then
    sets how long the job is kept from that request on.

    The queue starts with the app's lifespan, so serve it with an ASGI server that runs
    lifespan events (uvicorn does; see :func:`running_server`).
    """
    injector = FaultInjector(faults) if faults is not None and faults.enabled else None
    queue = JobQueue(
        handler,
        concurrency=concurrency,
        result_retention_s=result_retention_s,
        runsync_retention_s=runsync_retention_s,
        runsync_wait_retention_s=runsync_wait_retention_s,
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

    app = ServeApp(
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
        assert isinstance(exc, ApiError)
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    app.add_exception_handler(ApiError, api_error)

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
                raise ApiError(401, "Unauthorized")
        if endpoint_id is not None and request.path_params.get("endpoint_id") != endpoint_id:
            raise ApiError(404, f"endpoint {request.path_params.get('endpoint_id')!r} not found")

    router = APIRouter(prefix="/v2/{endpoint_id}", dependencies=[Depends(authorize)])

    @router.post("/run")
    async def run(request: Request) -> Response:
        body = await read_json(request, RUN_BODY_LIMIT, "/run")
        job = submit(queue, body, "run")
        return JSONResponse({"id": job.id, "status": job.status.value})

    @router.post("/runsync")
    async def runsync(request: Request) -> Response:
        raw_wait = request.query_params.get("wait")
        wait_ms = parse_wait(raw_wait)
        body = await read_json(request, RUNSYNC_BODY_LIMIT, "/runsync")
        job = submit(queue, body, "runsync" if raw_wait is None else "runsync_wait")
        await queue.wait(job, wait_ms / 1000)
        # A job that finished is answered even if its result has already been dropped (the
        # "expired" fault): runsync's answer is the result itself.
        if not job.is_final and not queue.is_live(job):
            raise ApiError(404, NOT_FOUND)
        return JSONResponse(job.payload())

    @router.api_route("/status/{job_id}", methods=["GET", "POST"])
    async def status(job_id: str, request: Request) -> Response:
        ttl_ms = parse_status_ttl(request.query_params.get("ttl"))
        if ttl_ms is None:
            return JSONResponse(existing(queue.get(job_id)).payload())
        return JSONResponse(existing(queue.set_ttl(job_id, ttl_ms)).payload())

    @router.api_route("/stream/{job_id}", methods=["GET", "POST"])
    async def stream(job_id: str) -> Response:
        taken = queue.take_stream(job_id)
        if taken is None:
            raise ApiError(404, NOT_FOUND)
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
        job = existing(queue.cancel(job_id))
        return JSONResponse({"id": job.id, "status": job.status.value})

    @router.post("/retry/{job_id}")
    async def retry(job_id: str) -> Response:
        try:
            job = existing(queue.retry(job_id))
        except NotRetryableError as err:
            raise ApiError(400, str(err)) from None
        return JSONResponse({"id": job.id, "status": job.status.value})

    @router.post("/purge-queue")
    async def purge_queue() -> Response:
        return JSONResponse({"removed": queue.purge(), "status": "completed"})

    @router.get("/health")
    async def health() -> Response:
        return JSONResponse(queue.health())

    app.include_router(router)
    return app


def serve(
    handler: Handler,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    concurrency: int = 1,
    api_key: str | None = None,
    faults: FaultConfig | None = None,
    result_retention_s: float = RUN_RESULT_RETENTION_S,
    runsync_retention_s: float = RUNSYNC_RESULT_RETENTION_S,
    runsync_wait_retention_s: float = RUNSYNC_WAIT_RESULT_RETENTION_S,
    endpoint_id: str | None = None,
    log_level: str = "info",
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Serve ``handler`` on ``host:port`` until interrupted (uvicorn, one process).

    One process on purpose: the job table lives in memory, so several uvicorn workers would
    each have their own queue and a status request could land on the wrong one. ``on_ready`` is
    called once the port is listening (the CLI prints the line that points a client here).
    """
    configure_logging(log_level)
    if api_key is None and not is_loopback(host):
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
        runsync_retention_s=runsync_retention_s,
        runsync_wait_retention_s=runsync_wait_retention_s,
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
    ReadyServer(config, on_ready).run()
