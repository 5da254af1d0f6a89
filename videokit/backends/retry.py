"""When and how long to retry: one predicate and one wait policy for every network call.

Retried: transport errors (connection refused/reset, dropped connections, timeouts) and HTTP 408,
425, 429 and 5xx. Not retried: other 4xx (bad request, unauthorized, not found): retrying cannot fix
them. The wait honours ``Retry-After`` (seconds or an HTTP date) when the server sends one, and is
otherwise exponential backoff with full jitter, so many clients do not retry in lockstep.

A call is bounded by a number of attempts, by a deadline, or by both. Requests that are safe to
repeat (reading a job's status) are bounded by the deadline of what they serve (the job's own queue
or execution deadline), not by a count: a 503 storm longer than a few retries must not make the
client abandon a job that is still running and billing. Requests that are not (``run`` creates a
job each time it gets through) keep a count. With a deadline, no wait goes past it, whatever
``Retry-After`` asks for.

Async code calls :meth:`RetryPolicy.call`, sync code :meth:`RetryPolicy.call_sync`; both are the
same tenacity loop built by one method, so the two cannot drift apart.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import httpx
import tenacity

__all__ = [
    "RETRYABLE_STATUS",
    "RetryPolicy",
    "is_retryable",
    "is_retryable_status",
    "retry_after_seconds",
]

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
T = TypeVar("T")
OnRetry = Callable[[int, BaseException, float], None]


def is_retryable_status(status: int) -> bool:
    """True for HTTP statuses that a later attempt of the same request may not get."""
    return status in RETRYABLE_STATUS or status >= 500


def is_retryable(exc: BaseException) -> bool:
    """True for failures that a later attempt of the same request may not hit."""
    if isinstance(exc, httpx.TransportError):
        return True  # includes timeouts, refused/reset connections and dropped responses
    if isinstance(exc, httpx.HTTPStatusError):
        return is_retryable_status(exc.response.status_code)
    return False


def retry_after_seconds(
    exc: BaseException, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> float | None:
    """The server's ``Retry-After`` for this failure, in seconds, if it sent a usable one."""
    if not isinstance(exc, httpx.HTTPStatusError):
        return None
    value = exc.response.headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now()).total_seconds())


class RetryPolicy:
    """Bounded retries with backoff and jitter; sleeping, time and randomness are injectable.

    ``attempts`` bounds calls made without a deadline. ``max_retry_after_s`` caps a server's
    ``Retry-After`` for those calls too; a call with a deadline is capped by the deadline instead.
    ``clock`` measures deadlines (callers may pass their own per call, e.g. a backend whose clock
    is injected).
    """

    def __init__(
        self,
        *,
        attempts: int = 6,
        base_s: float = 0.25,
        cap_s: float = 20.0,
        max_retry_after_s: float = 60.0,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        sleep_sync: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.attempts = attempts
        self.base_s = base_s
        self.cap_s = cap_s
        self.max_retry_after_s = max_retry_after_s
        self._sleep = sleep
        self._sleep_sync = sleep_sync
        self.clock = clock
        self._rng = rng or random.Random()

    def wait_seconds(
        self, attempt: int, exc: BaseException | None, *, limit: float | None = None
    ) -> float:
        """How long to wait before retry number ``attempt`` (1-based) after ``exc``.

        ``limit`` is the time left before the call's deadline: no wait is longer.
        """
        hinted = retry_after_seconds(exc) if exc is not None else None
        if hinted is not None:
            cap = self.max_retry_after_s if limit is None else limit
            # A small jitter on top, so clients told the same Retry-After do not collide again.
            wait = min(hinted, cap) + self._rng.uniform(0, self.base_s)
        else:
            ceiling = min(self.cap_s, self.base_s * 2 ** (attempt - 1))
            wait = self._rng.uniform(0, ceiling)
        return wait if limit is None else max(0.0, min(wait, limit))

    def _retrying(
        self,
        cls: type[tenacity.BaseRetrying],
        *,
        on_retry: OnRetry | None,
        attempts: int | None,
        deadline: float | None,
        clock: Callable[[], float] | None,
        max_wait_s: float | None,
        sleep: Any,
    ) -> Any:
        now = clock or self.clock
        # A deadline alone means "until the deadline"; neither means the policy's count.
        limit = attempts
        if limit is None and deadline is None:
            limit = self.attempts

        def stop(state: tenacity.RetryCallState) -> bool:
            if limit is not None and state.attempt_number >= limit:
                return True
            return deadline is not None and now() >= deadline

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome is not None else None
            left = None if deadline is None else max(0.0, deadline - now())
            if max_wait_s is not None:
                left = max_wait_s if left is None else min(left, max_wait_s)
            return self.wait_seconds(state.attempt_number, exc, limit=left)

        def before_sleep(state: tenacity.RetryCallState) -> None:
            if on_retry is not None and state.outcome is not None:
                exc = state.outcome.exception()
                if exc is not None and state.next_action is not None:
                    on_retry(state.attempt_number, exc, state.next_action.sleep)

        kwargs: dict[str, Any] = {"sleep": sleep} if sleep is not None else {}
        return cls(
            stop=stop,
            wait=wait,
            retry=tenacity.retry_if_exception(is_retryable),
            before_sleep=before_sleep,
            reraise=True,
            **kwargs,
        )

    async def call(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        on_retry: OnRetry | None = None,
        attempts: int | None = None,
        deadline: float | None = None,
        clock: Callable[[], float] | None = None,
        max_wait_s: float | None = None,
    ) -> T:
        """Run ``fn`` until it succeeds, fails for good, or the attempts or the time run out
        (then re-raise its last error). ``deadline`` is a time on ``clock``; ``max_wait_s``
        caps each wait (a ``Retry-After`` included) without ending the call."""
        retrying = self._retrying(
            tenacity.AsyncRetrying,
            on_retry=on_retry,
            attempts=attempts,
            deadline=deadline,
            clock=clock,
            max_wait_s=max_wait_s,
            sleep=self._sleep,
        )
        result: T = await retrying(fn)
        return result

    def call_sync(
        self,
        fn: Callable[[], T],
        *,
        on_retry: OnRetry | None = None,
        attempts: int | None = None,
        deadline: float | None = None,
        clock: Callable[[], float] | None = None,
        max_wait_s: float | None = None,
    ) -> T:
        """:meth:`call` for synchronous code (same predicate, waits and bounds)."""
        retrying = self._retrying(
            tenacity.Retrying,
            on_retry=on_retry,
            attempts=attempts,
            deadline=deadline,
            clock=clock,
            max_wait_s=max_wait_s,
            sleep=self._sleep_sync,
        )
        result: T = retrying(fn)
        return result
