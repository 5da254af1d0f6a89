"""When and how long to retry: one predicate and one wait policy for every network call.

Retried: transport errors (connection refused/reset, dropped connections, timeouts) and HTTP 408,
425, 429 and 5xx. Not retried: other 4xx (bad request, unauthorized, not found): retrying cannot fix
them. The wait honours ``Retry-After`` (seconds or an HTTP date) when the server sends one, and is
otherwise exponential backoff with full jitter, so many clients do not retry in lockstep.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

import httpx
import tenacity

__all__ = [
    "RETRYABLE_STATUS",
    "RetryPolicy",
    "is_retryable",
    "retry_after_seconds",
]

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
T = TypeVar("T")


def is_retryable(exc: BaseException) -> bool:
    """True for failures that a later attempt of the same request may not hit."""
    if isinstance(exc, httpx.TransportError):
        return True  # includes timeouts, refused/reset connections and dropped responses
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        return status in RETRYABLE_STATUS or status >= 500
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
    """Bounded retries with backoff and jitter; sleeping and randomness are injectable for tests."""

    def __init__(
        self,
        *,
        attempts: int = 6,
        base_s: float = 0.25,
        cap_s: float = 20.0,
        max_retry_after_s: float = 60.0,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.attempts = attempts
        self.base_s = base_s
        self.cap_s = cap_s
        self.max_retry_after_s = max_retry_after_s
        self._sleep = sleep
        self._rng = rng or random.Random()

    def wait_seconds(self, attempt: int, exc: BaseException | None) -> float:
        """How long to wait before retry number ``attempt`` (1-based) after ``exc``."""
        hinted = retry_after_seconds(exc) if exc is not None else None
        if hinted is not None:
            # A small jitter on top, so clients told the same Retry-After do not collide again.
            return min(hinted, self.max_retry_after_s) + self._rng.uniform(0, self.base_s)
        ceiling = min(self.cap_s, self.base_s * 2 ** (attempt - 1))
        return self._rng.uniform(0, ceiling)

    def _tenacity_wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        return self.wait_seconds(state.attempt_number, exc)

    async def call(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        on_retry: Callable[[int, BaseException, float], None] | None = None,
    ) -> T:
        """Run ``fn`` until it succeeds, fails for good, or the attempts run out (then re-raise)."""

        def before_sleep(state: tenacity.RetryCallState) -> None:
            if on_retry is not None and state.outcome is not None:
                exc = state.outcome.exception()
                if exc is not None and state.next_action is not None:
                    on_retry(state.attempt_number, exc, state.next_action.sleep)

        kwargs: dict[str, object] = {}
        if self._sleep is not None:
            kwargs["sleep"] = self._sleep
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=self._tenacity_wait,
            retry=tenacity.retry_if_exception(is_retryable),
            before_sleep=before_sleep,
            reraise=True,
            **kwargs,  # type: ignore[arg-type]
        )
        return await retrying(fn)
