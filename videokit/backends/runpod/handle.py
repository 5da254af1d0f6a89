"""A handle on one remote job: read its status, follow its stream, cancel it, wait for it.

Get one from :meth:`RunPodBackend.submit <videokit.backends.runpod.RunPodBackend.submit>` (a new
job) or :meth:`~videokit.backends.runpod.RunPodBackend.attach` (a job id from another process or
an earlier run). Modelled on fal_client's request handle and runpod-python's ``Job``. Reads follow
the polling schedule of :mod:`~videokit.backends.runpod.schedule`, so a handle stays within the
request budget however long its job runs; every wait has a deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from videokit.backends.base import Stage
from videokit.backends.runpod.client import RunPodClient
from videokit.backends.runpod.config import Endpoint
from videokit.backends.runpod.schedule import PollBudget, PollSchedule
from videokit.backends.runpod.wire import JobStatus, is_progress
from videokit.errors import JobTimeoutError

__all__ = ["JobHandle", "Observer"]

# Sees every status read while following a job (and may raise to stop following it), with the
# progress chunks a streaming endpoint sent since the previous read.
Observer = Callable[[JobStatus, list[Any]], Awaitable[None]]
# Sleeps up to the given seconds; True when woken early (then the next delay is recomputed).
Nap = Callable[[float], Awaitable[bool]]


class JobHandle:
    """One job on one endpoint. ``job_id`` is all another process needs to :meth:`attach`."""

    def __init__(
        self,
        client: RunPodClient,
        endpoint: Endpoint,
        stage: Stage,
        job_id: str,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        budget: PollBudget | None = None,
    ) -> None:
        self.client = client
        self.endpoint = endpoint
        self.stage = stage
        self.job_id = job_id
        self.started = client.clock()
        self._sleep = sleep
        self.budget = budget or PollBudget(
            rate_per_s=client.config.poll_rate_per_s,
            late_rate_per_s=client.config.poll_late_rate_per_s,
            burst=client.config.poll_burst,
            min_interval_s=client.config.poll_min_s,
            max_interval_s=client.config.poll_max_s,
        )

    def __repr__(self) -> str:
        return f"JobHandle({self.endpoint.label!r}, {self.job_id!r})"

    async def status(self, *, timeout_s: float = 30.0) -> JobStatus:
        """One ``GET status/{id}`` (retried within ``timeout_s``). A job the endpoint no longer
        knows raises :class:`~videokit.backends.runpod.client.Vanished`."""
        body = await self.client.read(
            "status", self.endpoint, self.job_id, deadline=self.client.clock() + timeout_s
        )
        return JobStatus.parse(body, self.job_id)

    async def read(
        self, *, deadline: float | None, phase: str = "queue"
    ) -> tuple[JobStatus, list[Any]]:
        """One read as the endpoint is configured: ``stream/{id}`` (with the progress chunks
        since the last read; at the end, one ``status`` read for the output and timings) or
        ``status/{id}``."""
        if not self.endpoint.stream:
            body = await self.client.read(
                "status", self.endpoint, self.job_id, deadline=deadline, phase=phase
            )
            return JobStatus.parse(body, self.job_id), []
        body, chunks = await self.client.read_stream(
            self.endpoint, self.job_id, deadline=deadline, phase=phase
        )
        status = JobStatus.parse(body, self.job_id)
        if status.done:
            final = await self.client.read(
                "status", self.endpoint, self.job_id, deadline=deadline, phase=phase
            )
            status = JobStatus.parse(final, self.job_id)
        return status, [c for c in chunks if is_progress(c)]

    async def cancel(self) -> JobStatus | None:
        """``POST cancel/{id}`` and one status read, each within a couple of seconds: the job's
        status after the cancel if it could be read (None when it could not, or the job is
        gone). Safe to call on a job that has ended."""
        _, _, final = await self.client.cancel_and_read(self.endpoint, self.job_id)
        return JobStatus.parse(final, self.job_id) if final is not None else None

    async def stream(self, *, timeout_s: float = 3600.0) -> AsyncIterator[Any]:
        """Yield the progress chunks a generator handler sends, then return when the job ends
        (read its result with :meth:`status`). Needs an endpoint with ``stream=True``."""
        queue: asyncio.Queue[Any] = asyncio.Queue()
        done = asyncio.Event()

        async def observe(status: JobStatus, chunks: list[Any]) -> None:
            for chunk in chunks:
                queue.put_nowait(chunk)

        async def follow() -> None:
            try:
                await self.wait(timeout_s=timeout_s, observer=observe)
            finally:
                done.set()

        task = asyncio.ensure_future(follow())
        try:
            while not (done.is_set() and queue.empty()):
                getter = asyncio.ensure_future(queue.get())
                ender = asyncio.ensure_future(done.wait())
                finished, _ = await asyncio.wait(
                    {getter, ender}, return_when=asyncio.FIRST_COMPLETED
                )
                ender.cancel()
                if getter in finished:
                    yield getter.result()
                else:
                    getter.cancel()
            task.result()
        finally:
            task.cancel()

    async def wait(
        self,
        *,
        timeout_s: float | None = 3600.0,
        observer: Observer | None = None,
        expected_s: Callable[[], float | None] = lambda: None,
        nap: Nap | None = None,
        deadline: Callable[[], float | None] | None = None,
        phase: Callable[[], str] = lambda: "queue",
    ) -> JobStatus:
        """Follow the job until it ends and return its final status; raises JobTimeoutError
        after ``timeout_s`` (the job is left as it is: cancel it if you no longer want it).

        The keyword hooks are how the backend's job policy follows a job with the same loop:
        ``expected_s`` (how long such a job should take, for the schedule), ``observer`` (sees
        each read, may raise), ``nap`` (a sleep that may end early) and ``deadline`` (of each
        read's retries).
        """
        clock = self.client.clock
        give_up = None if timeout_s is None else clock() + timeout_s
        schedule = PollSchedule(self.budget)
        sleep = nap or self._nap
        expected = expected_s()
        if expected is not None:
            await self._until_due(schedule, expected_s, sleep, give_up)
        while True:
            read_deadline = deadline() if deadline is not None else give_up
            status, chunks = await self.read(deadline=read_deadline, phase=phase())
            now = clock()
            schedule.spent(now, elapsed=now - self.started, expected=expected_s())
            if observer is not None:
                await observer(status, chunks)
            if status.done:
                return status
            await self._until_due(schedule, expected_s, sleep, give_up)

    async def _until_due(
        self,
        schedule: PollSchedule,
        expected_s: Callable[[], float | None],
        sleep: Nap,
        give_up: float | None,
    ) -> None:
        clock = self.client.clock
        while True:
            now = clock()
            if give_up is not None and now >= give_up:
                raise JobTimeoutError(
                    f"gave up waiting for job {self.job_id} on {self.endpoint.label}",
                    job_id=self.job_id,
                    hint="it may still be running: wait again, or cancel it",
                )
            delay = schedule.delay(now, elapsed=now - self.started, expected=expected_s())
            if give_up is not None:
                delay = min(delay, max(0.0, give_up - now))
            if not await sleep(delay):
                return

    async def _nap(self, seconds: float) -> bool:
        await self._sleep(seconds)
        return False
