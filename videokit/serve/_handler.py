"""Calling a worker handler the way ``runpod.serverless.start({"handler": h})`` calls it.

Sync function, async function, generator or async generator; a returned ``{"error": ...}``, an
error chunk or a raised exception fails the job. One deliberate difference: sync handlers run in
a worker thread (one per slot) instead of on the event loop, so the HTTP API stays responsive.
:func:`call_handler` runs one attempt and reports how it ended through callbacks; it never
touches the job table itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import json
import queue
import socket
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any, Literal

from videokit.serve._job import JobStatus, Outcome

__all__ = [
    "Handler",
    "HandlerKind",
    "SlotThread",
    "ThreadWork",
    "call_handler",
    "error_blob",
    "handler_kind",
    "outcome_of",
]

Handler = Callable[[dict[str, Any]], Any]
"""Anything ``runpod.serverless.start`` accepts as ``handler``."""

HandlerKind = Literal["sync", "async", "generator", "async_generator"]

_END = object()


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


def outcome_of(result: Any) -> Outcome:
    """What a handler's return value means for its job."""
    # RunPod pops "error" (and "refresh_worker") from a returned dict; a truthy error fails
    # the job and whatever is left is still reported as output.
    if isinstance(result, dict) and ("error" in result or "refresh_worker" in result):
        rest = {k: v for k, v in result.items() if k not in ("error", "refresh_worker")}
        if result.get("error"):
            return Outcome(
                JobStatus.FAILED,
                error=_error_text(result["error"]),
                has_output=bool(rest),
                output=rest or None,
            )
        result = rest
    problem = _json_problem(result)
    if problem is not None:
        return Outcome(JobStatus.FAILED, error=problem)
    return Outcome(JobStatus.COMPLETED, has_output=True, output=result)


_Call = tuple[Callable[..., Any], tuple[Any, ...], "concurrent.futures.Future[Any]"]


class SlotThread:
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


class ThreadWork:
    """What a sync handler is doing in its thread, so the slot can wait for it after a cancel.

    A thread cannot be interrupted; after a cancel or timeout its result is discarded, but the
    slot stays busy until the thread returns. On a GPU that is the truth: the old job still holds
    the device, and starting the next one beside it would invite an out-of-memory error.
    """

    def __init__(self, executor: SlotThread) -> None:
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


async def call_handler(
    handler: Handler,
    kind: HandlerKind,
    request: dict[str, Any],
    work: ThreadWork | None,
    *,
    worker_id: str | None,
    settle: Callable[[Outcome], None],
    on_chunk: Callable[[Any], None],
) -> None:
    """Run one attempt of a job: ``settle`` gets its outcome, ``on_chunk`` each streamed chunk.

    ``work`` is the slot's thread, needed by sync handlers and sync generators. ``settle`` may be
    called after the attempt was cancelled or timed out; the caller decides whether it counts.
    """
    try:
        if kind in ("generator", "async_generator"):
            await _call_generator(handler, kind, request, work, settle=settle, on_chunk=on_chunk)
            return
        if kind == "async":
            result = await handler(request)
        else:
            assert work is not None  # sync handlers always get a slot thread
            result = await work.call(handler, request)
            if inspect.isawaitable(result):
                result = await result
    except Exception as err:
        settle(Outcome(JobStatus.FAILED, error=error_blob(err, worker_id)))
        return
    settle(outcome_of(result))


async def _call_generator(
    handler: Handler,
    kind: HandlerKind,
    request: dict[str, Any],
    work: ThreadWork | None,
    *,
    settle: Callable[[Outcome], None],
    on_chunk: Callable[[Any], None],
) -> None:
    chunks: list[Any] = []

    def emit(item: Any) -> bool:
        """Record one chunk; True when it ends the job (an error chunk, like RunPod)."""
        if isinstance(item, dict) and item.get("error"):
            settle(Outcome(JobStatus.FAILED, error=_error_text(item["error"])))
            return True
        problem = _json_problem(item)
        if problem is not None:
            settle(Outcome(JobStatus.FAILED, error=problem))
            return True
        chunks.append(item)
        on_chunk(item)
        return False

    if kind == "async_generator":
        agen = handler(request)
        try:
            async for item in agen:
                if emit(item):
                    break
        finally:
            # Runs the handler's finally now rather than whenever the generator is GC'd.
            await agen.aclose()
    else:
        assert work is not None
        gen = handler(request)
        work.generator = gen
        while True:
            item = await work.call(next, gen, _END)
            if item is _END or emit(item):
                break
    # Aggregated output, like return_aggregate_stream=True (a no-op after an error chunk: the
    # job is final already).
    settle(Outcome(JobStatus.COMPLETED, has_output=True, output=chunks))
