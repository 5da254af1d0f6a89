"""The one thread that runs every pipeline call of an engine, and cancelling what runs on it.

One dedicated thread, not ``asyncio.to_thread``: torch keeps one intra-op thread pool per
driving thread, and a second Python thread driving torch gets a second OpenMP team that spins
against the first (on a 2-core CPU a tiny Wan job took 10x longer from alternating threads).
Jobs queue on it in order, so an engine needs no lock.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from videokit.worker.common import PipelineCancelled

__all__ = ["DEFAULT_CANCEL_WAIT_S", "JobThread"]

_T = TypeVar("_T")

#: How long a cancelled job waits for the pipeline to reach its next step boundary. One A14B
#: step at 720p is ~15 s on an H100, and a VAE decode in progress cannot be interrupted.
DEFAULT_CANCEL_WAIT_S = 120.0


class JobThread:
    """Runs work on one named thread, in order; a cancelled job stops at its next step.

    ``work`` receives a :class:`threading.Event` that is set when its caller is cancelled or the
    thread is closed; the engine's step callback checks it (``raise_if_cancelled``).
    """

    def __init__(self, name: str, *, cancel_wait_s: float = DEFAULT_CANCEL_WAIT_S) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.cancel_wait_s = cancel_wait_s
        self._running: threading.Event | None = None  # the cancel event of the job on the thread
        self._lock = threading.Lock()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    async def run(self, work: Callable[[threading.Event], _T]) -> _T:
        """Run ``work`` on the thread and return its result; cancellation stops it, then re-raises.

        A job still waiting for the thread is dropped at once. A running one stops at its next
        step; the wait for that is bounded by ``cancel_wait_s``, so that a job reported
        cancelled has (almost always) released the GPU, and a stuck one cannot hang the worker.
        """
        cancel = threading.Event()
        future = self._submit(lambda: self._tracked(work, cancel))
        wrapped = asyncio.wrap_future(future)
        try:
            return await asyncio.shield(wrapped)
        except asyncio.CancelledError:
            cancel.set()
            if not future.cancel():  # already running: it stops at its next step
                done, _ = await asyncio.wait({wrapped}, timeout=self.cancel_wait_s)
                if not done:
                    wrapped.add_done_callback(_retrieve)
            raise
        except PipelineCancelled:
            # Stopped from elsewhere (close): to the caller, a cancellation all the same.
            raise asyncio.CancelledError from None

    def call(self, work: Callable[[threading.Event], _T]) -> _T:
        """Run ``work`` on the thread and block until it returns (benchmarks, load-time work)."""
        cancel = threading.Event()
        return self._submit(lambda: self._tracked(work, cancel)).result()

    async def wait_idle(self) -> None:
        """Return once every call queued so far has ended (a cancelled job's included)."""
        if not self._closed:
            await asyncio.wrap_future(self._executor.submit(lambda: None))

    def close(self, release: Callable[[], None]) -> None:
        """Refuse new work, stop the running job at its next step, drop queued ones, then run
        ``release`` on the thread (so it never races a pipeline call) and end the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._running is not None:
                self._running.set()
        self._executor.submit(release).result()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _submit(self, fn: Callable[[], _T]) -> Future[_T]:
        with self._lock:
            if self._closed:
                raise RuntimeError("this engine was closed")
            return self._executor.submit(fn)

    def _tracked(self, work: Callable[[threading.Event], _T], cancel: threading.Event) -> _T:
        with self._lock:
            if self._closed:
                raise PipelineCancelled
            self._running = cancel
        try:
            return work(cancel)
        finally:
            with self._lock:
                self._running = None


def _retrieve(future: asyncio.Future[Any]) -> None:
    # Collect the thread's exception (the expected PipelineCancelled, or a real one) so asyncio
    # does not log "exception was never retrieved" for a job whose caller is gone.
    if not future.cancelled():
        future.exception()
