"""The generic part of the test emulators of RunPod's v2 queue API, served on 127.0.0.1.

An emulator is a :class:`QueueEmulator` (jobs, statuses, cancel, health, runsync, recordings of
what clients sent, fault knobs) plus one *handler* per endpoint id: an async function that turns
a job's input document into its output, or raises :class:`JobFailed`. The API is served at
``{base_url}/{endpoint_id}/``: ``POST run`` -> ``{id, status: IN_QUEUE}``, ``POST runsync?wait=ms``,
``GET status/{id}`` -> ``{id, status, delayTime, executionTime, workerId, output | error}``,
``GET stream/{id}``, ``POST cancel/{id}``, ``GET health`` -> ``{jobs: {...}, workers: {...}}``.

Requests reach the server through a small TCP forwarder (the "gate") so that a test can make the
emulator unreachable (connections refused, or accepted and never answered) and reachable again
while its jobs go on running. Start one with :meth:`QueueEmulator.running` (a context manager).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Coroutine,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from videokit.serve.app import running_server

__all__ = ["Handler", "JobFailed", "QueueEmulator", "QueueJob", "Reachability"]

TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED"})
Reachability = Literal["up", "refused", "hang"]


class JobFailed(Exception):
    """Ends a job FAILED with ``str(exc)`` as its ``error``.

    ``output`` is what a RunPod handler returned beside its ``"error"`` key (the SDK sends both);
    the status body then carries it as ``output``.
    """

    def __init__(self, message: str, *, output: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.output = output


@dataclass
class QueueJob:
    """One job as the emulator sees it (times are ``time.time()`` seconds)."""

    id: str
    endpoint: str
    input: dict[str, Any]
    status: str = "IN_QUEUE"
    output: dict[str, Any] | None = None
    error: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    worker_id: str | None = None
    forced_error: str | None = field(default=None, repr=False)
    stop: threading.Event = field(default_factory=threading.Event, repr=False)
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def body(self) -> dict[str, Any]:
        """The RunPod status body."""
        body: dict[str, Any] = {"id": self.id, "status": self.status}
        if self.started is not None:
            body["delayTime"] = round((self.started - self.created) * 1000)
            body["workerId"] = self.worker_id
        if self.started is not None and self.finished is not None:
            body["executionTime"] = round((self.finished - self.started) * 1000)
        if self.status == "COMPLETED":
            body["output"] = self.output
        if self.status == "FAILED":
            body["error"] = self.error
            if self.output is not None:
                body["output"] = self.output
        return body


Handler = Callable[[QueueJob], Awaitable[dict[str, Any]]]
"""Turns ``job.input`` into the job's output, or raises :class:`JobFailed`.

Runs on the server's event loop: blocking work goes to ``asyncio.to_thread`` and should stop
when ``job.stop`` is set (a cancel, or the server shutting down).
"""


@dataclass
class _Refusal:
    status: int
    times: int | None
    routes: frozenset[str] | None


class QueueEmulator:
    """State, recordings and fault knobs of an emulator; ``app`` is its ASGI application.

    ``requests`` (per ``(endpoint_id, route)``) and ``authorization`` record every API request,
    refused ones (401/404/5xx) too; ``inputs`` and ``jobs`` only those that made a job. Timing
    knobs (``queue_seconds``, ``job_seconds``: the least time a job spends running) may be changed
    at any time. ``routes`` adds non-API routes (e.g. result downloads) to the app.
    """

    def __init__(
        self,
        handlers: Mapping[str, Handler],
        *,
        job_seconds: float = 0.0,
        queue_seconds: float = 0.0,
        api_key: str | None = None,
        routes: Sequence[BaseRoute] = (),
        name: str = "queue",
    ) -> None:
        self.handlers = dict(handlers)
        self.job_seconds = job_seconds
        self.queue_seconds = queue_seconds
        self.api_key = api_key
        self.name = name
        self.origin = ""
        self.fail_every_job: str | None = None
        self.requests: collections.Counter[tuple[str, str]] = collections.Counter()
        self.status_requests_per_job: collections.Counter[str] = collections.Counter()
        self.inputs: list[tuple[str, dict[str, Any]]] = []
        self.jobs: dict[str, QueueJob] = {}
        self.authorization: list[str | None] = []
        self._fail_next: dict[str, str] = {}
        self._vanished: set[str] = set()
        self._refusal: _Refusal | None = None
        self._gate: _Gate | None = None
        self._workdir = tempfile.TemporaryDirectory(prefix=f"videokit-{name}-")
        v2 = "/v2/{endpoint}"
        self.app = Starlette(
            routes=[
                Route(f"{v2}/run", self._run, methods=["POST"]),
                Route(f"{v2}/runsync", self._runsync, methods=["POST"]),
                Route(f"{v2}/status/{{job_id}}", self._status, methods=["GET", "POST"]),
                Route(f"{v2}/stream/{{job_id}}", self._stream, methods=["GET", "POST"]),
                Route(f"{v2}/cancel/{{job_id}}", self._cancel, methods=["POST"]),
                Route(f"{v2}/health", self._health, methods=["GET"]),
                *routes,
            ],
            lifespan=self._lifespan,
        )

    @property
    def base_url(self) -> str:
        """What a client sets as its RunPod API base URL (``{origin}/v2``)."""
        return f"{self.origin}/v2"

    @property
    def workdir(self) -> Path:
        """A scratch folder that lives as long as the running emulator."""
        return Path(self._workdir.name)

    @contextmanager
    def running(self) -> Iterator[Self]:
        """Serve on a free loopback port until the block ends (once per emulator)."""
        with self._workdir, running_server(self.app) as inner, _Gate(inner) as gate:
            self._gate = gate
            self.origin = gate.origin
            try:
                yield self
            finally:
                self._gate = None

    # -- knobs for tests (thread-safe enough: single attribute/dict/set operations under the GIL)

    def fail_next(self, endpoint_id: str, error: str) -> None:
        """Make the next job submitted to ``endpoint_id`` end FAILED with ``error``."""
        self._fail_next[endpoint_id] = error

    def fail_all(self, error: str | None) -> None:
        """Make every job submitted from now on end FAILED with ``error`` (None: stop that)."""
        self.fail_every_job = error

    def vanish(self, job_id: str) -> None:
        """Make ``status``/``stream``/``cancel`` of ``job_id`` answer 404 from now on."""
        self._vanished.add(job_id)

    def refuse(
        self, status: int = 503, *, times: int | None = None, routes: Collection[str] | None = None
    ) -> None:
        """Answer API requests with HTTP ``status`` (no job is made): the next ``times`` of them
        (None: all until :meth:`accept`), only those to ``routes`` (e.g. ``{"run"}``) if given."""
        self._refusal = _Refusal(status, times, None if routes is None else frozenset(routes))

    def accept(self) -> None:
        """Stop refusing requests."""
        self._refusal = None

    def set_reachability(self, mode: Reachability) -> None:
        """``"refused"``: nothing listens on the port; ``"hang"``: connections are accepted and
        never answered; ``"up"``: normal. Open connections are dropped on every change; the server
        and its jobs keep running meanwhile."""
        if self._gate is None:
            raise RuntimeError("the emulator is not running")
        self._gate.set_mode(mode)

    @contextmanager
    def unreachable(self, mode: Reachability = "refused") -> Iterator[None]:
        """Be unreachable (see :meth:`set_reachability`) for the duration of the block."""
        self.set_reachability(mode)
        try:
            yield
        finally:
            self.set_reachability("up")

    # -- HTTP

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            tasks = [job.task for job in self.jobs.values() if job.task is not None]
            for job in self.jobs.values():
                job.stop.set()  # stops encoders; cancelling a finished task does nothing
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _api(self, request: Request, route: str) -> tuple[str, Response | None]:
        """Record an API request; return its endpoint id and an error response, if any."""
        endpoint: str = request.path_params["endpoint"]
        self.requests[(endpoint, route)] += 1
        header = request.headers.get("authorization")
        self.authorization.append(header)
        refusal = self._refusal
        if refusal is not None and (refusal.routes is None or route in refusal.routes):
            if refusal.times is not None:
                refusal.times -= 1
                if refusal.times <= 0:
                    self._refusal = None
            error = f"emulated HTTP {refusal.status}"
            return endpoint, JSONResponse({"error": error}, refusal.status)
        if self.api_key is not None and header != f"Bearer {self.api_key}":
            return endpoint, JSONResponse({"error": "Unauthorized"}, 401)
        if endpoint not in self.handlers:
            return endpoint, JSONResponse({"error": f"endpoint {endpoint!r} not found"}, 404)
        return endpoint, None

    def _job(self, request: Request, route: str) -> QueueJob | Response:
        """Record a request about a job; return the job or an error response."""
        endpoint, error = self._api(request, route)
        job = self.jobs.get(request.path_params["job_id"])
        if error is not None:
            return error
        if job is None or job.endpoint != endpoint or job.id in self._vanished:
            return JSONResponse({"error": "request does not exist"}, 404)
        return job

    async def _submit(self, request: Request, endpoint: str, prefix: str) -> QueueJob | Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"error": "request body is not valid JSON"}, 400)
        if not isinstance(body, dict) or not isinstance(body.get("input"), dict):
            return JSONResponse({"error": "body must be an object with an 'input' object"}, 400)
        if not isinstance(body.get("policy", {}), dict):
            return JSONResponse({"error": "'policy' must be an object"}, 400)
        job = QueueJob(id=f"{prefix}{uuid.uuid4()}-u1", endpoint=endpoint, input=body["input"])
        job.forced_error = self._fail_next.pop(endpoint, None) or self.fail_every_job
        self.inputs.append((endpoint, json.loads(json.dumps(body["input"]))))
        self.jobs[job.id] = job
        job.task = asyncio.create_task(self._execute(job), name=f"{self.name}-job-{job.id}")
        return job

    async def _run(self, request: Request) -> Response:
        endpoint, error = self._api(request, "run")
        job = error or await self._submit(request, endpoint, "")
        if isinstance(job, Response):
            return job
        return JSONResponse({"id": job.id, "status": job.status})

    async def _runsync(self, request: Request) -> Response:
        endpoint, error = self._api(request, "runsync")
        wait_ms = request.query_params.get("wait", "90000")
        if error is None and not wait_ms.isdigit():
            error = JSONResponse({"error": "'wait' must be a whole number of milliseconds"}, 400)
        job = error or await self._submit(request, endpoint, "sync-")
        if isinstance(job, Response):
            return job
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(job.done.wait(), int(wait_ms) / 1000)
        return JSONResponse(job.body())

    async def _status(self, request: Request) -> Response:
        self.status_requests_per_job[request.path_params["job_id"]] += 1
        job = self._job(request, "status")
        return job if isinstance(job, Response) else JSONResponse(job.body())

    async def _stream(self, request: Request) -> Response:
        job = self._job(request, "stream")
        if isinstance(job, Response):
            return job
        chunks = [{"output": job.output}] if job.status == "COMPLETED" else []
        return JSONResponse({"id": job.id, "status": job.status, "stream": chunks})

    async def _cancel(self, request: Request) -> Response:
        job = self._job(request, "cancel")
        if isinstance(job, Response):
            return job
        if job.status not in TERMINAL:
            job.status = "CANCELLED"
            job.finished = time.time()
            job.stop.set()
            if job.task is not None:
                job.task.cancel()
        return JSONResponse({"id": job.id, "status": job.status})

    async def _health(self, request: Request) -> Response:
        endpoint, error = self._api(request, "health")
        if error is not None:
            return error
        counts = collections.Counter(j.status for j in self.jobs.values() if j.endpoint == endpoint)
        running = counts["IN_PROGRESS"]
        jobs = {"completed": counts["COMPLETED"], "failed": counts["FAILED"], "retried": 0}
        jobs |= {"inProgress": running, "inQueue": counts["IN_QUEUE"]}
        idle = 0 if running else 1  # jobs run side by side: think of one worker per job
        workers = {"idle": idle, "running": running, "initializing": 0, "ready": idle}
        return JSONResponse({"jobs": jobs, "workers": workers})

    # -- jobs

    async def _execute(self, job: QueueJob) -> None:
        try:
            if self.queue_seconds > 0:
                await asyncio.sleep(self.queue_seconds)
            job.status, job.started = "IN_PROGRESS", time.time()
            job.worker_id = f"emulated-{job.endpoint}"
            started = time.monotonic()
            error: str | None = job.forced_error
            output: dict[str, Any] | None = None
            try:
                if error is None:
                    output = await self.handlers[job.endpoint](job)
            except JobFailed as exc:
                output, error = exc.output, str(exc)
            rest = self.job_seconds - (time.monotonic() - started)
            if rest > 0:
                await asyncio.sleep(rest)
            if job.status == "IN_PROGRESS":  # not cancelled meanwhile
                if error is None:
                    job.status, job.output = "COMPLETED", output
                else:
                    job.status, job.error, job.output = "FAILED", error, output
        except asyncio.CancelledError:
            if job.status not in TERMINAL:  # server shutdown, not a client's cancel
                job.status = "CANCELLED"
            raise
        except Exception as exc:  # a bug in the emulator: make it visible in the job
            job.status, job.error = "FAILED", f"emulator error: {exc!r}"
        finally:
            job.finished = job.finished or time.time()
            job.done.set()


class _Gate:
    """A TCP forwarder from a port of its own to ``target``, on its own event loop thread."""

    def __init__(self, target: str) -> None:
        host, _, port = target.removeprefix("http://").partition(":")
        self._target = (host, int(port))
        self.mode: Reachability = "up"
        self._port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="queue-emulator-gate", daemon=True
        )
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def origin(self) -> str:
        return f"http://{self._target[0]}:{self._port}"

    def __enter__(self) -> _Gate:
        self._thread.start()
        try:
            self._call(self._listen())
        except BaseException:
            self._stop_loop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self._call(self._set_mode("refused"))
        finally:
            self._stop_loop()

    def set_mode(self, mode: Reachability) -> None:
        self._call(self._set_mode(mode))

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _set_mode(self, mode: Reachability) -> None:
        self.mode = mode
        if mode == "refused" and self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._open):
            writer.transport.abort()  # the socket closes on the loop's next turn
        self._open.clear()
        if self._tasks:  # so that, once this returns, clients see their connections reset
            await asyncio.wait(set(self._tasks), timeout=2)
        if mode != "refused" and self._server is None:
            await self._listen()

    async def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._target[0], self._port))  # the same port when listening again
        self._port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._accept, sock=sock)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._open.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            if self.mode != "up":  # "hang", or a connection that came in just before "refused"
                while self.mode == "hang" and await reader.read(65536):
                    pass
                return
            up_reader, upstream = await asyncio.open_connection(*self._target)
            self._open.add(upstream)
            await asyncio.gather(
                _pump(reader, upstream), _pump(up_reader, writer), return_exceptions=True
            )
        except OSError:
            pass
        finally:
            for end in (writer, upstream):
                if end is not None:
                    self._open.discard(end)
                    end.close()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.transport.abort()
