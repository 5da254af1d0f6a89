"""One job of ``videokit serve`` as a RunPod client sees it: statuses, policy, the status object.

:class:`Job` is plain data, mutated only by the :class:`~videokit.serve.jobs.JobQueue` that owns
it. The constants are RunPod's defaults and limits (shared/notes/runpod.md and the runpod/docs
pages named beside them).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

__all__ = [
    "DEFAULT_EXECUTION_TIMEOUT_MS",
    "DEFAULT_TTL_MS",
    "FINAL_STATUSES",
    "MAX_TTL_MS",
    "RUNSYNC_RESULT_RETENTION_S",
    "RUNSYNC_WAIT_RESULT_RETENTION_S",
    "RUN_RESULT_RETENTION_S",
    "Job",
    "JobPolicy",
    "JobStatus",
    "NotRetryableError",
    "Outcome",
    "Submission",
    "ms",
]

DEFAULT_EXECUTION_TIMEOUT_MS = 600_000
DEFAULT_TTL_MS = 24 * 3600 * 1000
# The longest ttl RunPod accepts: 7 days (runpod/docs serverless/endpoints/send-requests.mdx,
# "Execution policies").
MAX_TTL_MS = 7 * 24 * 3600 * 1000

# How long a finished job's result is kept, by the route that submitted it. RunPod's rule, from
# shared/notes/runpod.md ("results kept 30 min (/run), 1 min (/runsync, 5 min with wait)"), as
# runpod/docs serverless/endpoints/operation-reference.mdx says it: "Async jobs (/run) results are
# available for 30 minutes, sync jobs (/runsync) for 1 minute (up to 5 minutes with ?wait=t)".
RUN_RESULT_RETENTION_S = 30 * 60.0
RUNSYNC_RESULT_RETENTION_S = 60.0
RUNSYNC_WAIT_RESULT_RETENTION_S = 5 * 60.0

Submission = Literal["run", "runsync", "runsync_wait"]
"""How a job was submitted: ``/run``, ``/runsync`` or ``/runsync?wait=``; sets its retention."""


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


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended: its final status, and the output and error to report."""

    status: JobStatus
    error: str | None = None
    has_output: bool = False
    output: Any = None


@dataclass(eq=False)
class Job:
    """One job; mutated only by the :class:`~videokit.serve.jobs.JobQueue` that owns it."""

    id: str
    input: Any
    policy: JobPolicy
    submitted_at: float
    # How long the result is kept once the job is final (seconds), set by the submitting route.
    retention_s: float = RUN_RESULT_RETENTION_S
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
    # The deadline set by the latest ``status?ttl=`` of this attempt; while set, it alone decides
    # when the job is deleted (the policy ttl and the result retention no longer do).
    status_ttl_seq: int | None = None
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
            body["delayTime"] = ms(self.started_at - self.submitted_at)
            if self.finished_at is not None:
                body["executionTime"] = ms(self.finished_at - self.started_at)
        if self.has_output:
            body["output"] = self.output
        if self.error is not None:
            body["error"] = self.error
        if self.worker_id is not None:
            body["workerId"] = self.worker_id
        return body


def ms(seconds: float) -> int:
    """Seconds as RunPod's whole milliseconds, never negative."""
    return max(0, round(seconds * 1000))
