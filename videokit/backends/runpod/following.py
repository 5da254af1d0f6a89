"""Following one job to its end: deadlines, what it waits for, and what the stage's jobs take.

A job waits at most ``queue_timeout_s`` in the queue and runs at most ``execution_timeout_s``; a
job whose status cannot be read until its queue deadline counts as stuck in the queue (cancelled,
then submitted again), not as the end of its scene. While it is queued, the endpoint's ``health``
(read at most every 15 s per stage) says whether that is a queue or a cold start. What a finished
job took seeds the polling schedule of the next ones; a job polling blind is woken when the first
one of its stage finishes, and its reads stay within the budget of
:mod:`~videokit.backends.runpod.schedule` whatever it learns.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from videokit.backends.base import JobContext, JobState, Stage
from videokit.backends.runpod.client import RunPodClient
from videokit.backends.runpod.config import (
    Endpoint,
    EndpointHealth,
    RunPodConfig,
    state_in_queue,
)
from videokit.backends.runpod.handle import JobHandle
from videokit.backends.runpod.wire import JobStatus
from videokit.errors import EndpointError, JobTimeoutError

__all__ = ["Following", "StuckInQueue", "Watch"]

log = logging.getLogger("videokit.runpod")

# Health reads while a job waits IN_QUEUE: at most this often per stage, each bounded.
_HEALTH_MAX_AGE_S = 15.0
_HEALTH_TIMEOUT_S = 2.0


class StuckInQueue(Exception):
    """Still IN_QUEUE at its queue deadline, or its status unreadable until then."""

    def __init__(self, job_id: str, why: str | None = None) -> None:
        super().__init__(job_id)
        self.why = why


@dataclass
class Watch:
    """What this render observed of one job attempt: deadlines, re-attachment, cost estimates."""

    job_id: str
    since: float  # when this render started waiting on it (its submission, or the re-attach)
    running_since: float | None = None
    last_state: str | None = None
    alive_seen: bool = False
    reported: JobState | None = None

    def observe(self, state: str, now: float) -> None:
        self.last_state = state
        self.alive_seen = True
        if state != "IN_QUEUE" and self.running_since is None:
            self.running_since = now

    def running_s(self, now: float) -> float:
        return 0.0 if self.running_since is None else max(0.0, now - self.running_since)

    def deadline(self, config: RunPodConfig) -> float:
        """When waiting on this job must end: the queue deadline, then the execution one."""
        if self.running_since is None:
            return self.since + config.queue_timeout_s
        # The endpoint enforces executionTimeout itself; this backstop allows for a lagging one.
        return self.running_since + config.execution_timeout_s * 1.1 + 5.0


@dataclass
class _LoopEvents:
    learned: dict[Stage, asyncio.Event] = field(default_factory=dict)
    health_locks: dict[Stage, asyncio.Lock] = field(default_factory=dict)


class Following:
    """Follows jobs (a part of :class:`~videokit.backends.runpod.jobs.JobPolicy`)."""

    client: RunPodClient
    config: RunPodConfig
    clock: Callable[[], float]
    sleep: Callable[[float], Awaitable[None]]
    expected_s: dict[Stage, float]
    expected_exec_s: dict[Stage, float]
    health_seen: dict[Stage, tuple[float, EndpointHealth | None]]
    _loops: dict[asyncio.AbstractEventLoop, _LoopEvents]

    def _events(self) -> _LoopEvents:
        loop = asyncio.get_running_loop()
        for old in [other for other in self._loops if other.is_closed()]:
            del self._loops[old]
        return self._loops.setdefault(loop, _LoopEvents())

    async def follow(
        self, stage: Stage, handle: JobHandle, watch: Watch, ctx: JobContext
    ) -> JobStatus:
        """Follow a job to its end, within the queue and execution deadlines.

        A job that waits too long in the queue, or whose status cannot be read before its queue
        deadline, is :class:`StuckInQueue` (the caller cancels it and, once that is confirmed,
        submits again). One that runs past the execution deadline raises JobTimeoutError.
        """
        cfg = self.config
        informed = stage in self.expected_s

        async def observe(status: JobStatus, chunks: list[Any]) -> None:
            for chunk in chunks:
                message = chunk.get("message")
                ctx.on_progress(
                    min(1.0, max(0.0, float(chunk["progress"]))),
                    str(message) if message is not None else None,
                )
            if status.done:
                return
            now = self.clock()
            first_run = watch.running_since is None and status.state != "IN_QUEUE"
            watch.observe(status.state, now)
            elapsed = now - watch.since
            if status.state == "IN_QUEUE":
                if elapsed > cfg.queue_timeout_s:
                    raise StuckInQueue(watch.job_id)
                if ctx.watches_status:  # a health read only someone who listens needs
                    self._report(watch, ctx, await self._queue_state(stage, handle.endpoint))
                return
            self._report(watch, ctx, "running")
            if first_run:
                ctx.on_progress(0.0, "running")
            expected = self.expected_s.get(stage)
            if expected and elapsed < expected:
                ctx.on_progress(min(0.99, elapsed / expected), None)
            if now > watch.deadline(cfg):
                raise JobTimeoutError(
                    f"the {stage} job {watch.job_id} is still running after "
                    f"{cfg.execution_timeout_s:g} s",
                    job_id=watch.job_id,
                    hint="raise VIDEOKIT_EXECUTION_TIMEOUT (execution_timeout in "
                    "videokit.toml), or lower frames/resolution",
                )

        async def nap(seconds: float) -> bool:
            """Sleep; a job polling blind wakes early when a sibling teaches us the job length
            (then the schedule decides again, from the budget: never a busy loop)."""
            nonlocal informed
            if informed:
                await self.sleep(seconds)
                return False
            learned = self._events().learned.setdefault(stage, asyncio.Event())
            if learned.is_set():
                informed = True
                return True
            sleeper = asyncio.ensure_future(self.sleep(seconds))
            wake = asyncio.ensure_future(learned.wait())
            try:
                finished, _ = await asyncio.wait(
                    {sleeper, wake}, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                sleeper.cancel()
                wake.cancel()
            for task in finished:
                task.result()
            if sleeper in finished:
                return False
            informed = True
            return True

        def expected() -> float | None:
            return self.expected_s.get(stage) if informed else None

        def read_deadline() -> float:
            return max(watch.deadline(cfg), self.clock() + 5.0)

        def phase() -> str:
            return "queue" if watch.running_since is None else "execution"

        handle.started = watch.since
        try:
            return await handle.wait(
                timeout_s=None,
                observer=observe,
                expected_s=expected,
                nap=nap,
                deadline=read_deadline,
                phase=phase,
            )
        except EndpointError as exc:
            if exc.job_id == watch.job_id and watch.running_since is None:
                # Unreadable until its queue deadline: treat it as stuck there (cancel, then
                # submit again once the cancel is confirmed), not as the end of the scene.
                why = (
                    f"status unreadable for the whole queue deadline of "
                    f"{cfg.queue_timeout_s:g} s ({exc.message})"
                )
                log.info("job %s: %s", watch.job_id, why)
                raise StuckInQueue(watch.job_id, why) from exc
            raise

    def _report(self, watch: Watch, ctx: JobContext, state: JobState) -> None:
        if state != watch.reported:
            watch.reported = state
            ctx.on_status(state)

    async def _queue_state(self, stage: Stage, endpoint: Endpoint) -> JobState:
        """Queued or cold start, from the endpoint's health (read at most every 15 s per stage,
        one read at a time; a failed read leaves the job ``queued``)."""
        lock = self._events().health_locks.setdefault(stage, asyncio.Lock())
        async with lock:
            seen = self.health_seen.get(stage)
            if seen is None or self.clock() - seen[0] >= _HEALTH_MAX_AGE_S:
                health: EndpointHealth | None
                try:
                    health = await self.client.health(endpoint, stage, timeout_s=_HEALTH_TIMEOUT_S)
                except EndpointError as exc:
                    log.debug("health of the %s endpoint unreadable: %s", stage, exc.message)
                    health = None
                seen = self.health_seen[stage] = (self.clock(), health)
        return state_in_queue(seen[1])

    def learn(self, stage: Stage, execution_ms: int, delay_ms: int) -> None:
        seconds = (execution_ms + delay_ms) / 1000
        previous = self.expected_s.get(stage)
        self.expected_s[stage] = seconds if previous is None else 0.7 * previous + 0.3 * seconds
        run = execution_ms / 1000
        known = self.expected_exec_s.get(stage)
        self.expected_exec_s[stage] = run if known is None else 0.7 * known + 0.3 * run
        if previous is None:
            self._events().learned.setdefault(stage, asyncio.Event()).set()
