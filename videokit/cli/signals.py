"""SIGTERM stops a command the way Ctrl-C does: running jobs cancelled, then exit 143.

``timeout``, ``docker stop`` and systemd send SIGTERM, which by default kills Python at once and
leaves a render's remote jobs running (and billing). Under :func:`sigterm_as_interrupt` the first
SIGTERM goes to whatever handles SIGINT then: inside ``asyncio.run`` asyncio's handler, which
cancels the main task (the render cancels its jobs), elsewhere Python's (KeyboardInterrupt); with
SIGINT ignored, a KeyboardInterrupt raised between the event loop's callbacks. The command reports
the interrupt and exits with :func:`interrupt_exit_code`. A later SIGTERM does not cut that
cleanup short (a second Ctrl-C can: asyncio raises KeyboardInterrupt mid-cancel); it only says
so, and Ctrl-C or SIGKILL still stop at once.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from types import FrameType

__all__ = ["interrupt_exit_code", "sigterm_as_interrupt"]

_AGAIN = b"videokit: already stopping (cancelling running jobs); Ctrl-C or SIGKILL stops at once\n"


class _State:
    # The first signal this module saw interrupt the command; None when only Ctrl-C did (its
    # handler, asyncio's or Python's, runs without us).
    first: int | None = None


_state = _State()


def interrupt_exit_code() -> int:
    """128 + the signal that interrupted the command: 143 after SIGTERM, 130 after Ctrl-C."""
    return 128 + (_state.first if _state.first is not None else signal.SIGINT)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    if _state.first is not None:
        # Not print(): this may run while the main thread is inside a write to stderr.
        with suppress(OSError, ValueError):
            os.write(sys.stderr.fileno(), _AGAIN)
        return
    _state.first = signum
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
        return
    # SIGINT ignored (a background job of a script), so asyncio did not take it over: still
    # stop. In a running event loop, raise from a callback of the loop rather than here, in the
    # middle of whatever task was running: ``asyncio.run`` then cancels every task and waits for
    # them (the render cancels its jobs), as it does after Ctrl-C.
    if "asyncio" in sys.modules:  # not imported yet: no loop can be running
        import asyncio

        with suppress(RuntimeError):  # no running loop
            asyncio.get_running_loop().call_soon_threadsafe(_interrupt)
            return
    signal.default_int_handler(signal.SIGINT, frame)


def _interrupt() -> None:
    raise KeyboardInterrupt


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM interrupts like Ctrl-C (see the module docstring).

    Only in the main thread (the only one that may set handlers), and only where SIGTERM has its
    default action: a process told to ignore SIGTERM keeps ignoring it. Afterwards SIGTERM has
    its default action again.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return
    _state.first = None
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
