"""The one retry predicate and wait policy that every network call goes through."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from videokit.backends.retry import RetryPolicy, is_retryable, retry_after_seconds


def status_error(code: int, headers: dict[str, str] | None = None) -> httpx.HTTPStatusError:
    request = httpx.Request("GET", "https://api.example/v2/x/status/1")
    response = httpx.Response(code, headers=headers, request=request)
    return httpx.HTTPStatusError(f"HTTP {code}", request=request, response=response)


@pytest.mark.parametrize("code", [408, 425, 429, 500, 502, 503, 504, 599])
def test_retryable_statuses(code: int) -> None:
    assert is_retryable(status_error(code))


@pytest.mark.parametrize("code", [400, 401, 403, 404, 409, 413, 422])
def test_client_errors_are_final(code: int) -> None:
    assert not is_retryable(status_error(code))


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        httpx.RemoteProtocolError("dropped"),
        httpx.ReadError("reset"),
        httpx.PoolTimeout("busy"),
    ],
)
def test_transport_errors_are_retryable(exc: Exception) -> None:
    assert is_retryable(exc)


def test_other_exceptions_are_not_retried() -> None:
    assert not is_retryable(ValueError("bad input"))
    assert not is_retryable(KeyError("x"))


def test_retry_after_seconds_and_http_date() -> None:
    assert retry_after_seconds(status_error(429, {"Retry-After": "3"})) == 3.0
    now = datetime(2026, 1, 1, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=7), usegmt=True)
    assert retry_after_seconds(status_error(503, {"Retry-After": later}), now=lambda: now) == 7.0
    assert retry_after_seconds(status_error(429, {"Retry-After": "soon"})) is None
    assert retry_after_seconds(status_error(429)) is None
    assert retry_after_seconds(httpx.ConnectError("x")) is None


def test_wait_honours_retry_after_and_otherwise_backs_off_with_jitter() -> None:
    policy = RetryPolicy(base_s=0.5, cap_s=4.0, rng=random.Random(1))
    hinted = policy.wait_seconds(1, status_error(429, {"Retry-After": "2"}))
    assert 2.0 <= hinted <= 2.5
    waits = [policy.wait_seconds(n, httpx.ConnectError("x")) for n in range(1, 9)]
    ceilings = [min(4.0, 0.5 * 2 ** (n - 1)) for n in range(1, 9)]
    assert all(0 <= w <= c for w, c in zip(waits, ceilings, strict=True))
    assert len(set(waits)) == len(waits)  # jitter: no two equal
    capped = RetryPolicy(max_retry_after_s=5.0, rng=random.Random(1))
    assert capped.wait_seconds(1, status_error(429, {"Retry-After": "3600"})) <= 5.25


def test_call_retries_transient_failures_then_succeeds() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    outcomes: list[Exception | str] = [
        httpx.ConnectError("refused"),
        status_error(503),
        status_error(429, {"Retry-After": "1"}),
        "ok",
    ]
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        outcome = outcomes[calls]
        calls += 1
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    retried: list[int] = []
    policy = RetryPolicy(attempts=5, sleep=sleep, rng=random.Random(0))
    result = asyncio.run(policy.call(flaky, on_retry=lambda n, exc, wait: retried.append(n)))
    assert result == "ok" and calls == 4
    assert retried == [1, 2, 3]
    assert len(slept) == 3 and slept[2] >= 1.0  # the last wait honoured Retry-After


def test_call_gives_up_after_the_attempts_and_reraises() -> None:
    async def sleep(seconds: float) -> None:
        return None

    calls = 0

    async def down() -> None:
        nonlocal calls
        calls += 1
        raise status_error(502)

    with pytest.raises(httpx.HTTPStatusError):
        asyncio.run(RetryPolicy(attempts=3, sleep=sleep).call(down))
    assert calls == 3


def test_call_does_not_retry_final_errors() -> None:
    calls = 0

    async def unauthorized() -> None:
        nonlocal calls
        calls += 1
        raise status_error(401)

    with pytest.raises(httpx.HTTPStatusError):
        asyncio.run(RetryPolicy(attempts=5).call(unauthorized))
    assert calls == 1
