"""The job table and queue behind ``videokit serve``: RunPod's serverless semantics, in-process.

``JobQueue`` owns every job, a FIFO queue and ``concurrency`` worker slots that run the handler.
It reproduces what a client can observe of a RunPod endpoint: the six statuses, ``delayTime`` /
``executionTime``, ``executionTimeout`` (-> TIMED_OUT), ``ttl`` (the job vanishes, even mid-run),
result retention, ``status?ttl=``, cancel, retry of the same id, purge, health and streaming.

The job model lives in :mod:`videokit.serve._job`, the handler conventions (and the threads sync
handlers run in) in :mod:`videokit.serve._handler`, webhooks in :mod:`videokit.serve._webhook`;
their public names are importable from here too.

Everything here runs on one asyncio event loop (the server's); nothing is thread-safe except
what crosses into the handler threads, which only ever hand results back through futures.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal

from videokit.serve._handler import Handler, SlotThread, ThreadWork, call_handler, handler_kind
from videokit.serve._job import (
    DEFAULT_EXECUTION_TIMEOUT_MS,
    DEFAULT_TTL_MS,
    FINAL_STATUSES,
    MAX_TTL_MS,
    RUN_RESULT_RETENTION_S,
    RUNSYNC_RESULT_RETENTION_S,
    RUNSYNC_WAIT_RESULT_RETENTION_S,
    Job,
    JobPolicy,
    JobStatus,
    NotRetryableError,
    Outcome,
    Submission,
)
from videokit.serve._webhook import Webhooks
from videokit.serve.faults import FaultInjector

__all__ = [
    "DEFAULT_EXECUTION_TIMEOUT_MS",
    "DEFAULT_TTL_MS",
    "ENQUEUED_HISTORY",
    "FINAL_STATUSES",
    "MAX_TTL_MS",
    "RUNSYNC_RESULT_RETENTION_S",
    "RUNSYNC_WAIT_RESULT_RETENTION_S",
    "RUN_RESULT_RETENTION_S",
    "Handler",
    "Job",
    "JobPolicy",
    "JobQueue",
    "JobStatus",
    "NotRetryableError",
    "Submission",
]

log = logging.getLogger("videokit.serve")

# How many job attempts JobQueue.enqueued remembers: a long-running server must not grow forever.
ENQUEUED_HISTORY = 10_000

# How often expiry (ttl, executionTimeout, retention) is checked in the background. Requests
# also check on arrival, so this only bounds how late a timeout fires when nobody is asking.
SWEEP_INTERVAL_S = 0.05

_DeadlineKind = Literal["timeout", "ttl", "retention", "status_ttl"]


@dataclass(order=True)
class _Deadline:
    at: float
    seq: int
    job_id: str = field(compare=False)
    attempt: int = field(compare=False)
    kind: _DeadlineKind = field(compare=False)


class JobQueue:
    """Jobs, their queue and the worker slots that run them, on the server's event loop.

    ``clock`` (seconds, monotonic) drives every timestamp and expiry: delayTime, executionTime,
    executionTimeout, ttl and result retention. Tests inject a fake clock to expire things
    without waiting; the background sweep and every API call compare deadlines against it.
    ``history`` bounds the log of queued job attempts (:attr:`enqueued`). A finished job's
    result is kept ``result_retention_s`` when it came through ``/run``, ``runsync_retention_s``
    through ``/runsync`` and ``runsync_wait_retention_s`` through ``/runsync?wait=``; the
    defaults are RunPod's (see :mod:`videokit.serve._job`).
    """

    def __init__(
        self,
        handler: Handler,
        *,
        concurrency: int = 1,
        result_retention_s: float = RUN_RESULT_RETENTION_S,
        runsync_retention_s: float = RUNSYNC_RESULT_RETENTION_S,
        runsync_wait_retention_s: float = RUNSYNC_WAIT_RESULT_RETENTION_S,
        clock: Callable[[], float] = time.monotonic,
        faults: FaultInjector | None = None,
        history: int = ENQUEUED_HISTORY,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if history < 0:
            raise ValueError("history must not be negative")
        self.retention_s: dict[Submission, float] = {
            "run": result_retention_s,
            "runsync": runsync_retention_s,
            "runsync_wait": runsync_wait_retention_s,
        }
        if min(self.retention_s.values()) < 0:
            raise ValueError("result retention must not be negative")
        self.handler = handler
        self.kind = handler_kind(handler)
        self.concurrency = concurrency
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
        self._threads: list[SlotThread] = []
        self._webhooks = Webhooks()
        # Worker ids look like RunPod's (opaque per-worker strings) and name this host's slots.
        self._worker_prefix = f"{socket.gethostname()}-{os.getpid()}"

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the worker slots and the expiry sweep on the running loop."""
        self._work = asyncio.Event()
        if self.kind in ("sync", "generator"):
            self._threads = [
                SlotThread(f"videokit-serve-job-{slot}") for slot in range(self.concurrency)
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
        await self._webhooks.aclose()

    # ------------------------------------------------------------------ API operations

    def submit(
        self,
        job_input: Any,
        policy: JobPolicy,
        *,
        webhook: str | None = None,
        extra: dict[str, Any] | None = None,
        via: Submission = "run",
    ) -> Job:
        """Create a job and queue it (or park it forever, for the "stuck" fault).

        ``via`` is the route that submitted it, which decides how long its result is kept.
        """
        self.sweep()
        job = Job(
            id=f"{uuid.uuid4()}",
            input=job_input,
            policy=policy,
            submitted_at=self.clock(),
            retention_s=self.retention_s[via],
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

    def set_ttl(self, job_id: str, ttl_ms: int) -> Job | None:
        """``status/{id}?ttl=``: delete the job ``ttl_ms`` from now, whatever its state then.

        RunPod: "?ttl=6000 sets the TTL for the job to 6 seconds. Use this when you want to tell
        the system to remove a job result sooner than the default retention time" (runpod/docs
        serverless/endpoints/operation-reference.mdx, "/status"; the sentence is from commit
        e746dada, later shortened). A TTL deletes a job "regardless of state" (the same docs),
        so this replaces both the policy ttl and the result retention of the current attempt,
        and a later ``?ttl=`` replaces it in turn; a retry starts afresh.
        """
        job = self.get(job_id)
        if job is None:
            return None
        job.status_ttl_seq = self._add_deadline(job, ttl_ms / 1000, "status_ttl")
        log.debug("job %s ttl set ttl_ms=%d", job.id, ttl_ms)  # a client may send it every poll
        return job

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
        self._finish(job, Outcome(JobStatus.CANCELLED))
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
        job.status_ttl_seq = None
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
            if deadline.kind == "status_ttl":
                if job.status_ttl_seq == deadline.seq:
                    self._delete(job, "ttl set by status expired")
            elif deadline.kind == "timeout":
                if job.status is JobStatus.IN_PROGRESS:
                    timeout_ms = job.policy.execution_timeout_ms
                    error = f"job exceeded its executionTimeout of {timeout_ms} ms"
                    self._finish(job, Outcome(JobStatus.TIMED_OUT, error=error))
            elif job.status_ttl_seq is not None:
                continue  # a status?ttl= decides when this job goes
            elif deadline.kind == "ttl":
                self._delete(job, "ttl expired")
            elif job.is_final:  # retention
                self._delete(job, "result expired")

    async def _sweeper(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            self.sweep()

    def _add_deadline(self, job: Job, after_s: float, kind: _DeadlineKind) -> int:
        self._seq += 1
        at = self.clock() + after_s
        heapq.heappush(self._deadlines, _Deadline(at, self._seq, job.id, job.attempt, kind))
        return self._seq

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

    def _finish(self, job: Job, outcome: Outcome) -> None:
        status = outcome.status
        job.status = status
        job.finished_at = self.clock()
        if outcome.has_output:
            job.has_output, job.output = True, outcome.output
        job.error = outcome.error
        if status is JobStatus.COMPLETED:
            self._counts["completed"] += 1
        elif status in (JobStatus.FAILED, JobStatus.TIMED_OUT):
            self._counts["failed"] += 1
        self._stop_task(job)
        self._add_deadline(job, job.retention_s, "retention")
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
            self._spawn(self._webhooks.deliver(job.webhook, body))
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

    def _is_current(self, job: Job, attempt: int) -> bool:
        return self.is_live(job) and job.attempt == attempt

    def _settle(self, job: Job, attempt: int, outcome: Outcome) -> None:
        # A cancelled, timed-out, deleted or retried attempt must not be overwritten by a
        # handler that finished late.
        if self._is_current(job, attempt) and job.status is JobStatus.IN_PROGRESS:
            self._finish(job, outcome)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

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
            self._finish(job, Outcome(JobStatus.FAILED, error=self.faults.transient_error()))
            return
        work = ThreadWork(self._threads[slot]) if self._threads else None
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

    async def _invoke(self, job: Job, attempt: int, work: ThreadWork | None) -> None:
        def on_chunk(item: Any) -> None:
            if self._is_current(job, attempt):
                job.pending_stream.append(item)
                job.chunks.append(item)

        await call_handler(
            self.handler,
            self.kind,
            {"id": job.id, "input": job.input, **job.extra},
            work,
            worker_id=job.worker_id,
            settle=lambda outcome: self._settle(job, attempt, outcome),
            on_chunk=on_chunk,
        )
