"""Ctrl-C while a render runs: the first cancels its jobs; a second does not cut that short.

``asyncio.run`` cancels the main task on the first Ctrl-C, but raises KeyboardInterrupt on the
second wherever the program is, which can abort the cancel requests in flight: jobs left running
(and billing) behind a message that says they were cancelled. Here the second Ctrl-C only says
that cancelling is under way (it takes a few seconds at most: each cancel has a short deadline),
and a third stops at once, for whoever really means it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine
from contextlib import suppress
from types import FrameType
from typing import Any, TypeVar

__all__ = ["run_interruptibly"]

T = TypeVar("T")

_SECOND = (
    b"videokit: cancelling the running jobs (a few seconds); press Ctrl-C again to stop at once "
    b"and leave them running\n"
)


def run_interruptibly(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """``asyncio.run(main())`` with the Ctrl-C rule above (in the main thread, where Ctrl-C has
    Python's default handler; elsewhere plain ``asyncio.run``). An interrupted run raises
    KeyboardInterrupt, as ``asyncio.run`` does."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        return asyncio.run(main())
    presses = 0
    task: asyncio.Task[T] | None = None

    with asyncio.Runner() as runner:
        loop = runner.get_loop()

        def on_sigint(signum: int, frame: FrameType | None) -> None:
            nonlocal presses
            presses += 1
            if presses == 1 and task is not None and not task.done():
                loop.call_soon_threadsafe(task.cancel)
                return
            if presses == 2 and task is not None and not task.done():
                with suppress(OSError, ValueError):  # not print(): we may be inside a write
                    os.write(sys.stderr.fileno(), _SECOND)
                return
            raise KeyboardInterrupt

        async def root() -> T:
            nonlocal task
            task = asyncio.current_task()  # type: ignore[assignment,unused-ignore]
            return await main()

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            return runner.run(root())
        except asyncio.CancelledError:
            if presses:
                raise KeyboardInterrupt from None
            raise
        finally:
            signal.signal(signal.SIGINT, previous)
