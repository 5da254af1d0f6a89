"""The backend seam: what the pipeline needs from anything that can edit and animate frames.

Requests and results are the wire models in :mod:`videokit.protocol`, so an in-process backend and a
remote endpoint are interchangeable. A backend reports the remote job ids it creates through the
:class:`JobContext` *before* it waits on them, so the manifest can record them and a resumed render
can re-attach instead of paying twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from videokit.protocol import AnimateRequest, AnimateResult, EditRequest, EditResult

__all__ = ["Backend", "JobAttempt", "JobContext", "JobState", "Stage"]

Stage = Literal["edit", "animate"]
# Where a remote job is, as far as its backend can tell: waiting its turn for a worker, waiting for
# a worker to boot (a cold start: no worker was up to take it), or being run by a worker.
JobState = Literal["queued", "cold_start", "running"]


@dataclass
class JobAttempt:
    """One submission of a job to a backend, as recorded in the manifest."""

    job_id: str
    status: str = "submitted"
    execution_ms: int | None = None
    delay_ms: int | None = None
    cost_usd: float = 0.0
    # True when the endpoint never reported the job's execution time (e.g. it was cancelled
    # before it said), so ``cost_usd`` is the client's estimate from what it observed.
    cost_estimated: bool = False
    error: str | None = None
    #: The endpoint it was submitted to (its label: an id, or the last part of a URL).
    endpoint: str | None = None


async def _ignore_submitted(job_id: str) -> None:
    return None


def _ignore_progress(fraction: float, message: str | None) -> None:
    return None


def _ignore_status(state: JobState) -> None:
    return None


@dataclass
class JobContext:
    """What the pipeline hands a backend for one job.

    ``resume_job_id`` is the id of a job this scene submitted in an earlier run that never reported
    back; a remote backend should re-attach to it rather than submit again.

    ``on_status`` is called when a job the backend watches changes state (see :data:`JobState`),
    only on changes; a backend that cannot tell queued from running may say ``"running"`` once
    the job starts.

    A backend with several endpoints per stage says where the job is (``endpoint``, set before it
    is submitted there), why it left the endpoints before it (``moves``) and the identity of the
    one whose result it returns (``served_by``: see :meth:`Backend.identities`).
    ``resume_endpoint`` is where the job to re-attach to was submitted.
    """

    scene: str
    stage: Stage
    resume_job_id: str | None = None
    resume_endpoint: str | None = None
    endpoint: str | None = None
    served_by: str | None = None
    moves: list[str] = field(default_factory=list)
    on_submitted: Callable[[str], Awaitable[None]] = _ignore_submitted
    on_progress: Callable[[float, str | None], None] = _ignore_progress
    on_status: Callable[[JobState], None] = _ignore_status
    attempts: list[JobAttempt] = field(default_factory=list)

    @property
    def watches_status(self) -> bool:
        """Whether anyone listens to ``on_status``: a backend may skip requests only it needs."""
        return self.on_status is not _ignore_status


@runtime_checkable
class Backend(Protocol):
    """Something that runs edit and animate jobs.

    ``identity(stage)`` names the model and engine that produce a stage's output; it is part of
    every
    cache key, so results from different models are never mixed up.
    """

    name: str

    def identity(self, stage: Stage) -> str: ...

    def identities(self, stage: Stage) -> tuple[str, ...]:
        """The identity of every endpoint that may serve ``stage``, in order of preference (the
        first is :meth:`identity`). A cached result of any of them stands for a job; a result is
        stored under the identity that made it (``JobContext.served_by``)."""
        ...

    def concurrency(self, stage: Stage) -> int: ...

    def check(
        self, stages: Collection[Stage], *, payload_bytes: Mapping[Stage, int] | None = None
    ) -> None:
        """Raise ConfigError unless jobs of these stages can run (before anything is submitted).

        ``payload_bytes`` is, per stage, an upper bound on the size of the largest request the
        render will send (media inline as base64), so a backend with a payload limit can refuse a
        render up front instead of after paying for its first scenes.
        """
        ...

    async def warm_up(self, stage: Stage, ctx: JobContext) -> None:
        """Wake this stage's endpoint so its cold start overlaps other work.

        A remote backend submits a warm-up job, reports it through ``ctx`` like any job
        (``on_submitted``, ``attempts``) and returns when it has ended; cancelling the call cancels
        the remote job. Backends with nothing to wake return at once.
        """
        ...

    async def edit(self, request: EditRequest, ctx: JobContext) -> EditResult: ...

    async def animate(self, request: AnimateRequest, ctx: JobContext) -> AnimateResult: ...

    async def aclose(self) -> None: ...
