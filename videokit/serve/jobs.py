"""The job table and queue behind ``videokit serve``: RunPod's serverless semantics, in-process.

``JobQueue`` owns every job, a FIFO queue and ``concurrency`` worker slots that run the handler.
It reproduces what a client can observe of a RunPod endpoint: the six statuses, ``delayTime`` /
``executionTime``, ``executionTimeout`` (-> TIMED_OUT), ``ttl`` (the job vanishes, even mid-run),
result retention, cancel, retry of the same id, purge, health and streaming of generator output.

Handlers are called exactly the way ``runpod.serverless.start({"handler": h})`` calls them (sync
function, async function, generator, async generator; a returned ``{"error": ...}`` or a raised
exception fails the job), with one deliberate difference: sync handlers run in a worker thread
instead of on the event loop, so the HTTP API stays responsive while a job runs.

Everything here runs on one asyncio event loop (the server's); nothing is thread-safe except
what crosses into the handler threads, which only ever hand results back through futures.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import heapq
import inspect
import json
import logging
import os
import queue
import socket
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

import httpx

from videokit.serve.faults import FaultInjector

__all__ = [
    "DEFAULT_EXECUTION_TIMEOUT_MS",
    "DEFAULT_TTL_MS",
    "ENQUEUED_HISTORY",
    "FINAL_STATUSES",
    "Handler",
    "Job",
    "JobPolicy",
    "JobQueue",
    "JobStatus",
    "NotRetryableError",
]

log = logging.getLogger("videokit.serve")

# How many job attempts JobQueue.enqueued remembers: a long-running server must not grow forever.
ENQUEUED_HISTORY = 10_000

DEFAULT_EXECUTION_TIMEOUT_MS = 600_000
DEFAULT_TTL_MS = 24 * 3600 * 1000

# RunPod retries a failed webhook delivery twice, 10 s apart.
WEBHOOK_ATTEMPTS = 3
WEBHOOK_RETRY_DELAY_S = 10.0
WEBHOOK_TIMEOUT_S = 10.0

# How often expiry (ttl, executionTimeout, retention) is checked in the background. Requests
# also check on arrival, so this only bounds how late a timeout fires when nobody is asking.
SWEEP_INTERVAL_S = 0.05

Handler = Callable[[dict[str, Any]], Any]
"""Anything ``runpod.serverless.start`` accepts as ``handler``."""

HandlerKind = Literal["sync", "async", "generator", "async_generator"]


class JobStatus(StrEnum):
    """RunPod's job statuses."""

    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"


FINAL_STATUSES = frozenset(
    {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.TIMED_OUT}
)


class NotRetryableError(Exception):
    """``retry`` was asked for a job that is not FAILED or TIMED_OUT."""


@dataclass(frozen=True)
class JobPolicy:
    """The ``policy`` object of a ``run`` request, in RunPod's units (milliseconds)."""

    execution_timeout_ms: int = DEFAULT_EXECUTION_TIMEOUT_MS
    ttl_ms: int = DEFAULT_TTL_MS
    low_priority: bool = False


@dataclass(eq=False)
class Job:
    """One job; mutated only by the :class:`JobQueue` that owns it."""

    id: str
    input: Any
    policy: JobPolicy
    submitted_at: float
    webhook: str | None = None
    # Other request fields RunPod forwards to the worker's job dict (s3Config).
    extra: dict[str, Any] = field(default_factory=dict)
    status: JobStatus = JobStatus.IN_QUEUE
    # Bumped by retry; deadlines and results from an older attempt are ignored.
    attempt: int = 0
    fault: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    has_output: bool = False
    output: Any = None
    error: str | None = None
    worker_id: str | None = None
    # Generator chunks not yet returned by /stream, and all chunks (the aggregated output).
    pending_stream: list[Any] = field(default_factory=list)
    chunks: list[Any] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    # Set when the attempt reaches a final status or the job is deleted; runsync waits on it.
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    def payload(self) -> dict[str, Any]:
        """The status object RunPod answers ``GET status/{id}`` with."""
        body: dict[str, Any] = {"id": self.id, "status": self.status.value}
        if self.started_at is not None:
            body["delayTime"] = _ms(self.started_at - self.submitted_at)
            if self.finished_at is not None:
                body["executionTime"] = _ms(self.finished_at - self.started_at)
        if self.has_output:
            body["output"] = self.output
        if self.error is not None:
            body["error"] = self.error
        if self.worker_id is not None:
            body["workerId"] = self.worker_id
        return body


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


def handler_kind(handler: Handler) -> HandlerKind:
    """Classify a handler the way RunPod's worker does (functools.partial is unwrapped)."""
    if inspect.isasyncgenfunction(handler):
        return "async_generator"
    if inspect.isgeneratorfunction(handler):
        return "generator"
    call = getattr(handler, "__call__", None)  # noqa: B004 - callable objects with async __call__
    if inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call):
        return "async"
    return "sync"


def error_blob(err: BaseException, worker_id: str | None) -> str:
    """A raised exception as RunPod reports it: a JSON string with type, message, traceback."""
    return json.dumps(
        {
            "error_type": str(type(err)),
            "error_message": str(err),
            "error_traceback": "".join(traceback.format_exception(err)),
            "hostname": socket.gethostname(),
            "worker_id": worker_id or "unknown",
        }
    )


def _error_text(value: Any) -> str:
    # RunPod's status.error is a string; a handler may return any JSON value as its error.
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _json_problem(value: Any) -> str | None:
    """Why ``value`` cannot be sent as JSON (the same rules Starlette's JSONResponse uses)."""
    try:
        json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as err:
        return f"handler output is not JSON-serializable: {err}"
    return None


class _Unset:
    pass


_UNSET = _Unset()
_END = object()


@dataclass(order=True)
class _Deadline:
    at: float
    seq: int
    job_id: str = field(compare=False)
    attempt: int = field(compare=False)
    kind: Literal["timeout", "ttl", "retention"] = field(compare=False)


class _SlotThread:
    """One daemon thread per worker slot that runs the slot's sync handler calls in order.

    Not a ThreadPoolExecutor: its threads are joined at interpreter exit, so a handler stuck in a
    ten-minute render would keep Ctrl+C from stopping the server. A daemon thread dies with the
    process. One thread per slot also keeps every step of a sync generator on the same thread,
    for handlers that keep thread-local state (CUDA streams, torch's grad mode).
    """

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._calls.put((fn, args, future))
        return future

    def close(self) -> None:
        """Let the thread exit after its current call (it cannot be interrupted)."""
        self._calls.put(None)

    def _loop(self) -> None:
        while (call := self._calls.get()) is not None:
            fn, args, future = call
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args)
            except BaseException as err:  # handed to the awaiting job, like an executor would
                future.set_exception(err)
            else:
                future.set_result(result)


_Call = tuple[Callable[..., Any], tuple[Any, ...], "concurrent.futures.Future[Any]"]


class _ThreadWork:
    """What a sync handler is doing in its thread, so the slot can wait for it after a cancel.

    A thread cannot be interrupted; after a cancel or timeout its result is discarded, but the
    slot stays busy until the thread returns. On a GPU that is the truth: the old job still holds
    the device, and starting the next one beside it would invite an out-of-memory error.
    """

    def __init__(self, executor: _SlotThread) -> None:
        self._executor = executor
        self.inflight: concurrent.futures.Future[Any] | None = None
        self.generator: Iterator[Any] | None = None

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        self.inflight = self._executor.submit(fn, *args)
        return await asyncio.wrap_future(self.inflight)

    async def drain(self) -> None:
        """Wait for the thread to return, then close an unfinished generator (runs its finally)."""
        if self.inflight is not None and not self.inflight.done():
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(self.inflight)
        if self.generator is not None:
            close = getattr(self.generator, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wrap_future(self._executor.submit(close))


class JobQueue:
    """Jobs, their queue and the worker slots that run them, on the server's event loop.

    ``clock`` (seconds, monotonic) drives every timestamp and expiry: delayTime, executionTime,
    executionTimeout, ttl and result retention. Tests inject a fake clock to expire things
    without waiting; the background sweep and every API call compare deadlines against it.
    ``history`` bounds the log of queued job attempts (:attr:`enqueued`).
    """

    def __init__(
        self,
        handler: Handler,
        *,
        concurrency: int = 1,
        result_retention_s: float = 1800.0,
        clock: Callable[[], float] = time.monotonic,
        faults: FaultInjector | None = None,
        history: int = ENQUEUED_HISTORY,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if history < 0:
            raise ValueError("history must not be negative")
        if result_retention_s < 0:
            raise ValueError("result_retention_s must not be negative")
        self.handler = handler
        self.kind = handler_kind(handler)
        self.concurrency = concurrency
        self.result_retention_s = result_retention_s
        self.clock = clock
        self.faults = faults
        self._jobs: dict[str, Job] = {}
        # The last ``history`` job attempts queued, as (job id, attempt): submissions and
        # retries, in order, kept after jobs expire, so a test can account for every job the
        # server accepted. ``enqueued_total`` counts them all: while it equals len(enqueued),
        # nothing has been forgotten.
        self.enqueued: deque[tuple[str, int]] = deque(maxlen=history)
        self.enqueued_total = 0
        # Low-priority jobs only start when no normal job waits. Entries are (id, attempt) and
        # are validated when taken, so cancel/purge/retry never have to search the deques.
        self._queue: deque[tuple[str, int]] = deque()
        self._low_queue: deque[tuple[str, int]] = deque()
        self._deadlines: list[_Deadline] = []
        self._seq = 0
        self._busy = 0
        self._counts = {"completed": 0, "failed": 0, "retried": 0}
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._work: asyncio.Event | None = None
        self._threads: list[_SlotThread] = []
        self._http: httpx.AsyncClient | None = None
        # Worker ids look like RunPod's (opaque per-worker strings) and name this host's slots.
        self._worker_prefix = f"{socket.gethostname()}-{os.getpid()}"

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the worker slots and the expiry sweep on the running loop."""
        self._work = asyncio.Event()
        if self.kind in ("sync", "generator"):
            self._threads = [
                _SlotThread(f"videokit-serve-job-{slot}") for slot in range(self.concurrency)
            ]
        self._tasks = [
            asyncio.create_task(self._slot(slot), name=f"videokit-serve-slot-{slot}")
            for slot in range(self.concurrency)
        ]
        self._tasks.append(asyncio.create_task(self._sweeper(), name="videokit-serve-sweep"))

    async def stop(self) -> None:
        """Cancel running jobs and background work; wake every runsync waiter."""
        for job in self._jobs.values():
            if job.task is not None:
                job.task.cancel()
            job.done.set()
        tasks = [*self._tasks, *self._background]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        # A sync handler's thread cannot be killed; shutdown does not wait for it (daemon).
        for thread in self._threads:
            thread.close()
        self._threads = []
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # ------------------------------------------------------------------ API operations

    def submit(
        self,
        job_input: Any,
        policy: JobPolicy,
        *,
        webhook: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Job:
        """Create a job and queue it (or park it forever, for the "stuck" fault)."""
        self.sweep()
        job = Job(
            id=f"{uuid.uuid4()}",
            input=job_input,
            policy=policy,
            submitted_at=self.clock(),
            webhook=webhook,
            extra=dict(extra or {}),
        )
        self._jobs[job.id] = job
        self._enqueue(job)
        return job

    def get(self, job_id: str) -> Job | None:
        """The job, or None when unknown or expired."""
        self.sweep()
        return self._jobs.get(job_id)

    def take_stream(self, job_id: str) -> tuple[Job, list[Any]] | None:
        """The job and the generator chunks produced since the previous call."""
        job = self.get(job_id)
        if job is None:
            return None
        chunks, job.pending_stream = job.pending_stream, []
        return job, chunks

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a queued or running job; a finished job is returned unchanged."""
        job = self.get(job_id)
        if job is None or job.is_final:
            return job
        self._finish(job, JobStatus.CANCELLED)
        return job

    def retry(self, job_id: str) -> Job | None:
        """Requeue a FAILED or TIMED_OUT job under the same id."""
        job = self.get(job_id)
        if job is None:
            return None
        if job.status not in (JobStatus.FAILED, JobStatus.TIMED_OUT):
            raise NotRetryableError(
                f"job {job.id} is {job.status.value}; only FAILED or TIMED_OUT jobs can be retried"
            )
        job.attempt += 1
        job.status = JobStatus.IN_QUEUE
        job.submitted_at = self.clock()
        job.started_at = job.finished_at = None
        job.has_output, job.output, job.error, job.worker_id = False, None, None, None
        job.pending_stream, job.chunks = [], []
        job.done = asyncio.Event()
        self._counts["retried"] += 1
        self._enqueue(job)
        log.info("job %s retried attempt=%d", job.id, job.attempt)
        return job

    def purge(self) -> int:
        """Delete every job still IN_QUEUE; running jobs are left alone, like RunPod."""
        self.sweep()
        queued = [job for job in self._jobs.values() if job.status is JobStatus.IN_QUEUE]
        for job in queued:
            self._delete(job, "purged")
        self._queue.clear()
        self._low_queue.clear()
        return len(queued)

    def health(self) -> dict[str, Any]:
        """RunPod's health object. completed/failed/retried count since the server started."""
        self.sweep()
        statuses = [job.status for job in self._jobs.values()]
        return {
            "jobs": {
                "completed": self._counts["completed"],
                "failed": self._counts["failed"],
                "inProgress": statuses.count(JobStatus.IN_PROGRESS),
                "inQueue": statuses.count(JobStatus.IN_QUEUE),
                "retried": self._counts["retried"],
            },
            "workers": {"idle": self.concurrency - self._busy, "running": self._busy},
        }

    async def wait(self, job: Job, timeout_s: float) -> None:
        """Wait until the job's current attempt is final (or deleted), at most ``timeout_s``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(job.done.wait(), timeout_s)
        self.sweep()

    def is_live(self, job: Job) -> bool:
        """False once the job was deleted (ttl, retention, purge, "expired" fault)."""
        return self._jobs.get(job.id) is job

    def jobs(self) -> list[Job]:
        """A snapshot of every job the server still knows (not deleted by ttl, retention, purge
        or a fault). It changes nothing, so tests may call it from another thread."""
        return list(self._jobs.values())

    # ------------------------------------------------------------------ expiry

    def sweep(self) -> None:
        """Apply every deadline that has passed by ``clock()``."""
        now = self.clock()
        while self._deadlines and self._deadlines[0].at <= now:
            deadline = heapq.heappop(self._deadlines)
            job = self._jobs.get(deadline.job_id)
            if job is None or job.attempt != deadline.attempt:
                continue
            if deadline.kind == "ttl":
                self._delete(job, "ttl expired")
            elif deadline.kind == "retention" and job.is_final:
                self._delete(job, "result expired")
            elif deadline.kind == "timeout" and job.status is JobStatus.IN_PROGRESS:
                timeout_ms = job.policy.execution_timeout_ms
                self._finish(
                    job,
                    JobStatus.TIMED_OUT,
                    error=f"job exceeded its executionTimeout of {timeout_ms} ms",
                )

    async def _sweeper(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            self.sweep()

    def _add_deadline(
        self, job: Job, after_s: float, kind: Literal["timeout", "ttl", "retention"]
    ) -> None:
        self._seq += 1
        at = self.clock() + after_s
        heapq.heappush(self._deadlines, _Deadline(at, self._seq, job.id, job.attempt, kind))

    # ------------------------------------------------------------------ state changes

    def _enqueue(self, job: Job) -> None:
        self.enqueued.append((job.id, job.attempt))
        self.enqueued_total += 1
        job.fault = self.faults.job_fault() if self.faults is not None else None
        self._add_deadline(job, job.policy.ttl_ms / 1000, "ttl")
        if job.fault == "stuck":
            # Never handed to a slot: IN_QUEUE until cancel, purge or ttl.
            assert self.faults is not None
            self.faults.record("stuck", job.id)
            log.info("job %s queued fault=stuck", job.id)
            return
        pending = self._low_queue if job.policy.low_priority else self._queue
        pending.append((job.id, job.attempt))
        log.info("job %s queued", job.id)
        assert self._work is not None, "JobQueue.start() was not called"
        self._work.set()

    def _take(self) -> Job | None:
        for pending in (self._queue, self._low_queue):
            while pending:
                job_id, attempt = pending.popleft()
                job = self._jobs.get(job_id)
                if job is not None and job.attempt == attempt and job.status is JobStatus.IN_QUEUE:
                    return job
        return None

    def _finish(
        self,
        job: Job,
        status: JobStatus,
        *,
        output: Any = _UNSET,
        error: str | None = None,
    ) -> None:
        now = self.clock()
        job.status = status
        job.finished_at = now
        if not isinstance(output, _Unset):
            job.has_output, job.output = True, output
        job.error = error
        if status is JobStatus.COMPLETED:
            self._counts["completed"] += 1
        elif status in (JobStatus.FAILED, JobStatus.TIMED_OUT):
            self._counts["failed"] += 1
        self._stop_task(job)
        self._add_deadline(job, self.result_retention_s, "retention")
        body = job.payload()
        log.info(
            "job %s %s delay_ms=%s exec_ms=%s worker=%s",
            job.id,
            status.value,
            body.get("delayTime", "-"),
            body.get("executionTime", "-"),
            job.worker_id or "-",
        )
        job.done.set()
        if job.webhook is not None:
            self._spawn(self._deliver_webhook(job.webhook, body))
        if job.fault == "expired" and self.faults is not None:
            self.faults.record("expired", job.id)
            self._delete(job, "result expired (fault)")

    def _delete(self, job: Job, reason: str) -> None:
        if self._jobs.get(job.id) is not job:
            return
        del self._jobs[job.id]
        self._stop_task(job)
        job.done.set()
        log.info("job %s deleted reason=%s status=%s", job.id, reason, job.status.value)

    @staticmethod
    def _stop_task(job: Job) -> None:
        # Cancelled, timed out or deleted while running: an async handler gets CancelledError at
        # its next await; a sync one keeps running in its thread and its result is discarded.
        # A job that settles itself (from inside its own task) must not cancel that task.
        task = job.task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()

    def _settle(self, job: Job, attempt: int, **result: Any) -> None:
        # A cancelled, timed-out, deleted or retried attempt must not be overwritten by a
        # handler that finished late.
        if self.is_live(job) and job.attempt == attempt and job.status is JobStatus.IN_PROGRESS:
            self._finish(job, **result)

    # ------------------------------------------------------------------ running jobs

    async def _slot(self, slot: int) -> None:
        assert self._work is not None
        while True:
            job = self._take()
            if job is None:
                # No await between the empty _take() and clear(), so a submit cannot slip in.
                self._work.clear()
                await self._work.wait()
                continue
            self._busy += 1
            try:
                await self._execute(job, slot)
            finally:
                self._busy -= 1

    async def _execute(self, job: Job, slot: int) -> None:
        job.status = JobStatus.IN_PROGRESS
        job.started_at = self.clock()
        job.worker_id = f"{self._worker_prefix}-{slot}"
        self._add_deadline(job, job.policy.execution_timeout_ms / 1000, "timeout")
        log.info("job %s IN_PROGRESS worker=%s", job.id, job.worker_id)
        if job.fault == "failed" and self.faults is not None:
            self.faults.record("failed", job.id)
            self._finish(job, JobStatus.FAILED, error=self.faults.transient_error())
            return
        work = _ThreadWork(self._threads[slot]) if self._threads else None
        task = asyncio.create_task(self._invoke(job, job.attempt, work), name=f"job-{job.id}")
        job.task = task
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            job.task = None
        if not task.cancelled():
            # Retrieve it so asyncio does not warn "exception was never retrieved".
            exc = task.exception()
            if exc is not None:
                log.error("job %s runner crashed: %r", job.id, exc)
        if work is not None:
            await work.drain()

    async def _invoke(self, job: Job, attempt: int, work: _ThreadWork | None) -> None:
        request: dict[str, Any] = {"id": job.id, "input": job.input, **job.extra}
        try:
            if self.kind in ("generator", "async_generator"):
                await self._run_generator(job, attempt, request, work)
                return
            if self.kind == "async":
                result = await self.handler(request)
            else:
                assert work is not None  # sync handlers always get a slot thread
                result = await work.call(self.handler, request)
                if inspect.isawaitable(result):
                    result = await result
        except Exception as err:
            self._settle(
                job, attempt, status=JobStatus.FAILED, error=error_blob(err, job.worker_id)
            )
            return
        self._settle(job, attempt, **self._result_fields(result))

    def _result_fields(self, result: Any) -> dict[str, Any]:
        # RunPod pops "error" (and "refresh_worker") from a returned dict; a truthy error fails
        # the job and whatever is left is still reported as output.
        if isinstance(result, dict) and ("error" in result or "refresh_worker" in result):
            rest = {k: v for k, v in result.items() if k not in ("error", "refresh_worker")}
            if result.get("error"):
                fields: dict[str, Any] = {
                    "status": JobStatus.FAILED,
                    "error": _error_text(result["error"]),
                }
                if rest:
                    fields["output"] = rest
                return fields
            result = rest
        problem = _json_problem(result)
        if problem is not None:
            return {"status": JobStatus.FAILED, "error": problem}
        return {"status": JobStatus.COMPLETED, "output": result}

    async def _run_generator(
        self, job: Job, attempt: int, request: dict[str, Any], work: _ThreadWork | None
    ) -> None:
        def emit(item: Any) -> bool:
            """Record one chunk; True when it ends the job (an error chunk, like RunPod)."""
            if isinstance(item, dict) and item.get("error"):
                self._settle(
                    job, attempt, status=JobStatus.FAILED, error=_error_text(item["error"])
                )
                return True
            problem = _json_problem(item)
            if problem is not None:
                self._settle(job, attempt, status=JobStatus.FAILED, error=problem)
                return True
            if self.is_live(job) and job.attempt == attempt:
                job.pending_stream.append(item)
                job.chunks.append(item)
            return False

        if self.kind == "async_generator":
            agen = self.handler(request)
            try:
                async for item in agen:
                    if emit(item):
                        break
            finally:
                # Runs the handler's finally now rather than whenever the generator is GC'd.
                await agen.aclose()
        else:
            assert work is not None
            gen = self.handler(request)
            work.generator = gen
            while True:
                item = await work.call(next, gen, _END)
                if item is _END or emit(item):
                    break
        # Aggregated output, like return_aggregate_stream=True.
        self._settle(job, attempt, status=JobStatus.COMPLETED, output=list(job.chunks))

    # ------------------------------------------------------------------ webhooks

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _deliver_webhook(self, url: str, body: dict[str, Any]) -> None:
        if self._http is None:
            # Created on first use: most servers never see a webhook, and a client costs an
            # SSL context.
            self._http = httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT_S)
        # Log the host only: webhook URLs often carry a token in their query string.
        host = httpx.URL(url).host
        for attempt in range(1, WEBHOOK_ATTEMPTS + 1):
            try:
                response = await self._http.post(url, json=body)
                if response.is_success:
                    log.info("job %s webhook delivered host=%s", body["id"], host)
                    return
                reason = f"HTTP {response.status_code}"
            except httpx.HTTPError as err:
                reason = type(err).__name__
            log.warning(
                "job %s webhook failed host=%s attempt=%d reason=%s",
                body["id"],
                host,
                attempt,
                reason,
            )
            if attempt < WEBHOOK_ATTEMPTS:
                await asyncio.sleep(WEBHOOK_RETRY_DELAY_S)
